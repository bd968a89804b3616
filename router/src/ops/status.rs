//! What operators watch: per agency queue depth, deliveries, kept deliveries, dead letters and
//! grants running out; per department what the router received and how far behind its source
//! it was; refusals by reason. Served as HTML at `/`, JSON at `/status`, and printed by
//! `govbus status`. Counts only: never a record, a name or an ID number.
use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use bus_schemas::{amqp::Connector, validate::today_in_shanghai, wire};
use lapin::{options::QueueDeclareOptions, types::FieldTable, Channel, Connection};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::{pipeline::shared::Shared, workflow::workdays::Calendar};

/// Days ahead in which a grant's end is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// Messages waiting in an agency queue above which the backlog is a warning.
pub const BACKLOG_WARNING: u32 = 10_000;

/// A grant that ends soon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expiring {
    /// Grant id.
    pub grant: String,
    /// Item.
    pub item: String,
    /// Last day in force.
    pub valid_until: String,
    /// Days left (0: today is the last day).
    pub days_left: i64,
}

/// One agency's line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgencyStatus {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Messages ready in `agency.<id>` (null when the broker could not be asked).
    pub queue_depth: Option<u32>,
    /// Messages in `agency.<id>.dlq`.
    pub dead_letters: Option<u32>,
    /// Consumers on the agency queue.
    pub consumers: Option<u32>,
    /// Ledger rows of the last hour.
    pub delivered_last_hour: i64,
    /// Ledger rows in all.
    pub delivered_total: i64,
    /// Time of the newest ledger row (RFC 3339).
    pub last_delivery: Option<String>,
    /// Deliveries kept for retry (the queue was full or blocked).
    pub kept_for_retry: i64,
    /// Grants in force today.
    pub grants_in_force: usize,
    /// Grants ending within 30 days.
    pub grants_expiring: Vec<Expiring>,
    /// What needs attention.
    pub warnings: Vec<String>,
}

/// One department's line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepartmentStatus {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Ingest messages the router settled from it.
    pub received: i64,
    /// Of them refused (bad signature, wrong department, no grant, …).
    pub refused: i64,
    /// Records waiting in `quarantine.<id>` (invalid rows its adapters set aside).
    pub quarantined: Option<u32>,
    /// When the router last settled one of its messages.
    pub last_received: Option<String>,
    /// Seconds from the source change to the router, of its newest delivered record.
    pub seconds_behind_source: Option<f64>,
    /// What needs attention.
    pub warnings: Vec<String>,
}

/// Refusals of one reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalCount {
    /// Reason (`bad_signature`, `no_grant`, …).
    pub reason: String,
    /// In all.
    pub total: i64,
    /// In the last hour.
    pub last_hour: i64,
}

/// One router partition `govbus.router.<p>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Its number.
    pub partition: u8,
    /// Messages waiting in it (`None`: the broker did not answer).
    pub backlog: Option<u32>,
    /// Whether a router consumes it (RabbitMQ counts the active consumer; standbys are listed
    /// by `govbus partitions show`).
    pub held: Option<bool>,
    /// The router that last became its active consumer, and since when.
    pub holder: Option<String>,
    /// Since when (RFC 3339).
    pub holder_since: Option<String>,
    /// Deliveries from it in the last hour.
    pub delivered_last_hour: i64,
}

/// Deliveries per minute over the last hour, oldest minute first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Per partition (`p0`, `p1`, …).
    pub by_partition: Vec<(String, Vec<i64>)>,
    /// Per agency.
    pub by_agency: Vec<(String, Vec<i64>)>,
}

/// Minutes the rate charts cover.
pub const RATE_MINUTES: usize = 60;

/// The whole page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// When this was computed (RFC 3339).
    pub generated_at: String,
    /// Whether the router is connected and consuming.
    pub ready: bool,
    /// Whether the broker answered the queue questions.
    pub broker_reachable: bool,
    /// Agencies, by id.
    pub agencies: Vec<AgencyStatus>,
    /// Departments, by id.
    pub departments: Vec<DepartmentStatus>,
    /// Refusals by reason.
    pub refusals: Vec<RefusalCount>,
    /// The router partitions.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
    /// Delivery rates over the last hour.
    #[serde(default)]
    pub rates: Rates,
    /// The links to other platforms and `govbus.unrouted`, as last polled.
    #[serde(default)]
    pub links: crate::pipeline::shared::Links,
    /// Every warning of the page, one line each.
    pub warnings: Vec<String>,
}

