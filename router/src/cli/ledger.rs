//! `govbus ledger verify`: walks every agency's hash chain and names the first broken row.
use std::process::ExitCode;

use clap::Subcommand;

/// `govbus ledger …`
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every agency's chain; exit 1 naming the first broken row of each.
    Verify {
        /// PostgreSQL URL of the router's database.
        #[arg(
            long,
            env = "GOVBUS__DATABASE__URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres",
            hide_env_values = true
        )]
        database_url: String,
    },
}

/// Runs a ledger command.
pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    let LedgerCommand::Verify { database_url } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = crate::store::connect(&database_url, 2).await?;
        let v = crate::ledger::verify(&pool).await?;
        if v.broken.is_empty() {
            println!("ledger ok: {} rows in {} agency chains", v.rows, v.agencies);
            Ok(ExitCode::SUCCESS)
        } else {
            for b in &v.broken {
                println!(
                    "ledger BROKEN: agency {} row seq {} (message id {}): {}",
                    b.agency, b.seq, b.message_id, b.problem
                );
            }
            Ok(ExitCode::from(1))
        }
    })
}
