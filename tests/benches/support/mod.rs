//! What the router benchmarks share: the four-grant world, signed household records as the
//! adapter builds them, pipelined publishing, and counting ledger rows.
#![allow(dead_code)] // shared by several bench binaries; each uses part of it
use std::collections::VecDeque;

use bus_schemas::{
    amqp::{publish::classify, seal, OutgoingMessage},
    batch,
    wire::{self, header, IdKey, Signer},
    Registry,
};
use lapin::{
    options::QueuePurgeOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel,
};

use crate::common::{citizen, World};

pub const RECORDS: u64 = 20_000;
pub const WINDOW: usize = 1000;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Adds grants so every household record goes to four agencies.
pub fn four_grants(w: &World) {
    fanout_grants(w, 4);
}

/// The agencies every household record goes to at fanout `f` (1, 4 or 16): civil alone;
/// civil, health (pseudonym), hrss and tianhe; those and twelve more (`bench01`…`bench12`).
pub fn fanout_agencies(f: usize) -> Vec<String> {
    let mut out = vec!["civil".to_string()];
    if f >= 4 {
        out.extend(["health", "hrss", "tianhe"].map(String::from));
    }
    if f >= 16 {
        out.extend((1..=12).map(|i| format!("bench{i:02}")));
    }
    assert_eq!(out.len(), f, "fanout 1, 4 or 16");
    out
}

/// Edits the world's catalogue so every household record has `f` grants (1, 4 or 16).
pub fn fanout_grants(w: &World, f: usize) {
    let mut cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    let grant = |agency: &str| {
        format!(
            "\n[[grant]]\nid = \"{agency}-household\"\nrevision = 1\nagency = \"{agency}\"\nitem = \"household\"\nfields = [\"citizen_id_number\", \"name\", \"sex\", \"status\"]\nidentity = \"full\"\nlegal_basis = \"bench\"\npurpose = \"bench\"\nvalid_from = 2026-01-01\n"
        )
    };
    if f == 1 {
        // Health's household grant goes: civil's is the only one.
        let start = cat
            .find("[[grant]]\nid = \"health-household\"")
            .expect("the example catalogue grants health household");
        let end = start + cat[start..].find("\n\n").unwrap() + 2;
        cat.replace_range(start..end, "");
    } else {
        for agency in ["hrss", "tianhe"] {
            cat.push_str(&grant(agency));
        }
    }
    for agency in fanout_agencies(f).iter().skip(4) {
        cat.push_str(&format!(
            "\n[[agency]]\nid = \"{agency}\"\nname = \"bench {agency}\"\nleader = {{ name = \"bench\" }}\nsharing_officer = {{ name = \"bench\" }}\ntechnical_officer = {{ name = \"bench\" }}\n"
        ));
        cat.push_str(&grant(agency));
    }
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
}

/// A household record message as the adapter builds it, sealed alone (a batch of one: what
/// an adapter sends when rows trickle in). [`records`] seals many as the adapter batches them.
pub fn record(signer: &Signer, ids: &IdKey, n: u64, source_time_ms: i64) -> OutgoingMessage {
    record_of(signer, ids, "household", n, source_time_ms)
}

/// [`record`] published as `item` (the large catalogue's items all carry household records).
pub fn record_of(
    signer: &Signer,
    ids: &IdKey,
    item: &str,
    n: u64,
    source_time_ms: i64,
) -> OutgoingMessage {
    let rt = Registry::standard()
        .get("gov.gz.police.HouseholdRegistration")
        .unwrap();
    let key = citizen(n);
    let body = rt
        .encode_json(&serde_json::json!({"citizen_id_number": key, "name": format!("居民{n}"), "sex": "1", "ethnicity": "01", "status": "正常", "registered_town": "石牌街道"}))
        .unwrap();
    let id = ids.ingest_message_id(item, &key, 1);
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    let mut h = FieldTable::default();
    h.insert(header::DEPARTMENT.into(), s("police"));
    h.insert(header::ITEM.into(), s(item));
    h.insert(header::VERSION.into(), AMQPValue::LongLongInt(1));
    h.insert(header::OP.into(), s("upsert"));
    h.insert(
        header::SOURCE_TIME_MS.into(),
        AMQPValue::LongLongInt(source_time_ms),
    );
    let mut m = OutgoingMessage {
        exchange: wire::INGEST_EXCHANGE.into(),
        routing_key: wire::routing_key("police", item, ids.shard(item, &key)),
        body,
        properties: BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(wire::AVRO_CONTENT_TYPE))
            .with_message_id(ShortString::from(id.as_str()))
            .with_headers(h),
    };
    seal::seal(signer, batch::AUDIENCE_INGEST, [&mut m]).expect("a record seals");
    m
}

/// Household records `first..first + n` as the adapter publishes them when rows arrive
/// faster than it publishes: sealed in batches of 256 (the rows it prepares together).
pub fn records(
    signer: &Signer,
    ids: &IdKey,
    first: u64,
    n: u64,
    source_time_ms: i64,
) -> Vec<OutgoingMessage> {
    records_of(
        signer,
        ids,
        &["household".to_string()],
        first,
        n,
        source_time_ms,
    )
}

/// [`records`] spread over `items` in turn (record `i` is item `i % items.len()`), as one
/// department publishing several items sends them: one read batch, sealed together.
pub fn records_of(
    signer: &Signer,
    ids: &IdKey,
    items: &[String],
    first: u64,
    n: u64,
    source_time_ms: i64,
) -> Vec<OutgoingMessage> {
    let mut out: Vec<OutgoingMessage> = (first..first + n)
        .map(|i| {
            let item = &items[(i % items.len() as u64) as usize];
            record_of(signer, ids, item, i, source_time_ms)
        })
        .collect();
    for chunk in out.chunks_mut(256) {
        seal::seal(signer, batch::AUDIENCE_INGEST, chunk.iter_mut()).expect("records seal");
    }
    out
}

