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
        agency_entry, city_catalogue, enterprise_item, expected_tianhe, host_and_vhost, link,
        link_url, open, open_as, police_households, public_key, tianhe_catalogue, tianhe_records,
        CITY_GRANTS, DISTRICT, TIANHE_GRANTS,
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
    let (_, tianhe_vhost) = host_and_vhost(&tianhe.vhost.amqp_url);
    let tianhe_url = link_url(&tianhe);
    // Tianhe: its own commerce bureau and item, granted to the city platform.
    let mut text = tianhe_catalogue(&city, TIANHE_GRANTS, "440106");
    text.push_str(&format!(
        r#"
[[department]]
id = "commerce"
name = "天河区市场监督管理局"
keys = {{ "commerce-2026" = "{key}" }}
{item}
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
        key = commerce_key.trim(),
        item = enterprise_item("tianhe_enterprise", "天河区企业登记信息", "commerce"),
    ));
    std::fs::write(tianhe.path("catalogue.toml"), text).unwrap();
    // The city: Tianhe as the item's source, and a narrower grant to its hrss.
    let mut text = std::fs::read_to_string(city.path("catalogue.toml")).unwrap();
    text.push_str(&format!(
        r#"{item}
[[platform]]
id = "{DISTRICT}"
name = "天河区政务数据共享平台"
region = "440106"
link = {{ url = "{tianhe_url}", vhost = "{tianhe_vhost}" }}
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
        key = tianhe_key.trim(),
        item = enterprise_item("tianhe_enterprise", "天河区企业登记信息", DISTRICT),
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

/// `METHOD /api<path>` on `w`'s workflow API with `token`: (status, JSON).
async fn api(w: &World, method: &str, path: &str, token: &str, body: Option<Json>) -> (u16, Json) {
    let mut r = reqwest::Client::new()
        .request(method.parse().unwrap(), w.api_url(&format!("/api{path}")))
        .timeout(Duration::from_secs(60))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Json::Null))
}

