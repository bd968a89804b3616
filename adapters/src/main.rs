//! `govbus-adapter`: parses the command line and config, starts tracing, runs.
use std::{path::PathBuf, process::ExitCode};

use adapters::config::AdapterConfig;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publishes a department's authoritative records to govbus.
#[derive(Debug, Parser)]
#[command(name = "govbus-adapter", version, about)]
struct Cli {
    /// The adapter's TOML config file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Validate the config, connect to the source and the broker, print the first records as
    /// JSON lines, publish nothing.
    #[arg(long)]
    check: bool,
    /// How many records `--check` prints.
    #[arg(long, default_value_t = 5)]
    check_limit: usize,
    /// Stop once the source has nothing new and every record is confirmed (for batch runs).
    #[arg(long)]
    once: bool,
    /// Send corrected quarantined rows (the file `govbus quarantine export` wrote, edited) back
    /// through mapping and validation, then stop; rows still invalid are quarantined again.
    #[arg(long, value_name = "FILE")]
    requeue: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new Ed25519 key pair (<ID>.key mode 0600, <ID>.pub) and, if absent, an id-secret.
    Keygen {
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// Key id, as the catalogue will list it (e.g. police-2026).
        #[arg(long)]
        key_id: String,
    },
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Keygen { out, key_id }) = cli.command {
        let public = adapters::keys::keygen(&out, &key_id)?;
        println!("wrote {}/{key_id}.key (0600) and {key_id}.pub; public key for the catalogue:\n{public}", out.display());
        return Ok(());
    }
    let path = cli
        .config
        .ok_or_else(|| anyhow::anyhow!("--config FILE is required (or use `keygen`)"))?;
    let cfg = AdapterConfig::load(&path)?;
    bus_schemas::amqp::process::init_tracing(&cfg.log);
    if cli.check {
        return adapters::check(cfg, cli.check_limit, &mut std::io::stdout().lock()).await;
    }
    let stop = bus_schemas::amqp::process::stop_on_signals();
    if let Some(file) = &cli.requeue {
        let s = adapters::run_from(cfg, stop, true, Some(file)).await?;
        eprintln!(
            "requeued {}: {} published, {} quarantined again",
            file.display(),
            s.published,
            s.quarantined
        );
        return Ok(());
    }
    adapters::run(cfg, stop, cli.once).await.map(|_| ())
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
