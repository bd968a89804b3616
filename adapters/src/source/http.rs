//! A JSON HTTP API polled page by page with reqwest: cursor or numbered-page pagination,
//! bearer token or basic auth, timeouts, retries with backoff on 5xx and connection errors,
//! and a clear stop on 4xx. The position is the page (its cursor or number) and the index
//! within it; after the last page the adapter polls that page again for new rows.
use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use super::record::{now_ms, Row, Source, SourceError, SourceRecord};
use crate::checkpoint::StateFile;

/// `[source]` with `kind = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The list endpoint.
    pub url: String,
    /// JSON pointer to the array of rows in a response (`/data/items`); empty for a bare array.
    #[serde(default)]
    pub items_pointer: String,
    /// `cursor` (each response names the next cursor) or `page` (numbered pages).
    #[serde(default = "default_pagination")]
    pub pagination: String,
    /// Query parameter that carries the cursor or the page number.
    #[serde(default)]
    pub page_param: Option<String>,
    /// JSON pointer to the next cursor in a response (cursor pagination); null or missing means last page.
    #[serde(default = "default_next_cursor_pointer")]
    pub next_cursor_pointer: String,
    /// First page number (page pagination).
    #[serde(default = "default_first_page")]
    pub first_page: u64,
    /// Query parameter for the page size, and the size asked for.
    #[serde(default = "default_size_param")]
    pub page_size_param: String,
    /// Rows per page asked for.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// File holding a bearer token (read at start, never logged).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// User for HTTP basic auth.
    #[serde(default)]
    pub basic_user: Option<String>,
    /// File holding the basic auth password.
    #[serde(default)]
    pub basic_password_file: Option<PathBuf>,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per page on 5xx, timeouts and connection errors, with exponential backoff.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// How often to poll when caught up, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_pagination() -> String {
    "cursor".into()
}
fn default_next_cursor_pointer() -> String {
    "/next_cursor".into()
}
fn default_first_page() -> u64 {
    1
}
fn default_size_param() -> String {
    "limit".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retries() -> usize {
    5
}
fn default_poll_ms() -> u64 {
    5000
}

impl HttpSourceConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.bearer_token_file, &mut self.basic_password_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// A page: its cursor (or number, as text); `None` is the first page of cursor pagination.
type PageKey = Option<String>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HttpState {
    /// The page of the last confirmed row and how many of its rows are confirmed.
    page: PageKey,
    index: usize,
    /// Version bases of pages read and not yet passed (see `SourceRecord::fallback_version`).
    bases: BTreeMap<String, i64>,
    version_floor: i64,
}

/// The rows of a page: the array at `items_pointer` (the whole body when empty).
fn page_items<'a>(body: &'a Json, items_pointer: &str) -> Result<&'a Vec<Json>, String> {
    let items = if items_pointer.is_empty() {
        Some(body)
    } else {
        body.pointer(items_pointer)
    };
    items.and_then(Json::as_array).ok_or_else(|| {
        format!("the response has no array at source.items_pointer `{items_pointer}`")
    })
}

/// One row of a page: its columns, and why it cannot be read where it cannot.
pub type PageRow = (Map<String, Json>, Option<String>);

/// One row of a page: its columns, or why it cannot be read.
fn page_row(item: &Json) -> PageRow {
    match item {
        Json::Object(o) => (o.clone(), None),
        _ => (Map::new(), Some("the row is not a JSON object".to_string())),
    }
}

/// Parses a response body as the source does: JSON, then each row of the array at
/// `items_pointer`. For the fuzz targets and tests.
pub fn parse_page(body: &[u8], items_pointer: &str) -> Result<Vec<PageRow>, String> {
    let body: Json = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    Ok(page_items(&body, items_pointer)?
        .iter()
        .map(page_row)
        .collect())
}

fn base_key(page: &PageKey) -> String {
    page.clone().unwrap_or_default()
}

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// The HTTP source.
pub struct HttpSource {
    cfg: HttpSourceConfig,
    client: reqwest::Client,
    auth: Auth,
    state_file: StateFile,
    state: HttpState,
    /// The page to read next and how many of its rows to skip.
    read_page: PageKey,
    read_skip: usize,
    buffer: VecDeque<SourceRecord>,
    /// Pages read, oldest first, for dropping version bases once passed.
    open_pages: VecDeque<PageKey>,
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read source.{what} {}: {e}", path.display()))?
        .trim()
        .to_string())
}

