//! Partitioned routers (DESIGN.md, "Scale"): two routers share four partitions, each active on
//! the ones it prefers and standing by for the other's; a router killed with SIGKILL mid-stream
//! is taken over by the other, and every record reaches every agency at its latest version, in
//! version order, each delivery once in its partition's ledger chain. A router configured with
//! another partition count than the bound one refuses to start.
mod common;

use std::time::{Duration, Instant};

use common::{partition_records, World};
use govbus_tests::Process;

const PARTITIONS: u8 = 4;
const RECORDS: u64 = 6_000;

/// Router a prefers partitions 0 and 1, router b 2 and 3.
fn preferred_owner(p: u8) -> &'static str {
    if p < 2 {
        "a"
    } else {
        "b"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_four_partitions_and_take_over_from_each_other() {
    let mut w = World::new().await;
    w.partitioned(PARTITIONS, "0,1", "a");
    let (b_cfg, b_http) = w.second_router("b", "2,3", None);
    w.start_router().await;
    let b = w.spawn_router(&b_cfg, b_http).await;

    // Each router is active on the partitions it prefers and stands by for the other's.
    w.await_partitions_held(PARTITIONS, preferred_owner, 2)
        .await;
    let shown = Process::command("govbus")
        .args(["partitions", "show", "--config"])
        .arg(w.path("router.toml"))
        .output()
        .unwrap();
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown_text}");
    for p in 0..PARTITIONS {
        let held = format!(
            "govbus.router.{p}: held by govbus-router-{}-p{p}, 1 standing by",
            preferred_owner(p)
        );
        assert!(shown_text.contains(&held), "{shown_text}");
    }

    // A router configured with another partition count refuses to start, and says why.
    let (c_cfg, _) = w.second_router("c", "0", None);
    let text = std::fs::read_to_string(&c_cfg).unwrap();
    std::fs::write(
        &c_cfg,
        text.replace(&format!("partitions = {PARTITIONS}"), "partitions = 2"),
    )
    .unwrap();
    let refused = govbus_tests::output_within(
        Process::command("govbus-router")
            .arg("--config")
            .arg(&c_cfg),
        60,
        "a router with the wrong partition count",
    );
    let said = govbus_tests::combined(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("router.partitions is 2") && said.contains("bound to 4 partitions"),
        "{said}"
    );

    // Version 1 of every record, then version 2: spread over all four partitions.
    let v1 = w.police(0, RECORDS, 1);
    w.run_adapter(&v1);
    let v2 = w.police(0, RECORDS, 2);
    w.run_adapter(&v2);

    // Router b is killed once it has delivered from its partitions; a takes them over.
    let pool = w.pg().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let from_b: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE chain >= 2")
            .fetch_one(&pool)
            .await
            .unwrap();
        if from_b >= 3_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router b delivered too little: {from_b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        partition_records(w.http_port, &[2, 3]).await,
        0.0,
        "router a took records of b's partitions while b was active"
    );
    let killed = Instant::now();
    b.kill();
    let takeover = loop {
        if partition_records(w.http_port, &[2, 3]).await > 0.0 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "router a never took over b's partitions"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "takeover: {} ms from SIGKILL until router a took records of b's partitions",
        takeover.as_millis()
    );
    // Router a counting records of b's partitions after the kill is the proof the kill hit
    // work in flight: RabbitMQ hands a standby only what the dead consumer left (unacked or
    // waiting). (A backlog count here would race with a finishing the work.)

    // Every agency holds every record at version 2, in version order; each delivery once in
    // the ledger, in its partition's chain.
    let civil = w
        .drain_until_delivered("agency.civil", 2 * RECORDS as usize, 180)
        .await;
    w.assert_only_granted_fields("civil", &civil).await;
    let (ended, again) = w.assert_versions_arrived_in_order("civil", &civil).await;
    assert_eq!(
        ended.into_iter().collect::<Vec<_>>(),
        [(2, RECORDS as usize)],
        "every record reached civil, at version 2"
    );
    println!(
        "civil: {} deliveries, {again} again under the same message id",
        civil.len()
    );
    assert_eq!(w.partition_backlog(PARTITIONS).await, 0);
    assert_eq!(
        w.count("govbus.router.dlq").await,
        0,
        "nothing dead-lettered"
    );
    w.assert_ledger_partitioned(PARTITIONS).await;
    w.verify_ledger();

    // The status page names router a as every partition's holder now, and draws the last
    // hour's deliveries per partition and per agency.
    let status: serde_json::Value = reqwest::get(w.api_url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in 0..PARTITIONS as usize {
        let s = &status["partitions"][p];
        assert_eq!(s["holder"], "a", "{s}");
        assert_eq!(s["held"], true, "{s}");
        assert_eq!(s["backlog"], 0, "{s}");
        assert!(s["delivered_last_hour"].as_i64().unwrap() > 0, "{s}");
    }
    let page = reqwest::get(w.api_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in ["p0", "p1", "p2", "p3", "civil", "health"] {
        assert!(
            page.contains(&format!("<polyline data-series=\"{series}\"")),
            "no rate line for {series}"
        );
    }
}
