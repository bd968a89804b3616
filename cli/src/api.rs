//! Reaching the router's `[api]` listener (the status page and the workflow API): its URL and
//! the CA that signed its certificate.
use std::path::{Path, PathBuf};

use clap::Args;

/// Where the router's status page and workflow API are, and whom to trust for its TLS.
#[derive(Debug, Clone, Args)]
pub struct ApiTarget {
    /// Base URL of the router's `[api]` listener (default: the env file's `GOVBUS_API_URL`,
    /// else http://127.0.0.1:9201, the example config's loopback listener).
    #[arg(long, global = true)]
    pub api_url: Option<String>,
    /// PEM file of the CA that signed the API's certificate, when it is not a public one
    /// (default: `GOVBUS_API_CA_FILE` of the env file or the environment).
    #[arg(long, global = true)]
    pub api_ca_file: Option<PathBuf>,
}

/// The example config's `[api]` listener.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:9201";

impl ApiTarget {
    /// The base URL and an HTTP client trusting the CA, from the flags, then `env` (a
    /// provisioning file's values), then the process environment.
    pub fn resolve(
        &self,
        env: Option<&std::collections::HashMap<String, String>>,
    ) -> anyhow::Result<(String, reqwest::Client)> {
        let from = |key: &str| {
            env.and_then(|e| e.get(key).cloned())
                .or_else(|| std::env::var(key).ok())
        };
        let url = self
            .api_url
            .clone()
            .or_else(|| from("GOVBUS_API_URL"))
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        let ca = self
            .api_ca_file
            .clone()
            .or_else(|| from("GOVBUS_API_CA_FILE").map(PathBuf::from));
        Ok((
            url.trim_end_matches('/').to_string(),
            client(ca.as_deref())?,
        ))
    }
}

/// An HTTP client that trusts `ca` besides the system's roots.
pub fn client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(p) = ca {
        let pem = std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("cannot read --api-ca-file {}: {e}", p.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "--api-ca-file {} is not a PEM certificate: {e}",
                p.display()
            )
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b.build()?)
}
