//! Purge at the end of a sharing period (articles 30 and 38). Once an item's sharing period
//! (`shared_until`) or a grant (`valid_until`) has ended and `retention.purge_grace_days` more
//! have passed, the platform deletes what it keeps of records that are no longer shared:
//!
//! - an item whose sharing period ended, or all of whose grants ended: its latest records
//!   (the bodies kept for replays), its kept deliveries (waiting for an agency's queue), and
//!   the bodies of its refused messages (the refusal itself, its reason and the body's keyed
//!   hash stay);
//! - a grant that ended while others of its item go on: its kept deliveries.
//!
//! The ledger is not touched (it holds hashes, not records), so `govbus ledger verify` still
//! passes; nor is the subject index (keyed hashes), so a citizen's log still lists past
//! deliveries. An item with no grant at all keeps its records: it may still be granted.
//! Each purge is recorded in `purges`, which `govbus report` counts.
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

use bus_schemas::wire::IdKey;

use crate::routing::catalogue::Catalogue;

/// Empties the kept bodies of `item`'s refused messages, keeping each refusal, its reason, its
/// length and a keyed hash of the body (computed now where the whole body was kept, so the
/// platform can still recognise it if the department sends it again).
async fn purge_refused_bodies(
    tx: &mut sqlx::PgConnection,
    ids: &IdKey,
    item: &str,
) -> sqlx::Result<i64> {
    let rows: Vec<(i64, Vec<u8>, Option<String>)> = sqlx::query_as(
        "SELECT id, body, body_hmac FROM refusals
          WHERE split_part(routing_key, '.', 2) = $1 AND length(body) > 0 ORDER BY id",
    )
    .bind(item)
    .fetch_all(&mut *tx)
    .await?;
    let (id, hmac): (Vec<i64>, Vec<String>) = rows
        .into_iter()
        .map(|(id, body, h)| (id, h.unwrap_or_else(|| ids.body_hmac(&body))))
        .unzip();
    sqlx::query(
        "UPDATE refusals r SET body = ''::bytea, body_hmac = x.h
           FROM unnest($1::bigint[], $2::text[]) AS x(id, h) WHERE r.id = x.id",
    )
    .bind(&id)
    .bind(&hmac)
    .execute(&mut *tx)
    .await?;
    Ok(id.len() as i64)
}

/// One item's (or grant's) purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub item: String,
    /// The grant, when only a grant ended.
    pub grant: Option<String>,
    /// `item_ended`, `grants_ended` or `grant_ended`.
    pub reason: &'static str,
    pub latest_records: i64,
    pub kept_deliveries: i64,
    pub refused_bodies: i64,
}

/// What is due for purging on `today`, with `grace_days` after each end.
pub fn due(
    catalogue: &Catalogue,
    today: NaiveDate,
    grace_days: u32,
) -> Vec<(String, Option<String>, &'static str)> {
    let past = |end: NaiveDate| end + chrono::Days::new(u64::from(grace_days)) < today;
    let mut out = Vec::new();
    let mut items: Vec<&String> = catalogue.items.keys().collect();
    items.sort();
    for id in items {
        let (item, _) = &catalogue.items[id];
        let grants = catalogue
            .grants_by_item
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if item.shared_until.as_ref().is_some_and(|u| past(u.0)) {
            out.push((id.clone(), None, "item_ended"));
        } else if !grants.is_empty()
            && grants
                .iter()
                .all(|g| g.valid_until.as_ref().is_some_and(|u| past(u.0)))
        {
            out.push((id.clone(), None, "grants_ended"));
        } else {
            for g in grants {
                if g.valid_until.as_ref().is_some_and(|u| past(u.0)) {
                    out.push((id.clone(), Some(g.id.clone()), "grant_ended"));
                }
            }
        }
    }
    out
}

/// Purges what is due (see [`due`]) in one transaction and records it; returns what was
/// purged (rounds that found nothing left to purge are not recorded).
pub async fn purge(
    pool: &PgPool,
    ids: &IdKey,
    catalogue: &Catalogue,
    today: NaiveDate,
    grace_days: u32,
) -> sqlx::Result<Vec<Purged>> {
    let mut tx = pool.begin().await?;
    let mut out = Vec::new();
    for (item, grant, reason) in due(catalogue, today, grace_days) {
        let p = match &grant {
            None => Purged {
                latest_records: sqlx::query("DELETE FROM latest_records WHERE item = $1")
                    .bind(&item)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64,
                kept_deliveries: sqlx::query(
                    "DELETE FROM pending_deliveries WHERE entry->>'item' = $1",
                )
                .bind(&item)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64,
                refused_bodies: purge_refused_bodies(&mut tx, ids, &item).await?,
                item,
                grant,
                reason,
            },
            Some(g) => Purged {
                latest_records: 0,
                kept_deliveries: sqlx::query(
                    "DELETE FROM pending_deliveries WHERE entry->>'item' = $1 AND entry->>'grant_id' = $2",
                )
                .bind(&item)
                .bind(g)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64,
                refused_bodies: 0,
                item,
                grant,
                reason,
            },
        };
        if p.latest_records + p.kept_deliveries + p.refused_bodies == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO purges (item, grant_id, reason, latest_records, kept_deliveries, refused_bodies)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.item)
        .bind(&p.grant)
        .bind(p.reason)
        .bind(p.latest_records)
        .bind(p.kept_deliveries)
        .bind(p.refused_bodies)
        .execute(&mut *tx)
        .await?;
        out.push(p);
    }
    tx.commit().await?;
    Ok(out)
}

/// Purges every `every` until `stop` (the first round at once), on one router at a time.
pub async fn every(
    shared: std::sync::Arc<crate::pipeline::shared::Shared>,
    grace_days: u32,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let routing = shared.routing();
        let today = bus_schemas::validate::today_in_shanghai();
        let round = crate::store::jobs::once(
            &shared.pool,
            crate::store::jobs::Job::Purge,
            purge(
                &shared.pool,
                &shared.platform.ids,
                &routing.catalogue,
                today,
                grace_days,
            ),
        )
        .await
        .and_then(|r| r.unwrap_or(Ok(Vec::new())));
        match round {
            Ok(purged) => {
                for p in &purged {
                    tracing::info!(
                        item = %p.item, grant = p.grant.as_deref().unwrap_or(""), reason = p.reason,
                        latest_records = p.latest_records, kept_deliveries = p.kept_deliveries,
                        refused_bodies = p.refused_bodies,
                        "purged what the platform kept of records no longer shared"
                    );
                    metrics::counter!("govbus_router_purged_total", "what" => "latest_records")
                        .increment(p.latest_records as u64);
                    metrics::counter!("govbus_router_purged_total", "what" => "kept_deliveries")
                        .increment(p.kept_deliveries as u64);
                    metrics::counter!("govbus_router_purged_total", "what" => "refused_bodies")
                        .increment(p.refused_bodies as u64);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot purge ended items and grants; retrying next period")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
