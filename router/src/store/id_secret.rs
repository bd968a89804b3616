//! Which version of the platform id secret the database's hashes are under, and the lock that
//! keeps `govbus id-secret rotate` out while a router runs (the rotation: `ops/id_secret.rs`).
use bus_schemas::wire::IdKey;
use sqlx::{postgres::PgConnection, Connection, PgPool};

/// The advisory lock key ("govbus id").
pub(crate) const LOCK: i64 = 0x676f_7662_7573_6964;

/// The id secret version recorded in the database and its check value, if any.
pub(crate) async fn recorded(conn: &mut PgConnection) -> sqlx::Result<Option<(i32, String)>> {
    sqlx::query_as(
        "SELECT version, check_value FROM id_secret_versions ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await
}

/// Checks that `ids` (version `version`) is the secret the database's hashes are under; a
/// database that records none takes this one. The error says what to do.
pub async fn check_in_force(pool: &PgPool, version: u32, ids: &IdKey) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let check = ids.check_value();
    match recorded(&mut conn).await? {
        None => {
            sqlx::query(
                "INSERT INTO id_secret_versions (version, check_value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(version as i32)
            .bind(&check)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        Some((v, c)) if v == version as i32 && c == check => Ok(()),
        Some((v, _)) if v == version as i32 => anyhow::bail!(
            "platform.id_secret_file is not the id secret version {v} this database was written with; \
             put the old file back, or give the new one platform.id_secret_version = {} with the old one under \
             [[platform.previous_id_secrets]] and run `govbus id-secret rotate --config FILE`",
            v + 1
        ),
        Some((v, _)) if v < version as i32 => anyhow::bail!(
            "platform.id_secret_version is {version} but this database's record hashes are under version {v}: \
             stop every router and run `govbus id-secret rotate --config FILE` first"
        ),
        Some((v, _)) => anyhow::bail!(
            "platform.id_secret_version is {version} but this database was already moved to version {v}: \
             this config is older than the database; use the config with version {v}"
        ),
    }
}

/// A connection holding the shared lock that keeps `govbus id-secret rotate` out while a
/// router runs. Dropping it releases the lock.
pub async fn hold_shared(pool: &PgPool) -> anyhow::Result<PgConnection> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(LOCK)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}
