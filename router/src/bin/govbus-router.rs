//! `govbus-router`: parses the command line and config, starts tracing, runs.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use router::config::RouterConfig;
use tokio_util::sync::CancellationToken;

/// Delivers each record only to the agencies the catalogue grants it to, only the granted fields.
#[derive(Debug, Parser)]
#[command(name = "govbus-router", version, about)]
struct Cli {
    /// The router's TOML config file.
    #[arg(long)]
    config: PathBuf,
}

fn init_tracing(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let cfg = RouterConfig::load(&cli.config)?;
    init_tracing(&cfg.log.format, &cfg.log.level);
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop requested: draining");
        signal_stop.cancel();
    });
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
