//! # router: delivers each record only to granted agencies, only the granted fields
//!
//! `govbus-router --config FILE` consumes `govbus.router`, checks each record (schema,
//! department signature, responsible department), and for every grant in force projects it
//! to the granted fields, pseudonymises identities where the grant says so, signs it with the
//! platform key and publishes it to `agency.<id>`; each confirmed delivery goes into a
//! hash-chained ledger before the ingest message is acked. Beside the hot path: the sharing
//! workflow and the operator tasks, which the `govbus` command (crate `cli`) also calls.
//!
//! ## Layout
//! - `routing/`: the decision, without I/O: `catalogue.rs` (the file and its check),
//!   `grants.rs` (compiled: grants in force, regions), `route.rs` (one message: verify, check,
//!   plan each delivery), `projection.rs`, `pseudonym.rs`, `platform.rs` (keys, `GET /keys`).
//! - `pipeline/`: the hot path: `run.rs` (consume, decide, publish with confirms, ledger, ack;
//!   reconnects), `retry.rs` (kept deliveries), `reload.rs` (catalogue reloads),
//!   `quarantined.rs` (quarantine counts), `shared.rs`, `topology.rs`.
//! - `store/`: PostgreSQL (migrations in `migrations/`): `ledger.rs`, `versions.rs`, `kept.rs`,
//!   `refusals.rs`, `counters.rs` (written with the ledger rows), `schemas.rs`, `grants.rs`
//!   (grants the workflow approved), `id_secret.rs`.
//! - `workflow/`: applications, answers, escalation, mediation, disputes (articles 34–37, 44),
//!   API tokens, `/api` routes, the working-day calendar (`workdays.rs`).
//! - `ops/`: operator tasks: `provision.rs`, `replay.rs`, `backup.rs`, `report.rs`,
//!   `status.rs` (status page and upkeep), `checkpoint.rs` (ledger checkpoints),
//!   `id_secret.rs` (rotation).
//! - `http.rs`: `/metrics`, `/healthz`, `/readyz`, `/keys`, `/schemas/{fingerprint}`, the status
//!   page and the workflow's `/api`. `telemetry.rs`: events and metrics. `config.rs`: the TOML
//!   config with `GOVBUS__SECTION__KEY` overrides.
//!
//! The hot path (`routing/`, `pipeline/`, `store/`) imports nothing of `workflow/`, `ops/` or
//! `http.rs`; no module imports one that imports it back (`scripts/check-layout`).

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ops;
pub mod pipeline;
pub mod routing;
pub mod store;
pub mod telemetry;
pub mod workflow;

use std::sync::{Arc, Mutex, RwLock};

use bus_schemas::{amqp::Connector, health::Health, keys};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RouterConfig,
    ops::{checkpoint, status},
    pipeline::{reload, retry, shared::Shared},
    routing::{grants::ProjectionCache, platform::Platform},
    store::id_secret,
};

