//! What an agency runs: `govbus-agency sink` into its own PostgreSQL table or a webhook, and
//! `govbus-agency tail`, against a live router.
mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{citizen, wait_for, World};
use lapin::{options::BasicPublishOptions, types::FieldTable, BasicProperties};

async fn rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// A record the agency's own database refuses (here its CHECK constraint) is tried a few
/// times on its own, then dead-lettered to the agency's .dlq; every other record lands and
/// the queue does not stall behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dead_letters_a_record_its_database_refuses_and_the_rest_flow() {
    let mut w = World::new().await;
    w.start_router().await;
    let pool = w.pg().await;
    let refused = citizen(7);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE civil_household (
            govbus_item text NOT NULL, govbus_key text NOT NULL, govbus_version bigint NOT NULL,
            govbus_message_id text NOT NULL, govbus_received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (govbus_item, govbus_key),
            CONSTRAINT not_this_one CHECK (govbus_key <> '{refused}'))"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let cfg = w.police(0, 200, 1);
    w.run_adapter(&cfg);
    let _sink = w.spawn_agency_tool(
        "sink",
        "civil",
        &[
            "--postgres",
            &w.db.url,
            "--table",
            "civil_household",
            "--batch",
            "50",
        ],
    );
    wait_for(120, "199 rows landed and the queue drained", || async {
        rows(&pool, "civil_household").await == 199 && w.count("agency.civil").await == 0
    })
    .await;
    let landed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM civil_household WHERE govbus_key = $1")
            .bind(&refused)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(landed, 0);
    wait_for(
        30,
        "the refused record reached agency.civil.dlq",
        || async { w.count("agency.civil.dlq").await == 1 },
    )
    .await;
}

/// Police household deletes for `from..to` at `version`.
fn police_deletes(w: &World, from: u64, to: u64, version: u64) {
    let mut csv = String::from("id,name,sex,ethnicity,status,version,op\n");
    for n in from..to {
        csv.push_str(&format!("{},,,,,{version},D\n", citizen(n)));
    }
    w.drop_csv("police", &format!("household-delete-{from}-{to}.csv"), &csv);
}

/// Kill the sink mid-stream and start it again: the agency's table ends with exactly one row
/// per record, at its newest version, and deleted records gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_killed_mid_stream_keeps_one_row_per_record_at_its_newest_version() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 3000, 1);
    w.run_adapter(&cfg);
    let pool = w.pg().await;
    let sink_flags = [
        "--postgres",
        &w.db.url,
        "--table",
        "civil_household",
        "--batch",
        "50",
    ];
    let sink = w.spawn_agency_tool("sink", "civil", &sink_flags);
    wait_for(60, "the sink wrote 300 rows", || async {
        rows(&pool, "civil_household").await >= 300
    })
    .await;
    sink.kill();
    let landed = rows(&pool, "civil_household").await;
    assert!(landed < 3000, "killed mid-stream ({landed} rows landed)");
    // While the sink is down: newer versions of 0..1000, deletes of 2000..2100.
    let cfg = w.police(0, 1000, 2);
    w.run_adapter(&cfg);
    police_deletes(&w, 2000, 2100, 3);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    let _sink = w.spawn_agency_tool("sink", "civil", &sink_flags);
    wait_for(120, "the sink caught up", || async {
        rows(&pool, "civil_household").await == 2900 && w.count("agency.civil").await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_version: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT govbus_version, count(*) FROM civil_household GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(by_version, vec![(1, 1900), (2, 1000)]);
    let keys: Vec<String> = sqlx::query_scalar("SELECT govbus_key FROM civil_household")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut expected: Vec<String> = (0..2000).chain(2100..3000).map(citizen).collect();
    let mut got = keys.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "one row per record, the deleted ones gone");
    // Columns are the granted fields, typed; values as sent.
    let (id, name, sex, status): (String, String, String, String) = sqlx::query_as(
        "SELECT citizen_id_number, name, sex, status FROM civil_household WHERE govbus_key = $1",
    )
    .bind(citizen(7))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (id, name, sex, status),
        (citizen(7), "居民7".into(), "1".into(), "正常".into())
    );
    let ungranted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'civil_household' AND column_name = 'ethnicity'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        ungranted, 0,
        "civil is not granted ethnicity: no such column"
    );
    assert_eq!(w.count("agency.civil.dlq").await, 0);
}

#[derive(Default)]
struct Hook {
    attempts: HashMap<String, u32>,
    accepted: Vec<serde_json::Value>,
}

