//! # govbus-tests: the harness for tests against the real RabbitMQ and PostgreSQL
//!
//! ## Layout
//! - [`Services`]: where the services are, from the same settings the programs read
//!   (`GOVBUS__AMQP__URL`, `GOVBUS__AMQP__MANAGEMENT_URL`, `GOVBUS__DATABASE__URL`).
//! - [`TestVhost`]: a RabbitMQ vhost of a test's own, deleted when dropped.
//! - [`TestDatabase`]: a PostgreSQL database of a test's own, dropped when dropped.
//! - [`python`]: the Python interpreter with the independent Avro implementation.
//! - `tests/`: the end-to-end tests. A test that cannot reach a service fails and says how
//!   to start it; none passes by skipping.
use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use std::{collections::HashMap, time::Duration};

pub mod cluster;
pub mod pg_pair;

use anyhow::{bail, Context};
use futures::StreamExt as _;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use sqlx::{Connection, PgConnection};

/// Default broker URL: the local RabbitMQ's default vhost as guest.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default database URL: the local PostgreSQL (trust authentication).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const HOW_TO_START: &str = "run the suite with `scripts/test`, which finds or starts RabbitMQ \
(with its management plugin) and PostgreSQL; by hand: `rabbitmq-server -detached && \
rabbitmq-plugins enable rabbitmq_management`, `pg_ctlcluster --skip-systemctl-redirect \
$(ls /etc/postgresql) main start`, or `docker compose up -d rabbitmq postgres`; point the \
tests elsewhere with GOVBUS__AMQP__URL, GOVBUS__AMQP__MANAGEMENT_URL and GOVBUS__DATABASE__URL";

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// AMQP URL of the broker (its vhost is replaced by each test's own).
    pub amqp_url: String,
    /// Base URL of the RabbitMQ management HTTP API.
    pub management_url: String,
    /// Base URL of RabbitMQ's Prometheus exporter (`rabbitmq_prometheus`, port 15692;
    /// `GOVBUS_RABBITMQ_PROMETHEUS_URL`: no program reads it, so it is outside `GOVBUS__`).
    pub prometheus_url: String,
    /// Management API user and password (those of the AMQP URL unless set in the URL).
    pub management_auth: (String, String),
    /// PostgreSQL URL with rights to create databases.
    pub database_url: String,
    /// TLS files for an `amqps://` broker.
    pub tls: AmqpTls,
}

impl Services {
    /// `GET {management_url}/api/{path}` as JSON, with the management account; fails naming
    /// the path.
    pub async fn management_get(&self, path: &str) -> serde_json::Value {
        let (user, pass) = &self.management_auth;
        let url = format!("{}/api/{path}", self.management_url);
        reqwest::Client::new()
            .get(&url)
            .basic_auth(user, Some(pass))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }
}

/// A connection to `url` (an account's own), with the suite's TLS files when it runs over TLS.
pub async fn connect_url(url: &str) -> anyhow::Result<lapin::Connection> {
    Ok(lapin::Connection::connect_with_config(
        url,
        lapin::ConnectionProperties::default(),
        AmqpTls::from_env().lapin()?,
        lapin::runtime::default_runtime()?,
    )
    .await?)
}

/// The TLS files of an `amqps://` broker (`GOVBUS__AMQP__TLS_CA_FILE`, `…_CERT_FILE`,
/// `…_KEY_FILE`), passed on to every program and connection a test makes.
#[derive(Debug, Clone, Default)]
pub struct AmqpTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl AmqpTls {
    fn from_env() -> Self {
        let get = |k: &str| std::env::var_os(k).map(PathBuf::from);
        AmqpTls {
            ca_file: get("GOVBUS__AMQP__TLS_CA_FILE"),
            cert_file: get("GOVBUS__AMQP__TLS_CERT_FILE"),
            key_file: get("GOVBUS__AMQP__TLS_KEY_FILE"),
        }
    }

