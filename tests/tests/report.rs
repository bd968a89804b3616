//! `govbus report`: the yearly report's CSV agrees with the ledger, the workflow's tables and
//! itself; its HTML page, opened in headless Chromium, shows the same totals.
mod common;

use std::{collections::HashMap, time::Duration};

use bus_schemas::validate::today_in_shanghai;
use chrono::Datelike;
use common::World;
use govbus_tests::{chromium_dom, Process};
use serde_json::json;

async fn post(w: &World, path: &str, token: &str, body: serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(w.api_url(&format!("/api{path}")))
        .timeout(Duration::from_secs(60))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// `section,agency,department,item,measure` → value.
type Tidy = HashMap<(String, String, String, String, String), String>;

fn report(w: &World, extra: &[&str]) -> (String, Tidy) {
    let csv = w.path(&format!("report{}.csv", extra.len()));
    let html = w.path(&format!("report{}.html", extra.len()));
    let out = Process::command("govbus")
        .args(["report", "--year", &today_in_shanghai().year().to_string()])
        .arg("--config")
        .arg(w.path("router.toml"))
        .arg("--csv")
        .arg(&csv)
        .arg("--html")
        .arg(&html)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tidy = Tidy::new();
    let mut r = csv::Reader::from_path(&csv).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        tidy.insert(
            (
                rec[0].into(),
                rec[1].into(),
                rec[2].into(),
                rec[3].into(),
                rec[4].into(),
            ),
            rec[5].into(),
        );
    }
    (html.display().to_string(), tidy)
}

fn sum(t: &Tidy, section: &str, measure: &str) -> i64 {
    t.iter()
        .filter(|(k, _)| k.0 == section && k.4 == measure)
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum()
}

