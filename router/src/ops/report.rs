//! Yearly reports (articles 41, 42): `govbus report --config router.toml --year Y
//! [--agency ID] --csv FILE --html FILE`. Per agency and item: records shared, replays and
//! timeliness (delay from source change to delivery, p50/p95, against the item's update
//! frequency). Per department and item: records routed, refused attempts, rows quarantined and
//! the quarantine rate, disputes and those upheld. Applications: how many, answered in time, answer time in working days, escalated.
//! Contacts: registrations and changes reported, and how many late (article 34).
//! The CSV is one tidy table (`section,agency,department,item,measure,value`); the HTML page
//! shows the same numbers with bar charts in plain SVG (readable printed). Counts only: no
//! record, name or ID number.
use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, TimeZone};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::{store::counters::BOUNDS_MS, workflow::workdays::Calendar};

fn shanghai() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// What one agency received of one item.
#[derive(Debug, Clone, Serialize)]
pub struct AgencyItem {
    /// Agency.
    pub agency: String,
    /// Item.
    pub item: String,
    /// Responsible department.
    pub department: String,
    /// Deliveries as records arrived.
    pub deliveries: i64,
    /// Deliveries sent again by replays.
    pub replayed: i64,
    /// Median delay from source change to delivery (upper bound of its bucket, ms).
    pub p50_ms: Option<i64>,
    /// 95th percentile of that delay (ms).
    pub p95_ms: Option<i64>,
    /// The item's update frequency in the catalogue.
    pub frequency: String,
    /// `within`, `late` or `unknown` (p95 against the frequency).
    pub timeliness: String,
}

/// What one department published of one item.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DepartmentItem {
    /// Department.
    pub department: String,
    /// Item.
    pub item: String,
    /// Records routed (distinct ingest messages delivered at least once).
    pub records: i64,
    /// Refused attempts (bad signature, schema, not responsible, …).
    pub refused: i64,
    /// Rows the department's adapters quarantined (failed mapping or validation).
    pub quarantined: i64,
    /// Disputes opened over its records.
    pub disputes: i64,
    /// Of them, upheld as a data error and corrected.
    pub disputes_upheld: i64,
}

/// Applications made (agency) or answered (department).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Applications {
    /// `agency` or `department`.
    pub role: String,
    /// The agency or department.
    pub party: String,
    /// Applications.
    pub applications: i64,
    /// Answered by the department within 10 working days.
    pub answered_in_time: i64,
    /// Escalated to the coordinator (late or refused).
    pub escalated: i64,
    /// Granted in full or in part.
    pub granted: i64,
    /// Mean working days from application to the department's answer.
    pub mean_answer_working_days: Option<f64>,
}

/// An agency's contact registrations and changes (article 34).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ContactUpdates {
    /// Agency.
    pub agency: String,
    /// Registrations and changes reported in the year.
    pub reports: i64,
    /// Of them, reported after their 5 working days.
    pub late: i64,
}

/// What was purged of an item in the year at the end of its sharing (articles 30, 38).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ItemPurges {
    /// Item.
    pub item: String,
    /// Latest records (bodies kept for replays) purged.
    pub latest_records: i64,
    /// Kept deliveries purged.
    pub kept_deliveries: i64,
    /// Refused messages' bodies purged.
    pub refused_bodies: i64,
}

/// A year's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Year.
    pub year: i32,
    /// Limited to one agency.
    pub agency: Option<String>,
    /// Per agency and item.
    pub agencies: Vec<AgencyItem>,
    /// Per department and item.
    pub departments: Vec<DepartmentItem>,
    /// Applications.
    pub applications: Vec<Applications>,
    /// Contact updates.
    pub contacts: Vec<ContactUpdates>,
    /// Purged at the end of sharing periods (the whole platform's, even for one agency).
    pub purges: Vec<ItemPurges>,
}

/// The delay an item's update frequency allows (ms), where the catalogue says one we know.
fn allowed_ms(frequency: &str) -> Option<i64> {
    Some(match frequency {
        "realtime" => 300_000,
        "hourly" => 3_600_000,
        "daily" => 86_400_000,
        "weekly" => 7 * 86_400_000,
        "monthly" => 31 * 86_400_000,
        _ => return None,
    })
}

