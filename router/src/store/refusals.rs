//! Refused messages, kept with their reason and headers, their body cut at
//! `router.refusal_body_bytes`, and purged after `router.refusal_retention_days`.

use bus_schemas::wire::IdKey;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value as Json};
use sqlx::{Postgres, Transaction};

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
    /// Its body, at most `router.refusal_body_bytes` of it.
    pub body: Vec<u8>,
    /// The whole body's length.
    pub body_bytes: i32,
    /// Keyed hash of the whole body, when it was cut (or, later, purged: `ops::purge`).
    pub body_hmac: Option<String>,
}

/// What is kept of a refused message's body: at most `cap` bytes, its whole length, and a
/// keyed hash of the whole when it was cut.
pub fn kept_body(ids: &IdKey, body: &[u8], cap: usize) -> (Vec<u8>, i32, Option<String>) {
    let len = i32::try_from(body.len()).unwrap_or(i32::MAX);
    if body.len() <= cap {
        (body.to_vec(), len, None)
    } else {
        (body[..cap].to_vec(), len, Some(ids.body_hmac(body)))
    }
}

/// Deletes refusals older than `days` (their bodies can hold personal data). Returns how many.
pub async fn purge_expired(pool: &sqlx::PgPool, days: u32) -> sqlx::Result<u64> {
    Ok(
        sqlx::query("DELETE FROM refusals WHERE refused_at < now() - make_interval(days => $1)")
            .bind(i32::try_from(days).unwrap_or(i32::MAX))
            .execute(pool)
            .await?
            .rows_affected(),
    )
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
        "INSERT INTO refusals (reason, detail, routing_key, message_id, key_id, headers, body, body_bytes, body_hmac)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bytea[], $8::int[], $9::text[])",
    )
    .bind(refusals.iter().map(|r| r.reason).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.routing_key.as_str()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.message_id.as_deref()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.key_id.as_deref()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.headers.clone()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.body.as_slice()).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.body_bytes).collect::<Vec<_>>())
    .bind(refusals.iter().map(|r| r.body_hmac.as_deref()).collect::<Vec<_>>())
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

pub fn headers_from_json(j: &Json) -> FieldTable {
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
