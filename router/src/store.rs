//! The router's PostgreSQL state besides the ledger: writer schemas by fingerprint, kept
//! (unconfirmed) deliveries, refused messages, and what each agency already holds.
use std::collections::HashMap;

use bus_schemas::amqp::OutgoingMessage;
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use serde_json::{Map, Value as Json};
use sqlx::{postgres::PgPoolOptions, PgPool, Postgres, Row, Transaction};

use crate::{ledger::Entry, projection::Projection};

/// Embedded migrations (`router/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects and applies the migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL at {}: {e}; start it or set database.url (GOVBUS__DATABASE__URL)",
                bus_schemas::amqp::config::redact(url)
            )
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot apply the router's migrations: {e}"))?;
    Ok(pool)
}

/// Keeps a catalogue file's text by its SHA-256 (first and last time it was loaded).
pub async fn record_catalogue(pool: &PgPool, text: &str) -> sqlx::Result<()> {
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    sqlx::query(
        "INSERT INTO catalogue_versions (sha256, body) VALUES ($1, $2)
         ON CONFLICT (sha256) DO UPDATE SET last_loaded = now()",
    )
    .bind(sum)
    .bind(text)
    .execute(pool)
    .await?;
    Ok(())
}

/// Registers the writer schema of each projection (idempotent).
pub async fn register_schemas(
    pool: &PgPool,
    projections: &[std::sync::Arc<Projection>],
) -> sqlx::Result<()> {
    for p in projections {
        let w = &p.writer;
        sqlx::query("INSERT INTO schemas (fingerprint, record_type, schema_text) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(w.fingerprint.to_string())
            .bind(&w.full_name)
            .bind(serde_json::to_string_pretty(&w.json).expect("JSON serialises"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A registered writer schema's text.
pub async fn schema_text(pool: &PgPool, fingerprint: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT schema_text FROM schemas WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(pool)
        .await
}

/// A refused message, kept with its reason.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Reason label.
    pub reason: &'static str,
    /// Detail for the operator.
    pub detail: String,
    /// Routing key it came with.
    pub routing_key: String,
    /// Its message id.
    pub message_id: Option<String>,
    /// Its key id header.
    pub key_id: Option<String>,
    /// Its headers as JSON.
    pub headers: Json,
    /// Its body.
    pub body: Vec<u8>,
}

/// Keeps refused messages (one statement for the whole batch).
pub async fn insert_refusals(
    tx: &mut Transaction<'_, Postgres>,
    refusals: &[Refusal],
) -> sqlx::Result<()> {
    if refusals.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO refusals (reason, detail, routing_key, message_id, key_id, headers, body)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bytea[])",
    )
    .bind(refusals.iter().map(|r| r.reason).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.routing_key.as_str()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.message_id.as_deref()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.key_id.as_deref()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.headers.clone()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.body.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Headers as JSON (strings and integers; other values by their debug form).
pub fn headers_json(h: Option<&FieldTable>) -> Json {
    let mut out = Map::new();
    if let Some(h) = h {
        for (k, v) in h.inner() {
            let j = match v {
                AMQPValue::LongString(s) => {
                    Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Json::String(s.as_str().to_string()),
                AMQPValue::LongLongInt(i) => Json::from(*i),
                AMQPValue::LongInt(i) => Json::from(*i),
                other => Json::String(format!("{other:?}")),
            };
            out.insert(k.as_str().to_string(), j);
        }
    }
    Json::Object(out)
}

pub(crate) fn headers_from_json(j: &Json) -> FieldTable {
    let mut h = FieldTable::default();
    if let Json::Object(m) = j {
        for (k, v) in m {
            let v = match v {
                Json::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
                Json::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
                other => AMQPValue::LongString(LongString::from(other.to_string())),
            };
            h.insert(k.as_str().into(), v);
        }
    }
    h
}

/// For each planned delivery: the newest version of its record its agency already holds
/// (one probe per record, whatever the number of agencies). A delivery of a version above it
/// is not in the ledger: every ledger row raises it in the same transaction.
pub async fn prior(pool: &PgPool, entries: &[&Entry]) -> sqlx::Result<Vec<Option<i64>>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut records: HashMap<(&str, &str), usize> = HashMap::new();
    let (mut items, mut keys) = (Vec::new(), Vec::new());
    let of_entry: Vec<usize> = entries
        .iter()
        .map(|e| {
            *records
                .entry((e.item.as_str(), e.key_hash.as_str()))
                .or_insert_with(|| {
                    items.push(e.item.as_str());
                    keys.push(e.key_hash.as_str());
                    items.len() - 1
                })
        })
        .collect();
    let rows = sqlx::query(
        "SELECT d.n, v.held
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d(item, key_hash, n)
         JOIN record_versions v USING (item, key_hash)",
    )
    .bind(&items)
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let mut held: Vec<Option<Json>> = vec![None; items.len()];
    for r in rows {
        let n: i64 = r.get(0);
        held[(n - 1) as usize] = Some(r.get(1));
    }
    Ok(entries
        .iter()
        .zip(of_entry)
        .map(|(e, n)| {
            held[n]
                .as_ref()
                .and_then(|h| h.get(&e.agency))
                .and_then(Json::as_i64)
        })
        .collect())
}

/// A kept delivery.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Row id (retry order).
    pub id: i64,
    /// Ledger entry to append once confirmed.
    pub entry: Entry,
    /// The message, as first built.
    pub message: OutgoingMessage,
}

/// Keeps deliveries the broker did not confirm, to retry them in order (one statement for
/// the whole batch: an agency whose queue is full must not slow the others down).
pub async fn keep(
    tx: &mut Transaction<'_, Postgres>,
    kept: &[(&Entry, &OutgoingMessage)],
) -> sqlx::Result<()> {
    if kept.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pending_deliveries (agency, message_id, entry, headers, body)
         SELECT a, m, e, h, b FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::bytea[]) WITH ORDINALITY AS x(a, m, e, h, b, n)
         ORDER BY n
         ON CONFLICT DO NOTHING",
    )
    .bind(kept.iter().map(|(e, _)| e.agency.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(e, _)| e.message_id.as_str()).collect::<Vec<_>>())
    .bind(
        kept.iter()
            .map(|(e, _)| serde_json::to_value(e).expect("entry serialises"))
            .collect::<Vec<_>>(),
    )
    .bind(
        kept.iter()
            .map(|(_, m)| headers_json(m.properties.headers().as_ref()))
            .collect::<Vec<_>>(),
    )
    .bind(kept.iter().map(|(_, m)| m.body.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The oldest kept deliveries of an agency.
pub async fn kept_for(pool: &PgPool, agency: &str, limit: i64) -> sqlx::Result<Vec<Kept>> {
    let rows = sqlx::query("SELECT id, entry, headers, body FROM pending_deliveries WHERE agency = $1 ORDER BY id LIMIT $2")
        .bind(agency)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let entry: Entry =
            serde_json::from_value(r.get(1)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let headers: Json = r.get(2);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(bus_schemas::wire::AVRO_CONTENT_TYPE))
            .with_message_id(ShortString::from(entry.message_id.as_str()))
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_app_id(ShortString::from("govbus-router"))
            .with_headers(headers_from_json(&headers));
        out.push(Kept {
            id: r.get(0),
            message: OutgoingMessage {
                exchange: bus_schemas::wire::DELIVER_EXCHANGE.into(),
                routing_key: entry.agency.clone(),
                body: r.get(3),
                properties: props,
            },
            entry,
        });
    }
    Ok(out)
}

/// Removes delivered kept rows.
pub async fn release(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pending_deliveries WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Kept deliveries per agency: which agencies have some (new deliveries to them are kept
/// behind the old, in order), and how many (for metrics).
pub async fn kept_counts(pool: &PgPool) -> sqlx::Result<HashMap<String, i64>> {
    let rows = sqlx::query("SELECT agency, count(*) FROM pending_deliveries GROUP BY agency")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Adds a settled group's per-department counts (one statement).
pub async fn count_departments(
    tx: &mut Transaction<'_, Postgres>,
    counts: &crate::pipeline::DepartmentCounts,
) -> sqlx::Result<()> {
    if counts.0.is_empty() {
        return Ok(());
    }
    let mut depts = Vec::new();
    let mut received = Vec::new();
    let mut refused = Vec::new();
    let mut source = Vec::new();
    for (d, (n, r, s)) in &counts.0 {
        depts.push(d.as_str());
        received.push(*n);
        refused.push(*r);
        source.push(*s);
    }
    sqlx::query(
        "INSERT INTO department_stats AS s
             (department, received, refused, last_received_at, last_source_time_ms, last_delay_ms)
         SELECT d, n, r, now(), st,
                CASE WHEN st IS NULL THEN NULL
                     ELSE (extract(epoch FROM now()) * 1000)::bigint - st END
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(d, n, r, st)
         ON CONFLICT (department) DO UPDATE SET
             received = s.received + EXCLUDED.received,
             refused = s.refused + EXCLUDED.refused,
             last_received_at = EXCLUDED.last_received_at,
             last_source_time_ms = COALESCE(GREATEST(s.last_source_time_ms, EXCLUDED.last_source_time_ms), s.last_source_time_ms, EXCLUDED.last_source_time_ms),
             last_delay_ms = COALESCE(EXCLUDED.last_delay_ms, s.last_delay_ms)",
    )
    .bind(&depts)
    .bind(&received)
    .bind(&refused)
    .bind(&source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A record as the router received it, kept as the latest version of its record for replay.
#[derive(Debug, Clone)]
pub struct LatestRecord {
    /// Item.
    pub item: String,
    /// Keyed hash of the record key.
    pub key_hash: String,
    /// Version.
    pub version: i64,
    /// `<department>.<item>`.
    pub routing_key: String,
    /// Ingest message id.
    pub ingest_id: String,
    /// Ingest headers.
    pub headers: Json,
    /// The signed ingest body.
    pub body: Vec<u8>,
}

/// Keeps the newest version of each record (one statement; older versions leave it).
pub async fn keep_latest(
    tx: &mut Transaction<'_, Postgres>,
    records: &[LatestRecord],
) -> sqlx::Result<()> {
    // One row per record: a batch may hold several versions of one.
    let mut newest: HashMap<(&str, &str), &LatestRecord> = HashMap::new();
    for r in records {
        let e = newest.entry((&r.item, &r.key_hash)).or_insert(r);
        if e.version < r.version {
            *e = r;
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let rs: Vec<&LatestRecord> = newest.into_values().collect();
    sqlx::query(
        "INSERT INTO latest_records AS l (item, key_hash, version, routing_key, ingest_id, headers, body)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::bytea[])
         ON CONFLICT (item, key_hash) DO UPDATE SET
             version = EXCLUDED.version, routing_key = EXCLUDED.routing_key,
             ingest_id = EXCLUDED.ingest_id, headers = EXCLUDED.headers, body = EXCLUDED.body,
             received_at = now()
         WHERE l.version < EXCLUDED.version",
    )
    .bind(rs.iter().map(|r| r.item.as_str()).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.key_hash.as_str()).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.routing_key.as_str()).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.ingest_id.as_str()).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.headers.clone()).collect::<Vec<_>>())
    .bind(rs.iter().map(|r| r.body.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
