//! Helpers for the adapter's tests against the real RabbitMQ (and PostgreSQL).
#![allow(dead_code)]

pub mod tax_api;
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use adapters::config::AdapterConfig;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::{
    amqp::topology,
    batch,
    validate::{citizen_id, credit_code},
    wire::{self, header, Op},
    Registry,
};
use govbus_tests::{Services, TestVhost};
use sqlx::{Connection, MySqlConnection, PgConnection};

/// A test's own vhost with the govbus topology, a work directory and keys.
pub struct Env {
    pub vhost: TestVhost,
    pub dir: tempfile::TempDir,
    pub public_key: String,
}

impl Env {
    /// Vhost + topology for `department`, keys in `dir/keys`.
    pub async fn new(department: &str) -> Env {
        Env::on(department, &Services::from_env()).await
    }

    /// Like [`Env::new`], on the broker `services` names (a cluster's node, say).
    pub async fn on(department: &str, services: &Services) -> Env {
        let vhost = TestVhost::create(services).await.unwrap();
        let conn = vhost.connect().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        topology::declare_core(&ch).await.unwrap();
        topology::declare_partitions(&ch, 1, None).await.unwrap();
        topology::declare_department(&ch, department).await.unwrap();
        conn.close(200, "ok".into()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public_key = adapters::keys::keygen(&dir.path().join("keys"), "test-key").unwrap();
        Env {
            vhost,
            dir,
            public_key,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// An example config with this environment's paths, broker and a free port.
    pub fn config(&self, example: &str) -> AdapterConfig {
        let mut cfg = AdapterConfig::load(&example_dir(example).join("adapter.toml")).unwrap();
        self.adapt(&mut cfg);
        cfg
    }

    pub fn adapt(&self, cfg: &mut AdapterConfig) {
        cfg.state_dir = self.path("state");
        cfg.signing.key_file = self.path("keys/test-key.key");
        cfg.signing.key_id = "test-key".into();
        cfg.signing.id_secret_file = self.path("keys/id-secret");
        cfg.amqp.url = self.vhost.amqp_url.clone();
        cfg.amqp.reconnect_min_ms = 100;
        cfg.amqp.reconnect_max_ms = 1000;
        cfg.http.listen = "127.0.0.1:0".parse().unwrap();
        if let adapters::source::SourceConfig::Csv(c) = &mut cfg.source {
            c.path = self.path("inbox");
            c.done_dir = None;
            c.poll_interval_ms = 100;
            std::fs::create_dir_all(&c.path).unwrap();
        }
    }

    /// The same config as a TOML file, for running the binary.
    pub fn config_file(&self, example: &str, drop_lines_starting: &[&str]) -> PathBuf {
        self.config_file_with_source(example, drop_lines_starting, None)
    }

    /// Like `config_file`, pointing the source's `url` at `source_url`.
    pub fn config_file_with_source(
        &self,
        example: &str,
        drop_lines_starting: &[&str],
        source_url: Option<&str>,
    ) -> PathBuf {
        let text = std::fs::read_to_string(example_dir(example).join("adapter.toml")).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            if drop_lines_starting.iter().any(|p| line.starts_with(p)) {
                continue;
            }
            let replaced = match line.split(" = ").next().unwrap_or("") {
                "state_dir" => format!("state_dir = {:?}", self.path("state")),
                "key_file" => format!("key_file = {:?}", self.path("keys/test-key.key")),
                "key_id" => "key_id = \"test-key\"".into(),
                "id_secret_file" => format!("id_secret_file = {:?}", self.path("keys/id-secret")),
                "url" if line.contains("amqp://") => format!("url = {:?}", self.vhost.amqp_url),
                "url" if source_url.is_some() => {
                    format!("url = {:?}", source_url.unwrap_or_default())
                }
                "listen" => "listen = \"127.0.0.1:0\"".into(),
                "path" => format!("path = {:?}\npoll_interval_ms = 100", self.path("inbox")),
                _ => line.to_string(),
            };
            out.push_str(&replaced);
            out.push('\n');
        }
        std::fs::create_dir_all(self.path("inbox")).unwrap();
        let path = self.path("adapter.toml");
        std::fs::write(&path, out).unwrap();
        path
    }
}

pub fn example_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A citizen ID number with a correct check digit, unique per `n`.
pub fn citizen_id(n: u64) -> String {
    // 1,000 sequence numbers per birth date, birth dates from 1950 on: unique for any test size.
    let birth = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap()
        + chrono::Duration::days((n / 1000) as i64);
    let first17 = format!("440106{}{:03}", birth.format("%Y%m%d"), n % 1000);
    let c = citizen_id::check_character(&first17).unwrap();
    format!("{first17}{c}")
}

/// A household registration export: `n` rows, every `invalid_every`-th row invalid in one of
/// several ways. Returns the CSV text and the valid rows' ID numbers.
pub fn household_csv(n: u64, invalid_every: u64, with_version: bool) -> (String, Vec<String>) {
    let mut text = String::from("姓名,公民身份号码,性别,民族,户籍地镇街道,户籍地派出所,户籍状态,注销前行政区划,注销日期,注销原因,变更时间,操作");
    if with_version {
        text.push_str(",版本号");
    }
    text.push_str("\r\n");
    let mut valid = Vec::new();
    for i in 0..n {
        let mut id = citizen_id(i);
        let mut sex = if i % 2 == 0 { "男" } else { "女" }.to_string();
        let mut date = String::new();
        if invalid_every > 0 && i % invalid_every == invalid_every - 1 {
            match (i / invalid_every) % 4 {
                0 => {
                    let last = id.pop().unwrap();
                    id.push(if last == '0' { '1' } else { '0' });
                }
                1 => sex = "M".into(),
                2 => date = "2099-01-01".into(),
                _ => date = "2016-13-45".into(),
            }
        } else {
            valid.push(id.clone());
        }
        let status = if date.is_empty() { "正常" } else { "注销" };
        text.push_str(&format!(
            "姓名{i},{id},{sex},汉族,石牌街道,\"石牌派出所\",{status},,{date},,2016-05-17 09:30:00,U"
        ));
        if with_version {
            text.push_str(&format!(",{}", 1000 + i));
        }
        text.push_str("\r\n");
    }
    (text, valid)
}

/// Writes `text` as GB18030 into `path`, atomically (write then rename), as an export would land.
pub fn drop_gb18030(path: &Path, text: &str) {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, encoding_rs::GB18030.encode(text).0).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

pub use govbus_tests::{drain, queue_count, Got};

/// Checks every ingest message against the wire contract and returns, per record key, the
/// message ids seen (a duplicate must reuse its id).
pub fn check_records(
    got: &[Got],
    env: &Env,
    department: &str,
    item: &str,
    key_field: &str,
) -> HashMap<String, HashSet<String>> {
    let id_key =
        wire::IdKey::new(&bus_schemas::keys::load_id_secret(&env.path("keys/id-secret")).unwrap());
    let key_bytes: [u8; 32] = B64
        .decode(env.public_key.trim())
        .unwrap()
        .try_into()
        .unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    let reg = Registry::standard();
    let verifier = batch::Verifier::new();
    let mut signatures = HashSet::new();
    let mut by_key: HashMap<String, HashSet<String>> = HashMap::new();
    for g in got {
        assert_eq!(g.content_type, wire::AVRO_CONTENT_TYPE);
        assert_eq!(g.delivery_mode, 2, "persistent");
        assert!(
            g.routing_key.starts_with(&format!("{department}.{item}.")),
            "{}",
            g.routing_key
        );
        assert_eq!(g.header_str(header::DEPARTMENT), department);
        assert_eq!(g.header_str(header::ITEM), item);
        assert_eq!(g.header_str(header::KEY_ID), "test-key");
        let version = g.header_i64(header::VERSION);
        let op = Op::parse(&g.header_str(header::OP)).unwrap();
        assert!(g.header_i64(header::SOURCE_TIME_MS) > 0);
        assert_eq!(g.message_id.len(), 64, "hex HMAC-SHA256 message id");
        let seal = batch::Seal {
            key_id: g.header_str(header::KEY_ID),
            salt: g.header_str(header::SALT),
            signature: g.header_str(header::SIGNATURE),
            batch: g.header_str(header::BATCH),
            proof: g.header_str(header::PROOF),
        };
        let signed = batch::signed_bytes(&g.message_id, item, version, op, None, &g.body);
        verifier
            .verify(&vk, batch::AUDIENCE_INGEST, &seal, &signed)
            .unwrap_or_else(|e| panic!("the batch signature must verify for `ingest`: {e}"));
        assert!(
            verifier.verify(&vk, "police", &seal, &signed).is_err(),
            "a department batch is signed for `ingest` only"
        );
        signatures.insert(seal.signature);
        let (_, json) = reg.decode_to_json(&g.body).unwrap();
        let key = json
            .pointer(key_field)
            .and_then(|v| v.as_str())
            .unwrap()
            .to_string();
        for v in g.headers.values() {
            assert!(
                !format!("{v:?}").contains(&key),
                "no personal data in headers"
            );
        }
        assert!(!g.message_id.contains(&key));
        // The shard is the department's keyed hash of the record key (wire contract).
        assert_eq!(
            g.routing_key,
            wire::routing_key(department, item, id_key.shard(item, &key)),
        );
        by_key.entry(key).or_default().insert(g.message_id.clone());
    }
    // Rows prepared together share one signature (a batch holds at most 1,024).
    if got.len() >= 300 {
        assert!(
            signatures.len() * 2 <= got.len() && signatures.len() >= got.len().div_ceil(1024),
            "{} signatures for {} records: rows are not batch-signed",
            signatures.len(),
            got.len()
        );
    }
    by_key
}

/// Valid unified social credit codes, unique per `n`.
pub fn credit_code(n: u64) -> String {
    let first17 = format!("91440106MA{:07}", n);
    let c = credit_code::check_character(&first17).unwrap();
    format!("{first17}{c}")
}

/// The adapter binary as a child process, without the `GOVBUS__*` variables of the test
/// environment (they would override its config file); killed if the test fails.
pub struct Adapter(pub std::process::Child);

impl Adapter {
    pub fn command(config: &Path) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_govbus-adapter"));
        c.arg("--config").arg(config).env("RUST_LOG", "warn");
        for (k, _) in std::env::vars() {
            if k.starts_with("GOVBUS__") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn spawn(config: &Path) -> Adapter {
        Adapter(Self::command(config).spawn().unwrap())
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Runs `--once` to completion.
    pub fn run_once(config: &Path) {
        let status = Self::command(config).arg("--once").status().unwrap();
        assert!(status.success(), "govbus-adapter --once failed");
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the adapter binary, SIGKILLs it once `after` records reached the ingest queue, and
/// runs it again with `--once` to the end. Fails unless the kill hit the run in flight (fewer
/// than `total` records had arrived). Returns how many had.
pub async fn kill_mid_stream_then_finish(
    env: &Env,
    config: &Path,
    after: u32,
    total: usize,
) -> u32 {
    let child = Adapter::spawn(config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = queue_count(&env.vhost, &wire::router_queue(0)).await;
        if n >= after {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the adapter published only {n} in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill(); // SIGKILL
    let at_kill = queue_count(&env.vhost, &wire::router_queue(0)).await;
    // The kill hit the run in flight: records were still to come.
    assert!(
        (at_kill as usize) < total,
        "killed after the end ({at_kill} of {total} records published): the kill missed the run"
    );
    Adapter::run_once(config);
    at_kill
}

/// Drains the ingest queue and checks what at-least-once promises: every message follows the
/// wire contract, exactly `expected` distinct records arrived (none missing), and every
/// duplicate of a record carries the same message id.
pub async fn assert_each_record_arrived(
    env: &Env,
    department: &str,
    item: &str,
    key_field: &str,
    expected: usize,
) -> Vec<Got> {
    let got = drain(&env.vhost, &wire::router_queue(0), Duration::from_secs(2)).await;
    assert!(
        got.len() >= expected,
        "at least once: {} messages for {expected} records",
        got.len()
    );
    let by_key = check_records(&got, env, department, item, key_field);
    assert_eq!(by_key.len(), expected, "none missing");
    assert!(
        by_key.values().all(|ids| ids.len() == 1),
        "duplicates share the message id"
    );
    got
}

/// `n` registrations, every `invalid_every`-th with a wrong credit-code check character:
/// (credit codes, legal representatives' ID numbers, the valid codes with the examples' two).
pub fn commerce_rows(n: u64, invalid_every: u64) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut valid = vec![
        "91440106MA59C0XK09".to_string(),
        "91440104MA59D1YL15".to_string(),
    ];
    let (mut codes, mut ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut code = credit_code(i);
        if invalid_every > 0 && i % invalid_every == invalid_every - 1 {
            let last = code.pop().unwrap();
            code.push(if last == '0' { '1' } else { '0' });
        } else {
            valid.push(code.clone());
        }
        codes.push(code);
        ids.push(citizen_id(i));
    }
    (codes, ids, valid)
}

/// Creates the example's table and fills it with [`commerce_rows`]. Returns the valid codes.
pub async fn fill_commerce(
    db: &govbus_tests::TestDatabase,
    n: u64,
    invalid_every: u64,
) -> Vec<String> {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let schema =
        std::fs::read_to_string(example_dir("commerce-enterprise").join("schema.sql")).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&mut conn)
        .await
        .unwrap();
    let (codes, ids, valid) = commerce_rows(n, invalid_every);
    sqlx::query(
        "INSERT INTO enterprise_registration (uscc, name, legal_rep_name, legal_rep_id, division_code, established, updated_at)
         SELECT c, '示例企业' || o, '法人' || o, l, '440106', DATE '2016-01-01',
                TIMESTAMPTZ '2016-06-01 00:00:00+08' + o * INTERVAL '1 second'
         FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS t(c, l, o)",
    )
    .bind(&codes)
    .bind(&ids)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    valid
}

/// What the database sources promise, for PostgreSQL and MariaDB alike: the table filled by
/// `fill_commerce` (10,000 rows, 100 invalid) published exactly once and quarantined; a rerun
/// publishes nothing; after `changes` (an insert of a new version of the first example
/// enterprise and a delete of the second) only those two.
pub async fn assert_keyset_polling(
    env: &Env,
    cfg: AdapterConfig,
    valid: &[String],
    changes: impl std::future::Future<Output = ()>,
) {
    use tokio_util::sync::CancellationToken;
    let s = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (9_902, 100));
    let s = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!(
        (s.published, s.quarantined),
        (0, 0),
        "a rerun publishes nothing"
    );

    changes.await;
    let s = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (2, 0), "only the changes");

    let got = drain(&env.vhost, &wire::router_queue(0), Duration::from_secs(2)).await;
    assert_eq!(got.len(), 9_904);
    let by_key = check_records(
        &got,
        env,
        "commerce",
        "enterprise",
        "/unified_social_credit_code",
    );
    assert_eq!(
        by_key.keys().cloned().collect::<HashSet<_>>(),
        valid.iter().cloned().collect()
    );
    let ops: Vec<String> = got[9_902..]
        .iter()
        .map(|g| g.header_str(wire::header::OP))
        .collect();
    assert!(
        ops.contains(&"delete".to_string()) && ops.contains(&"upsert".to_string()),
        "{ops:?}"
    );
    let versions: Vec<i64> = got
        .iter()
        .filter(|g| g.body.len() > 10)
        .map(|g| g.header_i64(wire::header::VERSION))
        .collect();
    assert!(
        versions[..9_902].windows(2).all(|w| w[0] < w[1]),
        "versions follow updated_at"
    );
    assert_eq!(
        queue_count(&env.vhost, &wire::quarantine_queue("commerce")).await,
        100
    );
}

/// A test's own MariaDB (or MySQL) database, dropped afterwards. The server is found through
/// `GOVBUS__MYSQL__URL` (default `mysql://root@127.0.0.1:3306/test`).
pub struct MysqlDatabase {
    pub url: String,
    name: String,
    admin: String,
}

impl MysqlDatabase {
    /// Creates a fresh database. Fails, saying how to start MariaDB, when it cannot.
    pub async fn create() -> MysqlDatabase {
        let admin = std::env::var("GOVBUS__MYSQL__URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let mut conn = MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to MariaDB at {admin} ({e}): run the suite with `scripts/test`, which finds or \
                 starts MariaDB; by hand: `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` \
                 (Debian: apt-get install mariadb-server); point the tests elsewhere with GOVBUS__MYSQL__URL"
            )
        });
        let name = format!(
            "govbus_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let base = admin.split('?').next().unwrap_or(&admin);
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        MysqlDatabase {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }

    /// A connection to the database.
    pub async fn connect(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url).await.unwrap()
    }
}

static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        govbus_tests::clean_up(async move {
            let mut conn = MySqlConnection::connect(&admin).await.ok()?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut conn)
            .await
            .ok()
        });
    }
}