/// The actions of an application's recorded steps.
async fn actions(w: &World, id: i64, token: &str) -> (Json, Vec<String>) {
    let (s, v) = api(w, "GET", &format!("/applications/{id}"), token, None).await;
    assert_eq!(s, 200, "{v}");
    let acts = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}|{}",
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap()
            )
        })
        .collect();
    (v["application"].clone(), acts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_made_at_tianhe_is_answered_by_city_commerce_and_put_in_force_on_both() {
    const RECORDS: u64 = 200;
    let mut city = World::new().await;
    let mut tianhe = World::new().await;
    city_catalogue(&city);
    // Tianhe lists the city's enterprise item, which the city does not send it yet: its agencies
    // may apply for it through the city's workflow API.
    let mut text = tianhe_catalogue(&city, TIANHE_GRANTS, "440106").replace(
        "region = \"4401\"\n",
        &format!(
            "region = \"4401\"\nworkflow_api = \"{}\"\n",
            city.api_url("")
        ),
    );
    text.push_str(&enterprise_item("enterprise", "企业法人登记信息", "city"));
    text.push_str(&agency_entry("health", "天河区卫生健康局"));
    std::fs::write(tianhe.path("catalogue.toml"), text).unwrap();
    let prefix = format!("{}-", unique_name("a").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());
    link(&city, &tianhe, &prefix);
    // The city's link file for Tianhe carries the platform token Tianhe's router forwards with.
    let platform_token = env_value(
        &city.path(&format!("accounts/links/to-{DISTRICT}.env")),
        "GOVBUS_API_TOKEN",
    );
    assert!(platform_token.starts_with("gbt2.platform.tianhe_district."));
    tianhe.edit(
        "router.toml",
        "deadline_check_secs = 1\n",
        &format!("deadline_check_secs = 1\nplatform_tokens = {{ city = \"{platform_token}\" }}\n"),
    );
    city.start_router().await;
    tianhe.start_router().await;

    // The city's enterprises exist before anyone applies; Tianhe gets none of them.
    let cfg = city.commerce_as("enterprise", 0, RECORDS);
    city.run_adapter(&cfg);
    city.settle(Duration::from_millis(500)).await;
    assert_eq!(tianhe.count("agency.civil").await, 0);

    let civil = tianhe.api_token("agency", "civil");
    let commerce = city.api_token("department", "commerce");
    // Bad applications are refused where they are made, or by the city, and leave nothing.
    let ask = |fields: &[&str]| {
        Some(serde_json::json!({
            "item": "enterprise", "fields": fields, "legal_basis": "x", "purpose": "y"
        }))
    };
    let (s, v) = api(
        &tianhe,
        "POST",
        "/applications",
        &civil,
        ask(&["unified_social_credit_code", "turnover"]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("turnover"), "{v}");
    let (s, v) = api(
        &tianhe,
        "POST",
        "/applications",
        &civil,
        ask(&["unified_social_credit_code", "name"]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("platform `city` refused it")
            && v["error"]
                .as_str()
                .unwrap()
                .contains("division field `division_code`"),
        "{v}"
    );
    // A platform the city does not list cannot apply there, whatever its token says.
    let stranger = city.api_token("platform", "haizhu_district");
    let (s, v) = api(
        &city,
        "POST",
        "/applications",
        &stranger,
        Some(serde_json::json!({
            "item": "enterprise", "fields": ["unified_social_credit_code"], "on_behalf": "civil",
            "legal_basis": "x", "purpose": "y"
        })),
    )
    .await;
    assert_eq!(s, 403, "{v}");

    // Tianhe's civil affairs bureau applies at Tianhe; the application is forwarded.
    let (s, app) = api(&tianhe, "POST", "/applications", &civil, Some(serde_json::json!({
        "item": "enterprise",
        "fields": ["unified_social_credit_code", "name", "division_code"],
        "legal_basis": "《广州市政府信息共享管理规定》第三十七条", "purpose": "低保对象经营情况核对"
    }))).await;
    assert_eq!(s, 201, "{app}");
    assert_eq!(app["forwarded_to"], "city");
    let id = app["id"].as_i64().unwrap();
    let remote = app["remote_id"]
        .as_i64()
        .expect("the city's application id");
    let pool = tianhe.pg().await;
    let apps: i64 = sqlx::query_scalar("SELECT count(*) FROM applications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(apps, 1, "a refused application was kept at Tianhe");

    // At the city: Tianhe applies for its agency, limited to Tianhe's region; city commerce
    // sees it and approves fewer fields than asked.
    let (s, list) = api(&city, "GET", "/applications", &commerce, None).await;
    assert_eq!(s, 200);
    let there = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_i64() == Some(remote))
        .expect("city commerce sees the forwarded application")
        .clone();
    assert_eq!(
        (
            there["agency"].as_str(),
            there["on_behalf"].as_str(),
            there["region"].as_str()
        ),
        (Some(DISTRICT), Some("civil"), Some("440106"))
    );
    let (s, v) = api(
        &city,
        "POST",
        &format!("/applications/{remote}/answer"),
        &commerce,
        Some(serde_json::json!({
            "decision": "approve", "fields": ["unified_social_credit_code", "division_code"],
            "note": "同意，名称另行申请"
        })),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (200, Some("partially_granted")),
        "{v}"
    );

    // Tianhe follows it: the grant is in force on both platforms and the city's existing
    // enterprises of 440106 reach Tianhe's agency, with only the granted fields.
    let got = tianhe
        .drain_until_delivered("agency.civil", (RECORDS / 2) as usize, 120)
        .await;
    let key = public_key(&tianhe);
    let verifier = Verifier::new();
    let granted = BTreeSet::from([
        "unified_social_credit_code".to_string(),
        "division_code".to_string(),
    ]);
    let mut codes = BTreeSet::new();
    for g in &got {
        g.verify_batch(&verifier, &key, "civil").unwrap();
        assert_eq!(g.header_str(wire::header::ITEM), "enterprise");
        let r = open_as(&tianhe, g, "gov.gz.commerce.EnterpriseRegistration").await;
        let written: BTreeSet<String> = serde_json::from_value(r["_written"].clone()).unwrap();
        assert_eq!(written, granted);
        assert_eq!(r["division_code"], "440106");
        codes.insert(
            r["unified_social_credit_code"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let expected: BTreeSet<String> = (0..RECORDS).step_by(2).map(common::uscc).collect();
    assert_eq!(codes, expected, "every Tianhe enterprise of the city, once");

    // Both records show the state, the outcome and each other's steps.
    let (mine, steps) = actions(&tianhe, id, &civil).await;
    assert_eq!(
        (mine["state"].as_str(), mine["outcome"].as_str()),
        (Some("closed"), Some("partially_granted")),
        "{mine}"
    );
    assert_eq!(
        mine["granted_fields"],
        serde_json::json!(["unified_social_credit_code", "division_code"])
    );
    for want in [
        "civil|applied",
        "govbus|forwarded",
        "city:commerce|partially_granted",
        "govbus|in force",
    ] {
        assert!(
            steps.iter().any(|s| s == want),
            "{want} not among Tianhe's steps {steps:?}"
        );
    }
    let (theirs, steps) = actions(&city, remote, &commerce).await;
    assert_eq!(theirs["state"], "closed");
    for want in [
        "commerce|partially_granted",
        &format!("{DISTRICT}|confirmed"),
    ] {
        assert!(
            steps.iter().any(|s| s == want),
            "{want} not among the city's steps {steps:?}"
        );
    }
    // The city's grant is to the platform, limited to its region; Tianhe's to its agency,
    // within what the city sends.
    let (fields, region, in_force): (Vec<String>, Option<String>, bool) = sqlx::query_as(
        "SELECT fields, region, in_force FROM workflow_grants WHERE agency = $1 AND item = 'enterprise'",
    )
    .bind(DISTRICT)
    .fetch_one(&city.pg().await)
    .await
    .unwrap();
    assert_eq!(
        (fields.len(), region.as_deref(), in_force),
        (2, Some("440106"), true)
    );
    let (agency, region): (String, Option<String>) =
        sqlx::query_as("SELECT agency, region FROM workflow_grants WHERE item = 'enterprise'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (agency.as_str(), region.as_deref()),
        ("civil", Some("440106"))
    );

    // Live: a new enterprise of Tianhe reaches its agency through the grant in force.
    let cfg = city.commerce_as("enterprise", RECORDS, RECORDS + 2);
    city.run_adapter(&cfg);
    let live = tianhe.drain_until_delivered("agency.civil", 1, 60).await;
    let r = open_as(&tianhe, &live[0], "gov.gz.commerce.EnterpriseRegistration").await;
    assert_eq!(
        r["unified_social_credit_code"],
        common::uscc(RECORDS).as_str()
    );
    assert_eq!(tianhe.count(wire::UNROUTED_QUEUE).await, 0);
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM refusals")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        refused, 0,
        "Tianhe refused records the city sent before it took the item"
    );

    // Households: the city already sends Tianhe its grant's fields. Tianhe's health bureau
    // asks for more than that grant and is refused at Tianhe; asking within it, city police
    // answer, nothing new comes into force at the city, and Tianhe replays the households it
    // holds to the bureau.
    const HOUSEHOLDS: u64 = 40;
    let cfg = police_households(&city, HOUSEHOLDS);
    city.run_adapter(&cfg);
    let civil_households = tianhe
        .drain_until_delivered("agency.civil", (HOUSEHOLDS / 2) as usize, 60)
        .await;
    assert_eq!(civil_households.len() as u64, HOUSEHOLDS / 2);
    let health = tianhe.api_token("agency", "health");
    let police = city.api_token("department", "police");
    let household = |fields: &[&str]| {
        Some(serde_json::json!({
            "item": "household", "fields": fields, "legal_basis": "《广州市政府信息共享管理规定》第三十七条",
            "purpose": "家庭医生签约核对"
        }))
    };
    let (s, v) = api(
        &tianhe,
        "POST",
        "/applications",
        &health,
        household(&["citizen_id_number", "name", "ethnicity"]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("widens what platform `city` grants"),
        "{v}"
    );
    let (s, app) = api(
        &tianhe,
        "POST",
        "/applications",
        &health,
        household(&["citizen_id_number", "name", "registered_town"]),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let (hid, hremote) = (
        app["id"].as_i64().unwrap(),
        app["remote_id"].as_i64().unwrap(),
    );
    let (s, v) = api(
        &city,
        "POST",
        &format!("/applications/{hremote}/answer"),
        &police,
        Some(serde_json::json!({ "decision": "approve", "note": "同意" })),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("granted")), "{v}");
    let got = tianhe
        .drain_until_delivered("agency.health", (HOUSEHOLDS / 2) as usize, 60)
        .await;
    let items: BTreeSet<String> = got
        .iter()
        .map(|g| {
            g.verify_batch(&verifier, &key, "health").unwrap();
            g.header_str(wire::header::ITEM).to_string()
        })
        .collect();
    assert_eq!(items, BTreeSet::from(["household".to_string()]));
    let (_, steps) = actions(&city, hremote, &police).await;
    assert!(
        steps.iter().any(|s| s == "govbus|awaiting the platform"),
        "{steps:?}"
    );
    let city_grants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_grants WHERE item = 'household'")
            .fetch_one(&city.pg().await)
            .await
            .unwrap();
    assert_eq!(
        city_grants, 0,
        "the city's grant to Tianhe already covered it"
    );
    let (mine, steps) = actions(&tianhe, hid, &health).await;
    assert_eq!(mine["outcome"], "granted");
    assert!(
        steps.iter().any(|s| s == "city:police|granted"),
        "{steps:?}"
    );
    // Replayed here to health alone: civil, which holds the households, gets none again.
    assert_eq!(tianhe.count("agency.civil").await, 0);
    city.verify_ledger();
    tianhe.verify_ledger();
}
