//! The PostgreSQL source against the real PostgreSQL and RabbitMQ.
mod common;

use common::*;
use govbus_tests::{Services, TestDatabase};
use sqlx::{Connection, PgConnection};

/// 10,000 rows with 100 invalid: exactly the valid ones published, the invalid quarantined;
/// a rerun publishes nothing; afterwards only new, updated and deleted rows are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_polling_publishes_each_change_once() {
    let env = Env::new("commerce").await;
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let valid = fill_commerce(&db, 10_000, 100).await;
    let mut cfg = env.config("commerce-enterprise");
    if let adapters::source::SourceConfig::Postgres(p) = &mut cfg.source {
        p.url = db.url.clone();
        p.poll_interval_ms = 100;
    }
    let changes = async {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO enterprise_registration (uscc, name, updated_at) VALUES ('91440106MA59C0XK09', '改名后', now());
             UPDATE enterprise_registration SET deleted = true, updated_at = now() WHERE uscc = '91440104MA59D1YL15';",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    };
    assert_keyset_polling(&env, cfg, &valid, changes).await;
}

/// Killed with SIGKILL mid-stream and started again: every row at least once, duplicates
/// with the same message id, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let env = Env::new("commerce").await;
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let valid = fill_commerce(&db, 20_000, 0).await;
    let config = env.config_file_with_source("commerce-enterprise", &[], Some(&db.url));
    kill_mid_stream_then_finish(&env, &config, 4_000, valid.len()).await;
    assert_each_record_arrived(
        &env,
        "commerce",
        "enterprise",
        "/unified_social_credit_code",
        valid.len(),
    )
    .await;
}