/// Runs the router until `stop` is cancelled, then drains: intake stops, in-flight batches
/// are confirmed, written and acked.
pub async fn run(cfg: RouterConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let platform = Platform::load(&cfg)?;
    let (pool, primary) =
        store::connect_primary(&cfg.database.url, cfg.database.max_connections).await?;
    // Held while the router runs: `govbus id-secret rotate` cannot run beside it.
    let id_secret_lock = id_secret::hold_shared(&pool).await?;
    id_secret::check_in_force(&pool, cfg.platform.id_secret_version, &platform.ids).await?;
    let cache = Arc::new(ProjectionCache::default());
    let routing = reload::load_in_force(&cfg.catalogue, &cache, &pool).await?;
    let blocked = store::kept_counts(&pool).await?.into_keys().collect();
    let health = Arc::new(Health::default());
    let connector = Connector::new(cfg.amqp.clone(), "govbus-router");
    cfg.router.partition_plan()?;
    ops::partitions::check_or_bind(&pool, &connector, cfg.router.partitions).await?;
    let shared = Arc::new(Shared {
        platform,
        routing: RwLock::new(Arc::new(routing)),
        pool,
        blocked: Mutex::new(blocked),
        health: health.clone(),
        tunables: cfg.router.clone(),
        links: Mutex::new(Default::default()),
    });
    let calendar = match &cfg.workflow.calendar {
        Some(p) => Some(Arc::new(workflow::workdays::Calendar::load(p)?)),
        None => {
            tracing::warn!(
                "workflow.calendar is not set: the sharing workflow API answers 503 until it is"
            );
            None
        }
    };
    let wf = Arc::new(workflow::Workflow {
        shared: shared.clone(),
        cfg: Arc::new(cfg.clone()),
        cache: cache.clone(),
        connector: connector.clone(),
        calendar: calendar.clone(),
        tokens: workflow::token::TokenKey::derive(&keys::load_secret_as(
            &cfg.platform.id_secret_file,
            "platform.id_secret_file",
        )?),
        platforms: workflow::platforms::client(&cfg.workflow)?,
        subject_log: ops::subject_log::SubjectLog::load(&cfg)?,
    });
    let http_stop = CancellationToken::new();
    let addr = http::serve(cfg.http.listen, shared.clone(), http_stop.clone()).await?;
    tracing::info!(%addr, amqp = %cfg.amqp.redacted_url(), "router listening for /metrics, /keys, /schemas");
    match cfg.api.listen {
        Some(api_addr) => {
            let addr = http::serve_api(
                &cfg.api,
                api_addr,
                shared.clone(),
                status::QueueProbe::new(Connector::new(cfg.amqp.clone(), "govbus-router-status")),
                calendar,
                workflow::api::routes(wf.clone()),
                http_stop.clone(),
            )
            .await?;
            tracing::info!(%addr, tls = !cfg.api.plain_http, "status page and workflow API listening");
        }
        None => tracing::warn!(
            "api.listen is not set: no status page and no sharing workflow API are served"
        ),
    }
    let background = CancellationToken::new();
    let database = tokio::spawn(store::primary::follow(
        shared.pool.clone(),
        cfg.database.url.clone(),
        primary,
        Some(id_secret_lock),
        background.clone(),
    ));
    let retry = tokio::spawn(retry::run(
        shared.clone(),
        connector.clone(),
        background.clone(),
    ));
    let watch = tokio::spawn(reload::watch(
        shared.clone(),
        cfg.catalogue.clone(),
        cache,
        connector.clone(),
        background.clone(),
    ));
    let upkeep = tokio::spawn(status::housekeeping(
        shared.clone(),
        std::time::Duration::from_secs(cfg.router.verify_every_secs),
        background.clone(),
    ));
    let checkpoints = tokio::spawn(checkpoint::every(
        shared.clone(),
        connector.clone(),
        std::time::Duration::from_secs(cfg.router.checkpoint_every_secs.max(1)),
        background.clone(),
    ));
    let deadlines = tokio::spawn(workflow::deadlines(
        wf,
        std::time::Duration::from_secs(cfg.workflow.deadline_check_secs.max(1)),
        background.clone(),
    ));
    let purges = tokio::spawn(ops::purge::every(
        shared.clone(),
        cfg.retention.purge_grace_days,
        std::time::Duration::from_secs(cfg.retention.purge_check_secs.max(1)),
        background.clone(),
    ));
    let links = tokio::spawn(ops::links::watch(
        shared.clone(),
        ops::provision::Management::for_amqp(&cfg.amqp)
            .inspect_err(|e| tracing::warn!(error = %e, "no management API: links' shovel states are not watched"))
            .ok(),
        status::QueueProbe::new(Connector::new(cfg.amqp.clone(), "govbus-router-links")),
        std::time::Duration::from_millis(cfg.router.link_poll_ms.max(100)),
        background.clone(),
    ));
    let draining = {
        let h = health.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            s.cancelled().await;
            h.set_draining();
        })
    };
    let result = pipeline::run::run(shared, connector, stop).await;
    background.cancel();
    let _ = tokio::join!(
        retry,
        watch,
        upkeep,
        checkpoints,
        deadlines,
        database,
        links,
        purges
    );
    draining.abort();
    http_stop.cancel();
    result
}
