//! Versions of the platform id secret (`platform.id_secret_version`).
//!
//! The id secret keys every delivery message id and every record key hash the router keeps
//! (ledger, record versions, latest records, disputes, kept deliveries). Replacing it silently
//! would break two things: agencies would get the same delivery under a new id (their
//! de-duplication misses it), and the router would no longer recognise a record it delivered
//! before (an older version could be delivered again). So the database records which version
//! its hashes are under, the router refuses to start with any other secret, and
//! `govbus id-secret rotate` moves the database to the new version:
//! - every record's hash in the mutable tables is recomputed under the new secret from the
//!   latest record kept (its key is in the body); the ledger keeps its hash-chained rows as
//!   they were and `key_hash_aliases` maps their hashes to the current ones;
//! - every delivery in the ledger gets its id under the new secret in `delivery_id_aliases`
//!   (so a dispute may quote either id), and each agency gets a CSV `old_message_id,
//!   new_message_id` for the ids it holds, so its records keep their ids instead of silently
//!   changing.
//!
//! The router holds a shared advisory lock while it runs; a rotation takes it exclusively, so
//! it cannot run beside a router.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use bus_schemas::{amqp::OutgoingMessage, wire::IdKey};
use futures::TryStreamExt;
use sqlx::{postgres::PgConnection, Connection, PgPool, Row};

use crate::{
    config::RouterConfig,
    store::id_secret::{recorded, LOCK},
};

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotated {
    /// The version the database was under before.
    pub from: u32,
    /// The version in force now.
    pub to: u32,
    /// Nothing to do: the database was already under `to`.
    pub already: bool,
    /// Records whose hash was recomputed.
    pub records: u64,
    /// Records kept whose body the catalogue in force cannot read (hash not recomputed).
    pub unreadable: BTreeMap<String, u64>,
    /// Deliveries given an id under the new version.
    pub deliveries: u64,
    /// Deliveries kept for retry, given their new id and signed again.
    pub kept: u64,
    /// Agencies' id maps written, with their number of ids.
    pub maps: Vec<(PathBuf, u64)>,
}

fn secret_of(cfg: &RouterConfig, version: u32) -> anyhow::Result<IdKey> {
    let p = cfg
        .platform
        .previous_id_secrets
        .iter()
        .find(|p| p.version == version)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "id secret version {version} is not listed under [[platform.previous_id_secrets]]; \
                 add it (version = {version}, file = its file) to rotate from it"
            )
        })?;
    Ok(IdKey::new(&bus_schemas::keys::load_secret_as(
        &p.file,
        "platform.previous_id_secrets",
    )?))
}

/// Moves the database to the configured id secret version and, with `maps`, writes each
/// agency's `old_message_id,new_message_id` CSV there (0600).
pub async fn rotate(cfg: &RouterConfig, maps: Option<&Path>) -> anyhow::Result<Rotated> {
    let new = IdKey::new(&bus_schemas::keys::load_secret_as(
        &cfg.platform.id_secret_file,
        "platform.id_secret_file",
    )?);
    let to = cfg.platform.id_secret_version;
    let pool = crate::store::connect(&cfg.database.url, 2).await?;
    let mut lock = PgConnection::connect(&cfg.database.url).await?;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut lock)
        .await?;
    anyhow::ensure!(
        free,
        "a router (or a rotation) is running on this database: stop every router first"
    );
    let mut out = Rotated {
        to,
        ..Rotated::default()
    };
    let mut conn = pool.acquire().await?;
    let recorded = recorded(&mut conn).await?;
    drop(conn);
    // The secret the database was under, when it is not `to` already.
    let (from, old) = match recorded {
        None => anyhow::bail!(
            "this database records no id secret version yet (no router has run on it): \
             nothing to rotate; start the router with the new secret"
        ),
        Some((v, c)) if v == to as i32 => {
            anyhow::ensure!(
                c == new.check_value(),
                "this database is already under id secret version {v}, but with another secret \
                 than platform.id_secret_file"
            );
            (v as u32, None)
        }
        Some((v, _)) if v > to as i32 => anyhow::bail!(
            "this database is under id secret version {v}, newer than platform.id_secret_version = {to}"
        ),
        Some((v, c)) => {
            let old = secret_of(cfg, v as u32)?;
            anyhow::ensure!(
                c == old.check_value(),
                "the file listed for id secret version {v} under [[platform.previous_id_secrets]] \
                 is not the secret this database was written with"
            );
            (v as u32, Some(old))
        }
    };
    out.from = from;
    out.already = old.is_none();
    if let Some(old) = &old {
        rehash(cfg, &pool, old, &new, &mut out).await?;
    }
    if let Some(dir) = maps {
        // The ids agencies hold were given under the version before `to`.
        let held = match old {
            Some(old) => old,
            None => match cfg
                .platform
                .previous_id_secrets
                .iter()
                .map(|p| p.version)
                .filter(|v| *v < to)
                .max()
            {
                Some(v) => secret_of(cfg, v)?,
                None => anyhow::bail!(
                    "no earlier id secret is listed under [[platform.previous_id_secrets]]: no map to write"
                ),
            },
        };
        out.maps = write_maps(&pool, &held, &new, dir).await?;
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK)
        .execute(&mut lock)
        .await?;
    pool.close().await;
    Ok(out)
}

