//! City and district platforms (articles 28, 32, 33): the city router publishes what its grant
//! to the Tianhe platform allows to `govbus.platform.tianhe`, batch-signed for `tianhe`; a
//! RabbitMQ shovel that `govbus provision` declares on Tianhe's side (with the link accounts'
//! own credentials) carries it into Tianhe's ingest; Tianhe's router verifies the city's
//! batches for its own audience and delivers under its own, narrower grant. Two platforms in
//! two vhosts, each with its own database and router.
mod common;

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use bus_schemas::{amqp::OutgoingMessage, batch::Verifier, wire};
use common::{
    connect, consume_refused, env_value,
    platforms::{
        city_catalogue, expected_tianhe, link, open, police_households, public_key,
        tianhe_catalogue, tianhe_records, CITY_GRANTS, DISTRICT, TIANHE_GRANTS,
    },
    publish_refused, Accounts, World,
};
use govbus_tests::{unique_name, Process};
use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::Value as Json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_record_reaches_a_district_agency_through_the_link_and_only_as_both_grants_allow() {
    const RECORDS: u64 = 5_000;
    let mut city = World::new().await;
    let mut tianhe = World::new().await;
    city_catalogue(&city);
    std::fs::write(
        tianhe.path("catalogue.toml"),
        tianhe_catalogue(&city, TIANHE_GRANTS, "440106"),
    )
    .unwrap();

    // A district grant that widens the city's (a field the city does not send, a wider
    // region) is refused by `govbus catalogue check`, naming both.
    let widening = tianhe.path("widening.toml");
    std::fs::write(
        &widening,
        tianhe_catalogue(
            &city,
            r#"["citizen_id_number", "name", "ethnicity"]"#,
            "4401",
        ),
    )
    .unwrap();
    let out = Process::command("govbus")
        .args(["catalogue", "check"])
        .arg(&widening)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a widening grant passes the check: {said}"
    );
    assert!(
        said.contains(
            "widens what platform `city` grants of item `household`: field(s) `ethnicity`"
        ),
        "{said}"
    );
    assert!(
        said.contains("region `4401` where it grants only region `440106`"),
        "{said}"
    );

    // The link accounts: the city's reads `platform.tianhe`, Tianhe's writes its ingest under
    // `city.…`; Tianhe's provision declares the shovel once it has the city's file. Each
    // router then runs as its own provisioned account (its permissions, and the management
    // tag it reads shovel states with), not as the broker's administrator.
    let prefix = format!("{}-", unique_name("l").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());
    let tianhe_prefix = link(&city, &tianhe, &prefix);
    for w in [&city, &tianhe] {
        let own = env_value(&w.path("accounts/router.env"), "GOVBUS__AMQP__URL");
        w.edit(
            "router.toml",
            &format!("url = \"{}\"", w.vhost.amqp_url),
            &format!("url = \"{own}\""),
        );
        w.edit(
            "router.toml",
            "[router]\n",
            "[router]\nlink_poll_ms = 200\n",
        );
    }
    city.start_router().await;
    tianhe.start_router().await;
    let to_tianhe = city.path(&format!("accounts/links/to-{DISTRICT}.env"));

    // An independent consumer of what the city publishes for Tianhe.
    let conn = city.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "copy.tianhe".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "copy.tianhe".into(),
        wire::platform_exchange(DISTRICT).as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "ok".into()).await;

    let cfg = police_households(&city, RECORDS);
    city.run_adapter(&cfg);
    let got = tianhe
        .drain_until_delivered("agency.civil", (RECORDS / 2) as usize, 240)
        .await;

    // What the city sent Tianhe: only Tianhe's records, each under `city.household.<shard>`,
    // batch-signed for `tianhe` and for no other audience.
    let copies = city.drain("copy.tianhe", Duration::from_millis(500)).await;
    assert_eq!(
        copies.len() as u64,
        RECORDS / 2,
        "the city's deliveries to Tianhe"
    );
    let city_key = public_key(&city);
    let verifier = Verifier::new();
    for c in &copies {
        let (platform, item, _) = wire::parse_routing_key(&c.routing_key).unwrap();
        assert_eq!((platform, item), ("city", "household"), "{}", c.routing_key);
        c.verify_batch(&verifier, &city_key, DISTRICT).unwrap();
        assert!(c
            .verify_batch(&Verifier::new(), &city_key, "yuexiu")
            .is_err());
    }
    let sent = open(&city, &copies[0]).await;
    let written: BTreeSet<String> = serde_json::from_value(sent["_written"].clone()).unwrap();
    let city_fields: BTreeSet<String> = serde_json::from_str(CITY_GRANTS).unwrap();
    assert_eq!(
        written, city_fields,
        "the city sent exactly its grant's fields"
    );

    // What Tianhe's civil affairs bureau received: exactly the records of 440106, exactly the
    // fields of Tianhe's grant, batch-signed by Tianhe's platform for `civil`.
    let unique: HashSet<&str> = got.iter().map(|g| g.message_id.as_str()).collect();
    assert_eq!(unique.len() as u64, RECORDS / 2);
    assert_eq!(
        tianhe_records(&tianhe, &got).await,
        expected_tianhe(RECORDS),
        "exactly the Tianhe records, each once"
    );
    assert_eq!(
        tianhe.count(wire::UNROUTED_QUEUE).await,
        0,
        "nothing unrouted"
    );
    assert_eq!(
        city.count(&wire::platform_queue(DISTRICT)).await,
        0,
        "the link drained"
    );

    // Both ledgers: the city's holds its deliveries to the platform, Tianhe's its own, with
    // the city's batch proof kept as the source's; both verify.
    let city_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE agency = $1")
        .bind(DISTRICT)
        .fetch_one(&city.pg().await)
        .await
        .unwrap();
    assert_eq!(city_rows as u64, RECORDS / 2);
    let (rows, from_city): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE department = 'city' AND dept_key_id = 'platform-test') FROM ledger WHERE agency = 'civil'",
    )
    .fetch_one(&tianhe.pg().await)
    .await
    .unwrap();
    assert_eq!((rows as u64, from_city as u64), (RECORDS / 2, RECORDS / 2));
    city.verify_ledger();
    tianhe.verify_ledger();

    // Forgeries in Tianhe's ingest under `city.`: a batch signed with another key under the
    // city's key id, and one the city signed for another district. Both refused as bad
    // signatures, counted, and nothing more delivered.
    let template = &copies[0];
    let mut forged: Vec<OutgoingMessage> = tianhe.sealed_copies(
        template,
        "tianhe",
        &tianhe.platform_signer("platform-test"),
        DISTRICT,
        "forged-key",
        1,
    );
    forged.extend(city.sealed_copies(
        template,
        "tianhe",
        &city.platform_signer("platform-test"),
        "yuexiu",
        "forged-audience",
        1,
    ));
    for m in &mut forged {
        m.exchange = wire::INGEST_EXCHANGE.into();
        m.routing_key = template.routing_key.clone();
    }
    tianhe.publish(&forged).await;
    tianhe
        .await_metric(
            "govbus_router_refusals_total{reason=\"bad_signature\"} 2",
            30,
            "Tianhe's router counts both forgeries as bad signatures",
        )
        .await;
    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT message_id, reason FROM refusals WHERE message_id LIKE 'forged%' ORDER BY message_id",
    )
    .fetch_all(&tianhe.pg().await)
    .await
    .unwrap();
    assert_eq!(
        refused,
        [
            ("forged-audience-0".to_string(), "bad_signature".to_string()),
            ("forged-key-0".to_string(), "bad_signature".to_string())
        ]
    );
    assert!(tianhe
        .drain("agency.civil", Duration::from_millis(500))
        .await
        .is_empty());

    // The link accounts can do nothing else. The city's reads `platform.tianhe` and nothing
    // else there, and writes nothing; Tianhe's writes its ingest under `city.<item>.<shard>`
    // only (anchored: not `cityx.`, not another department's, not a three-digit shard) and
    // reads nothing.
    let reader = connect(&to_tianhe).await;
    assert!(consume_refused(&reader, "agency.civil").await);
    assert!(consume_refused(&reader, "govbus.router.0").await);
    assert!(!consume_refused(&reader, &wire::platform_queue(DISTRICT)).await);
    assert!(publish_refused(&reader, "city.household.1").await);
    let writer = connect(&tianhe.path("accounts/links/into-city.env")).await;
    for key in [
        "police.household.1",
        "cityx.household.1",
        "city.household.100",
        "city.household",
        "xcity.household.1",
    ] {
        assert!(publish_refused(&writer, key).await, "{key} was allowed");
    }
    assert!(consume_refused(&writer, "agency.civil").await);
    assert!(consume_refused(&writer, wire::UNROUTED_QUEUE).await);

    // The links as operators see them: up on both sides, nothing waiting or unrouted.
    tianhe
        .await_metric(
            "govbus_link_up{platform=\"city\",direction=\"from\"} 1",
            30,
            "Tianhe's router never saw the shovel from the city running",
        )
        .await;
    city.await_metric(
        &format!("govbus_link_up{{platform=\"{DISTRICT}\",direction=\"to\"}} 1"),
        30,
        "the city's router never saw Tianhe's shovel consume platform.tianhe",
    )
    .await;
    city.await_metric(
        &format!("govbus_link_backlog{{platform=\"{DISTRICT}\"}} 0"),
        30,
        "the city's router shows a backlog on the link",
    )
    .await;
    tianhe
        .await_metric("govbus_unrouted_messages 0", 30, "unrouted not counted")
        .await;
    let status: Json = reqwest::get(tianhe.api_url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["links"]["links"][0],
        serde_json::json!({"platform": "city", "direction": "from", "state": "running", "backlog": null}),
        "{status}"
    );
    let page = reqwest::get(tianhe.api_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<td data-link=\"city\" data-field=\"state\">running</td>"),
        "{page}"
    );

    // The shovel removed: the link is down on both sides, and the page says so.
    let s = govbus_tests::Services::from_env();
    let name = format!("{tianhe_prefix}govbus-link-city");
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/api/parameters/shovel/{}/{name}",
            s.management_url, tianhe.vhost.name
        ))
        .basic_auth(&s.management_auth.0, Some(&s.management_auth.1))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "deleting the shovel: {}",
        r.status()
    );
    tianhe
        .await_metric(
            "govbus_link_up{platform=\"city\",direction=\"from\"} 0",
            30,
            "Tianhe's router did not see the shovel go",
        )
        .await;
    city.await_metric(
        &format!("govbus_link_up{{platform=\"{DISTRICT}\",direction=\"to\"}} 0"),
        30,
        "the city's router did not see platform.tianhe lose its consumer",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status: Json = reqwest::get(tianhe.api_url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "link from city: missing"),
        "{status}"
    );

    // A reload with the widening grant is refused and counted; the grant in force stays.
    std::fs::copy(&widening, tianhe.path("catalogue.toml")).unwrap();
    tianhe
        .await_metric(
            "govbus_router_catalogue_refused_total 1",
            30,
            "Tianhe's router refuses a catalogue whose grant widens the city's",
        )
        .await;
}
