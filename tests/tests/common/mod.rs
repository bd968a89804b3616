//! A whole govbus on the real RabbitMQ and PostgreSQL: three departments publishing through
//! the adapter binary, the router binary, four agencies (the example catalogue with this
//! test's keys), each test in its own vhost and database.
#![allow(dead_code)]

pub mod platforms;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::{
    amqp::{publish::publish_all, seal, OutgoingMessage},
    keys,
    validate::{citizen_id, credit_code},
};
pub use govbus_tests::Got;
use govbus_tests::{free_port, workspace_root, Process, Services, TestDatabase, TestVhost};
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Connection,
};

/// Partitioned routers (`tests/tests/partitions.rs`, the cluster fault tests).
impl World {
    /// Sets this world's router to `partitions` partitions, preferring `prefer`, named `name`
    /// (its consumer tags are `govbus-router-<name>-p<p>`).
    pub fn partitioned(&self, partitions: u8, prefer: &str, name: &str) {
        self.edit(
            "router.toml",
            "[router]\n",
            &format!(
                "[router]\npartitions = {partitions}\nprefer = \"{prefer}\"\nname = \"{name}\"\nstandby_delay_ms = 1500\n"
            ),
        );
    }

    /// Another router's config after [`Self::partitioned`]: this world's, on its own ports,
    /// named `name`, preferring `prefer`, its `amqp.url` replaced by `url` when given. Returns
    /// the file and its `/metrics` port.
    pub fn second_router(&self, name: &str, prefer: &str, url: Option<&str>) -> (PathBuf, u16) {
        let (http, api) = (free_port(), free_port());
        let text = std::fs::read_to_string(self.path("router.toml")).unwrap();
        let first_name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("partitioned() first")
            .to_string();
        let first_prefer = text
            .lines()
            .find_map(|l| l.strip_prefix("prefer = "))
            .expect("partitioned() first")
            .to_string();
        let mut text = text
            .replace(
                &format!("127.0.0.1:{}", self.http_port),
                &format!("127.0.0.1:{http}"),
            )
            .replace(
                &format!("127.0.0.1:{}", self.api_port),
                &format!("127.0.0.1:{api}"),
            )
            .replace(
                &format!("name = {first_name}"),
                &format!("name = \"{name}\""),
            )
            .replace(
                &format!("prefer = {first_prefer}"),
                &format!("prefer = \"{prefer}\""),
            );
        if let Some(url) = url {
            let old = text
                .lines()
                .find(|l| l.starts_with("url = \"amqp"))
                .unwrap()
                .to_string();
            text = text.replace(&old, &format!("url = \"{url}\""));
        }
        let path = self.path(&format!("router-{name}.toml"));
        std::fs::write(&path, text).unwrap();
        (path, http)
    }

