//! What Prometheus scrapes carries what the alerts and the dashboard ask for: every metric
//! that `deploy/prometheus/alerts.yml` or `deploy/grafana/dashboards/govbus.json` uses is served
//! by the endpoint `deploy/prometheus/prometheus.yml` scrapes for it (the router's and an
//! adapter's `/metrics`, RabbitMQ's `/metrics/per-object`), with the labels the rules select on.
mod common;

use std::{collections::BTreeSet, time::Duration};

use bus_schemas::wire;
use common::World;
use govbus_tests::{workspace_root, Process, Services};
use lapin::{options::BasicPublishOptions, BasicProperties};

/// The metric names an alert expression or a dashboard query uses (`govbus_…`, `rabbitmq_…`).
fn used_metrics() -> BTreeSet<String> {
    let root = workspace_root();
    let mut text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    text += &std::fs::read_to_string(root.join("deploy/grafana/dashboards/govbus.json")).unwrap();
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["govbus_", "rabbitmq_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| start + n);
            let before = start.checked_sub(1).map(|b| bytes[b]);
            // `govbus_` inside another word (a job name such as `govbus-router` does not match).
            if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    out
}

/// The metric names of a Prometheus text exposition, each with its label sets.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.unwrap_or_else(|e| {
        panic!(
            "cannot scrape {url} ({e}): RabbitMQ's exporter is the rabbitmq_prometheus plugin \
             (rabbitmq-plugins enable rabbitmq_prometheus; scripts/test enables it)"
        )
    });
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.text().await.unwrap()
}

/// The alerts and the dashboard ask only for metrics that the scraped endpoints serve: a
/// renamed or never-exported metric is a rule that can never fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_metrics_that_exist() {
    let prometheus_yml =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(
        prometheus_yml.contains("metrics_path: /metrics/per-object"),
        "prometheus.yml scrapes RabbitMQ's per-object endpoint; this test reads the same one"
    );
    let mut w = World::new().await;
    // A grant with an end date (the grant expiry gauge) and the ledger verified a second
    // after start (its gauges), so every router metric a rule uses has a value.
    let cat = w.path("catalogue.toml");
    let text = std::fs::read_to_string(&cat).unwrap().replace(
        "purpose = \"缴费单位核对\"\nvalid_from = 2026-01-01\n",
        "purpose = \"缴费单位核对\"\nvalid_from = 2026-01-01\nvalid_until = 2099-12-31\n",
    );
    assert!(text.contains("valid_until = 2099-12-31"));
    // A linked platform the router sends to (the link gauges).
    let text = text
        + r#"
[[platform]]
id = "tianhe_district"
name = "天河区政务数据共享平台"
region = "440106"

[[grant]]
id = "tianhe-district-household"
revision = 1
platform = "tianhe_district"
item = "household"
fields = ["citizen_id_number", "name"]
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第三十二条"
purpose = "天河区户籍人口服务"
valid_from = 2026-01-01
"#;
    std::fs::write(&cat, text).unwrap();
    let cfg = w.path("router.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[router]\n",
        "[router]\nverify_every_secs = 1\nlink_poll_ms = 200\n",
    );
    std::fs::write(&cfg, text).unwrap();
    w.start_router().await;

    // An adapter that keeps running (its /metrics), with one row it must quarantine.
    let adapter_cfg = w.police(0, 20, 1);
    let port = govbus_tests::free_port();
    let text = std::fs::read_to_string(&adapter_cfg).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&adapter_cfg, text).unwrap();
    w.drop_csv(
        "police",
        "bad.csv",
        "id,name,sex,ethnicity,status,version,op\n440101199001011234,,1,01,正常,1,\n",
    );
    let _adapter = Process::spawn(
        "govbus-adapter",
        &["--config".as_ref(), adapter_cfg.as_os_str()],
    );
    // A message the router refuses (an item no catalogue has), so refusals are counted.
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        wire::INGEST_EXCHANGE.into(),
        "police.no_such_item.7".into(),
        BasicPublishOptions::default(),
        b"not a record",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    w.await_metric(
        "govbus_router_refusals_total",
        60,
        "the refusal was never counted",
    )
    .await;
    w.await_metric(
        "govbus_router_ledger_verified",
        60,
        "the ledger was never verified",
    )
    .await;
    w.await_metric("govbus_link_up", 60, "the link was never polled")
        .await;
    w.await_metric(
        "govbus_router_ledger_rows_total",
        60,
        "nothing was delivered",
    )
    .await;

    let adapter_url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let adapter = loop {
        // Not listening yet: an empty text, and another try.
        let text = match reqwest::get(&adapter_url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("govbus_adapter_records_quarantined_total")
            && text.contains("govbus_adapter_records_confirmed_total 20")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the adapter's /metrics never showed 20 confirmed and 1 quarantined:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let router = w.metrics().await;
    // RabbitMQ collects queue statistics every `collect_statistics_interval` (5 s by
    // default): this world's queues appear in the exporter some seconds after they exist.
    let per_object = format!("{}/metrics/per-object", Services::from_env().prometheus_url);
    // The queue-depth rules select agency queues by the `queue` label: RabbitMQ labels its
    // per-queue series with `queue` and `vhost`, and this world's agency queue must be among
    // them. Queues of one vhost appear one by one, so wait for that very series.
    let ours = format!("rabbitmq_queue_messages_ready{{vhost=\"{}\"", w.vhost.name);
    let agency_queue = format!("queue=\"{}\"", wire::agency_queue("civil"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rabbitmq = loop {
        let text = scrape(&per_object).await;
        if text
            .lines()
            .any(|l| l.starts_with(&ours) && l.contains(&agency_queue))
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{per_object} showed no rabbitmq_queue_messages_ready series for {agency_queue} of vhost {} in 30 s",
            w.vhost.name
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let served: BTreeSet<String> = exposed(&router)
        .into_iter()
        .chain(exposed(&adapter))
        .chain(exposed(&rabbitmq))
        .collect();
    let used = used_metrics();
    assert!(
        used.iter().any(|m| m.starts_with("rabbitmq_")),
        "the rules use RabbitMQ's queue depths"
    );
    let missing: Vec<&String> = used.iter().filter(|m| !served.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "alerts or dashboard panels use metrics no scraped endpoint serves: {missing:?}"
    );
    let _ = conn.close(200, "done".into()).await;
}