/// Asks the broker for queue depths over a connection of its own (passive declares).
pub struct QueueProbe {
    connector: Connector,
    conn: Mutex<Option<Connection>>,
}

impl QueueProbe {
    /// A probe that connects on first use.
    pub fn new(connector: Connector) -> Self {
        QueueProbe {
            connector,
            conn: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Option<Channel> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            if c.status().connected() {
                if let Ok(ch) = c.create_channel().await {
                    return Some(ch);
                }
            }
        }
        let c = tokio::time::timeout(Duration::from_secs(3), self.connector.connect_once())
            .await
            .ok()?
            .ok()?;
        let ch = c.create_channel().await.ok()?;
        *conn = Some(c);
        Some(ch)
    }

    /// (messages ready, consumers) of each queue; `None` where the broker did not answer or
    /// the queue does not exist.
    pub async fn depths(&self, queues: &[String]) -> (bool, HashMap<String, (u32, u32)>) {
        let mut out = HashMap::new();
        let Some(mut ch) = self.channel().await else {
            return (false, out);
        };
        for q in queues {
            let r = ch
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match r {
                Ok(d) => {
                    out.insert(q.clone(), (d.message_count(), d.consumer_count()));
                }
                // A missing queue closes the channel: open another for the rest.
                Err(_) => match self.channel().await {
                    Some(c) => ch = c,
                    None => return (false, out),
                },
            }
        }
        let _ = ch.close(200, "status".into()).await;
        (true, out)
    }
}

fn rfc3339_us(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339())
}

/// The status computed at most once a second and shared by every request in that second:
/// the page is public, and each computation queries PostgreSQL and probes RabbitMQ.
pub struct Cached {
    shared: Arc<Shared>,
    probe: QueueProbe,
    calendar: Option<Arc<Calendar>>,
    last: Mutex<Option<(std::time::Instant, Arc<Status>)>>,
}

impl Cached {
    /// How long one computation serves.
    pub const FRESH_FOR: Duration = Duration::from_secs(1);

    /// A cache over the router's state, its queue probe and the workflow's calendar.
    pub fn new(shared: Arc<Shared>, probe: QueueProbe, calendar: Option<Arc<Calendar>>) -> Self {
        Cached {
            shared,
            probe,
            calendar,
            last: Mutex::new(None),
        }
    }

