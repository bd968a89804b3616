//! Id secret versions: replacing the platform id secret is refused until the database is moved
//! to the new version (`govbus id-secret rotate`), which gives each agency the map from the
//! message ids it holds to the new ones; record hashes follow, so an older version is still
//! not delivered, and a dispute may quote either id. A department that replaces its own id
//! secret and sends a record again does not give agencies a duplicate under a new id.
mod common;

use std::{collections::BTreeSet, time::Duration};

use bus_schemas::keys;
use common::World;
use govbus_tests::{combined, output_within, Process};
use serde_json::json;

fn ids(lines: &[serde_json::Value]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_string())
        .collect()
}

/// `govbus-router` started and expected to refuse: its output.
fn router_refuses(w: &World) -> String {
    let mut cmd = Process::command("govbus-router");
    cmd.arg("--config").arg(w.path("router.toml"));
    let out = output_within(&mut cmd, 60, "govbus-router (expected to refuse)");
    assert!(
        !out.status.success(),
        "the router started: {}",
        combined(&out)
    );
    combined(&out)
}

fn govbus(args: &[&str]) -> std::process::Output {
    let mut cmd = Process::command("govbus");
    cmd.args(args);
    output_within(&mut cmd, 120, &format!("govbus {}", args.join(" ")))
}

