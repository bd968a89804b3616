//! Source → broker, at least once. Rows are mapped, signed and published with a pipelined
//! window of confirms; the source position advances only past rows whose publish the broker
//! confirmed (or that were quarantined, confirmed likewise). A failed channel is rebuilt with
//! backoff and everything unconfirmed is published again with the same message id. On stop,
//! intake ends, in-flight confirms are awaited, the position is saved.
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use bus_schemas::amqp::{
    connect::ConnectError,
    publish::{classify, publish_all, PublishError},
    Connector, OutgoingMessage,
};
use futures::FutureExt;
use lapin::{options::ConfirmSelectOptions, Channel, Connection, PublisherConfirm};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::{
    health::Health,
    mapping::{Mapper, Outcome},
    message::{Kind, Publisher},
    source::{now_ms, Source, SourceError, SourceRecord},
    telemetry,
};

/// How long one confirm may take before the channel is presumed dead.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the position is saved while records flow.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// How long a stopping adapter waits for outstanding confirms.
const DRAIN_FOR: Duration = Duration::from_secs(30);

struct Pending {
    position: Json,
    label: String,
    msg: OutgoingMessage,
    confirm: Option<PublisherConfirm>,
    kind: Kind,
    source_time_ms: i64,
    /// (reason class, field) of a quarantined row.
    quarantine: Option<(&'static str, String)>,
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Records confirmed on the ingest exchange.
    pub published: u64,
    /// Rows confirmed on the quarantine exchange.
    pub quarantined: u64,
    /// Connections opened after the first (the broker or the network went away mid-run).
    pub reconnects: u64,
    /// Records confirmed on a connection after the first: work that went on after a reconnect.
    pub published_after_reconnect: u64,
}

/// Rows read ahead and prepared on a blocking thread while the previous batch is published.
const BATCH: usize = 256;

/// What turns a source row into a message: mapping, validation, encoding, signing. Shared
/// with the blocking threads that prepare batches ahead of publishing.
struct Prep {
    mapper: Mapper,
    publisher: Publisher,
}

impl Prep {
    /// The message of one source row (a quarantined row is followed by its count message).
    fn prepare(&self, rec: SourceRecord, out: &mut Vec<Pending>) {
        telemetry::record_read();
        let rt = self.mapper.record_type();
        // A record to publish, or (rule, field, reason) of a row to quarantine.
        let outcome = match &rec.problem {
            Some(problem) => Err(("unreadable", String::new(), problem.clone())),
            None => match self.mapper.map(&rec.row, rec.fallback_version, now_ms()) {
                Outcome::Record(m) => match self.publisher.record(rt, &m) {
                    Ok(msg) => {
                        if tracing::enabled!(tracing::Level::TRACE) {
                            tracing::trace!(key = %self.publisher.key_ref(&m), version = m.version, op = m.op.as_str(), "record ready");
                        }
                        Ok((msg, m.source_time_ms))
                    }
                    Err(e) => Err(("mapping", String::new(), e.to_string())),
                },
                Outcome::Invalid {
                    rule,
                    field,
                    reason,
                } => Err((rule, field, reason)),
            },
        };
        let (msg, kind, source_time_ms, quarantine) = match outcome {
            Ok((msg, source_time_ms)) => (msg, Kind::Record, source_time_ms, None),
            Err((rule, field, reason)) => (
                self.publisher.quarantine(
                    &rec.row,
                    &field,
                    &reason,
                    // A sheet row names the cell of the field at fault.
                    &rec.cells
                        .as_ref()
                        .and_then(|c| c.of(self.mapper.column_of(&field)))
                        .unwrap_or_else(|| rec.label.clone()),
                ),
                Kind::Quarantine,
                now_ms(),
                Some((telemetry::reason_class(rule), field)),
            ),
        };
        let count = (kind == Kind::Quarantine).then(|| Pending {
            position: rec.position.clone(),
            label: rec.label.clone(),
            msg: self.publisher.quarantine_count(&msg),
            confirm: None,
            kind: Kind::QuarantineCount,
            source_time_ms,
            quarantine: None,
        });
        out.push(Pending {
            position: rec.position,
            label: rec.label,
            msg,
            confirm: None,
            kind,
            source_time_ms,
            quarantine,
        });
        out.extend(count);
    }
}

/// Why the source gave no more rows for now.
enum SourceState {
    Open,
    /// Nothing new (or a transient failure): ask again at this instant.
    IdleUntil(Instant),
}

/// One adapter's publishing loop.
pub struct Pipeline<S: Source> {
    source: S,
    prep: Arc<Prep>,
    connector: Connector,
    health: Arc<Health>,
    stop: CancellationToken,
    until_idle: bool,
    state: SourceState,
    caught_up: bool,
    fatal: Option<anyhow::Error>,
}

enum Step {
    Continue,
    ChannelLost,
}

impl<S: Source> Pipeline<S> {
    /// A pipeline from `source` through `mapper` and `publisher` to the broker. `stop` is
    /// cancelled on SIGTERM (stop intake, drain); with `until_idle` the run also ends once the
    /// source has nothing new and every row is confirmed (`--once`, tests).
    pub fn new(
        source: S,
        mapper: Mapper,
        publisher: Publisher,
        connector: Connector,
        health: Arc<Health>,
        stop: CancellationToken,
        until_idle: bool,
    ) -> Self {
        Pipeline {
            source,
            prep: Arc::new(Prep { mapper, publisher }),
            connector,
            health,
            stop,
            until_idle,
            state: SourceState::Open,
            caught_up: false,
            fatal: None,
        }
    }

