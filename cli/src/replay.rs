//! `govbus replay`: re-delivers the latest version of each record of an item to an agency.
use std::{path::PathBuf, process::ExitCode};

use bus_schemas::amqp::Connector;
use clap::Args;
use router::ops::replay;

/// `govbus replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The router's config file (catalogue, platform keys, database, broker).
    #[arg(long)]
    pub config: PathBuf,
    /// The agency to send the records to.
    #[arg(long)]
    pub agency: String,
    /// The item whose records to send.
    #[arg(long)]
    pub item: String,
    /// Only records the router received on or after this day (YYYY-MM-DD, Asia/Shanghai).
    #[arg(long)]
    pub since: Option<chrono::NaiveDate>,
}

/// Runs a replay and prints what it did.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    bus_schemas::amqp::process::init_tracing(&cfg.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let (platform, pool, routing) = replay::load(&cfg).await?;
        let connector = Connector::new(cfg.amqp.clone(), "govbus-replay");
        let cx = replay::Context {
            platform: &platform,
            pool: &pool,
            routing,
            connector: &connector,
            catalogue: &cfg.catalogue,
        };
        replay::replay(&cx, &args.agency, &args.item, args.since).await
    })?;
    println!(
        "{}: {} latest records of {}; {} delivered to {} (confirmed, in the ledger), {} not covered by its grant today, {} refused",
        r.id, r.records, args.item, r.delivered, args.agency, r.not_granted, r.refused
    );
    Ok(if r.refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
