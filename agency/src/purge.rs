//! `govbus-agency sink --purge-ended`: deletes the agency's rows of items whose grants to it have
//! all ended, as articles 30 and 38 ask once a sharing period ends. The platform says which
//! (`GET /api/grants` with the agency's API token): an item is purged when the platform lists
//! grants of it to this agency and every one of them ended. Rows of items with a grant in
//! force, or one that starts later, stay; so do rows of items the platform lists no grant of
//! at all (a grant taken out of the catalogue instead of given an end date, or a wrong token):
//! those are named, not guessed at. Tombstones of purged items go too.
use std::collections::BTreeSet;

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::sink::{tombstones, Tables};

/// What a purge deleted.
#[derive(Debug, Default)]
pub struct Purged {
    /// Items whose rows were deleted.
    pub items: BTreeSet<String>,
    /// Rows deleted, tombstones included.
    pub rows: u64,
    /// Items in the tables the platform lists no grant of to this agency: left alone.
    pub unlisted: BTreeSet<String>,
}

/// The agency's grants as the platform lists them: the items whose grants all ended, and
/// those with a grant not ended.
#[derive(Debug, Default)]
pub struct Granted {
    pub ended: BTreeSet<String>,
    pub current: BTreeSet<String>,
}

/// The agency's grants, from the platform's API.
pub async fn grants(api_url: &str, token: &str) -> anyhow::Result<Granted> {
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
    let mut out = Granted::default();
    for g in grants {
        let Some(item) = g["item"].as_str() else {
            continue;
        };
        if g["ended"] == Json::Bool(true) {
            out.ended.insert(item.to_string());
        } else {
            out.current.insert(item.to_string());
        }
    }
    out.ended.retain(|i| !out.current.contains(i));
    Ok(out)
}

/// Deletes, in one transaction, every row (and tombstone) of `tables` whose item's grants all
/// ended; names the items the platform lists no grant of.
pub async fn purge(pool: &PgPool, tables: &Tables, granted: &Granted) -> anyhow::Result<Purged> {
    let ended: Vec<&str> = granted.ended.iter().map(String::as_str).collect();
    let listed: Vec<&str> = granted
        .ended
        .iter()
        .chain(&granted.current)
        .map(String::as_str)
        .collect();
    let mut tx = pool.begin().await?;
    let mut out = Purged::default();
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
                "DELETE FROM {t} WHERE govbus_item = ANY($1) RETURNING govbus_item"
            )))
            .bind(&ended)
            .fetch_all(&mut *tx)
            .await?;
            out.rows += gone.len() as u64;
            out.items.extend(gone);
            let unlisted: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT DISTINCT govbus_item FROM {t} WHERE govbus_item <> ALL($1)"
            )))
            .bind(&listed)
            .fetch_all(&mut *tx)
            .await?;
            out.unlisted.extend(unlisted);
        }
    }
    tx.commit().await?;
    Ok(out)
}
