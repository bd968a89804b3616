//! Hostile input on `govbus.ingest`: each bad message is refused with its own reason and kept
//! with it; none crashes the router, none is lost, and good records keep flowing.
mod common;

use std::{collections::BTreeMap, time::Duration};

use bus_schemas::{
    amqp::{publish::publish_all, seal, OutgoingMessage},
    batch, keys, Registry,
};
use common::{batch_forgeries, citizen, World};
use govbus_tests::Process;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};

struct Msg {
    routing_key: &'static str,
    headers: Option<FieldTable>,
    body: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_with_their_reason() {
    let mut w = World::new().await;
    w.start_router().await;
    let police = keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026").unwrap();
    let rt = Registry::standard()
        .get("gov.gz.police.HouseholdRegistration")
        .unwrap();
    let good = rt
        .encode_json(&serde_json::json!({"citizen_id_number": citizen(1), "name": "居民1"}))
        .unwrap();
    // Headers of a message batch-signed (a batch of one) by the police key over `body`,
    // claiming `dept`.
    let signed = |item: &str, body: &[u8], dept: &str| {
        let id = format!("hostile-{}", body.len());
        let mut h = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        h.insert("govbus-department".into(), s(dept));
        h.insert("govbus-item".into(), s(item));
        h.insert("govbus-version".into(), AMQPValue::LongLongInt(1));
        h.insert("govbus-op".into(), s("upsert"));
        let mut m = OutgoingMessage {
            exchange: String::new(),
            routing_key: String::new(),
            body: body.to_vec(),
            properties: BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_headers(h),
        };
        seal::seal(&police, batch::AUDIENCE_INGEST, [&mut m]).unwrap();
        m.properties.headers().clone().unwrap()
    };
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'{';
    let mut unknown_fp = good.clone();
    unknown_fp[2] ^= 0xff;
    let truncated = good[..good.len() - 3].to_vec();
    let mut oversized = good.clone();
    oversized.extend(std::iter::repeat_n(0x41u8, 2 * 1024 * 1024));
    let mut tampered_headers = signed("household", &good, "police");
    tampered_headers.insert("govbus-version".into(), AMQPValue::LongLongInt(99));
    let cases: Vec<(Msg, &str)> = vec![
        (
            Msg {
                routing_key: "nonsense",
                headers: None,
                body: good.clone(),
            },
            "malformed",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: None,
                body: good.clone(),
            },
            "malformed",
        ),
        // Signed and well-formed, but the routing key has no shard (or one out of range).
        (
            Msg {
                routing_key: "police.household",
                headers: Some(signed("household", &good, "police")),
                body: good.clone(),
            },
            "malformed",
        ),
        (
            Msg {
                routing_key: "police.household.64",
                headers: Some(signed("household", &good, "police")),
                body: good.clone(),
            },
            "malformed",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(tampered_headers),
                body: good.clone(),
            },
            "bad_signature",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(signed("household", &wrong_magic, "police")),
                body: wrong_magic.clone(),
            },
            "unknown_schema",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(signed("household", &unknown_fp, "police")),
                body: unknown_fp.clone(),
            },
            "unknown_schema",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(signed("household", &truncated, "police")),
                body: truncated.clone(),
            },
            "undecodable",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(signed("household", &oversized, "police")),
                body: oversized.clone(),
            },
            "undecodable",
        ),
        (
            Msg {
                routing_key: "police.nosuchitem.7",
                headers: Some(signed("nosuchitem", &good, "police")),
                body: good.clone(),
            },
            "unknown_item",
        ),
        (
            Msg {
                routing_key: "commerce.household.7",
                headers: Some(signed("household", &good, "commerce")),
                body: good.clone(),
            },
            "wrong_department",
        ),
        (
            Msg {
                routing_key: "police.household.7",
                headers: Some(signed("household", &[], "police")),
                body: Vec::new(),
            },
            "unknown_schema",
        ),
    ];
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    // With confirms: a publish not yet flushed when the connection closes would be lost.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (i, (m, reason)) in cases.iter().enumerate() {
        *expected.entry(reason.to_string()).or_default() += 1;
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(h) = &m.headers {
            // The id the signature was made over.
            props = props
                .with_message_id(format!("hostile-{}", m.body.len()).as_str().into())
                .with_headers(h.clone());
        } else {
            props = props.with_message_id(format!("bare-{i}").as_str().into());
        }
        ch.basic_publish(
            "govbus.ingest".into(),
            m.routing_key.into(),
            BasicPublishOptions::default(),
            &m.body,
            props,
        )
        .await
        .unwrap()
        .await
        .expect("the broker confirms each hostile message");
    }
    let _ = conn.close(200, "ok".into()).await;
    // A good record after all of them still reaches its agencies.
    let cfg = w.police(0, 1, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(
        w.drain("agency.civil", Duration::from_millis(300))
            .await
            .len(),
        1
    );
    let got: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT reason, count(*) FROM refusals GROUP BY reason")
            .fetch_all(&w.pg().await)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(got, expected, "refusals by reason");
    assert_eq!(w.count("govbus.router.0").await, 0, "nothing left behind");
    assert!(
        w.router.as_mut().unwrap().0.try_wait().unwrap().is_none(),
        "the router is still running"
    );
}

