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
        city_catalogue, expected_tianhe, host_and_vhost, link, open, open_as, police_households,
        public_key, tianhe_catalogue, tianhe_records, CITY_GRANTS, DISTRICT, TIANHE_GRANTS,
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

/// Records go up the same way (article 33): Tianhe's commerce bureau publishes enterprise
/// registrations as Tianhe's item `tianhe_enterprise`; Tianhe grants the city platform some of
/// their fields; the city lists Tianhe as that item's source and pulls with a shovel on its own
/// broker; the city's hrss gets exactly the fields of the city's narrower grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn district_records_reach_a_city_agency_the_same_way_up() {
    const RECORDS: u64 = 400;
    let mut city = World::new().await;
    let mut tianhe = World::new().await;
    let up_fields =
        r#"["unified_social_credit_code", "name", "division_code", "registered_address"]"#;
    let commerce_key =
        std::fs::read_to_string(tianhe.path("keys/commerce/commerce-2026.pub")).unwrap();
    let tianhe_key = std::fs::read_to_string(tianhe.path("platform/platform-test.pub")).unwrap();
    let (host, tianhe_vhost) = host_and_vhost(&tianhe.vhost.amqp_url);
    let scheme = tianhe.vhost.amqp_url.split_once("://").unwrap().0;
    // Tianhe: its own commerce bureau and item, granted to the city platform.
    let mut text = tianhe_catalogue(&city, TIANHE_GRANTS, "440106");
    text.push_str(&format!(
        r#"
[[department]]
id = "commerce"
name = "天河区市场监督管理局"
keys = {{ "commerce-2026" = "{key}" }}

[[item]]
id = "tianhe_enterprise"
name = "天河区企业登记信息"
record_type = "gov.gz.commerce.EnterpriseRegistration"
departments = ["commerce"]
shared_from = 2016-01-01
division_field = "division_code"

[[grant]]
id = "city-tianhe-enterprise"
revision = 1
platform = "city"
item = "tianhe_enterprise"
fields = {up_fields}
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第三十三条"
purpose = "全市企业服务"
valid_from = 2026-01-01
"#,
        key = commerce_key.trim()
    ));
    std::fs::write(tianhe.path("catalogue.toml"), text).unwrap();
    // The city: Tianhe as the item's source, and a narrower grant to its hrss.
    let mut text = std::fs::read_to_string(city.path("catalogue.toml")).unwrap();
    text.push_str(&format!(
        r#"
[[item]]
id = "tianhe_enterprise"
name = "天河区企业登记信息"
record_type = "gov.gz.commerce.EnterpriseRegistration"
departments = ["{DISTRICT}"]
shared_from = 2016-01-01
division_field = "division_code"

[[platform]]
id = "{DISTRICT}"
name = "天河区政务数据共享平台"
region = "440106"
link = {{ url = "{scheme}://{host}", vhost = "{tianhe_vhost}" }}
keys = {{ "platform-test" = "{key}" }}

[[platform.item]]
id = "tianhe_enterprise"
fields = {up_fields}
identity = "full"

[[grant]]
id = "hrss-tianhe-enterprise"
revision = 1
agency = "hrss"
item = "tianhe_enterprise"
fields = ["unified_social_credit_code", "name"]
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第三十三条"
purpose = "社会保险登记核验"
valid_from = 2026-01-01
"#,
        key = tianhe_key.trim()
    ));
    std::fs::write(city.path("catalogue.toml"), text).unwrap();

    // Linked the other way: Tianhe's provision writes links/to-city.env, the city's operator
    // copies it to links/from-<district>.env, and the city's provision declares the shovel.
    let prefix = format!("{}-", unique_name("u").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());
    let tianhe_prefix = format!("{prefix}t-");
    common::provision(&tianhe, &tianhe_prefix);
    let first = common::provision(&city, &prefix);
    assert!(first.contains("waiting for"), "{first}");
    std::fs::create_dir_all(city.path("accounts/links")).unwrap();
    std::fs::copy(
        tianhe.path("accounts/links/to-city.env"),
        city.path(&format!("accounts/links/from-{DISTRICT}.env")),
    )
    .unwrap();
    let second = common::provision(&city, &prefix);
    assert!(second.contains("shovel"), "{second}");
    city.start_router().await;
    tianhe.start_router().await;

    let cfg = tianhe.commerce_as("tianhe_enterprise", 0, RECORDS);
    tianhe.run_adapter(&cfg);
    let got = city
        .drain_until_delivered("agency.hrss", RECORDS as usize, 120)
        .await;
    let city_pk = public_key(&city);
    let verifier = Verifier::new();
    let mut codes = BTreeSet::new();
    for g in &got {
        g.verify_batch(&verifier, &city_pk, "hrss").unwrap();
        assert_eq!(g.header_str(wire::header::ITEM), "tianhe_enterprise");
        let r = open_as(&city, g, "gov.gz.commerce.EnterpriseRegistration").await;
        let written: BTreeSet<String> = serde_json::from_value(r["_written"].clone()).unwrap();
        assert_eq!(
            written,
            BTreeSet::from(["unified_social_credit_code".to_string(), "name".to_string()])
        );
        codes.insert(
            r["unified_social_credit_code"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let expected: BTreeSet<String> = (0..RECORDS).map(common::uscc).collect();
    assert_eq!(codes, expected, "every Tianhe enterprise, once");
    // What crossed: batches Tianhe signed for the city, kept as the source's proof.
    let (rows, from_tianhe): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE department = $1) FROM ledger WHERE agency = 'hrss' AND item = 'tianhe_enterprise'",
    )
    .bind(DISTRICT)
    .fetch_one(&city.pg().await)
    .await
    .unwrap();
    assert_eq!((rows as u64, from_tianhe as u64), (RECORDS, RECORDS));
    assert_eq!(city.count(wire::UNROUTED_QUEUE).await, 0);
    city.verify_ledger();
    tianhe.verify_ledger();
}
