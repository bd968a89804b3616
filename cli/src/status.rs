//! `govbus status`: the router's status page as a table.
use std::process::ExitCode;

use clap::Args;

use crate::api::ApiTarget;

/// `govbus status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The router's status page (its `[api]` listener).
    #[command(flatten)]
    pub api: ApiTarget,
    /// Print the JSON of `/status` instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Prints the status; exit 1 when it has warnings (for scripts and cron).
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (base, client) = args.api.resolve(None)?;
    let url = format!("{base}/status");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status: router::ops::status::Status = rt.block_on(async {
        let resp = client
            .get(&url)
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the router's status page at {url}: {e}; is it running with api.listen (set --api-url, and --api-ca-file for a private CA)?"
                )
            })?;
        anyhow::ensure!(
            resp.status().is_success(),
            "{url} answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default().trim()
        );
        Ok::<_, anyhow::Error>(resp.json().await?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", router::ops::status::text(&status));
    }
    Ok(if status.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
