//! Kept deliveries: what the broker did not confirm (an agency's queue full or blocked) waits
//! in PostgreSQL and is published again, oldest first, per agency. A confirmed retry goes
//! to the ledger and leaves the table in one transaction; one agency's full queue never holds
//! up the others.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bus_schemas::amqp::{
    publish::{classify, publish_all},
    Connector,
};
use lapin::{options::ConfirmSelectOptions, Channel, Connection};
use tokio_util::sync::CancellationToken;

use crate::{pipeline::shared::Shared, store, store::ledger, telemetry};

/// Most kept deliveries of one agency published per round.
const ROUND: i64 = 1000;

/// Runs until `stop`.
pub async fn run(shared: Arc<Shared>, connector: Connector, stop: CancellationToken) {
    let every = Duration::from_millis(shared.tunables.retry_ms.max(10));
    let mut session: Option<(Connection, Channel)> = None;
    // Agency → when to try again (doubling while its queue stays full).
    let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => break,
        }
        let counts = match store::kept_counts(&shared.pool).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read kept deliveries; retrying");
                continue;
            }
        };
        let routing = shared.routing();
        for a in routing.catalogue.agency_ids() {
            telemetry::kept_now(a, counts.get(a).copied().unwrap_or(0));
        }
        let mut agencies: Vec<String> = counts.into_keys().collect();
        agencies.sort();
        {
            let mut blocked = shared.blocked.lock().expect("blocked lock");
            blocked.retain(|a| agencies.contains(a));
            blocked.extend(agencies.iter().cloned());
        }
        if agencies.is_empty() {
            continue;
        }
        // One router retries at a time (each keeps the agencies' blocked state above).
        let round = async {
            if session.is_none() {
                session = open(&connector, &stop).await;
            }
            let Some((_, ch)) = &session else { return };
            let ch = ch.clone();
            for agency in agencies {
                if backoff
                    .get(&agency)
                    .is_some_and(|(t, _)| Instant::now() < *t)
                {
                    continue;
                }
                // While an agency's queue stays full, one delivery probes it before a whole round.
                let limit = if backoff.contains_key(&agency) {
                    1
                } else {
                    ROUND
                };
                match retry_agency(&shared, &ch, &agency, limit).await {
                    Ok(true) => {
                        backoff.remove(&agency);
                    }
                    Ok(false) => {
                        back_off(&mut backoff, agency, every);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retrying kept deliveries failed; reconnecting");
                        // Probed alone from now on: a queue that stopped answering must not hold
                        // up the other agencies' retries.
                        back_off(&mut backoff, agency, every);
                        if let Some((conn, _)) = session.take() {
                            crate::pipeline::run::close_within(&conn, "reconnecting").await;
                        }
                        break;
                    }
                }
            }
        };
        if let Err(e) = store::jobs::once(&shared.pool, store::jobs::Job::Retry, round).await {
            tracing::warn!(error = %e, "cannot take the retry job's lock; retrying");
        }
    }
    if let Some((conn, _)) = session {
        crate::pipeline::run::close_within(&conn, "router stopping").await;
    }
}

/// The agency is tried again later, twice as late as last time (at most 30 s).
fn back_off(backoff: &mut HashMap<String, (Instant, Duration)>, agency: String, every: Duration) {
    let d = backoff
        .get(&agency)
        .map_or(every, |(_, d)| (*d * 2).min(Duration::from_secs(30)));
    backoff.insert(agency, (Instant::now() + d, d));
}

async fn open(connector: &Connector, stop: &CancellationToken) -> Option<(Connection, Channel)> {
    let conn = connector.connect(stop, |_, _| {}).await.ok()?;
    let ch = conn.create_channel().await.ok()?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    Some((conn, ch))
}

/// Publishes an agency's oldest kept deliveries in order, stopping at the first the broker
/// refuses. Returns whether all went through.
async fn retry_agency(
    shared: &Shared,
    ch: &Channel,
    agency: &str,
    limit: i64,
) -> anyhow::Result<bool> {
    let kept = store::kept_for(&shared.pool, agency, limit).await?;
    let timeout = shared.tunables.confirm_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let stalled = || anyhow::anyhow!("no confirm from RabbitMQ for agency {agency} in {timeout:?}");
    let confirms =
        tokio::time::timeout_at(deadline, publish_all(ch, kept.iter().map(|k| &k.message)))
            .await
            .map_err(|_| stalled())?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    let mut done = Vec::new();
    let mut all = true;
    for (k, c) in kept.iter().zip(confirms) {
        // What was confirmed before a stall is written below; the rest stays kept.
        let Ok(c) = tokio::time::timeout_at(deadline, c).await else {
            telemetry::stalled();
            write_delivered(shared, agency, &done).await?;
            return Err(stalled());
        };
        match classify(c, &k.message) {
            Ok(()) if all => done.push(k),
            Ok(()) => {} // after a refusal: published again later, same message id
            Err(e) if e.needs_new_channel() => return Err(e.into()),
            Err(_) => all = false,
        }
    }
    write_delivered(shared, agency, &done).await?;
    Ok(all)
}

/// The ledger takes the confirmed retries and the table lets them go, in one transaction.
async fn write_delivered(
    shared: &Shared,
    agency: &str,
    done: &[&store::Kept],
) -> anyhow::Result<()> {
    if !done.is_empty() {
        let t = Instant::now();
        let mut tx = shared.pool.begin().await?;
        let entries: Vec<&ledger::Entry> = done.iter().map(|k| &k.entry).collect();
        let rows = ledger::append(&mut tx, &entries).await?;
        store::release(&mut tx, &done.iter().map(|k| k.id).collect::<Vec<_>>()).await?;
        tx.commit().await?;
        telemetry::ledger_batch(t.elapsed().as_secs_f64(), rows);
        for e in entries {
            telemetry::delivered(&e.agency, &e.item, e.source_time_ms);
        }
        tracing::info!(agency, delivered = done.len(), "kept deliveries delivered");
    }
    Ok(())
}
