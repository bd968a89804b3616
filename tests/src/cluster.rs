//! The three-node RabbitMQ cluster `scripts/test` starts for the cluster fault tests
//! (`scripts/lib-cluster.sh`): its nodes, stopping and starting one, counting on one.
use std::{path::PathBuf, process::Command};

use lapin::{Connection, ConnectionProperties};

use crate::Services;

/// The cluster `scripts/test` started: its folder (the cookie) and the nodes' AMQP ports.
pub struct Cluster {
    dir: PathBuf,
    amqp_ports: Vec<u16>,
    mgmt_port: u16,
}

impl Cluster {
    pub fn from_env() -> Cluster {
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
    pub fn ctl(&self, n: usize, args: &[&str]) {
        let root = crate::workspace_root();
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
    pub fn services(&self) -> Services {
        let mut s = Services::from_env();
        s.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_ports[0]);
        s.management_url = format!("http://127.0.0.1:{}", self.mgmt_port);
        s.management_auth = ("guest".into(), "guest".into());
        s
    }

    /// `vhost_url` (on node 1) on each node, comma-separated: the adapter's `amqp.url`.
    pub fn all_nodes(&self, vhost_url: &str) -> String {
        self.nodes_from(vhost_url, 0)
    }

    /// `vhost_url` (on node 1) on each node, node 1 first.
    pub fn node_urls(&self, vhost_url: &str) -> Vec<String> {
        let first = format!(":{}/", self.amqp_ports[0]);
        self.amqp_ports
            .iter()
            .map(|p| vhost_url.replace(&first, &format!(":{p}/")))
            .collect()
    }

    /// [`Self::all_nodes`] starting at the node of index `first` (0 is node 1) and wrapping
    /// round: an `amqp.url` that puts a process on a node of its own.
    pub fn nodes_from(&self, vhost_url: &str, first: usize) -> String {
        let nodes = self.node_urls(vhost_url);
        (0..nodes.len())
            .map(|i| nodes[(first + i) % nodes.len()].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A stopped node, started again when dropped (also when the test fails), so the cluster is
/// whole for what runs next.
pub struct Stopped<'a>(pub &'a Cluster, pub usize);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.ctl(self.1, &["start_app"]);
        self.0.ctl(self.1, &["await_startup"]);
    }
}

/// Messages in `queue`, asked of the node at `url` (None while it does not answer).
pub async fn count_at(url: &str, queue: &str) -> Option<u32> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let n = crate::count_on(&conn, queue).await.ok();
    let _ = conn.close(200, "ok".into()).await;
    n
}

impl Cluster {
    /// Stops node `n` and waits until `queue`, counted on the node at `other`, grows by 1,000
    /// (or reaches `total`) while `n` is down, failing after `secs`; then starts `n` again (also
    /// when this fails). Returns the count on `other` just after the stop.
    pub async fn grows_while_stopped(
        &self,
        n: usize,
        other: &str,
        queue: &str,
        total: u64,
        secs: u64,
    ) -> u32 {
        use std::time::{Duration, Instant};
        self.ctl(n, &["stop_app"]);
        let _stopped = Stopped(self, n);
        let at_stop = loop {
            if let Some(c) = count_at(other, queue).await {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let now = count_at(other, queue).await.unwrap_or(0);
            if now >= at_stop + 1_000 || u64::from(now) >= total {
                return at_stop;
            }
            assert!(
                Instant::now() < deadline,
                "nothing arrived in {queue} through the other nodes while node {n} was down ({now} in it, {at_stop} at the stop)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The district platform's own RabbitMQ node `scripts/test` starts for
/// `tests/tests/faults_platforms.rs` (`scripts/lib-district.sh`).
pub struct DistrictNode {
    dir: PathBuf,
    amqp_port: u16,
    mgmt_port: u16,
}

impl DistrictNode {
    pub fn from_env() -> DistrictNode {
        let how = "this test needs the district node of scripts/lib-district.sh: run it through \
                   scripts/test, or by hand: `. scripts/lib-services.sh; . scripts/lib-tls.sh; \
                   . scripts/lib-cluster.sh; . scripts/lib-district.sh; start_district_node` and set \
                   GOVBUS_TEST_DISTRICT_DIR=target/district GOVBUS_TEST_DISTRICT_PORT=5801 \
                   GOVBUS_TEST_DISTRICT_MGMT_PORT=15801";
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: {how}"));
        DistrictNode {
            dir: var("GOVBUS_TEST_DISTRICT_DIR").into(),
            amqp_port: var("GOVBUS_TEST_DISTRICT_PORT")
                .parse()
                .expect("GOVBUS_TEST_DISTRICT_PORT: a port"),
            mgmt_port: var("GOVBUS_TEST_DISTRICT_MGMT_PORT")
                .parse()
                .expect("GOVBUS_TEST_DISTRICT_MGMT_PORT: a port"),
        }
    }

    /// `rabbitmqctl` on the node, through `scripts/lib-district.sh`.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("bash")
            .current_dir(crate::workspace_root())
            .env("DISTRICT_DIR", &self.dir)
            .arg("-c")
            .arg(format!(
                ". scripts/lib-services.sh && . scripts/lib-tls.sh && . scripts/lib-cluster.sh && . scripts/lib-district.sh && as_district cluster_ctl 1 {}",
                args.join(" ")
            ))
            .output()
            .unwrap_or_else(|e| panic!("cannot run bash ({e})"));
        assert!(
            out.status.success(),
            "rabbitmqctl on the district node {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The node's broker settings (plain AMQP, guest: the node is the suite's own).
    pub fn services(&self) -> Services {
        let mut s = Services::from_env();
        s.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port);
        s.management_url = format!("http://127.0.0.1:{}", self.mgmt_port);
        s.management_auth = ("guest".into(), "guest".into());
        s.tls = Default::default();
        s
    }
}
