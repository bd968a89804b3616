//! Ingest → agencies, at least once, with a ledger that holds each delivery exactly once.
//!
//! Two stages run side by side: one connection consumes and acks, another publishes (a queue
//! that stops answering, such as a quorum queue left without a leader, puts the publishing
//! connection into flow control; the acks must not wait behind it). The first takes a batch of ingest
//! messages, decides each one on a blocking thread (verify, project, pseudonymise, sign), asks
//! PostgreSQL what the agencies already hold, and publishes every delivery with confirms.
//! The second awaits those confirms in order, then in one transaction appends the confirmed
//! deliveries to the ledger, keeps the unconfirmed ones (an agency's queue full or blocked)
//! for retry, and keeps the refusals; only then does it ack the batch. A crash anywhere
//! redelivers the unacked batch; what the ledger already holds is not published again.
//!
//! A confirm that does not come within `router.confirm_timeout_ms` is a stall: the deliveries
//! still unconfirmed are kept (their agencies' later deliveries queue behind them, in order),
//! the batch is written and acked, and the session starts over on new connections. The retry
//! job then probes each such agency on its own, so one silent queue holds up nobody else.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bus_schemas::{
    amqp::{
        publish::{classify, publish_all, PublishError},
        Connector, OutgoingMessage,
    },
    validate::today_in_shanghai,
    wire,
};
use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
    Channel, Connection, PublisherConfirm,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    pipeline::{shared::Shared, topology::declare},
    routing::route::{Outcome, Planned},
    store::{
        self,
        counters::DepartmentCounts,
        ledger::{self, Entry},
        Refusal,
    },
    telemetry,
};

/// How long closing a connection may take: a connection in flow control never answers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `conn`, giving up after [`CLOSE_TIMEOUT`] (the broker may have stopped reading it;
/// it then closes the connection once it reads again).
pub(crate) async fn close_within(conn: &Connection, why: &str) {
    if tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, why.into()))
        .await
        .is_err()
    {
        tracing::warn!(
            "RabbitMQ did not answer the connection close in {CLOSE_TIMEOUT:?}; leaving it"
        );
    }
}

/// (agency, item, record key hash) → newest version published by this router recently: the
/// ledger answers for what is written, this for batches still in flight.
type Recent = std::collections::HashMap<(String, String, String), i64>;
/// Entries kept in [`Recent`] before it starts over (a few in-flight windows' worth).
const RECENT_MAX: usize = 100_000;

/// Batches published and awaiting their confirms and ledger write, behind the one being read.
const IN_FLIGHT_BATCHES: usize = 4;

/// Deliveries a record makes, on average, that a batch of `router.batch` records is sized
/// for (see `intake`).
const DELIVERIES_PER_RECORD: usize = 4;

/// One ingest message on its way.
struct InFlight {
    routing_key: String,
    kind: Kind,
    /// The record as received, kept as its latest version for replay.
    stored: Option<store::LatestRecord>,
}

enum Kind {
    Refused(Refusal),
    Failed(OutgoingMessage, String),
    Deliver {
        /// Published (with their confirm) or kept without publishing.
        deliveries: Vec<(Planned, Option<PublisherConfirm>)>,
    },
}

/// A batch on its way from the first stage to the second.
struct Batch {
    messages: Vec<InFlight>,
    last: Delivery,
    started: Instant,
}

/// Runs until `stop`: consumes the partitions `govbus.router.<p>`, rebuilding connection, channels and consumer
/// whenever one fails.
pub async fn run(
    shared: Arc<Shared>,
    connector: Connector,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(connector.config().reconnect_min_ms);
    let max_delay = Duration::from_millis(connector.config().reconnect_max_ms);
    while !stop.is_cancelled() {
        shared.health.set_connected(false);
        let conn = match connector
            .connect(&stop, |e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "RabbitMQ unreachable"))
            .await
        {
            Ok(c) => c,
            Err(bus_schemas::amqp::connect::ConnectError::Cancelled) => break,
            Err(e) => return Err(e.into()),
        };
        let started = Instant::now();
        match session(&shared, &connector, &conn, &stop).await {
            Ok(()) => {
                close_within(&conn, "router stopping").await;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ session failed; reconnecting (unacked messages are redelivered)");
                close_within(&conn, "reconnecting").await;
                if started.elapsed() > Duration::from_secs(30) {
                    delay = Duration::from_millis(connector.config().reconnect_min_ms);
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
                delay = (delay * 2).min(max_delay);
            }
        }
    }
    shared.health.set_connected(false);
    Ok(())
}