    fn each(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        [
            ("tls_ca_file", &self.ca_file),
            ("tls_cert_file", &self.cert_file),
            ("tls_key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }

    /// Lines for a config's `[amqp]` section.
    pub fn config_lines(&self) -> String {
        self.each()
            .map(|(k, v)| format!("{k} = \"{}\"\n", v.display()))
            .collect()
    }

    /// Flags for the agency tools (`--amqp-tls-ca-file …`).
    pub fn flags(&self) -> Vec<String> {
        self.each()
            .flat_map(|(k, v)| {
                [
                    format!("--amqp-{}", k.replace('_', "-")),
                    v.display().to_string(),
                ]
            })
            .collect()
    }

    /// lapin's TLS settings.
    pub fn lapin(&self) -> anyhow::Result<lapin::tcp::OwnedTLSConfig> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        Ok(lapin::tcp::OwnedTLSConfig {
            cert_chain: match &self.ca_file {
                Some(p) => Some(String::from_utf8(read(p)?)?),
                None => None,
            },
            identity: match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: read(c)?,
                    key: read(k)?,
                }),
                _ => None,
            },
        })
    }
}

impl Services {
    /// Reads the settings from the environment, with the local defaults.
    pub fn from_env() -> Self {
        let amqp_url =
            std::env::var("GOVBUS__AMQP__URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
        let (user, pass, host) = split_amqp_url(&amqp_url);
        let management_url = std::env::var("GOVBUS__AMQP__MANAGEMENT_URL")
            .unwrap_or_else(|_| format!("http://{host}:15672"));
        let prometheus_url = std::env::var("GOVBUS_RABBITMQ_PROMETHEUS_URL")
            .unwrap_or_else(|_| format!("http://{host}:15692"));
        let database_url =
            std::env::var("GOVBUS__DATABASE__URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        Services {
            amqp_url,
            management_url: management_url.trim_end_matches('/').to_string(),
            prometheus_url: prometheus_url.trim_end_matches('/').to_string(),
            management_auth: (user, pass),
            database_url,
            tls: AmqpTls::from_env(),
        }
    }
}

/// (user, password, host) of an AMQP URL; guest/guest where it names none.
fn split_amqp_url(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (creds, hostport) = authority
        .rsplit_once('@')
        .unwrap_or(("guest:guest", authority));
    let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    (user.to_string(), pass.to_string(), host.to_string())
}

/// A name no other test or run uses: `prefix` + process id + time + counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback TCP port free now, for a program a test starts to listen on. Taken from below
/// Linux's ephemeral range (32768–60999): a port the kernel handed out (`bind(":0")`) and let go
/// can be taken again by any outgoing connection before the program binds it, which the suite
/// once saw as "Address already in use". Ports here are only ever taken on purpose; each
/// process walks its own stretch of them, from a random start.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

fn url_with_vhost(amqp_url: &str, vhost: &str) -> String {
    let (scheme, rest) = amqp_url.split_once("://").unwrap_or(("amqp", amqp_url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{vhost}{query}")
}

/// A RabbitMQ vhost of one test's own, with full permissions for the test's user; deleted
/// (with everything in it) when dropped.
pub struct TestVhost {
    /// The vhost's name.
    pub name: String,
    /// AMQP URL of the vhost.
    pub amqp_url: String,
    /// The broker's settings (TLS files among them).
    pub services: Services,
}

impl TestVhost {
    /// Creates a fresh vhost through the management API. Fails, saying how to start the broker,
    /// when it cannot.
    pub async fn create(services: &Services) -> anyhow::Result<Self> {
        let name = unique_name("govbus_test");
        let client = reqwest::Client::new();
        let (user, pass) = &services.management_auth;
        let put = |path: String, body: serde_json::Value| {
            client
                .put(format!("{}/api/{path}", services.management_url))
                .basic_auth(user, Some(pass))
                .json(&body)
                .send()
        };
        let resp = put(format!("vhosts/{name}"), serde_json::json!({}))
            .await
            .with_context(|| {
                format!(
                    "cannot reach the RabbitMQ management API at {}: {HOW_TO_START}",
                    services.management_url
                )
            })?;
        if !resp.status().is_success() {
            bail!(
                "creating vhost {name} failed: HTTP {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let resp = put(
            format!("permissions/{name}/{user}"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await?;
        if !resp.status().is_success() {
            bail!(
                "granting {user} on vhost {name} failed: HTTP {}",
                resp.status()
            );
        }
        Ok(TestVhost {
            amqp_url: url_with_vhost(&services.amqp_url, &name),
            name,
            services: services.clone(),
        })
    }

    /// Connects to the vhost, failing with how to start the broker when it cannot.
    pub async fn connect(&self) -> anyhow::Result<lapin::Connection> {
        lapin::Connection::connect_with_config(
            &self.amqp_url,
            lapin::ConnectionProperties::default(),
            self.services.tls.lapin()?,
            lapin::runtime::default_runtime()?,
        )
        .await
        .with_context(|| {
            format!(
                "cannot connect to RabbitMQ vhost {}: {HOW_TO_START}",
                self.name
            )
        })
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let url = format!("{}/api/vhosts/{}", self.services.management_url, self.name);
        let (user, pass) = self.services.management_auth.clone();
        // Drop may run inside a runtime: do the request on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(
                reqwest::Client::new()
                    .delete(url)
                    .basic_auth(user, Some(pass))
                    .send(),
            )
            .ok()
        })
        .join();
    }
}

/// A PostgreSQL database of one test's own; dropped when dropped.
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// URL of the database.
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh database. Fails, saying how to start PostgreSQL, when it cannot.
    pub async fn create(services: &Services) -> anyhow::Result<Self> {
        let name = unique_name("govbus_test");
        let mut conn = PgConnection::connect(&services.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL at {}: {HOW_TO_START}",
                    services.database_url
                )
            })?;
        // `name` comes from unique_name: letters, digits and `_` only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let base = services
            .database_url
            .split('?')
            .next()
            .unwrap_or(&services.database_url);
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url: services.database_url.clone(),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        clean_up(async move {
            let mut conn = PgConnection::connect(&admin).await.ok()?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .ok()
        });
    }
}

