//! Ledger checkpoints: the router signs each agency's chain head (sequence number and hash of
//! its last ledger row) with the platform key and delivers it to that agency, every
//! `router.checkpoint_every_secs` (default hourly) for each chain that grew, and on demand
//! (`govbus ledger checkpoint`). Agencies keep them (`govbus tail|sink --checkpoints DIR`);
//! `govbus ledger verify --checkpoints DIR` then proves the ledger still holds, at each
//! checkpointed sequence number, the row the agency was shown. Rewriting history (editing rows
//! and recomputing the chain, or cutting rows off its end) passes the chain check but not this
//! one: even a database administrator cannot change what was delivered unseen.
//!
//! A checkpoint travels like a delivery (any AMQP client reads it): message id
//! `checkpoint-<agency>-<seq>`, header `govbus-kind: checkpoint`, `govbus-item:
//! govbus.checkpoint`, `govbus-version: <seq>`, `govbus-op: upsert`, the platform's
//! `govbus-key-id` and `govbus-signature` over the usual signed bytes, and a JSON body
//! `{"agency","seq","hash","made_at"}`. Its file keeps the body text exactly as signed.
use std::path::Path;

use bus_schemas::{
    amqp::{
        publish::{confirmed, OutgoingMessage},
        Connector,
    },
    wire::{self, Op, Signer},
};
use ed25519_dalek::VerifyingKey;
use lapin::{
    options::ConfirmSelectOptions,
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The header that marks a checkpoint among an agency's deliveries.
pub const KIND_HEADER: &str = "govbus-kind";
/// Its value.
pub const KIND: &str = "checkpoint";
/// The `govbus-item` of a checkpoint (what the signature covers in place of an item).
pub const ITEM: &str = "govbus.checkpoint";
const FORMAT: &str = "govbus-checkpoint-1";

/// What a checkpoint attests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub agency: String,
    /// Sequence number of the agency's last ledger row.
    pub seq: i64,
    /// That row's hash, hex.
    pub hash: String,
    /// When the router signed it (RFC 3339).
    pub made_at: String,
}

/// A signed checkpoint as an agency keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub message_id: String,
    pub key_id: String,
    pub signature: String,
    /// The JSON of a [`Head`], exactly as signed.
    pub body: String,
}

impl Checkpoint {
    /// Signs a chain head.
    pub fn sign(signer: &Signer, head: &Head) -> Self {
        let body = serde_json::to_string(head).expect("a head serialises");
        let message_id = format!("checkpoint-{}-{}", head.agency, head.seq);
        Checkpoint {
            format: FORMAT.into(),
            signature: signer.sign(&message_id, ITEM, head.seq, Op::Upsert, body.as_bytes()),
            key_id: signer.key_id.clone(),
            message_id,
            body,
        }
    }

    /// The head it attests, if the platform's signature verifies with `key`.
    pub fn verified(&self, key: &VerifyingKey) -> Result<Head, String> {
        let head: Head = serde_json::from_str(&self.body)
            .map_err(|e| format!("its body is not a checkpoint: {e}"))?;
        if self.message_id != format!("checkpoint-{}-{}", head.agency, head.seq) {
            return Err("its message id does not match its body".into());
        }
        if !wire::verify(
            key,
            &self.signature,
            &self.message_id,
            ITEM,
            head.seq,
            Op::Upsert,
            self.body.as_bytes(),
        ) {
            return Err(format!(
                "the platform signature (key {}) does not verify: not made by this platform, or altered",
                self.key_id
            ));
        }
        Ok(head)
    }

    /// Reads a checkpoint from a delivery's message id, headers and body.
    pub fn from_delivery(
        message_id: &str,
        headers: &FieldTable,
        body: &[u8],
    ) -> Result<Self, String> {
        let get = |n: &str| {
            crate::route::header_str(headers, n)
                .map(str::to_string)
                .ok_or_else(|| format!("a checkpoint without the {n} header"))
        };
        Ok(Checkpoint {
            format: FORMAT.into(),
            message_id: message_id.to_string(),
            key_id: get(wire::header::KEY_ID)?,
            signature: get(wire::header::SIGNATURE)?,
            body: String::from_utf8(body.to_vec())
                .map_err(|_| "a checkpoint body that is not UTF-8".to_string())?,
        })
    }

    /// The message that delivers it to its agency.
    pub fn message(&self, head: &Head) -> OutgoingMessage {
        let mut h = FieldTable::default();
        let mut put = |k: &str, v: &str| {
            h.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        };
        put(KIND_HEADER, KIND);
        put(wire::header::ITEM, ITEM);
        put(wire::header::OP, Op::Upsert.as_str());
        put(wire::header::KEY_ID, &self.key_id);
        put(wire::header::SIGNATURE, &self.signature);
        h.insert(
            wire::header::VERSION.into(),
            AMQPValue::LongLongInt(head.seq),
        );
        OutgoingMessage {
            exchange: wire::DELIVER_EXCHANGE.into(),
            routing_key: head.agency.clone(),
            body: self.body.clone().into_bytes(),
            properties: BasicProperties::default()
                .with_message_id(self.message_id.as_str().into())
                .with_content_type(wire::JSON_CONTENT_TYPE.into())
                .with_delivery_mode(2)
                .with_headers(h),
        }
    }