impl HttpSource {
    /// Checks the settings and reads the secrets.
    pub fn new(cfg: HttpSourceConfig, state_dir: &Path) -> anyhow::Result<Self> {
        if !["cursor", "page"].contains(&cfg.pagination.as_str()) {
            anyhow::bail!(
                "source.pagination `{}` must be `cursor` or `page`",
                cfg.pagination
            );
        }
        reqwest::Url::parse(&cfg.url)
            .map_err(|e| anyhow::anyhow!("source.url is not a URL: {e}"))?;
        let auth = match (
            &cfg.bearer_token_file,
            &cfg.basic_user,
            &cfg.basic_password_file,
        ) {
            (Some(t), None, None) => Auth::Bearer(read_secret(t, "bearer_token_file")?),
            (None, Some(u), Some(p)) => {
                Auth::Basic(u.clone(), read_secret(p, "basic_password_file")?)
            }
            (None, None, None) => Auth::None,
            _ => anyhow::bail!(
                "source: give bearer_token_file, or basic_user with basic_password_file, not a mix"
            ),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent("govbus-adapter")
            .build()?;
        let state_file = StateFile::new(state_dir, "http-position.json")?;
        let state: HttpState = state_file.load()?.unwrap_or_default();
        let (read_page, read_skip) = match &state.page {
            Some(p) => (Some(p.clone()), state.index),
            None if cfg.pagination == "page" => (Some(cfg.first_page.to_string()), state.index),
            None => (None, state.index),
        };
        Ok(HttpSource {
            cfg,
            client,
            auth,
            state_file,
            state,
            read_page,
            read_skip,
            buffer: VecDeque::new(),
            open_pages: VecDeque::new(),
        })
    }

    fn param(&self) -> String {
        self.cfg.page_param.clone().unwrap_or_else(|| {
            if self.cfg.pagination == "page" {
                "page".into()
            } else {
                "cursor".into()
            }
        })
    }

    async fn get(&self, page: &PageKey) -> Result<Json, SourceError> {
        let mut query: Vec<(String, String)> = vec![(
            self.cfg.page_size_param.clone(),
            self.cfg.page_size.to_string(),
        )];
        if let Some(p) = page {
            query.push((self.param(), p.clone()));
        }
        let attempt = || async {
            let mut req = self.client.get(&self.cfg.url).query(&query);
            req = match &self.auth {
                Auth::None => req,
                Auth::Bearer(t) => req.bearer_auth(t),
                Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| SourceError::Transient(format!("GET {}: {e}", self.cfg.url)))?;
            let status = resp.status();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(SourceError::Transient(format!(
                    "GET {} answered {status}",
                    self.cfg.url
                )));
            }
            if !status.is_success() {
                return Err(SourceError::Fatal(format!(
                    "GET {} answered {status}; check source.url and the credentials (4xx is not retried)",
                    self.cfg.url
                )));
            }
            resp.json::<Json>().await.map_err(|e| {
                SourceError::Fatal(format!("GET {} did not return JSON: {e}", self.cfg.url))
            })
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_jitter()
                    .with_max_times(self.cfg.retries),
            )
            .when(|e| matches!(e, SourceError::Transient(_)))
            .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "HTTP source retrying"))
            .await
    }

    async fn fetch(&mut self) -> Result<bool, SourceError> {
        let page = self.read_page.clone();
        let body = self.get(&page).await?;
        let items = page_items(&body, &self.cfg.items_pointer).map_err(SourceError::Fatal)?;
        let key = base_key(&page);
        let base = match self.state.bases.get(&key) {
            Some(&b) => b,
            None => {
                let b = now_ms().max(self.state.version_floor);
                self.state.bases.insert(key.clone(), b);
                self.state.version_floor = b + items.len() as i64 + 1;
                self.save()?;
                b
            }
        };
        if self.open_pages.back() != Some(&page) {
            self.open_pages.push_back(page.clone());
        }
        let count = items.len();
        for (i, item) in items.iter().enumerate().skip(self.read_skip) {
            let (row, problem) = page_row(item);
            self.buffer.push_back(SourceRecord {
                row: Row::from_map(row),
                position: json!({"page": page, "index": i + 1}),
                label: format!("page {} row {}", page.as_deref().unwrap_or("first"), i + 1),
                fallback_version: base + i as i64,
                problem,
                cells: None,
            });
        }
        let got_new = count > self.read_skip;
        let next: PageKey = if self.cfg.pagination == "page" {
            (count >= self.cfg.page_size as usize)
                .then(|| {
                    page.as_deref()
                        .and_then(|p| p.parse::<u64>().ok())
                        .map(|n| (n + 1).to_string())
                })
                .flatten()
        } else {
            body.pointer(&self.cfg.next_cursor_pointer)
                .and_then(|c| match c {
                    Json::String(s) if !s.is_empty() => Some(s.clone()),
                    Json::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        };
        match next {
            Some(n) => {
                self.read_page = Some(n);
                self.read_skip = 0;
            }
            None => self.read_skip = count, // last page: poll it again later for new rows
        }
        Ok(got_new || self.read_page != page)
    }

    fn save(&self) -> Result<(), SourceError> {
        self.state_file
            .save(&self.state)
            .map_err(|e| SourceError::Fatal(format!("cannot save the HTTP position: {e}")))
    }
}

impl Source for HttpSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>, SourceError> {
        // Follow pages until one yields rows or the last page has nothing new.
        while self.buffer.is_empty() {
            let before = self.read_page.clone();
            let progressed = self.fetch().await?;
            if self.buffer.is_empty() && (!progressed || self.read_page == before) {
                return Ok(None);
            }
        }
        Ok(self.buffer.pop_front())
    }

    async fn commit(&mut self, position: &Json) -> Result<(), SourceError> {
        let page: PageKey = position["page"].as_str().map(str::to_string);
        self.state.page = page.clone();
        self.state.index = position["index"].as_u64().unwrap_or(0) as usize;
        while self.open_pages.front().is_some_and(|p| *p != page) {
            let passed = self.open_pages.pop_front().expect("front exists");
            self.state.bases.remove(&base_key(&passed));
        }
        self.save()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }
}
