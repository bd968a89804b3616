//! Quarantine round trip: invalid rows are counted by reason, taken out to a file, corrected,
//! and sent back through the adapter's validation to the agencies granted them.
mod common;

use std::time::Duration;

use common::{citizen, World};
use govbus_tests::Process;

/// Drops three household rows whose ID numbers have a wrong check character.
fn drop_bad_rows(w: &World) {
    let mut csv = String::from("id,name,sex,ethnicity,status,version,op\n");
    for n in 10..13 {
        let mut bad = citizen(n);
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        csv.push_str(&format!("{bad},居民{n},男,汉族,正常,1,U\n"));
    }
    w.drop_csv("police", "household-bad.csv", &csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_rows_are_listed_exported_corrected_and_requeued() {
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 2, 1);
    drop_bad_rows(&w);
    w.run_adapter(&cfg);
    assert_eq!(w.count("quarantine.police").await, 3);

    let list = Process::command("govbus")
        .args([
            "quarantine",
            "list",
            "--department",
            "police",
            "--amqp-url",
            &w.vhost.amqp_url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(text.starts_with("3 rows in quarantine.police"), "{text}");
    assert!(text.contains("citizen_id_number"), "{text}");
    assert!(!text.contains("居民"), "no row is printed: {text}");
    assert_eq!(w.count("quarantine.police").await, 3, "listing leaves them");

    let file = w.path("quarantine.jsonl");
    let export = Process::command("govbus")
        .args([
            "quarantine",
            "export",
            "--department",
            "police",
            "--amqp-url",
            &w.vhost.amqp_url,
            "--out",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(export.success());
    assert_eq!(
        w.count("quarantine.police").await,
        0,
        "exported rows are taken out"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "rows hold personal data");
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["item"] == "household" && l["field"] == "citizen_id_number"));
    // The department corrects two rows and leaves one wrong.
    for l in lines.iter_mut().take(2) {
        let n: u64 = l["row"]["name"].as_str().unwrap()["居民".len()..]
            .parse()
            .unwrap();
        l["row"]["id"] = citizen(n).into();
    }
    let corrected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, corrected).unwrap();

    let out = Process::command("govbus-adapter")
        .arg("--config")
        .arg(&cfg)
        .arg("--requeue")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 published, 1 quarantined again"), "{err}");
    assert_eq!(w.count("quarantine.police").await, 1);
    w.settle(Duration::from_millis(500)).await;
    let civil = w.drain("agency.civil", Duration::from_millis(300)).await;
    assert_eq!(
        civil.len(),
        4,
        "the two valid rows and the two corrected ones"
    );
}

/// The router counts quarantined rows from bodiless count messages: `govbus.quarantine.counts`
/// never holds a row (its personal data goes only to the department's own queue), one count
/// message per row, and a department's queue takes no count message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_counts_carry_no_row() {
    let mut w = World::new().await;
    w.start_router().await; // declares the topology
                            // Stopped, so the count messages wait in their queue to be looked at.
    assert!(w.router.take().unwrap().terminate().success());
    let cfg = w.police(0, 2, 1);
    drop_bad_rows(&w);
    w.run_adapter(&cfg);
    assert_eq!(w.count("govbus.quarantine.counts").await, 3);
    let rows = w
        .drain("quarantine.police", Duration::from_millis(300))
        .await;
    assert_eq!(
        rows.len(),
        3,
        "the department's queue holds the rows, no count message"
    );
    assert!(rows.iter().all(|r| !r.body.is_empty()));
    let counts = w
        .drain("govbus.quarantine.counts", Duration::from_millis(300))
        .await;
    assert_eq!(counts.len(), 3);
    for c in &counts {
        assert!(
            c.body.is_empty(),
            "a count message carries no row: {:?}",
            c.body
        );
        assert_eq!(c.routing_key, "police.household.count");
        assert!(!c.headers.contains_key("govbus-source-position"));
    }
}