/// The webhook sink acks after a 2xx, retries a 503, and dead-letters a 400 and a record whose
/// retries run out; each refusal is in the agency's `.dlq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sink_retries_then_dead_letters() {
    use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Json, Router};
    let mut w = World::new().await;
    w.start_router().await;
    let hook = Arc::new(Mutex::new(Hook::default()));
    async fn receive(
        State(hook): State<Arc<Mutex<Hook>>>,
        headers: HeaderMap,
        Json(body): Json<serde_json::Value>,
    ) -> StatusCode {
        let id = headers["idempotency-key"].to_str().unwrap().to_string();
        assert_eq!(body["message_id"], id.as_str());
        let name = body["record"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut h = hook.lock().unwrap();
        let n = {
            let a = h.attempts.entry(id).or_default();
            *a += 1;
            *a
        };
        match name.as_str() {
            "居民5" => StatusCode::BAD_REQUEST,
            "居民7" => StatusCode::SERVICE_UNAVAILABLE,
            _ if n == 1 => StatusCode::SERVICE_UNAVAILABLE,
            _ => {
                h.accepted.push(body);
                StatusCode::NO_CONTENT
            }
        }
    }
    let app = Router::new()
        .route("/records", post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = w.police(0, 10, 1);
    w.run_adapter(&cfg);
    let url = format!("http://{addr}/records");
    let _sink = w.spawn_agency_tool(
        "sink",
        "civil",
        &["--webhook", &url, "--webhook-retry-secs", "2"],
    );
    wait_for(60, "8 records accepted and 2 dead-lettered", || async {
        hook.lock().unwrap().accepted.len() == 8 && w.count("agency.civil.dlq").await == 2
    })
    .await;
    assert_eq!(w.count("agency.civil").await, 0);
    let h = hook.lock().unwrap();
    let five = h.attempts.iter().filter(|(_, n)| **n == 1).count();
    assert_eq!(five, 1, "a 400 is not retried");
    assert!(
        h.attempts.values().filter(|n| **n >= 3).count() >= 1,
        "a 503 is retried until the retry time runs out: {:?}",
        h.attempts.values().collect::<Vec<_>>()
    );
    let first = &h.accepted[0];
    assert_eq!(first["item"], "household");
    assert_eq!(first["grant"], "civil-household");
    assert_eq!(first["op"], "upsert");
    assert!(
        first["record"].get("ethnicity").is_none(),
        "ungranted field sent: {first}"
    );
}

/// `govbus-agency tail` prints each verified record once as a JSON line: batches of 1, 2, 3, 5
/// and 1,024 verify; each forgery of a batch signature (a flipped body byte or salt, a changed
/// grant, a wrong leaf index, a path from another batch, a path one hash short or long, a size
/// of 0 or 1,025, a batch signed for another agency, a key past its `valid_until`) is
/// dead-lettered, and nothing of it is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_verifies_batches_and_dead_letters_every_forgery() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 5, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    let real = w.drain("agency.civil", Duration::from_millis(300)).await;
    assert_eq!(real.len(), 5);
    let cases = w.publish_batch_cases("civil", &real[0]).await;
    // The router's own five, sent again after the cases, with confirms: without them a close
    // right after the publishes could lose some, and the tail below would wait for them in vain
    // (this test timed out that way in two suite runs).
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for g in &real {
        let mut headers = FieldTable::default();
        for (k, v) in &g.headers {
            headers.insert(k.as_str().into(), v.clone());
        }
        let confirm = ch
            .basic_publish(
                "govbus.deliver".into(),
                "civil".into(),
                BasicPublishOptions::default(),
                &g.body,
                BasicProperties::default()
                    .with_message_id(g.message_id.as_str().into())
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker took {}", g.message_id);
    }
    let _ = conn.close(200, "ok".into()).await;
    let all = w
        .tail("civil", (cases.bad + cases.good + real.len()) as u64)
        .await;
    assert_eq!(
        all.len(),
        cases.good + real.len(),
        "every good batch and the router's own deliveries, no forgery"
    );
    assert!(all
        .iter()
        .all(|l| !l["message_id"].as_str().unwrap().starts_with("forged")));
    let printed_ids: std::collections::HashSet<String> = all
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_string())
        .collect();
    let lines: Vec<_> = all
        .into_iter()
        .filter(|l| !l["message_id"].as_str().unwrap().starts_with("batch"))
        .collect();
    assert_eq!(lines.len(), 5, "the five records, not the forgery");
    let mut names: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["居民0", "居民1", "居民2", "居民3", "居民4"]);
    assert!(lines.iter().all(
        |l| l["record_type"] == "gov.gz.police.HouseholdRegistration"
            && l["version"] == 1
            && l["key"] == l["record"]["citizen_id_number"]
    ));
    // The broker dead-letters a rejected message from a quorum queue asynchronously.
    let bad = cases.bad as u32;
    wait_for(10, "every forgery is dead-lettered", || async {
        w.count("agency.civil.dlq").await == bad
    })
    .await;
    // Nothing is left: tail acked what it printed and dead-lettered the rest, and its acks all
    // counted (it cancels its consumer before closing: on a bare close, RabbitMQ 3.10 put the
    // last acked deliveries back about one run in five under load).
    let left = w.drain("agency.civil", Duration::from_millis(300)).await;
    assert!(
        left.is_empty(),
        "tail left {} deliveries in the queue ({} of them never printed): {:?}",
        left.len(),
        left.iter()
            .filter(|g| !printed_ids.contains(&g.message_id))
            .count(),
        left.iter().map(|g| &g.message_id).collect::<Vec<_>>()
    );

    // A key past its valid_until: after a rotation, platform-test expires. A delivery under
    // the new key teaches tail the listing; one sealed with platform-test is then refused.
    w.rotate_platform_key().await;
    w.expire_previous_platform_key().await;
    let fresh = w.sealed_copies(
        &real[0],
        "civil",
        &w.platform_signer("platform-2027"),
        "civil",
        "fresh",
        1,
    );
    let expired = w.sealed_copies(
        &real[0],
        "civil",
        &w.platform_signer("platform-test"),
        "civil",
        "expired",
        1,
    );
    w.publish(&fresh).await;
    w.publish(&expired).await;
    let lines = w.tail("civil", 2).await;
    assert_eq!(
        lines.len(),
        1,
        "only the delivery under the key in force: {lines:?}"
    );
    assert_eq!(lines[0]["message_id"], "fresh-0");
    wait_for(
        10,
        "the expired key's delivery is dead-lettered",
        || async { w.count("agency.civil.dlq").await == bad + 1 },
    )
    .await;
}
