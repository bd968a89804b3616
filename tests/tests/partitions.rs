//! Partitioned routers (DESIGN.md, "Scale"): two routers share four partitions, each active on
//! the ones it prefers and standing by for the other's; a router killed with SIGKILL mid-stream
//! is taken over by the other, and every record reaches every agency at its latest version, in
//! version order, each delivery once in its partition's ledger chain. A router configured with
//! another partition count than the bound one refuses to start.
mod common;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::World;
use govbus_tests::{free_port, Process, Services};

const PARTITIONS: u8 = 4;
const RECORDS: u64 = 6_000;

/// A second router's config: this world's, on its own ports, with its own name and preference.
fn second_router(w: &World, name: &str, prefer: &str) -> (PathBuf, u16) {
    let (http, api) = (free_port(), free_port());
    let text = std::fs::read_to_string(w.path("router.toml"))
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", w.http_port),
            &format!("127.0.0.1:{http}"),
        )
        .replace(
            &format!("127.0.0.1:{}", w.api_port),
            &format!("127.0.0.1:{api}"),
        )
        .replace("name = \"a\"", &format!("name = \"{name}\""))
        .replace("prefer = \"0,1\"", &format!("prefer = \"{prefer}\""));
    let path = w.path(&format!("router-{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, http)
}

async fn wait_ready(port: u16, router: &mut Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = router.0.try_wait() {
            panic!("the second govbus-router exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "second router not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Partition → (active consumer tag, consumers), from the management API.
async fn holders(w: &World) -> HashMap<u8, (Option<String>, usize)> {
    let s = Services::from_env();
    let mut out = HashMap::new();
    for p in 0..PARTITIONS {
        let q = s
            .management_get(&format!("queues/{}/govbus.router.{p}", w.vhost.name))
            .await;
        let details = q["consumer_details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let active = details
            .iter()
            .find(|c| c["active"] == serde_json::Value::Bool(true))
            .and_then(|c| c["consumer_tag"].as_str().map(str::to_string));
        out.insert(p, (active, details.len()));
    }
    out
}

/// A metric's value in a router's `/metrics` text (0 when absent).
fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_at(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_four_partitions_and_take_over_from_each_other() {
    let mut w = World::new().await;
    w.edit(
        "router.toml",
        "[router]\n",
        &format!(
            "[router]\npartitions = {PARTITIONS}\nprefer = \"0,1\"\nname = \"a\"\nstandby_delay_ms = 1500\n"
        ),
    );
    let (b_cfg, b_http) = second_router(&w, "b", "2,3");
    w.start_router().await;
    let mut b = Process::spawn("govbus-router", &["--config".as_ref(), b_cfg.as_os_str()]);
    wait_ready(b_http, &mut b).await;

    // Each router is active on the partitions it prefers and stands by for the other's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = |p: u8| {
        let owner = if p < 2 { "a" } else { "b" };
        Some(format!("govbus-router-{owner}-p{p}"))
    };
    loop {
        let h = holders(&w).await;
        if (0..PARTITIONS).all(|p| h[&p] == (want(p), 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not held as preferred, with a standby each: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = Process::command("govbus")
        .args(["partitions", "show", "--config"])
        .arg(w.path("router.toml"))
        .output()
        .unwrap();
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown_text}");
    for p in 0..PARTITIONS {
        let owner = if p < 2 { "a" } else { "b" };
        assert!(
            shown_text.contains(&format!(
                "govbus.router.{p}: held by govbus-router-{owner}-p{p}, 1 standing by"
            )),
            "{shown_text}"
        );
    }

    // A router configured with another partition count refuses to start, and says why.
    let (c_cfg, _) = second_router(&w, "c", "0");
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
    let before = metrics_at(w.http_port).await;
    let taken_before = metric(
        &before,
        "govbus_router_partition_records_total{partition=\"2\"} ",
    ) + metric(
        &before,
        "govbus_router_partition_records_total{partition=\"3\"} ",
    );
    assert_eq!(
        taken_before, 0.0,
        "router a took records of b's partitions while b was active"
    );
    let killed = Instant::now();
    b.kill();
    let takeover = loop {
        let m = metrics_at(w.http_port).await;
        let taken = metric(
            &m,
            "govbus_router_partition_records_total{partition=\"2\"} ",
        ) + metric(
            &m,
            "govbus_router_partition_records_total{partition=\"3\"} ",
        );
        if taken > 0.0 {
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
    let unfinished: u32 = {
        let mut n = 0;
        for p in 0..PARTITIONS {
            n += w.count(&format!("govbus.router.{p}")).await;
        }
        n
    };
    assert!(
        unfinished > 0,
        "the kill came after the work was done: nothing left to take over"
    );

    // Every agency holds every record at version 2; each delivery once in the ledger.
    let civil = w
        .drain_until_delivered("agency.civil", 2 * RECORDS as usize, 180)
        .await;
    // Which record and version each delivery is, from the ledger (the body is the agency's).
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT message_id, key_hash, version FROM ledger WHERE agency = 'civil'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let of: HashMap<String, (String, i64)> =
        rows.into_iter().map(|(m, k, v)| (m, (k, v))).collect();
    // In arrival order, a message id's first arrival: a redelivery after the kill repeats an
    // earlier message under its own id, and is not a new version.
    let mut seen = std::collections::HashSet::new();
    let mut versions_of: HashMap<&str, Vec<i64>> = HashMap::new();
    for g in &civil {
        let (key, version) = of
            .get(&g.message_id)
            .unwrap_or_else(|| panic!("delivery {} is not in the ledger", g.message_id));
        assert_eq!(g.header_i64("govbus-version"), *version);
        if seen.insert(g.message_id.as_str()) {
            versions_of.entry(key).or_default().push(*version);
        }
    }
    assert_eq!(
        versions_of.len(),
        RECORDS as usize,
        "every record reached civil"
    );
    for (k, v) in &versions_of {
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(&sorted, v, "record {k}: versions arrived out of order");
        assert_eq!(v.last(), Some(&2), "record {k} ends at version 2");
    }
    let duplicates = civil.len() - seen.len();
    println!(
        "civil: {} deliveries, {duplicates} of them again under the same message id",
        civil.len()
    );
    for p in 0..PARTITIONS {
        assert_eq!(w.count(&format!("govbus.router.{p}")).await, 0);
    }
    assert_eq!(
        w.count("govbus.router.dlq").await,
        0,
        "nothing dead-lettered"
    );
    // Each record's versions in its chain in order, every partition a chain of its own.
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT version < lag(version) OVER (PARTITION BY agency, item, key_hash ORDER BY chain, seq) AS back
             FROM ledger) x WHERE back",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        out_of_order, 0,
        "a record's versions went into the ledger out of order"
    );
    let chains: Vec<i16> = sqlx::query_scalar("SELECT DISTINCT chain FROM ledger ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(chains, [0, 1, 2, 3]);
    let spread: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT key_hash FROM ledger GROUP BY item, key_hash HAVING count(DISTINCT chain) > 1) x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        spread, 0,
        "a record's deliveries went through two partitions"
    );
    w.verify_ledger();
}
