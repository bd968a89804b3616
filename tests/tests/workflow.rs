//! The sharing workflow with real dates (articles 34–37): an application answered in time with
//! fewer fields than asked, whose deliveries (replayed and live) then carry only those; one
//! left unanswered past its 10 working days, escalated, disputed and decided; a refusal that
//! goes to mediation and ends in a grant; who may do what; outcomes published to all.
mod common;

use std::time::{Duration, Instant};

use bus_schemas::validate::today_in_shanghai;
use common::World;
use govbus_tests::Process;
use serde_json::{json, Value};

/// `METHOD /api<path>` with `token`: (status, JSON).
async fn api(
    w: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut r = c
        .request(method.parse().unwrap(), w.api_url(&format!("/api{path}")))
        .timeout(Duration::from_secs(60));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `govbus workflow <args>` with `token`, against the test's router.
fn cli(w: &World, token: &str, args: &[&str]) -> std::process::Output {
    Process::command("govbus")
        .arg("workflow")
        .args(["--api-url", &w.api_url("")])
        .args(args)
        .env("GOVBUS_API_TOKEN", token)
        .output()
        .unwrap()
}

/// The record fields of each delivery `govbus-agency tail` printed.
fn fields(lines: &[Value]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|l| {
            let mut f: Vec<String> = l["record"].as_object().unwrap().keys().cloned().collect();
            f.sort();
            f
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_are_answered_escalated_mediated_and_put_in_force() {
    let mut w = World::new().await;
    w.start_router().await;
    let tianhe = w.api_token("agency", "tianhe");
    let hrss = w.api_token("agency", "hrss");
    let civil = w.api_token("agency", "civil");
    let police = w.api_token("department", "police");
    let commerce = w.api_token("department", "commerce");
    let coordinator = w.api_token("coordinator", "wang");

    // Police records exist before anyone applies; tianhe holds no grant of household.
    let cfg = w.police(0, 20, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(w.count("agency.tianhe").await, 0);
    let _ = w.drain("agency.civil", Duration::from_millis(200)).await;
    let _ = w.drain("agency.health", Duration::from_millis(200)).await;

    // No token, a forged one: 401 with what to do.
    let (s, v) = api(&w, "GET", "/applications", None, None).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    let forged = tianhe.replace("tianhe", "civil");
    assert_eq!(
        api(&w, "GET", "/applications", Some(&forged), None).await.0,
        401
    );

    // 1. tianhe applies (through the command line) for four fields; bad applications are refused.
    let (s, v) = api(
        &w,
        "POST",
        "/applications",
        Some(&tianhe),
        Some(json!({
            "item": "household", "fields": ["name", "sex"], "legal_basis": "x", "purpose": "y"
        })),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("must grant the record key"),
        "{v}"
    );
    let (s, v) = api(
        &w,
        "POST",
        "/applications",
        Some(&police),
        Some(json!({
            "item": "household", "fields": ["citizen_id_number"], "legal_basis": "x", "purpose": "y"
        })),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let out = cli(
        &w,
        &tianhe,
        &[
            "--json",
            "apply",
            "--item",
            "household",
            "--fields",
            "citizen_id_number,name,sex,status",
            "--legal-basis",
            "《广州市政务信息共享管理规定》第三十五条; 街道户籍服务",
            "--purpose",
            "居民服务",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id1 = app["id"].as_i64().unwrap();
    assert_eq!(app["state"], "submitted");
    let today = today_in_shanghai();
    assert_eq!(app["submitted_on"], today.to_string());
    // Ten working days by the 2026 calendar (weekends and holidays skipped).
    let due =
        chrono::NaiveDate::parse_from_str(app["answer_due"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let mut d = today;
    let mut n = 0;
    while n < 10 {
        d = d.succ_opt().unwrap();
        if !matches!(
            chrono::Datelike::weekday(&d),
            chrono::Weekday::Sat | chrono::Weekday::Sun
        ) {
            n += 1;
        }
    }
    assert_eq!(due, d, "no 2026 public holiday falls in these two weeks");

    // Who may answer: not the agency, not another department.
    let answer = |fields: Value| json!({ "decision": "approve", "fields": fields, "note": "only what the service needs" });
    let p = format!("/applications/{id1}/answer");
    assert_eq!(
        api(&w, "POST", &p, Some(&tianhe), Some(answer(json!(null))))
            .await
            .0,
        403
    );
    assert_eq!(
        api(&w, "POST", &p, Some(&commerce), Some(answer(json!(null))))
            .await
            .0,
        403
    );
    // Nor grant a field that was not asked for.
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&police),
        Some(answer(json!(["citizen_id_number", "ethnicity"]))),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Police approves two of the four fields.
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&police),
        Some(answer(json!(["citizen_id_number", "sex"]))),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "closed");
    assert_eq!(v["outcome"], "partially_granted");
    assert_eq!(v["closed_by"], "department");
    assert!(v["grant_due"].as_str().unwrap() > today.to_string().as_str());
    // The grant is in force without a restart, and the existing records are replayed to tianhe.
    let replayed = w.tail("tianhe", 20).await;
    assert_eq!(replayed.len(), 20);
    assert!(
        fields(&replayed)
            .iter()
            .all(|f| f == &["citizen_id_number", "sex"]),
        "{:?}",
        fields(&replayed)[0]
    );
    // New records flow live under the grant, with only those two fields.
    let cfg = w.police(20, 25, 1);
    w.run_adapter(&cfg);
    let live = w.tail("tianhe", 5).await;
    assert!(fields(&live)
        .iter()
        .all(|f| f == &["citizen_id_number", "sex"]));
    assert!(replayed
        .iter()
        .chain(&live)
        .all(|l| l["grant"] == format!("app-{id1}").as_str()));
    // The application's record shows each step, the replay among them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let (_, v) = api(
            &w,
            "GET",
            &format!("/applications/{id1}"),
            Some(&tianhe),
            None,
        )
        .await;
        let actions: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        if actions.iter().any(|a| a == "replayed") || Instant::now() > deadline {
            break v["events"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["applied", "partially_granted", "replayed"],
        "{events}"
    );
    assert!(
        events[2]["note"].as_str().unwrap().contains("20 delivered"),
        "{events}"
    );
    // Another agency cannot see tianhe's application.
    assert_eq!(
        api(
            &w,
            "GET",
            &format!("/applications/{id1}"),
            Some(&hrss),
            None
        )
        .await
        .0,
        404
    );

    // 2. hrss applies; nobody answers. Its application is moved back to 2 November 2026, so
    // its 10 working days ended on 16 November.
    let (s, v) = api(&w, "POST", "/applications", Some(&hrss), Some(json!({
        "item": "household", "fields": ["citizen_id_number", "status"], "legal_basis": "社会保险法", "purpose": "参保登记"
    }))).await;
    assert_eq!(s, 201, "{v}");
    let id2 = v["id"].as_i64().unwrap();
    let pool = w.pg().await;
    sqlx::query("UPDATE applications SET submitted_on = '2026-11-02', answer_due = '2026-11-16' WHERE id = $1")
        .bind(id2)
        .execute(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (_, v) = api(
            &w,
            "GET",
            &format!("/applications/{id2}"),
            Some(&coordinator),
            None,
        )
        .await;
        if v["application"]["state"] == "escalated" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["application"]["state"], "escalated", "{v}");
    assert_eq!(
        v["application"]["escalation"],
        "no answer within 10 working days"
    );
    assert!(v["events"][1]["note"]
        .as_str()
        .unwrap()
        .contains("no answer by 2026-11-16"));
    // A late answer is refused: the coordinator has it now.
    let (s, v) = api(
        &w,
        "POST",
        &format!("/applications/{id2}/answer"),
        Some(&police),
        Some(answer(json!(null))),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    // Only the coordinator mediates; mediation fails; the decision refuses.
    let resolve = |stage: &str, result: &str| json!({ "stage": stage, "result": result, "note": "公安与人社未达成一致" });
    let p = format!("/applications/{id2}/resolve");
    assert_eq!(
        api(
            &w,
            "POST",
            &p,
            Some(&police),
            Some(resolve("mediation", "disputed"))
        )
        .await
        .0,
        403
    );
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&coordinator),
        Some(resolve("mediation", "disputed")),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("disputed")), "{v}");
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&coordinator),
        Some(resolve("mediation", "grant")),
    )
    .await;
    assert_eq!(s, 409, "mediation is over: {v}");
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&coordinator),
        Some(resolve("decision", "refuse")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["outcome"].as_str(), v["closed_by"].as_str()),
        (Some("refused"), Some("decision"))
    );

    // 3. civil applies for enterprise data; commerce refuses; mediation grants it.
    let (s, v) = api(&w, "POST", "/applications", Some(&civil), Some(json!({
        "item": "enterprise", "fields": ["unified_social_credit_code", "name"], "legal_basis": "社会组织登记管理", "purpose": "核验"
    }))).await;
    assert_eq!(s, 201, "{v}");
    let id3 = v["id"].as_i64().unwrap();
    let p = format!("/applications/{id3}/answer");
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&commerce),
        Some(json!({ "decision": "refuse" })),
    )
    .await;
    assert_eq!(s, 400, "a refusal needs its reason: {v}");
    let (s, v) = api(
        &w,
        "POST",
        &p,
        Some(&commerce),
        Some(json!({ "decision": "refuse", "note": "涉及商业秘密" })),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("escalated")), "{v}");
    let (s, v) = api(
        &w,
        "POST",
        &format!("/applications/{id3}/resolve"),
        Some(&coordinator),
        Some(json!({
            "stage": "mediation", "result": "grant", "note": "名称和统一社会信用代码为公开信息"
        })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["outcome"].as_str(), v["closed_by"].as_str()),
        (Some("granted"), Some("mediation"))
    );

    // Outcomes are published to every token holder, including an agency not involved.
    let out = cli(&w, &w.api_token("agency", "health"), &["outcomes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for want in ["partially_granted", "refused", "granted"] {
        assert!(table.contains(want), "{table}");
    }
    assert_eq!(table.lines().count(), 4, "{table}");
    // Each agency lists only its own applications.
    let (_, v) = api(&w, "GET", "/applications", Some(&hrss), None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, v) = api(&w, "GET", "/applications", Some(&coordinator), None).await;
    assert_eq!(v.as_array().unwrap().len(), 3);

    // A restart keeps the workflow's grants in force (they are in PostgreSQL, not the file).
    w.router = None;
    w.start_router().await;
    let cfg = w.police(25, 27, 1);
    w.run_adapter(&cfg);
    let live = w.tail("tianhe", 2).await;
    assert_eq!(
        fields(&live),
        vec![vec!["citizen_id_number".to_string(), "sex".into()]; 2]
    );
    w.verify_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_record_is_corrected_for_every_past_recipient_still_granted() {
    let mut w = World::new().await;
    w.start_router().await;
    let hrss = w.api_token("agency", "hrss");
    let tianhe = w.api_token("agency", "tianhe");
    let civil = w.api_token("agency", "civil");
    let commerce = w.api_token("department", "commerce");
    let operator = w.api_token("operator", "ops");
    // Four enterprises: hrss and health get all four, tianhe the two in Tianhe (0 and 2).
    let cfg = w.commerce(0, 4);
    w.run_adapter(&cfg);
    let got = w.tail("hrss", 4).await;
    let uscc0 = common::uscc(0);
    let disputed = got
        .iter()
        .find(|l| l["record"]["unified_social_credit_code"] == uscc0.as_str())
        .unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Only the agency that received it can dispute it, and it must say what is wrong.
    let body = |problem: &str| json!({ "message_id": disputed, "problem": problem });
    let (s, v) = api(
        &w,
        "POST",
        "/disputes",
        Some(&civil),
        Some(body("名称错误")),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        api(&w, "POST", "/disputes", Some(&hrss), Some(body(" ")))
            .await
            .0,
        400
    );
    let (s, d) = api(
        &w,
        "POST",
        "/disputes",
        Some(&hrss),
        Some(body("企业名称与营业执照不符")),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_i64().unwrap();
    assert_eq!(
        (d["state"].as_str(), d["version"].as_i64()),
        (Some("open"), Some(1))
    );
    assert!(d["check_due"].as_str().unwrap() > today_in_shanghai().to_string().as_str());

    // The platform finds a data error: the department is told and sees the dispute.
    let finding = |cause: &str| json!({ "cause": cause, "note": "源数据名称录入错误" });
    assert_eq!(
        api(
            &w,
            "POST",
            &format!("/disputes/{id}/finding"),
            Some(&commerce),
            Some(finding("data"))
        )
        .await
        .0,
        403
    );
    let (s, v) = api(
        &w,
        "POST",
        &format!("/disputes/{id}/finding"),
        Some(&operator),
        Some(finding("data")),
    )
    .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (200, Some("with_department")),
        "{v}"
    );
    let (_, v) = api(&w, "GET", "/disputes", Some(&commerce), None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);

    // Meanwhile health's grant of enterprise data ends (yesterday).
    let yesterday = today_in_shanghai().pred_opt().unwrap();
    let cat = std::fs::read_to_string(w.path("catalogue.toml"))
        .unwrap()
        .replace(
            "id = \"health-enterprise\"\nrevision = 1",
            "id = \"health-enterprise\"\nrevision = 2",
        );
    let cat = cat.replacen(
        "purpose = \"卫生许可核验\"\nvalid_from = 2026-01-01\n",
        &format!(
            "purpose = \"卫生许可核验\"\nvalid_from = 2026-01-01\nvalid_until = {yesterday}\n"
        ),
        1,
    );
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
    w.await_metric(
        "govbus_router_catalogue_reloads_total 1",
        30,
        "the ended grant was not loaded",
    )
    .await;
    let health_before = w.count("agency.health").await;

    // Commerce publishes the corrected version through its adapter.
    let fix = format!(
        "uscc,name,rep,rep_id,division,address,established,version,op\n{uscc0},企业0有限责任公司,法人0,{},440106,某路0号,2015-03-01,2,U\n",
        common::citizen(100_000)
    );
    w.drop_csv("commerce", "enterprise-fix.csv", &fix);
    w.run_adapter(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let (_, v) = api(&w, "GET", &format!("/disputes/{id}"), Some(&hrss), None).await;
        if v["dispute"]["state"] == "closed" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d["dispute"]["outcome"], "corrected", "{d}");
    assert_eq!(d["dispute"]["corrected_version"], 2);
    // The report: every past recipient, who got the correction, who was left out and why.
    let recipients: Vec<(String, String)> = d["dispute"]["report"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["agency"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(recipients.len(), 3, "{recipients:?}");
    for (agency, status) in &recipients {
        match agency.as_str() {
            "hrss" | "tianhe" => assert_eq!(status, "has the corrected version 2"),
            "health" => assert!(
                status.starts_with("left out: holds no grant of enterprise in force"),
                "{status}"
            ),
            other => panic!("{other} never received the record"),
        }
    }
    // hrss got the corrected record; health got nothing more.
    let fixed = w.tail("hrss", 1).await;
    assert_eq!(fixed[0]["record"]["name"], "企业0有限责任公司");
    assert_eq!(w.count("agency.health").await, health_before);
    let actions: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "disputed",
            "found: data error",
            "department notified",
            "report archived and sent"
        ]
    );

    // A technical fault: the platform sends tianhe the record again at once.
    let t = w.tail("tianhe", 3).await; // records 0 (v1, v2) and 2
    let two = t
        .iter()
        .find(|l| l["record"]["unified_social_credit_code"] == common::uscc(2).as_str())
        .unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = api(
        &w,
        "POST",
        "/disputes",
        Some(&tianhe),
        Some(json!({ "message_id": two, "problem": "消费端解码失败，记录丢失" })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id2 = v["id"].as_i64().unwrap();
    let (s, v) = api(
        &w,
        "POST",
        &format!("/disputes/{id2}/finding"),
        Some(&operator),
        Some(json!({ "cause": "technical", "note": "投递队列故障" })),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("corrected")), "{v}");
    let again = w.tail("tianhe", 1).await;
    assert_eq!(
        again[0]["record"]["unified_social_credit_code"],
        common::uscc(2).as_str()
    );
    assert_ne!(
        again[0]["message_id"].as_str().unwrap(),
        two,
        "a new message id"
    );
    w.verify_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_and_requests_outside_the_catalogue() {
    let mut w = World::new().await;
    w.start_router().await;
    let civil = w.api_token("agency", "civil");
    let police = w.api_token("department", "police");
    let coordinator = w.api_token("coordinator", "wang");
    let person = |n: &str| json!({ "name": n, "phone": "020-8888 0000" });
    let contacts = |changed: Option<&str>| {
        json!({ "leader": person("张三"), "sharing_officer": person("李四"),
                "technical_officer": person("王五"), "changed_on": changed })
    };
    let today = today_in_shanghai();

    // Registered today: on time. A change made on Monday 2 November 2026 and reported today:
    // its 5 working days ended on Monday 9 November, so it is recorded as late.
    let (s, v) = api(&w, "POST", "/contacts", Some(&civil), Some(contacts(None))).await;
    assert_eq!((s, v["late"].as_bool()), (201, Some(false)), "{v}");
    assert_eq!(v["changed_on"], today.to_string());
    let (s, v) = api(
        &w,
        "POST",
        "/contacts",
        Some(&civil),
        Some(contacts(Some("2026-11-02"))),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["report_due"].as_str(), v["late"].as_bool()),
        (Some("2026-11-09"), Some(true))
    );
    // A contact without a telephone or e-mail, a change in the future: refused, saying why.
    let mut bad = contacts(None);
    bad["leader"] = json!({ "name": "张三" });
    let (s, v) = api(&w, "POST", "/contacts", Some(&civil), Some(bad)).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().starts_with("leader:"), "{v}");
    let tomorrow = today.succ_opt().unwrap().to_string();
    assert_eq!(
        api(
            &w,
            "POST",
            "/contacts",
            Some(&civil),
            Some(contacts(Some(&tomorrow)))
        )
        .await
        .0,
        400
    );
    // Contacts are read by the agency itself and the coordinator, not by a department.
    let (_, v) = api(&w, "GET", "/contacts", Some(&civil), None).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["leader"]["name"], "张三");
    assert_eq!(
        api(&w, "GET", "/contacts", Some(&coordinator), None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api(&w, "GET", "/contacts", Some(&police), None).await.0,
        403
    );

    // A request for data outside the catalogue, the two parties named, through the command line.
    let out = cli(
        &w,
        &civil,
        &[
            "--json",
            "apply",
            "--outside-department",
            "police",
            "--outside-data",
            "流动人口居住登记（姓名、居住地址）",
            "--legal-basis",
            "《广州市流动人口服务管理规定》",
            "--purpose",
            "婚姻登记核验",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = app["id"].as_i64().unwrap();
    assert_eq!(
        (app["item"].as_str(), app["departments"][0].as_str()),
        (Some(""), Some("police"))
    );
    // Police agrees: the outcome is recorded; nothing is routed until the catalogue lists the data.
    let (s, v) = api(
        &w,
        "POST",
        &format!("/applications/{id}/answer"),
        Some(&police),
        Some(json!({ "decision": "approve", "note": "同意，纳入下一版目录" })),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("granted")), "{v}");
    let pool = w.pg().await;
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(grants, 0);
    let (_, v) = api(
        &w,
        "GET",
        &format!("/applications/{id}"),
        Some(&civil),
        None,
    )
    .await;
    assert_eq!(v["events"][1]["action"], "agreed outside the catalogue");

    // The yearly report counts the contact reports and the late one.
    let out = Process::command("govbus")
        .args([
            "report",
            "--year",
            &chrono::Datelike::year(&today).to_string(),
            "--config",
        ])
        .arg(w.path("router.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.contains("contacts,civil,,,contact_reports,2\n"),
        "{csv}"
    );
    assert!(
        csv.contains("contacts,civil,,,contact_reports_late,1\n"),
        "{csv}"
    );
    assert!(
        csv.contains("applications_agency,civil,,,applications,1\n"),
        "{csv}"
    );
    assert!(!csv.contains("张三"), "no contact names in the report");
}

/// Two answers to one application at once (two approvals, or an approval and a refusal):
/// exactly one is recorded and the other gets 409 (not 503) and changes nothing; a grant exists
/// only when the approval won, and only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_answers_one_wins_the_other_gets_409() {
    let mut w = World::new().await;
    w.start_router().await;
    let tianhe = w.api_token("agency", "tianhe");
    let police = w.api_token("department", "police");
    let pool = w.pg().await;
    for round in 0..6 {
        let (s, v) = api(
            &w,
            "POST",
            "/applications",
            Some(&tianhe),
            Some(json!({
                "item": "household", "fields": ["citizen_id_number", "sex"],
                "legal_basis": "户口登记条例", "purpose": "核验"
            })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_i64().unwrap();
        let p = format!("/applications/{id}/answer");
        let approve = json!({ "decision": "approve", "note": "同意" });
        let other = if round % 2 == 0 {
            approve.clone()
        } else {
            json!({ "decision": "refuse", "note": "不同意" })
        };
        let (a, b) = tokio::join!(
            api(&w, "POST", &p, Some(&police), Some(approve)),
            api(&w, "POST", &p, Some(&police), Some(other)),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}: {a:?} / {b:?}");
        let (winner, loser) = if a.0 == 200 {
            (&a.1, &b.1)
        } else {
            (&b.1, &a.1)
        };
        assert!(
            loser["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("application {id}"))),
            "{loser}"
        );
        let grants: i64 =
            sqlx::query_scalar("SELECT count(*) FROM workflow_grants WHERE application = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        let approved = winner["outcome"] == "granted";
        assert_eq!(
            grants,
            i64::from(approved),
            "round {round}: grants for a winner {winner}"
        );
        let (_, now) = api(
            &w,
            "GET",
            &format!("/applications/{id}"),
            Some(&police),
            None,
        )
        .await;
        let state = now["application"]["state"].as_str();
        assert_eq!(
            state,
            Some(if approved { "closed" } else { "escalated" }),
            "{now}"
        );
    }
}
