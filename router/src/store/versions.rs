//! What each agency already holds of each record (the newest version delivered), and the latest
//! version of each record as received, kept for replay and corrections.
use std::collections::HashMap;

use serde_json::Value as Json;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::store::ledger::Entry;

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
    /// The keyed hash of each person the record names (`routing::subjects`).
    pub subjects: Vec<[u8; 16]>,
}

/// Indexes each record version by the persons it names (one statement): the citizen's
/// data-use log joins this with the ledger. A version indexed before (a redelivery, a replay)
/// is left as it is.
pub async fn index_subjects(
    tx: &mut Transaction<'_, Postgres>,
    records: &[LatestRecord],
) -> sqlx::Result<()> {
    let mut rows: Vec<(&[u8], &str, &str, i64)> = records
        .iter()
        .flat_map(|r| {
            r.subjects.iter().map(move |s| {
                (
                    s.as_slice(),
                    r.item.as_str(),
                    r.key_hash.as_str(),
                    r.version,
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    // In key order, as every shared row here: concurrent routers never deadlock on it.
    rows.sort_unstable();
    rows.dedup();
    sqlx::query(
        "INSERT INTO subject_index (subject, item, key_hash, version)
         SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
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
