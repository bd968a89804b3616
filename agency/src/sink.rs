//! `govbus-agency sink`: lands an agency's records in its own PostgreSQL table, or POSTs them to its
//! webhook. Acks only after the row is committed or the webhook answered 2xx.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use bus_schemas::{wire::Op, FieldKind, Fingerprint};
use serde_json::{json, Value as Json};
// Table and column names in the SQL below are checked identifiers (`valid_table`) or quoted
// schema field names; values are always bound.
use sqlx::{AssertSqlSafe, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{
    consume::{Handler, Verdict},
    decode::Received,
};

/// Which table each item's records land in.
#[derive(Debug, Clone)]
pub enum Tables {
    /// Every item in one table (the key includes the item).
    All(String),
    /// One table per item; an item without one is dead-lettered.
    PerItem(HashMap<String, String>),
}

impl Tables {
    /// Parses `--table T` (once) or `--table ITEM=T` (repeated).
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(!args.is_empty(), "--table is needed with --postgres");
        let check = |t: &str| {
            anyhow::ensure!(
                valid_table(t) && t.rsplit('.').next().is_some_and(|n| n.len() <= 55),
                "--table {t:?} is not a plain lowercase SQL name (letters, digits, _; optionally \
                 schema.table; at most 55 characters)"
            );
            Ok(())
        };
        if let [one] = args {
            if !one.contains('=') {
                check(one)?;
                return Ok(Tables::All(one.clone()));
            }
        }
        let mut map = HashMap::new();
        for a in args {
            let Some((item, t)) = a.split_once('=') else {
                anyhow::bail!("--table {a:?}: with several --table, each is ITEM=TABLE");
            };
            check(t)?;
            map.insert(item.to_string(), t.to_string());
        }
        Ok(Tables::PerItem(map))
    }

    /// Every table records land in.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = match self {
            Tables::All(t) => vec![t.as_str()],
            Tables::PerItem(m) => m.values().map(String::as_str).collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    fn of(&self, item: &str) -> Option<&str> {
        match self {
            Tables::All(t) => Some(t),
            Tables::PerItem(m) => m.get(item).map(String::as_str),
        }
    }
}

