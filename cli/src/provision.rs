//! `govbus provision --catalogue FILE --out DIR`: RabbitMQ accounts for every department and
//! agency of the catalogue (and the router), with the wire contract's permissions.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use router::{ops::provision, routing::catalogue::Catalogue};

/// Arguments of `govbus provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The catalogue file.
    #[arg(long)]
    catalogue: PathBuf,
    /// Directory for the account files (`departments/<id>.env`, `agencies/<id>.env`, `router.env`).
    #[arg(long)]
    out: PathBuf,
    /// The platform's public key file (`<key id>.pub` from `govbus keygen`), for agencies' files.
    #[arg(long)]
    platform_public_key: PathBuf,
    /// AMQP URL of an administrator account; its host and vhost are the accounts'.
    #[arg(
        long,
        env = "GOVBUS__AMQP__URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// Management API base URL (default: port 15672 on the broker's host).
    #[arg(long, env = "GOVBUS__AMQP__MANAGEMENT_URL")]
    management_url: Option<String>,
    /// Host:port the accounts reach the broker at, if not the admin URL's.
    #[arg(long)]
    public_host: Option<String>,
    /// Prefix of every account name (keeps several installations on one broker apart).
    #[arg(long, default_value = "")]
    account_prefix: String,
    /// The router's HTTP base URL as agencies reach it (written into their files for
    /// `/schemas` and `/keys`).
    #[arg(long)]
    router_url: Option<String>,
    /// The router's `[api]` URL (status page, workflow API) as departments and agencies reach
    /// it, written into their files as `GOVBUS_API_URL`.
    #[arg(long)]
    api_url: Option<String>,
    /// The platform's id secret (`platform.id_secret_file` of the router's config): with it,
    /// each agency's and department's file gets its workflow API token (`GOVBUS_API_TOKEN`).
    #[arg(long)]
    platform_id_secret: Option<PathBuf>,
}

pub(crate) use router::ops::provision::parse_amqp_url as parse;

/// Provisions.
pub fn run(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let catalogue = Catalogue::load(&args.catalogue)?;
    let public = std::fs::read_to_string(&args.platform_public_key).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the platform public key {}: {e}; `govbus keygen` writes it",
            args.platform_public_key.display()
        )
    })?;
    bus_schemas::keys::parse_public_key(&public)
        .map_err(|e| anyhow::anyhow!("{} is {e}", args.platform_public_key.display()))?;
    let key_id = args
        .platform_public_key
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (scheme, user, pass, host, vhost) = parse(&args.amqp_url)?;
    let mgmt = args.management_url.clone().unwrap_or_else(|| {
        let h = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
        format!("http://{h}:15672")
    });
    let m = provision::Management::new(&mgmt, (user, pass), &vhost);
    let target = provision::Target {
        scheme,
        host: args.public_host.clone().unwrap_or(host),
        prefix: args.account_prefix.clone(),
        platform_key: (key_id, public.trim().to_string()),
        router_url: args.router_url.clone(),
        api_url: args.api_url.clone(),
        tokens: match &args.platform_id_secret {
            Some(p) => Some(router::workflow::token::TokenKey::derive(
                &bus_schemas::keys::load_secret_as(p, "--platform-id-secret")?,
            )),
            None => None,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(provision::provision(&m, &catalogue, &target, &args.out))?;
    println!(
        "provisioned vhost {vhost}: {} created, {} unchanged, {} revoked, {} API tokens re-issued; files in {}",
        done.created.len(),
        done.unchanged.len(),
        done.revoked.len(),
        done.reissued.len(),
        args.out.display()
    );
    for r in &done.revoked {
        println!("revoked {r}");
    }
    for l in &done.links {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// URL parts, with the default vhost and percent-decoding.
    #[test]
    fn url_parts() {
        let (s, u, p, h, v) = super::parse("amqp://a:b%40c@host:5673/%2f").unwrap();
        assert_eq!(
            (s.as_str(), u.as_str(), p.as_str(), h.as_str(), v.as_str()),
            ("amqp", "a", "b@c", "host:5673", "/")
        );
        let (_, _, _, h, v) = super::parse("amqp://u:p@h/gz?heartbeat=5").unwrap();
        assert_eq!((h.as_str(), v.as_str()), ("h:5672", "gz"));
    }
}
