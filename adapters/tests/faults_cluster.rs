//! A three-node RabbitMQ cluster (`scripts/lib-cluster.sh`) loses the node the adapter is
//! connected to while it publishes: the adapter, given the three nodes' addresses, goes on
//! through another node, the quorum queue keeps every record, and nothing is missing. Stops a
//! cluster node, so it is ignored in the main run and run by `scripts/test` in a step of its
//! own, against the cluster it starts.
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use bus_schemas::wire;
use common::*;
use govbus_tests::Services;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// The cluster `scripts/test` started: its folder (the cookie) and the nodes' AMQP ports.
struct Cluster {
    dir: PathBuf,
    amqp_ports: Vec<u16>,
    mgmt_port: u16,
}

impl Cluster {
    fn from_env() -> Cluster {
        let how = "these tests need the three-node cluster of scripts/lib-cluster.sh: run them \
                   through scripts/test, or by hand: `. scripts/lib-services.sh; . scripts/lib-tls.sh; \
                   . scripts/lib-cluster.sh; start_cluster` and set GOVBUS_TEST_CLUSTER_DIR=target/cluster \
                   GOVBUS_TEST_CLUSTER_PORTS=5701,5702,5703 GOVBUS_TEST_CLUSTER_MGMT_PORT=15701";
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: {how}"));
        Cluster {
            dir: var("GOVBUS_TEST_CLUSTER_DIR").into(),
            amqp_ports: var("GOVBUS_TEST_CLUSTER_PORTS")
                .split(',')
                .map(|p| p.trim().parse().expect("GOVBUS_TEST_CLUSTER_PORTS: ports"))
                .collect(),
            mgmt_port: var("GOVBUS_TEST_CLUSTER_MGMT_PORT")
                .parse()
                .expect("GOVBUS_TEST_CLUSTER_MGMT_PORT: a port"),
        }
    }

    /// `rabbitmqctl` on node `n` (1-based), through `scripts/lib-cluster.sh` (its cookie, its
    /// RabbitMQ installation).
    fn ctl(&self, n: usize, args: &[&str]) {
        let root = govbus_tests::workspace_root();
        let out = Command::new("bash")
            .current_dir(&root)
            .env("CLUSTER_DIR", &self.dir)
            .arg("-c")
            .arg(format!(
                ". scripts/lib-services.sh && . scripts/lib-tls.sh && . scripts/lib-cluster.sh && cluster_ctl {n} {}",
                args.join(" ")
            ))
            .output()
            .unwrap_or_else(|e| panic!("cannot run bash ({e})"));
        assert!(
            out.status.success(),
            "rabbitmqctl on cluster node {n} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The broker settings of node 1 (where the vhost is made).
    fn services(&self) -> Services {
        let mut s = Services::from_env();
        s.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_ports[0]);
        s.management_url = format!("http://127.0.0.1:{}", self.mgmt_port);
        s.management_auth = ("guest".into(), "guest".into());
        s
    }

    /// `vhost_url` (on node 1) on each node, comma-separated: the adapter's `amqp.url`.
    fn all_nodes(&self, vhost_url: &str) -> String {
        let first = format!(":{}/", self.amqp_ports[0]);
        self.amqp_ports
            .iter()
            .map(|p| vhost_url.replace(&first, &format!(":{p}/")))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A stopped node, started again when dropped (also when the test fails), so the cluster is
/// whole for what runs next.
struct Stopped<'a>(&'a Cluster, usize);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.ctl(self.1, &["start_app"]);
        self.0.ctl(self.1, &["await_startup"]);
    }
}

/// Messages in `queue`, asked of the node at `url` (None while it does not answer).
async fn count_at(url: &str, queue: &str) -> Option<u32> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let n = govbus_tests::count_on(&conn, queue).await.ok();
    let _ = conn.close(200, "ok".into()).await;
    n
}

/// CSV, 20,000 rows: node 1 (the adapter's first address) stops after 3,000 are in, and
/// stays down while the adapter goes on through node 2 or 3; then it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops a cluster node: run by scripts/test after the rest, against its cluster"]
async fn adapter_goes_on_through_another_node_when_its_node_stops() {
    let cluster = Cluster::from_env();
    let env = Env::on("police", &cluster.services()).await;
    let mut cfg = env.config("police-household");
    cfg.mapping.version_column = None;
    cfg.amqp.url = cluster.all_nodes(&env.vhost.amqp_url);
    let node2 = cfg.amqp.urls()[1].to_string();
    let valid = drop_big_household_file(&env);

    let run = tokio::spawn(adapters::run(cfg, CancellationToken::new(), true));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while govbus_tests::queue_count(&env.vhost, wire::ROUTER_QUEUE).await < 3_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "too slow before the stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.ctl(1, &["stop_app"]);
    let stopped = Stopped(&cluster, 1);
    // While node 1 is down, records keep arriving, taken by another node.
    let at_stop = loop {
        if let Some(n) = count_at(&node2, wire::ROUTER_QUEUE).await {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = count_at(&node2, wire::ROUTER_QUEUE).await.unwrap_or(0);
        if now >= at_stop + 1_000 || now as usize >= valid.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no records arrived through the other nodes while node 1 was down ({now} in the queue, {at_stop} at the stop)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stopped);

    let summary = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the adapter finished")
        .unwrap()
        .unwrap();
    assert_fault_hit_the_run(&summary);
    assert_each_record_arrived(
        &env,
        "police",
        "household",
        "/citizen_id_number",
        valid.len(),
    )
    .await;
    assert!(env.path("inbox/done/big.csv").exists());
}
