//! The MySQL source against the real MariaDB and RabbitMQ: the PostgreSQL source's tests,
//! passing against MariaDB, and a wrong column named before anything is read.
mod common;

use common::*;
use tokio_util::sync::CancellationToken;

/// 10,000 rows with 100 invalid: exactly the valid ones published, the invalid quarantined;
/// a rerun publishes nothing; afterwards only new, updated and deleted rows are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_polling_publishes_each_change_once() {
    let env = Env::new("commerce").await;
    let db = MysqlDatabase::create().await;
    let valid = fill_commerce_mysql(&db, 10_000, 100).await;
    let mut cfg = env.config("commerce-enterprise-mysql");
    if let adapters::source::SourceConfig::Mysql(p) = &mut cfg.source {
        p.url = db.url.clone();
        p.poll_interval_ms = 100;
    }
    let changes = async {
        let mut conn = db.connect().await;
        sqlx::raw_sql(
            "INSERT INTO enterprise_registration (uscc, name, updated_at) VALUES ('91440106MA59C0XK09', '改名后', NOW(6));
             UPDATE enterprise_registration SET deleted = TRUE, updated_at = NOW(6) WHERE uscc = '91440104MA59D1YL15';",
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
    let db = MysqlDatabase::create().await;
    let valid = fill_commerce_mysql(&db, 20_000, 0).await;
    let config = env.config_file_with_source("commerce-enterprise-mysql", &[], Some(&db.url));
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

/// A cursor column the query does not return is a fatal error naming it and the query's
/// columns; a table that does not exist names MySQL's error. Nothing is published.
#[tokio::test]
async fn a_wrong_query_is_named() {
    let env = Env::new("commerce").await;
    let db = MysqlDatabase::create().await;
    fill_commerce_mysql(&db, 0, 0).await;
    let mut cfg = env.config("commerce-enterprise-mysql");
    let adapters::source::SourceConfig::Mysql(p) = &mut cfg.source else {
        panic!("the example is a MySQL source")
    };
    p.url = db.url.clone();
    p.cursor_column = "modified".into();
    let e = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("`modified` is not a column of source.query") && e.contains("updated_at"),
        "{e}"
    );
    let adapters::source::SourceConfig::Mysql(p) = &mut cfg.source else {
        unreachable!()
    };
    p.cursor_column = "updated_at".into();
    p.query = "SELECT * FROM enterprise_registrations".into();
    let e = format!(
        "{:#}",
        adapters::run(cfg, CancellationToken::new(), true)
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("error 1146") && e.contains("fix source.query"),
        "{e}"
    );
}
