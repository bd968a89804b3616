//! The `[amqp]` section of every govbus process's configuration.
use std::path::PathBuf;

use serde::Deserialize;

/// How a process reaches RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URL with the account and vhost: `amqp://user:pass@host:5672/%2f`, or `amqps://` for TLS.
    /// The nodes of a cluster are listed separated by commas (`amqp://u:p@node1/gz,amqp://u:p@node2/gz`):
    /// a process connects to the first that answers and, when its node goes, to the next
    /// (percent-encode a comma in a password as `%2C`).
    #[serde(default = "default_url")]
    pub url: String,
    /// PEM file of the CA that signed the broker's certificate (for `amqps://`); the system roots when unset.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate (chain) to present to the broker as a client certificate, with
    /// `tls_key_file`; for brokers that check client certificates (`ssl_options.verify`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (keep it 0600).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Publishes in flight awaiting the broker's confirm (about 1,000 is fastest here).
    #[serde(default = "default_confirm_window")]
    pub confirm_window: usize,
    /// Deliveries the broker sends a consumer ahead of its acks.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Heartbeat interval in seconds; a dead connection is noticed within about twice this.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u16,
    /// First delay before reconnecting, in milliseconds (doubles, with jitter, up to `reconnect_max_ms`).
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Base URL of the RabbitMQ management HTTP API (provisioning accounts, operators' tools);
    /// default: port 15672 on the broker's host.
    #[serde(default)]
    pub management_url: Option<String>,
}

fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_confirm_window() -> usize {
    1000
}
fn default_prefetch() -> u16 {
    1000
}
fn default_heartbeat_secs() -> u16 {
    10
}
fn default_reconnect_min_ms() -> u64 {
    200
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: default_url(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            confirm_window: default_confirm_window(),
            prefetch: default_prefetch(),
            heartbeat_secs: default_heartbeat_secs(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            management_url: None,
        }
    }
}

impl AmqpConfig {
    /// The broker addresses `url` lists, in order (one for a single broker).
    pub fn urls(&self) -> Vec<&str> {
        let v: Vec<&str> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if v.is_empty() {
            vec![self.url.as_str()]
        } else {
            v
        }
    }

    /// The first address, for tools that talk to one broker (provisioning, management).
    pub fn first_url(&self) -> &str {
        self.urls()[0]
    }

    /// Address `i` (modulo their number) with the heartbeat set (unless it sets one itself).
    pub fn url_with_heartbeat(&self, i: usize) -> String {
        let urls = self.urls();
        let url = urls[i % urls.len()];
        if url.contains("heartbeat=") {
            return url.to_string();
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}heartbeat={}", self.heartbeat_secs)
    }

    /// The addresses without their passwords, for logs and errors.
    pub fn redacted_url(&self) -> String {
        self.urls()
            .into_iter()
            .map(redact)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A URL with the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords never reach logs; the heartbeat is added once.
    #[test]
    fn redaction_and_heartbeat() {
        assert_eq!(
            redact("amqp://u:secret@h:5672/%2f"),
            "amqp://u:***@h:5672/%2f"
        );
        assert_eq!(redact("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        let c = AmqpConfig {
            url: "amqp://h/v".into(),
            ..Default::default()
        };
        assert_eq!(c.url_with_heartbeat(0), "amqp://h/v?heartbeat=10");
        let c = AmqpConfig {
            url: "amqp://h/v?heartbeat=3".into(),
            ..Default::default()
        };
        assert_eq!(c.url_with_heartbeat(0), "amqp://h/v?heartbeat=3");
    }

    /// A cluster's nodes, comma-separated, are taken in turn; a password never shows.
    #[test]
    fn several_brokers() {
        let c = AmqpConfig {
            url: "amqp://u:pw@a:5672/gz, amqp://u:pw@b:5672/gz?heartbeat=4,".into(),
            ..Default::default()
        };
        assert_eq!(
            c.urls(),
            ["amqp://u:pw@a:5672/gz", "amqp://u:pw@b:5672/gz?heartbeat=4"]
        );
        assert_eq!(c.first_url(), "amqp://u:pw@a:5672/gz");
        assert_eq!(
            c.url_with_heartbeat(0),
            "amqp://u:pw@a:5672/gz?heartbeat=10"
        );
        assert_eq!(c.url_with_heartbeat(1), "amqp://u:pw@b:5672/gz?heartbeat=4");
        assert_eq!(
            c.url_with_heartbeat(2),
            "amqp://u:pw@a:5672/gz?heartbeat=10"
        );
        assert_eq!(
            c.redacted_url(),
            "amqp://u:***@a:5672/gz,amqp://u:***@b:5672/gz?heartbeat=4"
        );
    }
}
