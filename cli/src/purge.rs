//! `govbus purge`: purges now what the platform keeps of records no longer shared (the router
//! does this itself every `retention.purge_check_secs`), or with `--dry-run` lists what is due.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

/// `govbus purge`
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The router's config file (database, catalogue, `[retention]`).
    #[arg(long)]
    pub config: PathBuf,
    /// Days after an end before purging (default: `retention.purge_grace_days`).
    #[arg(long)]
    pub grace_days: Option<u32>,
    /// List what is due; purge nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Purges (or lists) and prints one JSON line per item or grant.
pub fn run(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let grace = args.grace_days.unwrap_or(cfg.retention.purge_grace_days);
    let today = bus_schemas::validate::today_in_shanghai();
    let ids = bus_schemas::wire::IdKey::new(&bus_schemas::keys::load_secret_as(
        &cfg.platform.id_secret_file,
        "platform.id_secret_file",
    )?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        let cache = router::routing::grants::ProjectionCache::default();
        let routing =
            router::pipeline::reload::load_in_force(&cfg.catalogue, &cache, &pool).await?;
        if args.dry_run {
            for (item, grant, reason) in router::ops::purge::due(&routing.catalogue, today, grace) {
                println!(
                    "{}",
                    serde_json::json!({"item": item, "grant": grant, "reason": reason, "due": true})
                );
            }
            return anyhow::Ok(());
        }
        let purged = router::store::jobs::exclusive(
            &pool,
            router::store::jobs::Job::Purge,
            router::ops::purge::purge(&pool, &ids, &routing.catalogue, today, grace),
        )
        .await??;
        for p in &purged {
            println!("{}", serde_json::to_string(p)?);
        }
        if purged.is_empty() {
            eprintln!("nothing to purge (grace {grace} days)");
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
