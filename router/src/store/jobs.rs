//! Jobs that must run once per platform however many routers run: retrying kept deliveries,
//! checkpoints, deadline escalations and dispute settling, replays. Each round of such a job
//! holds a PostgreSQL advisory lock (two-key form: the namespace "gbus" and the job), taken on
//! a connection held for the round; a router that dies loses its connection and so its lock.
use std::future::Future;

use sqlx::PgPool;

/// The first key of every job lock ("gbus"); the id-secret lock uses the one-key form, which
/// PostgreSQL keeps apart.
const NAMESPACE: i32 = 0x6762_7573;

/// A job that runs on one router at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Retrying kept deliveries.
    Retry = 1,
    /// Signing and delivering ledger checkpoints.
    Checkpoints = 2,
    /// Escalating overdue applications, settling disputes.
    Deadlines = 3,
    /// A replay of records to an agency.
    Replay = 4,
    /// Purging what is kept of records no longer shared (`ops::purge`).
    Purge = 5,
}

/// Runs `work` if no other router holds `job` now; `None` when one does.
pub async fn once<T>(
    pool: &PgPool,
    job: Job,
    work: impl Future<Output = T>,
) -> sqlx::Result<Option<T>> {
    let mut conn = pool.acquire().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(NAMESPACE)
        .bind(job as i32)
        .fetch_one(&mut *conn)
        .await?;
    if !got {
        return Ok(None);
    }
    let out = work.await;
    unlock(&mut conn, job).await;
    Ok(Some(out))
}

/// Runs `work` once no other router holds `job`, waiting for it.
pub async fn exclusive<T>(
    pool: &PgPool,
    job: Job,
    work: impl Future<Output = T>,
) -> sqlx::Result<T> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(NAMESPACE)
        .bind(job as i32)
        .execute(&mut *conn)
        .await?;
    let out = work.await;
    unlock(&mut conn, job).await;
    Ok(out)
}

async fn unlock(conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>, job: Job) {
    let released = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1, $2)")
        .bind(NAMESPACE)
        .bind(job as i32)
        .fetch_one(&mut **conn)
        .await;
    if !matches!(released, Ok(true)) {
        // The connection is in doubt: closing it releases whatever it holds.
        tracing::warn!(?job, "cannot release a job lock; closing its connection");
        conn.close_on_drop();
    }
}
