//! The `govbus` command line for agencies and operators.
use clap::{Parser, Subcommand};

pub mod schemas;
pub mod topology;

/// govbus: the message bus for a city's government departments' authoritative records.
#[derive(Debug, Parser)]
#[command(name = "govbus", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record type schemas: list, export, encode, decode, validate, release.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Declare the exchanges and queues of the wire contract (idempotent).
    Topology(topology::TopologyArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Schemas(cmd) => schemas::run(cmd),
        Command::Topology(args) => topology::run(args),
    }
}
