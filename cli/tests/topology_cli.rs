//! `govbus topology` declares the wire contract's exchanges and queues on a real broker.
use std::process::Command;

use govbus_tests::{Services, TestVhost};
use lapin::{
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    types::FieldTable,
    ExchangeKind,
};

fn govbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(args)
        .output()
        .unwrap()
}

/// Running it twice succeeds (idempotent) and leaves every named queue and exchange in place.
#[tokio::test]
async fn declares_everything_idempotently() {
    let vhost = TestVhost::create(&Services::from_env()).await.unwrap();
    for _ in 0..2 {
        let out = govbus(&[
            "topology",
            "--amqp-url",
            &vhost.amqp_url,
            "--department",
            "police",
            "--agency",
            "tax",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("declared agency.tax"));
    }
    let conn = vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for q in [
        "govbus.router.0",
        "govbus.router.dlq",
        "quarantine.police",
        "agency.tax",
        "agency.tax.dlq",
    ] {
        ch.queue_declare(q.into(), passive, FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    for (x, kind) in [
        ("govbus.ingest", ExchangeKind::Topic),
        ("govbus.deliver", ExchangeKind::Direct),
    ] {
        ch.exchange_declare(
            x.into(),
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{x}: {e}"));
    }
    let out = govbus(&[
        "topology",
        "--amqp-url",
        &vhost.amqp_url,
        "--department",
        "Bad.Id",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid id"));
}

/// A message that takes the router down every time it is delivered (simulated: taken and
/// dropped with its connection) is dead-lettered to `govbus.router.dlq` by the broker after
/// the delivery limit, so it cannot stall the city.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_the_delivery_limit() {
    use futures::StreamExt;
    use lapin::{
        options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions},
        BasicProperties,
    };
    let vhost = TestVhost::create(&Services::from_env()).await.unwrap();
    let out = govbus(&["topology", "--amqp-url", &vhost.amqp_url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "govbus.ingest".into(),
        "police.household.7".into(),
        BasicPublishOptions::default(),
        b"poison",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let count = |q: &'static str| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(
                q.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
        }
    };
    // A router partition's limit (a takeover returns messages without their fault, so it is
    // far above an agency queue's).
    let limit = bus_schemas::amqp::topology::PARTITION_DELIVERY_LIMIT;
    let c = vhost.connect().await.unwrap();
    for attempt in 0..=limit {
        let cch = c.create_channel().await.unwrap();
        cch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = cch
            .basic_consume(
                "govbus.router.0".into(),
                "crashing-router".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        assert!(got.is_ok(), "delivery {attempt} did not come");
        if attempt < limit {
            assert_eq!(
                count("govbus.router.dlq").await,
                0,
                "dead-lettered after {attempt} deliveries, before the limit of {limit}"
            );
        }
        // The "router" dies without acking: its channel closes, the message is returned.
        cch.close(320, "crash".into()).await.unwrap();
    }
    c.close(200, "done".into()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count("govbus.router.dlq").await != 1 {
        assert!(std::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count("govbus.router.0").await, 0);
}
