//! The HTTP source against a real HTTP server of the test's own (loopback) and the real broker.
mod common;

use std::{collections::HashSet, time::Duration};

use bus_schemas::wire;
use common::{tax_api::*, *};
use tokio_util::sync::CancellationToken;

/// 10,000 rows over 20 pages with 100 invalid and a 503 on one page: exactly the valid rows
/// published, the invalid quarantined, the 503 retried; a rerun publishes nothing; rows added
/// to the API later are published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pages_retries_and_increments() {
    let env = Env::new("localtax").await;
    let (data, mut valid) = rows(0, 10_000, 100);
    let api = Api {
        rows: data,
        fail_once: ["5000".to_string()].into(),
        requests: 0,
    };
    let (api, url) = start(&env, api).await;
    let cfg = tax_config(&env, &url);
    let s = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (9_900, 100));
    assert!(
        api.lock().unwrap().fail_once.is_empty(),
        "the 503 was met and retried"
    );
    let s = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (0, 0));
    let (more, more_valid) = rows(10_000, 10, 0);
    api.lock().unwrap().rows.extend(more);
    valid.extend(more_valid);
    let s = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (10, 0));

    let got = drain(&env.vhost, &wire::router_queue(0), Duration::from_secs(2)).await;
    assert_eq!(got.len(), 9_910);
    let by_key = check_records(&got, &env, "localtax", "registration", "/taxpayer_id");
    assert_eq!(
        by_key.keys().cloned().collect::<HashSet<_>>(),
        valid.into_iter().collect()
    );
    let q = drain(
        &env.vhost,
        &wire::quarantine_queue("localtax"),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(q.len(), 100);
    assert_eq!(
        q[0].header_str(wire::header::FIELD),
        "unified_social_credit_code"
    );
    assert!(q[0]
        .header_str(wire::header::SOURCE_POSITION)
        .starts_with("page "));
}

/// A 4xx stops the adapter with an error naming the status; it is not retried.
#[tokio::test]
async fn unauthorized_stops_clearly() {
    let env = Env::new("localtax").await;
    let api = Api {
        rows: rows(0, 5, 0).0,
        ..Default::default()
    };
    let (api, url) = start(&env, api).await;
    let cfg = tax_config(&env, &url);
    std::fs::write(env.path("keys/api-token"), "wrong\n").unwrap();
    let e = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401"), "{e}");
    assert_eq!(api.lock().unwrap().requests, 0, "the token never matched");
}

/// Killed with SIGKILL mid-stream and started again: none missing, duplicates share ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let env = Env::new("localtax").await;
    let (_api, url, valid) = start_with_rows(&env, 20_000).await;
    let config = env.config_file_with_source("tax-registration", &[], Some(&url));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "bearer_token_file = \"keys/api-token\"",
        &format!(
            "bearer_token_file = {:?}\npoll_interval_ms = 100",
            env.path("keys/api-token")
        ),
    );
    std::fs::write(&config, text).unwrap();
    kill_mid_stream_then_finish(&env, &config, 4_000, valid.len()).await;
    assert_each_record_arrived(
        &env,
        "localtax",
        "registration",
        "/taxpayer_id",
        valid.len(),
    )
    .await;
}
