//! `govbus replay`: an agency newly granted an item gets the latest version of each record
//! that arrived before, under its grant as it stands now, marked and in the ledger.
mod common;

use std::time::Duration;

use bus_schemas::wire::header;
use common::{uscc, World};
use govbus_tests::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_granted_agency_gets_the_latest_version_of_each_record() {
    let mut w = World::new().await;
    w.start_router().await;
    // civil's grant of tax registrations ended in 2025: it gets none of these.
    let cfg = w.localtax(0, 30);
    w.run_adapter(&cfg);
    // Version 2 of the first ten, with a new address.
    let mut csv = String::from("tid,uscc,address,date,version,op\n");
    for n in 0..10 {
        csv.push_str(&format!(
            "{},{},新址{n}号,2016-01-01,2,U\n",
            uscc(n),
            uscc(n)
        ));
    }
    w.drop_csv("localtax", "registration-v2.csv", &csv);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(500)).await;
    assert_eq!(w.count("agency.civil").await, 0);
    assert_eq!(
        w.drain("agency.hrss", Duration::from_millis(300))
            .await
            .len(),
        40
    );

    // Replaying while the grant has ended is refused, naming why.
    let replay = |w: &World| {
        Process::command("govbus")
            .args([
                "replay",
                "--agency",
                "civil",
                "--item",
                "registration",
                "--config",
            ])
            .arg(w.path("router.toml"))
            .output()
            .unwrap()
    };
    let out = replay(&w);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("holds no grant of item registration in force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The grant is renewed (revision 3, open-ended); the router reloads it.
    let cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    let cat = cat
        .replace(
            "id = \"civil-registration\"\nrevision = 2",
            "id = \"civil-registration\"\nrevision = 3",
        )
        .replace(
            "valid_from = 2024-01-01\nvalid_until = 2025-12-31",
            "valid_from = 2024-01-01",
        );
    std::fs::write(w.path("catalogue.toml"), cat).unwrap();
    w.await_metric(
        "govbus_router_catalogue_reloads_total 1",
        30,
        "the renewed grant was not loaded",
    )
    .await;

    let out = replay(&w);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("30 latest records of registration; 30 delivered to civil"),
        "{text}"
    );
    let civil = w.drain("agency.civil", Duration::from_millis(500)).await;
    assert_eq!(civil.len(), 30, "one delivery per record");
    let replay_id = civil[0].header_str("govbus-replay");
    assert!(replay_id.starts_with("replay-"));
    assert!(civil
        .iter()
        .all(|g| g.header_str("govbus-replay") == replay_id
            && g.header_str(header::GRANT) == "civil-registration"
            && g.header_i64(header::GRANT_REVISION) == 3));
    let v2 = civil
        .iter()
        .filter(|g| g.header_i64(header::VERSION) == 2)
        .count();
    assert_eq!(v2, 10, "the latest version of the changed records");
    let pool = w.pg().await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE agency = 'civil' AND replay = $1")
            .bind(&replay_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 30);
    // Replay again: new message ids, so a consumer that lost its data gets them all; civil
    // reads them as deliveries like any other: verified, decoded, granted fields only.
    let out = replay(&w);
    assert!(out.status.success());
    let lines = w.tail("civil", 30).await;
    // --since a day after today selects nothing; --since long ago selects every record.
    let since = |day: &str| {
        let out = Process::command("govbus")
            .args([
                "replay",
                "--agency",
                "civil",
                "--item",
                "registration",
                "--since",
                day,
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
        String::from_utf8(out.stdout).unwrap()
    };
    let tomorrow =
        (bus_schemas::validate::today_in_shanghai() + chrono::Duration::days(1)).to_string();
    assert!(
        since(&tomorrow).contains(": 0 latest records"),
        "{}",
        since(&tomorrow)
    );
    assert!(since("2000-01-01").contains(": 30 latest records"));
    assert_eq!(
        w.drain("agency.civil", Duration::from_millis(500))
            .await
            .len(),
        30
    );
    assert_eq!(lines.len(), 30);
    assert!(lines.iter().all(|l| {
        let r = l["record"].as_object().unwrap();
        r.len() == 2 && r.contains_key("taxpayer_id") && r.contains_key("registered_address")
    }));
    w.verify_ledger();
}
