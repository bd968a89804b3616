//! Two platforms, the city's and Tianhe's, each a [`World`] of its own (vhost, database,
//! router), linked as `tests/tests/platforms.rs` and `faults_platforms.rs` need.
use std::collections::BTreeSet;

use bus_schemas::{keys::parse_public_key, split_header, Registry};
use serde_json::Value as Json;

use super::{citizen, provision, provision_with, Got, World};

/// The Tianhe district platform's id (the example catalogue's agency `tianhe` is another
/// recipient: one namespace).
pub const DISTRICT: &str = "tianhe_district";

/// The fields the city grants Tianhe, and those Tianhe grants its civil affairs bureau.
pub const CITY_GRANTS: &str =
    r#"["citizen_id_number", "name", "sex", "status", "registered_town"]"#;
pub const TIANHE_GRANTS: &str = r#"["citizen_id_number", "name", "registered_town"]"#;

/// A catalogue's `[[agency]]` entry (example contacts).
pub fn agency_entry(id: &str, name: &str) -> String {
    format!(
        r#"
[[agency]]
id = "{id}"
name = "{name}"
leader = {{ name = "分管领导(示例)" }}
sharing_officer = {{ name = "共享专员(示例)" }}
technical_officer = {{ name = "技术联系人(示例)" }}
"#
    )
}

/// A catalogue's `[[item]]` of enterprise registrations, `id`, kept by `department` (a
/// department or a linked platform), region-limited by `division_code`.
pub fn enterprise_item(id: &str, name: &str, department: &str) -> String {
    format!(
        r#"
[[item]]
id = "{id}"
name = "{name}"
record_type = "gov.gz.commerce.EnterpriseRegistration"
departments = ["{department}"]
shared_from = 2016-01-01
division_field = "division_code"
"#
    )
}

/// The city: its household item region-limited by `registered_town`, and a grant of it to
/// the Tianhe platform for division 440106.
pub fn city_catalogue(city: &World) {
    city.edit(
        "catalogue.toml",
        "record_type = \"gov.gz.police.HouseholdRegistration\"\n",
        "record_type = \"gov.gz.police.HouseholdRegistration\"\ndivision_field = \"registered_town\"\n",
    );
    let mut text = std::fs::read_to_string(city.path("catalogue.toml")).unwrap();
    text.push_str(&format!(
        r#"
[[platform]]
id = "{DISTRICT}"
name = "天河区政务数据共享平台"
region = "440106"

[[grant]]
id = "tianhe-household"
revision = 1
platform = "{DISTRICT}"
item = "household"
fields = {CITY_GRANTS}
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第三十二条"
purpose = "天河区户籍人口服务"
valid_from = 2026-01-01
region = "440106"
"#
    ));
    std::fs::write(city.path("catalogue.toml"), text).unwrap();
}

/// Tianhe's catalogue: the city platform as the source of `household` (its key, what it
/// grants), and a grant of it to Tianhe's civil affairs bureau: `grant_fields` and
/// `grant_region`.
pub fn tianhe_catalogue(city: &World, grant_fields: &str, grant_region: &str) -> String {
    let city_key = std::fs::read_to_string(city.path("platform/platform-test.pub")).unwrap();
    let (_, vhost) = host_and_vhost(&city.vhost.amqp_url);
    format!(
        r#"platform_id = "{DISTRICT}"
{civil}
[[item]]
id = "household"
name = "户籍登记信息"
record_type = "gov.gz.police.HouseholdRegistration"
departments = ["city"]
shared_from = 2016-01-01
division_field = "registered_town"

[[platform]]
id = "city"
name = "广州市政务信息共享平台"
region = "4401"
link = {{ url = "{url}", vhost = "{vhost}" }}
keys = {{ "platform-test" = "{key}" }}

[[platform.item]]
id = "household"
fields = {CITY_GRANTS}
identity = "full"
region = "440106"

[[grant]]
id = "civil-household"
revision = 1
agency = "civil"
item = "household"
fields = {grant_fields}
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第三十七条"
purpose = "低保对象户籍核对"
valid_from = 2026-01-01
region = "{grant_region}"
"#,
        url = link_url(city),
        key = city_key.trim(),
        civil = agency_entry("civil", "天河区民政局"),
    )
}

/// The `link.url` a platform's catalogue names `w`'s broker with: scheme and `host:port`, and
/// over TLS (`GOVBUS__AMQP__TLS_CA_FILE` set, as in scripts/test's TLS step) the shovel's TLS
/// options, verifying the broker's certificate against that CA.
pub fn link_url(w: &World) -> String {
    let (host, _) = host_and_vhost(&w.vhost.amqp_url);
    let scheme = w.vhost.amqp_url.split_once("://").unwrap().0;
    match std::env::var("GOVBUS__AMQP__TLS_CA_FILE") {
        Ok(ca) if scheme == "amqps" => {
            format!("{scheme}://{host}?cacertfile={ca}&verify=verify_peer&server_name_indication=localhost")
        }
        _ => format!("{scheme}://{host}"),
    }
}

