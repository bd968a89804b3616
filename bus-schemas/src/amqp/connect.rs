//! Connecting to RabbitMQ, retrying with exponential backoff and jitter until it works or the
//! process is asked to stop. Callers keep no lapin object across a failure: they call
//! [`Connector::connect`] again and rebuild channels and consumers on the new connection.
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use lapin::{
    tcp::{OwnedIdentity, OwnedTLSConfig},
    Connection, ConnectionProperties,
};
use tokio_util::sync::CancellationToken;

use super::config::{redact, AmqpConfig};

/// Opens connections for one process.
#[derive(Debug, Clone)]
pub struct Connector {
    config: AmqpConfig,
    name: String,
    /// The address to try next (of `config.urls()`): the one that last worked, until it fails.
    next: Arc<AtomicUsize>,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file (CA, client certificate or key) could not be read, or is half configured.
    #[error("{0}")]
    TlsFile(String),
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
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// The TLS settings: the CA to check the broker's certificate against and the client
    /// certificate to present, read from their files.
    fn tls(&self) -> Result<OwnedTLSConfig, ConnectError> {
        let read = |path: &std::path::Path, key: &str| {
            std::fs::read(path).map_err(|e| {
                ConnectError::TlsFile(format!(
                    "cannot read amqp.{key} {}: {e}; give a PEM file",
                    path.display()
                ))
            })
        };
        let c = &self.config;
        let cert_chain = match &c.tls_ca_file {
            Some(p) => Some(String::from_utf8(read(p, "tls_ca_file")?).map_err(|_| {
                ConnectError::TlsFile(format!("amqp.tls_ca_file {} is not PEM text", p.display()))
            })?),
            None => None,
        };
        let identity = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: read(cert, "tls_cert_file")?,
                key: read(key, "tls_key_file")?,
            }),
            (None, None) => None,
            _ => {
                return Err(ConnectError::TlsFile(
                    "amqp.tls_cert_file and amqp.tls_key_file go together: set both or neither"
                        .into(),
                ))
            }
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }

    /// One attempt, at the address that last worked; a failure moves on to the next one, so
    /// with a cluster's nodes listed, a process finds a node that is up.
    pub async fn connect_once(&self) -> Result<Connection, ConnectError> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let tls = self.tls()?;
        let i = self.next.load(Ordering::Relaxed);
        let urls = self.config.urls();
        let url = redact(urls[i % urls.len()]);
        let runtime = lapin::runtime::default_runtime().map_err(|source| ConnectError::Broker {
            url: url.clone(),
            source,
        })?;
        match Connection::connect_with_config(
            &self.config.url_with_heartbeat(i),
            props,
            tls,
            runtime,
        )
        .await
        {
            Ok(c) => {
                if urls.len() > 1 {
                    tracing::info!(broker = %url, "connected to RabbitMQ");
                }
                Ok(c)
            }
            Err(source) => {
                let _ = self.next.compare_exchange(
                    i,
                    (i + 1) % urls.len(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                Err(ConnectError::Broker { url, source })
            }
        }
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
            .when(|e| !matches!(e, ConnectError::TlsFile(_)))
            .notify(|e, d| on_retry(e, d));
        tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => Err(ConnectError::Cancelled),
        }
    }
}
