//! The consumer every agency tool shares: batches, verdicts, acks, reconnects.
use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use anyhow::Context;
use bus_schemas::{
    amqp::{headers::header_str, Connector},
    checkpoint::{self},
};
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

use crate::{
    access::Access,
    decode::{DecodeError, Decoder, Received},
};

/// What to do with a delivery once handled.
#[derive(Debug)]
pub enum Verdict {
    /// Done: ack.
    Ack,
    /// Never deliverable here: reject without requeue (the broker dead-letters it).
    Reject(String),
}

/// Something that takes verified records, a batch at a time.
pub trait Handler {
    /// Handles a batch; one verdict per record, in order. An error leaves the whole batch
    /// unacked (it is redelivered after the consumer is rebuilt).
    fn handle(
        &mut self,
        batch: &[Received],
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<Verdict>>>;
}

/// Remembers the last `cap` message ids, to skip a redelivered message already handled.
pub struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    /// Remembers up to `cap` ids.
    pub fn new(cap: usize) -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    /// True the first time an id is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// Batching of the consumer.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most deliveries handled together.
    pub max: usize,
    /// How long to wait for more after the first.
    pub wait: Duration,
}

/// Consumes the agency's queue until `stop` (or until `limit` records were handled), rebuilding
/// the connection whenever it fails.
pub async fn consume<H: Handler>(
    access: &Access,
    handler: &mut H,
    batching: Batching,
    limit: Option<u64>,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let connector = Connector::new(
        access.amqp.clone(),
        format!("govbus-agency-{}", access.agency),
    );
    let mut decoder = Decoder::new(access)?;
    let mut handled = 0u64;
    let mut delay = Duration::from_millis(200);
    while !stop.is_cancelled() && limit.is_none_or(|l| handled < l) {
        let conn = match connector
            .connect(stop, |e, d| {
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "RabbitMQ unreachable")
            })
            .await
        {
            Ok(c) => c,
            Err(bus_schemas::amqp::connect::ConnectError::Cancelled) => break,
            Err(e) => return Err(e.into()),
        };
        let r = session(
            access,
            &conn,
            &mut decoder,
            handler,
            batching,
            limit,
            &mut handled,
            stop,
        )
        .await;
        let _ = conn.close(200, "closing".into()).await;
        match r {
            Ok(()) => break,
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("ACCESS_REFUSED") || text.contains("NOT_FOUND") {
                    return Err(e.context(format!(
                        "cannot consume {}: does the queue exist (the router declares it once the \
                         agency is in the catalogue) and does this account read it?",
                        access.queue
                    )));
                }
                tracing::warn!(error = %text, "consumer failed; reconnecting (unacked deliveries are redelivered)");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(handled)
}

#[allow(clippy::too_many_arguments)]
async fn session<H: Handler>(
    access: &Access,
    conn: &lapin::Connection,
    decoder: &mut Decoder,
    handler: &mut H,
    batching: Batching,
    limit: Option<u64>,
    handled: &mut u64,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    let r = consume_on(
        access, &ch, decoder, handler, batching, limit, handled, stop,
    )
    .await;
    if r.is_ok() {
        settle_and_close(access, &ch).await;
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn consume_on<H: Handler>(
    access: &Access,
    ch: &lapin::Channel,
    decoder: &mut Decoder,
    handler: &mut H,
    batching: Batching,
    limit: Option<u64>,
    handled: &mut u64,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    ch.basic_qos(access.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            access.queue.as_str().into(),
            format!("govbus-{}", access.agency).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {}", access.queue))?;
    tracing::info!(queue = %access.queue, "consuming");
    loop {
        if limit.is_some_and(|l| *handled >= l) {
            return Ok(());
        }
        let want = match limit {
            Some(l) => ((l - *handled) as usize).min(batching.max),
            None => batching.max,
        };
        let first = tokio::select! {
            d = consumer.next() => d,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("the broker closed the consumer");
        };
        let mut deliveries = vec![first?];
        let deadline = tokio::time::Instant::now() + batching.wait;
        while deliveries.len() < want {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => deliveries.push(d?),
                Ok(None) => anyhow::bail!("the broker closed the consumer"),
                Err(_) => break,
            }
        }
        // Verify and decode (a ledger checkpoint: verify and keep it); retry while the
        // router's schema endpoint is unreachable or a checkpoint cannot be saved.
        let mut decoded: Vec<Result<Option<Received>, DecodeError>> =
            Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            let mut wait = Duration::from_millis(500);
            loop {
                let r = if is_checkpoint(d) {
                    decoder
                        .checkpoint(d, access.checkpoints.as_deref())
                        .await
                        .map(|()| None)
                } else {
                    decoder.decode(d).await.map(Some)
                };
                match r {
                    Err(DecodeError::Transient(m)) => {
                        tracing::warn!(error = %m, "cannot read a schema; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return Ok(()),
                        }
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                    other => {
                        decoded.push(other);
                        break;
                    }
                }
            }
        }
        let good: Vec<Received> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned().flatten())
            .collect();
        let verdicts = handler.handle(&good, stop).await?;
        // Fail closed: a record no verdict covers is never acked unseen.
        anyhow::ensure!(
            verdicts.len() == good.len(),
            "the handler judged {} of {} records; none is acked, the batch is redelivered",
            verdicts.len(),
            good.len()
        );
        let mut verdicts = verdicts.into_iter();
        let mut records = 0u64;
        for (d, r) in deliveries.iter().zip(&decoded) {
            let verdict = match r {
                Ok(Some(_)) => verdicts
                    .next()
                    .expect("one verdict per record, checked above"),
                Ok(None) => Verdict::Ack,
                Err(e) => Verdict::Reject(e.to_string()),
            };
            records += u64::from(!matches!(r, Ok(None)));
            let message_id = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let ok = match verdict {
                Verdict::Ack => d.acker.ack(BasicAckOptions::default()).await?,
                Verdict::Reject(why) => {
                    tracing::warn!(%message_id, reason = %why, queue = %access.queue,
                        "rejected: dead-lettered to the agency's .dlq");
                    d.acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await?
                }
            };
            anyhow::ensure!(ok, "the channel closed before the ack was sent");
        }
        *handled += records;
    }
}

/// Ends a session whose acks must all count. The consumer is cancelled first: a quorum queue
/// applies the acks before the cancel, whereas on a bare channel close RabbitMQ 3.10 returned
/// the last acked deliveries to the queue about one run in five under load (close-ok came, the
/// acks were lost, the records came again). Then the channel is closed: the broker answers
/// close-ok only after what was sent before it, so no ack is lost when the process exits next.
async fn settle_and_close(access: &Access, ch: &lapin::Channel) {
    let tag = format!("govbus-{}", access.agency);
    let wait = Duration::from_secs(5);
    match tokio::time::timeout(
        wait,
        ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, queue = %access.queue,
            "cancelling the consumer failed: the last acked records may come again"),
        Err(_) => tracing::warn!(queue = %access.queue,
            "the broker did not confirm the consumer's cancel within 5 s: the last acked records may come again"),
    }
    if tokio::time::timeout(wait, ch.close(200, "done".into()))
        .await
        .is_err()
    {
        tracing::warn!(queue = %access.queue,
            "the broker did not confirm the channel's close within 5 s: the last acked records may come again");
    }
}

/// Whether a delivery is a ledger checkpoint rather than a record.
fn is_checkpoint(d: &Delivery) -> bool {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| header_str(h, checkpoint::KIND_HEADER))
        == Some(checkpoint::KIND)
}
