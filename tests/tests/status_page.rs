//! The operators' status page, read by headless Chromium while records flow: its numbers
//! match the ledger and the queues; `/status` and `govbus status` say the same.
mod common;

use std::time::Duration;

use common::World;
use govbus_tests::{chromium_dom, Process};
use lapin::{options::BasicPublishOptions, BasicProperties};

/// The number in the cell `data-<kind>="<id>" data-field="<field>"` of a page.
fn cell(dom: &str, kind: &str, id: &str, field: &str) -> String {
    let marker = format!("data-{kind}=\"{id}\" data-field=\"{field}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no cell {marker} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].trim().to_string()
}

fn num(dom: &str, kind: &str, id: &str, field: &str) -> i64 {
    let v = cell(dom, kind, id, field);
    v.parse()
        .unwrap_or_else(|_| panic!("{kind} {id} {field} is {v:?}, not a number"))
}

async fn ledger_rows(w: &World, agency: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger WHERE agency = $1")
        .bind(agency)
        .fetch_one(&w.pg().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_matches_the_ledger_and_the_queues() {
    let mut w = World::new().await;
    w.start_router().await;
    // A message the router refuses (not signed), so refusals show.
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    // Confirmed before the connection closes: otherwise the close may lose it.
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "govbus.ingest".into(),
        "police.household.7".into(),
        BasicPublishOptions::default(),
        b"not avro",
        BasicProperties::default().with_message_id("forged-1".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "ok".into()).await;
    let cfg = w.commerce(0, 40);
    w.run_adapter(&cfg);
    // Records flowing while the page is read.
    let cfg = w.police(0, 3000, 1);
    let mut adapter = Process::command("govbus-adapter");
    adapter.arg("--config").arg(&cfg).arg("--once");
    let adapter = std::thread::spawn(move || adapter.status().unwrap());
    let url = w.api_url("/");
    let mut flowing_reads = 0;
    while !adapter.is_finished() || flowing_reads == 0 {
        let before = ledger_rows(&w, "civil").await;
        let u = url.clone();
        let dom = tokio::task::spawn_blocking(move || chromium_dom(&u))
            .await
            .unwrap();
        let after = ledger_rows(&w, "civil").await;
        let shown = num(&dom, "agency", "civil", "delivered_total");
        assert!(
            (before..=after).contains(&shown),
            "the page shows {shown} deliveries to civil; the ledger had {before} before and {after} after"
        );
        flowing_reads += 1;
        if flowing_reads >= 3 {
            break;
        }
    }
    assert!(adapter.join().unwrap().success());
    w.settle(Duration::from_millis(500)).await;
    // Drain hrss, so one agency's queue is empty and the others are not.
    let hrss = w.drain("agency.hrss", Duration::from_millis(300)).await;
    let u = url.clone();
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&u))
        .await
        .unwrap();
    for agency in ["civil", "health", "hrss", "tianhe"] {
        let rows = ledger_rows(&w, agency).await;
        assert_eq!(
            num(&dom, "agency", agency, "delivered_total"),
            rows,
            "{agency}"
        );
        assert_eq!(
            num(&dom, "agency", agency, "delivered_last_hour"),
            rows,
            "{agency}"
        );
        let depth = w.count(&format!("agency.{agency}")).await as i64;
        assert_eq!(
            num(&dom, "agency", agency, "queue_depth"),
            depth,
            "{agency} queue"
        );
        assert_eq!(
            num(&dom, "agency", agency, "dead_letters"),
            0,
            "{agency} dlq"
        );
    }
    assert_eq!(num(&dom, "agency", "civil", "delivered_total"), 3000);
    assert_eq!(num(&dom, "agency", "hrss", "queue_depth"), 0);
    assert_eq!(hrss.len(), 40);
    assert_eq!(num(&dom, "agency", "civil", "grants_in_force"), 1);
    assert_eq!(num(&dom, "department", "police", "received"), 3001);
    assert_eq!(num(&dom, "department", "police", "refused"), 1);
    assert_eq!(num(&dom, "department", "commerce", "received"), 40);
    assert_eq!(num(&dom, "department", "localtax", "received"), 0);
    assert_eq!(num(&dom, "department", "commerce", "quarantined"), 0);
    let behind: f64 = cell(&dom, "department", "police", "seconds_behind_source")
        .parse()
        .unwrap();
    assert!((0.0..600.0).contains(&behind), "police {behind} s behind");
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM refusals")
        .fetch_one(&w.pg().await)
        .await
        .unwrap();
    assert_eq!(refused, 1);
    assert!(
        dom.contains("data-field=\"total\">1<"),
        "refusals by reason: {dom}"
    );
    // Warnings stand out: queues with deliveries and no consumer.
    assert!(dom.contains("class=\"warnings\""), "{dom}");
    assert!(dom.contains("deliveries waiting and no consumer"));
    // No personal data on the page.
    assert!(!dom.contains("居民"), "a name on the status page");
    assert!(
        !dom.contains(&common::citizen(1)),
        "an ID number on the status page"
    );
    // The JSON and the command line say the same.
    let json: serde_json::Value = reqwest::get(w.api_url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let civil = json["agencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "civil")
        .unwrap();
    assert_eq!(civil["delivered_total"], 3000);
    let out = Process::command("govbus")
        .args(["status", "--api-url", &w.api_url("")])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "warnings → exit 1:\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("civil "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" 3000 "), "{line}");
    assert!(text.contains("WARNINGS"), "{text}");
}

/// `/status` and `/` are computed at most once a second and shared by every request in it:
/// a burst of 100 requests costs one computation per second it lasts, not 100 (each
/// computation queries PostgreSQL and probes RabbitMQ, and the page is public).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_is_computed_once_a_second_for_everyone() {
    let mut w = World::new().await;
    w.start_router().await;
    let computed = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("govbus_router_status_computed_total "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    let before = computed(&w.metrics().await);
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let requests = (0..100).map(|i| {
        let url = w.api_url(if i % 2 == 0 { "/status" } else { "/" });
        let c = client.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let n = computed(&w.metrics().await) - before;
    assert!(
        n >= 1 && n <= elapsed.as_secs() + 1,
        "{n} computations for 100 requests in {elapsed:?}"
    );
}
