//! The router under stress: an agency's full queue holds up nobody else and loses nothing; a
//! router killed mid-stream delivers everything at least once with the ledger exact; the
//! catalogue reloads on change, and a bad one is refused while the old stays in force.
mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use bus_schemas::wire::header;
use common::{Got, World};

async fn ledger_ids(w: &World, agency: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM ledger WHERE agency = $1 ORDER BY seq")
        .bind(agency)
        .fetch_all(&w.pg().await)
        .await
        .unwrap()
}

async fn ledger_count(w: &World) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&w.pg().await)
        .await
        .unwrap()
}

/// Message ids by agency queue, every message taken.
async fn take_all(w: &World, agencies: &[&str]) -> HashMap<String, Vec<Got>> {
    let mut out = HashMap::new();
    for a in agencies {
        out.insert(
            a.to_string(),
            w.drain(&format!("agency.{a}"), Duration::from_millis(500))
                .await,
        );
    }
    out
}

/// Agency hrss's queue held full (max-length 5, reject-publish): the other agencies receive
/// everything meanwhile; hrss's deliveries are kept and, as its queue drains, all arrive,
/// each once in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_agency_queue_holds_up_nobody() {
    let mut w = World::new().await;
    w.start_router().await;
    w.set_policy(
        "^agency\\.hrss$",
        serde_json::json!({"max-length": 5, "overflow": "reject-publish"}),
    )
    .await;
    w.await_policy("agency.hrss").await;
    let police = w.police(0, 30, 1);
    let commerce = w.commerce(0, 150);
    let localtax = w.localtax(0, 10);
    w.run_adapter(&police);
    w.run_adapter(&commerce);
    w.run_adapter(&localtax);
    w.settle(Duration::from_millis(1500)).await;

    assert_eq!(w.count("agency.civil").await, 30);
    assert_eq!(w.count("agency.health").await, 180);
    assert_eq!(w.count("agency.tianhe").await, 75);
    // Quorum queues enforce max-length late (pipelined publishes overshoot it: by tens of
    // messages under load, once by 131 on the suite's fresh TLS node), so the queue holds more
    // than 5; what matters is that some deliveries were refused and kept (below).
    let in_queue = w.count("agency.hrss").await;
    assert!(in_queue < 160, "hrss's queue took everything: {in_queue}");
    let pool = w.pg().await;
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pending_deliveries WHERE agency = 'hrss'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(kept > 0);
    assert_eq!(
        kept + i64::from(in_queue),
        160,
        "hrss's other deliveries are kept"
    );
    assert_eq!(ledger_ids(&w, "hrss").await.len(), in_queue as usize);
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("govbus_router_deliveries_kept_total{agency=\"hrss\"}"),
        "{metrics}"
    );

    // hrss consumes; the router retries into the freed room until all 160 arrived.
    let got = w.drain_until_delivered("agency.hrss", 160, 120).await;
    let ids = ledger_ids(&w, "hrss").await;
    assert_eq!(ids.len(), 160, "each hrss delivery once in the ledger");
    let unique: HashSet<&str> = got.iter().map(|g| g.message_id.as_str()).collect();
    assert_eq!(
        unique,
        ids.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    w.verify_ledger();
}

/// The router killed with SIGKILL mid-stream and started again: every granted delivery
/// arrives at least once, duplicates share their message id, the ledger holds each delivery
/// exactly once and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_mid_stream_loses_nothing() {
    let mut w = World::new().await;
    w.start_router().await; // declares the topology
    assert!(
        w.router.take().unwrap().terminate().success(),
        "SIGTERM drains and exits 0"
    );
    let police = w.police(0, 400, 1);
    let commerce = w.commerce(0, 400);
    w.run_adapter(&police);
    w.run_adapter(&commerce);
    assert_eq!(w.count("govbus.router.0").await, 800);

    w.start_router().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger_count(&w).await < 300 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.router.take().unwrap().kill();
    let at_kill = ledger_count(&w).await;
    let expected = [
        ("civil", 400),
        ("health", 800),
        ("hrss", 400),
        ("tianhe", 200),
    ];
    let total: i64 = expected.iter().map(|(_, n)| *n as i64).sum();
    // The kill hit work in flight: deliveries were still to come (1,800 in all).
    assert!(
        at_kill < total,
        "killed before the end ({at_kill} of {total} ledger rows)"
    );
    w.start_router().await;
    // Every delivery in the ledger (a quiet second alone can come while the new router still
    // holds the redelivered messages unacked), then nothing more.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger_count(&w).await < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} ledger rows 120 s after the restart",
            ledger_count(&w).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.settle(Duration::from_millis(1500)).await;

    let got = take_all(&w, &["civil", "health", "hrss", "tianhe"]).await;
    for (agency, n) in expected {
        let ids = ledger_ids(&w, agency).await;
        assert_eq!(ids.len(), n, "{agency}: ledger rows");
        let ledger: HashSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(ledger.len(), n);
        let msgs = &got[agency];
        let received: HashSet<&str> = msgs.iter().map(|g| g.message_id.as_str()).collect();
        assert_eq!(received, ledger, "{agency}: every delivery arrived");
        // Duplicates are the same delivery: same id, same body.
        let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
        for g in msgs {
            if let Some(b) = bodies.insert(&g.message_id, &g.body) {
                assert_eq!(b, g.body.as_slice(), "a duplicate with another body");
            }
            assert!(!g.header_str(header::DEPARTMENT).is_empty());
        }
    }
    w.verify_ledger();
}

