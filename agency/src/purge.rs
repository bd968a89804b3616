//! `govbus-agency sink --purge-ended`: deletes the agency's rows of items it no longer holds a
//! grant for (every grant it had ended, or the grant left the catalogue), as articles 30 and
//! 38 ask once a sharing period ends. The platform says which grants ended
//! (`GET /api/grants` with the agency's API token); rows of items with a grant in force, or
//! one that starts later, stay. Tombstones of purged items go too.
use std::collections::BTreeSet;

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::sink::{tombstones, Tables};

/// What a purge deleted.
#[derive(Debug, Default)]
pub struct Purged {
    /// Items whose rows were deleted (those seen in the tables).
    pub items: BTreeSet<String>,
    /// Rows deleted, tombstones included.
    pub rows: u64,
    /// Items kept: a grant of them is in force or starts later.
    pub kept: BTreeSet<String>,
}

/// The items the agency still holds a grant of (not ended), from the platform's API.
pub async fn items_still_granted(api_url: &str, token: &str) -> anyhow::Result<BTreeSet<String>> {
    let url = format!("{}/api/grants", api_url.trim_end_matches('/'));
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the platform's API at {url}: {e}"))?;
    let status = r.status();
    let body: Json = r
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("{url} answered {status} without JSON: {e}"))?;
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}; check --api-token (GOVBUS_API_TOKEN in the agency's env file)",
        body["error"].as_str().unwrap_or("")
    );
    let grants = body["grants"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{url} listed no grants array"))?;
    Ok(grants
        .iter()
        .filter(|g| g["ended"] == Json::Bool(false))
        .filter_map(|g| g["item"].as_str().map(String::from))
        .collect())
}

/// Deletes, in one transaction, every row (and tombstone) of `tables` whose item is not in
/// `keep`.
pub async fn purge(
    pool: &PgPool,
    tables: &Tables,
    keep: &BTreeSet<String>,
) -> anyhow::Result<Purged> {
    let keep_list: Vec<&str> = keep.iter().map(String::as_str).collect();
    let mut tx = pool.begin().await?;
    let mut out = Purged {
        kept: keep.clone(),
        ..Purged::default()
    };
    for table in tables.names() {
        for t in [table.to_string(), tombstones(table)] {
            // A table not created yet (nothing received) has nothing to purge.
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(&t)
                .fetch_one(&mut *tx)
                .await?;
            if exists.is_none() {
                continue;
            }
            // `t` is a checked table name (Tables::parse).
            let gone: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "DELETE FROM {t} WHERE govbus_item <> ALL($1) RETURNING govbus_item"
            )))
            .bind(&keep_list)
            .fetch_all(&mut *tx)
            .await?;
            out.rows += gone.len() as u64;
            out.items.extend(gone);
        }
    }
    tx.commit().await?;
    Ok(out)
}
