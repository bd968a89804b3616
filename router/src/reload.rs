//! Catalogue reloads: when the file changes (checked every `router.watch_ms`) or on SIGHUP.
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
    catalogue::Catalogue,
    grants::{ProjectionCache, Routing},
    pipeline::{self, Shared},
    store, telemetry,
};

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads, checks and compiles a catalogue, registering its projections' writer schemas.
pub async fn load(
    path: &Path,
    cache: &ProjectionCache,
    pool: &sqlx::PgPool,
) -> anyhow::Result<Routing> {
    let catalogue = Catalogue::load(path)?;
    let routing = Routing::compile(catalogue, cache)?;
    store::register_schemas(pool, &cache.all()).await?;
    Ok(routing)
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
        match load(&path, &cache, &shared.pool).await {
            Ok(routing) => {
                // New agencies and departments get their queues before anything is routed to them.
                if let Ok(conn) = connector.connect_once().await {
                    if let Ok(ch) = conn.create_channel().await {
                        if let Err(e) = pipeline::declare(&ch, &routing).await {
                            tracing::warn!(error = %e, "cannot declare the new catalogue's queues; deliveries to new agencies are kept until they exist");
                        }
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
            }
            Err(e) => telemetry::catalogue(false, &format!("{e:#}")),
        }
    }
}
