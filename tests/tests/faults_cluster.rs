//! A three-node RabbitMQ cluster (`scripts/lib-cluster.sh`) loses the node the router is
//! connected to while it works through a backlog: the router, given the three nodes'
//! addresses, reconnects through another node and goes on; every record reaches the agency,
//! each delivery in the ledger once, and the ledger verifies. Stops a cluster node, so it is
//! ignored in the main run and run by `scripts/test` in a step of its own, against its cluster.
mod common;

use std::time::{Duration, Instant};

use common::World;
use govbus_tests::cluster::Cluster;

const RECORDS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops a cluster node: run by scripts/test after the rest, against its cluster"]
async fn router_goes_on_through_another_node_when_its_node_stops() {
    let cluster = Cluster::from_env();
    let mut w = World::on(&cluster.services()).await;
    let one = w.vhost.amqp_url.clone();
    let nodes = cluster.all_nodes(&one);
    let two = nodes.split(',').nth(1).unwrap().to_string();
    // The router declares the topology; then the backlog is loaded while it is stopped, through
    // node 2 (which stays up), so the stop falls in the middle of the router's work.
    w.start_router().await;
    w.router.take().unwrap().terminate();
    let cfg = w.police(0, RECORDS, 1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(&one));
    std::fs::write(&cfg, text.replace(&one, &two)).unwrap();
    w.run_adapter(&cfg);
    // The router knows all three nodes and starts on node 1.
    w.edit(
        "router.toml",
        &format!("url = \"{one}\""),
        &format!("url = \"{nodes}\""),
    );
    w.start_router().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while w.count("agency.civil").await < 2_000 {
        assert!(Instant::now() < deadline, "too slow before the stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While node 1 is down, deliveries go on, through another node.
    let at_stop = cluster
        .grows_while_stopped(1, &two, "agency.civil", RECORDS, 120)
        .await;
    assert!(
        (at_stop as u64) < RECORDS,
        "the router had finished before the stop ({at_stop} delivered)"
    );

    let civil = w
        .drain_until_delivered("agency.civil", RECORDS as usize, 180)
        .await;
    let unique: std::collections::HashSet<&str> =
        civil.iter().map(|g| g.message_id.as_str()).collect();
    assert_eq!(
        unique.len(),
        RECORDS as usize,
        "every record, once per message id"
    );
    let metrics = w.metrics().await;
    let reconnects: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("govbus_router_reconnects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        reconnects >= 1.0,
        "the router never reconnected: the stop missed it"
    );
    w.verify_ledger();
}
