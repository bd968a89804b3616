//! The CSV source against the real RabbitMQ: every valid row published once, every invalid
//! row quarantined with its reason, nothing twice on a rerun, nothing lost when killed.
mod common;

use std::{collections::HashSet, time::Duration};

use bus_schemas::wire::{self, header};
use common::*;
use tokio_util::sync::CancellationToken;

/// A 10,000-row GB18030 export with 100 invalid rows: exactly 9,900 records reach the ingest
/// exchange, signed and keyed as the wire contract says, and 100 reach the department's
/// quarantine queue each with its reason; running again publishes nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_one_hundred_invalid() {
    let env = Env::new("police").await;
    let cfg = env.config("police-household");
    let (csv, valid) = household_csv(10_000, 100, true);
    drop_gb18030(&env.path("inbox/household-0001.csv"), &csv);

    let summary = adapters::run(cfg.clone(), CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((summary.published, summary.quarantined), (9_900, 100));
    assert_eq!(queue_count(&env.vhost, &wire::router_queue(0)).await, 9_900);
    assert_eq!(
        queue_count(&env.vhost, &wire::quarantine_queue("police")).await,
        100
    );
    assert!(
        env.path("inbox/done/household-0001.csv").exists(),
        "a sent file moves to done/"
    );

    // Running again publishes nothing new.
    let again = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((again.published, again.quarantined), (0, 0));
    assert_eq!(queue_count(&env.vhost, &wire::router_queue(0)).await, 9_900);

    let records = drain(&env.vhost, &wire::router_queue(0), Duration::from_secs(2)).await;
    assert_eq!(records.len(), 9_900);
    let by_key = check_records(&records, &env, "police", "household", "/citizen_id_number");
    let keys: HashSet<_> = by_key.keys().cloned().collect();
    assert_eq!(
        keys,
        valid.into_iter().collect::<HashSet<_>>(),
        "exactly the valid rows"
    );
    let ids: HashSet<_> = records.iter().map(|g| g.message_id.clone()).collect();
    assert_eq!(ids.len(), 9_900, "one message id per record version");

    let quarantined = drain(
        &env.vhost,
        &wire::quarantine_queue("police"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(quarantined.len(), 100);
    let mut reasons = HashSet::new();
    for q in &quarantined {
        assert_eq!(q.content_type, wire::JSON_CONTENT_TYPE);
        let reason = q.header_str(header::REASON);
        let field = q.header_str(header::FIELD);
        assert!(!reason.is_empty() && !field.is_empty());
        assert!(q
            .header_str(header::SOURCE_POSITION)
            .starts_with("household-0001.csv:line "));
        let row: serde_json::Value = serde_json::from_slice(&q.body).unwrap();
        assert!(
            row["公民身份号码"].is_string(),
            "the body is the source row"
        );
        assert!(
            !reason.contains(row["公民身份号码"].as_str().unwrap()),
            "no ID number in the reason"
        );
        reasons.insert(field);
    }
    assert_eq!(
        reasons,
        ["citizen_id_number", "sex", "cancellation_date"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "bad check digit, bad sex code, future date and impossible date are all named"
    );
}

/// Deletes are tombstones carrying only the key; a Traditional-spelled code maps; a row with
/// a missing field is quarantined, not dropped, and does not block the rows after it.
#[tokio::test]
async fn deletes_codes_and_broken_rows() {
    let env = Env::new("police").await;
    let cfg = env.config("police-household");
    let id = citizen_id(1);
    let text = format!(
        "姓名,公民身份号码,性别,民族,户籍地镇街道,户籍地派出所,户籍状态,注销前行政区划,注销日期,注销原因,变更时间,操作,版本号\r\n\
         王芳,{id},女,漢族,北京街道,北京街派出所,註銷,440104,2016年5月1日,遷出,2016-05-17 09:30:00,U,7\r\n\
         broken,row\r\n\
         王芳,{id},女,汉族,,,,,,,2016-05-18 10:00:00,D,8\r\n"
    );
    drop_gb18030(&env.path("inbox/a.csv"), &text);
    let s = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!((s.published, s.quarantined), (2, 1));
    let got = drain(&env.vhost, &wire::router_queue(0), Duration::from_secs(1)).await;
    let reg = bus_schemas::Registry::standard();
    let (_, upsert) = reg.decode_to_json(&got[0].body).unwrap();
    assert_eq!(upsert["ethnicity"], "01");
    assert_eq!(upsert["status"], "注销");
    assert_eq!(upsert["cancellation_reason"], "迁出");
    assert_eq!(upsert["cancellation_date"], "2016-05-01");
    assert_eq!(got[1].header_str(header::OP), "delete");
    assert_eq!(got[1].header_i64(header::VERSION), 8);
    let (_, tomb) = reg.decode_to_json(&got[1].body).unwrap();
    assert_eq!(tomb["citizen_id_number"], id.as_str());
    assert!(
        tomb["name"].is_null() && tomb["sex"].is_null(),
        "a tombstone carries only the key"
    );
    let q = drain(
        &env.vhost,
        &wire::quarantine_queue("police"),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(q.len(), 1);
    assert!(q[0]
        .header_str(header::REASON)
        .contains("fields but the header has"));
    assert_eq!(q[0].header_str(header::SOURCE_POSITION), "a.csv:line 3");
}

/// The adapter killed with SIGKILL in the middle of a file and started again: every valid row
/// arrives at least once, a duplicate has the same message id, none is missing. The export
/// has no version column, so versions come from the first read, kept across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_file_loses_nothing() {
    let env = Env::new("police").await;
    let config = env.config_file("police-household", &["version_column"]);
    let valid = drop_big_household_file(&env);

    kill_mid_stream_then_finish(&env, &config, 4_000, valid.len()).await;
    assert_big_household_file_arrived(&env, valid.len()).await;
}

/// Hostile CSV: a UTF-8 BOM, a NUL byte, a 1 MB field, a formula-injection string, a line
/// with the wrong number of fields. None crashes the adapter; none is lost: each row is
/// published or quarantined with its reason.
#[tokio::test]
async fn hostile_csv_rows_are_published_or_quarantined_never_lost() {
    let env = Env::new("police").await;
    let cfg = env.config("police-household");
    let header = "姓名,公民身份号码,性别,民族,户籍地镇街道,户籍地派出所,户籍状态,注销前行政区划,注销日期,注销原因,变更时间,操作,版本号";
    let row = |name: &str, n: u64, town: &str| {
        format!(
            "{name},{},男,汉族,{town},石牌派出所,正常,,,,2016-05-17 09:30:00,U,1\n",
            citizen_id(n)
        )
    };
    let big = "街".repeat(350_000); // about 1 MB in UTF-8
    let text = format!(
        "\u{feff}{header}\n{}{}{}{}{}too,few\n",
        row("王芳", 1, "石牌街道"),
        row("王\u{0}芳", 2, "石牌街道"),
        row("李娜", 3, &big),
        row("=cmd|' /C calc'!A0", 4, "石牌街道"),
        row("张伟", 5, "石牌街道"),
    );
    std::fs::write(env.path("inbox/hostile.csv"), text).unwrap();
    let s = adapters::run(cfg, CancellationToken::new(), true)
        .await
        .unwrap();
    assert_eq!(
        (s.published, s.quarantined),
        (2, 4),
        "every line is accounted for"
    );
    assert_eq!(queue_count(&env.vhost, &wire::router_queue(0)).await, 2);
    let q = drain(
        &env.vhost,
        &wire::quarantine_queue("police"),
        Duration::from_secs(1),
    )
    .await;
    let mut reasons: Vec<(String, String)> = q
        .iter()
        .map(|m| (m.header_str(header::FIELD), m.header_str(header::REASON)))
        .collect();
    reasons.sort();
    let has = |field: &str, rule: &str| reasons.iter().any(|(f, r)| f == field && r.contains(rule));
    assert!(has("name", "text-no-control"), "{reasons:?}");
    assert!(has("registered_town", "text-length"), "{reasons:?}");
    assert!(has("name", "name-not-formula"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(_, r)| r.contains("2 fields but the header has 13")),
        "{reasons:?}"
    );
    // The reasons never echo the value.
    assert!(reasons
        .iter()
        .all(|(_, r)| !r.contains("cmd") && !r.contains('\u{0}')));
}
