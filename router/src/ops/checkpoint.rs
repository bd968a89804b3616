//! Ledger checkpoints, the platform's side (the format is `bus_schemas::checkpoint`): every
//! `router.checkpoint_every_secs` (default hourly) for each chain that grew, and on demand
//! (`govbus ledger checkpoint`), each agency's chain head is signed and delivered to it.
//! Rewriting history (editing rows and recomputing the chain, or cutting rows off its end)
//! passes the chain check but not the check against the checkpoints agencies kept: even a
//! database administrator cannot change what was delivered unseen.
use std::path::Path;

use bus_schemas::{
    amqp::{publish::confirmed, Connector},
    checkpoint::{Checkpoint, Head},
    wire::Signer,
};
use ed25519_dalek::VerifyingKey;
use lapin::options::ConfirmSelectOptions;
use sqlx::PgPool;

/// Chain heads not checkpointed yet.
async fn new_heads(pool: &PgPool) -> sqlx::Result<Vec<Head>> {
    let rows: Vec<(String, i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT h.agency, h.chain, h.seq, h.hash FROM ledger_heads h
          WHERE h.seq > 0 AND NOT EXISTS (
                SELECT 1 FROM ledger_checkpoints c
                 WHERE c.agency = h.agency AND c.chain = h.chain AND c.seq = h.seq)
          ORDER BY h.agency, h.chain",
    )
    .fetch_all(pool)
    .await?;
    let made_at = chrono::Utc::now().to_rfc3339();
    Ok(rows
        .into_iter()
        .map(|(agency, partition, seq, hash)| Head {
            agency,
            partition,
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
                "INSERT INTO ledger_checkpoints (agency, seq, hash, made_at, key_id, signature, chain)
                 VALUES ($1, $2, $3, $4::timestamptz, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&head.agency)
            .bind(head.seq)
            .bind(&head.hash)
            .bind(&head.made_at)
            .bind(&cp.key_id)
            .bind(&cp.signature)
            .bind(head.partition)
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
    shared: std::sync::Arc<crate::pipeline::shared::Shared>,
    connector: Connector,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        // One router checkpoints at a time: two would sign the same heads twice.
        let round = crate::store::jobs::once(
            &shared.pool,
            crate::store::jobs::Job::Checkpoints,
            deliver_new(&shared.pool, &shared.platform.signer, &connector),
        )
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r.unwrap_or(Ok(0)));
        match round {
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
        let row: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT hash FROM ledger WHERE agency = $1 AND chain = $3 AND seq = $2",
        )
        .bind(&head.agency)
        .bind(head.seq)
        .bind(head.partition)
        .fetch_optional(pool)
        .await?;
        match row {
            Some(h) if hex::encode(&h) == head.hash => out.matched += 1,
            Some(h) => out.problems.push(format!(
                "{name}: agency {} partition {} row seq {} has hash {} but the agency was given {} at {}: the ledger was rewritten",
                head.agency,
                head.partition,
                head.seq,
                hex::encode(h),
                head.hash,
                head.made_at
            )),
            None => out.problems.push(format!(
                "{name}: agency {} partition {} has no row seq {} (checkpointed at {}): rows were removed from the ledger",
                head.agency, head.partition, head.seq, head.made_at
            )),
        }
    }
    Ok(out)
}
