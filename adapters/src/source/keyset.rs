//! What the database sources (PostgreSQL, MySQL/MariaDB) share: a query polled incrementally
//! by keyset. Rows come in `(cursor, id)` order, where the cursor is a monotone column (a
//! modification time or a sequence) and the id breaks ties. The position of the last
//! confirmed row is kept durably in the state directory; the next poll continues after the
//! last row *read*, and a restart after the last row *confirmed*.
use std::{collections::VecDeque, future::Future, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use super::record::{now_ms, Row, Source, SourceError, SourceRecord};
use crate::{checkpoint::StateFile, times::parse_time_ms};

/// `[source]` with `kind = "postgres"` or `kind = "mysql"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// URL of the department's database; a read-only account is enough.
    pub url: String,
    /// A SELECT returning the rows. The adapter wraps it as
    /// `SELECT … FROM (<query>) AS src WHERE (cursor, id) > (…) ORDER BY cursor, id LIMIT batch_size`.
    pub query: String,
    /// Monotone column of the query: a modification time or a sequence.
    pub cursor_column: String,
    /// SQL type of the cursor column (the database kind's own list: see its `TYPES`).
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

impl QueryConfig {
    /// Checks the column names, types and batch size; `types` are the database's choices.
    pub fn check(&self, types: &[&str]) -> anyhow::Result<()> {
        plain_name(&self.cursor_column, "cursor_column")?;
        plain_name(&self.id_column, "id_column")?;
        for (t, what) in [
            (&self.cursor_type, "cursor_type"),
            (&self.id_type, "id_type"),
        ] {
            if !types.contains(&t.as_str()) {
                anyhow::bail!("source.{what} `{t}` is not one of {}", types.join(", "));
            }
        }
        if self.batch_size < 1 {
            anyhow::bail!("source.batch_size must be at least 1");
        }
        Ok(())
    }

    /// The query without a trailing `;`, to wrap as a subquery.
    pub fn inner_query(&self) -> &str {
        self.query.trim().trim_end_matches(';')
    }
}

/// A column name safe to quote into SQL: letters, digits and `_`.
fn plain_name(name: &str, what: &str) -> anyhow::Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        anyhow::bail!("source.{what} `{name}` must be a plain column name (letters, digits, _)");
    }
    Ok(())
}

/// The last confirmed row's keyset position (as text: both databases cast it back).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Keyset {
    pub cursor: Option<String>,
    pub id: Option<String>,
}

/// One row as the database gives it: the row as a JSON object's text, its cursor and id.
pub struct KeysetRow {
    pub row: String,
    pub cursor: Option<String>,
    pub id: Option<String>,
}

impl KeysetRow {
    /// The rows of a keyset query (columns `row`, `c`, `i`), database errors classified by
    /// `classify`.
    pub fn all<R>(
        rows: &[R],
        classify: fn(sqlx::Error) -> SourceError,
    ) -> Result<Vec<KeysetRow>, SourceError>
    where
        R: sqlx::Row,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'static str: sqlx::ColumnIndex<R>,
    {
        rows.iter()
            .map(|r| {
                Ok(KeysetRow {
                    row: r.try_get("row").map_err(classify)?,
                    cursor: r.try_get("c").map_err(classify)?,
                    id: r.try_get("i").map_err(classify)?,
                })
            })
            .collect()
    }
}

/// A database that answers "the next `limit` rows after this keyset".
pub trait Database: Send {
    /// For messages and the state file: `PostgreSQL`, `MySQL`.
    const WHAT: &'static str;
    const STATE_FILE: &'static str;
    fn rows_after(
        &mut self,
        after: &Keyset,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<KeysetRow>, SourceError>> + Send;
}

/// A database source: the keyset, the state file and the rows read ahead.
pub struct KeysetSource<D: Database> {
    cfg: QueryConfig,
    db: D,
    state: StateFile,
    read_after: Keyset,
    buffer: VecDeque<SourceRecord>,
}

impl<D: Database> KeysetSource<D> {
    /// Resumes after the position saved in `state_dir`.
    pub fn new(cfg: QueryConfig, db: D, state_dir: &Path) -> anyhow::Result<Self> {
        let state = StateFile::new(state_dir, D::STATE_FILE)?;
        let read_after: Keyset = state.load()?.unwrap_or_default();
        Ok(KeysetSource {
            cfg,
            db,
            state,
            read_after,
            buffer: VecDeque::new(),
        })
    }

    async fn fetch(&mut self) -> Result<(), SourceError> {
        let rows = self
            .db
            .rows_after(&self.read_after, self.cfg.batch_size)
            .await?;
        for KeysetRow { row, cursor, id } in rows {
            let row: Map<String, Json> = serde_json::from_str(&row)
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
                row: Row::from_map(row),
                fallback_version,
                problem: None,
                cells: None,
            });
        }
        Ok(())
    }
}

impl<D: Database> Source for KeysetSource<D> {
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
            .map_err(|e| SourceError::Fatal(format!("cannot save the {} position: {e}", D::WHAT)))
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }
}
