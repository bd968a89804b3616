//! A citizen's data-use log (issue 23; Estonia's Data Tracker has one, no sharing platform
//! here did): which agency received which item of a person, which fields, under which grant
//! and legal basis, and when. It answers from the subject index (`routing::subjects`, written
//! with each routed record) and the ledger, never from a record's content, and only for the
//! person asked about: the query is the keyed hash of that person's ID document.
//!
//! The citizen portal asks with `POST /api/subject-log` (token role `portal`: the token
//! authenticates the portal, the portal vouches for the citizen and names its session); an
//! operator answers a written request with `govbus subject-log`. Every query is logged in
//! `subject_log_queries`: who asked, the session or request, when, about whom (the hash) and
//! how many deliveries it listed. The portal is rate-limited (`workflow.subject_log_per_minute`).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use crate::{
    config::RouterConfig,
    routing::{
        catalogue::{Catalogue, Identity},
        subjects::SubjectKey,
    },
};

/// What is asked: a person's ID document, and who asks for which session or request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectLogRequest {
    /// The ID document type code (`111`, resident identity card, when omitted).
    #[serde(default)]
    pub id_type: String,
    /// The ID document number.
    pub id_number: String,
    /// The portal's session id for the citizen (or the reference of a written request).
    pub session: String,
}

/// One delivery of a record naming the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseEntry {
    /// When the agency's queue confirmed it (RFC 3339, Asia/Shanghai).
    pub delivered_at: String,
    /// The receiving agency (or a linked platform) and its name.
    pub agency: String,
    pub agency_name: String,
    /// The item and its name.
    pub item: String,
    pub item_name: String,
    /// The fields delivered.
    pub fields: Vec<String>,
    /// The grant and its revision.
    pub grant: String,
    pub grant_revision: i64,
    /// The grant's legal basis and purpose (article 35), as the catalogue now states them.
    pub legal_basis: String,
    pub purpose: String,
    /// `full`, or `pseudonym`: the agency received a pseudonym instead of the ID numbers.
    pub identity: String,
    /// `upsert` or `delete`.
    pub op: String,
    /// A replay's id, when the delivery was a replay (`govbus replay`).
    pub replay: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UseLog {
    /// Newest first.
    pub deliveries: Vec<UseEntry>,
    /// More deliveries than listed exist (the newest `limit` are listed).
    pub truncated: bool,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SubjectLogError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "too many queries from {asker}: at most {per_minute} a minute; retry in {retry_after} s"
    )]
    RateLimited {
        asker: String,
        per_minute: u32,
        retry_after: u64,
    },
    #[error("the platform database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// The log's keys (every pseudonym secret version's) and the portals' rate limit.
