//! The router partitions (DESIGN.md, "Scale"): `govbus partitions set P` binds the 64 shards
//! of `govbus.ingest` to P queues `govbus.router.<p>` and records P in PostgreSQL; every router
//! of the platform must be configured with that P. The first router to start on a platform
//! where nothing is recorded binds its own P.
use bus_schemas::amqp::{topology, Connector};

use crate::ops::status::QueueProbe;
use sqlx::PgPool;

/// The advisory lock key (one-key form) of setting P: "govbus p".
const LOCK: i64 = 0x676f_7662_7573_2070;

/// The P recorded for this platform, if any.
pub async fn bound(pool: &PgPool) -> sqlx::Result<Option<u8>> {
    let n: Option<i16> = sqlx::query_scalar("SELECT count FROM partitions")
        .fetch_optional(pool)
        .await?;
    Ok(n.map(|n| n as u8))
}

/// What [`set`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Set {
    /// Nothing was bound before.
    New,
    /// The same P was bound already (declared again, idempotently).
    Same,
    /// P changed from the given count: the old bindings are gone.
    Changed(u8),
}

/// How [`set`] treats a P bound already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A router's start: only binds where nothing is bound, never changes P.
    Never,
    /// `govbus partitions set`: changes P while the old partitions are empty.
    IfDrained,
    /// `govbus partitions set --force`: changes P whatever the partitions hold.
    Force,
}

/// Binds the shards to `partitions` queues and records P. Changing P is refused while a
/// partition holds messages (their records could be decided out of order), unless forced.
pub async fn set(
    pool: &PgPool,
    connector: &Connector,
    partitions: u8,
    change: Change,
) -> anyhow::Result<Set> {
    anyhow::ensure!(
        (1..=bus_schemas::wire::MAX_PARTITIONS).contains(&partitions),
        "partitions must be 1 to {}, not {partitions}",
        bus_schemas::wire::MAX_PARTITIONS
    );
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    let previous: Option<u8> = sqlx::query_scalar::<_, i16>("SELECT count FROM partitions")
        .fetch_optional(&mut *tx)
        .await?
        .map(|n| n as u8);
    if let Some(old) = previous.filter(|&o| o != partitions && change == Change::Never) {
        anyhow::bail!(mismatch(partitions, old));
    }
    if let Some(old) = previous.filter(|&o| o != partitions && change != Change::Force) {
        let queues: Vec<String> = (0..old).map(bus_schemas::wire::router_queue).collect();
        let (reachable, depths) = QueueProbe::new(connector.clone()).depths(&queues).await;
        anyhow::ensure!(
            reachable,
            "RabbitMQ did not answer how many messages the partitions hold"
        );
        let waiting: Vec<String> = queues
            .iter()
            .filter_map(|q| {
                let (n, _) = depths.get(q)?;
                (*n > 0).then(|| format!("{q} holds {n}"))
            })
            .collect();
        anyhow::ensure!(
            waiting.is_empty(),
            "the platform's partitions are bound as {old}, and changing that under \
             traffic could deliver a record's versions out of order: {}. Stop the \
             adapters, let the routers drain the partitions, then set it again (or \
             pass --force)",
            waiting.join(", ")
        );
    }
    let conn = connector.connect_once().await?;
    let result = async {
        let ch = conn.create_channel().await?;
        topology::declare_core(&ch).await?;
        topology::declare_partitions(&ch, partitions, previous).await?;
        let _ = ch.close(200, "partitions set".into()).await;
        anyhow::Ok(())
    }
    .await;
    let _ = conn.close(200, "partitions set".into()).await;
    result?;
    sqlx::query(
        "INSERT INTO partitions (one, count) VALUES (true, $1)
         ON CONFLICT (one) DO UPDATE SET count = EXCLUDED.count, set_at = now()",
    )
    .bind(i16::from(partitions))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match previous {
        None => Set::New,
        Some(o) if o == partitions => Set::Same,
        Some(o) => Set::Changed(o),
    })
}

/// At a router's start: binds `configured` if the platform has no P yet, and refuses to run
/// with a P other than the bound one.
pub async fn check_or_bind(
    pool: &PgPool,
    connector: &Connector,
    configured: u8,
) -> anyhow::Result<()> {
    match bound(pool).await? {
        Some(p) if p == configured => Ok(()),
        Some(p) => anyhow::bail!(mismatch(configured, p)),
        None => {
            // Two routers starting at once: the lock in `set` makes the second find the first's.
            match set(pool, connector, configured, Change::Never).await? {
                Set::New => {
                    tracing::info!(
                        partitions = configured,
                        "bound the shards to this router's partitions"
                    );
                    Ok(())
                }
                Set::Same => Ok(()),
                Set::Changed(_) => unreachable!("nothing was bound"),
            }
        }
    }
}

fn mismatch(configured: u8, bound: u8) -> String {
    format!(
        "router.partitions is {configured}, but this platform's shards are bound to {bound} \
         partitions (by `govbus partitions set {bound}`, or by the first router to start): set \
         router.partitions = {bound} (GOVBUS__ROUTER__PARTITIONS={bound}), or change the \
         platform's with `govbus partitions set {configured}` once the partitions are drained"
    )
}
