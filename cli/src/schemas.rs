//! `govbus schemas …`: the record types of the standard, for agencies generating classes and
//! operators checking data by hand.
use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context};
use bus_schemas::{compat, Registry};
use clap::Subcommand;
use serde_json::Value as Json;

/// `govbus schemas` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// One line per record type: full name, fingerprint (hex of the 8 header bytes in wire order), field count.
    List,
    /// Write every record type's self-contained .avsc (and shared named types such as Subject) into DIR;
    /// with --agency, the exact writer schemas that agency receives under each of its grants.
    Export {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// Only what this agency receives: one projected writer schema per grant (as the
        /// router derives and serves it), plus the full schema of each record type as reader.
        #[arg(long, requires = "catalogue")]
        agency: Option<String>,
        /// The catalogue (with --agency).
        #[arg(long)]
        catalogue: Option<PathBuf>,
    },
    /// Read a record as natural JSON on stdin, write its Avro single-object bytes to stdout.
    Encode {
        /// Record type: full name, or short name where unambiguous.
        #[arg(long = "type")]
        type_name: String,
    },
    /// Read Avro single-object bytes on stdin, write the record as JSON to stdout (schema found by fingerprint).
    Decode {
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Read a record as natural JSON on stdin and print every data-element violation; exit 1 if there is one.
    Validate {
        /// Record type: full name, or short name where unambiguous.
        #[arg(long = "type")]
        type_name: String,
    },
    /// Write the next released version of every schema that changed into DIR/<full name>/v<N>.avsc,
    /// refusing if any change is not fully compatible with every released version.
    Release {
        /// The released-schemas directory.
        #[arg(default_value = "bus-schemas/released")]
        dir: PathBuf,
    },
}

/// Runs one `govbus schemas` subcommand.
pub fn run(cmd: SchemasCommand) -> anyhow::Result<ExitCode> {
    let registry = Registry::standard();
    let mut out = std::io::stdout().lock();
    match cmd {
        SchemasCommand::List => {
            let width = registry
                .types()
                .iter()
                .map(|t| t.full_name.len())
                .max()
                .unwrap_or(0);
            for t in registry.types() {
                writeln!(
                    out,
                    "{:width$}  {}  {:>3} fields",
                    t.full_name,
                    t.fingerprint,
                    t.field_count()
                )?;
            }
        }
        SchemasCommand::Export {
            dir,
            agency: Some(agency),
            catalogue: Some(catalogue),
        } => export_for_agency(&dir, &agency, &catalogue)?,
        SchemasCommand::Export { dir, .. } => {
            let count = registry
                .export(&dir)
                .with_context(|| format!("cannot write the schemas into {}", dir.display()))?;
            eprintln!("wrote {count} schemas to {}", dir.display());
        }
        SchemasCommand::Encode { type_name } => {
            let rt = registry.get(&type_name)?;
            let json = read_json_stdin()?;
            let bytes = rt
                .encode_json(&json)
                .with_context(|| format!("cannot encode as {}", rt.full_name))?;
            out.write_all(&bytes)?;
        }
        SchemasCommand::Decode { pretty } => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read stdin")?;
            let (_, json) = registry.decode_to_json(&body)?;
            let text = if pretty {
                serde_json::to_string_pretty(&json)?
            } else {
                json.to_string()
            };
            writeln!(out, "{text}")?;
        }
        SchemasCommand::Validate { type_name } => {
            let rt = registry.get(&type_name)?;
            let json = read_json_stdin()?;
            let value = rt
                .value_from_json(&json)
                .with_context(|| format!("the JSON does not fit {}", rt.full_name))?;
            let report = rt.validate(&value);
            for n in &report.notices {
                writeln!(out, "notice  {}: {}", n.field, n.message)?;
            }
            for v in &report.violations {
                writeln!(
                    out,
                    "invalid {} ({}; rule {}): {}",
                    v.field, v.class, v.rule, v.message
                )?;
            }
            if !report.is_valid() {
                writeln!(
                    out,
                    "{} violation(s) in {}",
                    report.violations.len(),
                    rt.full_name
                )?;
                return Ok(ExitCode::FAILURE);
            }
            writeln!(out, "valid {}", rt.full_name)?;
        }
        SchemasCommand::Release { dir } => {
            let written = compat::release(registry, &dir).map_err(anyhow::Error::msg)?;
            if written.is_empty() {
                writeln!(
                    out,
                    "nothing to release: every schema equals its latest version in {}",
                    dir.display()
                )?;
            }
            for p in written {
                writeln!(out, "released {}", p.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_json_stdin() -> anyhow::Result<Json> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read stdin as UTF-8")?;
    if text.trim().is_empty() {
        bail!("stdin is empty: pipe one JSON object in, e.g. `govbus schemas encode --type NAME < record.json`");
    }
    serde_json::from_str(&text).context("stdin is not valid JSON")
}

/// Writes `<grant>.<fingerprint>.avsc` for each grant of the agency, the full schema of each
/// record type it receives (`<full name>.avsc`, to read any of them with), and `index.json`.
fn export_for_agency(
    dir: &std::path::Path,
    agency: &str,
    catalogue: &std::path::Path,
) -> anyhow::Result<()> {
    let cat = router::routing::catalogue::Catalogue::load(catalogue)?;
    anyhow::ensure!(
        cat.agency_ids().any(|a| a == agency),
        "agency {agency} is not in {}; it has: {}",
        catalogue.display(),
        cat.agency_ids().collect::<Vec<_>>().join(", ")
    );
    let routing = router::routing::grants::Routing::compile(
        cat,
        &router::routing::grants::ProjectionCache::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, json: &Json| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(json).expect("JSON") + "\n",
        )
        .with_context(|| format!("cannot write {}", path.display()))
    };
    let mut index = Vec::new();
    let mut items: Vec<_> = routing.items.values().collect();
    items.sort_by(|a, b| a.item.id.cmp(&b.item.id));
    for item in items {
        for g in item.grants.iter().filter(|g| g.grant.agency == agency) {
            let w = &g.projection.writer;
            let file = format!("{}.{}.avsc", g.grant.id, w.fingerprint);
            write(&file, &w.json)?;
            write(
                &format!("{}.avsc", item.record_type.full_name),
                &item.record_type.json,
            )?;
            index.push(serde_json::json!({
                "grant": g.grant.id,
                "revision": g.grant.revision,
                "item": item.item.id,
                "record_type": w.full_name,
                "fingerprint": w.fingerprint.to_string(),
                "file": file,
                "reader_file": format!("{}.avsc", item.record_type.full_name),
                "fields": g.grant.fields,
                "identity": g.grant.identity,
                "valid_from": g.grant.valid_from.0.to_string(),
                "valid_until": g.grant.valid_until.as_ref().map(|d| d.0.to_string()),
            }));
        }
    }
    anyhow::ensure!(
        !index.is_empty(),
        "agency {agency} holds no grant in {}",
        catalogue.display()
    );
    let n = index.len();
    write("index.json", &Json::Array(index))?;
    eprintln!(
        "wrote {n} writer schema(s) for agency {agency} to {} (index.json lists grant, fingerprint and fields)",
        dir.display()
    );
    Ok(())
}
