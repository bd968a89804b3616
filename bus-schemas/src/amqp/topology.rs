//! The exchanges and queues of the wire contract, declared idempotently. Every queue argument
//! the code relies on is set explicitly, so RabbitMQ 3.10 through 4.x behave alike.
use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    Channel, ExchangeKind,
};

use crate::wire;

/// How many times a quorum queue delivers a message before dead-lettering it.
pub const DELIVERY_LIMIT: i64 = 5;

/// Arguments of a quorum queue; with `dead_letter_to`, failed messages go to `govbus.dlx` with
/// that routing key, at least once (which needs `overflow=reject-publish`).
pub fn quorum_args(dead_letter_to: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    if let Some(dlq) = dead_letter_to {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(wire::DLX_EXCHANGE.into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dlq.into()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
    }
    args
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map(|_| ())
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// The four exchanges, the router's queue bound to everything ingested, and its dead letters;
/// the queue through which the router counts quarantined rows.
pub async fn declare_core(ch: &Channel) -> lapin::Result<()> {
    exchange(ch, wire::INGEST_EXCHANGE, ExchangeKind::Topic).await?;
    exchange(ch, wire::QUARANTINE_EXCHANGE, ExchangeKind::Topic).await?;
    exchange(ch, wire::DELIVER_EXCHANGE, ExchangeKind::Direct).await?;
    exchange(ch, wire::DLX_EXCHANGE, ExchangeKind::Direct).await?;
    queue(ch, wire::ROUTER_DLQ, quorum_args(None)).await?;
    bind(ch, wire::ROUTER_DLQ, wire::DLX_EXCHANGE, wire::ROUTER_DLQ).await?;
    queue(ch, wire::ROUTER_QUEUE, quorum_args(Some(wire::ROUTER_DLQ))).await?;
    bind(ch, wire::ROUTER_QUEUE, wire::INGEST_EXCHANGE, "#").await?;
    queue(ch, wire::QUARANTINE_COUNTS_QUEUE, quorum_args(None)).await?;
    // Before count messages, the queue took a copy of every row (`#`): that binding goes.
    ch.queue_unbind(
        wire::QUARANTINE_COUNTS_QUEUE.into(),
        wire::QUARANTINE_EXCHANGE.into(),
        "#".into(),
        FieldTable::default(),
    )
    .await?;
    bind(
        ch,
        wire::QUARANTINE_COUNTS_QUEUE,
        wire::QUARANTINE_EXCHANGE,
        wire::QUARANTINE_COUNT_BINDING,
    )
    .await
}

/// A department's quarantine queue, bound to its own routing keys only.
pub async fn declare_department(ch: &Channel, department: &str) -> lapin::Result<()> {
    let q = wire::quarantine_queue(department);
    queue(ch, &q, quorum_args(None)).await?;
    bind(
        ch,
        &q,
        wire::QUARANTINE_EXCHANGE,
        &format!("{department}.*"),
    )
    .await
}

/// An agency's delivery queue and its dead-letter queue.
pub async fn declare_agency(ch: &Channel, agency: &str) -> lapin::Result<()> {
    let q = wire::agency_queue(agency);
    let dlq = format!("{q}.dlq");
    queue(ch, &dlq, quorum_args(None)).await?;
    bind(ch, &dlq, wire::DLX_EXCHANGE, &dlq).await?;
    queue(ch, &q, quorum_args(Some(&dlq))).await?;
    bind(ch, &q, wire::DELIVER_EXCHANGE, agency).await
}
