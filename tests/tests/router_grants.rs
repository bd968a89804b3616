//! The router end to end: records published by the adapter binary reach exactly the agencies
//! the catalogue grants them to, with exactly the granted fields; refused messages reach
//! nobody and are kept with their reason; the ledger verifies, and fails on an edited row.
mod common;

use std::{collections::HashMap, time::Duration};

use bus_schemas::{
    split_header,
    wire::{header, Signer},
    RecordType, Registry,
};
use common::{citizen, uscc, Got, World};
use govbus_tests::{python, Process};
use serde_json::Value as Json;

/// Decodes a delivery with the writer schema served at `/schemas/{fingerprint}`, read with the
/// full record schema; checks the platform signature with the key served at `/keys`.
async fn open(w: &World, g: &Got, full: &RecordType) -> Json {
    let (fp, datum) = split_header(&g.body).unwrap();
    let text = reqwest::get(w.url(&format!("/schemas/{fp}")))
        .await
        .unwrap();
    assert!(
        text.status().is_success(),
        "/schemas/{fp}: {}",
        text.status()
    );
    let writer = RecordType::from_self_contained(text.json().await.unwrap(), "served").unwrap();
    assert_eq!(writer.fingerprint, fp);
    let keys: Json = reqwest::get(w.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pk = bus_schemas::keys::parse_public_key(keys["keys"][0]["public_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        g.header_str(header::KEY_ID),
        keys["keys"][0]["key_id"].as_str().unwrap()
    );
    // A delivery batch is signed for its agency (the routing key) and no other.
    let verifier = bus_schemas::batch::Verifier::new();
    g.verify_batch(&verifier, &pk, &g.routing_key)
        .unwrap_or_else(|e| panic!("platform batch signature for {}: {e}", g.routing_key));
    assert!(
        g.verify_batch(&verifier, &pk, "someone_else").is_err(),
        "a delivery batch verifies for its own agency only"
    );
    let value = writer.decode_datum_as(full, datum).unwrap();
    let mut json = full.value_to_json(&value).unwrap();
    json["_written"] = Json::from(writer.leaf_paths());
    json
}

fn by_item(got: &[Got]) -> HashMap<String, Vec<&Got>> {
    let mut m: HashMap<String, Vec<&Got>> = HashMap::new();
    for g in got {
        m.entry(g.header_str(header::ITEM)).or_default().push(g);
    }
    m
}

/// Three departments, four agencies: each agency gets exactly the granted records and fields
/// (pseudonyms where granted, its district only where region-limited, nothing from an expired
/// grant); a wrongly signed record, a commerce item under the police key, an item nobody is
/// granted, an unknown item and a body of another type reach nobody and are kept with their
/// reason; every delivery decodes with the served schema in Rust and in
/// fastavro; the ledger verifies, and an edited row is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agency_gets_exactly_its_grants() {
    let mut w = World::new().await;
    // An item nobody is granted: its records are refused as `no_grant`.
    let mut cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    cat.push_str("\n[[item]]\nid = \"residence\"\nname = \"居住证信息\"\nrecord_type = \"gov.gz.migrant.ResidencePermit\"\ndepartments = [\"police\"]\nshared_from = 2016-01-01\n");
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
    w.start_router().await;
    let police = w.police(0, 20, 1);
    let commerce = w.commerce(0, 20);
    let localtax = w.localtax(0, 10);
    w.run_adapter(&police);
    w.run_adapter(&commerce);
    w.run_adapter(&localtax);

    // Refused: signed with a key the catalogue does not list; a commerce item under police.
    let reg = Registry::standard();
    let household = reg
        .get("gov.gz.police.HouseholdRegistration")
        .unwrap()
        .clone();
    let enterprise = reg
        .get("gov.gz.commerce.EnterpriseRegistration")
        .unwrap()
        .clone();
    let rogue = Signer::from_seed("police-2026", &[42u8; 32]);
    w.publish_raw(
        "police.household.7",
        "household",
        &household,
        serde_json::json!({"citizen_id_number": citizen(900), "name": "冒名"}),
        &rogue,
    )
    .await;
    let police_key =
        bus_schemas::keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026")
            .unwrap();
    w.publish_raw(
        "police.enterprise.7",
        "enterprise",
        &enterprise,
        serde_json::json!({"unified_social_credit_code": uscc(900)}),
        &police_key,
    )
    .await;

    let permit = reg.get("gov.gz.migrant.ResidencePermit").unwrap().clone();
    w.publish_raw(
        "police.residence.7",
        "residence",
        &permit,
        serde_json::json!({"permit_number": "R-1"}),
        &police_key,
    )
    .await;
    // An item the catalogue does not list; an enterprise body under the household item.
    w.publish_raw(
        "police.weapons.7",
        "weapons",
        &permit,
        serde_json::json!({"permit_number": "W-1"}),
        &police_key,
    )
    .await;
    w.publish_raw(
        "police.household.7",
        "household",
        &enterprise,
        serde_json::json!({"unified_social_credit_code": uscc(901)}),
        &police_key,
    )
    .await;
    w.settle(Duration::from_millis(1500)).await;
    let idle = Duration::from_millis(500);
    let civil = w.drain("agency.civil", idle).await;
    let health = w.drain("agency.health", idle).await;
    let hrss = w.drain("agency.hrss", idle).await;
    let tianhe = w.drain("agency.tianhe", idle).await;

    // civil: household in full (20); tax registration grant expired: nothing.
    let c = by_item(&civil);
    assert_eq!(
        c.get("household").map_or(0, Vec::len),
        20,
        "civil household"
    );
    assert!(
        !c.contains_key("registration"),
        "the expired grant delivered"
    );
    assert_eq!(civil.len(), 20);
    let one = open(&w, c["household"][0], &household).await;
    assert!(one["citizen_id_number"]
        .as_str()
        .unwrap()
        .starts_with("440106"));
    assert!(one["name"].as_str().unwrap().starts_with("居民"));
    assert_eq!(
        one["ethnicity"],
        Json::Null,
        "ethnicity is not granted to civil"
    );
    assert_eq!(
        c["household"][0].header_str(header::GRANT),
        "civil-household"
    );
    assert_eq!(c["household"][0].header_i64(header::GRANT_REVISION), 1);

    // health: household and enterprise, pseudonymised, no names.
    let h = by_item(&health);
    assert_eq!(h.get("household").map_or(0, Vec::len), 20);
    assert_eq!(h.get("enterprise").map_or(0, Vec::len), 20);
    assert_eq!(health.len(), 40);
    let mut tokens = std::collections::HashSet::new();
    for g in &h["household"] {
        let r = open(&w, g, &household).await;
        let t = r["citizen_id_number"].as_str().unwrap().to_string();
        assert!(t.starts_with("pgb1_") && t.len() == 37, "{t}");
        assert_eq!(r["name"], Json::Null);
        assert!(r["ethnicity"].as_str().is_some());
        tokens.insert(t);
    }
    assert_eq!(tokens.len(), 20, "one token per person");
    let e = open(&w, h["enterprise"][0], &enterprise).await;
    let rep = &e["legal_representative"];
    assert!(rep["id_number"].as_str().unwrap().starts_with("pgb1_"));
    assert_eq!(rep["id_type"], "pseudonym");
    assert_eq!(rep["name"], Json::Null);
    assert_eq!(e["registered_address"], Json::Null);

    // hrss: enterprise in full with the representative's name; tax registration.
    let r = by_item(&hrss);
    assert_eq!(r.get("enterprise").map_or(0, Vec::len), 20);
    assert_eq!(r.get("registration").map_or(0, Vec::len), 10);
    let e = open(&w, r["enterprise"][0], &enterprise).await;
    assert!(e["legal_representative"]["name"]
        .as_str()
        .unwrap()
        .starts_with("法人"));
    assert!(e["legal_representative"]["id_number"]
        .as_str()
        .unwrap()
        .starts_with("440106"));
    assert_eq!(
        e["division_code"],
        Json::Null,
        "division is not granted to hrss"
    );
    // The same person has different tokens at health and numbers at hrss: no linking.
    let health_rep = open(&w, h["enterprise"][0], &enterprise).await;
    let key = health_rep["unified_social_credit_code"].clone();
    for g in &r["enterprise"] {
        let full = open(&w, g, &enterprise).await;
        if full["unified_social_credit_code"] == key {
            assert_ne!(
                full["legal_representative"]["id_number"],
                health_rep["legal_representative"]["id_number"]
            );
        }
    }

    // tianhe: only Tianhe's enterprises (the even half), only its four fields.
    assert_eq!(tianhe.len(), 10, "district agency gets its district only");
    for g in &tianhe {
        let e = open(&w, g, &enterprise).await;
        assert!(e["division_code"].as_str().unwrap().starts_with("440106"));
        assert_eq!(e["legal_representative"], Json::Null);
        assert_eq!(
            e["_written"],
            serde_json::json!([
                "unified_social_credit_code",
                "name",
                "division_code",
                "registered_address"
            ])
        );
    }

    // Refusals: kept with their reason; nothing reached any agency (counts above are exact).
    let pool = w.pg().await;
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT reason, routing_key FROM refusals ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        reasons.contains(&("bad_signature".into(), "police.household.7".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("wrong_department".into(), "police.enterprise.7".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("no_grant".into(), "police.residence.7".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("unknown_item".into(), "police.weapons.7".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("unknown_schema".into(), "police.household.7".into())),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("govbus_router_refusals_total{reason=\"bad_signature\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("govbus_router_deliveries_total{agency=\"tianhe\",item=\"enterprise\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("govbus_router_delivery_latency_seconds_bucket"));

    // An independent Avro implementation reads a delivery with the served schema and the full one.
    let g = h["enterprise"][0];
    let (fp, _) = split_header(&g.body).unwrap();
    let served = reqwest::get(w.url(&format!("/schemas/{fp}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(w.path("writer.avsc"), served).unwrap();
    std::fs::write(
        w.path("reader.avsc"),
        serde_json::to_string(&enterprise.json).unwrap(),
    )
    .unwrap();
    std::fs::write(w.path("body.bin"), &g.body).unwrap();
    let out = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg(
            "import sys, io, json, fastavro\n\
             w = fastavro.parse_schema(json.load(open(sys.argv[1])))\n\
             r = fastavro.parse_schema(json.load(open(sys.argv[2])))\n\
             b = open(sys.argv[3], 'rb').read()\n\
             assert b[:2] == b'\\xc3\\x01'\n\
             print(json.dumps({'writer': fastavro.schemaless_reader(io.BytesIO(b[10:]), w), 'full': fastavro.schemaless_reader(io.BytesIO(b[10:]), w, r)}, default=str, ensure_ascii=False))",
        )
        .arg(w.path("writer.avsc"))
        .arg(w.path("reader.avsc"))
        .arg(w.path("body.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fastavro: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py["writer"]["legal_representative"]["id_type"], "pseudonym");
    assert!(py["writer"].get("registered_address").is_none());
    assert_eq!(py["full"]["registered_address"], Json::Null);
    assert!(py["full"]["unified_social_credit_code"]
        .as_str()
        .unwrap()
        .starts_with("91440101"));

    // The ledger: one row per delivery, verifying; an edited row is named.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 20 + 40 + 30 + 10);
    let verify = || {
        Process::command("govbus")
            .args(["ledger", "verify", "--database-url", &w.db.url])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ledger ok: 100 rows in 4 chains"));
    sqlx::query("UPDATE ledger SET version = version + 1 WHERE agency = 'hrss' AND seq = 7")
        .execute(&pool)
        .await
        .unwrap();
    let bad = verify();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("agency hrss partition 0 row seq 7") && text.contains("edited"),
        "{text}"
    );
}

/// A taxpayer id (often an individual business owner's ID number) is an identity by its
/// schema marker (`govbus.element = taxpayer_id`): a pseudonym grant replaces it, and the
/// record key made of it, with the agency's token; a full grant keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pseudonym_grant_replaces_taxpayer_ids() {
    let mut w = World::new().await;
    let mut cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    cat.push_str(
        "\n[[grant]]\nid = \"health-registration\"\nrevision = 1\nagency = \"health\"\nitem = \"registration\"\nfields = [\"taxpayer_id\", \"registration_date\"]\nidentity = \"pseudonym\"\nlegal_basis = \"test\"\npurpose = \"test\"\nvalid_from = 2026-01-01\n",
    );
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
    w.start_router().await;
    let cfg = w.localtax(0, 3);
    w.run_adapter(&cfg);
    let health = w.tail("health", 3).await;
    let hrss = w.tail("hrss", 3).await;
    let ids: std::collections::BTreeSet<String> = (0..3).map(common::uscc).collect();
    for d in &health {
        let t = d["record"]["taxpayer_id"].as_str().unwrap();
        assert!(t.starts_with("pgb1_") && t.len() == 37, "{d}");
        assert_eq!(
            d["key"].as_str(),
            Some(t),
            "the record key is the token too"
        );
        assert!(!ids.contains(t));
    }
    let full: std::collections::BTreeSet<String> = hrss
        .iter()
        .map(|d| d["record"]["taxpayer_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(full, ids, "a full grant keeps the taxpayer id");
}
