//! Deliveries the broker did not confirm (an agency's queue full or blocked), kept to retry
//! in order.
use std::collections::HashMap;

use bus_schemas::amqp::OutgoingMessage;
use lapin::{types::ShortString, BasicProperties};
use serde_json::Value as Json;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::store::{
    ledger::Entry,
    refusals::{headers_from_json, headers_json},
};

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
                exchange: entry
                    .to
                    .as_ref()
                    .map_or(bus_schemas::wire::DELIVER_EXCHANGE.into(), |t| {
                        t.exchange.clone()
                    }),
                routing_key: entry
                    .to
                    .as_ref()
                    .map_or(entry.agency.clone(), |t| t.routing_key.clone()),
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
