//! The router's configuration: one TOML file, any key overridable from the environment as
//! `GOVBUS__SECTION__KEY` (`GOVBUS__AMQP__URL`, `GOVBUS__DATABASE__URL`).
use std::path::{Path, PathBuf};

use bus_schemas::{
    amqp::AmqpConfig,
    settings::{HttpConfig, LogConfig},
};
use serde::Deserialize;

/// Everything the router process needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The sharing catalogue file (reloaded when it changes or on SIGHUP).
    pub catalogue: PathBuf,
    /// The platform's keys and secrets.
    pub platform: PlatformConfig,
    /// How to reach RabbitMQ (the router's account configures the topology).
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// PostgreSQL: ledger, schemas, pending deliveries, refusals.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Routing tunables.
    #[serde(default)]
    pub router: Tunables,
    /// The `/metrics`, `/healthz`, `/readyz`, `/keys`, `/schemas/{fingerprint}` listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The sharing workflow (applications, answers, escalation).
    #[serde(default)]
    pub workflow: WorkflowConfig,
    /// The status page and the workflow's `/api`: a listener of their own, over TLS.
    #[serde(default)]
    pub api: ApiConfig,
    /// Purging what is kept of records no longer shared (articles 30, 38).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// The `[retention]` section (`ops::purge`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days after an item's sharing period or a grant ends before what the platform keeps of
    /// its records is purged (time to correct a mistaken end date).
    #[serde(default = "default_purge_grace_days")]
    pub purge_grace_days: u32,
    /// How often to look for ended items and grants, in seconds.
    #[serde(default = "default_purge_check_secs")]
    pub purge_check_secs: u64,
}

fn default_purge_grace_days() -> u32 {
    30
}

fn default_purge_check_secs() -> u64 {
    3600
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            purge_grace_days: default_purge_grace_days(),
            purge_check_secs: default_purge_check_secs(),
        }
    }
}

/// The `[api]` section: where the status page (`/`, `/status`) and the sharing workflow's
/// `/api` are served. Tokens travel in its requests, so it is TLS unless `plain_http` says
/// otherwise; without `listen` neither is served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on (`0.0.0.0:9443`); unset: no status page and no workflow API.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// The server certificate chain (PEM).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP instead: only behind a TLS-terminating proxy, or on loopback.
    #[serde(default)]
    pub plain_http: bool,
}

impl ApiConfig {
    /// The TLS files, or `None` for plain HTTP; an error naming what to set when neither.
    pub fn tls(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        match (&self.tls_cert_file, &self.tls_key_file, self.plain_http) {
            (Some(c), Some(k), false) => Ok(Some((c.as_path(), k.as_path()))),
            (None, None, true) => Ok(None),
            (Some(_), Some(_), true) => anyhow::bail!(
                "api.plain_http = true and api.tls_cert_file are both set: choose one"
            ),
            _ => anyhow::bail!(
                "api.listen serves API tokens: set api.tls_cert_file and api.tls_key_file (PEM), \
                 or api.plain_http = true only behind a TLS proxy or on loopback"
            ),
        }
    }
}

/// The `[workflow]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Working-day calendar (public holidays, make-up working days) for the deadlines; without
    /// one the workflow API answers 503 and says to set this.
    #[serde(default)]
    pub calendar: Option<PathBuf>,
    /// How often unanswered applications are checked against their deadline (and those
    /// forwarded to another platform followed there), in seconds.
    #[serde(default = "default_deadline_check_secs")]
    pub deadline_check_secs: u64,
    /// API tokens other platforms issued to this one (`govbus workflow token --role platform
    /// --subject <this platform's id>` there), by their id in `[[platform]]`: this platform
    /// forwards its agencies' applications for their items with them (article 37).
    /// `GOVBUS__WORKFLOW__PLATFORM_TOKENS__<ID>` sets one from the environment.
    #[serde(default)]
    pub platform_tokens: std::collections::BTreeMap<String, PlatformToken>,
    /// CA certificates (PEM) the other platforms' workflow APIs are verified with, besides
    /// the system's.
    #[serde(default)]
    pub platform_ca_file: Option<PathBuf>,
    /// Queries of the citizen's data-use log (`POST /api/subject-log`) one portal token may
    /// make a minute; more are answered 429 with `Retry-After`.
    #[serde(default = "default_subject_log_per_minute")]
    pub subject_log_per_minute: u32,
}

