//! `govbus backup` / `govbus restore`: a backup restored into a fresh database verifies, holds
//! every row, and a router on it carries on the same ledger chains; a damaged backup or a
//! database already in use is refused before anything changes.
mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use common::World;
use govbus_tests::{Process, Services, TestDatabase};

fn govbus(args: &[&str], config: &Path) -> std::process::Output {
    govbus_tests::output_within(
        Process::command("govbus")
            .args(args)
            .arg("--config")
            .arg(config),
        120,
        &format!("govbus {}", args[0]),
    )
}

fn text(out: &std::process::Output) -> String {
    govbus_tests::combined(out)
}

/// Every table's rows, as sorted text, to compare two databases.
async fn dump(url: &str) -> Vec<(String, Vec<String>)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()
           AND tablename <> '_sqlx_migrations' ORDER BY tablename",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        // Table names from pg_tables: plain identifiers.
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {t} t ORDER BY 1"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        out.push((t, rows));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_verifies_and_carries_on() {
    let mut w = World::new().await;
    w.start_router().await;
    let police = w.police(0, 40, 1);
    w.run_adapter(&police);
    let commerce = w.commerce(0, 25);
    w.run_adapter(&commerce);
    w.settle(Duration::from_millis(500)).await;
    let original = dump(&w.db.url).await;
    let ledger_rows = original
        .iter()
        .find(|(t, _)| t == "ledger")
        .map(|(_, r)| r.len())
        .unwrap();
    assert!(ledger_rows >= 65, "only {ledger_rows} ledger rows");
    assert!(
        original
            .iter()
            .any(|(t, r)| t == "catalogue_versions" && r.len() == 1),
        "the catalogue in force is kept"
    );

    // The backup, taken while the router runs.
    let dir = w.path("backup-1");
    let out = govbus(
        &["backup", "--out", dir.to_str().unwrap()],
        &w.path("router.toml"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("({ledger_rows} ledger rows)")),
        "{}",
        text(&out)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("tables/ledger.csv")), 0o600);
    assert_eq!(mode(&dir.join("files/catalogue.toml")), 0o600);
    let sums = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(sums.status.success(), "sha256sum -c: {}", text(&sums));
    // A second backup into the same folder is refused.
    let again = govbus(
        &["backup", "--out", dir.to_str().unwrap()],
        &w.path("router.toml"),
    );
    assert!(!again.status.success());
    assert!(text(&again).contains("is not empty"), "{}", text(&again));

    // Restore into a fresh database, with the catalogue file lost.
    let services = Services::from_env();
    let fresh = TestDatabase::create(&services).await.unwrap();
    let router_toml = std::fs::read_to_string(w.path("router.toml")).unwrap();
    let restored_cfg = w.path("restored/router.toml");
    std::fs::create_dir_all(w.path("restored")).unwrap();
    std::fs::write(
        &restored_cfg,
        router_toml
            .replace(&w.db.url, &fresh.url)
            .replace("catalogue = \"catalogue.toml\"", "catalogue = \"cat.toml\"")
            .replace("\"platform/", "\"../platform/"),
    )
    .unwrap();
    let out = govbus(&["restore", "--from", dir.to_str().unwrap()], &restored_cfg);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(w.path("restored/cat.toml")).unwrap(),
        std::fs::read(w.path("catalogue.toml")).unwrap(),
        "the lost catalogue file is written back"
    );
    let verify = Process::command("govbus")
        .args(["ledger", "verify", "--database-url", &fresh.url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains(&format!("ledger ok: {ledger_rows} rows")),
        "{}",
        text(&verify)
    );
    let restored = dump(&fresh.url).await;
    assert_eq!(
        restored.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        original.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    for ((t, a), (_, b)) in original.iter().zip(&restored) {
        assert_eq!(a.len(), b.len(), "rows of {t}");
        assert!(a == b, "table {t} differs after restore");
    }

    // Restoring again over it is refused: the database holds govbus data now.
    let out = govbus(&["restore", "--from", dir.to_str().unwrap()], &restored_cfg);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already holds govbus data"),
        "{}",
        text(&out)
    );

    // A damaged backup is refused, naming the file, before the database is touched.
    let damaged = w.path("backup-damaged");
    std::fs::create_dir_all(damaged.join("tables")).unwrap();
    std::fs::create_dir_all(damaged.join("files")).unwrap();
    for e in walk(&dir) {
        let rel = e.strip_prefix(&dir).unwrap();
        std::fs::copy(&e, damaged.join(rel)).unwrap();
    }
    let ledger_csv = damaged.join("tables/ledger.csv");
    let mut bytes = std::fs::read(&ledger_csv).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&ledger_csv, bytes).unwrap();
    let empty = TestDatabase::create(&services).await.unwrap();
    let empty_cfg = w.path("restored/empty.toml");
    std::fs::write(
        &empty_cfg,
        std::fs::read_to_string(&restored_cfg)
            .unwrap()
            .replace(&fresh.url, &empty.url),
    )
    .unwrap();
    let out = govbus(
        &["restore", "--from", damaged.to_str().unwrap()],
        &empty_cfg,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tables/ledger.csv: checksum")
            && text(&out).contains("nothing was restored"),
        "{}",
        text(&out)
    );
    let pool = sqlx::PgPool::connect(&empty.url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0, "a damaged backup changed the database");
    pool.close().await;

    // A router on the restored database carries on the same chains.
    if let Some(r) = w.router.take() {
        r.terminate();
    }
    std::fs::write(
        w.path("router.toml"),
        router_toml.replace(&w.db.url, &fresh.url),
    )
    .unwrap();
    let old = std::mem::replace(&mut w.db, fresh);
    w.start_router().await;
    let more = w.police(40, 60, 1);
    w.run_adapter(&more);
    w.settle(Duration::from_millis(500)).await;
    let verify = Process::command("govbus")
        .args(["ledger", "verify", "--database-url", &w.db.url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    let pool = w.pg().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        rows > ledger_rows as i64,
        "no new ledger rows after the restore"
    );
    pool.close().await;
    drop(old);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