/// Runs a clean-up to its end from `Drop`, on a thread and runtime of its own (a test's
/// runtime may be shutting down, or may be a current-thread one that cannot block).
pub fn clean_up<T: Send + 'static>(
    work: impl std::future::Future<Output = Option<T>> + Send + 'static,
) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?
            .block_on(work)
    })
    .join();
}

/// The workspace root (where `Cargo.toml` of the workspace is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python interpreter that has `fastavro`: `GOVBUS_PYTHON`, else the virtualenv that
/// `scripts/test` makes in `target/python`. Fails saying how to get one.
pub fn python() -> anyhow::Result<PathBuf> {
    let candidate = std::env::var_os("GOVBUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/python/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import fastavro"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!(
            "no Python with fastavro at {}: run `scripts/test` (it makes that virtualenv), or \
             `python3 -m venv target/python && target/python/bin/pip install fastavro`, or set GOVBUS_PYTHON",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Messages in a queue, counted over AMQP (passive declare).
pub async fn queue_count(vhost: &TestVhost, queue: &str) -> u32 {
    let conn = vhost.connect().await.unwrap();
    let n = count_on(&conn, queue).await.unwrap();
    let _ = conn.close(200, "ok".into()).await;
    n
}

/// Messages in `queue`, asked over `conn` (passive declare).
pub async fn count_on(conn: &lapin::Connection, queue: &str) -> lapin::Result<u32> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(q.message_count())
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Got {
    pub message_id: String,
    pub headers: HashMap<String, AMQPValue>,
    pub body: Vec<u8>,
    pub content_type: String,
    pub delivery_mode: u8,
    pub routing_key: String,
}

impl Got {
    pub fn header_str(&self, name: &str) -> String {
        match self.headers.get(name) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(s)) => s.to_string(),
            other => panic!("header {name}: {other:?}"),
        }
    }
    pub fn header_i64(&self, name: &str) -> i64 {
        match self.headers.get(name) {
            Some(AMQPValue::LongLongInt(n)) => *n,
            Some(AMQPValue::LongInt(n)) => i64::from(*n),
            other => panic!("header {name}: {other:?}"),
        }
    }

    /// Checks the message's batch signature for `audience` with `key`, as a receiver does.
    pub fn verify_batch(
        &self,
        verifier: &bus_schemas::batch::Verifier,
        key: &ed25519_dalek::VerifyingKey,
        audience: &str,
    ) -> Result<bus_schemas::batch::Proof, bus_schemas::batch::VerifyError> {
        let mut h = FieldTable::default();
        for (k, v) in &self.headers {
            h.insert(k.as_str().into(), v.clone());
        }
        let props = lapin::BasicProperties::default()
            .with_message_id(self.message_id.as_str().into())
            .with_headers(h);
        bus_schemas::amqp::seal::verify(verifier, key, audience, &props, &self.body)
    }
}

/// Consumes (and acks) everything in a queue, stopping after `idle` without a message.
pub async fn drain(vhost: &TestVhost, queue: &str, idle: Duration) -> Vec<Got> {
    let conn = vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "test-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await {
        let d = d.unwrap();
        let p = &d.properties;
        let headers = p
            .headers()
            .as_ref()
            .map(|t| {
                t.inner()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Got {
            message_id: p
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            headers,
            body: d.data.clone(),
            content_type: p
                .content_type()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            delivery_mode: p.delivery_mode().unwrap_or(0),
            routing_key: d.routing_key.to_string(),
        });
        assert!(
            d.ack(BasicAckOptions::default()).await.unwrap(),
            "ack refused"
        );
    }
    let _ = conn.close(200, "ok".into()).await;
    out
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// CPU seconds used so far by every process whose command name is `comm` (e.g. `beam.smp`
/// for RabbitMQ, `postgres`), for telling where a benchmark's CPU went.
pub fn proc_cpu_secs_named(comm: &str) -> f64 {
    pids_named(comm).map(proc_cpu_secs).sum()
}

/// The processes whose command name is `comm`.
fn pids_named(comm: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
}

/// Resident memory in MiB of every process whose command name is `comm` (`VmRSS`).
pub fn proc_rss_mib_named(comm: &str) -> f64 {
    pids_named(comm).map(|pid| status_mib(pid, "VmRSS:")).sum()
}

/// A memory line of `/proc/<pid>/status` (e.g. `VmHWM:`) in MiB; 0 if the process is gone.
fn status_mib(pid: u32, line: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(line))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Peak resident memory of a process in MiB, from `/proc/<pid>/status` (`VmHWM`).
pub fn proc_peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A govbus binary built by `cargo test --workspace` (or `cargo build --bins`), next to the
/// test executable. Fails saying how to build it.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` (scripts/test builds it with the suite)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped. The child gets no `GOVBUS__` variables of
/// the test's environment: its config file says everything.
pub struct Process(pub std::process::Child);

impl Process {
    /// A command for a govbus binary with the environment cleaned.
    pub fn command(name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env(
            "RUST_LOG",
            std::env::var("GOVBUS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        for (k, _) in std::env::vars() {
            if k.starts_with("GOVBUS__") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Starts `name` with `args`.
    pub fn spawn(name: &str, args: &[&std::ffi::OsStr]) -> Process {
        Process(
            Self::command(name)
                .args(args)
                .spawn()
                .expect("spawn a govbus binary"),
        )
    }

    /// SIGKILL, and wait.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        self.0.wait().expect("wait for the child")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The DOM of a page after headless Chromium loaded it (scripts run). Fails saying how to
/// install Chromium when it is missing (`scripts/test` installs Debian's package).
pub fn chromium_dom(url: &str) -> String {
    let exe = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is not installed: `apt-get install chromium` (scripts/test does it)");
    let profile = tempfile_dir("chromium");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("--dump-dom")
    .arg(url);
    let out = output_within(&mut cmd, 120, &format!("chromium --dump-dom {url}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium --dump-dom {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

/// Runs `cmd` to the end like `Command::output`, but kills it and fails the test, naming
/// `what` and showing its standard error, if it is not done within `secs` seconds: a test
/// A finished command's standard output then standard error, as text (for assertions).
pub fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// that waits for something that never comes must fail, not hang the suite.
pub fn output_within(cmd: &mut Command, secs: u64, what: &str) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {secs} s; its standard error:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn tempfile_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_name(&format!("govbus_{what}")));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub const CHAOS_USAGE: &str = "usage: scripts/chaos [--rounds N] [--seed S] [--cluster]   (N rounds, default 20; S replays a campaign's choices, default from the clock; --cluster: on a three-node RabbitMQ cluster with two routers over four partitions, node stops and router kills among the faults)";

/// `scripts/chaos`'s options (`tests/examples/chaos.rs`). An argument it does not know is an error, never ignored.
pub struct ChaosOptions {
    /// Rounds of faults.
    pub rounds: u64,
    /// Seed of the campaign's choices.
    pub seed: u64,
    /// On the three-node cluster, with two routers over four partitions.
    pub cluster: bool,
}

impl ChaosOptions {
    /// Parses `--rounds N`, `--seed S` (or `--flag=value`); `None` for `--help`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut o = ChaosOptions {
            rounds: 20,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1,
            cluster: false,
        };
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let mut value = |name: &str| -> Result<u64, String> {
                let v = inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a number"))?;
                v.parse()
                    .map_err(|_| format!("{name} takes a whole number, not `{v}`"))
            };
            match flag.as_str() {
                "--cluster" if inline.is_none() => o.cluster = true,
                "--rounds" => o.rounds = value("--rounds")?,
                "--seed" => o.seed = value("--seed")?,
                "-h" | "--help" => return Ok(None),
                _ => return Err(format!("unknown argument `{a}`")),
            }
        }
        if o.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(Some(o))
    }
}

#[cfg(test)]
mod tests {

    fn chaos(args: &[&str]) -> Result<Option<super::ChaosOptions>, String> {
        super::ChaosOptions::parse(args.iter().map(|a| a.to_string()))
    }

    /// `scripts/chaos --rounds 5 --seed 7` runs 5 rounds with seed 7 (it once ran 20 rounds
    /// with seed 5, reading its arguments by position).
    #[test]
    fn chaos_options_by_name() {
        let o = chaos(&["--rounds", "5", "--seed", "7"]).unwrap().unwrap();
        assert_eq!((o.rounds, o.seed), (5, 7));
        let o = chaos(&["--seed=9", "--rounds=3"]).unwrap().unwrap();
        assert_eq!((o.rounds, o.seed), (3, 9));
        assert_eq!(chaos(&[]).unwrap().unwrap().rounds, 20);
        assert!(!chaos(&[]).unwrap().unwrap().cluster);
        let o = chaos(&["--cluster", "--rounds", "10"]).unwrap().unwrap();
        assert!(o.cluster && o.rounds == 10);
        assert!(chaos(&["--cluster=yes"]).is_err());
        assert!(chaos(&["--help"]).unwrap().is_none());
    }

    /// An argument the campaign does not know, or a value that is not a number, is an error
    /// naming it, never silently ignored.
    #[test]
    fn chaos_options_refuse_what_they_do_not_know() {
        assert_eq!(chaos(&["5"]).err().unwrap(), "unknown argument `5`");
        assert_eq!(
            chaos(&["--rounds", "five"]).err().unwrap(),
            "--rounds takes a whole number, not `five`"
        );
        assert_eq!(chaos(&["--seed"]).err().unwrap(), "--seed needs a number");
        assert!(chaos(&["--rounds", "0"]).is_err());
    }
    use super::*;

    /// Credentials and host come out of an AMQP URL; a vhost is put in its place.
    #[test]
    fn amqp_url_parts() {
        assert_eq!(
            split_amqp_url("amqp://u:p@rabbit:5672/%2f"),
            ("u".into(), "p".into(), "rabbit".into())
        );
        assert_eq!(
            url_with_vhost("amqp://u:p@h:5672/%2f?heartbeat=10", "v1"),
            "amqp://u:p@h:5672/v1?heartbeat=10"
        );
        assert_eq!(url_with_vhost("amqp://h", "v"), "amqp://h/v");
    }
}