fn percentile(buckets: &BTreeMap<i16, i64>, q: f64) -> Option<i64> {
    let total: i64 = buckets.values().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as i64;
    let mut seen = 0;
    for (b, n) in buckets {
        seen += n;
        if seen >= want {
            return Some(BOUNDS_MS.get(*b as usize).copied().unwrap_or(i64::MAX));
        }
    }
    None
}

/// Builds the report from the router's database.
pub async fn build(
    pool: &PgPool,
    catalogue: &crate::routing::catalogue::Catalogue,
    calendar: Option<&Calendar>,
    year: i32,
    agency: Option<&str>,
) -> anyhow::Result<Report> {
    let from =
        NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(|| anyhow::anyhow!("no year {year}"))?;
    let to = NaiveDate::from_ymd_opt(year + 1, 1, 1)
        .ok_or_else(|| anyhow::anyhow!("no year {}", year + 1))?;
    let us = |d: NaiveDate| {
        shanghai()
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("UTC+8 has no gaps")
            .timestamp_micros()
    };
    let (from_us, to_us) = (us(from), us(to));
    let frequency = |item: &str| {
        catalogue
            .items
            .get(item)
            .map_or(String::new(), |(i, _)| i.update_frequency.clone())
    };

    let mut agencies = Vec::new();
    let mut timely: HashMap<(String, String, String), BTreeMap<i16, i64>> = HashMap::new();
    for r in sqlx::query(
        "SELECT agency, item, department, bucket, sum(deliveries)::bigint FROM timeliness_daily
         WHERE day >= $1 AND day < $2 AND ($3::text IS NULL OR agency = $3)
         GROUP BY 1, 2, 3, 4",
    )
    .bind(from)
    .bind(to)
    .bind(agency)
    .fetch_all(pool)
    .await?
    {
        timely
            .entry((r.get(0), r.get(1), r.get(2)))
            .or_default()
            .insert(r.get(3), r.get(4));
    }
    for r in sqlx::query(
        "SELECT agency, item, department,
                count(*) FILTER (WHERE replay IS NULL), count(*) FILTER (WHERE replay IS NOT NULL)
         FROM ledger
         WHERE delivered_at_us >= $1 AND delivered_at_us < $2 AND ($3::text IS NULL OR agency = $3)
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(from_us)
    .bind(to_us)
    .bind(agency)
    .fetch_all(pool)
    .await?
    {
        let (a, i, d): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let b = timely
            .remove(&(a.clone(), i.clone(), d.clone()))
            .unwrap_or_default();
        let (p50, p95) = (percentile(&b, 0.5), percentile(&b, 0.95));
        let f = frequency(&i);
        let timeliness = match (p95, allowed_ms(&f)) {
            (Some(p), Some(max)) if p <= max => "within",
            (Some(_), Some(_)) => "late",
            _ => "unknown",
        };
        agencies.push(AgencyItem {
            agency: a,
            item: i,
            department: d,
            deliveries: r.get(3),
            replayed: r.get(4),
            p50_ms: p50,
            p95_ms: p95,
            frequency: f,
            timeliness: timeliness.into(),
        });
    }

    let mut departments: BTreeMap<(String, String), DepartmentItem> = BTreeMap::new();
    let mut rows: Vec<(String, String, &'static str, i64)> = Vec::new();
    for r in sqlx::query(
        "SELECT department, item, count(DISTINCT ingest_id) FROM ledger
         WHERE delivered_at_us >= $1 AND delivered_at_us < $2 AND replay IS NULL
           AND ($3::text IS NULL OR agency = $3)
         GROUP BY 1, 2",
    )
    .bind(from_us)
    .bind(to_us)
    .bind(agency)
    .fetch_all(pool)
    .await?
    {
        rows.push((r.get(0), r.get(1), "records", r.get(2)));
    }
    if agency.is_none() {
        for r in sqlx::query(
            "SELECT split_part(routing_key, '.', 1), split_part(routing_key, '.', 2), count(*)
             FROM refusals
             WHERE refused_at >= $1::date::timestamp AT TIME ZONE 'Asia/Shanghai'
               AND refused_at < $2::date::timestamp AT TIME ZONE 'Asia/Shanghai'
             GROUP BY 1, 2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?
        {
            rows.push((r.get(0), r.get(1), "refused", r.get(2)));
        }
        for r in sqlx::query(
            "SELECT department, item, sum(rows)::bigint FROM quarantine_daily
             WHERE day >= $1 AND day < $2 GROUP BY 1, 2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?
        {
            rows.push((r.get(0), r.get(1), "quarantined", r.get(2)));
        }
    }
    for r in sqlx::query(
        "SELECT department, item, count(*),
                count(*) FILTER (WHERE cause = 'data' AND outcome = 'corrected')
         FROM disputes
         WHERE opened_on >= $1 AND opened_on < $2 AND ($3::text IS NULL OR agency = $3)
         GROUP BY 1, 2",
    )
    .bind(from)
    .bind(to)
    .bind(agency)
    .fetch_all(pool)
    .await?
    {
        rows.push((r.get(0), r.get(1), "disputes", r.get(2)));
        rows.push((r.get(0), r.get(1), "disputes_upheld", r.get(3)));
    }
    for (d, i, what, n) in rows {
        let e = departments
            .entry((d.clone(), i.clone()))
            .or_insert_with(|| DepartmentItem {
                department: d,
                item: i,
                ..Default::default()
            });
        match what {
            "records" => e.records += n,
            "refused" => e.refused += n,
            "quarantined" => e.quarantined += n,
            "disputes" => e.disputes += n,
            _ => e.disputes_upheld += n,
        }
    }

    let mut apps: BTreeMap<(String, String), (Applications, Vec<f64>)> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT agency, departments, submitted_on, answer_due, answered_on, escalated_on, outcome
         FROM applications
         WHERE submitted_on >= $1 AND submitted_on < $2 AND ($3::text IS NULL OR agency = $3)",
    )
    .bind(from)
    .bind(to)
    .bind(agency)
    .fetch_all(pool)
    .await?
    {
        let agency_id: String = r.get(0);
        let depts: Vec<String> = r.get(1);
        let submitted: NaiveDate = r.get(2);
        let due: NaiveDate = r.get(3);
        let answered: Option<NaiveDate> = r.get(4);
        let escalated: Option<NaiveDate> = r.get(5);
        let outcome: Option<String> = r.get(6);
        let days = answered.and_then(|a| calendar.map(|c| c.working_days_between(submitted, a)));
        let parties = std::iter::once(("agency".to_string(), agency_id))
            .chain(depts.into_iter().map(|d| ("department".to_string(), d)));
        for (role, party) in parties {
            let (a, d) = apps
                .entry((role.clone(), party.clone()))
                .or_insert_with(|| {
                    (
                        Applications {
                            role,
                            party,
                            ..Default::default()
                        },
                        Vec::new(),
                    )
                });
            a.applications += 1;
            a.answered_in_time += i64::from(answered.is_some_and(|x| x <= due));
            a.escalated += i64::from(escalated.is_some());
            a.granted += i64::from(matches!(
                outcome.as_deref(),
                Some("granted" | "partially_granted")
            ));
            if let Some(n) = days {
                d.push(n as f64);
            }
        }
    }
    let applications = apps
        .into_values()
        .map(|(mut a, d)| {
            if !d.is_empty() {
                a.mean_answer_working_days = Some(d.iter().sum::<f64>() / d.len() as f64);
            }
            a
        })
        .collect();
    let contacts = sqlx::query(
        "SELECT agency, count(*), count(*) FILTER (WHERE late) FROM agency_contacts
         WHERE reported_on >= $1 AND reported_on < $2 AND ($3::text IS NULL OR agency = $3)
         GROUP BY 1 ORDER BY 1",
    )
    .bind(from)
    .bind(to)
    .bind(agency)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| ContactUpdates {
        agency: r.get(0),
        reports: r.get(1),
        late: r.get(2),
    })
    .collect();
    let purges = sqlx::query(
        "SELECT item, sum(latest_records)::bigint, sum(kept_deliveries)::bigint, sum(refused_bodies)::bigint
           FROM purges WHERE purged_at >= to_timestamp($1::bigint / 1e6) AND purged_at < to_timestamp($2::bigint / 1e6)
          GROUP BY 1 ORDER BY 1",
    )
    .bind(from_us)
    .bind(to_us)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| ItemPurges {
        item: r.get(0),
        latest_records: r.get(1),
        kept_deliveries: r.get(2),
        refused_bodies: r.get(3),
    })
    .collect();
    Ok(Report {
        year,
        contacts,
        purges,
        agency: agency.map(String::from),
        agencies,
        departments: departments.into_values().collect(),
        applications,
    })
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or(String::new(), T::to_string)
}

/// The report as one tidy CSV table.
pub fn csv(r: &Report) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "section",
        "agency",
        "department",
        "item",
        "measure",
        "value",
    ])?;
    for a in &r.agencies {
        for (m, v) in [
            ("deliveries", a.deliveries.to_string()),
            ("replayed", a.replayed.to_string()),
            ("delay_p50_ms", opt(&a.p50_ms)),
            ("delay_p95_ms", opt(&a.p95_ms)),
            ("update_frequency", a.frequency.clone()),
            ("timeliness", a.timeliness.clone()),
        ] {
            w.write_record(["agency_item", &a.agency, &a.department, &a.item, m, &v])?;
        }
    }
    for d in &r.departments {
        for (m, v) in [
            ("records", d.records.to_string()),
            ("refused", d.refused.to_string()),
            ("quarantined", d.quarantined.to_string()),
            ("quarantine_rate", rate(d)),
            ("disputes", d.disputes.to_string()),
            ("disputes_upheld", d.disputes_upheld.to_string()),
        ] {
            w.write_record(["department_item", "", &d.department, &d.item, m, &v])?;
        }
    }
    for a in &r.applications {
        let (agency, dept) = if a.role == "agency" {
            (a.party.as_str(), "")
        } else {
            ("", a.party.as_str())
        };
        for (m, v) in [
            ("applications", a.applications.to_string()),
            ("answered_in_time", a.answered_in_time.to_string()),
            ("escalated", a.escalated.to_string()),
            ("granted", a.granted.to_string()),
            (
                "mean_answer_working_days",
                a.mean_answer_working_days
                    .map_or(String::new(), |d| format!("{d:.1}")),
            ),
        ] {
            w.write_record([&format!("applications_{}", a.role), agency, dept, "", m, &v])?;
        }
    }
    for c in &r.contacts {
        for (m, v) in [
            ("contact_reports", c.reports),
            ("contact_reports_late", c.late),
        ] {
            w.write_record(["contacts", &c.agency, "", "", m, &v.to_string()])?;
        }
    }
    for p in &r.purges {
        for (m, v) in [
            ("purged_latest_records", p.latest_records),
            ("purged_kept_deliveries", p.kept_deliveries),
            ("purged_refused_bodies", p.refused_bodies),
        ] {
            w.write_record(["purges", "", "", &p.item, m, &v.to_string()])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Quarantined rows as a share of the rows the department's adapters read (routed plus
/// quarantined), to four decimals; empty when none were read.
fn rate(d: &DepartmentItem) -> String {
    let all = d.records + d.quarantined;
    if all == 0 {
        String::new()
    } else {
        format!("{:.4}", d.quarantined as f64 / all as f64)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms(v: Option<i64>) -> String {
    match v {
        None => "–".into(),
        Some(i64::MAX) => "> 1 d".into(),
        Some(m) if m < 1_000 => format!("≤ {m} ms"),
        Some(m) if m < 60_000 => format!("≤ {} s", m / 1_000),
        Some(m) if m < 3_600_000 => format!("≤ {} min", m / 60_000),
        Some(m) => format!("≤ {} h", m / 3_600_000),
    }
}

/// A horizontal bar chart in plain SVG.
fn bars(title: &str, rows: &[(String, i64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let h = 22 * rows.len() + 30;
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"{h}\" role=\"img\">",
        esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 10 + 22 * i;
        let w = (420.0 * *v as f64 / max).round();
        s.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"160\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"#4a6fa5\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{v}</text>",
            y + 12,
            esc(label),
            166.0 + w,
            y + 12
        ));
    }
    s.push_str("</svg></figure>\n");
    s
}

/// The report as one HTML page (tables and SVG charts; prints on A4).
pub fn html(r: &Report) -> String {
    let scope = r
        .agency
        .as_deref()
        .map_or("all agencies".to_string(), |a| format!("agency {a}"));
    let total: i64 = r.agencies.iter().map(|a| a.deliveries).sum();
    let replayed: i64 = r.agencies.iter().map(|a| a.replayed).sum();
    let mut h = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>govbus report {y}</title>\
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #999;padding:2px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
.late{{background:#fdd}}@media print{{figure{{break-inside:avoid}}}}</style></head><body>\
<h1>Government information sharing, {y} ({scope})</h1>\
<p>Deliveries as records arrived: <strong id=\"total-deliveries\">{total}</strong>; sent again by replays: <strong id=\"total-replayed\">{replayed}</strong>. \
Delays are from the change in the department's system to the delivery, in buckets (≤ bound).</p>\n",
        y = r.year
    );
    let mut per_agency: BTreeMap<&str, i64> = BTreeMap::new();
    for a in &r.agencies {
        *per_agency.entry(&a.agency).or_default() += a.deliveries;
    }
    h.push_str(&bars(
        "Deliveries per agency",
        &per_agency
            .iter()
            .map(|(a, n)| (a.to_string(), *n))
            .collect::<Vec<_>>(),
    ));
    h.push_str("<h2>Agencies: records shared and timeliness (article 42)</h2>\n<table id=\"agencies\"><tr><th>agency</th><th>item</th><th>department</th><th>deliveries</th><th>replayed</th><th>delay p50</th><th>delay p95</th><th>update frequency</th><th>timeliness</th></tr>\n");
    for a in &r.agencies {
        h.push_str(&format!(
            "<tr class=\"{}\" data-agency=\"{}\" data-item=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td data-measure=\"deliveries\">{}</td><td data-measure=\"replayed\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if a.timeliness == "late" { "late" } else { "" },
            esc(&a.agency),
            esc(&a.item),
            esc(&a.agency),
            esc(&a.item),
            esc(&a.department),
            a.deliveries,
            a.replayed,
            ms(a.p50_ms),
            ms(a.p95_ms),
            esc(&a.frequency),
            esc(&a.timeliness)
        ));
    }
    h.push_str("</table>\n<h2>Departments: records, refusals, accuracy (article 41)</h2>\n<table id=\"departments\"><tr><th>department</th><th>item</th><th>records routed</th><th>refused attempts</th><th>quarantined rows</th><th>quarantine rate</th><th>disputes</th><th>upheld and corrected</th></tr>\n");
    for d in &r.departments {
        h.push_str(&format!(
            "<tr data-department=\"{}\" data-item=\"{}\"><td>{}</td><td>{}</td><td data-measure=\"records\">{}</td><td data-measure=\"refused\">{}</td><td data-measure=\"quarantined\">{}</td><td>{}</td><td data-measure=\"disputes\">{}</td><td data-measure=\"disputes_upheld\">{}</td></tr>\n",
            esc(&d.department),
            esc(&d.item),
            esc(&d.department),
            esc(&d.item),
            d.records,
            d.refused,
            d.quarantined,
            rate(d),
            d.disputes,
            d.disputes_upheld
        ));
    }
    h.push_str("</table>\n<h2>Applications and their answers (articles 35, 36)</h2>\n<table id=\"applications\"><tr><th>party</th><th>role</th><th>applications</th><th>answered in time</th><th>escalated</th><th>granted</th><th>mean answer, working days</th></tr>\n");
    for a in &r.applications {
        h.push_str(&format!(
            "<tr data-party=\"{}\"><td>{}</td><td>{}</td><td data-measure=\"applications\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&a.party),
            esc(&a.party),
            esc(&a.role),
            a.applications,
            a.answered_in_time,
            a.escalated,
            a.granted,
            a.mean_answer_working_days
                .map_or("–".into(), |d| format!("{d:.1}"))
        ));
    }
    h.push_str("</table>\n<h2>Contacts reported (article 34: changes within 5 working days)</h2>\n<table id=\"contacts\"><tr><th>agency</th><th>reports</th><th>late</th></tr>\n");
    for c in &r.contacts {
        h.push_str(&format!(
            "<tr data-agency=\"{}\"{}><td>{}</td><td data-measure=\"contact_reports\">{}</td><td data-measure=\"contact_reports_late\">{}</td></tr>\n",
            esc(&c.agency),
            if c.late > 0 { " class=\"late\"" } else { "" },
            esc(&c.agency),
            c.reports,
            c.late
        ));
    }
    h.push_str("</table>\n<h2>Purged at the end of sharing (articles 30, 38)</h2>\n<table id=\"purges\"><tr><th>item</th><th>latest records</th><th>kept deliveries</th><th>refused bodies</th></tr>\n");
    for p in &r.purges {
        h.push_str(&format!(
            "<tr data-item=\"{0}\"><td>{0}</td><td data-measure=\"purged_latest_records\">{1}</td><td data-measure=\"purged_kept_deliveries\">{2}</td><td data-measure=\"purged_refused_bodies\">{3}</td></tr>\n",
            esc(&p.item),
            p.latest_records,
            p.kept_deliveries,
            p.refused_bodies
        ));
    }
    h.push_str("</table></body></html>\n");
    h
}
