//! The router's events, in one place: each logs with fields and moves its Prometheus metric.
//! Nothing here logs personal data: records are named by their keyed hash.
use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("valid buckets")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

/// A delivery was confirmed by the broker and written to the ledger.
pub fn delivered(agency: &str, item: &str, source_time_ms: Option<i64>) {
    counter!("govbus_router_deliveries_total", "agency" => agency.to_string(), "item" => item.to_string()).increment(1);
    if let Some(t) = source_time_ms {
        let secs = (chrono::Utc::now().timestamp_millis() - t).max(0) as f64 / 1000.0;
        histogram!("govbus_router_delivery_latency_seconds").record(secs);
    }
}

/// A message was refused.
pub fn refused(reason: &'static str, routing_key: &str, detail: &str) {
    counter!("govbus_router_refusals_total", "reason" => reason).increment(1);
    tracing::warn!(
        reason,
        routing_key,
        detail,
        "message refused: it reaches nobody"
    );
}

/// A delivery was not made because the agency holds a newer version of the record.
pub fn stale(agency: &str, key_hash: &str) {
    counter!("govbus_router_stale_versions_total", "agency" => agency.to_string()).increment(1);
    tracing::debug!(agency, key = &key_hash[..16], "older version not delivered");
}

/// A delivery already in the ledger was not published again (a redelivered message).
pub fn already_delivered(n: usize) {
    counter!("govbus_router_already_delivered_total").increment(n as u64);
}

/// Deliveries the broker did not confirm were kept in PostgreSQL for retry.
pub fn kept(agency: &str, why: &str, n: u64) {
    counter!("govbus_router_deliveries_kept_total", "agency" => agency.to_string()).increment(n);
    tracing::warn!(
        agency,
        why,
        deliveries = n,
        "deliveries not confirmed; kept for retry"
    );
}

/// Kept deliveries per agency now.
pub fn kept_now(agency: &str, n: i64) {
    gauge!("govbus_router_deliveries_pending", "agency" => agency.to_string()).set(n as f64);
}

/// A message went to the router's dead-letter queue.
pub fn dead_lettered(routing_key: &str, reason: &str) {
    counter!("govbus_router_dead_lettered_total").increment(1);
    tracing::error!(
        routing_key,
        reason,
        "message cannot be processed; sent to govbus.router.dlq"
    );
}

/// One ledger transaction.
pub fn ledger_batch(seconds: f64, rows: usize) {
    histogram!("govbus_router_ledger_batch_seconds").record(seconds);
    counter!("govbus_router_ledger_rows_total").increment(rows as u64);
}

/// The catalogue was (re)loaded or a new one refused.
pub fn catalogue(loaded: bool, detail: &str) {
    if loaded {
        counter!("govbus_router_catalogue_reloads_total").increment(1);
        tracing::info!(detail, "catalogue in force");
    } else {
        counter!("govbus_router_catalogue_refused_total").increment(1);
        tracing::error!(
            detail,
            "new catalogue refused; the previous one stays in force"
        );
    }
}

/// A delivery had no confirm in time: its queue or the connection stalled.
pub fn stalled() {
    counter!("govbus_router_confirm_stalls_total").increment(1);
}

/// The connection was rebuilt.
pub fn reconnect() {
    counter!("govbus_router_reconnects_total").increment(1);
    // Shown from the start, so an alert on its increase has a series to watch.
    counter!("govbus_router_confirm_stalls_total").increment(0);
    tracing::info!("connected to RabbitMQ");
}

/// Days left of each grant in force with an end date (0: today is its last day).
pub fn grant_days_left(agency: &str, grant: &str, days: i64) {
    gauge!("govbus_router_grant_days_left", "agency" => agency.to_string(), "grant" => grant.to_string())
        .set(days as f64);
}

/// The background ledger verification's result.
pub fn ledger_verified(ok: bool, rows: u64, secs: f64) {
    gauge!("govbus_router_ledger_verified").set(if ok { 1.0 } else { 0.0 });
    gauge!("govbus_router_ledger_verify_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
    gauge!("govbus_router_ledger_verify_seconds").set(secs);
    if ok {
        tracing::info!(rows, secs, "ledger verified");
    } else {
        tracing::error!(
            rows,
            "LEDGER BROKEN: run `govbus ledger verify` to see which rows"
        );
    }
}

/// The status page was computed (at most once a second, whatever the number of requests).
pub fn status_computed() {
    counter!("govbus_router_status_computed_total").increment(1);
}

/// This router subscribed to partition `p`, at once (`preferred`) or as a standby.
pub fn subscribed(p: u8, preferred: bool) {
    let partition = p.to_string();
    gauge!("govbus_router_partition_subscribed", "partition" => partition.clone()).set(1.0);
    gauge!("govbus_router_partition_active", "partition" => partition).set(0.0);
    tracing::info!(
        partition = p,
        preferred,
        "subscribed to {}",
        bus_schemas::wire::router_queue(p)
    );
}

/// This router's subscription to partition `p` ended (stopping or reconnecting).
pub fn unsubscribed(p: u8) {
    let partition = p.to_string();
    gauge!("govbus_router_partition_subscribed", "partition" => partition.clone()).set(0.0);
    gauge!("govbus_router_partition_active", "partition" => partition).set(0.0);
}

/// Partition `p` delivered a message to this router: it is the partition's active consumer
/// (RabbitMQ sends a standby nothing).
pub fn partition_active(p: u8) {
    gauge!("govbus_router_partition_active", "partition" => p.to_string()).set(1.0);
}

/// Ingest messages this router took from partition `p`.
pub fn partition_records(p: u8, n: usize) {
    counter!("govbus_router_partition_records_total", "partition" => p.to_string())
        .increment(n as u64);
}

/// Deliveries confirmed and written from partition `p`.
pub fn partition_delivered(p: u8, n: usize) {
    counter!("govbus_router_partition_deliveries_total", "partition" => p.to_string())
        .increment(n as u64);
}
