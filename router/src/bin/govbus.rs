//! `govbus`: the command line for agencies and operators. Parses arguments and dispatches.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match router::cli::run(router::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
