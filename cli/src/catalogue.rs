//! `govbus catalogue check FILE`: every problem of a catalogue at once, each naming its entry.
use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use router::routing::catalogue::Catalogue;

/// `govbus catalogue …`
#[derive(Debug, Subcommand)]
pub enum CatalogueCommand {
    /// Check a catalogue file: record types, fields, agencies, periods, keys.
    Check {
        /// The catalogue TOML file.
        file: PathBuf,
    },
}

/// Runs a catalogue command.
pub fn run(cmd: CatalogueCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogueCommand::Check { file } => match Catalogue::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} departments, {} agencies, {} items, {} grants)",
                    file.display(),
                    c.file.departments.len(),
                    c.file.agencies.len(),
                    c.file.items.len(),
                    c.file.grants.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
