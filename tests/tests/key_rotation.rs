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

fn govbus_ok(args: &[&str]) -> String {
    let out = govbus_tests::output_within(
        govbus_tests::Process::command("govbus").args(args),
        60,
        &format!("govbus {}", args.join(" ")),
    );
    assert!(
        out.status.success(),
        "govbus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_follow_an_endorsed_platform_key_and_refuse_an_unendorsed_one() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 5, 1);
    w.run_adapter(&cfg);
    assert_eq!(w.tail("civil", 5).await.len(), 5);

    // Rotation: platform-2027, endorsed by the key the agency was provisioned with.
    let out = w.rotate_platform_key().await;
    assert!(
        out.contains("platform-test endorses platform-2027"),
        "{out}"
    );
    let keys: serde_json::Value = reqwest::get(w.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["key_id"], "platform-2027");
    assert_eq!(
        keys["keys"][0]["endorsement"]["endorsed_by"],
        "platform-test"
    );
    assert_eq!(keys["keys"][1]["key_id"], "platform-test");
    let cfg = w.police(5, 10, 1);
    w.run_adapter(&cfg);
    // The agency still holds only the old key: it learns the endorsed new one from /keys.
    let got = w.tail("civil", 5).await;
    assert_eq!(got.len(), 5, "deliveries under the endorsed key verify");

    // A key nobody endorsed: its deliveries are dead-lettered, not accepted.
    let dir = w.path("platform");
    govbus_ok(&[
        "keygen",
        "--out",
        dir.to_str().unwrap(),
        "--key-id",
        "platform-rogue",
    ]);
    w.switch_platform_key(
        "key_file = \"platform/platform-rogue.key\"\nkey_id = \"platform-rogue\"\n",
    )
    .await;
    let cfg = w.police(10, 13, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    let got = w.tail("civil", 3).await;
    assert!(
        got.is_empty(),
        "an unendorsed key's deliveries are refused: {got:?}"
    );
    let dead = w
        .drain("agency.civil.dlq", Duration::from_millis(500))
        .await;
    assert_eq!(dead.len(), 3);
}

/// Rotation: a new pseudonym secret, version 2, the old one kept for the mapping; the router
/// restarted with it.
async fn rotate_pseudonym_secret(w: &mut World) {
    keys::ensure_secret(&w.path("platform/pseudonym-secret-2")).unwrap();
    let text = std::fs::read_to_string(w.path("router.toml")).unwrap();
    let amqp = text.find("[amqp]").unwrap();
    let text = format!(
        "{}pseudonym_version = 2\n\n[[platform.previous_pseudonym_secrets]]\nversion = 1\nfile = \"platform/pseudonym-secret\"\n\n{}",
        text[..amqp].replace(
            "pseudonym_secret_file = \"platform/pseudonym-secret\"",
            "pseudonym_secret_file = \"platform/pseudonym-secret-2\""
        ),
        &text[amqp..]
    );
    std::fs::write(w.path("router.toml"), text).unwrap();
    if let Some(r) = w.router.take() {
        r.terminate();
    }
    w.start_router().await;
}

/// `govbus pseudonym-map` from version 1 for `agency` into `out`: what it printed.
fn pseudonym_map(w: &World, agency: &str, out: &std::path::Path) -> String {
    govbus_ok(&[
        "pseudonym-map",
        "--config",
        w.path("router.toml").to_str().unwrap(),
        "--agency",
        agency,
        "--from-version",
        "1",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// The `citizen_id_number` tokens of `count` household records delivered to health.
async fn health_tokens(w: &World, count: u64) -> std::collections::BTreeSet<String> {
    w.tail("health", count)
        .await
        .iter()
        .map(|l| {
            l["record"]["citizen_id_number"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_pseudonym_secret_comes_with_the_agencys_token_mapping() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 10, 1);
    w.run_adapter(&cfg);
    let v1 = health_tokens(&w, 10).await;
    assert_eq!(v1.len(), 10);
    assert!(v1.iter().all(|t| t.starts_with("pgb1_")), "{v1:?}");

    rotate_pseudonym_secret(&mut w).await;
    let cfg = w.police(0, 10, 2);
    w.run_adapter(&cfg);
    let v2 = health_tokens(&w, 10).await;
    assert!(v2.iter().all(|t| t.starts_with("pgb2_")), "{v2:?}");
    assert!(v1.is_disjoint(&v2));

    let map = w.path("health-pgb1-to-pgb2.csv");
    let out = pseudonym_map(&w, "health", &map);
    assert!(
        out.contains("10 token pairs (pgb1_ → pgb2_) from 10 records"),
        "{out}"
    );
    let text = std::fs::read_to_string(&map).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("old_token,new_token"));
    let pairs: Vec<(String, String)> = lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    let olds: std::collections::BTreeSet<String> = pairs.iter().map(|p| p.0.clone()).collect();
    let news: std::collections::BTreeSet<String> = pairs.iter().map(|p| p.1.clone()).collect();
    assert_eq!(olds, v1, "every old token the agency holds, once");
    assert_eq!(news, v2, "to the tokens it now receives");
    assert!(
        !text.contains(&common::citizen(3)),
        "no ID number in the mapping"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&map).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // civil's grant is full identity: no mapping to give.
    let out = pseudonym_map(&w, "civil", &w.path("civil.csv"));
    assert!(out.contains("0 token pairs"), "{out}");
}

/// After a pseudonym secret rotation, `govbus-agency sink --apply-pseudonym-map` moves the
/// agency's own table to the new tokens in one go: a person whose record came under both
/// tokens keeps one row (the newer version), the others are renamed, and no old token is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agency_applies_the_token_mapping_to_its_own_table() {
    let mut w = World::new().await;
    w.start_router().await;
    let pool = w.pg().await;
    let rows = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
        }
    };
    let db_url = w.db.url.clone();
    let sink = ["--postgres", db_url.as_str(), "--table", "health_records"];
    let cfg = w.police(0, 10, 1);
    w.run_adapter(&cfg);
    let s = w.spawn_agency_tool("sink", "health", &sink);
    wait(|| rows("SELECT count(*) FROM health_records"), 10).await;
    drop(s);
    rotate_pseudonym_secret(&mut w).await;
    // Five of the ten people change after the rotation: they arrive under new tokens.
    let cfg = w.police(0, 5, 2);
    w.run_adapter(&cfg);
    let s = w.spawn_agency_tool("sink", "health", &sink);
    wait(|| rows("SELECT count(*) FROM health_records"), 15).await;
    drop(s);

    let map = w.path("health-map.csv");
    pseudonym_map(&w, "health", &map);
    let out = govbus_tests::output_within(
        govbus_tests::Process::command("govbus-agency")
            .args(["sink", "--agency", "health"])
            .args(sink)
            .arg("--apply-pseudonym-map")
            .arg(&map),
        60,
        "govbus-agency sink --apply-pseudonym-map",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("5 record keys rewritten, 5 rows of the same person merged"),
        "{text}"
    );
    assert_eq!(rows("SELECT count(*) FROM health_records").await, 10);
    assert_eq!(
        rows("SELECT count(*) FROM health_records WHERE govbus_key LIKE 'pgb2\\_%' AND citizen_id_number = govbus_key").await,
        10,
        "every key and token column on the new tokens"
    );
    assert_eq!(
        rows("SELECT count(*) FROM health_records WHERE govbus_version = 2").await,
        5,
        "the newer version kept where both arrived"
    );
}

/// Waits up to 60 s until `count()` reaches `want`.
async fn wait<F: std::future::Future<Output = i64>>(mut count: impl FnMut() -> F, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = count().await;
        if n == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{n} rows, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
