//! # router: delivers each record only to granted agencies, only the granted fields
//!
//! `govbus-router --config FILE` consumes `govbus.router`, checks each record (schema,
//! department signature, responsible department), and for every grant in force projects it
//! to the granted fields, pseudonymises identities where the grant says so, signs it with the
//! platform key and publishes it to `agency.<id>`; each confirmed delivery goes into a
//! hash-chained ledger before the ingest message is acked. The crate also holds the `govbus`
//! command line.
//!
//! ## Layout
//! - `config.rs`: the TOML config with `GOVBUS__SECTION__KEY` overrides.
//! - `catalogue.rs`: the sharing catalogue file and its check. `grants.rs`: the catalogue
//!   compiled for routing (grants in force, regions).
//! - `route.rs`: the decision for one message, without I/O. `projection.rs`: granted fields
//!   only. `pseudonym.rs`: per-agency tokens.
//! - `pipeline.rs`: consume, publish with confirms, ledger, ack; reconnects. `retry.rs`:
//!   deliveries kept while an agency's queue was full. `reload.rs`: catalogue reloads.
//! - `ledger.rs`: the hash-chained ledger and its verification. `id_secret.rs`: versions of
//!   the platform id secret and their rotation. `store.rs`: schemas,
//!   kept deliveries, refusals, versions (migrations in `migrations/`).
//! - `provision.rs`: RabbitMQ accounts through the management API.
//! - `http.rs`: `/metrics`, `/healthz`, `/readyz`, `/keys`, `/schemas/{fingerprint}`.
//!   `telemetry.rs`: events and metrics.
//! - `workflow/`: applications, answers, escalation, mediation (articles 34–37), its API
//!   tokens and `/api` routes; `workdays.rs`: the working-day calendar for its deadlines.
//! - [`cli`]: the `govbus` command line (`src/bin/govbus.rs` only parses and dispatches).

pub mod agency;
pub mod backup;
pub mod catalogue;
pub mod checkpoint;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod http;
pub mod id_secret;
pub mod ledger;
pub mod pipeline;
pub mod platform_keys;
pub mod projection;
pub mod provision;
pub mod pseudonym;
pub mod quarantined;
pub mod reload;
pub mod replay;
pub mod report;
pub mod retry;
pub mod route;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod workdays;
pub mod workflow;

use std::sync::{Arc, Mutex, RwLock};

use bus_schemas::{amqp::Connector, health::Health, keys, wire::IdKey};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RouterConfig, grants::ProjectionCache, pipeline::Shared, pseudonym::Pseudonymizer,
    route::Platform,
};

/// The platform's keys and secrets from the `[platform]` section.
pub fn load_platform(cfg: &RouterConfig) -> anyhow::Result<Platform> {
    let signer = keys::load_signer_as(
        &cfg.platform.key_file,
        &cfg.platform.key_id,
        "platform.key_file",
    )?;
    Ok(Platform {
        published_keys: platform_keys::published(&cfg.platform, &signer)?,
        signer,
        ids: IdKey::new(&keys::load_secret_as(
            &cfg.platform.id_secret_file,
            "platform.id_secret_file",
        )?),
        pseudonyms: Pseudonymizer::versioned(
            &keys::load_secret_as(
                &cfg.platform.pseudonym_secret_file,
                "platform.pseudonym_secret_file",
            )?,
            cfg.platform.pseudonym_version,
        ),
    })
}

/// Runs the router until `stop` is cancelled, then drains: intake stops, in-flight batches
/// are confirmed, written and acked.
pub async fn run(cfg: RouterConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let platform = load_platform(&cfg)?;
    let pool = store::connect(&cfg.database.url, cfg.database.max_connections).await?;
    // Held while the router runs: `govbus id-secret rotate` cannot run beside it.
    let _id_secret_lock = id_secret::hold_shared(&cfg.database.url).await?;
    id_secret::check_in_force(&pool, cfg.platform.id_secret_version, &platform.ids).await?;
    let cache = Arc::new(ProjectionCache::default());
    let routing = reload::load(&cfg.catalogue, &cache, &pool).await?;
    let blocked = store::kept_counts(&pool).await?.into_keys().collect();
    let health = Arc::new(Health::default());
    let connector = Connector::new(cfg.amqp.clone(), "govbus-router");
    let shared = Arc::new(Shared {
        platform,
        routing: RwLock::new(Arc::new(routing)),
        pool,
        blocked: Mutex::new(blocked),
        health: health.clone(),
        tunables: cfg.router.clone(),
        probe: status::QueueProbe::new(Connector::new(cfg.amqp.clone(), "govbus-router-status")),
    });
    let calendar = match &cfg.workflow.calendar {
        Some(p) => Some(workdays::Calendar::load(p)?),
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
        calendar,
        tokens: workflow::token::TokenKey::derive(&keys::load_secret_as(
            &cfg.platform.id_secret_file,
            "platform.id_secret_file",
        )?),
    });
    let http_stop = CancellationToken::new();
    let addr = http::serve(
        cfg.http.listen,
        shared.clone(),
        workflow::api::routes(wf.clone()),
        http_stop.clone(),
    )
    .await?;
    tracing::info!(%addr, amqp = %cfg.amqp.redacted_url(), "router listening for /metrics, /keys, /schemas");
    let background = CancellationToken::new();
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
    let draining = {
        let h = health.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            s.cancelled().await;
            h.set_draining();
        })
    };
    let result = pipeline::run(shared, connector, stop).await;
    background.cancel();
    let _ = tokio::join!(retry, watch, upkeep, checkpoints, deadlines);
    draining.abort();
    http_stop.cancel();
    result
}
