//! Connecting to RabbitMQ, retrying with exponential backoff and jitter until it works or the
//! process is asked to stop. Callers keep no lapin object across a failure: they call
//! [`Connector::connect`] again and rebuild channels and consumers on the new connection.
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::{tcp::OwnedTLSConfig, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::config::AmqpConfig;

/// Opens connections for one process.
#[derive(Debug, Clone)]
pub struct Connector {
    config: AmqpConfig,
    name: String,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS CA file could not be read.
    #[error("cannot read the TLS CA file {path}: {source}; set amqp.tls_ca_file to a PEM file")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    /// The broker refused or could not be reached.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Broker { url: String, source: lapin::Error },
    /// The process is stopping.
    #[error("stopped while connecting to RabbitMQ")]
    Cancelled,
}

impl Connector {
    /// A connector; `name` shows in the management UI's connection list.
    pub fn new(config: AmqpConfig, name: impl Into<String>) -> Self {
        Connector {
            config,
            name: name.into(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// One attempt.
    pub async fn connect_once(&self) -> Result<Connection, ConnectError> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let tls = match &self.config.tls_ca_file {
            Some(path) => OwnedTLSConfig {
                identity: None,
                cert_chain: Some(std::fs::read_to_string(path).map_err(|source| {
                    ConnectError::CaFile {
                        path: path.display().to_string(),
                        source,
                    }
                })?),
            },
            None => OwnedTLSConfig::default(),
        };
        let runtime = lapin::runtime::default_runtime().map_err(|source| ConnectError::Broker {
            url: self.config.redacted_url(),
            source,
        })?;
        Connection::connect_with_config(&self.config.url_with_heartbeat(), props, tls, runtime)
            .await
            .map_err(|source| ConnectError::Broker {
                url: self.config.redacted_url(),
                source,
            })
    }

    /// Connects, retrying with backoff and jitter until it works; `on_retry` is told of each
    /// failure (for logs and metrics). Returns `Cancelled` once `stop` is cancelled.
    pub async fn connect(
        &self,
        stop: &CancellationToken,
        mut on_retry: impl FnMut(&ConnectError, Duration),
    ) -> Result<Connection, ConnectError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.reconnect_min_ms))
            .with_max_delay(Duration::from_millis(self.config.reconnect_max_ms))
            .with_jitter()
            .without_max_times();
        let attempt = (|| self.connect_once())
            .retry(backoff)
            .when(|e| !matches!(e, ConnectError::CaFile { .. }))
            .notify(|e, d| on_retry(e, d));
        tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => Err(ConnectError::Cancelled),
        }
    }
}
