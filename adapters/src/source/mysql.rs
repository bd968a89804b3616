//! A MySQL or MariaDB query polled incrementally by keyset (see `keyset.rs`), the same way as
//! the PostgreSQL source. The query's columns are learnt once (by preparing it) and each row
//! comes back as `JSON_OBJECT` of them, so any query's columns become the row's. The session
//! runs in Asia/Shanghai (`+08:00`), so `TIMESTAMP` columns read as the department sees them.
use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions},
    Column, Executor, MySqlPool, Statement,
};

use super::{
    keyset::{Database, Keyset, KeysetRow, KeysetSource, QueryConfig},
    record::SourceError,
};

/// `[source]` with `kind = "mysql"`.
pub type MysqlConfig = QueryConfig;

/// The MySQL/MariaDB source.
pub type MysqlSource = KeysetSource<Mysql>;

/// Cursor and id types the saved position is cast back to, with their MySQL `CAST` target.
const CASTS: &[(&str, &str)] = &[
    ("bigint", "SIGNED"),
    ("integer", "SIGNED"),
    ("unsigned", "UNSIGNED"),
    ("decimal", "DECIMAL(65,30)"),
    ("datetime", "DATETIME(6)"),
    ("timestamp", "DATETIME(6)"),
    ("date", "DATE"),
    ("text", "CHAR"),
];

/// The department's database, the query and (once learnt) the keyset query around it.
pub struct Mysql {
    pool: MySqlPool,
    cfg: QueryConfig,
    sql: Option<String>,
}

/// Checks the settings; connects lazily.
pub fn source(cfg: MysqlConfig, state_dir: &Path) -> anyhow::Result<MysqlSource> {
    let types: Vec<&str> = CASTS.iter().map(|(t, _)| *t).collect();
    cfg.check(&types)?;
    let options = MySqlConnectOptions::from_str(&cfg.url)
        .map_err(|e| {
            anyhow::anyhow!(
                "source.url is not a MySQL URL (mysql://user:password@host:3306/database): {e}"
            )
        })?
        .timezone(Some("+08:00".to_string()));
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let db = Mysql {
        pool,
        cfg: cfg.clone(),
        sql: None,
    };
    KeysetSource::new(cfg, db, state_dir)
}

fn cast(t: &str) -> &'static str {
    CASTS
        .iter()
        .find(|(n, _)| *n == t)
        .map(|(_, c)| *c)
        .expect("checked in source()")
}

/// `name` as a MySQL identifier.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `name` as a MySQL string literal.
fn literal(name: &str) -> String {
    format!("'{}'", name.replace('\\', "\\\\").replace('\'', "''"))
}

impl Mysql {
    /// The keyset query, built from the query's columns (prepared once, not run).
    async fn sql(&mut self) -> Result<String, SourceError> {
        if let Some(s) = &self.sql {
            return Ok(s.clone());
        }
        let q = self.cfg.inner_query();
        let probe = format!("SELECT * FROM ({q}) AS src LIMIT 0");
        let statement = (&self.pool)
            .prepare(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(probe)))
            .await
            .map_err(classify)?;
        let columns: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        for (what, c) in [
            ("cursor_column", &self.cfg.cursor_column),
            ("id_column", &self.cfg.id_column),
        ] {
            if !columns.contains(c) {
                return Err(SourceError::Fatal(format!(
                    "source.{what} `{c}` is not a column of source.query (its columns: {})",
                    columns.join(", ")
                )));
            }
        }
        let object = columns
            .iter()
            .map(|c| format!("{}, src.{}", literal(c), quoted(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let (c, i) = (quoted(&self.cfg.cursor_column), quoted(&self.cfg.id_column));
        let (ct, it) = (cast(&self.cfg.cursor_type), cast(&self.cfg.id_type));
        let sql = format!(
            "SELECT JSON_OBJECT({object}) AS `row`, CAST(src.{c} AS CHAR) AS c, CAST(src.{i} AS CHAR) AS i \
             FROM ({q}) AS src \
             WHERE ? IS NULL OR src.{c} > CAST(? AS {ct}) OR (src.{c} = CAST(? AS {ct}) AND src.{i} > CAST(? AS {it})) \
             ORDER BY src.{c}, src.{i} LIMIT ?"
        );
        self.sql = Some(sql.clone());
        Ok(sql)
    }
}

impl Database for Mysql {
    const WHAT: &'static str = "MySQL";
    const STATE_FILE: &'static str = "mysql-position.json";

    async fn rows_after(
        &mut self,
        after: &Keyset,
        limit: i64,
    ) -> Result<Vec<KeysetRow>, SourceError> {
        let sql = self.sql().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.cursor.clone())
            .bind(after.cursor.clone())
            .bind(after.cursor.clone())
            .bind(after.id.clone())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        KeysetRow::all(&rows, classify)
    }
}

/// Server errors worth retrying: too many connections (1040), lock wait timeout (1205),
/// deadlock (1213), server shutting down (1053), connection killed (1927), network (1158–1161).
const TRANSIENT: &[u16] = &[1040, 1053, 1158, 1159, 1160, 1161, 1205, 1213, 1927];

/// Connection trouble is worth retrying; a wrong query needs a person.
fn classify(e: sqlx::Error) -> SourceError {
    match &e {
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|m| m.number())
                .unwrap_or_default();
            let state = db.code().map(|c| c.to_string()).unwrap_or_default();
            if TRANSIENT.contains(&number) || state.starts_with("08") {
                SourceError::Transient(format!("MySQL: {e}"))
            } else {
                SourceError::Fatal(format!(
                    "MySQL refused the source query (error {number}, {state}): {e}; fix source.query or the columns"
                ))
            }
        }
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => SourceError::Fatal(format!("MySQL: {e}")),
        _ => SourceError::Transient(format!("MySQL unreachable: {e}")),
    }
}