pub struct SubjectLog {
    keys: Vec<SubjectKey>,
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// The most deliveries one answer lists.
pub const LIMIT: i64 = 1_000;

impl SubjectLog {
    /// The keys of the current and previous pseudonym secrets of `cfg`.
    pub fn load(cfg: &RouterConfig) -> anyhow::Result<Self> {
        let mut keys = vec![SubjectKey::from_pseudonym_secret(
            &bus_schemas::keys::load_secret_as(
                &cfg.platform.pseudonym_secret_file,
                "platform.pseudonym_secret_file",
            )?,
        )];
        for p in &cfg.platform.previous_pseudonym_secrets {
            keys.push(SubjectKey::from_pseudonym_secret(
                &bus_schemas::keys::load_secret_as(&p.file, "platform.previous_pseudonym_secrets")?,
            ));
        }
        Ok(SubjectLog {
            keys,
            per_minute: cfg.workflow.subject_log_per_minute,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a query of `asker` against its minute; refuses it past the limit.
    pub fn admit(&self, asker: &str) -> Result<(), SubjectLogError> {
        let now = Instant::now();
        let mut w = self.windows.lock().expect("rate limit lock");
        w.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        let (start, n) = w.entry(asker.to_string()).or_insert((now, 0));
        if *n >= self.per_minute {
            let retry_after = 60u64
                .saturating_sub(now.duration_since(*start).as_secs())
                .max(1);
            return Err(SubjectLogError::RateLimited {
                asker: asker.to_string(),
                per_minute: self.per_minute,
                retry_after,
            });
        }
        *n += 1;
        Ok(())
    }

    /// Answers `req` for `asker` (the portal's token subject, or `operator:<name>`) and logs
    /// the query, in one transaction: no answer without its log entry.
    pub async fn query(
        &self,
        pool: &PgPool,
        catalogue: &Catalogue,
        asker: &str,
        req: &SubjectLogRequest,
    ) -> Result<UseLog, SubjectLogError> {
        let number = req.id_number.trim();
        if number.is_empty() || number.len() > 64 {
            return Err(SubjectLogError::Invalid(
                "id_number must be the person's ID document number (1–64 characters)".into(),
            ));
        }
        if req.session.trim().is_empty() || req.session.len() > 200 {
            return Err(SubjectLogError::Invalid(
                "session must name the portal's session for the citizen (or the written request), 1–200 characters".into(),
            ));
        }
        if req.id_type.len() > 16 {
            return Err(SubjectLogError::Invalid(
                "id_type must be an ID document type code such as 111".into(),
            ));
        }
        let hashes: Vec<Vec<u8>> = self
            .keys
            .iter()
            .map(|k| k.hash(&req.id_type, number).to_vec())
            .collect();
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "SELECT l.delivered_at_us, l.agency, l.item, l.fields, l.grant_id, l.grant_revision, l.op, l.replay
               FROM (SELECT DISTINCT item, key_hash, version FROM subject_index WHERE subject = ANY($1)) s
               JOIN ledger l ON l.key_hash = s.key_hash AND l.item = s.item AND l.version = s.version
              ORDER BY l.delivered_at_us DESC, l.agency
              LIMIT $2",
        )
        .bind(&hashes)
        .bind(LIMIT + 1)
        .fetch_all(&mut *tx)
        .await?;
        let truncated = rows.len() as i64 > LIMIT;
        let deliveries: Vec<UseEntry> = rows
            .iter()
            .take(LIMIT as usize)
            .map(|r| entry(catalogue, r))
            .collect();
        sqlx::query(
            "INSERT INTO subject_log_queries (asked_by, session, subject, deliveries) VALUES ($1, $2, $3, $4)",
        )
        .bind(asker)
        .bind(req.session.trim())
        .bind(&hashes[0])
        .bind(deliveries.len() as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UseLog {
            deliveries,
            truncated,
        })
    }
}

fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

/// One ledger row as the citizen reads it: names from the catalogue, the grant's basis.
fn entry(catalogue: &Catalogue, r: &sqlx::postgres::PgRow) -> UseEntry {
    let agency: String = r.get("agency");
    let item: String = r.get("item");
    let grant: String = r.get("grant_id");
    let at = DateTime::from_timestamp_micros(r.get::<i64, _>("delivered_at_us"))
        .map(|t| t.with_timezone(&shanghai()).to_rfc3339())
        .unwrap_or_default();
    let agency_name = catalogue
        .file
        .agencies
        .iter()
        .find(|a| a.id == agency)
        .map(|a| a.name.clone())
        .or_else(|| {
            catalogue
                .linked_platform(&agency)
                .map(|p| format!("platform {}", p.id))
        })
        .unwrap_or_else(|| "(no longer in the catalogue)".into());
    let item_name = catalogue
        .items
        .get(&item)
        .map(|(i, _)| i.name.clone())
        .unwrap_or_else(|| "(no longer in the catalogue)".into());
    let g = catalogue
        .grants_by_item
        .get(&item)
        .and_then(|gs| gs.iter().find(|g| g.id == grant));
    let fields: Vec<String> = r.get("fields");
    UseEntry {
        delivered_at: at,
        agency,
        agency_name,
        item,
        item_name,
        // A pseudonym delivery says so; its ID number fields carried a pseudonym.
        identity: match g.map(|g| g.identity) {
            Some(Identity::Pseudonym) => "pseudonym",
            Some(Identity::Full) => "full",
            None => "unknown (the grant is no longer in the catalogue)",
        }
        .into(),
        legal_basis: g
            .map(|g| g.legal_basis.clone())
            .unwrap_or_else(|| "(the grant is no longer in the catalogue)".into()),
        purpose: g.map(|g| g.purpose.clone()).unwrap_or_default(),
        fields,
        grant,
        grant_revision: r.get("grant_revision"),
        op: r.get("op"),
        replay: r.get("replay"),
    }
}