/// A token another platform issued; never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct PlatformToken(pub String);

impl std::fmt::Debug for PlatformToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformToken(…)")
    }
}

fn default_deadline_check_secs() -> u64 {
    300
}

fn default_subject_log_per_minute() -> u32 {
    60
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            calendar: None,
            deadline_check_secs: default_deadline_check_secs(),
            platform_tokens: Default::default(),
            platform_ca_file: None,
            subject_log_per_minute: default_subject_log_per_minute(),
        }
    }
}

/// Platform key material; files written by `govbus keygen` (mode 0600), never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Ed25519 private key that signs deliveries.
    pub key_file: PathBuf,
    /// Its key id, sent in `govbus-key-id` and served at `/keys`.
    pub key_id: String,
    /// Secret for delivery message ids, record key hashes and API tokens (at least 32 bytes).
    pub id_secret_file: PathBuf,
    /// Version of `id_secret_file`; raise it when the secret is replaced, list the old one
    /// under `previous_id_secrets` and run `govbus id-secret rotate` before the router starts.
    #[serde(default = "default_secret_version")]
    pub id_secret_version: u32,
    /// Id secrets used before, by version (for `govbus id-secret rotate`).
    #[serde(default)]
    pub previous_id_secrets: Vec<PreviousSecret>,
    /// Secret for pseudonyms (`pgb1_`; at least 32 bytes). Rotating it needs a new prefix.
    pub pseudonym_secret_file: PathBuf,
    /// Version of `pseudonym_secret_file` (tokens start `pgb<version>_`); raise it when the
    /// secret is replaced, and list the old secret under `previous_pseudonym_secrets`.
    #[serde(default = "default_secret_version")]
    pub pseudonym_version: u32,
    /// Pseudonym secrets used before, by version (for `govbus pseudonym-map`).
    #[serde(default)]
    pub previous_pseudonym_secrets: Vec<PreviousSecret>,
    /// The previous key's endorsement of this key (`govbus keygen --endorse-with`), served at
    /// `/keys` so agencies provisioned with an older key accept this one.
    #[serde(default)]
    pub endorsement_file: Option<PathBuf>,
    /// Keys used before this one, still listed at `/keys` until `valid_until`.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKey>,
}

fn default_secret_version() -> u32 {
    1
}

/// A pseudonym or id secret used before the current one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    /// Its version (for a pseudonym secret, the `pgb<version>_` prefix of its tokens).
    pub version: u32,
    /// Its file.
    pub file: PathBuf,
}

/// A platform key used before the current one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    /// Its key id.
    pub key_id: String,
    /// Its public key, base64 (the `.pub` file).
    pub public_key: String,
    /// RFC 3339; agencies accept nothing signed with it afterwards.
    pub valid_until: String,
    /// Its own endorsement by the key before it, if any (for agencies two rotations behind).
    #[serde(default)]
    pub endorsement_file: Option<PathBuf>,
}

