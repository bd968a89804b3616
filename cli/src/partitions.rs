//! `govbus partitions set P` binds the 64 shards of `govbus.ingest` to the router partitions
//! `govbus.router.0` … `govbus.router.<P-1>` and records P; `govbus partitions show` prints
//! the recorded P and each partition's queue: the router holding it (its active consumer),
//! how many stand by, and its backlog.
use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

/// `govbus partitions …`
#[derive(Debug, Subcommand)]
pub enum PartitionsCommand {
    /// Bind the shards to P partitions (choose P before traffic: changing it is refused while
    /// a partition holds messages). Every router must then run with router.partitions = P.
    Set {
        /// The router's config file (broker, database).
        #[arg(long)]
        config: PathBuf,
        /// Partitions, 1 to 64.
        partitions: u8,
        /// Change P even though partitions hold messages (their records may then be decided
        /// out of order).
        #[arg(long)]
        force: bool,
    },
    /// The bound P, and for each partition the router holding it, how many stand by, and its
    /// backlog (from the management API: amqp.management_url, else port 15672 of the broker's
    /// host). Exits 1 if a partition has no router.
    Show {
        /// The router's config file (broker, database).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a partitions command.
pub fn run(cmd: PartitionsCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            PartitionsCommand::Set {
                config,
                partitions,
                force,
            } => {
                let cfg = router::config::RouterConfig::load(&config)?;
                let pool = router::store::connect(&cfg.database.url, 2).await?;
                let connector =
                    bus_schemas::amqp::Connector::new(cfg.amqp.clone(), "govbus partitions");
                use router::ops::partitions::{set, Change, Set};
                let change = if force { Change::Force } else { Change::IfDrained };
                let done = set(&pool, &connector, partitions, change).await?;
                match done {
                    Set::New => println!("bound the 64 shards to {partitions} partition(s)"),
                    Set::Same => println!("{partitions} partition(s) were bound already; declared again"),
                    Set::Changed(old) => println!(
                        "changed from {old} to {partitions} partition(s); restart every router with router.partitions = {partitions}"
                    ),
                }
                if partitions != cfg.router.partitions {
                    eprintln!(
                        "note: {} says router.partitions = {}: routers with that config will refuse to start",
                        config.display(),
                        cfg.router.partitions
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            PartitionsCommand::Show { config } => {
                let cfg = router::config::RouterConfig::load(&config)?;
                let pool = router::store::connect(&cfg.database.url, 2).await?;
                let Some(p) = router::ops::partitions::bound(&pool).await? else {
                    println!("no partitions are bound yet (the first router binds its own, or run `govbus partitions set P`)");
                    return Ok(ExitCode::SUCCESS);
                };
                println!("{p} partition(s)");
                let m = router::ops::provision::Management::for_amqp(&cfg.amqp)?;
                let mut without = 0;
                for n in 0..p {
                    let q = bus_schemas::wire::router_queue(n);
                    let Some(info) = m.queue(&q).await? else {
                        println!("{q}: MISSING (run `govbus partitions set {p}`)");
                        without += 1;
                        continue;
                    };
                    let details = info["consumer_details"].as_array().cloned().unwrap_or_default();
                    let active = details
                        .iter()
                        .find(|c| c["active"].as_bool() == Some(true))
                        .and_then(|c| c["consumer_tag"].as_str());
                    let backlog = info["messages"].as_u64().unwrap_or(0);
                    match active {
                        Some(tag) => println!(
                            "{q}: held by {tag}, {} standing by; backlog {backlog}",
                            details.len() - 1
                        ),
                        None => {
                            without += 1;
                            println!("{q}: NO ROUTER; backlog {backlog}")
                        }
                    }
                }
                Ok(if without == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}
