//! `govbus subject-log`: a citizen's data-use log for an operator answering a written request
//! (the citizen portal asks the router's `POST /api/subject-log`). The ID number is read from
//! standard input, never from the command line (shell history, `ps`). The query is logged as
//! the portal's are, under `operator:<name>` and the request's reference.
use std::{io::BufRead, path::PathBuf, process::ExitCode};

use clap::Args;

use router::ops::subject_log::{SubjectLog, SubjectLogRequest};

/// `govbus subject-log`
#[derive(Debug, Args)]
pub struct SubjectLogArgs {
    /// The router's config file (database, catalogue, pseudonym secrets).
    #[arg(long)]
    pub config: PathBuf,
    /// The operator answering (logged as `operator:<name>`).
    #[arg(long)]
    pub operator: String,
    /// The written request's reference (logged with the query).
    #[arg(long)]
    pub request: String,
    /// The ID document type code.
    #[arg(long, default_value = "111")]
    pub id_type: String,
    /// Print CSV instead of JSON.
    #[arg(long)]
    pub csv: bool,
}

/// Reads the ID number from standard input, answers, prints.
pub fn run(args: SubjectLogArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let log = SubjectLog::load(&cfg)?;
    eprintln!("ID document number (type {}), then Enter:", args.id_type);
    let mut number = String::new();
    std::io::stdin().lock().read_line(&mut number)?;
    let req = SubjectLogRequest {
        id_type: args.id_type.clone(),
        id_number: number.trim().to_string(),
        session: args.request.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        let cache = router::routing::grants::ProjectionCache::default();
        let routing =
            router::pipeline::reload::load_in_force(&cfg.catalogue, &cache, &pool).await?;
        let asker = format!("operator:{}", args.operator);
        anyhow::Ok(log.query(&pool, &routing.catalogue, &asker, &req).await?)
    })?;
    if args.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        w.write_record([
            "delivered_at",
            "agency",
            "agency_name",
            "item",
            "item_name",
            "fields",
            "grant",
            "grant_revision",
            "legal_basis",
            "purpose",
            "identity",
            "op",
        ])?;
        for d in &answer.deliveries {
            w.write_record([
                d.delivered_at.as_str(),
                &d.agency,
                &d.agency_name,
                &d.item,
                &d.item_name,
                &d.fields.join(" "),
                &d.grant,
                &d.grant_revision.to_string(),
                &d.legal_basis,
                &d.purpose,
                &d.identity,
                &d.op,
            ])?;
        }
        w.flush()?;
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    if answer.truncated {
        eprintln!(
            "only the newest {} deliveries are listed",
            router::ops::subject_log::LIMIT
        );
    }
    Ok(ExitCode::SUCCESS)
}
