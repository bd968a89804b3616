//! A PostgreSQL query polled incrementally by keyset: rows come in `(cursor, id)` order, where
//! the cursor is a monotone column (a modification time or a sequence) and the id breaks ties.
//! The position of the last confirmed row is kept durably in the state directory; the next
//! poll continues after the last row *read*, and a restart after the last row *confirmed*.
use std::{collections::VecDeque, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use sqlx::{postgres::PgPoolOptions, PgPool, Row};

use super::record::{now_ms, Source, SourceError, SourceRecord};
use crate::{checkpoint::StateFile, times::parse_time_ms};

/// `[source]` with `kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// URL of the department's database; a read-only account is enough.
    pub url: String,
    /// A SELECT returning the rows. The adapter wraps it as
    /// `SELECT … FROM (<query>) AS src WHERE (cursor, id) > (…) ORDER BY cursor, id LIMIT batch_size`.
    pub query: String,
    /// Monotone column of the query: a modification time or a sequence.
    pub cursor_column: String,
    /// SQL type of the cursor column: bigint, integer, numeric, timestamptz, timestamp, date or text.
    pub cursor_type: String,
    /// Unique column that orders rows with the same cursor value.
    pub id_column: String,
    /// SQL type of the id column (same choices).
    pub id_type: String,
    /// Rows per query.
    #[serde(default = "default_batch")]
    pub batch_size: i64,
    /// How often to poll when caught up, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_batch() -> i64 {
    1000
}
fn default_poll_ms() -> u64 {
    2000
}

const TYPES: &[&str] = &[
    "bigint",
    "integer",
    "numeric",
    "timestamptz",
    "timestamp",
    "date",
    "text",
];

fn ident(name: &str, what: &str) -> anyhow::Result<String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        anyhow::bail!("source.{what} `{name}` must be a plain column name (letters, digits, _)");
    }
    Ok(format!("\"{name}\""))
}

/// The last confirmed row's keyset position.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Keyset {
    cursor: Option<String>,
    id: Option<String>,
}

/// The PostgreSQL source.
pub struct PostgresSource {
    cfg: PostgresConfig,
    pool: PgPool,
    sql: String,
    state: StateFile,
    read_after: Keyset,
    buffer: VecDeque<SourceRecord>,
}

impl PostgresSource {
    /// Checks the settings and prepares the query; connects lazily.
    pub fn new(cfg: PostgresConfig, state_dir: &Path) -> anyhow::Result<Self> {
        let c = ident(&cfg.cursor_column, "cursor_column")?;
        let i = ident(&cfg.id_column, "id_column")?;
        for (t, what) in [(&cfg.cursor_type, "cursor_type"), (&cfg.id_type, "id_type")] {
            if !TYPES.contains(&t.as_str()) {
                anyhow::bail!("source.{what} `{t}` is not one of {}", TYPES.join(", "));
            }
        }
        if cfg.batch_size < 1 {
            anyhow::bail!("source.batch_size must be at least 1");
        }
        let sql = format!(
            "SELECT to_jsonb(src)::text AS row, src.{c}::text AS c, src.{i}::text AS i \
             FROM ({q}) AS src \
             WHERE $1::text IS NULL OR (src.{c}, src.{i}) > ($1::text::{ct}, $2::text::{it}) \
             ORDER BY src.{c}, src.{i} LIMIT $3",
            q = cfg.query.trim().trim_end_matches(';'),
            ct = cfg.cursor_type,
            it = cfg.id_type,
        );
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&cfg.url)
            .map_err(|e| anyhow::anyhow!("source.url is not a PostgreSQL URL: {e}"))?;
        let state = StateFile::new(state_dir, "postgres-position.json")?;
        let read_after: Keyset = state.load()?.unwrap_or_default();
        Ok(PostgresSource {
            cfg,
            pool,
            sql,
            state,
            read_after,
            buffer: VecDeque::new(),
        })
    }

    async fn fetch(&mut self) -> Result<(), SourceError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.sql.clone()))
            .bind(self.read_after.cursor.clone())
            .bind(self.read_after.id.clone())
            .bind(self.cfg.batch_size)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        for r in rows {
            let row_text: String = r.try_get("row").map_err(classify)?;
            let cursor: Option<String> = r.try_get("c").map_err(classify)?;
            let id: Option<String> = r.try_get("i").map_err(classify)?;
            let row: Map<String, Json> = serde_json::from_str(&row_text)
                .map_err(|e| SourceError::Fatal(format!("row is not a JSON object: {e}")))?;
            let fallback_version = cursor
                .as_deref()
                .and_then(|c| parse_time_ms(&Json::String(c.to_string())))
                .unwrap_or_else(now_ms);
            self.read_after = Keyset {
                cursor: cursor.clone(),
                id: id.clone(),
            };
            self.buffer.push_back(SourceRecord {
                label: format!(
                    "{}={} {}={}",
                    self.cfg.cursor_column,
                    cursor.as_deref().unwrap_or("null"),
                    self.cfg.id_column,
                    id.as_deref().unwrap_or("null")
                ),
                position: json!({"cursor": cursor, "id": id}),
                row: super::record::Row::from_map(row),
                fallback_version,
                problem: None,
                cells: None,
            });
        }
        Ok(())
    }
}

/// Connection trouble is worth retrying; a wrong query needs a person.
fn classify(e: sqlx::Error) -> SourceError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") {
                SourceError::Transient(format!("PostgreSQL: {e}"))
            } else {
                SourceError::Fatal(format!("PostgreSQL refused the source query ({code}): {e}; fix source.query or the columns"))
            }
        }
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => SourceError::Fatal(format!("PostgreSQL: {e}")),
        _ => SourceError::Transient(format!("PostgreSQL unreachable: {e}")),
    }
}

impl Source for PostgresSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>, SourceError> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn commit(&mut self, position: &Json) -> Result<(), SourceError> {
        let k = Keyset {
            cursor: position["cursor"].as_str().map(str::to_string),
            id: position["id"].as_str().map(str::to_string),
        };
        self.state
            .save(&k)
            .map_err(|e| SourceError::Fatal(format!("cannot save the PostgreSQL position: {e}")))
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }
}