/// The number in the element with this id on the page.
fn dom_number(dom: &str, id: &str) -> i64 {
    let at = dom.find(&format!("id=\"{id}\">")).unwrap() + id.len() + 6;
    dom[at..dom[at..].find('<').unwrap() + at].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_yearly_report_agrees_with_the_ledger_and_shows_it() {
    let mut w = World::new().await;
    w.start_router().await;
    let police = w.police(0, 10, 1);
    // One row with an ID number that is no ID number: quarantined by the adapter.
    w.drop_csv(
        "police",
        "household-bad.csv",
        "id,name,sex,ethnicity,status,version,op\n12345,居民x,男,汉族,正常,1,U\n",
    );
    for cfg in [police, w.commerce(0, 4), w.localtax(0, 3)] {
        w.run_adapter(&cfg);
    }
    // tianhe applies for two household fields; police grants them; the 10 records are replayed.
    let app = post(
        &w,
        "/applications",
        &w.api_token("agency", "tianhe"),
        json!({ "item": "household", "fields": ["citizen_id_number", "sex"], "legal_basis": "第三十五条", "purpose": "居民服务" }),
    )
    .await;
    let id = app["id"].as_i64().unwrap();
    post(
        &w,
        &format!("/applications/{id}/answer"),
        &w.api_token("department", "police"),
        json!({ "decision": "approve" }),
    )
    .await;
    // hrss disputes an enterprise record; the check finds nothing wrong.
    let hrss = w.tail("hrss", 7).await;
    let enterprise = hrss
        .iter()
        .find(|l| l["item"] == "enterprise")
        .unwrap_or_else(|| panic!("{hrss:?}"));
    let d = post(
        &w,
        "/disputes",
        &w.api_token("agency", "hrss"),
        json!({ "message_id": enterprise["message_id"], "problem": "地址不对" }),
    )
    .await;
    post(
        &w,
        &format!("/disputes/{}/finding", d["id"]),
        &w.api_token("operator", "ops"),
        json!({ "cause": "unfounded", "note": "与登记一致" }),
    )
    .await;
    // Wait until the replay is in the ledger.
    let pool = w.pg().await;
    for _ in 0..150 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledger WHERE agency = 'tianhe' AND replay IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The router has counted the quarantined row.
    for _ in 0..150 {
        let n: Option<i64> = sqlx::query_scalar("SELECT sum(rows)::bigint FROM quarantine_daily")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.settle(Duration::from_millis(500)).await;

    let (html, t) = report(&w, &[]);
    let measure = |d: &str, i: &str, m: &str| {
        t.get(&(
            "department_item".into(),
            String::new(),
            d.into(),
            i.into(),
            m.into(),
        ))
        .cloned()
    };
    // The quarantined row: 1 of the 11 rows police's adapter read.
    assert_eq!(
        measure("police", "household", "quarantined").as_deref(),
        Some("1")
    );
    assert_eq!(
        measure("police", "household", "quarantine_rate").as_deref(),
        Some("0.0909")
    );
    assert_eq!(
        measure("commerce", "enterprise", "quarantined").as_deref(),
        Some("0")
    );
    // Every agency's and item's deliveries and replays are the ledger's.
    let rows = sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT agency, item, count(*) FILTER (WHERE replay IS NULL), count(*) FILTER (WHERE replay IS NOT NULL) FROM ledger GROUP BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(rows.len() >= 6, "{rows:?}");
    let get = |s: &str, a: &str, d: &str, i: &str, m: &str| {
        t.get(&(s.into(), a.into(), d.into(), i.into(), m.into()))
            .cloned()
            .unwrap_or_else(|| panic!("no {s},{a},{d},{i},{m} in the CSV"))
    };
    let dept_of = |item: &str| match item {
        "household" => "police",
        "enterprise" => "commerce",
        _ => "localtax",
    };
    for (agency, item, n, replayed) in &rows {
        let d = dept_of(item);
        assert_eq!(
            get("agency_item", agency, d, item, "deliveries"),
            n.to_string()
        );
        assert_eq!(
            get("agency_item", agency, d, item, "replayed"),
            replayed.to_string()
        );
    }
    assert_eq!(
        get("agency_item", "tianhe", "police", "household", "replayed"),
        "10"
    );
    // Timeliness: measured for deliveries as they arrived, within a realtime item's allowance.
    assert!(!get(
        "agency_item",
        "civil",
        "police",
        "household",
        "delay_p95_ms"
    )
    .is_empty());
    assert_eq!(
        get("agency_item", "civil", "police", "household", "timeliness"),
        "within"
    );
    // Departments: records routed, the dispute (not upheld).
    assert_eq!(
        get("department_item", "", "police", "household", "records"),
        "10"
    );
    assert_eq!(
        get("department_item", "", "commerce", "enterprise", "records"),
        "4"
    );
    assert_eq!(
        get("department_item", "", "commerce", "enterprise", "disputes"),
        "1"
    );
    assert_eq!(
        get(
            "department_item",
            "",
            "commerce",
            "enterprise",
            "disputes_upheld"
        ),
        "0"
    );
    // Applications: one by tianhe, answered in time, granted, in 0 working days.
    assert_eq!(
        get("applications_agency", "tianhe", "", "", "applications"),
        "1"
    );
    assert_eq!(
        get(
            "applications_department",
            "",
            "police",
            "",
            "answered_in_time"
        ),
        "1"
    );
    assert_eq!(get("applications_agency", "tianhe", "", "", "granted"), "1");
    assert_eq!(
        get(
            "applications_agency",
            "tianhe",
            "",
            "",
            "mean_answer_working_days"
        ),
        "0.0"
    );

    // The HTML page shows the CSV's totals, and each agency's row its deliveries.
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&format!("file://{html}")))
        .await
        .unwrap();
    assert_eq!(
        dom_number(&dom, "total-deliveries"),
        sum(&t, "agency_item", "deliveries")
    );
    assert_eq!(dom_number(&dom, "total-replayed"), 10);
    assert!(dom.contains("<svg"), "a chart");
    for (agency, item, n, _) in &rows {
        let row = format!("data-agency=\"{agency}\" data-item=\"{item}\"");
        let at = dom.find(&row).unwrap_or_else(|| panic!("no row {row}"));
        let cell = dom[at..].find("data-measure=\"deliveries\">").unwrap() + at + 26;
        assert_eq!(
            &dom[cell..cell + dom[cell..].find('<').unwrap()],
            n.to_string()
        );
    }
    // No name or ID number on the page.
    assert!(!dom.contains("居民0") && !dom.contains(&common::citizen(0)));

    // --agency hrss: only hrss's rows and its application figures.
    let (_, h) = report(&w, &["--agency", "hrss"]);
    assert!(h
        .keys()
        .filter(|k| k.0 == "agency_item")
        .all(|k| k.1 == "hrss"));
    assert_eq!(sum(&h, "agency_item", "deliveries"), 7);
}
