//! A citizen's data-use log (`POST /api/subject-log`, `govbus subject-log`): after real
//! deliveries through the router, a person's log lists exactly the deliveries of the records
//! naming them, as a household's subject and as the second party of a marriage, with the
//! pseudonym delivery marked; nobody else's; only for the portal's token; rate-limited; and
//! every query is itself in the audit log.
mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    process::Stdio,
    time::{Duration, Instant},
};

use bus_schemas::Registry;
use common::{citizen, World};
use govbus_tests::Process;
use serde_json::{json, Value as Json};

const ADDITIONS: &str = r#"
[[department]]
id = "civilaffairs"
name = "广州市民政局婚姻登记处"
keys = { "civilaffairs-2026" = "CIVIL_KEY" }

[[item]]
id = "marriage"
name = "婚姻登记信息"
content = "结婚、离婚登记(第十条)"
record_type = "gov.gz.civil.MarriageRegistration"
departments = ["civilaffairs"]
update_frequency = "realtime"
platform = "440100"
scope = "市、区政府部门履行职责"
method = "subscription"
shared_from = 2016-01-01

[[grant]]
id = "civil-marriage"
revision = 1
agency = "civil"
item = "marriage"
fields = ["certificate_number", "male_party.name", "male_party.id_type", "male_party.id_number", "female_party.name", "female_party.id_type", "female_party.id_number", "marriage_registration_date"]
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第十条;婚姻状况核对"
purpose = "低保家庭婚姻状况核对"
valid_from = 2026-01-01

[[grant]]
id = "health-marriage"
revision = 1
agency = "health"
item = "marriage"
fields = ["certificate_number", "male_party.id_type", "male_party.id_number", "female_party.id_type", "female_party.id_number"]
identity = "pseudonym"
legal_basis = "《广州市政府信息共享管理规定》第十条;人口健康统计"
purpose = "人口健康统计(去标识)"
valid_from = 2026-01-01

[[grant]]
id = "hrss-marriage"
revision = 1
agency = "hrss"
item = "marriage"
fields = ["certificate_number", "female_party.name", "female_party.id_type", "female_party.id_number"]
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第十条;社保待遇核定"
purpose = "遗属待遇资格核对"
valid_from = 2026-01-01

[[grant]]
id = "hrss-household"
revision = 1
agency = "hrss"
item = "household"
fields = ["citizen_id_number", "name", "status"]
identity = "full"
legal_basis = "《广州市政府信息共享管理规定》第九条;社保待遇核定"
purpose = "参保人户籍核对"
valid_from = 2026-01-01
"#;

