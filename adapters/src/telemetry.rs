//! The events that matter, in one place: each logs with fields and moves its Prometheus
//! metric. Nothing here logs personal data: records are named by a keyed reference.
use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

/// Handles of the per-record metrics, registered once: looking a metric up by name on every
/// record costs a hash of its key each time.
struct Hot {
    read: metrics::Counter,
    published: metrics::Counter,
    confirmed: metrics::Counter,
    behind: metrics::Gauge,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        prometheus();
        Hot {
            read: counter!("govbus_adapter_records_read_total"),
            published: counter!("govbus_adapter_records_published_total"),
            confirmed: counter!("govbus_adapter_records_confirmed_total"),
            behind: gauge!("govbus_adapter_seconds_behind_source"),
        }
    })
}

/// A row came out of the source.
pub fn record_read() {
    hot().read.increment(1);
}

/// A record was handed to the broker.
pub fn published() {
    hot().published.increment(1);
}

/// The broker confirmed a record; `source_time_ms` is when the source changed it.
pub fn confirmed(source_time_ms: i64) {
    let h = hot();
    h.confirmed.increment(1);
    let behind = (chrono::Utc::now().timestamp_millis() - source_time_ms).max(0) as f64 / 1000.0;
    h.behind.set(behind);
}

/// A row was quarantined (counted once its quarantine message is confirmed).
pub fn quarantined(reason: &'static str, field: &str, position: &str) {
    counter!("govbus_adapter_records_quarantined_total", "reason" => reason).increment(1);
    tracing::warn!(reason, field, position, "row quarantined");
}

/// A publish is being retried.
pub fn publish_retry(why: &str) {
    counter!("govbus_adapter_publish_retries_total").increment(1);
    tracing::warn!(error = why, "publish not confirmed; retrying");
}

/// The connection was rebuilt.
pub fn reconnect(in_flight: usize) {
    counter!("govbus_adapter_reconnects_total").increment(1);
    tracing::info!(
        in_flight,
        "connected to RabbitMQ; republishing what was not confirmed"
    );
}

/// The source position was saved.
pub fn committed(position: &str) {
    counter!("govbus_adapter_commits_total").increment(1);
    tracing::debug!(position, "source position saved");
}

/// Short class of a quarantine reason, for the metric label.
pub fn reason_class(rule: &str) -> &'static str {
    match rule {
        r if r.starts_with("gb11643") => "citizen_id",
        r if r.starts_with("gb32100") => "credit_code",
        r if r.starts_with("gbt2260") => "division_code",
        "code-table" => "code_table",
        "date-not-future" => "future_date",
        "record-key" => "record_key",
        "subject-id-type-required" | "id-number-empty" => "subject",
        "unreadable" => "unreadable",
        _ => "mapping",
    }
}
