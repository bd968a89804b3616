//! Catalogue reloads: when the file changes (checked every `router.watch_ms`), on SIGHUP, or
//! when the sharing workflow approves a grant (kept in PostgreSQL, merged with the file's).
//! A new catalogue is checked and compiled in full before it replaces the old one between
//! two batches, so no message is lost or routed twice; a bad file is refused (logged,
//! counted) and the old one stays in force.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bus_schemas::amqp::Connector;
use tokio_util::sync::CancellationToken;

use crate::{
    pipeline::{shared::Shared, topology},
    routing::{
        catalogue::{Catalogue, Grant},
        grants::{ProjectionCache, Routing},
    },
    store, telemetry,
};

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads, checks and compiles a catalogue with the grants approved through the workflow
/// (`stored`, as `store::grants::stored` reads them), registering its projections' writer schemas.
pub async fn load(
    path: &Path,
    stored: Vec<Grant>,
    cache: &ProjectionCache,
    pool: &sqlx::PgPool,
) -> anyhow::Result<Routing> {
    let mut catalogue = Catalogue::load(path)?;
    for p in catalogue.add_sources(store::grants::sources(pool).await?) {
        tracing::warn!(problem = %p, "what another platform granted through the workflow no longer fits the catalogue; it is not in force");
    }
    for p in catalogue.add_grants(stored) {
        tracing::warn!(problem = %p, "a grant approved through the workflow no longer fits the catalogue; it is not in force");
    }
    let routing = Routing::compile(catalogue, cache)?;
    store::register_schemas(pool, &cache.all()).await?;
    // The file as put in force, kept by content (the catalogue history a backup carries).
    if let Ok(text) = std::fs::read_to_string(path) {
        store::record_catalogue(pool, &text).await?;
    }
    Ok(routing)
}

/// [`load`] with the grants the workflow approved, as the store holds them now: what every
/// start and reload puts in force.
pub async fn load_in_force(
    path: &Path,
    cache: &ProjectionCache,
    pool: &sqlx::PgPool,
) -> anyhow::Result<Routing> {
    let stored = store::grants::stored(pool).await?;
    load(path, stored, cache, pool).await
}

/// Watches the catalogue file and SIGHUP until `stop`.
pub async fn watch(
    shared: Arc<Shared>,
    path: PathBuf,
    cache: Arc<ProjectionCache>,
    connector: Connector,
    stop: CancellationToken,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGHUP; reloading on file change only");
            return;
        }
    };
    let every = Duration::from_millis(shared.tunables.watch_ms.max(50));
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
            }
            _ = hup.recv() => { last = stamp(&path); }
            () = stop.cancelled() => return,
        }
        if let Err(e) = apply(&shared, &path, &cache, &connector).await {
            telemetry::catalogue(false, &format!("{e:#}"));
        }
    }
}

/// One reload at a time (the file watcher and workflow approvals both reload).
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Loads the catalogue file with the grants approved through the workflow (read under the
/// reload lock, so a reload never puts older grants in force after a newer one), declares new
/// agencies' queues, and puts the result in force. On error the old catalogue stays.
pub async fn apply(
    shared: &Arc<Shared>,
    path: &Path,
    cache: &ProjectionCache,
    connector: &Connector,
) -> anyhow::Result<()> {
    let _one = RELOADING.lock().await;
    let routing = load_in_force(path, cache, &shared.pool).await?;
    // New agencies and departments get their queues before anything is routed to them.
    if let Ok(conn) = connector.connect_once().await {
        if let Ok(ch) = conn.create_channel().await {
            if let Err(e) = topology::declare(&ch, &routing).await {
                tracing::warn!(error = %e, "cannot declare the new catalogue's queues; deliveries to new agencies are kept until they exist");
            }
            // The channel before the connection, or lapin logs an error for a clean close.
            let _ = ch.close(200, "declared".into()).await;
        }
        let _ = conn.close(200, "declared".into()).await;
    }
    let summary = format!(
        "{}: {} departments, {} agencies, {} items, {} grants",
        path.display(),
        routing.catalogue.file.departments.len(),
        routing.catalogue.file.agencies.len(),
        routing.catalogue.file.items.len(),
        routing.catalogue.file.grants.len()
    );
    *shared.routing.write().expect("routing lock") = Arc::new(routing);
    telemetry::catalogue(true, &summary);
    Ok(())
}
