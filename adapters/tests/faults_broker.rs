//! The broker stopped and started (`rabbitmqctl stop_app` / `start_app`) while the adapter
//! publishes: every valid row arrives at least once, duplicates share the message id, none is
//! missing. These tests restart the shared local broker, so they are ignored in the main run
//! and run by `scripts/test` in a step of their own, one at a time.
mod common;

use std::{process::Command, time::Duration};

use bus_schemas::wire;
use common::*;
use tokio_util::sync::CancellationToken;

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run rabbitmqctl ({e}): these tests restart a local RabbitMQ; run them through scripts/test")
    });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cfg` until idle while the broker restarts once it has taken `after` messages.
async fn run_through_restart(env: &Env, cfg: adapters::config::AdapterConfig, after: u32) {
    let run = tokio::spawn(adapters::run(cfg, CancellationToken::new(), true));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while queue_count(&env.vhost, &wire::router_queue(0)).await < after {
        assert!(
            std::time::Instant::now() < deadline,
            "too slow before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let summary = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the adapter finished")
        .unwrap()
        .unwrap();
    assert_fault_hit_the_run(&summary);
}

/// CSV: the broker restarts mid-file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker: run by scripts/test after the rest"]
async fn csv_survives_broker_restart() {
    let env = Env::new("police").await;
    let mut cfg = env.config("police-household");
    cfg.mapping.version_column = None;
    let valid = drop_big_household_file(&env);
    run_through_restart(&env, cfg, 3_000).await;
    assert_big_household_file_arrived(&env, valid.len()).await;
}

/// PostgreSQL: the broker restarts mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker: run by scripts/test after the rest"]
async fn postgres_survives_broker_restart() {
    use govbus_tests::{Services, TestDatabase};
    let env = Env::new("commerce").await;
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let valid = fill_commerce(&db, 20_000, 0).await;
    let mut cfg = env.config("commerce-enterprise");
    if let adapters::source::SourceConfig::Postgres(p) = &mut cfg.source {
        p.url = db.url.clone();
    }
    run_through_restart(&env, cfg, 3_000).await;
    assert_each_record_arrived(
        &env,
        "commerce",
        "enterprise",
        "/unified_social_credit_code",
        valid.len(),
    )
    .await;
}

/// HTTP: the broker restarts mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker: run by scripts/test after the rest"]
async fn http_survives_broker_restart() {
    use common::tax_api::{start_with_rows, tax_config};
    let env = Env::new("localtax").await;
    let (_api, url, valid) = start_with_rows(&env, 20_000).await;
    let cfg = tax_config(&env, &url);
    run_through_restart(&env, cfg, 3_000).await;
    assert_each_record_arrived(
        &env,
        "localtax",
        "registration",
        "/taxpayer_id",
        valid.len(),
    )
    .await;
}
