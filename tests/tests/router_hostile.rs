//! Hostile input on `govbus.ingest`: each bad message is refused with its own reason and kept
//! with it; none crashes the router, none is lost, and good records keep flowing.
mod common;

use std::{collections::BTreeMap, time::Duration};

use bus_schemas::{keys, wire::Op, Registry};
use common::{citizen, World};
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
    // Headers of a message signed by the police key over `body`, claiming `dept`.
    let signed = |item: &str, body: &[u8], dept: &str| {
        let id = format!("hostile-{}", body.len());
        let sig = police.sign(&id, item, 1, Op::Upsert, body);
        let mut h = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        h.insert("govbus-department".into(), s(dept));
        h.insert("govbus-item".into(), s(item));
        h.insert("govbus-version".into(), AMQPValue::LongLongInt(1));
        h.insert("govbus-op".into(), s("upsert"));
        h.insert("govbus-key-id".into(), s("police-2026"));
        h.insert("govbus-signature".into(), s(&sig));
        h
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
                routing_key: "police.household",
                headers: None,
                body: good.clone(),
            },
            "malformed",
        ),
        (
            Msg {
                routing_key: "police.household",
                headers: Some(tampered_headers),
                body: good.clone(),
            },
            "bad_signature",
        ),
        (
            Msg {
                routing_key: "police.household",
                headers: Some(signed("household", &wrong_magic, "police")),
                body: wrong_magic.clone(),
            },
            "unknown_schema",
        ),
        (
            Msg {
                routing_key: "police.household",
                headers: Some(signed("household", &unknown_fp, "police")),
                body: unknown_fp.clone(),
            },
            "unknown_schema",
        ),
        (
            Msg {
                routing_key: "police.household",
                headers: Some(signed("household", &truncated, "police")),
                body: truncated.clone(),
            },
            "undecodable",
        ),
        (
            Msg {
                routing_key: "police.household",
                headers: Some(signed("household", &oversized, "police")),
                body: oversized.clone(),
            },
            "undecodable",
        ),
        (
            Msg {
                routing_key: "police.nosuchitem",
                headers: Some(signed("nosuchitem", &good, "police")),
                body: good.clone(),
            },
            "unknown_item",
        ),
        (
            Msg {
                routing_key: "commerce.household",
                headers: Some(signed("household", &good, "commerce")),
                body: good.clone(),
            },
            "wrong_department",
        ),
        (
            Msg {
                routing_key: "police.household",
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
    assert_eq!(w.count("govbus.router").await, 0, "nothing left behind");
    assert!(
        w.router.as_mut().unwrap().0.try_wait().unwrap().is_none(),
        "the router is still running"
    );
}
