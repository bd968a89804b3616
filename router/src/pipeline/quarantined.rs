//! Counts quarantined rows for the yearly report's quarantine rate. For every row an adapter
//! quarantines it also publishes a bodiless count message (`<department>.<item>.count`) that
//! only `govbus.quarantine.counts` takes; the router counts it per day (Asia/Shanghai),
//! department and item — taken from the routing key, which the broker's topic permissions tie
//! to the publishing department — and drops it. The row itself, with its personal data, goes
//! only to the department's own quarantine queue.
use std::{collections::HashMap, sync::Arc, time::Duration};

use bus_schemas::wire;
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
    Channel,
};
use tokio_util::sync::CancellationToken;

use crate::pipeline::shared::Shared;

/// Most rows counted in one transaction.
const BATCH: usize = 500;

/// Consumes and counts until `stop`; an error ends the router's session (which is rebuilt).
pub async fn run(shared: Arc<Shared>, ch: Channel, stop: CancellationToken) -> anyhow::Result<()> {
    ch.basic_qos(BATCH as u16, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            wire::QUARANTINE_COUNTS_QUEUE.into(),
            "govbus-router-quarantine-counts".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("the quarantine count consumer was cancelled by the broker");
        };
        let mut batch = vec![first?];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => batch.push(d?),
                Ok(None) => {
                    anyhow::bail!("the quarantine count consumer was cancelled by the broker")
                }
                Err(_) => break,
            }
        }
        let mut counts: HashMap<(String, String), i64> = HashMap::new();
        for d in &batch {
            // `<department>.<item>.count`; a two-word key is a row copied here before count
            // messages existed (counted the same, and dropped).
            let key = d.routing_key.as_str();
            let key = key.strip_suffix(".count").unwrap_or(key);
            if let Some((dept, item)) = key.split_once('.') {
                if wire::valid_id(dept) && wire::valid_id(item) {
                    *counts.entry((dept.into(), item.into())).or_default() += 1;
                }
            }
        }
        let day = bus_schemas::validate::today_in_shanghai();
        let (depts, items): (Vec<String>, Vec<String>) = counts.keys().cloned().unzip();
        let rows: Vec<i64> = counts.values().copied().collect();
        // PostgreSQL unreachable: retry; nothing is acked until the counts are in.
        let mut delay = Duration::from_millis(200);
        while let Err(e) = sqlx::query(
            "INSERT INTO quarantine_daily AS q (day, department, item, rows)
             SELECT $1, d, i, n FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(d, i, n)
             ON CONFLICT (day, department, item) DO UPDATE SET rows = q.rows + EXCLUDED.rows",
        )
        .bind(day)
        .bind(&depts)
        .bind(&items)
        .bind(&rows)
        .execute(&shared.pool)
        .await
        {
            tracing::warn!(error = %e, "cannot count quarantined rows now; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Ok(()),
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let last = batch.last().expect("a batch has a first delivery");
        if !last.acker.ack(BasicAckOptions { multiple: true }).await? {
            anyhow::bail!(
                "the channel closed before quarantine counts were acked; they come again"
            );
        }
    }
}
