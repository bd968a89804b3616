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
        "govbus.router",
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
