//! `govbus replay`: sends an agency the latest version of each record of an item again — for an
//! agency newly granted the item, or one whose consumer lost data. Each record is routed again
//! as it stands now: the department's signature is verified again and only a grant in force
//! today delivers it, projected and pseudonymised as that grant says. Each replayed delivery
//! gets a message id of its own (so it is not mistaken for the original) and a `govbus-replay`
//! header, and its ledger row names the replay.
use std::{sync::Arc, time::Duration};

use bus_schemas::{
    amqp::{
        publish::{classify, publish_all},
        Connector,
    },
    validate::today_in_shanghai,
};
use futures::TryStreamExt;
use lapin::{
    options::ConfirmSelectOptions,
    types::{AMQPValue, LongString},
    BasicProperties,
};
use sqlx::Row;

use std::path::Path;

use sqlx::PgPool;

use crate::{
    config::RouterConfig,
    pipeline::shared::Shared,
    routing::grants::ProjectionCache,
    routing::route::{Outcome, Reason},
    routing::{grants::Routing, platform::Platform},
    store::ledger::{self, Entry},
};

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The replay's id (in each delivery's `govbus-replay` header and its ledger row).
    pub id: String,
    /// Latest records read.
    pub records: u64,
    /// Deliveries confirmed and written to the ledger.
    pub delivered: u64,
    /// Records no grant of the agency covers today (ended, not yet in force, another region).
    pub not_granted: u64,
    /// Records refused on the way (their reason logged).
    pub refused: u64,
}

const BATCH: usize = 500;

/// What a replay uses of the router: its keys, database, catalogue in force and broker. The
/// router passes its own (a replay after an approval); `govbus replay` loads them.
pub struct Context<'a> {
    pub platform: &'a Platform,
    pub pool: &'a PgPool,
    pub routing: Arc<Routing>,
    pub connector: &'a Connector,
    /// The catalogue file, named in errors.
    pub catalogue: &'a Path,
}

impl<'a> Context<'a> {
    /// The running router's own state (nothing loaded or opened again).
    pub fn of_router(shared: &'a Shared, connector: &'a Connector, catalogue: &'a Path) -> Self {
        Context {
            platform: &shared.platform,
            pool: &shared.pool,
            routing: shared.routing(),
            connector,
            catalogue,
        }
    }
}

/// The keys, database and catalogue of the router configured in `cfg`, for a replay from the
/// command line (the database must be under the configured id secret).
pub async fn load(cfg: &RouterConfig) -> anyhow::Result<(Platform, PgPool, Arc<Routing>)> {
    let platform = Platform::load(cfg)?;
    let pool = crate::store::connect(&cfg.database.url, 2).await?;
    crate::store::id_secret::check_in_force(&pool, cfg.platform.id_secret_version, &platform.ids)
        .await?;
    let cache = ProjectionCache::default();
    let routing = crate::pipeline::reload::load_in_force(&cfg.catalogue, &cache, &pool).await?;
    Ok((platform, pool, Arc::new(routing)))
}

/// Replays `item` to `agency`: records received on or after `since` (all when `None`).
pub async fn replay(
    cx: &Context<'_>,
    agency: &str,
    item: &str,
    since: Option<chrono::NaiveDate>,
) -> anyhow::Result<Replayed> {
    replay_records(cx, agency, item, since, None).await
}

/// [`replay`], limited to the record whose keyed key hash is `key_hash` when given (a
/// disputed record the platform sends again).
/// Replays run one at a time across the platform's routers and `govbus replay`: two replays
/// of one record to one agency would both find it missing from the ledger.
pub async fn replay_records(
    cx: &Context<'_>,
    agency: &str,
    item: &str,
    since: Option<chrono::NaiveDate>,
    key_hash: Option<&str>,
) -> anyhow::Result<Replayed> {
    crate::store::jobs::exclusive(
        cx.pool,
        crate::store::jobs::Job::Replay,
        replay_alone(cx, agency, item, since, key_hash),
    )
    .await?
}

