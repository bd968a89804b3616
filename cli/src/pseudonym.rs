//! `govbus pseudonym-map`: after the pseudonym secret is rotated, each agency with a pseudonym
//! grant gets the old → new token of every person in the records it was delivered, so its own
//! links survive the rotation instead of silently breaking. No ID number is written: only the
//! agency's own two tokens per person.
use std::{collections::BTreeSet, io::Write, path::PathBuf, process::ExitCode};

use clap::Args;
use futures::TryStreamExt;
use sqlx::Row;

use router::{routing::catalogue::Identity, routing::pseudonym::Pseudonymizer};

/// `govbus pseudonym-map`
#[derive(Debug, Args)]
pub struct PseudonymMapArgs {
    /// The router's config file (current pseudonym secret and version, previous secrets).
    #[arg(long)]
    pub config: PathBuf,
    /// The agency.
    #[arg(long)]
    pub agency: String,
    /// The version whose tokens the agency holds (listed under
    /// `platform.previous_pseudonym_secrets`).
    #[arg(long)]
    pub from_version: u32,
    /// Where to write the CSV `old_token,new_token` (created, mode 0600).
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the mapping.
pub fn run(args: PseudonymMapArgs) -> anyhow::Result<ExitCode> {
    let cfg = router::config::RouterConfig::load(&args.config)?;
    let new = Pseudonymizer::versioned(
        &bus_schemas::keys::load_secret_as(
            &cfg.platform.pseudonym_secret_file,
            "platform.pseudonym_secret_file",
        )?,
        cfg.platform.pseudonym_version,
    );
    let old_file = cfg
        .platform
        .previous_pseudonym_secrets
        .iter()
        .find(|p| p.version == args.from_version)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "version {} is not under platform.previous_pseudonym_secrets in {}",
                args.from_version,
                args.config.display()
            )
        })?;
    anyhow::ensure!(
        args.from_version != cfg.platform.pseudonym_version,
        "version {} is the current one; nothing to map",
        args.from_version
    );
    let old = Pseudonymizer::versioned(
        &bus_schemas::keys::load_secret_as(&old_file.file, "previous_pseudonym_secrets")?,
        args.from_version,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (pairs, records) = rt.block_on(async {
        let pool = router::store::connect(&cfg.database.url, 2).await?;
        let cache = router::routing::grants::ProjectionCache::default();
        let routing =
            router::pipeline::reload::load_in_force(&cfg.catalogue, &cache, &pool).await?;
        let agency = args.agency.as_str();
        anyhow::ensure!(
            routing.catalogue.agency_ids().any(|a| a == agency),
            "agency `{agency}` is not in the catalogue"
        );
        let mut pairs = BTreeSet::new();
        let mut records = 0u64;
        for (item_id, item) in &routing.items {
            let pseudonymised = item
                .grants
                .iter()
                .any(|g| g.grant.agency == agency && g.grant.identity == Identity::Pseudonym);
            if !pseudonymised {
                continue;
            }
            // The latest version of every record of the item this agency was delivered.
            let mut rows = sqlx::query(
                "SELECT body FROM latest_records r WHERE item = $1 AND EXISTS (
                   SELECT 1 FROM ledger l WHERE l.agency = $2 AND l.item = $1 AND (l.key_hash = r.key_hash
                     OR l.key_hash IN (SELECT a.hash FROM key_hash_aliases a WHERE a.item = $1 AND a.current = r.key_hash)))",
            )
            .bind(item_id)
            .bind(agency)
            .fetch(&pool);
            while let Some(row) = rows.try_next().await? {
                let body: Vec<u8> = row.get(0);
                let Ok((_, datum)) = bus_schemas::split_header(&body) else {
                    continue;
                };
                let Ok(mut value) = item.record_type.decode_datum(datum) else {
                    continue;
                };
                records += 1;
                router::routing::route::replace_ids(
                    &mut value,
                    &item.subjects,
                    &item.id_fields,
                    &mut |id_type, number| {
                        pairs.insert((
                            old.token(agency, id_type, number),
                            new.token(agency, id_type, number),
                        ));
                        String::new()
                    },
                );
            }
        }
        anyhow::Ok((pairs, records))
    })?;
    let mut f = bus_schemas::keys::create_private(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    writeln!(f, "old_token,new_token")?;
    for (o, n) in &pairs {
        writeln!(f, "{o},{n}")?;
    }
    f.sync_all()?;
    println!(
        "{} token pairs (pgb{}_ → pgb{}_) from {records} records delivered to {} written to {} (0600); give it to the agency",
        pairs.len(),
        args.from_version,
        cfg.platform.pseudonym_version,
        args.agency,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
