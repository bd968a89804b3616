//! Grants approved through the sharing workflow, kept beside the catalogue file's: the routing
//! tables merge them in at every load.
use chrono::NaiveDate;
use sqlx::{PgPool, Row};

use crate::routing::catalogue::{Date, Grant, Identity};

/// The grants approved through the workflow, for the routing tables.
pub async fn stored(pool: &PgPool) -> sqlx::Result<Vec<Grant>> {
    let rows = sqlx::query("SELECT id, revision, agency, item, fields, identity, legal_basis, purpose, valid_from, valid_until FROM workflow_grants ORDER BY id")
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
            region: None,
        })
        .collect())
}