/// The `[database]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_database_url() -> String {
    "postgres://postgres@127.0.0.1:5432/postgres".into()
}
fn default_max_connections() -> u32 {
    8
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

/// The `[router]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunables {
    /// Most ingest messages handled as one batch (one ledger transaction).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long a batch waits to fill, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// How often kept (unconfirmed) deliveries are retried, in milliseconds.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// How long the broker may take to confirm a delivery, in milliseconds. Past it the
    /// unconfirmed deliveries are kept for retry and the router reconnects: a queue that
    /// stops answering (a quorum queue without a leader) must not stall every agency.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// How often the catalogue file is checked for changes, in milliseconds.
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    /// How often the whole ledger is re-verified in the background, in seconds (0: never);
    /// the result is the `govbus_router_ledger_verified` gauge.
    #[serde(default = "default_verify_every_secs")]
    pub verify_every_secs: u64,
    /// How often the links to other platforms (shovel states, `platform.<id>` backlogs) and
    /// `govbus.unrouted` are polled, in milliseconds.
    #[serde(default = "default_link_poll_ms")]
    pub link_poll_ms: u64,
    /// How often each agency whose ledger chain grew is sent a signed checkpoint of its head,
    /// in seconds (`govbus ledger checkpoint` sends them on demand).
    #[serde(default = "default_checkpoint_every_secs")]
    pub checkpoint_every_secs: u64,
    /// Bytes of a refused message's body kept for the operator (the rest is dropped; its
    /// length and a keyed hash of the whole body are kept instead).
    #[serde(default = "default_refusal_body_bytes")]
    pub refusal_body_bytes: usize,
    /// Days refused messages are kept (older ones are purged, from backups made after too).
    #[serde(default = "default_refusal_retention_days")]
    pub refusal_retention_days: u32,
    /// The router partitions `govbus.router.<p>` (1–64): every router of a platform is
    /// configured with the same number, the one `govbus partitions set` bound; a router
    /// configured otherwise refuses to start.
    #[serde(default = "default_partitions")]
    pub partitions: u8,
    /// The partitions this router subscribes to at once, comma-separated (`"0,1"`); it
    /// subscribes to the others `standby_delay_ms` later, as a standby. Empty: all at once.
    #[serde(default)]
    pub prefer: String,
    /// How long after its preferred partitions a router subscribes to the others, in ms.
    #[serde(default = "default_standby_delay_ms")]
    pub standby_delay_ms: u64,
    /// This router's name in its consumer tags (`govbus-router-<name>-p<p>`), which the status
    /// page shows as the holder of a partition. Default: the host name and process id.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_partitions() -> u8 {
    1
}
fn default_standby_delay_ms() -> u64 {
    3000
}

fn default_batch() -> usize {
    250
}
fn default_batch_wait_ms() -> u64 {
    5
}
fn default_retry_ms() -> u64 {
    1000
}
fn default_confirm_timeout_ms() -> u64 {
    10_000
}
fn default_watch_ms() -> u64 {
    1000
}
fn default_verify_every_secs() -> u64 {
    3600
}
fn default_link_poll_ms() -> u64 {
    10_000
}
fn default_checkpoint_every_secs() -> u64 {
    3600
}
fn default_refusal_body_bytes() -> usize {
    4096
}
fn default_refusal_retention_days() -> u32 {
    90
}

impl Tunables {
    /// The partitions to subscribe to at once, and the rest, checked against `partitions`.
    pub fn partition_plan(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let p = self.partitions;
        anyhow::ensure!(
            (1..=bus_schemas::wire::MAX_PARTITIONS).contains(&p),
            "router.partitions is {p}: it must be 1 to {}",
            bus_schemas::wire::MAX_PARTITIONS
        );
        let mut first = Vec::new();
        for part in self
            .prefer
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let n: u8 = part.parse().ok().filter(|n| *n < p).ok_or_else(|| {
                anyhow::anyhow!(
                    "router.prefer names partition `{part}`: partitions are 0 to {} \
                     (router.partitions = {p})",
                    p - 1
                )
            })?;
            if !first.contains(&n) {
                first.push(n);
            }
        }
        if first.is_empty() {
            return Ok(((0..p).collect(), Vec::new()));
        }
        let rest = (0..p).filter(|n| !first.contains(n)).collect();
        Ok((first, rest))
    }

    /// This router's name in consumer tags.
    pub fn instance_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "router".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// `confirm_timeout_ms` as a duration: the deadline of every publish, confirm and set-up.
    pub fn confirm_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.confirm_timeout_ms)
    }
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            batch: default_batch(),
            batch_wait_ms: default_batch_wait_ms(),
            retry_ms: default_retry_ms(),
            confirm_timeout_ms: default_confirm_timeout_ms(),
            watch_ms: default_watch_ms(),
            verify_every_secs: default_verify_every_secs(),
            link_poll_ms: default_link_poll_ms(),
            checkpoint_every_secs: default_checkpoint_every_secs(),
            refusal_body_bytes: default_refusal_body_bytes(),
            refusal_retention_days: default_refusal_retention_days(),
            partitions: default_partitions(),
            prefer: String::new(),
            standby_delay_ms: default_standby_delay_ms(),
            name: None,
        }
    }
}

