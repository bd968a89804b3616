//! # cli: the `govbus` command of operators and departments
//!
//! Parses arguments and calls the libraries (`router`, `bus-schemas`). What an agency runs is
//! `govbus-agency` (crate `agency`), which this crate does not link.
//!
//! ## Layout
//! One file per subcommand: `schemas.rs`, `topology.rs`, `catalogue.rs`, `ledger.rs`,
//! `provision.rs`, `keygen.rs`, `quarantine.rs` (a department's own rows), `replay.rs`,
//! `status.rs`, `report.rs`, `workflow.rs`, `backup.rs` (backup and restore), `pseudonym.rs`
//! (pseudonym maps after a rotation), `id_secret.rs`. `main.rs` only parses and dispatches.
use clap::{Parser, Subcommand};

pub mod api;
pub mod backup;
pub mod catalogue;
pub mod id_secret;
pub mod keygen;
pub mod ledger;
pub mod partitions;
pub mod provision;
pub mod pseudonym;
pub mod purge;
pub mod quarantine;
pub mod replay;
pub mod report;
pub mod schemas;
pub mod status;
pub mod subject_log;
pub mod topology;
pub mod workflow;

/// govbus: the message bus for a city's government departments' authoritative records
/// (operators and departments; agencies run `govbus-agency`).
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
    /// The sharing catalogue: check a file.
    #[command(subcommand)]
    Catalogue(catalogue::CatalogueCommand),
    /// The delivery ledger: verify its hash chains.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// The router partitions: bind the shards to P of them, or show who holds each.
    #[command(subcommand)]
    Partitions(partitions::PartitionsCommand),
    /// Create, update and revoke RabbitMQ accounts from the catalogue.
    Provision(provision::ProvisionArgs),
    /// Write the platform's key pair and secrets.
    Keygen(keygen::KeygenArgs),
    /// A department's quarantined rows: counts by reason, or taken out to correct.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// Send an agency the latest version of each record of an item again (grant checked now).
    Replay(replay::ReplayArgs),
    /// What operators watch: agencies' queues and deliveries, departments, refusals, warnings.
    Status(status::StatusArgs),
    /// The yearly sharing report (articles 41, 42) as CSV and an HTML page with charts.
    Report(report::ReportArgs),
    /// The sharing workflow: apply for items, answer, mediate, decide, read outcomes.
    Workflow(workflow::WorkflowArgs),
    /// Back up the router's database and catalogue into a new folder, consistent, checksummed.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new, empty database (checksums checked first).
    Restore(backup::RestoreArgs),
    /// After a pseudonym secret rotation: an agency's old → new tokens for the people in the
    /// records it was delivered.
    PseudonymMap(pseudonym::PseudonymMapArgs),
    /// Purge now what the platform keeps of records whose sharing period or grant ended
    /// (the router does it itself every `retention.purge_check_secs`).
    Purge(purge::PurgeArgs),
    /// A citizen's data-use log for a written request: which agencies received the person's
    /// records, which fields, under which grant, when (the ID number is read from stdin).
    SubjectLog(subject_log::SubjectLogArgs),
    /// Rotate the platform id secret: rehash the router's database, write agencies' id maps.
    #[command(subcommand)]
    IdSecret(id_secret::IdSecretCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Schemas(cmd) => schemas::run(cmd),
        Command::Topology(args) => topology::run(args),
        Command::Catalogue(cmd) => catalogue::run(cmd),
        Command::Ledger(cmd) => ledger::run(cmd),
        Command::Partitions(cmd) => partitions::run(cmd),
        Command::Provision(args) => provision::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Status(args) => status::run(args),
        Command::Quarantine(cmd) => quarantine::run(cmd),
        Command::Replay(args) => replay::run(args),
        Command::Workflow(args) => workflow::run(args),
        Command::Report(args) => report::run(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::PseudonymMap(args) => pseudonym::run(args),
        Command::IdSecret(cmd) => id_secret::run(cmd),
        Command::SubjectLog(args) => subject_log::run(args),
        Command::Purge(args) => purge::run(args),
    }
}
