//! Writer schemas by fingerprint (what `GET /schemas/{fingerprint}` serves) and the catalogue
//! files put in force, kept by content.

use sqlx::PgPool;

use crate::routing::projection::Projection;

/// Keeps a catalogue file's text by its SHA-256 (first and last time it was loaded).
pub async fn record_catalogue(pool: &PgPool, text: &str) -> sqlx::Result<()> {
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    sqlx::query(
        "INSERT INTO catalogue_versions (sha256, body) VALUES ($1, $2)
         ON CONFLICT (sha256) DO UPDATE SET last_loaded = now()",
    )
    .bind(sum)
    .bind(text)
    .execute(pool)
    .await?;
    Ok(())
}

/// Registers the writer schema of each projection (idempotent).
pub async fn register_schemas(
    pool: &PgPool,
    projections: &[std::sync::Arc<Projection>],
) -> sqlx::Result<()> {
    for p in projections {
        let w = &p.writer;
        sqlx::query("INSERT INTO schemas (fingerprint, record_type, schema_text) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(w.fingerprint.to_string())
            .bind(&w.full_name)
            .bind(serde_json::to_string_pretty(&w.json).expect("JSON serialises"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A registered writer schema's text.
pub async fn schema_text(pool: &PgPool, fingerprint: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT schema_text FROM schemas WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(pool)
        .await
}
