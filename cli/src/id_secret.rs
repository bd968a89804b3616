//! `govbus id-secret rotate`: moves the router's database to a new platform id secret version
//! and writes each agency's map from the message ids it holds to the new ones.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

/// `govbus id-secret …`
#[derive(Debug, Subcommand)]
pub enum IdSecretCommand {
    /// With every router stopped: recompute the record hashes under the secret of
    /// `platform.id_secret_version` (the old one listed under `[[platform.previous_id_secrets]]`)
    /// and give every delivery its id under it.
    Rotate(RotateArgs),
}

/// `govbus id-secret rotate`
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The router's config file, already naming the new secret and version.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write each agency's `old_message_id,new_message_id` CSV (`<agency>.csv`,
    /// mode 0600); run again to write them again.
    #[arg(long)]
    pub maps: Option<PathBuf>,
}

/// Runs an id-secret command.
pub fn run(cmd: IdSecretCommand) -> anyhow::Result<ExitCode> {
    let IdSecretCommand::Rotate(args) = cmd;
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(router::ops::id_secret::rotate(&cfg, args.maps.as_deref()))?;
    if r.already {
        println!(
            "the database is already under id secret version {}; nothing rehashed",
            r.to
        );
    } else {
        println!(
            "id secret version {} → {}: {} records rehashed, {} deliveries given their version-{} id",
            r.from, r.to, r.records, r.deliveries, r.to
        );
        for (item, n) in &r.unreadable {
            println!(
                "warning: {n} records of item `{item}` cannot be read with the catalogue in force; \
                 their hashes stay, so their next version is not checked against what agencies hold"
            );
        }
        if r.kept > 0 {
            println!(
                "{} kept deliveries (agencies' queues were full) given their version-{} id and signed again",
                r.kept, r.to
            );
        }
    }
    for (path, n) in &r.maps {
        println!("{n} ids → {} (0600); give it to the agency", path.display());
    }
    println!("start the routers; agencies' tokens for the workflow API are re-issued by `govbus provision --platform-id-secret`");
    Ok(ExitCode::SUCCESS)
}