    /// Up to `BATCH` rows from the source, noting when it has nothing new or failed.
    async fn read_batch(&mut self, min_delay: Duration) -> Vec<SourceRecord> {
        if let SourceState::IdleUntil(t) = self.state {
            if Instant::now() < t {
                return Vec::new();
            }
            self.state = SourceState::Open;
        }
        let mut rows = Vec::new();
        while rows.len() < BATCH && self.fatal.is_none() {
            match self.source.next().await {
                Ok(Some(rec)) => {
                    self.caught_up = false;
                    rows.push(rec);
                }
                Ok(None) => {
                    self.caught_up = true;
                    self.state =
                        SourceState::IdleUntil(Instant::now() + self.source.poll_interval());
                    break;
                }
                Err(SourceError::Transient(e)) => {
                    tracing::warn!(error = %e, "source unavailable; retrying");
                    self.state = SourceState::IdleUntil(
                        Instant::now() + self.source.poll_interval().max(min_delay),
                    );
                    break;
                }
                Err(SourceError::Fatal(e)) => {
                    tracing::error!(error = %e, "source failed; draining and stopping");
                    self.fatal = Some(anyhow::anyhow!(e));
                    break;
                }
            }
        }
        rows
    }

    fn prepare_ahead(&self, rows: Vec<SourceRecord>) -> tokio::task::JoinHandle<Vec<Pending>> {
        let prep = self.prep.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                prep.prepare(r, &mut out);
            }
            // The records prepared together are one batch: one signature, one path each.
            let records = out
                .iter_mut()
                .filter(|p| p.kind == Kind::Record)
                .map(|p| &mut p.msg);
            if let Err(e) = prep.publisher.seal(records) {
                // Only a message built without its headers gets here: a bug, not bad data.
                panic!("cannot seal prepared records: {e}");
            }
            out
        })
    }
    /// A connection and a channel in confirm mode, retrying with backoff until both work;
    /// `None` once the adapter is stopping.
    async fn open_channel(&self) -> Result<Option<(Connection, Channel)>, anyhow::Error> {
        let mut delay = Duration::from_millis(self.connector.config().reconnect_min_ms);
        let max_delay = Duration::from_millis(self.connector.config().reconnect_max_ms);
        loop {
            let conn = match self
                .connector
                .connect(&self.stop, |e, d| {
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "RabbitMQ unreachable")
                })
                .await
            {
                Ok(c) => c,
                Err(ConnectError::Cancelled) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let channel = match conn.create_channel().await {
                Ok(ch) => match ch.confirm_select(ConfirmSelectOptions::default()).await {
                    Ok(()) => Ok(ch),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match channel {
                Ok(ch) => return Ok(Some((conn, ch))),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a confirmed channel; reconnecting");
                    let _ = conn.close(200, "reconnecting".into()).await;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Ok(None),
                    }
                    delay = (delay * 2).min(max_delay);
                }
            }
        }
    }

    /// Runs until stopped (or, with `until_idle`, until the source has nothing new and every
    /// row is confirmed). Returns the counts.
    pub async fn run(mut self) -> anyhow::Result<Summary> {
        let cap = self.connector.config().confirm_window.max(1);
        let min_delay = Duration::from_millis(self.connector.config().reconnect_min_ms);
        let max_delay = Duration::from_millis(self.connector.config().reconnect_max_ms);
        let mut summary = Summary::default();
        let mut sessions: u64 = 0;
        let mut session: Option<(Connection, Channel)> = None;
        let mut window: VecDeque<Pending> = VecDeque::with_capacity(cap);
        let mut ready: VecDeque<Pending> = VecDeque::new();
        let mut ahead: Option<tokio::task::JoinHandle<Vec<Pending>>> = None;
        let mut last_confirmed: Option<(Json, String)> = None;
        let mut committed = false;
        let mut last_commit = Instant::now();
        let mut retry_delay = min_delay;
        let mut drain_deadline: Option<Instant> = None;

        loop {
            let done_for_now = self.caught_up && ready.is_empty() && ahead.is_none();
            let stopping = self.stop.is_cancelled()
                || self.fatal.is_some()
                || (self.until_idle && done_for_now);
            if stopping {
                self.health.set_draining();
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_FOR);
                if window.is_empty() || Instant::now() > deadline {
                    break;
                }
            }

            if session.is_none() {
                self.health.set_connected(false);
                if self.stop.is_cancelled() {
                    break; // unconfirmed rows are read again after a restart
                }
                let Some((conn, ch)) = self.open_channel().await? else {
                    continue;
                };
                telemetry::reconnect(window.len());
                sessions += 1;
                summary.reconnects = sessions - 1;
                let mut ok = true;
                let results = publish_all(&ch, window.iter().map(|p| &p.msg)).await;
                for (p, r) in window.iter_mut().zip(results) {
                    match r {
                        Ok(c) => p.confirm = Some(c),
                        Err(e) => {
                            if ok {
                                tracing::warn!(error = %e, "republishing failed; reconnecting");
                            }
                            ok = false;
                        }
                    }
                }
                if !ok {
                    let _ = conn.close(200, "reconnecting".into()).await;
                    continue;
                }
                self.health.set_connected(true);
                session = Some((conn, ch));
            }
            let ch = session
                .as_ref()
                .map(|(_, ch)| ch.clone())
                .expect("session is open");

            // Publish prepared rows while there is room, a run at a time (see `publish_all`);
            // the next batch is mapped, validated and signed on a blocking thread meanwhile.
            // A run is flushed before anything is awaited, so the broker is never kept
            // waiting for rows already prepared.
            if !stopping {
                let mut run: Vec<Pending> = Vec::new();
                while window.len() + run.len() < cap && session.is_some() {
                    if ready.is_empty() {
                        self.publish_run(&ch, &mut run, &mut window, &mut session)
                            .await;
                        if let Some(h) = ahead.take() {
                            ready.extend(
                                h.await
                                    .map_err(|e| anyhow::anyhow!("preparing rows failed: {e}"))?,
                            );
                        } else {
                            let rows = self.read_batch(min_delay).await;
                            if rows.is_empty() {
                                break;
                            }
                            let h = self.prepare_ahead(rows);
                            ready.extend(
                                h.await
                                    .map_err(|e| anyhow::anyhow!("preparing rows failed: {e}"))?,
                            );
                        }
                    }
                    if ahead.is_none() {
                        self.publish_run(&ch, &mut run, &mut window, &mut session)
                            .await;
                        let rows = self.read_batch(min_delay).await;
                        if !rows.is_empty() {
                            ahead = Some(self.prepare_ahead(rows));
                        }
                    }
                    let Some(p) = ready.pop_front() else {
                        break;
                    };
                    run.push(p);
                }
                self.publish_run(&ch, &mut run, &mut window, &mut session)
                    .await;
                if session.is_none() {
                    continue;
                }
            }

            // Settle confirms in order, as many as are ready.
            if !window.is_empty() {
                match self
                    .settle(
                        &mut window,
                        &ch,
                        &mut summary,
                        &mut last_confirmed,
                        &mut retry_delay,
                        min_delay,
                        max_delay,
                    )
                    .await
                {
                    Step::Continue => {}
                    Step::ChannelLost => {
                        if let Some((conn, _)) = session.take() {
                            let _ = conn.close(200, "reconnecting".into()).await;
                        }
                    }
                }
            } else if let (SourceState::IdleUntil(t), true, true) =
                (&self.state, ready.is_empty(), ahead.is_none())
            {
                let t = *t;
                if !committed {
                    self.commit(&mut last_confirmed, &mut committed, &mut last_commit)
                        .await?;
                }
                if !stopping {
                    tokio::select! {
                        () = tokio::time::sleep_until(t.into()) => {}
                        () = self.stop.cancelled() => {}
                    }
                }
            }

            if last_confirmed.is_some() {
                committed = false;
            }
            if !committed && (window.is_empty() || last_commit.elapsed() >= COMMIT_EVERY) {
                self.commit(&mut last_confirmed, &mut committed, &mut last_commit)
                    .await?;
            }
        }
        self.commit(&mut last_confirmed, &mut committed, &mut last_commit)
            .await?;
        if !window.is_empty() {
            tracing::warn!(
                unconfirmed = window.len(),
                "stopped with unconfirmed rows; they are read again after a restart"
            );
        }
        if let Some((conn, _)) = session {
            let _ = conn.close(200, "stopping".into()).await;
        }
        tracing::info!(
            published = summary.published,
            quarantined = summary.quarantined,
            "adapter stopped"
        );
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    async fn commit(
        &mut self,
        last_confirmed: &mut Option<(Json, String)>,
        committed: &mut bool,
        last_commit: &mut Instant,
    ) -> anyhow::Result<()> {
        if let Some((pos, label)) = last_confirmed.take() {
            self.source
                .commit(&pos)
                .await
                .map_err(|e| anyhow::anyhow!("cannot save the source position: {e}"))?;
            telemetry::committed(&label);
        }
        *committed = true;
        *last_commit = Instant::now();
        Ok(())
    }

    /// Publishes `run` at once and moves it into the window; a failed publish drops the
    /// session (everything unconfirmed is published again on the new channel).
    async fn publish_run(
        &self,
        ch: &Channel,
        run: &mut Vec<Pending>,
        window: &mut VecDeque<Pending>,
        session: &mut Option<(Connection, Channel)>,
    ) {
        if session.is_none() {
            // The channel failed earlier in this pass: these wait for the new one.
            window.extend(run.drain(..));
            return;
        }
        if run.is_empty() {
            return;
        }
        let results = publish_all(ch, run.iter().map(|p| &p.msg)).await;
        let mut failed = false;
        for (mut p, r) in run.drain(..).zip(results) {
            match r {
                Ok(c) => {
                    p.confirm = Some(c);
                    if p.kind == Kind::Record {
                        telemetry::published();
                    }
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "publish failed; reconnecting");
                    }
                    failed = true;
                }
            }
            window.push_back(p);
        }
        if failed {
            *session = None;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        window: &mut VecDeque<Pending>,
        ch: &Channel,
        summary: &mut Summary,
        last_confirmed: &mut Option<(Json, String)>,
        retry_delay: &mut Duration,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Step {
        let mut first = true;
        while let Some(front) = window.front_mut() {
            let Some(confirm) = front.confirm.as_mut() else {
                return Step::ChannelLost;
            };
            let result = if first {
                first = false;
                // A confirm that is already in needs no timer.
                if let Some(r) = (&mut *confirm).now_or_never() {
                    r
                } else {
                    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(
                                "no confirm within {}s; presuming the channel dead",
                                CONFIRM_TIMEOUT.as_secs()
                            );
                            front.confirm = None;
                            return Step::ChannelLost;
                        }
                    }
                }
            } else {
                match confirm.now_or_never() {
                    Some(r) => r,
                    None => return Step::Continue,
                }
            };
            front.confirm = None;
            match classify(result, &front.msg) {
                Ok(()) => {
                    let p = window.pop_front().expect("front exists");
                    match p.kind {
                        Kind::Record => {
                            summary.published += 1;
                            if summary.reconnects > 0 {
                                summary.published_after_reconnect += 1;
                            }
                            telemetry::confirmed(p.source_time_ms);
                        }
                        Kind::Quarantine => {
                            summary.quarantined += 1;
                            let (class, field) = p.quarantine.as_ref().expect("quarantine info");
                            telemetry::quarantined(class, field, &p.label);
                        }
                        Kind::QuarantineCount => {}
                    }
                    *last_confirmed = Some((p.position, p.label));
                    *retry_delay = min_delay;
                }
                Err(e) if e.needs_new_channel() => {
                    tracing::warn!(error = %e, "channel lost; reconnecting");
                    return Step::ChannelLost;
                }
                Err(e) => {
                    telemetry::publish_retry(&e.to_string());
                    if let PublishError::Unroutable { .. } = e {
                        tracing::error!(error = %e, "unroutable: nothing is lost, the row waits and is retried");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(*retry_delay) => {}
                        () = self.stop.cancelled() => {}
                    }
                    *retry_delay = (*retry_delay * 2).min(max_delay);
                    match front.msg.publish(ch).await {
                        Ok(c) => front.confirm = Some(c),
                        Err(_) => return Step::ChannelLost,
                    }
                    return Step::Continue;
                }
            }
        }
        Step::Continue
    }
}