async fn ledger_rows(w: &World) -> i64 {
    let pool = w.pg().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// A new platform id secret in the file the router reads; the old one kept as `id-secret-1`.
fn replace_id_secret_file(w: &World) {
    std::fs::rename(w.path("platform/id-secret"), w.path("platform/id-secret-1")).unwrap();
    keys::ensure_secret(&w.path("platform/id-secret")).unwrap();
}

/// The router config names the new secret version 2 and the old one as version 1.
fn declare_id_secret_version_2(w: &World) {
    let text = std::fs::read_to_string(w.path("router.toml")).unwrap();
    let amqp = text.find("[amqp]").unwrap();
    std::fs::write(
        w.path("router.toml"),
        format!(
            "{}id_secret_version = 2\n\n[[platform.previous_id_secrets]]\nversion = 1\nfile = \"platform/id-secret-1\"\n\n{}",
            &text[..amqp],
            &text[amqp..]
        ),
    )
    .unwrap();
}

fn read_map(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("old_message_id,new_message_id"));
    lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_id_secret_keeps_every_record_and_gives_agencies_their_id_map() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 10, 2);
    w.run_adapter(&cfg);
    let held = ids(&w.tail("civil", 10).await);
    assert_eq!(held.len(), 10);
    w.settle(Duration::from_millis(300)).await;
    let delivered = ledger_rows(&w).await;
    if let Some(r) = w.router.take() {
        r.terminate();
    }

    // The secret file replaced without a new version: refused, saying what to do.
    replace_id_secret_file(&w);
    let out = router_refuses(&w);
    assert!(
        out.contains(
            "platform.id_secret_file is not the id secret version 1 this database was written with"
        ),
        "{out}"
    );
    // A new version, but the database not moved yet: refused too.
    declare_id_secret_version_2(&w);
    let out = router_refuses(&w);
    assert!(out.contains("run `govbus id-secret rotate"), "{out}");
    assert!(
        !out.contains(
            &std::fs::read_to_string(w.path("platform/id-secret"))
                .unwrap()
                .trim()
                .to_string()
        ),
        "no secret in the message"
    );

    // The rotation.
    let maps = w.path("id-maps");
    let cfg_path = w.path("router.toml");
    let rotate = [
        "id-secret",
        "rotate",
        "--config",
        cfg_path.to_str().unwrap(),
        "--maps",
        maps.to_str().unwrap(),
    ];
    let out = govbus(&rotate);
    assert!(out.status.success(), "{}", combined(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!(
            "id secret version 1 → 2: 10 records rehashed, {delivered} deliveries"
        )),
        "{text}"
    );
    let map = read_map(&maps.join("civil.csv"));
    let olds: BTreeSet<String> = map.iter().map(|p| p.0.clone()).collect();
    let news: BTreeSet<String> = map.iter().map(|p| p.1.clone()).collect();
    assert_eq!(olds, held, "every id civil holds, once");
    assert_eq!(news.len(), 10);
    assert!(olds.is_disjoint(&news));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(maps.join("civil.csv"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(maps.join("health.csv").exists());
    // Running it again rehashes nothing and writes the same maps.
    let out = govbus(&rotate);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("already under id secret version 2; nothing rehashed"),
        "{}",
        combined(&out)
    );
    assert_eq!(read_map(&maps.join("civil.csv")), map);

    w.start_router().await;
    // A dispute may quote the id from the map; it finds the record as the tables keep it now.
    let civil = w.api_token("agency", "civil");
    let new0 = map[0].1.clone();
    let resp = reqwest::Client::new()
        .post(w.api_url("/api/disputes"))
        .bearer_auth(&civil)
        .json(&json!({ "message_id": new0, "problem": "住址有误" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let pool = w.pg().await;
    let (version, current): (i64, bool) = sqlx::query_as(
        "SELECT d.version, EXISTS (SELECT 1 FROM latest_records l WHERE l.item = d.item AND l.key_hash = d.key_hash)
         FROM disputes d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, 2);
    assert!(
        current,
        "the dispute names the record by its hash under version 2"
    );

    // An older version is still recognised as older: nothing delivered.
    let cfg = w.police(0, 5, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        ledger_rows(&w).await,
        delivered,
        "older versions are not delivered"
    );
    // The same version sent again: civil holds it, under its new id, already.
    let cfg = w.police(0, 4, 2);
    w.run_adapter(&cfg);
    let cfg = w.police(4, 10, 2);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        ledger_rows(&w).await,
        delivered,
        "a version an agency holds is not delivered again, under new ids either"
    );
    // The map's new ids are the ids the router now gives those deliveries.
    let secret = keys::load_id_secret(&w.path("platform/id-secret")).unwrap();
    let now_given: BTreeSet<String> = sqlx::query_as::<_, (String, i64, String)>(
        "SELECT grant_id, grant_revision, ingest_id FROM ledger WHERE agency = 'civil'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(g, r, i)| bus_schemas::wire::delivery_message_id(&secret, "civil", &g, r, &i))
    .collect();
    assert_eq!(
        now_given, news,
        "the map gives the ids deliveries carry now"
    );
    // A new version is delivered under new ids.
    let cfg = w.police(0, 3, 3);
    w.run_adapter(&cfg);
    let newer = ids(&w.tail("civil", 3).await);
    assert_eq!(newer.len(), 3);
    assert!(newer.is_disjoint(&news));
    w.settle(Duration::from_millis(300)).await;
    let before = ledger_rows(&w).await;

    // Police replaces its own id secret and sends version 3 again: agencies hold it already.
    std::fs::remove_file(w.path("keys/police/id-secret")).unwrap();
    keys::ensure_secret(&w.path("keys/police/id-secret")).unwrap();
    let cfg = w.police(0, 2, 3);
    w.run_adapter(&cfg);
    let cfg = w.police(2, 3, 3);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        ledger_rows(&w).await,
        before,
        "a record sent again under a department's new id secret is not delivered twice"
    );
    let cfg = w.police(0, 3, 4);
    w.run_adapter(&cfg);
    assert_eq!(w.tail("civil", 3).await.len(), 3, "its next version is");
    w.settle(Duration::from_millis(300)).await;
    pool.close().await;
    w.verify_ledger();
}

/// Deliveries kept for retry while an agency's queue was full are given their id under the
/// new version and signed again, so they verify and match the new scheme when they go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_deliveries_go_out_under_the_new_id_secret() {
    let mut w = World::new().await;
    w.start_router().await;
    w.set_policy(
        "^agency\\.health$",
        json!({"max-length": 2, "overflow": "reject-publish"}),
    )
    .await;
    w.await_policy("agency.health").await;
    let cfg = w.police(0, 200, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(1000)).await;
    if let Some(r) = w.router.take() {
        r.terminate();
    }
    let pool = w.pg().await;
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pending_deliveries WHERE agency = 'health'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        kept > 0,
        "health's full queue made the router keep deliveries"
    );

    replace_id_secret_file(&w);
    declare_id_secret_version_2(&w);
    let out = govbus(&[
        "id-secret",
        "rotate",
        "--config",
        w.path("router.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "{kept} kept deliveries (agencies' queues were full) given their version-2 id and signed again"
        )),
        "{}",
        combined(&out)
    );

    // The queue drains: every delivery verifies, each once, the kept ones under new ids.
    w.clear_policy("agency.health").await;
    w.start_router().await;
    let got = ids(&w.tail("health", 200).await);
    assert_eq!(got.len(), 200, "every delivery verifies and arrives once");
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(w.count("agency.health.dlq").await, 0);
    let new = bus_schemas::wire::IdKey::new(
        &keys::load_secret_as(&w.path("platform/id-secret"), "test").unwrap(),
    );
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT message_id, grant_id, grant_revision, ingest_id FROM ledger WHERE agency = 'health'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 200);
    let under_new = rows
        .iter()
        .filter(|(m, g, r, i)| *m == new.delivery_message_id("health", g, *r, i))
        .count();
    assert_eq!(
        under_new as i64, kept,
        "the kept deliveries, and only they, carry new ids"
    );
    pool.close().await;
    w.verify_ledger();
}
