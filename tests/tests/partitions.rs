//! Partitioned routers (DESIGN.md, "Scale"): two routers share four partitions, each active on
//! the ones it prefers and standing by for the other's; a router killed with SIGKILL mid-stream
//! is taken over by the other, and every record reaches every agency at its latest version, in
//! version order, each delivery once in its partition's ledger chain. A router configured with
//! another partition count than the bound one refuses to start.
mod common;

use common::World;
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
    let takeover = w.kill_and_time_takeover(b, &[2, 3], 3_000, 120).await;
    println!(
        "takeover: {} ms from SIGKILL until router a took records of b's partitions",
        takeover.as_millis()
    );

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

/// `govbus partitions set` refuses to change P while the bound partitions hold messages, and
/// names them; with `--force` it changes P, and the shards go to the new partitions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_partition_count_is_refused_while_partitions_hold_messages() {
    let mut w = World::new().await;
    w.partitioned(PARTITIONS, "0,1", "a");
    w.start_router().await; // binds 4
    assert!(w.router.take().unwrap().terminate().success());
    let cfg = w.police(0, 100, 1);
    w.run_adapter(&cfg);
    assert_eq!(w.partition_backlog(PARTITIONS).await, 100);
    let set = |args: &[&str]| {
        Process::command("govbus")
            .args(["partitions", "set", "--config"])
            .arg(w.path("router.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    let refused = set(&["2"]);
    let said = govbus_tests::combined(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("bound as 4") && said.contains("govbus.router.0 holds"),
        "{said}"
    );
    let forced = set(&["2", "--force"]);
    let said = govbus_tests::combined(&forced);
    assert!(forced.status.success(), "{said}");
    assert!(said.contains("changed from 4 to 2"), "{said}");
    // New records reach partitions 0 and 1 only.
    let before = [2u8, 3].map(|p| format!("govbus.router.{p}"));
    let (b2, b3) = (w.count(&before[0]).await, w.count(&before[1]).await);
    let cfg = w.police(100, 200, 1);
    w.run_adapter(&cfg);
    assert_eq!(w.count(&before[0]).await, b2);
    assert_eq!(w.count(&before[1]).await, b3);
    assert_eq!(w.partition_backlog(2).await, 100 - b2 - b3 + 100);
}