/// `host:port` and the vhost name of a vhost's AMQP URL (credentials dropped).
pub fn host_and_vhost(url: &str) -> (String, String) {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (host, path) = rest.split_once('/').unwrap();
    let vhost = path.split('?').next().unwrap();
    (
        host.to_string(),
        vhost.replace("%2f", "/").replace("%2F", "/"),
    )
}

/// The police adapter's household records `0..n`: even ones registered in a Tianhe town
/// (440106…), odd ones in Yuexiu (440104…).
pub fn police_households(city: &World, n: u64) -> std::path::PathBuf {
    let cfg = city.adapter_config(
        "police",
        "household",
        "gov.gz.police.HouseholdRegistration",
        Some("version"),
        &[
            ("citizen_id_number", "id"),
            ("name", "name"),
            ("sex", "sex|sex"),
            ("status", "status|household_status"),
            ("registered_town", "town"),
        ],
    );
    let mut csv = String::from("id,name,sex,status,town,version,op\n");
    for i in 0..n {
        let town = if i % 2 == 0 { "440106001" } else { "440104002" };
        csv.push_str(&format!("{},居民{i},男,正常,{town},1,U\n", citizen(i)));
    }
    city.drop_csv("police", "household.csv", &csv);
    cfg
}

/// A delivery decoded with the writer schema its router serves, as JSON, with the written
/// fields under `_written`.
pub async fn open(w: &World, g: &Got) -> Json {
    open_as(w, g, "gov.gz.police.HouseholdRegistration").await
}

/// [`open`] for a record of type `record_type`.
pub async fn open_as(w: &World, g: &Got, record_type: &str) -> Json {
    let full = Registry::standard().get(record_type).unwrap();
    let (fp, datum) = split_header(&g.body).unwrap();
    let schema: Json = reqwest::get(w.url(&format!("/schemas/{fp}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let writer = bus_schemas::RecordType::from_self_contained(schema, "served").unwrap();
    let value = writer.decode_datum_as(full, datum).unwrap();
    let mut json = full.value_to_json(&value).unwrap();
    json["_written"] = Json::from(writer.leaf_paths());
    json
}

pub fn public_key(w: &World) -> ed25519_dalek::VerifyingKey {
    parse_public_key(
        std::fs::read_to_string(w.path("platform/platform-test.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

/// Links the two with `govbus provision` on both sides: the city writes
/// `links/to-tianhe.env`, which Tianhe's operator copies to `links/from-city.env`, and
/// Tianhe's provision then declares the shovel. The city's accounts are named with `prefix`,
/// Tianhe's with `<prefix>t-` (on one broker, two platforms' `agency-civil` and
/// `govbus-router` would otherwise be one account). Returns Tianhe's prefix.
pub fn link(city: &World, tianhe: &World, prefix: &str) -> String {
    // With the city's id secret: the link file carries Tianhe's platform token.
    let secret = city.path("platform/id-secret");
    provision_with(
        city,
        prefix,
        &["--platform-id-secret".as_ref(), secret.as_os_str()],
    );
    let tianhe_prefix = format!("{prefix}t-");
    let prefix = tianhe_prefix.as_str();
    let to_tianhe = city.path(&format!("accounts/links/to-{DISTRICT}.env"));
    assert!(to_tianhe.exists(), "the city wrote no link file for Tianhe");
    let first = provision(tianhe, prefix);
    assert!(first.contains("waiting for"), "{first}");
    std::fs::create_dir_all(tianhe.path("accounts/links")).unwrap();
    std::fs::copy(&to_tianhe, tianhe.path("accounts/links/from-city.env")).unwrap();
    let second = provision(tianhe, prefix);
    assert!(second.contains("shovel"), "{second}");
    tianhe_prefix
}

/// The citizen ID numbers of the records Tianhe's agency got, checking each: signed by
/// Tianhe's platform for `civil`, in 440106, with exactly Tianhe's grant's fields.
pub async fn tianhe_records(tianhe: &World, got: &[Got]) -> BTreeSet<String> {
    let key = public_key(tianhe);
    let verifier = bus_schemas::batch::Verifier::new();
    let fields: BTreeSet<String> = serde_json::from_str(TIANHE_GRANTS).unwrap();
    let mut ids = BTreeSet::new();
    for g in got {
        g.verify_batch(&verifier, &key, "civil").unwrap();
        assert_eq!(
            g.header_str(bus_schemas::wire::header::GRANT),
            "civil-household"
        );
        let r = open(tianhe, g).await;
        let written: BTreeSet<String> = serde_json::from_value(r["_written"].clone()).unwrap();
        assert_eq!(written, fields);
        assert!(r["registered_town"].as_str().unwrap().starts_with("440106"));
        ids.insert(r["citizen_id_number"].as_str().unwrap().to_string());
    }
    ids
}

/// The citizen ID numbers of the Tianhe records among `0..n`.
pub fn expected_tianhe(n: u64) -> BTreeSet<String> {
    (0..n).step_by(2).map(citizen).collect()
}