    /// Its file name in a checkpoints folder.
    pub fn file_name(head: &Head) -> String {
        format!("{}-{:012}.json", head.agency, head.seq)
    }

    /// Saves it into `dir` (created if missing), atomically.
    pub fn save(&self, dir: &Path, head: &Head) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::file_name(head));
        let tmp = dir.join(format!(".{}.tmp", Self::file_name(head)));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

/// Chain heads not checkpointed yet.
async fn new_heads(pool: &PgPool) -> sqlx::Result<Vec<Head>> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT h.agency, h.seq, h.hash FROM ledger_heads h
          WHERE h.seq > 0 AND NOT EXISTS (
                SELECT 1 FROM ledger_checkpoints c WHERE c.agency = h.agency AND c.seq = h.seq)
          ORDER BY h.agency",
    )
    .fetch_all(pool)
    .await?;
    let made_at = chrono::Utc::now().to_rfc3339();
    Ok(rows
        .into_iter()
        .map(|(agency, seq, hash)| Head {
            agency,
            seq,
            hash: hex::encode(hash),
            made_at: made_at.clone(),
        })
        .collect())
}

/// Signs and delivers a checkpoint of every chain that grew since its last one; returns how
/// many were delivered. Each is recorded once the broker confirms it.
pub async fn deliver_new(
    pool: &PgPool,
    signer: &Signer,
    connector: &Connector,
) -> anyhow::Result<usize> {
    let heads = new_heads(pool).await?;
    if heads.is_empty() {
        return Ok(0);
    }
    let conn = connector.connect_once().await?;
    let result = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut sent = 0;
        for head in &heads {
            let cp = Checkpoint::sign(signer, head);
            let msg = cp.message(head);
            let confirm = msg.publish(&ch).await?;
            if let Err(e) = confirmed(confirm, &msg).await {
                // A missing queue (agency removed) or a full one: try again next time.
                tracing::warn!(agency = %head.agency, error = %e, "a ledger checkpoint was not delivered; retried next time");
                continue;
            }
            sqlx::query(
                "INSERT INTO ledger_checkpoints (agency, seq, hash, made_at, key_id, signature)
                 VALUES ($1, $2, $3, $4::timestamptz, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&head.agency)
            .bind(head.seq)
            .bind(&head.hash)
            .bind(&head.made_at)
            .bind(&cp.key_id)
            .bind(&cp.signature)
            .execute(pool)
            .await?;
            sent += 1;
        }
        let _ = ch.close(200, "checkpoints sent".into()).await;
        anyhow::Ok(sent)
    }
    .await;
    let _ = conn.close(200, "checkpoints sent".into()).await;
    if let Ok(n) = &result {
        metrics::counter!("govbus_router_checkpoints_total").increment(*n as u64);
    }
    result
}

/// Delivers checkpoints every `every` until `stop` (the first one after one period).
pub async fn every(
    shared: std::sync::Arc<crate::pipeline::Shared>,
    connector: Connector,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        match deliver_new(&shared.pool, &shared.platform.signer, &connector).await {
            Ok(n) if n > 0 => tracing::info!(checkpoints = n, "ledger checkpoints delivered"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot deliver ledger checkpoints; retrying next period")
            }
        }
    }
}

/// What checking a folder of checkpoints against the ledger found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Checkpoints that match the ledger.
    pub matched: usize,
    /// One line per checkpoint that does not (naming its file and what is wrong).
    pub problems: Vec<String>,
}

/// Checks every `*.json` checkpoint under `dir` (and its subfolders): the platform signature
/// with one of `keys` (the platform's keys over time), then that the ledger row at its
/// sequence number still has its hash.
pub async fn check_dir(
    pool: &PgPool,
    dir: &Path,
    keys: &[VerifyingKey],
) -> anyhow::Result<Checked> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| {
            anyhow::anyhow!("cannot read the checkpoints folder {}: {e}", d.display())
        })?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Checked::default();
    for f in files {
        let name = f.display();
        let cp: Checkpoint = match std::fs::read(&f)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                out.problems
                    .push(format!("{name}: not a checkpoint file: {e}"));
                continue;
            }
        };
        let mut verdict = Err("no platform key given".to_string());
        for key in keys {
            verdict = cp.verified(key);
            if verdict.is_ok() {
                break;
            }
        }
        let head = match verdict {
            Ok(h) => h,
            Err(e) => {
                out.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM ledger WHERE agency = $1 AND seq = $2")
                .bind(&head.agency)
                .bind(head.seq)
                .fetch_optional(pool)
                .await?;
        match row {
            Some(h) if hex::encode(&h) == head.hash => out.matched += 1,
            Some(h) => out.problems.push(format!(
                "{name}: agency {} row seq {} has hash {} but the agency was given {} at {}: the ledger was rewritten",
                head.agency,
                head.seq,
                hex::encode(h),
                head.hash,
                head.made_at
            )),
            None => out.problems.push(format!(
                "{name}: agency {} has no row seq {} (checkpointed at {}): rows were removed from the ledger",
                head.agency, head.seq, head.made_at
            )),
        }
    }
    Ok(out)
}