async fn session(
    shared: &Arc<Shared>,
    connector: &Connector,
    conn: &Connection,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let publishing = match connector.connect(stop, |_, _| {}).await {
        Ok(c) => c,
        Err(bus_schemas::amqp::connect::ConnectError::Cancelled) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let r = session_on(shared, conn, &publishing, connector.config().prefetch, stop).await;
    close_within(
        &publishing,
        if r.is_ok() {
            "router stopping"
        } else {
            "reconnecting"
        },
    )
    .await;
    r
}

async fn session_on(
    shared: &Arc<Shared>,
    conn: &Connection,
    publishing: &Connection,
    prefetch: u16,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let timeout = shared.tunables.confirm_timeout();
    let (first, rest) = shared.tunables.partition_plan()?;
    let partitions = shared.tunables.partitions;
    // A queue without a leader never answers (and RabbitMQ may hold a declaration of it): the
    // set-up fails after a deadline, saying so, and is tried again.
    tokio::time::timeout(timeout, async {
        let setup = conn.create_channel().await?;
        declare(&setup, &shared.routing()).await?;
        bus_schemas::amqp::topology::declare_partitions(&setup, partitions, None).await?;
        let _ = setup.close(200, "declared".into()).await;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "RabbitMQ did not answer the router's set-up (declaring the exchanges and queues) in \
             {timeout:?}: a quorum queue without a leader? (docs/operators.md, \"A queue that \
             does not answer\")"
        )
    })??;
    telemetry::reconnect();
    shared.health.set_connected(true);
    let counting = conn.create_channel().await?;
    // Counting ends with the session: when the partitions end (stopping or failed), so does it.
    let session_stop = stop.child_token();
    let count =
        crate::pipeline::quarantined::run(shared.clone(), counting.clone(), session_stop.clone());
    let name = shared.tunables.instance_name();
    let standby = Duration::from_millis(shared.tunables.standby_delay_ms);
    let pipelines = first
        .into_iter()
        .map(|p| (p, Duration::ZERO))
        .chain(rest.into_iter().map(|p| (p, standby)))
        .map(|(p, after)| {
            partition(
                shared.clone(),
                conn,
                publishing,
                p,
                format!("govbus-router-{name}-p{p}"),
                after,
                prefetch,
                session_stop.clone(),
            )
        });
    let routing_done = async {
        // The first error ends every partition: one may be waiting on a publish that a
        // stalled connection never takes.
        let r = futures::future::try_join_all(pipelines).await.map(|_| ());
        session_stop.cancel();
        r
    };
    let (a, c) = tokio::join!(routing_done, count);
    if a.is_ok() && c.is_ok() {
        let _ = counting.close(200, "router stopping".into()).await;
    }
    a.and(c)
}

/// One partition `govbus.router.<p>`: subscribes after `after` (a standby waits, so that the
/// router preferring it becomes its active consumer), then runs its intake and settle stages
/// on channels of its own until `stop` or the first error. With single active consumer, a
/// subscription that is not active receives nothing until the active one goes.
#[allow(clippy::too_many_arguments)]
async fn partition(
    shared: Arc<Shared>,
    conn: &Connection,
    publishing: &Connection,
    p: u8,
    tag: String,
    after: Duration,
    prefetch: u16,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if !after.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
    let queue = wire::router_queue(p);
    let timeout = shared.tunables.confirm_timeout();
    let (consume, publish, consumer) = tokio::time::timeout(timeout, async {
        let consume = conn.create_channel().await?;
        consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let publish = publishing.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer = consume
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok((consume, publish, consumer))
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "RabbitMQ did not answer consuming {queue} in {timeout:?}: a quorum queue without \
             a leader? (docs/operators.md, \"A queue that does not answer\")"
        )
    })??;
    telemetry::subscribed(p, after.is_zero());
    let (tx, rx) = mpsc::channel::<Batch>(IN_FLIGHT_BATCHES);
    let intake = intake(
        shared.clone(),
        p,
        consumer,
        publish.clone(),
        tx,
        stop.clone(),
    );
    let settle = settle(shared.clone(), p, publish.clone(), rx);
    let r = tokio::try_join!(intake, settle).map(|_| ());
    telemetry::unsubscribed(p);
    if r.is_ok() {
        // Stopping: cancel the subscription (the next standby takes over at once), then close
        // the channels before the connection, as the protocol expects.
        let _ = consume
            .basic_cancel(tag.as_str().into(), Default::default())
            .await;
        let _ = consume.close(200, "router stopping".into()).await;
        let _ = publish.close(200, "router stopping".into()).await;
    }
    r
}

