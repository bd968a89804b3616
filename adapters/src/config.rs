//! The adapter's configuration: one TOML file per deployment, any key overridable from the
//! environment as `GOVBUS__SECTION__KEY` (e.g. `GOVBUS__SOURCE__PATH`, `GOVBUS__AMQP__URL`).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use bus_schemas::amqp::AmqpConfig;
use serde::Deserialize;

use crate::source::SourceConfig;

/// Everything one adapter process needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// The publishing department's id (`police`), as in the catalogue: routing keys start with it.
    pub department: String,
    /// The catalogue item this adapter publishes (`household`).
    pub item: String,
    /// The bus-schemas record type of the item (`gov.gz.police.HouseholdRegistration`).
    pub record_type: String,
    /// Directory for the adapter's own state (source positions); must survive restarts.
    pub state_dir: PathBuf,
    /// Signing key and id secret.
    pub signing: SigningConfig,
    /// How to reach RabbitMQ.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// Where the records come from.
    pub source: SourceConfig,
    /// How source columns become schema fields.
    pub mapping: crate::mapping::MappingConfig,
    /// The metrics and health listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The department's secrets. Files are read at start; their contents never reach a log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Ed25519 private key file written by `govbus-adapter keygen` (mode 0600).
    pub key_file: PathBuf,
    /// Key id sent with every signature, as registered in the catalogue.
    pub key_id: String,
    /// File holding the department's id secret for keyed message ids (at least 32 bytes).
    pub id_secret_file: PathBuf,
}

/// The `[http]` listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:9101".parse().expect("valid address")
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Filter in `tracing` syntax (`info`, `adapters=debug,info`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

impl AdapterConfig {
    /// Reads the file, then the `GOVBUS__…` environment over it. Relative paths in the file
    /// are taken relative to the file's directory. Unknown keys are errors naming the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("GOVBUS")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut cfg: AdapterConfig = built.try_deserialize().with_context(|| {
            format!(
                "config {}: fix the key named above (or its GOVBUS__ variable)",
                path.display()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.check_ids()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        fix(&mut self.signing.key_file);
        fix(&mut self.signing.id_secret_file);
        if let Some(ca) = &mut self.amqp.tls_ca_file {
            fix(ca);
        }
        self.source.resolve_paths(base);
    }

    fn check_ids(&self) -> anyhow::Result<()> {
        for (what, id) in [("department", &self.department), ("item", &self.item)] {
            if !bus_schemas::wire::valid_id(id) {
                anyhow::bail!("{what} `{id}` is not a valid id: lowercase letters, digits and _, starting with a letter");
            }
        }
        Ok(())
    }
}
