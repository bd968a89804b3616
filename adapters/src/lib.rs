//! # adapters: publish a department's authoritative records to the bus
//!
//! One process per department source (`govbus-adapter --config FILE`): reads the source,
//! maps each row to a bus-schemas record, validates, signs and publishes it to
//! `govbus.ingest` with confirms, or quarantines it with its reason. At least once: the
//! source position advances only past confirmed rows.
//!
//! ## Layout
//! - `config.rs`: the TOML config with `GOVBUS__SECTION__KEY` overrides.
//! - `source/`: one file per kind (`csv.rs`, `postgres.rs`, `http.rs`, `requeue.rs`) behind the
//!   `Source` trait of `record.rs`; `mod.rs` chooses the kind from config.
//! - `mapping.rs`: columns → schema fields, conversions, version, deletes. `times.rs`: the date
//!   and time forms exports write.
//! - `message.rs`: signed record and quarantine messages (the wire contract).
//! - `pipeline.rs`: the confirm window, reconnects, checkpoints, draining.
//! - `checkpoint.rs`: durable positions (key material: `bus_schemas::keys`).
//! - `telemetry.rs`: events and metrics. `health.rs`: `/metrics`, `/healthz`, `/readyz`.

pub use bus_schemas::keys;

pub mod checkpoint;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod mapping;
pub mod message;
pub mod pipeline;
pub mod source;
pub mod telemetry;
pub mod times;

use std::sync::Arc;

use anyhow::Context;
use bus_schemas::{amqp::Connector, wire, Registry};
use config::AdapterConfig;
use mapping::{Mapper, Outcome};
use message::Publisher;
use pipeline::{Pipeline, Summary};
use source::{http::HttpSource, Source, SourceConfig};
use tokio_util::sync::CancellationToken;

/// Everything built from the config before anything runs.
struct Parts {
    mapper: Mapper,
    publisher: Publisher,
    connector: Connector,
}

fn parts(cfg: &AdapterConfig) -> anyhow::Result<Parts> {
    let rt = Registry::standard().get(&cfg.record_type)?.clone();
    let mapper = Mapper::new(rt, cfg.mapping.clone()).map_err(|problems| {
        anyhow::anyhow!(
            "the mapping does not fit {}:\n  {}",
            cfg.record_type,
            problems.join("\n  ")
        )
    })?;
    let publisher = Publisher {
        department: cfg.department.clone(),
        item: cfg.item.clone(),
        signer: keys::load_signer(&cfg.signing.key_file, &cfg.signing.key_id)?,
        id_key: wire::IdKey::new(&keys::load_id_secret(&cfg.signing.id_secret_file)?),
    };
    let connector = Connector::new(
        cfg.amqp.clone(),
        format!("govbus-adapter {}.{}", cfg.department, cfg.item),
    );
    Ok(Parts {
        mapper,
        publisher,
        connector,
    })
}

/// Runs the adapter until `stop` is cancelled (SIGTERM), or with `until_idle` until the
/// source has nothing new and everything is confirmed.
pub async fn run(
    cfg: AdapterConfig,
    stop: CancellationToken,
    until_idle: bool,
) -> anyhow::Result<Summary> {
    run_from(cfg, stop, until_idle, None).await
}

/// Runs the adapter, reading `requeue` (corrected quarantined rows, JSON lines) instead of its
/// configured source when given.
pub async fn run_from(
    cfg: AdapterConfig,
    stop: CancellationToken,
    until_idle: bool,
    requeue: Option<&std::path::Path>,
) -> anyhow::Result<Summary> {
    let Parts {
        mapper,
        publisher,
        connector,
    } = parts(&cfg)?;
    let health = Arc::new(health::Health::default());
    let addr = health::serve(cfg.http.listen, health.clone(), stop.clone()).await?;
    tracing::info!(
        department = %cfg.department, item = %cfg.item, source = cfg.source.kind(),
        broker = %cfg.amqp.redacted_url(), listen = %addr, "adapter starting"
    );
    macro_rules! go {
        ($source:expr) => {
            Pipeline::new(
                $source, mapper, publisher, connector, health, stop, until_idle,
            )
            .run()
            .await
        };
    }
    if let Some(file) = requeue {
        return go!(source::requeue::RequeueSource::new(
            file,
            &cfg.item,
            &cfg.state_dir
        )?);
    }
    match cfg.source.clone() {
        SourceConfig::Csv(c) => go!(source::csv::source(c, &cfg.state_dir)?),
        SourceConfig::Excel(c) => go!(source::excel::source(c, &cfg.state_dir)?),
        SourceConfig::Postgres(c) => go!(source::postgres::source(c, &cfg.state_dir)?),
        SourceConfig::Mysql(c) => go!(source::mysql::source(c, &cfg.state_dir)?),
        SourceConfig::Http(c) => go!(HttpSource::new(c, &cfg.state_dir)?),
    }
}

/// `--check`: validates the config, connects to the broker and the source, and prints the
/// first `limit` rows as they would be published (or quarantined), as JSON lines, without
/// publishing or moving the source position.
pub async fn check(
    cfg: AdapterConfig,
    limit: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let Parts {
        mapper, connector, ..
    } = parts(&cfg)?;
    let conn = connector
        .connect_once()
        .await
        .with_context(|| "the broker check failed")?;
    let _ = conn.close(200, "check done".into()).await;
    writeln!(
        out,
        "{}",
        serde_json::json!({"check": "broker", "ok": true, "url": cfg.amqp.redacted_url()})
    )?;
    // A scratch copy of the state so that reading moves nothing.
    let scratch = tempfile_dir(&cfg.state_dir)?;
    async fn show<S: Source>(
        mut s: S,
        mapper: &Mapper,
        limit: usize,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<()> {
        for _ in 0..limit {
            let rec = match s.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => anyhow::bail!("the source check failed: {e}"),
            };
            let line = match (
                &rec.problem,
                mapper.map(&rec.row, rec.fallback_version, source::now_ms()),
            ) {
                (Some(p), _) => {
                    serde_json::json!({"position": rec.label, "quarantine": {"field": "", "reason": p}})
                }
                (None, Outcome::Record(m)) => serde_json::json!({
                    "position": rec.label, "op": m.op.as_str(), "version": m.version,
                    "record": mapper.record_type().value_to_json(&m.value)?,
                }),
                (None, Outcome::Invalid { field, reason, .. }) => {
                    serde_json::json!({"position": rec.label, "quarantine": {"field": field, "reason": reason}})
                }
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
    let result = match cfg.source.clone() {
        SourceConfig::Csv(c) => show(source::csv::source(c, &scratch)?, &mapper, limit, out).await,
        SourceConfig::Excel(c) => {
            show(source::excel::source(c, &scratch)?, &mapper, limit, out).await
        }
        SourceConfig::Postgres(c) => {
            show(source::postgres::source(c, &scratch)?, &mapper, limit, out).await
        }
        SourceConfig::Mysql(c) => {
            show(source::mysql::source(c, &scratch)?, &mapper, limit, out).await
        }
        SourceConfig::Http(c) => show(HttpSource::new(c, &scratch)?, &mapper, limit, out).await,
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A scratch copy of the state directory (so `--check` reads from the saved position).
fn tempfile_dir(state_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("govbus-adapter-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for e in entries.flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), dir.join(e.file_name()))?;
            }
        }
    }
    Ok(dir)
}
