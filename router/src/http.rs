//! The router's listeners. `http.listen`, plain HTTP, for what is public or verified by
//! signature and fingerprint: `/metrics`, `/healthz`, `/readyz` (503 while the broker is
//! unreachable or while draining), `GET /keys` (the platform's public keys) and
//! `GET /schemas/{fingerprint}` (every writer schema the router used, and the full record
//! schemas). `api.listen`, over TLS: the status page (`/`, `/status`) and the workflow's
//! `/api` (`workflow::api`), where API tokens travel.
use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use bus_schemas::{Fingerprint, Registry};
use serde_json::json;

use crate::{
    config::ApiConfig,
    ops::status::{self, QueueProbe},
    pipeline::shared::Shared,
    workflow::workdays::Calendar,
};

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.health.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: broker unreachable or draining\n",
        )
            .into_response()
    }
}

async fn keys(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "keys": s.platform.published_keys,
        "signed_bytes": "message_id LF item LF version LF op LF grant LF grant revision LF body",
        "batch": "leaf = SHA-256(00 ‖ govbus-salt ‖ signed bytes); RFC 9162 Merkle tree; Ed25519 over `govbus-batch-v1 LF key id LF audience (your agency id) LF tree size LF hex root`; headers govbus-salt, govbus-batch (index/size), govbus-proof (path), govbus-signature",
        "endorsement": "the previous key signs message_id `govbus-key-endorsement`, item = the new key id, version 0, op upsert, body = the new 32-byte public key",
    }))
}

async fn schema(State(s): State<Arc<Shared>>, Path(fp): Path<String>) -> Response {
    let fp = fp.to_ascii_lowercase();
    let Some(parsed) = Fingerprint::from_hex(&fp) else {
        return (
            StatusCode::BAD_REQUEST,
            "a fingerprint is 16 hex characters (the 8 bytes after C3 01, in wire order)\n",
        )
            .into_response();
    };
    match crate::store::schema_text(&s.pool, &fp).await {
        Ok(Some(text)) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Ok(None) => match Registry::standard().by_fingerprint(&parsed) {
            Some(rt) => (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_string_pretty(&rt.json).expect("JSON serialises"),
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                format!("no schema with fingerprint {fp}\n"),
            )
                .into_response(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read schemas");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the schema store is unreachable; retry\n",
            )
                .into_response()
        }
    }
}

async fn status_json(cache: Arc<status::Cached>) -> Response {
    match cache.get().await {
        Ok(st) => Json(&*st).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn status_page(cache: Arc<status::Cached>) -> Response {
    match cache.get().await {
        Ok(st) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            status::html(&st),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: anyhow::Error) -> Response {
    tracing::warn!(error = %e, "cannot compute the status");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the router's database is unreachable; retry\n",
    )
        .into_response()
}

/// Binds the public listener (`http.listen`: `/metrics`, `/healthz`, `/readyz`, `/keys`,
/// `/schemas`, all public or verified by signature and fingerprint) and serves until `stop`;
/// returns the bound address.
pub async fn serve(
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for /metrics, /keys and /schemas: {e}; set http.listen"
        )
    })?;
    let bound = listener.local_addr()?;
    let metrics = crate::telemetry::prometheus();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/keys", get(keys))
        .route("/schemas/{fingerprint}", get(schema))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(bound)
}

/// Binds the `[api]` listener (the status page and the workflow's `/api`, `workflow`), over
/// TLS unless `api.plain_http`, and serves until `stop`; returns the bound address. `probe`
/// asks the broker for the status page's queue depths.
pub async fn serve_api(
    cfg: &ApiConfig,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    probe: QueueProbe,
    calendar: Option<Arc<Calendar>>,
    workflow: Router,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let tls = cfg.tls()?;
    let cache = Arc::new(status::Cached::new(shared, probe, calendar));
    let app = Router::new()
        .route("/", {
            let c = cache.clone();
            get(move || status_page(c.clone()))
        })
        .route("/status", get(move || status_json(cache.clone())))
        .merge(workflow);
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for the status page and /api: {e}; set api.listen")
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    {
        let h = handle.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        });
    }
    match tls {
        Some((cert, key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "api.tls_cert_file {} / api.tls_key_file {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    tracing::error!(error = %e, "the status page and API listener failed");
                }
            });
        }
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    tracing::error!(error = %e, "the status page and API listener failed");
                }
            });
        }
    }
    Ok(bound)
}
