//! `govbus backup` and `govbus restore` (see `router::ops::backup`).
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};

/// `govbus backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The router's config file (database, catalogue, working-day calendar).
    #[arg(long)]
    pub config: PathBuf,
    /// A new folder for the backup (created mode 0700; it must not hold anything yet).
    #[arg(long)]
    pub out: PathBuf,
}

/// What to do with the configured catalogue file when it differs from the backup's.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CatalogueChoice {
    /// Keep the file in place; the backup's copy stays in the backup folder.
    Keep,
    /// Put the backup's catalogue in place (the current file is kept as `.before-restore`).
    Backup,
}

/// `govbus restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The router's config file; its database.url must name a new, empty database.
    #[arg(long)]
    pub config: PathBuf,
    /// The backup folder.
    #[arg(long)]
    pub from: PathBuf,
    /// When the configured catalogue file exists and differs from the backup's. Without it,
    /// a missing catalogue file is written from the backup and a differing one stops the
    /// restore before anything is changed.
    #[arg(long, value_enum)]
    pub catalogue: Option<CatalogueChoice>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `govbus backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let mut files = vec![("catalogue", cfg.catalogue.as_path())];
    if let Some(c) = &cfg.workflow.calendar {
        files.push(("calendar", c.as_path()));
    }
    let s = runtime()?.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        router::ops::backup::backup(&pool, &files, &args.out, cfg.router.refusal_retention_days)
            .await
    })?;
    println!(
        "backup written to {}: {} tables, {} rows ({} ledger rows), {} bytes of table data, {} files; check it with: cd {} && sha256sum -c SHA256SUMS",
        args.out.display(),
        s.tables,
        s.rows,
        s.ledger_rows,
        s.bytes,
        files.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `govbus restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let manifest = router::ops::backup::check(&args.from)?;
    // The catalogue file first: a conflict stops everything before the database changes.
    let mut put_catalogue = None;
    if let Some(saved) = router::ops::backup::file_of(&args.from, &manifest, "catalogue") {
        let saved_text = std::fs::read(&saved)?;
        match std::fs::read(&cfg.catalogue) {
            Err(_) => put_catalogue = Some(saved_text),
            Ok(current) if current == saved_text => {}
            Ok(_) => match args.catalogue {
                None => anyhow::bail!(
                    "{} differs from the backup's catalogue ({}); nothing was restored: pass --catalogue keep (leave it) or --catalogue backup (put the backup's in place)",
                    cfg.catalogue.display(),
                    saved.display()
                ),
                Some(CatalogueChoice::Keep) => {}
                Some(CatalogueChoice::Backup) => {
                    let aside = cfg.catalogue.with_extension("toml.before-restore");
                    std::fs::rename(&cfg.catalogue, &aside).map_err(|e| {
                        anyhow::anyhow!("cannot move {} aside: {e}", cfg.catalogue.display())
                    })?;
                    println!("the current catalogue was moved to {}", aside.display());
                    put_catalogue = Some(saved_text);
                }
            },
        }
    }
    let s = runtime()?.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        router::ops::backup::restore(
            &pool,
            &args.from,
            &manifest,
            cfg.router.refusal_retention_days,
        )
        .await
    })?;
    if let Some(text) = put_catalogue {
        std::fs::write(&cfg.catalogue, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", cfg.catalogue.display()))?;
        println!("catalogue written to {}", cfg.catalogue.display());
    }
    println!(
        "restored {} tables, {} rows from the backup of {} into {}; run `govbus ledger verify` next",
        s.tables,
        s.rows,
        manifest.created_at,
        bus_schemas::amqp::config::redact(&cfg.database.url)
    );
    Ok(ExitCode::SUCCESS)
}
