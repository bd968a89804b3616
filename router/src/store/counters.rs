//! Counters the status page and the yearly report read, written by the router in the same
//! transaction as the ledger rows they count.

use bus_schemas::{validate::today_in_shanghai, wire};
use sqlx::{Postgres, Transaction};

use super::ledger::Entry;

/// Per department: messages settled, of them refused, and the newest source time delivered.
/// Ordered, so the rows are updated in the same order by every transaction (several
/// partitions settle at once: in another order, two of them deadlocked in the cluster test).
#[derive(Debug, Default)]
pub struct DepartmentCounts(pub std::collections::BTreeMap<String, (i64, i64, Option<i64>)>);

impl DepartmentCounts {
    pub(crate) fn received(&mut self, routing_key: &str, refused: bool) {
        let dept = routing_key.split('.').next().unwrap_or(routing_key);
        // Only well-formed department ids are counted (a forged routing key is a refusal).
        if !wire::valid_id(dept) {
            return;
        }
        let c = self.0.entry(dept.to_string()).or_default();
        c.0 += 1;
        c.1 += i64::from(refused);
    }
    pub(crate) fn source_time(&mut self, dept: &str, ms: Option<i64>) {
        if let (Some(c), Some(ms)) = (self.0.get_mut(dept), ms) {
            c.2 = Some(c.2.map_or(ms, |m| m.max(ms)));
        }
    }
}

/// Adds a settled group's per-department counts (one statement).
pub async fn count_departments(
    tx: &mut Transaction<'_, Postgres>,
    counts: &DepartmentCounts,
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

/// Upper bounds (ms) of the delay buckets; the last bucket is everything beyond.
pub const BOUNDS_MS: [i64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
    21_600_000, 86_400_000,
];

fn bucket(delay_ms: i64) -> i16 {
    BOUNDS_MS
        .iter()
        .position(|b| delay_ms <= *b)
        .unwrap_or(BOUNDS_MS.len()) as i16
}

/// Adds a settled group's deliveries to the timeliness counts (one statement; replays and
/// deliveries without a source time are not counted).
pub async fn count_timeliness(
    tx: &mut Transaction<'_, Postgres>,
    delivered: &[Entry],
) -> sqlx::Result<()> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let day = today_in_shanghai();
    // In key order: two routers' (or two partitions') transactions then lock the shared rows in
    // the same order instead of deadlocking.
    let mut counts: std::collections::BTreeMap<(&str, &str, &str, i16), i64> = Default::default();
    for e in delivered {
        if let (None, Some(src)) = (&e.replay, e.source_time_ms) {
            *counts
                .entry((&e.agency, &e.item, &e.department, bucket(now_ms - src)))
                .or_default() += 1;
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let (mut agencies, mut items, mut depts, mut buckets, mut ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((a, i, d, b), n) in counts {
        agencies.push(a);
        items.push(i);
        depts.push(d);
        buckets.push(b);
        ns.push(n);
    }
    sqlx::query(
        "INSERT INTO timeliness_daily AS t (day, agency, item, department, bucket, deliveries)
         SELECT $1, a, i, d, b, n
         FROM unnest($2::text[], $3::text[], $4::text[], $5::smallint[], $6::bigint[]) AS u(a, i, d, b, n)
         ON CONFLICT (day, agency, item, department, bucket) DO UPDATE
             SET deliveries = t.deliveries + EXCLUDED.deliveries",
    )
    .bind(day)
    .bind(&agencies)
    .bind(&items)
    .bind(&depts)
    .bind(&buckets)
    .bind(&ns)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