    /// Starts a router with `config` and waits until `/readyz` on `port` answers.
    pub async fn spawn_router(&self, config: &Path, port: u16) -> Process {
        let mut router =
            Process::spawn("govbus-router", &["--config".as_ref(), config.as_os_str()]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
                if r.status().is_success() {
                    return router;
                }
            }
            if let Ok(Some(status)) = router.0.try_wait() {
                panic!(
                    "govbus-router {} exited during start-up: {status}",
                    config.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in 60 s",
                config.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Partition → (its active consumer's tag, its consumers), from the management API.
    pub async fn partition_holders(&self, partitions: u8) -> HashMap<u8, (Option<String>, usize)> {
        let mut out = HashMap::new();
        for p in 0..partitions {
            let q = self
                .vhost
                .services
                .management_get(&format!("queues/{}/govbus.router.{p}", self.vhost.name))
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

    /// Waits up to 30 s until partition `p` is held by router `owner(p)` with `consumers`
    /// consumers (the rest standing by).
    pub async fn await_partitions_held(
        &self,
        partitions: u8,
        owner: impl Fn(u8) -> &'static str,
        consumers: usize,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = self.partition_holders(partitions).await;
            if (0..partitions)
                .all(|p| h[&p] == (Some(format!("govbus-router-{}-p{p}", owner(p))), consumers))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "partitions not held as preferred with {consumers} consumers each: {h:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills router `b`, active on `its` partitions, with SIGKILL once their ledger chains
    /// hold `rows` rows (within `secs`; this world's router took none of their records until
    /// then), and
    /// returns how long this world's router took to take records of them. Taking any is the
    /// proof the kill hit work in flight: RabbitMQ hands a standby only what the dead
    /// consumer left, unacked or waiting (a backlog count after it would race with the
    /// standby finishing the work).
    pub async fn kill_and_time_takeover(
        &self,
        b: Process,
        its: &[u8],
        rows: i64,
        secs: u64,
    ) -> Duration {
        let pool = self.pg().await;
        let chains: Vec<i16> = its.iter().map(|p| i16::from(*p)).collect();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let from_b: i64 =
                sqlx::query_scalar("SELECT count(*) FROM ledger WHERE chain = ANY($1)")
                    .bind(&chains)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if from_b >= rows {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "router b delivered too little: {from_b}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            partition_records(self.http_port, its).await,
            0.0,
            "this world's router took records of {its:?} while router b was active on them"
        );
        let killed = Instant::now();
        b.kill();
        loop {
            if partition_records(self.http_port, its).await > 0.0 {
                return killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "this world's router never took over {its:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages waiting in all `partitions` router partitions.
    pub async fn partition_backlog(&self, partitions: u8) -> u32 {
        let mut n = 0;
        for p in 0..partitions {
            n += self.count(&format!("govbus.router.{p}")).await;
        }
        n
    }

    /// Checks `got` (an agency's queue, in arrival order) against the ledger: every delivery is
    /// a ledger row, and each record's versions arrived in order, ending at the newest the
    /// ledger holds for it, counting a message id's first arrival only (a redelivery repeats
    /// an earlier message under its own id). Returns how many records ended at each version,
    /// and how many deliveries came again.
    pub async fn assert_versions_arrived_in_order(
        &self,
        agency: &str,
        got: &[Got],
    ) -> (std::collections::BTreeMap<i64, usize>, usize) {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT message_id, item || ':' || key_hash, version FROM ledger WHERE agency = $1",
        )
        .bind(agency)
        .fetch_all(&self.pg().await)
        .await
        .unwrap();
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (_, k, v) in &rows {
            let n = newest.entry(k.clone()).or_insert(*v);
            *n = (*n).max(*v);
        }
        let of: HashMap<String, (String, i64)> =
            rows.into_iter().map(|(m, k, v)| (m, (k, v))).collect();
        let mut seen = HashSet::new();
        let mut versions_of: HashMap<&str, Vec<i64>> = HashMap::new();
        for g in got {
            let (key, version) = of.get(&g.message_id).unwrap_or_else(|| {
                panic!("{agency}: delivery {} is not in the ledger", g.message_id)
            });
            assert_eq!(g.header_i64("govbus-version"), *version);
            if seen.insert(g.message_id.as_str()) {
                versions_of.entry(key).or_default().push(*version);
            }
        }
        assert_eq!(
            versions_of.len(),
            newest.len(),
            "{agency}: a record in the ledger never arrived"
        );
        let mut ended = std::collections::BTreeMap::new();
        for (k, v) in &versions_of {
            let mut sorted = v.clone();
            sorted.sort();
            assert_eq!(
                &sorted, v,
                "{agency}: record {k}'s versions arrived out of order"
            );
            assert_eq!(
                v.last(),
                newest.get(*k),
                "{agency}: record {k} ends below its newest version"
            );
            *ended.entry(*v.last().unwrap()).or_default() += 1;
        }
        (ended, got.len() - seen.len())
    }

    /// No delivery in `got` (one agency's queue) carries a field its grant does not list: each
    /// delivery's writer schema, served at `/schemas/{fingerprint}`, has only fields of the
    /// catalogue's grants of that agency and item (a grant's `fields` name leaves or whole
    /// records).
    pub async fn assert_only_granted_fields(&self, agency: &str, got: &[Got]) {
        let catalogue: toml::Value =
            toml::from_str(&std::fs::read_to_string(self.path("catalogue.toml")).unwrap()).unwrap();
        let granted = |item: &str| -> Vec<String> {
            catalogue["grant"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| {
                    g["agency"].as_str() == Some(agency) && g["item"].as_str() == Some(item)
                })
                .flat_map(|g| g["fields"].as_array().unwrap().iter())
                .map(|f| f.as_str().unwrap().to_string())
                .collect()
        };
        let mut checked: HashSet<String> = HashSet::new();
        for g in got {
            let (fp, _) = bus_schemas::split_header(&g.body).unwrap();
            let item = g.header_str("govbus-item");
            if !checked.insert(format!("{item}/{fp}")) {
                continue;
            }
            let text: serde_json::Value = reqwest::get(self.url(&format!("/schemas/{fp}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let writer = bus_schemas::RecordType::from_self_contained(text, "served").unwrap();
            let fields = granted(&item);
            assert!(!fields.is_empty(), "{agency} has no grant of {item}");
            for leaf in writer.leaf_paths() {
                assert!(
                    fields
                        .iter()
                        .any(|f| leaf == *f || leaf.starts_with(&format!("{f}."))),
                    "{agency}: {item} delivered with field {leaf}, not in its grants {fields:?}"
                );
            }
        }
        assert!(!checked.is_empty() || got.is_empty());
    }

    /// The ledger holds each record's versions in order, each record's deliveries in one
    /// partition's chains, and has a chain in each of `partitions`.
    pub async fn assert_ledger_partitioned(&self, partitions: u8) {
        let pool = self.pg().await;
        let out_of_order = ledger_versions_out_of_order(&pool).await;
        assert_eq!(
            out_of_order, 0,
            "a record's versions went into the ledger out of order"
        );
        let chains: Vec<i16> = sqlx::query_scalar("SELECT DISTINCT chain FROM ledger ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(chains, (0..i16::from(partitions)).collect::<Vec<_>>());
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
    }
}

/// Ledger rows whose version is below the previous row's of the same agency and record, in
/// chain order: a record's versions delivered out of order.
pub async fn ledger_versions_out_of_order(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT version < lag(version) OVER (PARTITION BY agency, item, key_hash ORDER BY chain, seq) AS back
             FROM ledger) x WHERE back",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A router's `/metrics` on `port`.
pub async fn metrics_at(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the metric line starting with `line_start` (0 when absent).
pub fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Records of `partitions` this router took, from its `/metrics` on `port`.
pub async fn partition_records(port: u16, partitions: &[u8]) -> f64 {
    let m = metrics_at(port).await;
    partitions
        .iter()
        .map(|p| {
            metric(
                &m,
                &format!("govbus_router_partition_records_total{{partition=\"{p}\"}} "),
            )
        })
        .sum()
}

/// The example catalogue's department keys, replaced by this test's.
const EXAMPLE_KEYS: [(&str, &str); 3] = [
    ("police", "fDk9tIwV7QCegB+0umeHSADUow/rk19KcMAyEnfdxdg="),
    ("commerce", "XBrGSCul+VnArT9UhEpII83ocMfyIlZ5RQuA0WYKswU="),
    ("localtax", "kMyG1bICSsxo86GVm+LlfucHAlVvn5Fk52PZ7esjRQA="),
];

/// One test's govbus.
pub struct World {
    /// First, so it is killed before its vhost and database are removed.
    pub router: Option<Process>,
    pub vhost: TestVhost,
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
    /// The router's public listener (`/metrics`, `/readyz`, `/keys`, `/schemas`).
    pub http_port: u16,
    /// The router's `[api]` listener (status page, workflow API), plain HTTP on loopback.
    pub api_port: u16,
    /// The broker addresses agency tools get (`--amqp-url`), when not the vhost's URL: a
    /// cluster's nodes.
    pub agency_amqp_url: Option<String>,
}

/// A citizen ID number with a correct check digit, unique per `n`.
pub fn citizen(n: u64) -> String {
    let birth = chrono::NaiveDate::from_ymd_opt(1960, 1, 1).unwrap()
        + chrono::Duration::days((n / 1000) as i64);
    let first17 = format!("440106{}{:03}", birth.format("%Y%m%d"), n % 1000);
    let c = citizen_id::check_character(&first17).unwrap();
    format!("{first17}{c}")
}

/// A unified social credit code with a correct check character, unique per `n`.
pub fn uscc(n: u64) -> String {
    let first17 = format!("91440101{:09}", n);
    let c = credit_code::check_character(&first17).unwrap();
    format!("{first17}{c}")
}

impl World {
    /// Vhost, database, keys, catalogue and router config (the router is not started).
    pub async fn new() -> World {
        World::on(&Services::from_env()).await
    }

    /// Like [`World::new`], with its vhost on the broker `services` names (a cluster's node).
    pub async fn on(services: &Services) -> World {
        let vhost = TestVhost::create(services).await.unwrap();
        let db = TestDatabase::create(services).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut catalogue =
            std::fs::read_to_string(workspace_root().join("router/examples/catalogue.toml"))
                .unwrap();
        for (dept, example) in EXAMPLE_KEYS {
            let public =
                keys::keygen(&dir.path().join("keys").join(dept), &format!("{dept}-2026")).unwrap();
            catalogue = catalogue.replace(example, &public);
        }
        keys::keygen(&dir.path().join("platform"), "platform-test").unwrap();
        keys::ensure_secret(&dir.path().join("platform/pseudonym-secret")).unwrap();
        std::fs::write(dir.path().join("catalogue.toml"), catalogue).unwrap();
        let http_port = free_port();
        let api_port = free_port();
        let w = World {
            router: None,
            vhost,
            db,
            dir,
            http_port,
            api_port,
            agency_amqp_url: None,
        };
        // The example calendar (2026, the real arrangement); other years count Monday to Friday.
        let calendar =
            std::fs::read_to_string(workspace_root().join("router/examples/workdays.toml"))
                .unwrap();
        std::fs::write(w.path("workdays.toml"), calendar).unwrap();
        std::fs::write(
            w.path("router.toml"),
            format!(
                r#"catalogue = "catalogue.toml"

[platform]
key_file = "platform/platform-test.key"
key_id = "platform-test"
id_secret_file = "platform/id-secret"
pseudonym_secret_file = "platform/pseudonym-secret"

[amqp]
url = "{amqp}"
management_url = "{management}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
{tls}
[database]
url = "{db}"

[router]
retry_ms = 200
watch_ms = 200

[http]
listen = "127.0.0.1:{port}"

[api]
listen = "127.0.0.1:{api_port}"
plain_http = true

[workflow]
calendar = "{calendar}"
deadline_check_secs = 1
"#,
                amqp = w.vhost.amqp_url,
                management = w.vhost.services.management_url,
                tls = w.vhost.services.tls.config_lines(),
                db = w.db.url,
                port = w.http_port,
                api_port = w.api_port,
                calendar = w.path("workdays.toml").display()
            ),
        )
        .unwrap();
        w
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Replaces `from` with `to` in one of this world's files (`router.toml`,
    /// `catalogue.toml`); fails if `from` is not there, so a changed default cannot turn the
    /// edit into a silent no-op.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.path(file)).unwrap();
        assert!(text.contains(from), "{file} has no `{from}` to replace");
        std::fs::write(self.path(file), text.replace(from, to)).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// A URL on the router's `[api]` listener (status page, workflow API).
    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// The router's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits up to `secs` until `/metrics` shows `line`; fails with `what` otherwise.
    pub async fn await_metric(&self, line: &str, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.metrics().await.contains(line) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the router and waits until it is ready.
    pub async fn start_router(&mut self) {
        let cfg = self.path("router.toml");
        self.router = Some(Process::spawn(
            "govbus-router",
            &["--config".as_ref(), cfg.as_os_str()],
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(self.url("/readyz")).await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Process(child)) = &mut self.router {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("govbus-router exited during start-up: {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "govbus-router not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets a queue policy in this world's vhost (the management API).
    pub async fn set_policy(&self, pattern: &str, definition: serde_json::Value) {
        let s = Services::from_env();
        let (u, p) = &s.management_auth;
        let r = reqwest::Client::new()
            .put(format!("{}/api/policies/{}/full", s.management_url, self.vhost.name))
            .basic_auth(u, Some(p))
            .json(&serde_json::json!({"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "policy: {}", r.status());
    }

    /// Waits until the broker applies a `max-length` policy to a queue (policies apply
    /// asynchronously).
    pub async fn await_policy(&self, queue: &str) {
        self.await_max_length(queue, true).await;
    }

    /// Removes the policy [`Self::set_policy`] set and waits until `queue` is free of it.
    pub async fn clear_policy(&self, queue: &str) {
        let s = Services::from_env();
        let (u, p) = &s.management_auth;
        let r = reqwest::Client::new()
            .delete(format!(
                "{}/api/policies/{}/full",
                s.management_url, self.vhost.name
            ))
            .basic_auth(u, Some(p))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "policy: {}", r.status());
        self.await_max_length(queue, false).await;
    }

    async fn await_max_length(&self, queue: &str, applied: bool) {
        let s = Services::from_env();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let q = s
                .management_get(&format!("queues/{}/{queue}", self.vhost.name))
                .await;
            if q["effective_policy_definition"].get("max-length").is_some() == applied {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "policy not {} {queue}: {q}",
                if applied {
                    "applied to"
                } else {
                    "removed from"
                }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sets the router's platform key (and what goes with it) and restarts the router.
    pub async fn switch_platform_key(&mut self, platform_lines: &str) {
        let cfg = std::fs::read_to_string(self.path("router.toml")).unwrap();
        let start = cfg.find("[platform]").unwrap();
        let amqp = cfg.find("[amqp]").unwrap();
        std::fs::write(
            self.path("router.toml"),
            format!(
                "{}[platform]\nid_secret_file = \"platform/id-secret\"\npseudonym_secret_file = \"platform/pseudonym-secret\"\n{platform_lines}\n{}",
                &cfg[..start],
                &cfg[amqp..]
            ),
        )
        .unwrap();
        if let Some(r) = self.router.take() {
            r.terminate();
        }
        self.start_router().await;
    }

    /// A platform key rotation: `platform-2027`, endorsed by the key agencies were provisioned
    /// with (`platform-test`, valid for another hour), put in force (the router restarted).
    /// Returns what `govbus keygen` printed.
    pub async fn rotate_platform_key(&mut self) -> String {
        let dir = self.path("platform");
        let out = Process::command("govbus")
            .args(["keygen", "--out"])
            .arg(&dir)
            .args(["--key-id", "platform-2027", "--endorse-with"])
            .arg(dir.join("platform-test.key"))
            .args(["--endorse-key-id", "platform-test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "govbus keygen --endorse-with: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let old_public = std::fs::read_to_string(dir.join("platform-test.pub")).unwrap();
        self.switch_platform_key(&format!(
            "key_file = \"platform/platform-2027.key\"\nkey_id = \"platform-2027\"\nendorsement_file = \"platform/platform-2027.endorsement\"\n\n[[platform.previous_keys]]\nkey_id = \"platform-test\"\npublic_key = \"{}\"\nvalid_until = \"{}\"\n",
            old_public.trim(),
            (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
        ))
        .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes an adapter config with a CSV source for `department`/`item` and the given
    /// field mappings (`target = column`, `column|code_table`, or `=value` for a constant).
    pub fn adapter_config(
        &self,
        department: &str,
        item: &str,
        record_type: &str,
        version_column: Option<&str>,
        fields: &[(&str, &str)],
    ) -> PathBuf {
        let d = self.path(&format!("adapters/{department}"));
        std::fs::create_dir_all(d.join("inbox")).unwrap();
        let mut text = format!(
            r#"department = "{department}"
item = "{item}"
record_type = "{record_type}"
state_dir = "state"

[signing]
key_file = "{keys}/{department}-2026.key"
key_id = "{department}-2026"
id_secret_file = "{keys}/id-secret"

[amqp]
url = "{amqp}"
reconnect_min_ms = 100
{tls}
[source]
kind = "csv"
path = "inbox"
poll_interval_ms = 100

[http]
listen = "127.0.0.1:0"

[mapping]
"#,
            keys = self.path(&format!("keys/{department}")).display(),
            amqp = self.vhost.amqp_url,
            tls = self.vhost.services.tls.config_lines(),
        );
        if let Some(v) = version_column {
            text.push_str(&format!("version_column = \"{v}\"\n"));
        }
        text.push_str("delete = { column = \"op\", values = [\"D\"] }\n");
        for (target, column) in fields {
            match column.strip_prefix('=') {
                Some(value) => text.push_str(&format!(
                    "\n[[mapping.field]]\ntarget = \"{target}\"\nvalue = \"{value}\"\n"
                )),
                None => {
                    let (column, table) = column.split_once('|').unwrap_or((column, ""));
                    text.push_str(&format!(
                        "\n[[mapping.field]]\ntarget = \"{target}\"\ncolumn = \"{column}\"\n"
                    ));
                    if !table.is_empty() {
                        text.push_str(&format!("code_table = \"{table}\"\n"));
                    }
                }
            }
        }
        let path = d.join("adapter.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Drops a CSV file into a department's inbox.
    pub fn drop_csv(&self, department: &str, name: &str, text: &str) {
        let inbox = self.path(&format!("adapters/{department}/inbox"));
        let tmp = inbox.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, inbox.join(name)).unwrap();
    }

    /// Police household registrations `from..to`.
    pub fn police(&self, from: u64, to: u64, version: u64) -> PathBuf {
        let cfg = self.adapter_config(
            "police",
            "household",
            "gov.gz.police.HouseholdRegistration",
            Some("version"),
            &[
                ("citizen_id_number", "id"),
                ("name", "name"),
                ("sex", "sex|sex"),
                ("ethnicity", "ethnicity|ethnicity"),
                ("status", "status|household_status"),
            ],
        );
        let mut csv = String::from("id,name,sex,ethnicity,status,version,op\n");
        for n in from..to {
            csv.push_str(&format!(
                "{},居民{n},男,汉族,正常,{version},U\n",
                citizen(n)
            ));
        }
        self.drop_csv(
            "police",
            &format!("household-{from}-{to}-{version}.csv"),
            &csv,
        );
        cfg
    }

    /// Commerce enterprise registrations `from..to`: even ones in Tianhe (440106), odd in Yuexiu.
    pub fn commerce(&self, from: u64, to: u64) -> PathBuf {
        self.commerce_as("enterprise", from, to)
    }

    /// [`Self::commerce`], published as catalogue item `item`.
    pub fn commerce_as(&self, item: &str, from: u64, to: u64) -> PathBuf {
        let cfg = self.adapter_config(
            "commerce",
            item,
            "gov.gz.commerce.EnterpriseRegistration",
            Some("version"),
            &[
                ("unified_social_credit_code", "uscc"),
                ("name", "name"),
                ("legal_representative.name", "rep"),
                ("legal_representative.id_type", "=111"),
                ("legal_representative.id_number", "rep_id"),
                ("division_code", "division"),
                ("registered_address", "address"),
                ("established_date", "established"),
            ],
        );
        let mut csv =
            String::from("uscc,name,rep,rep_id,division,address,established,version,op\n");
        for n in from..to {
            let division = if n % 2 == 0 { "440106" } else { "440104" };
            csv.push_str(&format!(
                "{},企业{n}有限公司,法人{n},{},{division},某路{n}号,2015-03-0{},1,U\n",
                uscc(n),
                citizen(100_000 + n),
                1 + n % 9
            ));
        }
        self.drop_csv("commerce", &format!("enterprise-{from}-{to}.csv"), &csv);
        cfg
    }

    /// Local tax registrations `from..to`.
    pub fn localtax(&self, from: u64, to: u64) -> PathBuf {
        let cfg = self.adapter_config(
            "localtax",
            "registration",
            "gov.gz.localtax.LocalTaxRegistration",
            Some("version"),
            &[
                ("taxpayer_id", "tid"),
                ("unified_social_credit_code", "uscc"),
                ("registered_address", "address"),
                ("registration_date", "date"),
            ],
        );
        let mut csv = String::from("tid,uscc,address,date,version,op\n");
        for n in from..to {
            csv.push_str(&format!(
                "{},{},某路{n}号,2016-01-0{},1,U\n",
                uscc(n),
                uscc(n),
                1 + n % 9
            ));
        }
        self.drop_csv("localtax", &format!("registration-{from}-{to}.csv"), &csv);
        cfg
    }

    /// Runs an adapter `--once`.
    pub fn run_adapter(&self, config: &Path) {
        let status = Process::command("govbus-adapter")
            .arg("--config")
            .arg(config)
            .arg("--once")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "govbus-adapter --once failed for {}",
            config.display()
        );
    }

    /// The flags that point an agency tool (`govbus-agency tail`, `govbus-agency sink`) at this world.
    pub fn agency_flags(&self, agency: &str) -> Vec<std::ffi::OsString> {
        let key = std::fs::read_to_string(self.path("platform/platform-test.pub")).unwrap();
        [
            "--agency",
            agency,
            "--amqp-url",
            self.agency_amqp_url
                .as_deref()
                .unwrap_or(&self.vhost.amqp_url),
            "--router-url",
            &self.url(""),
            "--platform-public-key",
            key.trim(),
        ]
        .iter()
        .map(Into::into)
        .chain(self.vhost.services.tls.flags().into_iter().map(Into::into))
        .collect()
    }

    /// Starts `govbus-agency <command> <agency flags> <extra>`.
    pub fn spawn_agency_tool(&self, command: &str, agency: &str, extra: &[&str]) -> Process {
        let mut args: Vec<std::ffi::OsString> = vec![command.into()];
        args.extend(self.agency_flags(agency));
        args.extend(extra.iter().map(Into::into));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Process::spawn("govbus-agency", &refs)
    }

    /// `govbus-agency tail` for `agency` until it handled `count` deliveries: the JSON lines it printed.
    pub async fn tail(&self, agency: &str, count: u64) -> Vec<serde_json::Value> {
        let mut tail = Process::command("govbus-agency");
        tail.arg("tail")
            .args(self.agency_flags(agency))
            .args(["--count", &count.to_string()]);
        let what = format!("govbus-agency tail --agency {agency} --count {count}");
        let out =
            tokio::task::spawn_blocking(move || govbus_tests::output_within(&mut tail, 120, &what))
                .await
                .unwrap();
        assert!(
            out.status.success(),
            "govbus-agency tail: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A workflow API token for `role`/`subject` (`govbus workflow token`).
    pub fn api_token(&self, role: &str, subject: &str) -> String {
        let out = Process::command("govbus")
            .args(["workflow", "token", "--platform-id-secret"])
            .arg(self.path("platform/id-secret"))
            .args(["--role", role, "--subject", subject])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `govbus <args> --config <this world's router.toml>`, which must succeed: its output.
    pub fn govbus_with_config(&self, args: &[&str]) -> String {
        let out = Process::command("govbus")
            .args(args)
            .arg("--config")
            .arg(self.path("router.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "govbus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `govbus ledger verify` passes.
    pub fn verify_ledger(&self) {
        let out = Process::command("govbus")
            .args(["ledger", "verify", "--database-url", &self.db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ledger verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// A database connection.
    pub async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.db.url).await.unwrap()
    }

    /// Messages in a queue (passive declare).
    pub async fn count(&self, queue: &str) -> u32 {
        govbus_tests::queue_count(&self.vhost, queue).await
    }

    /// Waits until the router's queue is empty and the ledger stops growing for `quiet`.
    pub async fn settle(&self, quiet: Duration) {
        let pool = self.pg().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (-1i64, Instant::now());
        loop {
            let rows: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM ledger) + (SELECT count(*) FROM refusals) + (SELECT count(*) FROM pending_deliveries)")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            if rows != last.0 {
                last = (rows, Instant::now());
            } else if last.1.elapsed() >= quiet && self.count("govbus.router.0").await == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the router did not settle within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes every message from a queue (acked), until it stays empty for `idle`.
    pub async fn drain(&self, queue: &str, idle: Duration) -> Vec<Got> {
        govbus_tests::drain(&self.vhost, queue, idle).await
    }

    /// Takes `queue`'s messages until `want` distinct message ids have arrived and the router
    /// keeps nothing for retry any more; fails after `secs`, naming what is missing.
    pub async fn drain_until_delivered(&self, queue: &str, want: usize, secs: u64) -> Vec<Got> {
        let pool = self.pg().await;
        let mut got: Vec<Got> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            got.extend(self.drain(queue, Duration::from_millis(300)).await);
            let unique: HashSet<&str> = got.iter().map(|g| g.message_id.as_str()).collect();
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_deliveries")
                .fetch_one(&pool)
                .await
                .unwrap();
            if unique.len() == want && pending == 0 {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} got {} of {want} in {secs} s, {pending} deliveries still kept",
                unique.len()
            );
        }
    }
}

/// What [`World::publish_batch_cases`] sent.
pub struct BatchCases {
    /// Deliveries whose batch signature verifies (batches of 1, 2, 3, 5 and 1,024); their
    /// message ids start with `batch`.
    pub good: usize,
    /// Deliveries each changed in one way a verifier must refuse, sent before the good ones.
    pub bad: usize,
}

impl World {
    /// A copy of a real delivery under another message id, without its seal, ready to seal.
    fn unsealed(template: &Got, agency: &str, message_id: &str) -> OutgoingMessage {
        use bus_schemas::wire::header;
        let seal = [
            header::KEY_ID,
            header::SALT,
            header::SIGNATURE,
            header::BATCH,
            header::PROOF,
        ];
        let mut h = FieldTable::default();
        for (k, v) in &template.headers {
            if !seal.contains(&k.as_str()) {
                h.insert(k.as_str().into(), v.clone());
            }
        }
        OutgoingMessage {
            exchange: bus_schemas::wire::DELIVER_EXCHANGE.into(),
            routing_key: agency.into(),
            body: template.body.clone(),
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(message_id.into())
                .with_headers(h),
        }
    }

    /// The platform signer whose key file is `platform/<key_id>.key`.
    pub fn platform_signer(&self, key_id: &str) -> bus_schemas::wire::Signer {
        keys::load_signer(&self.path(&format!("platform/{key_id}.key")), key_id).unwrap()
    }

    /// Copies of `template` (a real delivery to `agency`) sealed by `signer` for `audience`
    /// as one batch, under the message ids `<prefix>-<i>`.
    pub fn sealed_copies(
        &self,
        template: &Got,
        agency: &str,
        signer: &bus_schemas::wire::Signer,
        audience: &str,
        prefix: &str,
        n: usize,
    ) -> Vec<OutgoingMessage> {
        let mut out: Vec<OutgoingMessage> = (0..n)
            .map(|i| Self::unsealed(template, agency, &format!("{prefix}-{i}")))
            .collect();
        seal::seal(signer, audience, out.iter_mut()).unwrap();
        out
    }

    /// Publishes messages to the broker with confirms.
    pub async fn publish(&self, messages: &[OutgoingMessage]) {
        let conn = self.vhost.connect().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for c in publish_all(&ch, messages.iter()).await {
            c.unwrap().await.unwrap();
        }
        let _ = conn.close(200, "ok".into()).await;
    }

    /// Sends `agency` deliveries sealed with the platform key `platform-test`, made from a
    /// real delivery it received (`template`): first one of each forgery a verifier must
    /// refuse as a bad signature (a flipped body byte, a flipped salt, a changed grant header,
    /// a wrong leaf index, a path from another batch, a path one hash short and one long, a
    /// size of 0 and of 1,025, a batch signed for another agency), then batches of 1, 2, 3, 5
    /// and 1,024 that verify.
    pub async fn publish_batch_cases(&self, agency: &str, template: &Got) -> BatchCases {
        use bus_schemas::wire::header;
        let signer = self.platform_signer("platform-test");
        let a = self.sealed_copies(template, agency, &signer, agency, "forged-a", 5);
        let b = self.sealed_copies(template, agency, &signer, agency, "forged-b", 5);
        let other = if agency == "health" {
            "civil"
        } else {
            "health"
        };
        let elsewhere = self.sealed_copies(template, agency, &signer, other, "forged-c", 1);
        let bad = batch_forgeries(
            &a,
            &b,
            &elsewhere[0],
            &[(header::GRANT, format!("{other}-household"))],
        );
        let m = &a[3];
        // The untouched message verifies: each forgery fails for its own change.
        let verifier = bus_schemas::batch::Verifier::new();
        let key = signer.verifying_key();
        seal::verify(&verifier, &key, agency, &m.properties, &m.body).unwrap();
        for f in &bad {
            assert!(seal::verify(&verifier, &key, agency, &f.properties, &f.body).is_err());
        }
        self.publish(&bad).await;
        let mut good = 0;
        for n in [1, 2, 3, 5, 1024] {
            let batch =
                self.sealed_copies(template, agency, &signer, agency, &format!("batch{n}"), n);
            self.publish(&batch).await;
            good += n;
        }
        BatchCases {
            good,
            bad: bad.len(),
        }
    }

    /// Puts the previous platform key (`platform-test`, after [`World::rotate_platform_key`])
    /// past its `valid_until`, and restarts the router, which lists it so in `/keys`.
    pub async fn expire_previous_platform_key(&mut self) {
        let cfg = std::fs::read_to_string(self.path("router.toml")).unwrap();
        let at = cfg
            .find("[[platform.previous_keys]]")
            .expect("a previous platform key");
        let from = at + cfg[at..].find("valid_until = \"").unwrap() + "valid_until = \"".len();
        let to = from + cfg[from..].find('"').unwrap();
        let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
        std::fs::write(
            self.path("router.toml"),
            format!("{}{past}{}", &cfg[..from], &cfg[to..]),
        )
        .unwrap();
        if let Some(r) = self.router.take() {
            r.terminate();
        }
        self.start_router().await;
    }
}

/// A header of `m` as text.
pub fn header_of(m: &OutgoingMessage, name: &str) -> String {
    bus_schemas::amqp::headers::header_str(m.properties.headers().as_ref().unwrap(), name)
        .unwrap()
        .to_string()
}

/// `m` with header `name` set to `value`.
pub fn with_header(m: &OutgoingMessage, name: &str, value: String) -> OutgoingMessage {
    let mut h = m.properties.headers().clone().unwrap();
    h.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    let mut m = m.clone();
    m.properties = m.properties.clone().with_headers(h);
    m
}

/// Forgeries of the fourth message of batch `a` (of 5) that a verifier must refuse as a bad
/// signature: a flipped body byte, a flipped salt, `changed` headers (a grant, say), a wrong
/// leaf index, the path of `b`'s fourth message (another batch), a path one hash short and
/// one long, a size of 0 and of 1,025; and `elsewhere`, a batch signed for another audience.
pub fn batch_forgeries(
    a: &[OutgoingMessage],
    b: &[OutgoingMessage],
    elsewhere: &OutgoingMessage,
    changed: &[(&str, String)],
) -> Vec<OutgoingMessage> {
    use bus_schemas::wire::header;
    let m = &a[3];
    let mut flipped_body = m.clone();
    *flipped_body.body.last_mut().unwrap() ^= 1;
    let mut salt = B64.decode(header_of(m, header::SALT)).unwrap();
    salt[0] ^= 1;
    let path = B64.decode(header_of(m, header::PROOF)).unwrap();
    let mut out = vec![
        flipped_body,
        with_header(m, header::SALT, B64.encode(&salt)),
    ];
    out.extend(changed.iter().map(|(n, v)| with_header(m, n, v.clone())));
    out.extend([
        with_header(m, header::BATCH, "2/5".into()),
        with_header(m, header::PROOF, header_of(&b[3], header::PROOF)),
        with_header(m, header::PROOF, B64.encode(&path[..path.len() - 32])),
        with_header(
            m,
            header::PROOF,
            B64.encode([&path[..], &[0u8; 32]].concat()),
        ),
        with_header(m, header::BATCH, "0/0".into()),
        with_header(m, header::BATCH, "3/1025".into()),
        elsewhere.clone(),
    ]);
    out
}

/// Deletes the test's accounts (accounts are per broker, not per vhost).
pub struct Accounts(pub String);

impl Drop for Accounts {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let s = Services::from_env();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let c = reqwest::Client::new();
                let (u, p) = &s.management_auth;
                let users: serde_json::Value = c
                    .get(format!("{}/api/users", s.management_url))
                    .basic_auth(u, Some(p))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                for user in users.as_array()? {
                    let name = user["name"].as_str()?;
                    if name.starts_with(&prefix) {
                        let _ = c
                            .delete(format!("{}/api/users/{name}", s.management_url))
                            .basic_auth(u, Some(p))
                            .send()
                            .await;
                    }
                }
                Some(())
            })
        })
        .join();
    }
}

/// `govbus provision` of this world's catalogue into `accounts/`, accounts named with `prefix`.
pub fn provision(w: &World, prefix: &str) -> String {
    provision_with(w, prefix, &[])
}

pub fn provision_with(w: &World, prefix: &str, extra: &[&std::ffi::OsStr]) -> String {
    let out = Process::command("govbus")
        .args(["provision", "--catalogue"])
        .arg(w.path("catalogue.toml"))
        .arg("--out")
        .arg(w.path("accounts"))
        .arg("--platform-public-key")
        .arg(w.path("platform/platform-test.pub"))
        .args(["--amqp-url", &w.vhost.amqp_url, "--account-prefix", prefix])
        .args(extra)
        .env(
            "GOVBUS__AMQP__MANAGEMENT_URL",
            &w.vhost.services.management_url,
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "provision: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A value of an account's env file.
pub fn env_value(file: &Path, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{key} not in {}", file.display()))
}

/// A connection with an account's env file.
pub async fn connect(file: &Path) -> Connection {
    govbus_tests::connect_url(&env_value(file, "GOVBUS__AMQP__URL"))
        .await
        .unwrap()
}

/// Whether consuming `queue` is refused.
pub async fn consume_refused(conn: &Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .basic_consume(
            queue.into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(_) => false,
        Err(e) => {
            assert!(
                e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"),
                "{e}"
            );
            true
        }
    }
}

/// Whether publishing to `govbus.ingest` under `key` is refused.
pub async fn publish_refused(conn: &Connection, key: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let r = async {
        ch.basic_publish(
            bus_schemas::wire::INGEST_EXCHANGE.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await?
        .await
    };
    match tokio::time::timeout(Duration::from_secs(10), r)
        .await
        .expect("a confirm or a channel error")
    {
        Ok(_) => false,
        Err(e) => {
            assert!(
                e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"),
                "{e}"
            );
            true
        }
    }
}

impl World {
    /// Publishes a record under `routing_key`, signed by `signer`, bypassing the adapter.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        item: &str,
        rt: &bus_schemas::RecordType,
        doc: serde_json::Value,
        signer: &bus_schemas::wire::Signer,
    ) {
        let body = rt.encode_json(&doc).unwrap();
        // Distinct bodies under one routing key get distinct ids.
        let id = format!(
            "raw-{routing_key}-{}",
            hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&body)[..8])
        );
        let (dept, _) = routing_key.split_once('.').unwrap();
        let mut h = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        h.insert(bus_schemas::wire::header::DEPARTMENT.into(), s(dept));
        h.insert(bus_schemas::wire::header::ITEM.into(), s(item));
        h.insert(
            bus_schemas::wire::header::VERSION.into(),
            AMQPValue::LongLongInt(1),
        );
        h.insert(bus_schemas::wire::header::OP.into(), s("upsert"));
        let mut m = bus_schemas::amqp::OutgoingMessage {
            exchange: String::new(),
            routing_key: String::new(),
            body,
            properties: BasicProperties::default()
                .with_message_id(lapin::types::ShortString::from(id.as_str()))
                .with_headers(h),
        };
        bus_schemas::amqp::seal::seal(signer, bus_schemas::batch::AUDIENCE_INGEST, [&mut m])
            .unwrap();
        let (body, h) = (m.body, m.properties.headers().clone().unwrap());
        let conn = self.vhost.connect().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        ch.basic_publish(
            bus_schemas::wire::INGEST_EXCHANGE.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            BasicProperties::default()
                .with_message_id(lapin::types::ShortString::from(id.as_str()))
                .with_delivery_mode(2)
                .with_headers(h),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        conn.close(200, "ok".into()).await.unwrap();
    }
}

/// Waits until `check` holds, failing with `what` after `secs`.
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {secs} s)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
