//! A small tax registration API for the HTTP source's tests: bearer token, cursor pages,
//! and 503s on demand.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use super::{credit_code, Env};

pub const TOKEN: &str = "s3cret-token";

#[derive(Default)]
pub struct Api {
    pub rows: Vec<Value>,
    /// Cursors that answer 503 once.
    pub fail_once: HashSet<String>,
    pub requests: usize,
}

pub type Shared = Arc<Mutex<Api>>;

async fn list(
    State(api): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let mut api = api.lock().unwrap();
    api.requests += 1;
    let cursor = q.get("cursor").cloned().unwrap_or_else(|| "0".into());
    if api.fail_once.remove(&cursor) {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let start: usize = cursor.parse().unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let end = (start + limit).min(api.rows.len());
    let items = api.rows[start.min(end)..end].to_vec();
    let next = (end < api.rows.len()).then(|| end.to_string());
    Json(json!({"data": {"items": items}, "next_cursor": next})).into_response()
}

pub async fn serve(api: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api/tax-registrations", get(list))
        .with_state(api);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/tax-registrations")
}

pub fn rows(from: u64, n: u64, invalid_every: u64) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut valid = Vec::new();
    for i in from..from + n {
        let mut code = credit_code(i);
        if invalid_every > 0 && i % invalid_every == invalid_every - 1 {
            code.pop();
            code.push('I'); // not in the GB 32100 alphabet
        }
        let taxpayer = format!("4401{i:014}");
        if !code.ends_with('I') {
            valid.push(taxpayer.clone());
        }
        out.push(json!({"nsrsbh": taxpayer, "tyshxydm": code, "zcdz": "广州市天河区", "djrq": "2016/5/17", "djjg": "广州市地方税务局", "xgsj": 1000 + i}));
    }
    (out, valid)
}

/// Serves `api` on loopback and writes its bearer token to `keys/api-token` of `env`;
/// returns the shared state (to inspect or change) and the list URL.
pub async fn start(env: &Env, api: Api) -> (Shared, String) {
    let shared: Shared = Arc::new(Mutex::new(api));
    let url = serve(shared.clone()).await;
    std::fs::write(env.path("keys/api-token"), format!("{TOKEN}\n")).unwrap();
    (shared, url)
}

/// The tax example's config against `url`, with the token file of `env` and a short poll.
pub fn tax_config(env: &Env, url: &str) -> adapters::config::AdapterConfig {
    let mut cfg = env.config("tax-registration");
    if let adapters::source::SourceConfig::Http(h) = &mut cfg.source {
        h.url = url.to_string();
        h.bearer_token_file = Some(env.path("keys/api-token"));
        h.poll_interval_ms = 100;
    }
    cfg
}

/// [`start`] with `n` valid rows; also returns their taxpayer ids.
pub async fn start_with_rows(env: &Env, n: u64) -> (Shared, String, Vec<String>) {
    let (data, valid) = rows(0, n, 0);
    let (api, url) = start(
        env,
        Api {
            rows: data,
            ..Default::default()
        },
    )
    .await;
    (api, url, valid)
}