async fn replay_alone(
    cx: &Context<'_>,
    agency: &str,
    item: &str,
    since: Option<chrono::NaiveDate>,
    key_hash: Option<&str>,
) -> anyhow::Result<Replayed> {
    let (platform, pool, routing) = (cx.platform, cx.pool, &cx.routing);
    let cat = &routing.catalogue;
    anyhow::ensure!(
        cat.recipient_ids().any(|a| a == agency),
        "agency {agency} is not in the catalogue {} (as an agency or a linked platform)",
        cx.catalogue.display()
    );
    anyhow::ensure!(
        cat.items.contains_key(item),
        "item {item} is not in the catalogue {}",
        cx.catalogue.display()
    );
    let today = today_in_shanghai();
    let granted = cat
        .grants_by_item
        .get(item)
        .into_iter()
        .flatten()
        .any(|g| g.agency == agency && g.in_force(today));
    anyhow::ensure!(
        granted,
        "agency {agency} holds no grant of item {item} in force today ({today}): nothing can be replayed"
    );
    let mut rnd = [0u8; 4];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let mut out = Replayed {
        id: format!(
            "replay-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            hex::encode(rnd)
        ),
        ..Default::default()
    };
    let conn = cx.connector.connect_once().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut rows = sqlx::query(
        "SELECT routing_key, ingest_id, headers, body, received_at FROM latest_records
         WHERE item = $1
           AND ($2::text IS NULL OR received_at >= $2::date::timestamp AT TIME ZONE 'Asia/Shanghai')
           AND ($3::text IS NULL OR key_hash = $3)
         ORDER BY received_at, key_hash",
    )
    .bind(item)
    .bind(since.map(|d| d.to_string()))
    .bind(key_hash)
    .fetch(pool);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        if let Some(r) = row {
            out.records += 1;
            let routing_key: String = r.get(0);
            let ingest_id: String = r.get(1);
            let headers: serde_json::Value = r.get(2);
            let body: Vec<u8> = r.get(3);
            // The department's key must have been in force when the record arrived.
            let received: chrono::DateTime<chrono::Utc> = r.get(4);
            let props = BasicProperties::default()
                .with_message_id(ingest_id.as_str().into())
                .with_headers(crate::store::headers_from_json(&headers));
            match platform.route(routing, received, today, &routing_key, &props, &body) {
                Outcome::Deliver { deliveries, .. } => {
                    let mut any = false;
                    for mut p in deliveries.into_iter().filter(|p| p.entry.agency == agency) {
                        any = true;
                        let id = platform.ids.delivery_message_id(
                            agency,
                            &p.entry.grant_id,
                            p.entry.grant_revision,
                            &format!("{}|{}", out.id, p.entry.ingest_id),
                        );
                        let mut h = p.message.properties.headers().clone().unwrap_or_default();
                        h.insert(
                            "govbus-replay".into(),
                            AMQPValue::LongString(LongString::from(out.id.as_str())),
                        );
                        p.message.properties = p
                            .message
                            .properties
                            .clone()
                            .with_message_id(id.as_str().into())
                            .with_headers(h);
                        p.entry.message_id = id;
                        p.entry.replay = Some(out.id.clone());
                        batch.push(p);
                    }
                    if !any {
                        out.not_granted += 1;
                    }
                }
                Outcome::Refused { reason, detail } => {
                    if reason == Reason::NoGrant {
                        out.not_granted += 1;
                    } else {
                        out.refused += 1;
                        tracing::warn!(reason = reason.as_str(), %detail, "a stored record was refused on replay");
                    }
                }
                Outcome::Failed(why) => {
                    out.refused += 1;
                    tracing::warn!(%why, "a stored record could not be routed on replay");
                }
            }
        }
        if batch.len() >= BATCH || (end && !batch.is_empty()) {
            // The replay's deliveries are sealed under their replay ids, a batch at a time.
            crate::routing::route::seal_deliveries(&platform.signer, batch.iter_mut())?;
            let confirms = publish_all(&ch, batch.iter().map(|p| &p.message))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
            for (p, c) in batch.drain(..).zip(confirms) {
                let r = tokio::time::timeout(Duration::from_secs(60), c)
                    .await
                    .map_err(|_| anyhow::anyhow!("no confirm from RabbitMQ in 60 s"))?;
                classify(r, &p.message).map_err(|e| {
                    anyhow::anyhow!(
                        "a replayed delivery to {agency} was not confirmed ({e}); nothing after it \
                         was sent; run the replay again (the agency's sink keeps the newest version)"
                    )
                })?;
                entries.push(p.entry);
            }
            let mut tx = pool.begin().await?;
            out.delivered +=
                ledger::append(&mut tx, &entries.iter().collect::<Vec<_>>()).await? as u64;
            tx.commit().await?;
        }
        if end {
            break;
        }
    }
    let _ = ch.close(200, "replayed".into()).await;
    let _ = conn.close(200, "replayed".into()).await;
    Ok(out)
}
