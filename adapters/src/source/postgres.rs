//! A PostgreSQL query polled incrementally by keyset (see `keyset.rs`). Each row comes back
//! as `to_jsonb`, so any query's columns become the row's.
use std::{path::Path, time::Duration};

use sqlx::{postgres::PgPoolOptions, PgPool};

use super::{
    keyset::{Database, Keyset, KeysetRow, KeysetSource, QueryConfig},
    record::SourceError,
};

/// `[source]` with `kind = "postgres"`.
pub type PostgresConfig = QueryConfig;

/// The PostgreSQL source.
pub type PostgresSource = KeysetSource<Postgres>;

/// Cursor and id types PostgreSQL can cast the saved position back to.
pub const TYPES: &[&str] = &[
    "bigint",
    "integer",
    "numeric",
    "timestamptz",
    "timestamp",
    "date",
    "text",
];

/// The department's PostgreSQL and the prepared keyset query.
pub struct Postgres {
    pool: PgPool,
    sql: String,
}

/// Checks the settings and prepares the query; connects lazily.
pub fn source(cfg: PostgresConfig, state_dir: &Path) -> anyhow::Result<PostgresSource> {
    cfg.check(TYPES)?;
    let (c, i) = (&cfg.cursor_column, &cfg.id_column);
    let sql = format!(
        "SELECT to_jsonb(src)::text AS row, src.\"{c}\"::text AS c, src.\"{i}\"::text AS i \
         FROM ({q}) AS src \
         WHERE $1::text IS NULL OR (src.\"{c}\", src.\"{i}\") > ($1::text::{ct}, $2::text::{it}) \
         ORDER BY src.\"{c}\", src.\"{i}\" LIMIT $3",
        q = cfg.inner_query(),
        ct = cfg.cursor_type,
        it = cfg.id_type,
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(&cfg.url)
        .map_err(|e| anyhow::anyhow!("source.url is not a PostgreSQL URL: {e}"))?;
    KeysetSource::new(cfg, Postgres { pool, sql }, state_dir)
}

impl Database for Postgres {
    const WHAT: &'static str = "PostgreSQL";
    const STATE_FILE: &'static str = "postgres-position.json";

    async fn rows_after(
        &mut self,
        after: &Keyset,
        limit: i64,
    ) -> Result<Vec<KeysetRow>, SourceError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.sql.clone()))
            .bind(after.cursor.clone())
            .bind(after.id.clone())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        KeysetRow::all(&rows, classify)
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
