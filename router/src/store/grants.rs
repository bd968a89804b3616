//! Grants approved through the sharing workflow, kept beside the catalogue file's: the routing
//! tables merge them in at every load.
use chrono::NaiveDate;
use sqlx::{PgPool, Row};

use crate::routing::catalogue::{Date, Grant, Identity, SourceItem};

/// The grants approved through the workflow and in force, for the routing tables (a grant
/// to another platform waits for that platform's confirmation).
pub async fn stored(pool: &PgPool) -> sqlx::Result<Vec<Grant>> {
    let rows = sqlx::query("SELECT id, revision, agency, item, fields, identity, legal_basis, purpose, valid_from, valid_until, region FROM workflow_grants WHERE in_force ORDER BY id")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| Grant {
            id: r.get("id"),
            revision: r.get("revision"),
            agency: r.get("agency"),
            item: r.get("item"),
            fields: r.get("fields"),
            identity: Identity::from_stored(r.get("identity")),
            legal_basis: r.get("legal_basis"),
            purpose: r.get("purpose"),
            valid_from: Date(r.get("valid_from")),
            valid_until: r.get::<Option<NaiveDate>, _>("valid_until").map(Date),
            region: r.get("region"),
        })
        .collect())
}

/// What other platforms grant this one through applications made here: (platform, item).
pub async fn sources(pool: &PgPool) -> sqlx::Result<Vec<(String, SourceItem)>> {
    let rows = sqlx::query(
        "SELECT platform, item, fields, identity, region FROM platform_sources ORDER BY item",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("platform"),
                SourceItem {
                    id: r.get("item"),
                    fields: r.get("fields"),
                    identity: Identity::from_stored(r.get("identity")),
                    region: r.get("region"),
                },
            )
        })
        .collect())
}