/// A refused message's body is kept only up to `router.refusal_body_bytes`, with its whole
/// length and a keyed hash of the rest; refusals past `router.refusal_retention_days` are
/// purged from the database, and a backup made afterwards does not hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_are_capped_and_purged_after_their_retention() {
    let mut w = World::new().await;
    let cfg = w.path("router.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[router]\n",
        "[router]\nrefusal_body_bytes = 100\nrefusal_retention_days = 30\nverify_every_secs = 1\n",
    );
    std::fs::write(&cfg, text).unwrap();
    w.start_router().await;
    let pool = w.pg().await;
    // A refusal older than the retention, as an earlier run would have left it.
    old_refusal(&pool, 31).await;
    // A large message the router refuses now.
    let body = vec![b'x'; 5000];
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "govbus.ingest".into(),
        "police.household.7".into(),
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (kept, len, hmac): (Vec<u8>, Option<i32>, Option<String>) = loop {
        let row = sqlx::query_as(
            "SELECT body, body_bytes, body_hmac FROM refusals WHERE detail <> 'old'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(r) = row {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no refusal kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kept.len(), 100, "the body is cut at refusal_body_bytes");
    assert_eq!(len, Some(5000), "its whole length is kept");
    let hmac = hmac.expect("a keyed hash of the whole body");
    assert_eq!(hmac.len(), 64);
    assert_ne!(hmac, sha256_hex(&body), "keyed, not a plain SHA-256");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let old: i64 = sqlx::query_scalar("SELECT count(*) FROM refusals WHERE detail = 'old'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if old == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal past its retention was not purged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With the router stopped (no upkeep), a backup still leaves out what is past retention.
    assert!(w.router.take().unwrap().terminate().success());
    old_refusal(&pool, 40).await;
    let out = w.path("backup");
    let b = Process::command("govbus")
        .args(["backup", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let table = std::fs::read_to_string(out.join("tables/refusals.csv")).unwrap();
    assert_eq!(
        table.lines().count(),
        2,
        "a header and the recent refusal:\n{table}"
    );
    let _ = conn.close(200, "ok".into()).await;
}

/// A refusal kept `days` ago (detail `old`), as an earlier run would have left it.
async fn old_refusal(pool: &sqlx::PgPool, days: i32) {
    sqlx::query(
        "INSERT INTO refusals (refused_at, reason, detail, routing_key, headers, body)
         VALUES (now() - make_interval(days => $1), 'malformed', 'old', 'police.household', '{}', 'OLD-BODY')",
    )
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Department batches straight to `govbus.ingest`: batches of 1, 2, 3, 5 and 1,024 sealed by
/// the police key for `ingest` all reach civil; each forgery of a batch signature (a flipped
/// body byte or salt, a wrong leaf index, a path from another batch, a path one hash short or
/// long, a size of 0 or 1,025, a batch signed for another audience, no path) is refused as
/// `bad_signature`, counted, and delivered to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_batches_verify_and_every_forgery_is_refused() {
    use bus_schemas::wire::header;
    let mut w = World::new().await;
    w.start_router().await;
    let police = keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026").unwrap();
    let rt = Registry::standard()
        .get("gov.gz.police.HouseholdRegistration")
        .unwrap();
    let record = |n: u64, id: &str| {
        let body = rt
            .encode_json(
                &serde_json::json!({"citizen_id_number": citizen(n), "name": format!("居民{n}")}),
            )
            .unwrap();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        let mut h = FieldTable::default();
        h.insert(header::DEPARTMENT.into(), s("police"));
        h.insert(header::ITEM.into(), s("household"));
        h.insert(header::VERSION.into(), AMQPValue::LongLongInt(1));
        h.insert(header::OP.into(), s("upsert"));
        OutgoingMessage {
            exchange: "govbus.ingest".into(),
            routing_key: "police.household.7".into(),
            body,
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.into())
                .with_headers(h),
        }
    };
    let sealed = |first: u64, n: u64, prefix: &str, audience: &str| {
        let mut v: Vec<OutgoingMessage> = (first..first + n)
            .map(|i| record(i, &format!("{prefix}-{i}")))
            .collect();
        seal::seal(&police, audience, v.iter_mut()).unwrap();
        v
    };
    let a = sealed(50_000, 5, "a", batch::AUDIENCE_INGEST);
    let b = sealed(60_000, 5, "b", batch::AUDIENCE_INGEST);
    let elsewhere = sealed(70_000, 1, "c", "civil");
    // The ten forgeries, and one more only a department batch can have: no path at all.
    let m = &a[3];
    let mut no_path = FieldTable::default();
    for (k, v) in m.properties.headers().as_ref().unwrap().inner() {
        if k.as_str() != header::PROOF {
            no_path.insert(k.clone(), v.clone());
        }
    }
    let mut without_path = m.clone();
    without_path.properties = m.properties.clone().with_headers(no_path);
    let mut forgeries = batch_forgeries(&a, &b, &elsewhere[0], &[]);
    forgeries.push(without_path);
    let mut good = Vec::new();
    let mut first = 0;
    for n in [1u64, 2, 3, 5, 1024] {
        good.extend(sealed(
            first,
            n,
            &format!("batch{n}"),
            batch::AUDIENCE_INGEST,
        ));
        first += n;
    }
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for c in publish_all(&ch, forgeries.iter().chain(&good)).await {
        c.unwrap().await.unwrap();
    }
    let _ = conn.close(200, "ok".into()).await;
    let civil = w
        .drain_until_delivered("agency.civil", good.len(), 120)
        .await;
    assert!(
        civil.iter().all(|g| g.header_i64(header::VERSION) == 1),
        "records only"
    );
    let pool = w.pg().await;
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT ingest_id) FROM ledger WHERE agency = 'civil'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(delivered, good.len() as i64, "every good batch, no forgery");
    let forged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger WHERE ingest_id LIKE 'a-%' OR ingest_id LIKE 'c-%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(forged, 0, "nothing of a forgery is delivered");
    let refused: Vec<(String, String)> =
        sqlx::query_as("SELECT reason, detail FROM refusals ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        refused.len(),
        forgeries.len(),
        "one refusal per forgery: {refused:?}"
    );
    assert!(
        refused.iter().all(|(r, _)| r == "bad_signature"),
        "{refused:?}"
    );
    w.await_metric(
        &format!(
            "govbus_router_refusals_total{{reason=\"bad_signature\"}} {}",
            forgeries.len()
        ),
        10,
        "every forgery counted",
    )
    .await;
}
