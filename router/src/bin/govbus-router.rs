//! `govbus-router`: parses the command line and config, starts tracing, runs.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use router::config::RouterConfig;

/// Delivers each record only to the agencies the catalogue grants it to, only the granted fields.
#[derive(Debug, Parser)]
#[command(name = "govbus-router", version, about)]
struct Cli {
    /// The router's TOML config file.
    #[arg(long)]
    config: PathBuf,
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let cfg = RouterConfig::load(&cli.config)?;
    bus_schemas::amqp::process::init_tracing(&cfg.log);
    let stop = bus_schemas::amqp::process::stop_on_signals();
    router::run(cfg, stop).await
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
