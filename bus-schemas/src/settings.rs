//! Environment overrides shared by every govbus program: `GOVBUS__SECTION__KEY` overrides
//! `key` in `[section]` (`__` separates levels, since a single `_` is part of names).
//!
//! One environment often serves several programs (a compose file, CI), so a variable for a
//! section this program does not have at all (`GOVBUS__DATABASE__URL` for an adapter) is
//! skipped. An unknown key inside a section the program has is still an error.

/// The `GOVBUS__…` variables of `vars` whose first level is one of `known_sections`, with the
/// prefix removed and levels joined by `.` (lowercased), ready for the `config` crate.
pub fn env_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
    known_sections: &[&str],
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("GOVBUS__")?;
            let path = rest.split("__").map(str::to_lowercase).collect::<Vec<_>>();
            known_sections
                .contains(&path.first()?.as_str())
                .then(|| (path.join("."), v))
        })
        .collect()
}

/// An environment value as a config value: integers and booleans typed, the rest text.
fn parse_env_value(v: &str) -> config::Value {
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.into(),
    }
}

/// Why a config file could not be loaded; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// An environment override could not be applied.
    #[error("environment override {key}: {source}")]
    Override {
        key: String,
        source: config::ConfigError,
    },
    /// The file is missing or not TOML.
    #[error("cannot read the config file {file}: {source}")]
    Read {
        file: String,
        source: config::ConfigError,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("config {file}: {source}; fix that key (or its GOVBUS__ variable)")]
    Invalid {
        file: String,
        source: config::ConfigError,
    },
}

/// Reads a TOML config file, then the `GOVBUS__…` variables of `vars` over it (only those of
/// `sections`, the program's top-level keys). Unknown keys are errors naming the key when the
/// config type denies them.
pub fn load_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    vars: impl IntoIterator<Item = (String, String)>,
    sections: &[&str],
) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml));
    for (key, value) in env_overrides(vars, sections) {
        builder = builder
            .set_override(key.clone(), parse_env_value(&value))
            .map_err(|source| SettingsError::Override { key, source })?;
    }
    let file = path.display().to_string();
    let built = builder.build().map_err(|source| SettingsError::Read {
        file: file.clone(),
        source,
    })?;
    built
        .try_deserialize()
        .map_err(|source| SettingsError::Invalid { file, source })
}

/// The `[http]` listener every process has for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

fn default_listen() -> std::net::SocketAddr {
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
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Filter in `tracing` syntax (`info`, `router=debug,info`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    // PostgreSQL NOTICEs (such as "relation already exists, skipping" at every start) are not news.
    "info,sqlx::postgres::notice=warn".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known sections pass, with nesting by `__`; other programs' sections and other variables do not.
    #[test]
    fn filtering() {
        let vars = [
            ("GOVBUS__AMQP__URL", "amqp://x"),
            ("GOVBUS__AMQP__CONFIRM_WINDOW", "10"),
            ("GOVBUS__DATABASE__URL", "postgres://x"),
            ("GOVBUS__SOURCE__PATH", "/in"),
            ("GOVBUS_PYTHON", "/py"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            env_overrides(vars, &["amqp", "source"]),
            vec![
                ("amqp.url".to_string(), "amqp://x".to_string()),
                ("amqp.confirm_window".to_string(), "10".to_string()),
                ("source.path".to_string(), "/in".to_string()),
            ]
        );
    }
}
