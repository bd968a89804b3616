//! The harness reaches the real services: each test gets its own vhost and database.
use bus_schemas::Registry;
use govbus_tests::{Services, TestDatabase, TestVhost};
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

/// A record published with confirms to a quorum queue in a test's own vhost comes back intact
/// and its ack is accepted; the vhost is gone after the test.
#[tokio::test]
async fn broker_round_trip_in_own_vhost() {
    let services = Services::from_env();
    let vhost = TestVhost::create(&services).await.unwrap();
    let conn = vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare("probe".into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap();
    let t = Registry::standard().get("HouseholdRegistration").unwrap();
    let body = std::fs::read(
        govbus_tests::workspace_root()
            .join("bus-schemas/golden/gov.gz.police.HouseholdRegistration.bin"),
    )
    .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "probe".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("avro/binary".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    assert!(
        confirm.take_message().is_none(),
        "a returned message is a failure"
    );
    let got = loop {
        if let Some(m) = ch
            .basic_get("probe".into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (found, _) = Registry::standard().decode(&got.delivery.data).unwrap();
    assert_eq!(found.full_name, t.full_name);
    assert!(
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap(),
        "ack must be accepted"
    );
    conn.close(200, "done".into()).await.unwrap();
    let name = vhost.name.clone();
    drop(vhost);
    let resp = reqwest::Client::new()
        .get(format!("{}/api/vhosts/{name}", services.management_url))
        .basic_auth(
            &services.management_auth.0,
            Some(&services.management_auth.1),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the test vhost must be deleted");
}

/// A test's own database accepts writes and is dropped afterwards.
#[tokio::test]
async fn database_of_own() {
    use sqlx::{Connection, PgConnection, Row};
    let services = Services::from_env();
    let db = TestDatabase::create(&services).await.unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    let row = sqlx::query("SELECT x FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), 42);
    conn.close().await.unwrap();
    let name = db.name.clone();
    drop(db);
    let mut admin = PgConnection::connect(&services.database_url).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!exists, "the test database must be dropped");
}
