//! `govbus report`: the yearly sharing report (articles 41, 42) as CSV and HTML.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

/// `govbus report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The router's config file (database, catalogue, working-day calendar).
    #[arg(long)]
    pub config: PathBuf,
    /// The year (Asia/Shanghai).
    #[arg(long)]
    pub year: i32,
    /// Only this agency (its deliveries, the departments' records it received, its applications).
    #[arg(long)]
    pub agency: Option<String>,
    /// Write the CSV here (default: standard output when no --html is given).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Builds and writes the report.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let catalogue = router::routing::catalogue::Catalogue::load(&cfg.catalogue)?;
    let calendar = match &cfg.workflow.calendar {
        Some(p) => Some(router::workflow::workdays::Calendar::load(p)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        router::ops::report::build(
            &pool,
            &catalogue,
            calendar.as_ref(),
            args.year,
            args.agency.as_deref(),
        )
        .await
    })?;
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    if let Some(p) = &args.csv {
        write(p, router::ops::report::csv(&report)?)?;
    }
    if let Some(p) = &args.html {
        write(p, router::ops::report::html(&report))?;
    }
    if args.csv.is_none() && args.html.is_none() {
        print!("{}", router::ops::report::csv(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