/// First stage: batches, decisions, publishes.
async fn intake(
    shared: Arc<Shared>,
    partition: u8,
    mut consumer: lapin::Consumer,
    publish: Channel,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let wait = Duration::from_millis(shared.tunables.batch_wait_ms);
    let max = shared.tunables.batch.max(1);
    // A batch's deliveries are held (bodies, headers) until their confirms and ledger rows
    // are in, [`IN_FLIGHT_BATCHES`] of them behind the one being read. Records granted to many
    // agencies would multiply that: the next batch takes fewer records when the last one's
    // made more than `DELIVERIES_PER_RECORD` deliveries a record, so a batch holds about
    // `batch` × 4 deliveries whatever the fanout (fanout 16: 62 records, not 250).
    let max_deliveries = max.saturating_mul(DELIVERIES_PER_RECORD);
    let mut take = max;
    let mut recent = Recent::new();
    let mut active = false;
    let name = shared.tunables.instance_name();
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("the consumer was cancelled by the broker");
        };
        let mut deliveries = vec![first?];
        if !active {
            // The first delivery since subscribing: this router is the partition's active
            // consumer now (a takeover, or the start).
            active = true;
            telemetry::partition_active(partition);
            if let Err(e) = store::partitions_held(&shared.pool, partition, &name).await {
                tracing::warn!(error = %e, partition, "cannot record this router as the partition's holder");
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while deliveries.len() < take {
            // What has arrived already is taken without arming a timer.
            let next = match consumer.next().now_or_never() {
                Some(d) => Ok(d),
                None => tokio::time::timeout_at(deadline, consumer.next()).await,
            };
            match next {
                Ok(Some(d)) => deliveries.push(d?),
                Ok(None) => anyhow::bail!("the consumer was cancelled by the broker"),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        telemetry::partition_records(partition, deliveries.len());
        let routing = shared.routing();
        let decide = shared.clone();
        // Verifying, projecting and signing are the CPU-heavy part: a large batch is split
        // over two threads.
        let decided = tokio::task::spawn_blocking(move || {
            let (received, today) = (chrono::Utc::now(), today_in_shanghai());
            let decide_all = |part: Vec<Delivery>| {
                part.into_iter()
                    .map(|d| {
                        let outcome = decide.platform.route(
                            &routing,
                            received,
                            today,
                            d.routing_key.as_str(),
                            &d.properties,
                            &d.data,
                        );
                        (d, outcome)
                    })
                    .collect::<Vec<_>>()
            };
            let mut decided = if deliveries.len() < 64 {
                decide_all(deliveries)
            } else {
                let second = deliveries.split_off(deliveries.len() / 2);
                std::thread::scope(|s| {
                    let other = s.spawn(|| decide_all(second));
                    let mut out = decide_all(deliveries);
                    out.extend(other.join().expect("deciding a batch half panicked"));
                    out
                })
            };
            // Each agency's deliveries of this batch are one delivery batch: one signature.
            let planned = decided.iter_mut().flat_map(|(_, o)| match o {
                Outcome::Deliver { deliveries, .. } => deliveries.iter_mut(),
                _ => [].iter_mut(),
            });
            crate::routing::route::seal_deliveries(&decide.platform.signer, planned)
                .map_err(|e| anyhow::anyhow!("cannot sign the deliveries of a batch: {e}"))?;
            anyhow::Ok(decided)
        })
        .await??;
        take = next_take(&decided, max, max_deliveries);
        let batch = prepare(&shared, decided, &publish, started, &mut recent).await?;
        if tx.send(batch).await.is_err() {
            return Ok(()); // the second stage failed; its error ends the session
        }
    }
}

/// How many records the next batch takes: `max`, or fewer when `decided` made more than
/// `max_deliveries` deliveries' worth at its rate of deliveries per record.
fn next_take(decided: &[(Delivery, Outcome)], max: usize, max_deliveries: usize) -> usize {
    let made: usize = decided
        .iter()
        .map(|(_, o)| match o {
            Outcome::Deliver { deliveries, .. } => deliveries.len(),
            _ => 0,
        })
        .sum();
    take_for(decided.len(), made, max, max_deliveries)
}

fn take_for(records: usize, deliveries: usize, max: usize, max_deliveries: usize) -> usize {
    if deliveries == 0 {
        return max;
    }
    (max_deliveries * records / deliveries).clamp(1, max)
}

/// Turns decisions into messages in flight: drops what the agencies already hold, publishes
/// the rest (or keeps it, behind an agency's earlier kept deliveries).
async fn prepare(
    shared: &Shared,
    decided: Vec<(Delivery, Outcome)>,
    publish: &Channel,
    started: Instant,
    recent: &mut Recent,
) -> anyhow::Result<Batch> {
    let planned: Vec<&Entry> = decided
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Deliver { deliveries, .. } => Some(deliveries.iter().map(|p| &p.entry)),
            _ => None,
        })
        .flatten()
        .collect();
    let prior = store::prior(&shared.pool, &planned).await?;
    let mut prior = prior.into_iter();
    let blocked = shared.blocked.lock().expect("blocked lock").clone();
    let mut messages = Vec::with_capacity(decided.len());
    let mut last = None;
    let mut already = 0;
    // (message, delivery) of each delivery to publish; all are published at once below.
    let mut to_publish: Vec<(usize, usize)> = Vec::new();
    for (d, outcome) in decided {
        let routing_key = d.routing_key.as_str().to_string();
        let mut stored = None;
        let kind = match outcome {
            Outcome::Refused { reason, detail } => {
                telemetry::refused(reason.as_str(), &routing_key, &detail);
                let (body, body_bytes, body_hmac) = store::refusals::kept_body(
                    &shared.platform.ids,
                    &d.data,
                    shared.tunables.refusal_body_bytes,
                );
                Kind::Refused(Refusal {
                    reason: reason.as_str(),
                    detail,
                    routing_key: routing_key.clone(),
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.as_str().to_string()),
                    key_id: d
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| {
                            bus_schemas::amqp::headers::header_str(h, wire::header::KEY_ID)
                        })
                        .map(str::to_string),
                    headers: store::headers_json(d.properties.headers().as_ref()),
                    body,
                    body_bytes,
                    body_hmac,
                })
            }
            Outcome::Failed(reason) => Kind::Failed(dead_letter(&d, &reason), reason),
            Outcome::Deliver {
                deliveries,
                subjects,
                ..
            } => {
                stored = deliveries.first().map(|p| store::LatestRecord {
                    item: p.entry.item.clone(),
                    key_hash: p.entry.key_hash.clone(),
                    version: p.entry.version,
                    routing_key: routing_key.clone(),
                    ingest_id: p.entry.ingest_id.clone(),
                    headers: store::headers_json(d.properties.headers().as_ref()),
                    body: d.data.clone(),
                    subjects,
                });
                let mut out = Vec::with_capacity(deliveries.len());
                for p in deliveries {
                    let held = prior.next().expect("one held version per planned delivery");
                    // The agency holds this version: this very delivery (a redelivered
                    // message), or the same version sent again (under another ingest id once
                    // the department replaced its id secret).
                    if held == Some(p.entry.version) {
                        already += 1;
                        continue;
                    }
                    // Newest version delivered: in the ledger, or in a batch not yet written.
                    let key = (
                        p.entry.agency.clone(),
                        p.entry.item.clone(),
                        p.entry.key_hash.clone(),
                    );
                    let newest = held.max(recent.get(&key).copied());
                    if newest.is_some_and(|v| v > p.entry.version) {
                        telemetry::stale(&p.entry.agency, &p.entry.key_hash);
                        continue;
                    }
                    if p.needs_prior && held.is_none() {
                        continue; // a delete for a region the agency never got this record in
                    }
                    if recent.len() >= RECENT_MAX {
                        recent.clear();
                    }
                    let v = recent.entry(key).or_insert(p.entry.version);
                    *v = (*v).max(p.entry.version);
                    if !blocked.contains(&p.entry.agency) {
                        to_publish.push((messages.len(), out.len()));
                    }
                    out.push((p, None));
                }
                Kind::Deliver { deliveries: out }
            }
        };
        messages.push(InFlight {
            routing_key,
            kind,
            stored,
        });
        last = Some(d);
    }
    if already > 0 {
        telemetry::already_delivered(already);
    }
    // Registered in order, written by lapin's I/O thread in one go (see `publish_all`).
    fn deliveries_of(m: &InFlight) -> &[(Planned, Option<PublisherConfirm>)] {
        match &m.kind {
            Kind::Deliver { deliveries } => deliveries,
            _ => unreachable!("only deliveries are published"),
        }
    }
    let confirm_timeout = shared.tunables.confirm_timeout();
    let results = tokio::time::timeout(
        confirm_timeout,
        publish_all(
            publish,
            to_publish
                .iter()
                .map(|&(m, i)| &deliveries_of(&messages[m])[i].0.message),
        ),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "RabbitMQ took no publish in {confirm_timeout:?} (the connection is in flow control)"
        )
    })?;
    for ((m, i), r) in to_publish.into_iter().zip(results) {
        if let Kind::Deliver { deliveries } = &mut messages[m].kind {
            deliveries[i].1 = Some(r?);
        }
    }
    Ok(Batch {
        messages,
        last: last.expect("a batch has at least one message"),
        started,
    })
}