fn sql_type(kind: Option<FieldKind>) -> &'static str {
    match kind {
        Some(FieldKind::String) | Some(FieldKind::Bytes) => "text",
        Some(FieldKind::Integer) => "bigint",
        Some(FieldKind::Number) => "double precision",
        Some(FieldKind::Boolean) => "boolean",
        Some(FieldKind::Date) => "date",
        Some(FieldKind::Timestamp) => "timestamptz",
        _ => "jsonb",
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table that remembers deletes of `table`'s records.
pub fn tombstones(table: &str) -> String {
    format!("{table}_deleted")
}

/// Lands records in PostgreSQL: one row per record, newest version wins, a delete removes it.
pub struct PgSink {
    pool: PgPool,
    tables: Tables,
    created: HashSet<String>,
    /// Columns known per (table, writer schema), with their SQL types.
    columns: HashMap<(String, Fingerprint), Vec<(String, &'static str)>>,
    /// Rows written (upserts that changed a row, and deletes).
    pub written: u64,
}

impl PgSink {
    /// Connects (retrying while the database is unreachable is the caller's restart policy).
    pub async fn connect(url: &str, tables: Tables) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the agency database: {e}"))?;
        Ok(PgSink {
            pool,
            tables,
            created: HashSet::new(),
            columns: HashMap::new(),
            written: 0,
        })
    }

    /// Creates the record's table and its granted columns if missing.
    async fn ensure(&mut self, table: &str, r: &Received) -> Result<(), sqlx::Error> {
        if !self.created.contains(table) {
            let ts = tombstones(table);
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    govbus_item text NOT NULL,
                    govbus_key text NOT NULL,
                    govbus_version bigint NOT NULL,
                    govbus_message_id text NOT NULL,
                    govbus_received_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (govbus_item, govbus_key));
                 CREATE TABLE IF NOT EXISTS {ts} (
                    govbus_item text NOT NULL,
                    govbus_key text NOT NULL,
                    govbus_version bigint NOT NULL,
                    PRIMARY KEY (govbus_item, govbus_key));"
            )))
            .execute(&self.pool)
            .await?;
            self.created.insert(table.to_string());
        }
        let k = (table.to_string(), r.writer.fingerprint);
        if !self.columns.contains_key(&k) {
            let cols: Vec<(String, &'static str)> = r
                .writer
                .field_names()
                .into_iter()
                .map(|f| (f.to_string(), sql_type(r.writer.field_kind(f))))
                .collect();
            let mut ddl = String::new();
            for (c, t) in &cols {
                ddl.push_str(&format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {t};",
                    quote(c)
                ));
            }
            sqlx::raw_sql(AssertSqlSafe(ddl))
                .execute(&self.pool)
                .await?;
            self.columns.insert(k, cols);
        }
        Ok(())
    }

    async fn write(&mut self, groups: &[Group<'_>]) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for g in groups {
            let ts = tombstones(g.table);
            let rows: Vec<Json> = g
                .records
                .iter()
                .map(|r| {
                    json!({"item": r.item, "key": r.key, "version": r.version,
                           "message_id": r.message_id, "record": r.record})
                })
                .collect();
            let rows = Json::Array(rows);
            let q = if g.delete {
                format!(
                    "WITH d AS (SELECT r->>'item' AS item, r->>'key' AS k, (r->>'version')::bigint AS v
                                FROM jsonb_array_elements($1::jsonb) r),
                          gone AS (DELETE FROM {t} USING d
                                   WHERE {t}.govbus_item = d.item AND {t}.govbus_key = d.k
                                     AND {t}.govbus_version <= d.v)
                     INSERT INTO {ts} (govbus_item, govbus_key, govbus_version)
                     SELECT item, k, v FROM d
                     ON CONFLICT (govbus_item, govbus_key) DO UPDATE
                       SET govbus_version = GREATEST({ts}.govbus_version, EXCLUDED.govbus_version)",
                    t = g.table
                )
            } else {
                let cols = &self.columns[&(g.table.to_string(), g.fingerprint)];
                let names: String = cols
                    .iter()
                    .map(|(c, _)| format!(", {}", quote(c)))
                    .collect();
                let values: String = cols
                    .iter()
                    .map(|(c, t)| {
                        let lit = c.replace('\'', "''");
                        if *t == "jsonb" {
                            format!(", NULLIF(r->'record'->'{lit}', 'null'::jsonb)")
                        } else {
                            format!(", (r->'record'->>'{lit}')::{t}")
                        }
                    })
                    .collect();
                let sets: String = cols
                    .iter()
                    .map(|(c, _)| format!(", {0} = EXCLUDED.{0}", quote(c)))
                    .collect();
                format!(
                    "INSERT INTO {t} (govbus_item, govbus_key, govbus_version, govbus_message_id{names})
                     SELECT r->>'item', r->>'key', (r->>'version')::bigint, r->>'message_id'{values}
                     FROM jsonb_array_elements($1::jsonb) r
                     WHERE NOT EXISTS (SELECT 1 FROM {ts} d
                                       WHERE d.govbus_item = r->>'item' AND d.govbus_key = r->>'key'
                                         AND d.govbus_version >= (r->>'version')::bigint)
                     ON CONFLICT (govbus_item, govbus_key) DO UPDATE
                       SET govbus_version = EXCLUDED.govbus_version,
                           govbus_message_id = EXCLUDED.govbus_message_id,
                           govbus_received_at = now(){sets}
                     WHERE {t}.govbus_version < EXCLUDED.govbus_version",
                    t = g.table
                )
            };
            n += sqlx::query(AssertSqlSafe(q))
                .bind(&rows)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// Records of one table, one writer schema and one op, written by one statement.
struct Group<'a> {
    table: &'a str,
    fingerprint: Fingerprint,
    delete: bool,
    records: Vec<&'a Received>,
}

/// How often a record the database refuses (not a connection problem) is tried on its own
/// before it is dead-lettered with the error's class.
const PERMANENT_TRIES: u32 = 3;

