//! Secrets (passwords in URLs, private keys, HMAC secrets) never appear in logs, `--check`
//! output or error messages, even at debug level; the files holding them are written 0600.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::World;
use govbus_tests::{combined, output_within, Process};

/// Every secret a world's police adapter and router hold, as text.
fn secrets(w: &World) -> Vec<String> {
    [
        "keys/police/police-2026.key",
        "keys/police/id-secret",
        "platform/platform-test.key",
        "platform/id-secret",
        "platform/pseudonym-secret",
    ]
    .iter()
    .map(|p| {
        std::fs::read_to_string(w.path(p))
            .unwrap()
            .trim()
            .to_string()
    })
    .collect()
}

fn assert_clean(out: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(!out.contains(s.as_str()), "{what} shows a secret:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_check_output_and_errors() {
    let w = World::new().await;
    let cfg = w.police(0, 5, 1);
    let mut all = secrets(&w);
    let text = std::fs::read_to_string(&cfg).unwrap();

    // `--check` at debug level: the records it would publish, no key material.
    let out = output_within(
        Process::command("govbus-adapter")
            .env("RUST_LOG", "debug")
            .arg("--config")
            .arg(&cfg)
            .arg("--check"),
        60,
        "govbus-adapter --check",
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert_clean(&combined(&out), &all, "--check");

    // A wrong broker password: the error names the broker, not the password.
    let password = "Wr0ng-pw-7f3a91";
    all.push(password.into());
    let bad = w.path("adapters/police/bad-password.toml");
    std::fs::write(
        &bad,
        text.replace("amqp://guest:guest@", &format!("amqp://guest:{password}@")),
    )
    .unwrap();
    let out = output_within(
        Process::command("govbus-adapter")
            .env("RUST_LOG", "debug")
            .arg("--config")
            .arg(&bad)
            .arg("--check"),
        60,
        "govbus-adapter --check with a wrong password",
    );
    let shown = combined(&out);
    assert!(!out.status.success());
    assert!(shown.contains("guest:***@"), "{shown}");
    assert_clean(&shown, &all, "a broker error");

    // The router with a wrong database password, at debug level.
    let db_password = "Db-pw-55e1c0";
    all.push(db_password.into());
    let router = std::fs::read_to_string(w.path("router.toml")).unwrap();
    let base = w.db.url.replace(
        "postgres://postgres@",
        &format!("postgres://postgres:{db_password}@"),
    );
    std::fs::write(
        w.path("router-bad.toml"),
        router.replace(&w.db.url, &format!("{base}x_missing")),
    )
    .unwrap();
    let out = output_within(
        Process::command("govbus-router")
            .env("RUST_LOG", "debug")
            .arg("--config")
            .arg(w.path("router-bad.toml")),
        60,
        "govbus-router with a wrong database",
    );
    let shown = combined(&out);
    assert!(!out.status.success());
    assert!(shown.contains("cannot connect to PostgreSQL"), "{shown}");
    assert_clean(&shown, &all, "a database error");

    // Files holding secrets are 0600.
    let dir = w.path("fresh-platform");
    let out = output_within(
        Process::command("govbus").args([
            "keygen",
            "--out",
            dir.to_str().unwrap(),
            "--key-id",
            "platform-x",
        ]),
        60,
        "govbus keygen",
    );
    assert!(out.status.success(), "{}", combined(&out));
    for f in ["platform-x.key", "id-secret", "pseudonym-secret"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let printed = combined(&out);
    let private = std::fs::read_to_string(dir.join("platform-x.key")).unwrap();
    assert!(
        !printed.contains(private.trim()),
        "keygen printed the private key"
    );
}