/// A changed catalogue file is taken up without a restart; a bad one is refused, counted, and
/// the one in force keeps routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_reloads_and_bad_files_are_refused() {
    let mut w = World::new().await;
    w.start_router().await;
    let cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    // Civil gets enterprises too, from now on.
    let added = format!(
        "{cat}\n[[grant]]\nid = \"civil-enterprise\"\nrevision = 1\nagency = \"civil\"\nitem = \"enterprise\"\nfields = [\"unified_social_credit_code\", \"name\"]\nidentity = \"full\"\nlegal_basis = \"第二十条\"\npurpose = \"社会组织核对\"\nvalid_from = 2026-01-01\n"
    );
    std::fs::write(w.path("catalogue.toml"), &added).unwrap();
    w.await_metric(
        "govbus_router_catalogue_reloads_total 1",
        30,
        "the new catalogue was not loaded",
    )
    .await;
    let commerce = w.commerce(0, 10);
    w.run_adapter(&commerce);
    w.settle(Duration::from_millis(1000)).await;
    assert_eq!(
        w.count("agency.civil").await,
        10,
        "the new grant is in force"
    );

    // A grant of a field the record type lacks: refused, the previous catalogue stays.
    std::fs::write(
        w.path("catalogue.toml"),
        added.replace(
            "\"unified_social_credit_code\", \"name\"]",
            "\"unified_social_credit_code\", \"nmae\"]",
        ),
    )
    .unwrap();
    w.await_metric(
        "govbus_router_catalogue_refused_total 1",
        30,
        "the bad catalogue was not refused",
    )
    .await;
    let commerce = w.commerce(10, 20);
    w.run_adapter(&commerce);
    w.settle(Duration::from_millis(1000)).await;
    assert_eq!(
        w.count("agency.civil").await,
        20,
        "the catalogue in force keeps routing"
    );
    let ready = reqwest::get(w.url("/readyz")).await.unwrap();
    assert!(ready.status().is_success());
}

/// SIGHUP reloads the catalogue at once, without waiting for the file check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_catalogue() {
    let mut w = World::new().await;
    w.edit("router.toml", "watch_ms = 200", "watch_ms = 3600000");
    w.start_router().await;
    w.edit(
        "catalogue.toml",
        "revision = 1\nagency = \"hrss\"\nitem = \"enterprise\"",
        "revision = 2\nagency = \"hrss\"\nitem = \"enterprise\"",
    );
    let pid = w.router.as_ref().unwrap().0.id();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    w.await_metric(
        "govbus_router_catalogue_reloads_total 1",
        10,
        "SIGHUP did not reload the catalogue",
    )
    .await;
    let commerce = w.commerce(0, 4);
    w.run_adapter(&commerce);
    w.settle(Duration::from_millis(1000)).await;
    let got = w.drain("agency.hrss", Duration::from_millis(500)).await;
    assert_eq!(got.len(), 4);
    assert!(got
        .iter()
        .all(|g| g.header_i64(header::GRANT_REVISION) == 2));
}

/// A record version older than one already delivered to the agency is not delivered, also
/// when both versions wait in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_versions_are_not_delivered() {
    let mut w = World::new().await;
    w.start_router().await; // declares the topology
    assert!(w.router.take().unwrap().terminate().success());
    let newer = w.police(0, 5, 2);
    w.run_adapter(&newer);
    let older = w.police(0, 5, 1);
    w.run_adapter(&older);
    w.start_router().await;
    w.settle(Duration::from_millis(1000)).await;
    let civil = w.drain("agency.civil", Duration::from_millis(500)).await;
    assert_eq!(civil.len(), 5);
    assert!(civil.iter().all(|g| g.header_i64(header::VERSION) == 2));
    // While the router runs: version 1 of new records, then version 0 of them.
    let stale_count = |m: String| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("govbus_router_stale_versions_total{agency=\"civil\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let before = stale_count(w.metrics().await);
    assert_eq!(before, 5, "the older versions in the same batch");
    std::fs::remove_dir_all(w.path("adapters/police/state")).unwrap();
    let stale = w.police(100, 105, 1);
    w.run_adapter(&stale);
    let again = w.police(100, 105, 0);
    w.run_adapter(&again);
    w.settle(Duration::from_millis(1000)).await;
    let civil = w.drain("agency.civil", Duration::from_millis(500)).await;
    assert_eq!(civil.len(), 5, "the new records, version 1 only");
    assert!(civil.iter().all(|g| g.header_i64(header::VERSION) == 1));
    assert_eq!(
        stale_count(w.metrics().await),
        10,
        "version 0 after 1 was written"
    );
}