/// Whether a database error is worth waiting out (connection, resources, shutdown, a
/// serialisation conflict) rather than a property of the record (a bad cast, a constraint).
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_none_or(|c| {
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// A database error without its message text (which can quote the values it refused):
/// SQLSTATE and, where there is one, the constraint.
fn error_class(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut out = format!("SQLSTATE {}", db.code().as_deref().unwrap_or("?"));
            if let Some(c) = db.constraint() {
                out.push_str(&format!(" (constraint {c})"));
            }
            if let Some(t) = db.table() {
                out.push_str(&format!(" on table {t}"));
            }
            out
        }
        sqlx::Error::Io(_) => "connection lost".into(),
        sqlx::Error::PoolTimedOut => "no connection within 10 s".into(),
        other => {
            // The variant's name only.
            let d = format!("{other:?}");
            d.split(['(', ' ', '{'])
                .next()
                .unwrap_or("error")
                .to_string()
        }
    }
}

impl PgSink {
    /// Creates what `keep`'s records need and writes them in one transaction.
    async fn write_records(
        &mut self,
        batch: &[Received],
        keep: &[usize],
    ) -> Result<u64, sqlx::Error> {
        let tables = self.tables.clone();
        let mut groups: Vec<Group> = Vec::new();
        for &i in keep {
            let r = &batch[i];
            let table = tables
                .of(&r.item)
                .expect("records without a table are rejected first");
            self.ensure(table, r).await?;
            let delete = r.op == Op::Delete;
            match groups.iter_mut().find(|g| {
                g.table == table
                    && g.delete == delete
                    && (delete || g.fingerprint == r.writer.fingerprint)
            }) {
                Some(g) => g.records.push(r),
                None => groups.push(Group {
                    table,
                    fingerprint: r.writer.fingerprint,
                    delete,
                    records: vec![r],
                }),
            }
        }
        let groups: Vec<Group> = groups;
        // `groups` borrows `tables` (a clone), not `self`.
        self.write(&groups).await
    }

    /// Waits before another try; `Err` when stopping.
    async fn back_off(
        &mut self,
        wait: &mut Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        // A table created by someone else (or dropped) is rechecked on the next attempt.
        self.created.clear();
        self.columns.clear();
        tokio::select! {
            () = tokio::time::sleep(*wait) => {}
            () = stop.cancelled() => anyhow::bail!("stopping with records unacked"),
        }
        *wait = (*wait * 2).min(Duration::from_secs(10));
        Ok(())
    }
}

impl Handler for PgSink {
    /// Writes the batch in one transaction. While the database is unreachable the batch waits,
    /// unacked. When the database refuses the batch itself (a value it cannot store, a
    /// constraint), each record is tried on its own: one it refuses
    /// [`PERMANENT_TRIES`] times is dead-lettered with the error's class, and the rest flow.
    async fn handle(
        &mut self,
        batch: &[Received],
        stop: &CancellationToken,
    ) -> anyhow::Result<Vec<Verdict>> {
        let tables = self.tables.clone();
        let mut verdicts = Vec::with_capacity(batch.len());
        // Newest version per record within the batch; the rest are settled by it.
        let mut newest: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut settled_by: Vec<Option<(&str, &str, &str)>> = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            match tables.of(&r.item) {
                None => {
                    verdicts.push(Verdict::Reject(format!(
                        "no --table for item {} (give --table {}=TABLE)",
                        r.item, r.item
                    )));
                    settled_by.push(None);
                }
                Some(t) => {
                    verdicts.push(Verdict::Ack);
                    let e = newest.entry((t, &r.item, &r.key)).or_insert(i);
                    if batch[*e].version <= r.version {
                        *e = i;
                    }
                    settled_by.push(Some((t, &r.item, &r.key)));
                }
            }
        }
        let mut keep: Vec<usize> = newest.values().copied().collect();
        keep.sort_unstable();
        let mut wait = Duration::from_millis(200);
        loop {
            match self.write_records(batch, &keep).await {
                Ok(n) => {
                    self.written += n;
                    return Ok(verdicts);
                }
                Err(e) if transient(&e) => {
                    tracing::warn!(error = %error_class(&e), records = keep.len(), retry_in_ms = wait.as_millis() as u64,
                        "the agency database is unavailable; records stay unacked until they are committed");
                    self.back_off(&mut wait, stop).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %error_class(&e), records = keep.len(),
                        "the agency database refused the batch; writing its records one by one");
                    break;
                }
            }
        }
        // One by one: a record the database keeps refusing is dead-lettered, the rest written.
        for &i in &keep {
            let mut tries = 0;
            let mut wait = Duration::from_millis(200);
            let refused = loop {
                match self.write_records(batch, &[i]).await {
                    Ok(n) => {
                        self.written += n;
                        break None;
                    }
                    Err(e) if transient(&e) => self.back_off(&mut wait, stop).await?,
                    Err(e) => {
                        tries += 1;
                        if tries >= PERMANENT_TRIES {
                            break Some(error_class(&e));
                        }
                        self.back_off(&mut wait, stop).await?;
                    }
                }
            };
            if let Some(class) = refused {
                let r = &batch[i];
                tracing::warn!(message_id = %r.message_id, item = %r.item, error = %class, tries,
                    "the agency database refuses this record; dead-lettering it");
                let key = settled_by[i];
                for (j, v) in verdicts.iter_mut().enumerate() {
                    if settled_by[j] == key {
                        *v = Verdict::Reject(format!(
                            "the agency database refused it {tries} times: {class}"
                        ));
                    }
                }
            }
        }
        Ok(verdicts)
    }
}