/// The large catalogue: 200 agencies (`big001`…`big200`) and 25 items (`bench01`…`bench25`,
/// police household records). Item `i` is granted to eight agencies: four grants in force,
/// each agency its own, and four that ended in 2025 (a catalogue keeps ended grants, and the
/// router passes over them). Every record has 4 grants in force, as at fanout 4, but the
/// deliveries of a batch spread over 100 agencies instead of 4.
pub const LARGE_AGENCIES: usize = 200;
pub const LARGE_ITEMS: usize = 25;

pub fn large_items() -> Vec<String> {
    (1..=LARGE_ITEMS).map(|i| format!("bench{i:02}")).collect()
}

pub fn large_agencies() -> Vec<String> {
    (1..=LARGE_AGENCIES).map(|a| format!("big{a:03}")).collect()
}

/// The agencies item `i` (0-based) is delivered to in the large catalogue.
pub fn large_recipients(i: usize) -> std::ops::Range<usize> {
    8 * i..8 * i + 4
}

/// Adds the large catalogue to the world's.
pub fn large_catalogue(w: &World) {
    let mut cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    let agencies = large_agencies();
    for a in &agencies {
        cat.push_str(&format!(
            "\n[[agency]]\nid = \"{a}\"\nname = \"bench {a}\"\nleader = {{ name = \"bench\" }}\nsharing_officer = {{ name = \"bench\" }}\ntechnical_officer = {{ name = \"bench\" }}\n"
        ));
    }
    for (i, item) in large_items().iter().enumerate() {
        cat.push_str(&format!(
            "\n[[item]]\nid = \"{item}\"\nname = \"bench {item}\"\ncontent = \"bench\"\nrecord_type = \"gov.gz.police.HouseholdRegistration\"\ndepartments = [\"police\"]\nupdate_frequency = \"realtime\"\nplatform = \"440100\"\nscope = \"bench\"\nmethod = \"subscription\"\nshared_from = 2016-01-01\n"
        ));
        for (a, agency) in agencies.iter().enumerate().skip(8 * i).take(8) {
            let until = if large_recipients(i).contains(&a) {
                ""
            } else {
                "valid_until = 2025-12-31\n"
            };
            cat.push_str(&format!(
                "\n[[grant]]\nid = \"{agency}-{item}\"\nrevision = 1\nagency = \"{agency}\"\nitem = \"{item}\"\nfields = [\"citizen_id_number\", \"name\", \"sex\", \"status\"]\nidentity = \"full\"\nlegal_basis = \"bench\"\npurpose = \"bench\"\nvalid_from = 2025-01-01\n{until}"
            ));
        }
    }
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
}

pub async fn publish_all(ch: &Channel, msgs: impl Iterator<Item = OutgoingMessage>) {
    let mut inflight: VecDeque<(lapin::PublisherConfirm, OutgoingMessage)> = VecDeque::new();
    for m in msgs {
        if inflight.len() == WINDOW {
            let (c, m) = inflight.pop_front().unwrap();
            classify(c.await, &m).unwrap();
        }
        inflight.push_back((m.publish(ch).await.unwrap(), m));
    }
    for (c, m) in inflight {
        classify(c.await, &m).unwrap();
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn ledger_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(seq), 0)::bigint FROM ledger_heads")
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn purge_agencies(w: &World) {
    purge_fanout(w, 4).await
}

/// Empties the queues of the agencies of fanout `f` (at least the four of the example).
pub async fn purge_fanout(w: &World, f: usize) {
    purge_queues(w, fanout_agencies(f.max(4))).await
}

/// Empties the agency queues of the large catalogue.
pub async fn purge_large(w: &World) {
    purge_queues(w, large_agencies()).await
}

async fn purge_queues(w: &World, agencies: Vec<String>) {
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for a in agencies {
        ch.queue_purge(
            format!("agency.{a}").as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();
}

/// A router bench's world: four grants per household record, the topology declared (the
/// router started once, then stopped), the police department's signing keys, the ledger's
/// database, and a confirmed channel on the world's vhost.
pub struct Bench {
    /// Rounds (`BENCH_ROUNDS`, default 3).
    pub rounds: usize,
    pub w: World,
    pub signer: Signer,
    pub ids: IdKey,
    pub pool: sqlx::PgPool,
    /// Kept open for `ch`.
    pub conn: lapin::Connection,
    pub ch: Channel,
}

impl Bench {
    pub async fn new() -> Self {
        Self::with_fanout(4).await
    }

    /// A bench world whose household records have `fanout` grants (1, 4 or 16).
    pub async fn with_fanout(fanout: usize) -> Self {
        Self::with_catalogue(|w| fanout_grants(w, fanout)).await
    }

    /// A bench world with the large catalogue ([`large_catalogue`]).
    pub async fn large() -> Self {
        Self::with_catalogue(large_catalogue).await
    }

    async fn with_catalogue(edit: impl FnOnce(&World)) -> Self {
        let rounds = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        let mut w = World::new().await;
        edit(&w);
        let signer =
            bus_schemas::keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026")
                .unwrap();
        let ids = IdKey::new(
            &bus_schemas::keys::load_id_secret(&w.path("keys/police/id-secret")).unwrap(),
        );
        w.start_router().await; // declares the topology, then stops
        assert!(w.router.take().unwrap().terminate().success());
        let pool = w.pg().await;
        let conn = w.vhost.connect().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        Bench {
            rounds,
            w,
            signer,
            ids,
            pool,
            conn,
            ch,
        }
    }
}