/// Creates the MySQL example's table and fills it with [`commerce_rows`], as `fill_commerce`
/// does in PostgreSQL. Returns the valid codes.
pub async fn fill_commerce_mysql(db: &MysqlDatabase, n: u64, invalid_every: u64) -> Vec<String> {
    let mut conn = db.connect().await;
    let schema =
        std::fs::read_to_string(example_dir("commerce-enterprise-mysql").join("schema.sql"))
            .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&mut conn)
        .await
        .unwrap();
    let (codes, ids, valid) = commerce_rows(n, invalid_every);
    let start = chrono::NaiveDate::from_ymd_opt(2016, 6, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let rows: Vec<String> = codes
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(o, (c, l))| {
            let t = start + chrono::Duration::seconds(o as i64 + 1);
            // Generated codes and numbers: letters and digits only.
            format!(
                "('{c}', '示例企业{o}', '法人{o}', '{l}', '440106', DATE '2016-01-01', '{}')",
                t.format("%Y-%m-%d %H:%M:%S")
            )
        })
        .collect();
    for chunk in rows.chunks(2_000) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO enterprise_registration (uscc, name, legal_rep_name, legal_rep_id, division_code, established, updated_at) VALUES {}",
            chunk.join(", ")
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
    valid
}

/// The big household file of [`drop_big_household_file`] all arrived, each record once
/// (duplicates under the same id), and the file moved to `done/`.
pub async fn assert_big_household_file_arrived(env: &Env, valid: usize) {
    assert_each_record_arrived(env, "police", "household", "/citizen_id_number", valid).await;
    assert!(env.path("inbox/done/big.csv").exists());
}

/// Drops a 20,000-row household export without a version column into the inbox; returns the
/// rows' ID numbers (all valid).
pub fn drop_big_household_file(env: &Env) -> Vec<String> {
    let (csv, valid) = household_csv(20_000, 0, false);
    drop_gb18030(&env.path("inbox/big.csv"), &csv);
    valid
}

/// A broker fault hit the run in flight: the adapter lost its connection, reconnected, and went
/// on publishing records afterwards (not just finished a run already confirmed).
pub fn assert_fault_hit_the_run(summary: &adapters::pipeline::Summary) {
    assert!(
        summary.reconnects > 0,
        "the adapter never reconnected: the fault missed the run ({summary:?})"
    );
    assert!(
        summary.published_after_reconnect > 0,
        "no record was confirmed after the reconnect ({summary:?})"
    );
}
