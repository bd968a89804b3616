//! Ledger checkpoints: the router signs each agency's chain head and delivers it; agencies keep
//! them (`govbus-agency tail --checkpoints DIR`); `govbus ledger verify --checkpoints DIR` passes while
//! the ledger holds what they were shown, and names a forged checkpoint and a ledger whose end
//! was cut off, which the hash chain alone cannot see.
mod common;

use std::time::{Duration, Instant};

use common::World;
use govbus_tests::Process;

fn verify(w: &World, dir: &std::path::Path) -> (bool, String) {
    // The platform's keys across rotations, comma-separated: here another key, then the one.
    let key = format!(
        "{},{}",
        std::fs::read_to_string(w.path("keys/police/police-2026.pub"))
            .unwrap()
            .trim(),
        std::fs::read_to_string(w.path("platform/platform-test.pub"))
            .unwrap()
            .trim()
    );
    let out = govbus_tests::output_within(
        Process::command("govbus")
            .args([
                "ledger",
                "verify",
                "--database-url",
                &w.db.url,
                "--checkpoints",
            ])
            .arg(dir)
            .args(["--platform-public-key", &key]),
        120,
        "govbus ledger verify --checkpoints",
    );
    (out.status.success(), govbus_tests::combined(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_keep_signed_chain_heads_that_catch_a_rewritten_ledger() {
    let mut w = World::new().await;
    w.edit(
        "router.toml",
        "watch_ms = 200",
        "watch_ms = 200\ncheckpoint_every_secs = 1",
    );
    w.start_router().await;
    let police = w.police(0, 30, 1);
    w.run_adapter(&police);
    let commerce = w.commerce(0, 20);
    w.run_adapter(&commerce);
    w.settle(Duration::from_millis(500)).await;

    let pool = w.pg().await;
    let heads: Vec<(String, i64)> =
        sqlx::query_as("SELECT agency, seq FROM ledger_heads WHERE seq > 0 ORDER BY agency")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(heads.len() >= 2, "{heads:?}");
    let dir = w.path("agency-checkpoints");
    let tails: Vec<Process> = heads
        .iter()
        .map(|(agency, _)| {
            let d = dir.join(agency);
            w.spawn_agency_tool("tail", agency, &["--checkpoints", d.to_str().unwrap()])
        })
        .collect();
    // Each agency's tail keeps the checkpoint of its current head.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (agency, seq) in &heads {
        let file = dir.join(agency).join(format!("{agency}-{seq:012}.json"));
        while !file.exists() {
            assert!(
                Instant::now() < deadline,
                "no checkpoint {} within 60 s",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for t in tails {
        t.terminate();
    }
    let (ok, text) = verify(&w, &dir);
    assert!(ok, "{text}");
    // Every file the tails kept was checked: one per agency at least (its current head), more
    // when a router slowed by a busy machine sent a checkpoint before the last deliveries.
    let kept: usize = heads
        .iter()
        .map(|(agency, _)| std::fs::read_dir(dir.join(agency)).unwrap().count())
        .sum();
    assert!(kept >= heads.len(), "{kept} checkpoint files");
    assert!(
        text.contains(&format!("checkpoints ok: {kept} checkpoint(s)")),
        "{text}"
    );

    // A checkpoint altered by hand is named and fails the check.
    let (agency, seq) = heads[0].clone();
    let real = dir.join(&agency).join(format!("{agency}-{seq:012}.json"));
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    let body = forged["body"]
        .as_str()
        .unwrap()
        .replace("\"hash\":\"", "\"hash\":\"00");
    forged["body"] = body.into();
    let forged_dir = w.path("forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    std::fs::write(
        forged_dir.join("forged.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let (ok, text) = verify(&w, &forged_dir);
    assert!(!ok);
    assert!(
        text.contains("forged.json: the platform signature (key platform-test) does not verify"),
        "{text}"
    );

    // A database administrator cuts the last delivery off the agency's chain and moves the head
    // back: the chain still verifies, the agency's checkpoint does not.
    let prev: Vec<u8> =
        sqlx::query_scalar("SELECT hash FROM ledger WHERE agency = $1 AND seq = $2")
            .bind(&agency)
            .bind(seq - 1)
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("DELETE FROM ledger WHERE agency = $1 AND seq = $2")
        .bind(&agency)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_heads SET seq = $2, hash = $3 WHERE agency = $1")
        .bind(&agency)
        .bind(seq - 1)
        .bind(&prev)
        .execute(&pool)
        .await
        .unwrap();
    let (ok, text) = verify(&w, &dir);
    assert!(!ok, "{text}");
    assert!(
        text.contains("ledger ok:"),
        "the chain alone passes: {text}"
    );
    assert!(
        text.contains(&format!(
            "checkpoint MISMATCH: {}: agency {agency} partition 0 has no row seq {seq}",
            real.display()
        )) && text.contains("rows were removed from the ledger"),
        "{text}"
    );
    // On demand: the moved head is checkpointed again.
    let out = govbus_tests::output_within(
        Process::command("govbus")
            .args(["ledger", "checkpoint", "--config"])
            .arg(w.path("router.toml")),
        60,
        "govbus ledger checkpoint",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pool.close().await;
}