/// (agency, item, identity) of each delivery a log lists.
fn listed(log: &Json) -> BTreeSet<(String, String, String)> {
    log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["agency"].as_str().unwrap().to_string(),
                d["item"].as_str().unwrap().to_string(),
                d["identity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(v: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    v.iter()
        .map(|(a, i, x)| (a.to_string(), i.to_string(), x.to_string()))
        .collect()
}

/// Three agencies receive a person's household record (one under a pseudonym grant) and a
/// marriage record naming the person as its second party: the person's log lists exactly
/// those six deliveries, with each grant's fields and legal basis; the husband's lists the
/// marriage's three; a neighbour's lists only their own household's three; a stranger's is
/// empty. Only the portal's token is answered; the seventh query in a minute is refused with
/// 429; every answered query, the operator's included, is in the audit log without the ID
/// number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_log_lists_exactly_the_deliveries_naming_them() {
    let mut w = World::new().await;
    let civil_key =
        bus_schemas::keys::keygen(&w.path("keys/civilaffairs"), "civilaffairs-2026").unwrap();
    let catalogue = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    std::fs::write(
        w.path("catalogue.toml"),
        catalogue + &ADDITIONS.replace("CIVIL_KEY", &civil_key),
    )
    .unwrap();
    w.edit(
        "router.toml",
        "deadline_check_secs = 1",
        "deadline_check_secs = 1\nsubject_log_per_minute = 6",
    );
    w.start_router().await;

    let (wife, neighbour, husband, stranger) = (citizen(1), citizen(2), citizen(3), citizen(4));
    let reg = Registry::standard();
    let police =
        bus_schemas::keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026")
            .unwrap();
    let civil = bus_schemas::keys::load_signer(
        &w.path("keys/civilaffairs/civilaffairs-2026.key"),
        "civilaffairs-2026",
    )
    .unwrap();
    let household = reg.get("gov.gz.police.HouseholdRegistration").unwrap();
    for (id, name) in [(&wife, "王芳"), (&neighbour, "李娜")] {
        w.publish_raw(
            "police.household.7",
            "household",
            household,
            json!({"citizen_id_number": id, "name": name, "sex": "2", "status": "正常"}),
            &police,
        )
        .await;
    }
    w.publish_raw(
        "civilaffairs.marriage.3",
        "marriage",
        reg.get("gov.gz.civil.MarriageRegistration").unwrap(),
        json!({
            "certificate_number": "J440106-2016-000123",
            "male_party": {"name": "张伟", "id_type": "111", "id_number": husband},
            "female_party": {"name": "王芳", "id_type": "111", "id_number": wife},
            "marriage_registration_date": "2016-05-17",
        }),
        &civil,
    )
    .await;
    // Two households and a marriage, each to three agencies.
    let pool = w.pg().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 9 deliveries in the ledger after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let portal = w.api_token("portal", "citizen-portal");
    let client = reqwest::Client::new();
    let ask = |token: String, number: &str, session: &str| {
        client
            .post(w.api_url("/api/subject-log"))
            .bearer_auth(token)
            .json(&json!({"id_type": "111", "id_number": number, "session": session}))
            .send()
    };

    // Refused: no valid token, and a token that is not the portal's.
    let r = ask("not-a-token".into(), &wife, "s-0").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = ask(w.api_token("agency", "civil"), &wife, "s-0")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = ask(portal.clone(), &wife, "session-wife").await.unwrap();
    assert_eq!(r.status(), 200);
    let log: Json = r.json().await.unwrap();
    assert_eq!(
        listed(&log),
        set(&[
            ("civil", "household", "full"),
            ("health", "household", "pseudonym"),
            ("hrss", "household", "full"),
            ("civil", "marriage", "full"),
            ("health", "marriage", "pseudonym"),
            ("hrss", "marriage", "full"),
        ]),
        "the household she is the subject of and the marriage she is the second party of: {log:#}"
    );
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 6, "{log:#}");
    let hrss_marriage = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["agency"] == "hrss" && d["item"] == "marriage")
        .unwrap();
    assert_eq!(
        hrss_marriage["fields"],
        json!([
            "certificate_number",
            "female_party.name",
            "female_party.id_type",
            "female_party.id_number"
        ])
    );
    assert_eq!(hrss_marriage["grant"], "hrss-marriage");
    assert!(hrss_marriage["legal_basis"]
        .as_str()
        .unwrap()
        .contains("社保待遇核定"));
    assert_eq!(hrss_marriage["agency_name"], "广州市人力资源和社会保障局");
    assert_eq!(hrss_marriage["item_name"], "婚姻登记信息");
    assert!(
        !log.to_string().contains(&wife),
        "the answer never echoes the number"
    );

    let husbands: Json = ask(portal.clone(), &husband, "session-husband")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed(&husbands),
        set(&[
            ("civil", "marriage", "full"),
            ("health", "marriage", "pseudonym"),
            ("hrss", "marriage", "full"),
        ])
    );
    // The check character written in lower case is the same person.
    let neighbours: Json = ask(
        portal.clone(),
        &neighbour.to_lowercase(),
        "session-neighbour",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        neighbours["deliveries"].as_array().unwrap().len(),
        3,
        "only her own household, none of the other person's records: {neighbours:#}"
    );
    assert!(listed(&neighbours)
        .iter()
        .all(|(_, item, _)| item == "household"));
    let strangers: Json = ask(portal.clone(), &stranger, "session-stranger")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(strangers["deliveries"], json!([]));

    // Bad input is named; the sixth query of the minute is answered, the seventh refused.
    let r = ask(portal.clone(), "", "session-empty").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("id_number"));
    let r = ask(portal.clone(), &wife, "session-wife-2").await.unwrap();
    assert_eq!(r.status(), 200);
    let r = ask(portal.clone(), &wife, "session-wife-3").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // An operator answers a written request; the number comes on standard input.
    let mut child = Process::command("govbus")
        .args(["subject-log", "--config"])
        .arg(w.path("router.toml"))
        .args(["--operator", "wang", "--request", "REQ-2026-0042"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{wife}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_operator: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed(&by_operator), listed(&log));

    // Every answered query is logged: who asked, for which session, when, how many listed.
    let audit: Vec<(String, String, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT asked_by, session, deliveries, subject FROM subject_log_queries ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let who: Vec<(&str, &str, i32)> = audit
        .iter()
        .map(|(a, s, n, _)| (a.as_str(), s.as_str(), *n))
        .collect();
    assert_eq!(
        who,
        [
            ("citizen-portal", "session-wife", 6),
            ("citizen-portal", "session-husband", 3),
            ("citizen-portal", "session-neighbour", 3),
            ("citizen-portal", "session-stranger", 0),
            ("citizen-portal", "session-wife-2", 6),
            ("operator:wang", "REQ-2026-0042", 6),
        ]
    );
    assert_eq!(audit[0].3, audit[4].3, "one person, one keyed hash");
    assert_eq!(audit[0].3.len(), 16);
    // The index and the audit log hold keyed hashes, never a number.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM subject_log_queries WHERE position($1 in session || encode(subject, 'escape')) > 0)
              + (SELECT count(*) FROM subject_index WHERE position(convert_to($1, 'UTF8') in subject) > 0)",
    )
    .bind(&wife)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM subject_index")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        indexed, 4,
        "two households' subjects and the marriage's two parties"
    );
    w.verify_ledger();
}