/// Recomputes every record hash and delivery id under `new`, in one transaction.
async fn rehash(
    cfg: &RouterConfig,
    pool: &PgPool,
    old: &IdKey,
    new: &IdKey,
    out: &mut Rotated,
) -> anyhow::Result<()> {
    let cache = crate::routing::grants::ProjectionCache::default();
    let routing = crate::pipeline::reload::load_in_force(&cfg.catalogue, &cache, pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE rehash (item text, old text, new text, PRIMARY KEY (item, old)) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    // Record keys from the latest version kept of each record.
    let mut batch: Vec<(String, String, String)> = Vec::new();
    {
        let mut read = pool.acquire().await?;
        let mut rows = sqlx::query("SELECT item, key_hash, body FROM latest_records ORDER BY item")
            .fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            let item: String = row.get(0);
            let stored: String = row.get(1);
            let body: Vec<u8> = row.get(2);
            let Some(key) = routing.items.get(&item).and_then(|it| {
                let rt = &it.record_type;
                let (fp, datum) = bus_schemas::split_header(&body).ok()?;
                if fp != rt.fingerprint {
                    return None;
                }
                let value = rt.decode_datum(datum).ok()?;
                let values: Vec<&str> = rt
                    .key
                    .iter()
                    .map(|k| crate::routing::grants::string_at(&value, k).unwrap_or_default())
                    .collect();
                Some(bus_schemas::wire::record_key_string(&values))
            }) else {
                *out.unreadable.entry(item).or_default() += 1;
                continue;
            };
            let was = old.record_key_hash(&item, &key);
            anyhow::ensure!(
                was == stored,
                "a record of item `{item}` is kept under a hash the id secret version {} does not give: \
                 the database was not written with that secret; nothing was changed",
                out.from
            );
            let now = new.record_key_hash(&item, &key);
            batch.push((item, was, now));
            out.records += 1;
            if batch.len() >= 5000 {
                insert_rehash(&mut tx, &mut batch).await?;
            }
        }
    }
    insert_rehash(&mut tx, &mut batch).await?;
    for statement in [
        // Older aliases follow the record to its new hash; then the hashes being replaced.
        "UPDATE key_hash_aliases a SET current = t.new FROM rehash t WHERE a.item = t.item AND a.current = t.old",
        "INSERT INTO key_hash_aliases (item, hash, current) SELECT item, old, new FROM rehash ON CONFLICT (item, hash) DO UPDATE SET current = EXCLUDED.current",
        "UPDATE latest_records l SET key_hash = t.new FROM rehash t WHERE l.item = t.item AND l.key_hash = t.old",
        "UPDATE record_versions r SET key_hash = t.new FROM rehash t WHERE r.item = t.item AND r.key_hash = t.old",
        "UPDATE disputes d SET key_hash = t.new FROM rehash t WHERE d.item = t.item AND d.key_hash = t.old",
        "UPDATE pending_deliveries p SET entry = jsonb_set(p.entry, '{key_hash}', to_jsonb(t.new))
         FROM rehash t WHERE t.item = p.entry->>'item' AND t.old = p.entry->>'key_hash'",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    // Every delivery's id under the new version, for disputes quoting it.
    let version = out.to as i32;
    let mut ids: Vec<(String, String, String)> = Vec::new();
    {
        let mut read = pool.acquire().await?;
        let mut rows = sqlx::query(
            "SELECT agency, grant_id, grant_revision, ingest_id, message_id FROM ledger ORDER BY agency, chain, seq",
        )
        .fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            let agency: String = row.get(0);
            let id = new.delivery_message_id(&agency, row.get(1), row.get(2), row.get(3));
            ids.push((agency, id, row.get(4)));
            out.deliveries += 1;
            if ids.len() >= 5000 {
                insert_ids(&mut tx, &mut ids, version).await?;
            }
        }
    }
    insert_ids(&mut tx, &mut ids, version).await?;
    // Deliveries kept for retry get their id under the new version, signed again.
    let signer = bus_schemas::keys::load_signer_as(
        &cfg.platform.key_file,
        &cfg.platform.key_id,
        "platform.key_file",
    )?;
    let kept = sqlx::query("SELECT id, entry, headers, body FROM pending_deliveries ORDER BY id")
        .fetch_all(&mut *tx)
        .await?;
    // Each agency's kept deliveries are sealed again as batches under their new ids.
    let mut by_agency: BTreeMap<String, Vec<(i64, crate::store::ledger::Entry, OutgoingMessage)>> =
        Default::default();
    for r in kept {
        let id: i64 = r.get(0);
        let mut entry: crate::store::ledger::Entry = serde_json::from_value(r.get(1))?;
        let headers: serde_json::Value = r.get(2);
        entry.message_id = new.delivery_message_id(
            &entry.agency,
            &entry.grant_id,
            entry.grant_revision,
            &entry.ingest_id,
        );
        let message = OutgoingMessage {
            exchange: String::new(),
            routing_key: entry.agency.clone(),
            body: r.get(3),
            properties: lapin::BasicProperties::default()
                .with_message_id(entry.message_id.as_str().into())
                .with_headers(crate::store::headers_from_json(&headers)),
        };
        by_agency
            .entry(entry.agency.clone())
            .or_default()
            .push((id, entry, message));
    }
    for (agency, mut rows) in by_agency {
        bus_schemas::amqp::seal::seal(&signer, &agency, rows.iter_mut().map(|(_, _, m)| m))
            .map_err(|e| anyhow::anyhow!("cannot seal the kept deliveries to {agency}: {e}"))?;
        for (id, entry, message) in rows {
            sqlx::query(
                "UPDATE pending_deliveries SET message_id = $2, entry = $3, headers = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(&entry.message_id)
            .bind(serde_json::to_value(&entry)?)
            .bind(crate::store::headers_json(message.properties.headers().as_ref()))
            .execute(&mut *tx)
            .await?;
            out.kept += 1;
        }
    }
    sqlx::query("INSERT INTO id_secret_versions (version, check_value) VALUES ($1, $2)")
        .bind(version)
        .bind(new.check_value())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_rehash(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &mut Vec<(String, String, String)>,
) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let (items, (olds, news)): (Vec<String>, (Vec<String>, Vec<String>)) =
        batch.drain(..).map(|(i, o, n)| (i, (o, n))).unzip();
    sqlx::query("INSERT INTO rehash SELECT * FROM unnest($1::text[], $2::text[], $3::text[])")
        .bind(items)
        .bind(olds)
        .bind(news)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &mut Vec<(String, String, String)>,
    version: i32,
) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let (agencies, (ids, ledger_ids)): (Vec<String>, (Vec<String>, Vec<String>)) =
        batch.drain(..).map(|(a, i, l)| (a, (i, l))).unzip();
    sqlx::query(
        "INSERT INTO delivery_id_aliases (agency, message_id, version, ledger_id)
         SELECT a, m, $4, l FROM unnest($1::text[], $2::text[], $3::text[]) AS x(a, m, l)
         ON CONFLICT (agency, message_id) DO NOTHING",
    )
    .bind(agencies)
    .bind(ids)
    .bind(ledger_ids)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes `DIR/<agency>.csv` (`old_message_id,new_message_id`, 0600) for every agency in the
/// ledger: each delivery's id under `held` (what the agency holds) and under `new`.
async fn write_maps(
    pool: &PgPool,
    held: &IdKey,
    new: &IdKey,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut written: Vec<(PathBuf, u64)> = Vec::new();
    let mut current: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    let mut rows = sqlx::query(
        "SELECT agency, grant_id, grant_revision, ingest_id FROM ledger ORDER BY agency, chain, seq",
    )
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let agency: String = row.get(0);
        if current.as_ref().is_none_or(|(a, _)| *a != agency) {
            if let Some((_, mut f)) = current.take() {
                f.flush()?;
            }
            let path = dir.join(format!("{agency}.csv"));
            // Written again on a second run (same content: the ids are deterministic).
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    anyhow::bail!("cannot replace {}: {e}", path.display())
                }
                _ => {}
            }
            let f = bus_schemas::keys::create_private(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            let mut f = std::io::BufWriter::new(f);
            writeln!(f, "old_message_id,new_message_id")?;
            written.push((path, 0));
            current = Some((agency.clone(), f));
        }
        let (grant, revision, ingest): (&str, i64, &str) = (row.get(1), row.get(2), row.get(3));
        let (_, f) = current.as_mut().expect("opened above");
        writeln!(
            f,
            "{},{}",
            held.delivery_message_id(&agency, grant, revision, ingest),
            new.delivery_message_id(&agency, grant, revision, ingest)
        )?;
        written.last_mut().expect("pushed above").1 += 1;
    }
    if let Some((_, mut f)) = current.take() {
        f.flush()?;
    }
    Ok(written)
}
