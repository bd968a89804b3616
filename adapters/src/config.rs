//! The adapter's configuration: one TOML file per deployment, any key overridable from the
//! environment as `GOVBUS__SECTION__KEY` (e.g. `GOVBUS__SOURCE__PATH`, `GOVBUS__AMQP__URL`).
use std::path::{Path, PathBuf};

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

pub use bus_schemas::settings::{HttpConfig, LogConfig};

/// Top-level keys of the adapter's config, for environment overrides.
const SECTIONS: &[&str] = &[
    "department",
    "item",
    "record_type",
    "state_dir",
    "signing",
    "amqp",
    "source",
    "mapping",
    "http",
    "log",
];

impl AdapterConfig {
    /// Reads the file, then the `GOVBUS__…` environment over it. Relative paths in the file
    /// are taken relative to the file's directory. Unknown keys are errors naming the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with(path, std::env::vars())
    }

    /// [`Self::load`] with the environment given.
    pub fn load_with(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut cfg: AdapterConfig = bus_schemas::settings::load_toml(path, vars, SECTIONS)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/police-household/adapter.toml")
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `GOVBUS__SECTION__KEY` overrides the file; other programs' sections are ignored;
    /// relative paths are relative to the file.
    #[test]
    fn environment_overrides() {
        let cfg = AdapterConfig::load_with(
            &example(),
            vars(&[
                ("GOVBUS__AMQP__URL", "amqp://u:p@broker:5672/gz"),
                ("GOVBUS__AMQP__CONFIRM_WINDOW", "250"),
                ("GOVBUS__SOURCE__PATH", "/data/inbox"),
                ("GOVBUS__DATABASE__URL", "postgres://elsewhere"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.amqp.url, "amqp://u:p@broker:5672/gz");
        assert_eq!(cfg.amqp.confirm_window, 250);
        let crate::source::SourceConfig::Csv(c) = &cfg.source else {
            panic!()
        };
        assert_eq!(c.path, PathBuf::from("/data/inbox"));
        assert!(cfg.state_dir.ends_with("examples/police-household/state"));
    }

    /// A misspelt key, in the environment or the file, is an error naming it.
    #[test]
    fn unknown_keys_are_named() {
        let e =
            AdapterConfig::load_with(&example(), vars(&[("GOVBUS__AMQP__URLL", "x")])).unwrap_err();
        assert!(format!("{e:#}").contains("urll"), "{e:#}");
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(example())
            .unwrap()
            .replace("encoding = \"auto\"", "encodng = \"auto\"");
        let path = dir.path().join("a.toml");
        std::fs::write(&path, text).unwrap();
        let e = AdapterConfig::load_with(&path, vars(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("encodng"), "{e:#}");
    }
}
