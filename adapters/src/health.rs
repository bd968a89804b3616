//! `/metrics`, `/healthz` and `/readyz` (503 while the broker is unreachable or while draining).
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::PrometheusHandle;

pub use bus_schemas::health::Health;

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
