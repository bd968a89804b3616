//! Refused messages, kept with their reason and headers.

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
