//! The router's PostgreSQL state (migrations in `router/migrations`).
//!
//! ## Layout
//! - `ledger.rs`: the hash-chained delivery ledger and its verification.
//! - `versions.rs`: what each agency holds of each record; the latest record for replay.
//! - `kept.rs`: kept (unconfirmed) deliveries. `refusals.rs`: refused messages.
//! - `counters.rs`: per-department and timeliness counts, written with the ledger rows.
//! - `jobs.rs`: advisory locks for jobs that run once per platform.
//! - `schemas.rs`: writer schemas by fingerprint, catalogue history. `grants.rs`: grants
//!   approved through the workflow. `id_secret.rs`: the id secret in force and its lock.
use sqlx::{postgres::PgPoolOptions, PgPool};

pub mod counters;
pub mod grants;
pub mod id_secret;
pub mod jobs;
pub mod kept;
pub mod ledger;
pub mod primary;
pub mod refusals;
pub mod schemas;
pub mod versions;

pub use kept::{keep, kept_counts, kept_for, release, Kept};
pub use refusals::{headers_from_json, headers_json, insert_refusals, Refusal};
pub use schemas::{record_catalogue, register_schemas, schema_text};
pub use versions::{keep_latest, prior, LatestRecord};

/// Embedded migrations (`router/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects to the primary among `url`'s addresses (one, or a primary and its standbys
/// separated by commas: [`primary`]) and applies the migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    Ok(connect_primary(url, max_connections).await?.0)
}

/// [`connect`], also saying which of `url`'s addresses is the primary (for [`primary::follow`]).
pub async fn connect_primary(url: &str, max_connections: u32) -> anyhow::Result<(PgPool, usize)> {
    let (index, opts) = primary::find(url).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL at {}: {e}; start it or set database.url (GOVBUS__DATABASE__URL)",
                bus_schemas::amqp::config::redact(url)
            )
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot apply the router's migrations: {e}"))?;
    Ok((pool, index))
}

/// Records `router` as the holder of `partition` (its active consumer), from now.
pub async fn partitions_held(pool: &PgPool, partition: u8, router: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO partition_holders (partition, router) VALUES ($1, $2)
         ON CONFLICT (partition) DO UPDATE SET router = EXCLUDED.router, since = now()",
    )
    .bind(i16::from(partition))
    .bind(router)
    .execute(pool)
    .await
    .map(|_| ())
}
