//! How an agency tool finds its queue, its account and the platform: flags over the env file
//! `govbus provision` wrote.
use std::{collections::HashMap, path::PathBuf};

use bus_schemas::{
    amqp::AmqpConfig,
    envfile,
    wire::{self},
};
use clap::Args;

/// How an agency tool finds its queue, its account and the platform.
#[derive(Debug, Clone, Args)]
pub struct AgencyArgs {
    /// The agency's id in the catalogue.
    #[arg(long)]
    pub agency: String,
    /// The file `govbus provision` wrote for this agency (default
    /// `provisioned/agencies/<agency>.env`); flags and environment variables override it.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// AMQP URL with the agency's account (default: `GOVBUS__AMQP__URL` of the env file; the
    /// process environment's is not used, so a platform's own setting never leaks in).
    #[arg(long)]
    pub amqp_url: Option<String>,
    /// PEM file of the CA that signed the broker's certificate, for `amqps://` (default:
    /// `GOVBUS__AMQP__TLS_CA_FILE` of the env file, else the system roots).
    #[arg(long)]
    pub amqp_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present to the broker, with --amqp-tls-key-file (default:
    /// `GOVBUS__AMQP__TLS_CERT_FILE` / `GOVBUS__AMQP__TLS_KEY_FILE` of the env file).
    #[arg(long)]
    pub amqp_tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long)]
    pub amqp_tls_key_file: Option<PathBuf>,
    /// Base URL of the router's HTTP listener, for `/schemas/{fingerprint}` (default:
    /// `GOVBUS_ROUTER_URL` of the env file, else http://127.0.0.1:9200).
    #[arg(long, env = "GOVBUS_ROUTER_URL")]
    pub router_url: Option<String>,
    /// The platform's Ed25519 public key, base64 (default: `GOVBUS_PLATFORM_PUBLIC_KEY` of the
    /// env file; also served at the router's `/keys`).
    #[arg(long, env = "GOVBUS_PLATFORM_PUBLIC_KEY")]
    pub platform_public_key: Option<String>,
    /// That key's id (default: `GOVBUS_PLATFORM_KEY_ID` of the env file). Keys the platform
    /// rotates to later are accepted when this one endorsed them (read from `/keys`).
    #[arg(long, env = "GOVBUS_PLATFORM_KEY_ID")]
    pub platform_key_id: Option<String>,
    /// Deliveries the broker sends ahead of acks.
    #[arg(long, default_value_t = 500)]
    pub prefetch: u16,
    /// Keep the platform's signed ledger checkpoints here (one JSON file each; without it they
    /// are verified and acked only). `govbus ledger verify --checkpoints DIR` checks them.
    #[arg(long, env = "GOVBUS_CHECKPOINTS_DIR")]
    pub checkpoints: Option<PathBuf>,
}

/// Everything an agency tool needs, resolved from flags, environment and the env file.
#[derive(Debug, Clone)]
pub struct Access {
    /// Agency id.
    pub agency: String,
    /// `agency.<id>`.
    pub queue: String,
    /// Broker settings.
    pub amqp: AmqpConfig,
    /// Router base URL, without a trailing slash.
    pub router_url: String,
    /// Platform public key.
    pub platform_key: ed25519_dalek::VerifyingKey,
    /// Its key id, where known.
    pub platform_key_id: Option<String>,
    /// Where ledger checkpoints are kept, if anywhere.
    pub checkpoints: Option<PathBuf>,
}

/// The agency's env file (`--env-file`, else `provisioned/agencies/<agency>.env` if there),
/// checked to be this agency's, with its path.
fn env_of(args: &AgencyArgs) -> anyhow::Result<(HashMap<String, String>, PathBuf)> {
    let explicit = args.env_file.is_some();
    let path = args.env_file.clone().unwrap_or_else(|| {
        PathBuf::from("provisioned/agencies").join(format!("{}.env", args.agency))
    });
    let env = match envfile::read(&path) {
        Ok(e) => e,
        Err(e) if explicit => {
            anyhow::bail!("cannot read --env-file {}: {e}", path.display())
        }
        Err(_) => HashMap::new(),
    };
    if let Some(a) = env.get("GOVBUS_AGENCY") {
        anyhow::ensure!(
            a == &args.agency,
            "{} is agency {a}'s file, not {}'s",
            path.display(),
            args.agency
        );
    }
    Ok((env, path))
}

/// The platform's workflow API and the agency's token: the flags, else `GOVBUS_API_URL` and
/// `GOVBUS_API_TOKEN` of the env file (written by `govbus provision --platform-id-secret`).
pub fn api_access(
    args: &AgencyArgs,
    api_url: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let (env, path) = env_of(args)?;
    let pick = |flag: Option<&str>, key: &str, name: &str| {
        flag.map(String::from)
            .or_else(|| env.get(key).cloned())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no {name}: pass --{}, or the env file `govbus provision --platform-id-secret` wrote for this agency (looked for {key} in {})",
                    name.replace(' ', "-"),
                    path.display()
                )
            })
    };
    Ok((
        pick(api_url, "GOVBUS_API_URL", "api url")?,
        pick(token, "GOVBUS_API_TOKEN", "api token")?,
    ))
}

impl Access {
    /// Resolves flags over the env file. Names the file and the missing setting when one is absent.
    pub fn resolve(args: &AgencyArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            wire::valid_id(&args.agency),
            "--agency {:?} is not an id (lowercase letters, digits and _)",
            args.agency
        );
        let (env, path) = env_of(args)?;
        let missing = |what: &str, flag: &str| {
            anyhow::anyhow!(
                "no {what}: pass {flag}, or the env file `govbus provision` wrote for this agency \
                 with --env-file (looked for {})",
                path.display()
            )
        };
        let url = args
            .amqp_url
            .clone()
            .or_else(|| env.get("GOVBUS__AMQP__URL").cloned())
            .ok_or_else(|| missing("AMQP URL", "--amqp-url"))?;
        let key = args
            .platform_public_key
            .clone()
            .or_else(|| env.get("GOVBUS_PLATFORM_PUBLIC_KEY").cloned())
            .ok_or_else(|| missing("platform public key", "--platform-public-key"))?;
        let platform_key = bus_schemas::keys::parse_public_key(&key)
            .map_err(|e| anyhow::anyhow!("the platform public key is {e}"))?;
        let router_url = args
            .router_url
            .clone()
            .or_else(|| env.get("GOVBUS_ROUTER_URL").cloned())
            .unwrap_or_else(|| "http://127.0.0.1:9200".into())
            .trim_end_matches('/')
            .to_string();
        let file = |flag: &Option<PathBuf>, key: &str| {
            flag.clone().or_else(|| env.get(key).map(PathBuf::from))
        };
        Ok(Access {
            queue: wire::agency_queue(&args.agency),
            agency: args.agency.clone(),
            amqp: AmqpConfig {
                url,
                prefetch: args.prefetch,
                tls_ca_file: file(&args.amqp_tls_ca_file, "GOVBUS__AMQP__TLS_CA_FILE"),
                tls_cert_file: file(&args.amqp_tls_cert_file, "GOVBUS__AMQP__TLS_CERT_FILE"),
                tls_key_file: file(&args.amqp_tls_key_file, "GOVBUS__AMQP__TLS_KEY_FILE"),
                ..AmqpConfig::default()
            },
            router_url,
            platform_key,
            platform_key_id: args
                .platform_key_id
                .clone()
                .or_else(|| env.get("GOVBUS_PLATFORM_KEY_ID").cloned()),
            checkpoints: args.checkpoints.clone(),
        })
    }
}