    /// The status, computed now only when the last one is over a second old (requests that
    /// arrive meanwhile wait for that one computation).
    pub async fn get(&self) -> anyhow::Result<Arc<Status>> {
        let mut last = self.last.lock().await;
        if let Some((at, s)) = last.as_ref() {
            if at.elapsed() < Self::FRESH_FOR {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(compute(&self.shared, &self.probe, self.calendar.as_deref()).await?);
        crate::telemetry::status_computed();
        *last = Some((std::time::Instant::now(), s.clone()));
        Ok(s)
    }
}

/// Computes the status from the catalogue, the database and the broker.
/// `calendar` is the workflow's working-day calendar, when configured (a warning when it does
/// not cover this year or the next month).
pub async fn compute(
    shared: &Arc<Shared>,
    probe: &QueueProbe,
    calendar: Option<&Calendar>,
) -> anyhow::Result<Status> {
    let routing = shared.routing();
    let cat = &routing.catalogue.file;
    let today = today_in_shanghai();
    let mut queues = Vec::new();
    for a in &cat.agencies {
        queues.push(wire::agency_queue(&a.id));
        queues.push(format!("{}.dlq", wire::agency_queue(&a.id)));
    }
    for d in &cat.departments {
        queues.push(wire::quarantine_queue(&d.id));
    }
    let partition_count = shared.tunables.partitions;
    for p in 0..partition_count {
        queues.push(wire::router_queue(p));
    }
    let (reachable, depths) = probe.depths(&queues).await;
    let pool = &shared.pool;
    // One pass over the last hour's ledger rows: the charts, and each agency's and partition's
    // deliveries in the last hour.
    let rates = rates_last_hour(pool, partition_count).await?;
    let mut deliveries: HashMap<String, (i64, Option<i64>)> = HashMap::new();
    for r in sqlx::query(
        "SELECT h.agency, sum(h.seq)::bigint AS total,
                max((SELECT l.delivered_at_us FROM ledger l
                      WHERE l.agency = h.agency AND l.chain = h.chain AND l.seq = h.seq)) AS last
         FROM ledger_heads h
         GROUP BY h.agency",
    )
    .fetch_all(pool)
    .await?
    {
        deliveries.insert(r.get("agency"), (r.get("total"), r.get("last")));
    }
    let kept = crate::store::kept_counts(pool).await?;
    let mut depts: HashMap<String, (i64, i64, Option<i64>, Option<i64>)> = HashMap::new();
    for r in sqlx::query(
        "SELECT department, received, refused,
                (extract(epoch FROM last_received_at) * 1000000)::bigint AS last_received_us,
                last_delay_ms
         FROM department_stats",
    )
    .fetch_all(pool)
    .await?
    {
        depts.insert(
            r.get("department"),
            (
                r.get("received"),
                r.get("refused"),
                r.get("last_received_us"),
                r.get("last_delay_ms"),
            ),
        );
    }
    let refusals = sqlx::query(
        "SELECT reason, count(*) AS total,
                count(*) FILTER (WHERE refused_at >= now() - interval '1 hour') AS hour
         FROM refusals GROUP BY reason ORDER BY reason",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| RefusalCount {
        reason: r.get("reason"),
        total: r.get("total"),
        last_hour: r.get("hour"),
    })
    .collect::<Vec<_>>();
    let mut all_warnings: Vec<String> = calendar
        .and_then(|c| c.warning(today))
        .into_iter()
        .collect();
    let mut agencies = Vec::new();
    for a in &cat.agencies {
        let q = depths.get(&wire::agency_queue(&a.id));
        let dlq = depths.get(&format!("{}.dlq", wire::agency_queue(&a.id)));
        let (total, last) = deliveries.get(&a.id).cloned().unwrap_or((0, None));
        let hour = sum_of(&rates.by_agency, &a.id);
        let grants: Vec<_> = cat.grants.iter().filter(|g| g.agency == a.id).collect();
        let in_force = grants.iter().filter(|g| g.in_force(today)).count();
        let expiring: Vec<Expiring> = grants
            .iter()
            .filter(|g| g.in_force(today))
            .filter_map(|g| {
                let until = g.valid_until.as_ref()?.0;
                let left = (until - today).num_days();
                (left <= EXPIRY_WARNING_DAYS).then(|| Expiring {
                    grant: g.id.clone(),
                    item: g.item.clone(),
                    valid_until: until.to_string(),
                    days_left: left,
                })
            })
            .collect();
        let kept_n = kept.get(&a.id).copied().unwrap_or(0);
        let mut warnings = Vec::new();
        if let Some((n, _)) = q {
            if *n >= BACKLOG_WARNING {
                warnings.push(format!(
                    "{n} deliveries waiting in {}",
                    wire::agency_queue(&a.id)
                ));
            }
        }
        if let Some((n, 0)) = q {
            if *n > 0 {
                warnings.push(format!(
                    "{n} deliveries waiting and no consumer on the queue"
                ));
            }
        }
        if let Some((n, _)) = dlq {
            if *n > 0 {
                warnings.push(format!(
                    "{n} dead letters in {}.dlq",
                    wire::agency_queue(&a.id)
                ));
            }
        }
        if kept_n > 0 {
            warnings.push(format!(
                "{kept_n} deliveries kept for retry (queue full or blocked)"
            ));
        }
        for e in &expiring {
            warnings.push(format!(
                "grant {} ({}) ends {} ({} days left)",
                e.grant, e.item, e.valid_until, e.days_left
            ));
        }
        if reachable && q.is_none() {
            warnings.push(format!(
                "queue {} does not exist",
                wire::agency_queue(&a.id)
            ));
        }
        all_warnings.extend(warnings.iter().map(|w| format!("agency {}: {w}", a.id)));
        agencies.push(AgencyStatus {
            id: a.id.clone(),
            name: a.name.clone(),
            queue_depth: q.map(|(n, _)| *n),
            dead_letters: dlq.map(|(n, _)| *n),
            consumers: q.map(|(_, c)| *c),
            delivered_last_hour: hour,
            delivered_total: total,
            last_delivery: last.and_then(rfc3339_us),
            kept_for_retry: kept_n,
            grants_in_force: in_force,
            grants_expiring: expiring,
            warnings,
        });
    }
    let mut departments = Vec::new();
    for d in &cat.departments {
        let (received, refused, last, delay) =
            depts.get(&d.id).cloned().unwrap_or((0, 0, None, None));
        let quarantined = depths.get(&wire::quarantine_queue(&d.id)).map(|(n, _)| *n);
        let mut warnings = Vec::new();
        if let Some(n) = quarantined.filter(|n| *n > 0) {
            warnings.push(format!(
                "{n} records in {} (invalid rows its adapters set aside)",
                wire::quarantine_queue(&d.id)
            ));
        }
        if refused > 0 {
            warnings.push(format!("{refused} messages refused"));
        }
        all_warnings.extend(warnings.iter().map(|w| format!("department {}: {w}", d.id)));
        departments.push(DepartmentStatus {
            id: d.id.clone(),
            name: d.name.clone(),
            received,
            refused,
            quarantined,
            last_received: last.and_then(rfc3339_us),
            seconds_behind_source: delay.map(|ms| ms as f64 / 1000.0),
            warnings,
        });
    }
    let partitions = partitions(pool, &depths, partition_count, &rates, &mut all_warnings).await?;
    let links = shared.links.lock().expect("links lock").clone();
    for l in &links.links {
        if !l.up() {
            all_warnings.push(format!(
                "link {} {}: {}{}",
                l.direction,
                l.platform,
                l.state.as_deref().unwrap_or("state unknown"),
                l.backlog
                    .map_or(String::new(), |b| format!(", {b} waiting"))
            ));
        }
    }
    if let Some(n) = links.unrouted.filter(|n| *n > 0) {
        all_warnings.push(format!(
            "{n} messages in {} (no partition took them: see docs/operators.md, \"Unrouted messages\")",
            wire::UNROUTED_QUEUE
        ));
    }
    if !reachable {
        all_warnings.insert(0, "the broker did not answer: queue depths unknown".into());
    }
    if !shared.health.ready() {
        all_warnings.insert(
            0,
            "the router is not consuming (broker unreachable or draining)".into(),
        );
    }
    Ok(Status {
        generated_at: chrono::Utc::now().to_rfc3339(),
        ready: shared.health.ready(),
        broker_reachable: reachable,
        agencies,
        departments,
        refusals,
        partitions,
        rates,
        links,
        warnings: all_warnings,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An RFC 3339 time as the city reads it (Asia/Shanghai), to the second.
fn local(t: &Option<String>) -> String {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| {
            chrono::FixedOffset::east_opt(8 * 3600)
                .map(|tz| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
        })
        .unwrap_or_else(|| "–".into())
}

/// Deliveries per minute over the last [`RATE_MINUTES`], by partition (every partition, even
/// one without deliveries) and by agency.
async fn rates_last_hour(pool: &sqlx::PgPool, count: u8) -> sqlx::Result<Rates> {
    let now_us = chrono::Utc::now().timestamp_micros();
    let minute_us = 60_000_000i64;
    let from_us = now_us - RATE_MINUTES as i64 * minute_us;
    let rows: Vec<(i16, String, i32, i64)> = sqlx::query_as(
        "SELECT chain, agency, (($2 - delivered_at_us) / $3)::int AS ago, count(*)
         FROM ledger WHERE delivered_at_us >= $1 GROUP BY 1, 2, 3",
    )
    .bind(from_us)
    .bind(now_us)
    .bind(minute_us)
    .fetch_all(pool)
    .await?;
    let mut by_partition: std::collections::BTreeMap<i16, Vec<i64>> = (0..i16::from(count))
        .map(|p| (p, vec![0; RATE_MINUTES]))
        .collect();
    let mut by_agency: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (chain, agency, ago, n) in rows {
        let Some(slot) = RATE_MINUTES.checked_sub(1 + ago.max(0) as usize) else {
            continue;
        };
        by_partition
            .entry(chain)
            .or_insert_with(|| vec![0; RATE_MINUTES])[slot] += n;
        by_agency
            .entry(agency)
            .or_insert_with(|| vec![0; RATE_MINUTES])[slot] += n;
    }
    Ok(Rates {
        by_partition: by_partition
            .into_iter()
            .map(|(p, v)| (partition_series(p), v))
            .collect(),
        by_agency: by_agency.into_iter().collect(),
    })
}

/// A partition's line in [`Rates::by_partition`].
fn partition_series(p: i16) -> String {
    format!("p{p}")
}

/// The sum of `name`'s line in `series` (0 without one).
fn sum_of(series: &[(String, Vec<i64>)], name: &str) -> i64 {
    series
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v.iter().sum())
}

/// The partitions' holders, backlogs and last-hour deliveries (from `rates`); a partition no
/// router consumes is a warning.
async fn partitions(
    pool: &sqlx::PgPool,
    depths: &HashMap<String, (u32, u32)>,
    count: u8,
    rates: &Rates,
    warnings: &mut Vec<String>,
) -> sqlx::Result<Vec<PartitionStatus>> {
    let holders: HashMap<i16, (String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as::<_, (i16, String, chrono::DateTime<chrono::Utc>)>(
            "SELECT partition, router, since FROM partition_holders",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(p, r, t)| (p, (r, t)))
        .collect();
    let mut partitions = Vec::new();
    for p in 0..count {
        let q = depths.get(&wire::router_queue(p));
        let holder = holders.get(&i16::from(p));
        if let Some((n, 0)) = q {
            warnings.push(format!(
                "partition {}: no router consumes it{}",
                wire::router_queue(p),
                if *n > 0 {
                    format!(" ({n} records waiting)")
                } else {
                    String::new()
                }
            ));
        }
        partitions.push(PartitionStatus {
            partition: p,
            backlog: q.map(|(n, _)| *n),
            held: q.map(|(_, c)| *c > 0),
            holder: holder.map(|(r, _)| r.clone()),
            holder_since: holder.map(|(_, t)| t.to_rfc3339()),
            delivered_last_hour: sum_of(&rates.by_partition, &partition_series(i16::from(p))),
        });
    }
    Ok(partitions)
}

/// An inline SVG line chart of per-minute counts, one line per series, with a legend.
fn rate_chart(id: &str, title: &str, series: &[(String, Vec<i64>)]) -> String {
    const COLOURS: [&str; 8] = [
        "#1677ff", "#fa541c", "#52c41a", "#722ed1", "#faad14", "#13c2c2", "#eb2f96", "#595959",
    ];
    let (w, h, left, bottom) = (600.0, 160.0, 40.0, 20.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out = format!(
        "<figure id=\"{id}\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        w + 140.0,
        h + bottom,
        esc(title)
    );
    let _ = write!(
        out,
        "<line x1=\"{left}\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/><line x1=\"{left}\" y1=\"0\" x2=\"{left}\" y2=\"{h}\" stroke=\"#999\"/><text x=\"2\" y=\"12\" font-size=\"10\">{max}/min</text><text x=\"{left}\" y=\"{}\" font-size=\"10\">−60 min</text><text x=\"{}\" y=\"{}\" font-size=\"10\">now</text>",
        h + 14.0,
        w - 20.0,
        h + 14.0
    );
    let step = (w - left) / (RATE_MINUTES as f64 - 1.0);
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = values
            .iter()
            .enumerate()
            .map(|(x, v)| {
                format!(
                    "{:.1},{:.1}",
                    left + x as f64 * step,
                    h - (*v as f64 / max) * (h - 4.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            out,
            "<polyline data-series=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{points}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{} ({}/h)</text>",
            esc(name),
            w + 8.0,
            14.0 + 14.0 * i as f64,
            esc(name),
            values.iter().sum::<i64>()
        );
    }
    out.push_str("</svg></figure>\n");
    out
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "–".to_string(), |v| v.to_string())
}

/// The status page: plain HTML, a little CSS, refreshed every 5 seconds. Each number carries
/// `data-agency`/`data-department` and `data-field` so scripts (and the suite) can read it.
pub fn html(s: &Status) -> String {
    let mut h = String::with_capacity(8192);
    h.push_str(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>govbus status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;min-width:60%} th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.warn td{background:#fff1f0} .warn{color:#a8071a;font-weight:600}
ul.warnings{background:#fff1f0;border:1px solid #ffa39e;padding:.6em 1.6em;margin:.6em 0}
.ok{color:#237804} .muted{color:#888}
</style></head><body>
<h1>govbus status</h1>
"#,
    );
    let _ = writeln!(
        h,
        r#"<p class="muted">generated {} (Asia/Shanghai) · router <span id="ready" class="{}">{}</span> · refreshed every 5 s · JSON at <a href="/status">/status</a></p>"#,
        local(&Some(s.generated_at.clone())),
        if s.ready { "ok" } else { "warn" },
        if s.ready {
            "consuming"
        } else {
            "NOT consuming"
        }
    );
    if s.warnings.is_empty() {
        h.push_str("<p class=\"ok\" id=\"warnings\">No warnings.</p>\n");
    } else {
        h.push_str("<ul class=\"warnings\" id=\"warnings\">\n");
        for w in &s.warnings {
            let _ = writeln!(h, "<li class=\"warn\">{}</li>", esc(w));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Agencies</h2>\n<table id=\"agencies\"><tr><th>agency</th><th>queue depth</th><th>consumers</th><th>delivered, last hour</th><th>delivered in all</th><th>last delivery</th><th>kept for retry</th><th>dead letters</th><th>grants in force</th><th>grants ending ≤ 30 days</th></tr>\n");
    for a in &s.agencies {
        let id = esc(&a.id);
        let cell = |field: &str, v: String| {
            format!("<td class=\"n\" data-agency=\"{id}\" data-field=\"{field}\">{v}</td>")
        };
        let expiring = if a.grants_expiring.is_empty() {
            "–".to_string()
        } else {
            a.grants_expiring
                .iter()
                .map(|e| format!("{} ({} days)", esc(&e.grant), e.days_left))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let last_delivery = format!(
            "<td data-agency=\"{id}\" data-field=\"last_delivery\">{}</td>",
            local(&a.last_delivery)
        );
        let _ = writeln!(
            h,
            "<tr{}><td title=\"{}\">{id}</td>{}{}{}{}{}{}{}{}<td data-agency=\"{id}\" data-field=\"grants_expiring\"{}>{expiring}</td></tr>",
            if a.warnings.is_empty() { "" } else { " class=\"warn\"" },
            esc(&a.name),
            cell("queue_depth", opt(&a.queue_depth)),
            cell("consumers", opt(&a.consumers)),
            cell("delivered_last_hour", a.delivered_last_hour.to_string()),
            cell("delivered_total", a.delivered_total.to_string()),
            last_delivery,
            cell("kept_for_retry", a.kept_for_retry.to_string()),
            cell("dead_letters", opt(&a.dead_letters)),
            cell("grants_in_force", a.grants_in_force.to_string()),
            if a.grants_expiring.is_empty() { "" } else { " class=\"warn\"" },
        );
    }
    h.push_str("</table>\n<h2>Departments</h2>\n<table id=\"departments\"><tr><th>department</th><th>received</th><th>refused</th><th>quarantined</th><th>last received</th><th>seconds behind source</th></tr>\n");
    for d in &s.departments {
        let id = esc(&d.id);
        let cell = |field: &str, v: String| {
            format!("<td class=\"n\" data-department=\"{id}\" data-field=\"{field}\">{v}</td>")
        };
        let _ = writeln!(
            h,
            "<tr{}><td title=\"{}\">{id}</td>{}{}{}<td data-department=\"{id}\" data-field=\"last_received\">{}</td>{}</tr>",
            if d.warnings.is_empty() { "" } else { " class=\"warn\"" },
            esc(&d.name),
            cell("received", d.received.to_string()),
            cell("refused", d.refused.to_string()),
            cell("quarantined", opt(&d.quarantined)),
            local(&d.last_received),
            cell(
                "seconds_behind_source",
                d.seconds_behind_source.map_or("–".into(), |s| format!("{s:.1}"))
            ),
        );
    }
    h.push_str("</table>\n<h2>Partitions</h2>\n<table id=\"partitions\"><tr><th>partition</th><th>router</th><th>holder since</th><th>backlog</th><th>delivered, last hour</th></tr>\n");
    for p in &s.partitions {
        let n = p.partition;
        let held = match p.held {
            Some(true) => esc(p.holder.as_deref().unwrap_or("a router")),
            Some(false) => "<span class=\"warn\">NO ROUTER</span>".to_string(),
            None => "–".to_string(),
        };
        let _ = writeln!(
            h,
            "<tr{}><td>govbus.router.{n}</td><td data-partition=\"{n}\" data-field=\"holder\">{held}</td><td>{}</td><td class=\"n\" data-partition=\"{n}\" data-field=\"backlog\">{}</td><td class=\"n\" data-partition=\"{n}\" data-field=\"delivered_last_hour\">{}</td></tr>",
            if p.held == Some(false) { " class=\"warn\"" } else { "" },
            local(&p.holder_since),
            opt(&p.backlog),
            p.delivered_last_hour
        );
    }
    h.push_str("</table>\n<h2>Links to other platforms</h2>\n");
    if s.links.links.is_empty() {
        h.push_str("<p class=\"muted\" id=\"links\">None.</p>\n");
    } else {
        h.push_str("<table id=\"links\"><tr><th>platform</th><th>direction</th><th>state</th><th>backlog</th></tr>\n");
        for l in &s.links.links {
            let p = esc(&l.platform);
            let _ = writeln!(
                h,
                "<tr{}><td>{p}</td><td>{}</td><td data-link=\"{p}\" data-field=\"state\">{}</td><td class=\"n\" data-link=\"{p}\" data-field=\"backlog\">{}</td></tr>",
                if l.up() { "" } else { " class=\"warn\"" },
                if l.direction == "from" { "records come from it" } else { "records go to it" },
                esc(l.state.as_deref().unwrap_or("–")),
                opt(&l.backlog)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(
        h,
        "<p>Unrouted (in {}): <span id=\"unrouted\" data-field=\"unrouted\">{}</span></p>",
        wire::UNROUTED_QUEUE,
        opt(&s.links.unrouted)
    );
    h.push_str("<h2>Delivery rate, last hour</h2>\n");
    h.push_str(&rate_chart(
        "rate-by-partition",
        "Deliveries per minute by partition",
        &s.rates.by_partition,
    ));
    h.push_str(&rate_chart(
        "rate-by-agency",
        "Deliveries per minute by agency",
        &s.rates.by_agency,
    ));
    h.push_str("<h2>Refusals</h2>\n");
    if s.refusals.is_empty() {
        h.push_str("<p class=\"muted\" id=\"refusals\">None.</p>\n");
    } else {
        h.push_str(
            "<table id=\"refusals\"><tr><th>reason</th><th>in all</th><th>last hour</th></tr>\n",
        );
        for r in &s.refusals {
            let reason = esc(&r.reason);
            let _ = writeln!(
                h,
                "<tr><td>{reason}</td><td class=\"n\" data-reason=\"{reason}\" data-field=\"total\">{}</td><td class=\"n\" data-reason=\"{reason}\" data-field=\"last_hour\">{}</td></tr>",
                r.total, r.last_hour
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// The status as plain-text tables (`govbus status`).
pub fn text(s: &Status) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "govbus status at {} (router {})",
        s.generated_at,
        if s.ready {
            "consuming"
        } else {
            "NOT consuming"
        }
    );
    let _ = writeln!(
        t,
        "\n{:<14} {:>9} {:>5} {:>10} {:>10} {:>6} {:>6} {:>7}  last delivery",
        "AGENCY", "QUEUE", "CONS", "LAST HOUR", "TOTAL", "KEPT", "DLQ", "GRANTS"
    );
    for a in &s.agencies {
        let _ = writeln!(
            t,
            "{:<14} {:>9} {:>5} {:>10} {:>10} {:>6} {:>6} {:>7}  {}",
            a.id,
            opt(&a.queue_depth),
            opt(&a.consumers),
            a.delivered_last_hour,
            a.delivered_total,
            a.kept_for_retry,
            opt(&a.dead_letters),
            a.grants_in_force,
            opt(&a.last_delivery)
        );
    }
    let _ = writeln!(
        t,
        "\n{:<14} {:>10} {:>8} {:>11} {:>9}  last received",
        "DEPARTMENT", "RECEIVED", "REFUSED", "QUARANTINE", "BEHIND s"
    );
    for d in &s.departments {
        let _ = writeln!(
            t,
            "{:<14} {:>10} {:>8} {:>11} {:>9}  {}",
            d.id,
            d.received,
            d.refused,
            opt(&d.quarantined),
            d.seconds_behind_source
                .map_or("–".into(), |s| format!("{s:.1}")),
            opt(&d.last_received)
        );
    }
    let _ = writeln!(
        t,
        "\n{:<18} {:>9} {:>10}  router (since)",
        "PARTITION", "BACKLOG", "LAST HOUR"
    );
    for p in &s.partitions {
        let held = match p.held {
            Some(true) => format!(
                "{} ({})",
                p.holder.as_deref().unwrap_or("a router"),
                opt(&p.holder_since)
            ),
            Some(false) => "NO ROUTER".into(),
            None => "–".into(),
        };
        let _ = writeln!(
            t,
            "{:<18} {:>9} {:>10}  {held}",
            wire::router_queue(p.partition),
            opt(&p.backlog),
            p.delivered_last_hour
        );
    }
    if !s.links.links.is_empty() {
        let _ = writeln!(
            t,
            "\n{:<18} {:<5} {:<14} {:>9}",
            "LINK", "DIR", "STATE", "BACKLOG"
        );
        for l in &s.links.links {
            let _ = writeln!(
                t,
                "{:<18} {:<5} {:<14} {:>9}",
                l.platform,
                l.direction,
                l.state.as_deref().unwrap_or("–"),
                opt(&l.backlog)
            );
        }
    }
    let _ = writeln!(t, "unrouted: {}", opt(&s.links.unrouted));
    if !s.refusals.is_empty() {
        let _ = writeln!(
            t,
            "\n{:<24} {:>10} {:>10}",
            "REFUSAL REASON", "TOTAL", "LAST HOUR"
        );
        for r in &s.refusals {
            let _ = writeln!(t, "{:<24} {:>10} {:>10}", r.reason, r.total, r.last_hour);
        }
    }
    if s.warnings.is_empty() {
        t.push_str("\nno warnings\n");
    } else {
        t.push_str("\nWARNINGS\n");
        for w in &s.warnings {
            let _ = writeln!(t, "  ! {w}");
        }
    }
    t
}

/// Background upkeep: refusals past their retention purged and grant expiry gauges every
/// minute; the whole ledger re-verified every
/// `verify_every_secs` (first a minute after start, or after `verify_every_secs` if shorter).
pub async fn housekeeping(
    shared: Arc<Shared>,
    verify_every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    // The first verification a minute after start, or sooner when verifying more often.
    let mut next_verify = tokio::time::Instant::now() + verify_every.min(Duration::from_secs(60));
    loop {
        match crate::store::refusals::purge_expired(
            &shared.pool,
            shared.tunables.refusal_retention_days,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                purged = n,
                days = shared.tunables.refusal_retention_days,
                "refused messages past their retention purged"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot purge old refusals now; retrying later"),
        }
        let routing = shared.routing();
        let today = today_in_shanghai();
        for g in &routing.catalogue.file.grants {
            if let (true, Some(until)) = (g.in_force(today), &g.valid_until) {
                crate::telemetry::grant_days_left(&g.agency, &g.id, (until.0 - today).num_days());
            }
        }
        if !verify_every.is_zero() && tokio::time::Instant::now() >= next_verify {
            let t = std::time::Instant::now();
            match crate::store::ledger::verify(&shared.pool).await {
                Ok(v) => crate::telemetry::ledger_verified(
                    v.broken.is_empty(),
                    v.rows,
                    t.elapsed().as_secs_f64(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot verify the ledger now; retrying later")
                }
            }
            next_verify = tokio::time::Instant::now() + verify_every;
        }
        // Every minute, or sooner when the next verification is due.
        let wake = if verify_every.is_zero() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(60)
                .min(next_verify.saturating_duration_since(tokio::time::Instant::now()))
        };
        tokio::select! {
            () = tokio::time::sleep(wake) => {}
            () = stop.cancelled() => return,
        }
    }
}