/// POSTs each record (the `govbus-agency tail` JSON) to a webhook, one at a time, in queue order.
pub struct Webhook {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    /// How long one record may be retried before it is dead-lettered.
    pub give_up_after: Duration,
    /// Records the webhook accepted.
    pub accepted: u64,
}

impl Webhook {
    /// A webhook sink; `token` is sent as a bearer token.
    pub fn new(
        url: String,
        token: Option<String>,
        give_up_after: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Webhook {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
            url,
            token,
            give_up_after,
            accepted: 0,
        })
    }

    async fn post(&self, r: &Received, stop: &CancellationToken) -> anyhow::Result<Verdict> {
        let body = r.envelope();
        let deadline = tokio::time::Instant::now() + self.give_up_after;
        let mut wait = Duration::from_millis(250);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .post(&self.url)
                .header("Idempotency-Key", &r.message_id)
                .json(&body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let problem = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(Verdict::Ack),
                Ok(resp) => {
                    let status = resp.status();
                    // The body can quote the record: only its length is logged.
                    let length = resp.bytes().await.map_or(0, |b| b.len());
                    let retry = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if !retry {
                        tracing::warn!(message_id = %r.message_id, %status, response_bytes = length,
                            "the webhook refused the record; dead-lettering it");
                        return Ok(Verdict::Reject(format!("webhook answered {status}")));
                    }
                    format!("webhook answered {status}")
                }
                Err(e) => format!("webhook unreachable: {e}"),
            };
            let now = tokio::time::Instant::now();
            if now + wait > deadline {
                tracing::warn!(message_id = %r.message_id, attempts = attempt, last = %problem,
                    "webhook retries exhausted; dead-lettering the record");
                return Ok(Verdict::Reject(format!(
                    "webhook retries exhausted after {attempt} attempts: {problem}"
                )));
            }
            tracing::info!(message_id = %r.message_id, attempt, retry_in_ms = wait.as_millis() as u64,
                problem = %problem, "retrying the webhook");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => anyhow::bail!("stopping with the record unacked"),
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}

impl Handler for Webhook {
    async fn handle(
        &mut self,
        batch: &[Received],
        stop: &CancellationToken,
    ) -> anyhow::Result<Vec<Verdict>> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            let v = self.post(r, stop).await?;
            if matches!(v, Verdict::Ack) {
                self.accepted += 1;
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// The catalogue-free check that a `--table` name is a plain SQL identifier (optionally
/// `schema.table`).
pub fn valid_table(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once('.') {
        Some((s, t)) => part(s) && part(t),
        None => part(name),
    }
}