/// The message for `govbus.router.dlq`: the original, with `govbus-reason`.
fn dead_letter(d: &Delivery, reason: &str) -> OutgoingMessage {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        wire::header::REASON.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    OutgoingMessage {
        exchange: wire::DLX_EXCHANGE.into(),
        routing_key: wire::ROUTER_DLQ.into(),
        body: d.data.clone(),
        properties: d.properties.clone().with_headers(headers),
    }
}

/// Second stage: confirms, ledger, ack.
async fn settle(
    shared: Arc<Shared>,
    partition: u8,
    publish: Channel,
    mut rx: mpsc::Receiver<Batch>,
) -> anyhow::Result<()> {
    while let Some(first) = rx.recv().await {
        // Group commit: every batch already waiting joins this transaction and this ack.
        let mut batches = vec![first];
        while batches.len() < IN_FLIGHT_BATCHES {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let mut delivered: Vec<Entry> = Vec::new();
        let mut kept: Vec<(Entry, OutgoingMessage, String)> = Vec::new();
        let mut refusals = Vec::new();
        let mut departments = DepartmentCounts::default();
        let mut latest = Vec::new();
        let mut last = None;
        let started = batches[0].started;
        let confirm_timeout = shared.tunables.confirm_timeout();
        // One deadline for the whole group: once it has passed, what has not been confirmed
        // is kept, and the session starts over after this group is written and acked.
        let deadline = tokio::time::Instant::now() + confirm_timeout;
        let mut stalled = 0usize;
        for batch in batches {
            last = Some(batch.last);
            for m in batch.messages {
                departments.received(&m.routing_key, matches!(m.kind, Kind::Refused(_)));
                latest.extend(m.stored);
                match m.kind {
                    Kind::Refused(r) => refusals.push(r),
                    Kind::Failed(msg, reason) => {
                        // Not written anywhere but the dead-letter queue: without its confirm
                        // the group stays unacked and comes back.
                        let confirm = tokio::time::timeout_at(deadline, msg.publish(&publish))
                            .await
                            .map_err(|_| anyhow::anyhow!("RabbitMQ took no publish in {confirm_timeout:?} (the connection is in flow control)"))??;
                        let r = tokio::time::timeout_at(deadline, confirm)
                            .await
                            .map_err(|_| {
                                anyhow::anyhow!("no confirm from RabbitMQ for a dead letter in {confirm_timeout:?}")
                            })?;
                        classify(r, &msg)?;
                        telemetry::dead_lettered(&m.routing_key, &reason);
                    }
                    Kind::Deliver { deliveries } => {
                        for (p, confirm) in deliveries {
                            let Some(confirm) = confirm else {
                                kept.push((
                                    p.entry,
                                    p.message,
                                    "the agency has earlier deliveries waiting".into(),
                                ));
                                continue;
                            };
                            let Ok(r) = tokio::time::timeout_at(deadline, confirm).await else {
                                stalled += 1;
                                kept.push((
                                    p.entry,
                                    p.message,
                                    format!("no confirm from RabbitMQ in {confirm_timeout:?}"),
                                ));
                                continue;
                            };
                            match classify(r, &p.message) {
                                Ok(()) => delivered.push(p.entry),
                                Err(e) if e.needs_new_channel() => return Err(e.into()),
                                Err(
                                    e @ (PublishError::Nacked { .. }
                                    | PublishError::Unroutable { .. }),
                                ) => {
                                    kept.push((p.entry, p.message, e.to_string()));
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
            }
        }
        for e in &delivered {
            departments.source_time(&e.department, e.source_time_ms);
        }
        commit(&shared, &delivered, &kept, &refusals, &departments, &latest).await?;
        telemetry::partition_delivered(partition, delivered.len());
        for e in &delivered {
            telemetry::delivered(&e.agency, &e.item, e.source_time_ms);
        }
        if !kept.is_empty() {
            // One log line per agency and reason, not one per delivery.
            let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
            for (e, _, why) in &kept {
                *counts.entry((e.agency.as_str(), why.as_str())).or_default() += 1;
            }
            let mut blocked = shared.blocked.lock().expect("blocked lock");
            for ((agency, why), n) in counts {
                telemetry::kept(agency, why, n);
                blocked.insert(agency.to_string());
            }
        }
        let last = last.expect("at least one batch");
        if !last.acker.ack(BasicAckOptions { multiple: true }).await? {
            anyhow::bail!("the channel closed before the batch was acked; it will be redelivered");
        }
        if stalled > 0 {
            telemetry::stalled();
            anyhow::bail!(
                "{stalled} deliveries had no confirm from RabbitMQ in {confirm_timeout:?} (a queue \
                 without a leader, or a broker in flow control); they are kept for retry"
            );
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            delivered = delivered.len(),
            "batch settled"
        );
    }
    Ok(())
}

/// One transaction: ledger rows for the confirmed, kept rows for the unconfirmed, refusals.
/// Retried while PostgreSQL is unreachable: nothing is acked until it commits.
async fn commit(
    shared: &Shared,
    delivered: &[Entry],
    kept: &[(Entry, OutgoingMessage, String)],
    refusals: &[Refusal],
    departments: &DepartmentCounts,
    latest: &[store::LatestRecord],
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    // The prior check found every delivery above the version its agency holds, so none is in
    // the ledger; it is looked up only if one turns out to be there (see
    // `ledger::append_checked`).
    let mut look_up = false;
    loop {
        let t = Instant::now();
        let attempt = async {
            let mut tx = shared.pool.begin().await?;
            let rows =
                ledger::append_checked(&mut tx, &delivered.iter().collect::<Vec<_>>(), look_up)
                    .await?;
            store::keep(
                &mut tx,
                &kept.iter().map(|(e, m, _)| (e, m)).collect::<Vec<_>>(),
            )
            .await?;
            store::insert_refusals(&mut tx, refusals).await?;
            store::counters::count_departments(&mut tx, departments).await?;
            store::keep_latest(&mut tx, latest).await?;
            store::versions::index_subjects(&mut tx, latest).await?;
            crate::store::counters::count_timeliness(&mut tx, delivered).await?;
            tx.commit().await?;
            Ok::<usize, sqlx::Error>(rows)
        };
        match attempt.await {
            Ok(rows) => {
                telemetry::ledger_batch(t.elapsed().as_secs_f64(), rows);
                return Ok(());
            }
            Err(e) if !look_up && ledger::is_duplicate(&e) => {
                tracing::debug!(
                    "a delivery of the batch is in the ledger already; writing again, skipping it"
                );
                look_up = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the ledger; retrying (the batch stays unacked)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_for;

    /// A batch is sized for about `batch` × 4 deliveries: full at fanout 4 or less, a quarter
    /// at fanout 16, never below one record; a batch that delivered nothing (refusals, records
    /// already held) does not shrink the next.
    #[test]
    fn the_next_batch_takes_fewer_records_when_they_fan_out_wide() {
        assert_eq!(take_for(250, 1000, 250, 1000), 250);
        assert_eq!(take_for(250, 250, 250, 1000), 250);
        assert_eq!(take_for(250, 4000, 250, 1000), 62);
        assert_eq!(take_for(62, 992, 250, 1000), 62);
        assert_eq!(take_for(3, 0, 250, 1000), 250);
        assert_eq!(take_for(1, 5000, 250, 1000), 1);
    }
}
