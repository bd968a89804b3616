//! `govbus-agency`: what an agency runs to receive its records (`tail`, `sink`). Parses the
//! command line and calls the library.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use agency::{
    sink::{PgSink, Tables, Webhook},
    tail::Tail,
    Access, AgencyArgs, Batching,
};
use clap::{Args, Parser, Subcommand};

/// govbus-agency: receive an agency's records from govbus, verified and decoded.
#[derive(Debug, Parser)]
#[command(name = "govbus-agency", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An agency's deliveries as JSON lines (verified, acked, each message id once).
    Tail(TailArgs),
    /// Land an agency's records in its own PostgreSQL table, or POST them to a webhook.
    Sink(SinkArgs),
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::Tail(args) => tail(args),
        Command::Sink(args) => sink(args),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `govbus-agency tail`
#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    agency: AgencyArgs,
    /// Stop after this many deliveries (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

/// `govbus-agency sink`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["postgres", "webhook"])))]
struct SinkArgs {
    #[command(flatten)]
    agency: AgencyArgs,
    /// The agency's own PostgreSQL database.
    #[arg(long, env = "GOVBUS_SINK_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// Table for the records: `--table T` for every item, or `--table ITEM=T` once per item.
    /// Created if missing; a column per granted field, added when a grant widens.
    #[arg(long)]
    table: Vec<String>,
    /// POST each record as JSON to this URL instead (ack after a 2xx; a 4xx, or retries
    /// exhausted, dead-letters it to the agency's .dlq).
    #[arg(long)]
    webhook: Option<String>,
    /// File holding a bearer token for the webhook.
    #[arg(long)]
    webhook_token_file: Option<PathBuf>,
    /// How long one record is retried against a failing webhook before it is dead-lettered
    /// (well inside the broker's 30-minute consumer timeout).
    #[arg(long, default_value_t = 120)]
    webhook_retry_secs: u64,
    /// Records committed per database transaction.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Instead of consuming: rewrite the `--table` rows from old to new pseudonym tokens with
    /// the `old_token,new_token` file the platform gave after rotating its pseudonym secret
    /// (`govbus pseudonym-map`), in one transaction, then exit.
    #[arg(
        long,
        value_name = "FILE",
        requires = "postgres",
        conflicts_with = "webhook"
    )]
    apply_pseudonym_map: Option<PathBuf>,
    /// Instead of consuming: delete the `--table` rows of items whose grants to this agency
    /// all ended (the platform's `GET /api/grants` says which), in one transaction, then exit.
    #[arg(long, requires = "postgres", conflicts_with_all = ["webhook", "apply_pseudonym_map"])]
    purge_ended: bool,
    /// The platform's API (default: `GOVBUS_API_URL` of the env file), for `--purge-ended`.
    #[arg(long, env = "GOVBUS_API_URL")]
    api_url: Option<String>,
    /// The agency's API token (default: `GOVBUS_API_TOKEN` of the env file), for `--purge-ended`.
    #[arg(long, env = "GOVBUS_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn init_logs() {
    bus_schemas::amqp::process::init_tracing(&bus_schemas::settings::LogConfig::default());
}

/// Runs `govbus-agency tail`.
fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    let access = Access::resolve(&args.agency)?;
    runtime()?.block_on(async {
        let stop = bus_schemas::amqp::process::stop_on_signals();
        let mut t = Tail::new(std::io::stdout().lock());
        let batching = Batching {
            max: 100,
            wait: Duration::from_millis(20),
        };
        agency::consume(&access, &mut t, batching, args.count, &stop).await?;
        tracing::info!(
            printed = t.printed,
            redeliveries_skipped = t.skipped,
            "tail stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `govbus-agency sink`.
fn sink(args: SinkArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    if let (Some(map), Some(url)) = (&args.apply_pseudonym_map, &args.postgres) {
        let tables = Tables::parse(&args.table)?;
        let pairs = agency::pseudonym_map::read_map(map)?;
        let a = runtime()?.block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to the agency database: {e}"))?;
            agency::pseudonym_map::apply(&pool, &tables, &pairs).await
        })?;
        println!(
            "{} token pairs applied to {}: {} record keys rewritten, {} rows of the same person merged into the newer, {} values replaced in other columns",
            a.pairs,
            tables.names().join(", "),
            a.keys,
            a.merged,
            a.values
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let (true, Some(url)) = (args.purge_ended, &args.postgres) {
        return purge_ended(&args, url);
    }
    let access = Access::resolve(&args.agency)?;
    runtime()?.block_on(async {
        let stop = bus_schemas::amqp::process::stop_on_signals();
        if let Some(url) = &args.postgres {
            let tables = Tables::parse(&args.table)?;
            let mut sink = PgSink::connect(url, tables).await?;
            let batching = Batching {
                max: args.batch.max(1),
                wait: Duration::from_millis(50),
            };
            let n = agency::consume(&access, &mut sink, batching, None, &stop).await?;
            tracing::info!(deliveries = n, rows_written = sink.written, "sink stopped");
        } else if let Some(url) = &args.webhook {
            anyhow::ensure!(
                args.table.is_empty(),
                "--table goes with --postgres, not --webhook"
            );
            let token = match &args.webhook_token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let mut hook = Webhook::new(
                url.clone(),
                token,
                Duration::from_secs(args.webhook_retry_secs),
            )?;
            let batching = Batching {
                max: 1,
                wait: Duration::ZERO,
            };
            let n = agency::consume(&access, &mut hook, batching, None, &stop).await?;
            tracing::info!(deliveries = n, accepted = hook.accepted, "sink stopped");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `govbus-agency sink --purge-ended`.
fn purge_ended(args: &SinkArgs, url: &str) -> anyhow::Result<ExitCode> {
    let tables = Tables::parse(&args.table)?;
    let (api_url, token) = agency::access::api_access(
        &args.agency,
        args.api_url.as_deref(),
        args.api_token.as_deref(),
    )?;
    let p = runtime()?.block_on(async {
        let granted = agency::purge::grants(&api_url, &token).await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the agency database: {e}"))?;
        agency::purge::purge(&pool, &tables, &granted).await
    })?;
    let list =
        |s: &std::collections::BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    println!(
        "{} rows deleted from {} (items whose grants all ended: {})",
        p.rows,
        tables.names().join(", "),
        list(&p.items)
    );
    if !p.unlisted.is_empty() {
        eprintln!(
            "kept the rows of {}: the platform lists no grant of them to {} (a grant taken out of the catalogue instead of given an end date?); ask the platform's operator",
            list(&p.unlisted),
            args.agency.agency
        );
    }
    Ok(ExitCode::SUCCESS)
}
