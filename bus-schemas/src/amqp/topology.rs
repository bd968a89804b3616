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

/// How many times a router partition delivers a message before dead-lettering it: a takeover
/// or a node restart returns a message without its fault, so this is far above
/// [`DELIVERY_LIMIT`].
pub const PARTITION_DELIVERY_LIMIT: i64 = 100;

/// Arguments of a router partition `govbus.router.<p>`: a quorum queue with a single active
/// consumer (a record's versions are decided by one router at a time, in order), dead letters
/// to `govbus.router.dlq`.
pub fn partition_args() -> FieldTable {
    let mut args = quorum_args(Some(wire::ROUTER_DLQ));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(PARTITION_DELIVERY_LIMIT),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
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

/// The arguments of `govbus.ingest`: its alternate exchange `govbus.unrouted`.
pub fn ingest_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(wire::UNROUTED_EXCHANGE.into()),
    );
    args
}

/// The exchanges, the routers' dead letters, the queue through which the router counts
/// quarantined rows, and `govbus.unrouted` (the ingest exchange's alternate exchange: what no
/// partition is bound for is kept there, not dropped). The partitions are
/// [`declare_partitions`]'.
///
/// An ingest exchange declared before it had its alternate exchange cannot be redeclared
/// with it (the broker refuses with PRECONDITION_FAILED and closes the channel): see
/// docs/operators.md, "Unrouted messages".
pub async fn declare_core(ch: &Channel) -> lapin::Result<()> {
    exchange(ch, wire::UNROUTED_EXCHANGE, ExchangeKind::Fanout).await?;
    queue(ch, wire::UNROUTED_QUEUE, quorum_args(None)).await?;
    bind(ch, wire::UNROUTED_QUEUE, wire::UNROUTED_EXCHANGE, "").await?;
    ch.exchange_declare(
        wire::INGEST_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        ingest_args(),
    )
    .await?;
    exchange(ch, wire::QUARANTINE_EXCHANGE, ExchangeKind::Topic).await?;
    exchange(ch, wire::DELIVER_EXCHANGE, ExchangeKind::Direct).await?;
    exchange(ch, wire::DLX_EXCHANGE, ExchangeKind::Direct).await?;
    queue(ch, wire::ROUTER_DLQ, quorum_args(None)).await?;
    bind(ch, wire::ROUTER_DLQ, wire::DLX_EXCHANGE, wire::ROUTER_DLQ).await?;
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

/// The `partitions` router partitions `govbus.router.<p>`, each bound to its shards on
/// `govbus.ingest`; with `previous` (the count bound before), the bindings of that layout
/// that the new one does not have are removed. Idempotent.
pub async fn declare_partitions(
    ch: &Channel,
    partitions: u8,
    previous: Option<u8>,
) -> lapin::Result<()> {
    let mut wanted = std::collections::HashSet::new();
    for p in 0..partitions {
        let q = wire::router_queue(p);
        queue(ch, &q, partition_args()).await?;
        for key in wire::partition_bindings(p, partitions) {
            bind(ch, &q, wire::INGEST_EXCHANGE, &key).await?;
            wanted.insert((q.clone(), key));
        }
    }
    if let Some(old) = previous.filter(|&o| o != partitions) {
        for p in 0..old {
            let q = wire::router_queue(p);
            if p >= partitions {
                // A queue the new layout does not have: declared so the unbinding below finds
                // it (its messages stay for an operator: docs/operators.md, "Partitions").
                queue(ch, &q, partition_args()).await?;
            }
            for key in wire::partition_bindings(p, old) {
                if !wanted.contains(&(q.clone(), key.clone())) {
                    ch.queue_unbind(
                        q.as_str().into(),
                        wire::INGEST_EXCHANGE.into(),
                        key.as_str().into(),
                        FieldTable::default(),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// The queue `platform.<id>` a linked platform's shovel reads (a quorum queue, no dead
/// letters: a message stays until the other platform has confirmed it), and the exchange
/// `govbus.platform.<id>` the router publishes to for that platform, bound `#`.
pub async fn declare_platform(ch: &Channel, platform: &str) -> lapin::Result<()> {
    let q = wire::platform_queue(platform);
    let x = wire::platform_exchange(platform);
    exchange(ch, &x, ExchangeKind::Topic).await?;
    queue(ch, &q, quorum_args(None)).await?;
    bind(ch, &q, &x, "#").await
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
