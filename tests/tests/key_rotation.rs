//! Department signing keys: rotation (old and new key both verify during the overlap) and
//! revocation (records signed with a revoked key are refused from its revocation time, with
//! their own reason; the new key goes on working).
mod common;

use std::time::Duration;

use bus_schemas::keys;
use common::World;

fn moment(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Rewrites police's `keys = …` line of the test catalogue.
fn set_police_keys(w: &World, keys_line: &str) {
    let cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    let cat: Vec<String> = cat
        .lines()
        .map(|l| {
            if l.starts_with("keys = { \"police-2026\"") || l.starts_with("keys = { \"police-") {
                keys_line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(w.path("catalogue.toml"), cat.join("\n") + "\n").unwrap();
}

/// Points police's adapter config at key `key_id`.
fn use_key(config: &std::path::Path, key_id: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text
        .replace("police-2026.key", &format!("{key_id}.key"))
        .replace("police-2027.key", &format!("{key_id}.key"))
        .replace(
            "key_id = \"police-2026\"",
            &format!("key_id = \"{key_id}\""),
        )
        .replace(
            "key_id = \"police-2027\"",
            &format!("key_id = \"{key_id}\""),
        );
    std::fs::write(config, text).unwrap();
}

async fn distinct_records(w: &World) -> i64 {
    let pool = w.pg().await;
    let n =
        sqlx::query_scalar("SELECT count(DISTINCT key_hash) FROM ledger WHERE item = 'household'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_overlap_and_a_revoked_key_is_refused_from_its_revocation() {
    let mut w = World::new().await;
    let old_public = {
        let cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
        let line = cat
            .lines()
            .find(|l| l.starts_with("keys = { \"police-2026\""))
            .unwrap()
            .to_string();
        line.split('"').nth(3).unwrap().to_string()
    };
    let new_public = keys::keygen(&w.path("keys/police"), "police-2027").unwrap();
    // Rotation: the new key valid from an hour ago, the old one until an hour from now.
    set_police_keys(
        &w,
        &format!(
            "keys = {{ \"police-2026\" = {{ public = \"{old_public}\", valid_until = {} }}, \"police-2027\" = {{ public = \"{new_public}\", valid_from = {} }} }}",
            moment(chrono::Duration::hours(1)),
            moment(chrono::Duration::hours(-1)),
        ),
    );
    w.start_router().await;

    let cfg = w.police(0, 10, 1);
    w.run_adapter(&cfg);
    let cfg = w.police(10, 20, 1);
    use_key(&cfg, "police-2027");
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        distinct_records(&w).await,
        20,
        "both keys verify during the overlap"
    );

    // Revocation of the old key, from now.
    set_police_keys(
        &w,
        &format!(
            "keys = {{ \"police-2026\" = {{ public = \"{old_public}\", valid_until = {}, revoked_at = {}, revoked_reason = \"key file copied off the adapter host\" }}, \"police-2027\" = {{ public = \"{new_public}\", valid_from = {} }} }}",
            moment(chrono::Duration::hours(1)),
            moment(chrono::Duration::seconds(-1)),
            moment(chrono::Duration::hours(-1)),
        ),
    );
    w.await_metric(
        "govbus_router_catalogue_reloads_total 1",
        30,
        "the catalogue with the revocation was not loaded",
    )
    .await;
    let cfg = w.police(20, 25, 1);
    use_key(&cfg, "police-2026");
    w.run_adapter(&cfg);
    let cfg = w.police(25, 30, 1);
    use_key(&cfg, "police-2027");
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        distinct_records(&w).await,
        25,
        "the new key's 5 records are delivered, the revoked key's are not"
    );
    let pool = w.pg().await;
    let refused: Vec<(String, String)> =
        sqlx::query_as("SELECT reason, detail FROM refusals ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(refused.len(), 5, "{refused:?}");
    for (reason, detail) in &refused {
        assert_eq!(reason, "key_not_in_force");
        assert!(
            detail.starts_with("key `police-2026` of department `police` was revoked at "),
            "{detail}"
        );
    }
    w.await_metric(
        "govbus_router_refusals_total{reason=\"key_not_in_force\"} 5",
        30,
        "refusals by the revoked key are not counted",
    )
    .await;
    pool.close().await;
    w.verify_ledger();
}