/// Top-level keys, for environment overrides.
const SECTIONS: &[&str] = &[
    "catalogue",
    "platform",
    "amqp",
    "database",
    "router",
    "http",
    "log",
    "workflow",
    "api",
    "retention",
];

impl RouterConfig {
    /// Reads the file, then `GOVBUS__…` over it; relative paths are relative to the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with(path, std::env::vars())
    }

    /// [`Self::load`] with the environment given.
    pub fn load_with(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut cfg: RouterConfig = bus_schemas::settings::load_toml(path, vars, SECTIONS)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.catalogue,
            &mut cfg.platform.key_file,
            &mut cfg.platform.id_secret_file,
            &mut cfg.platform.pseudonym_secret_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(e) = &mut cfg.platform.endorsement_file {
            rebase(e);
        }
        for p in cfg
            .platform
            .previous_pseudonym_secrets
            .iter_mut()
            .chain(cfg.platform.previous_id_secrets.iter_mut())
        {
            rebase(&mut p.file);
        }
        for k in &mut cfg.platform.previous_keys {
            if let Some(e) = &mut k.endorsement_file {
                rebase(e);
            }
        }
        if let Some(cal) = &mut cfg.workflow.calendar {
            rebase(cal);
        }
        if let Some(ca) = &mut cfg.workflow.platform_ca_file {
            rebase(ca);
        }
        for p in [&mut cfg.api.tls_cert_file, &mut cfg.api.tls_key_file]
            .into_iter()
            .flatten()
        {
            rebase(p);
        }
        if cfg.api.listen.is_some() {
            cfg.api.tls()?;
        }
        if let Some(ca) = &mut cfg.amqp.tls_ca_file {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example loads; `GOVBUS__…` overrides it; relative paths follow the file; a misspelt
    /// key is named.
    #[test]
    fn example_and_overrides() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/router.toml");
        let vars = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let cfg = RouterConfig::load_with(
            &path,
            vars(&[
                ("GOVBUS__DATABASE__URL", "postgres://db/gov"),
                ("GOVBUS__SOURCE__PATH", "/ignored/adapter/setting"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.database.url, "postgres://db/gov");
        assert!(cfg.catalogue.ends_with("examples/catalogue.toml"));
        assert!(cfg.platform.key_file.is_absolute());
        // The partitions as docker-compose.yml's second router sets them.
        let two = RouterConfig::load_with(
            &path,
            vars(&[
                ("GOVBUS__ROUTER__PARTITIONS", "4"),
                ("GOVBUS__ROUTER__PREFER", "2,3"),
                ("GOVBUS__ROUTER__NAME", "router-2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            two.router.partition_plan().unwrap(),
            (vec![2, 3], vec![0, 1])
        );
        assert_eq!(two.router.instance_name(), "router-2");
        let e =
            RouterConfig::load_with(&path, vars(&[("GOVBUS__ROUTER__BATHC", "5")])).unwrap_err();
        assert!(format!("{e:#}").contains("bathc"), "{e:#}");
    }

    /// Preferred partitions first, the rest as standby; a partition outside P is named.
    #[test]
    fn partition_plans() {
        let t = |p: u8, prefer: &str| Tunables {
            partitions: p,
            prefer: prefer.into(),
            ..Tunables::default()
        };
        assert_eq!(t(1, "").partition_plan().unwrap(), (vec![0], vec![]));
        assert_eq!(
            t(4, "").partition_plan().unwrap(),
            (vec![0, 1, 2, 3], vec![])
        );
        assert_eq!(
            t(4, "2, 3").partition_plan().unwrap(),
            (vec![2, 3], vec![0, 1])
        );
        let e = t(4, "1,4").partition_plan().unwrap_err().to_string();
        assert!(e.contains("`4`") && e.contains("0 to 3"), "{e}");
        assert!(t(0, "").partition_plan().is_err());
        assert!(t(65, "").partition_plan().is_err());
    }
}
