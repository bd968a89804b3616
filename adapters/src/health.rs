//! `/metrics`, `/healthz` and `/readyz` (503 while the broker is unreachable or while draining).
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::PrometheusHandle;

/// What readiness depends on.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Connected to the broker (or not).
    pub fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }
    /// Stopping: take no more work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
    /// Ready for work.
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

/// The router of the listener.
pub fn router(health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: broker unreachable or draining\n",
                    )
                }
            }),
        )
        .with_state(health)
}

/// Binds the listener and serves until `stop`; returns the bound address.
pub async fn serve(
    addr: std::net::SocketAddr,
    health: Arc<Health>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for /metrics and health: {e}; set http.listen")
    })?;
    let bound = listener.local_addr()?;
    let app = router(health, crate::telemetry::prometheus());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(bound)
}
