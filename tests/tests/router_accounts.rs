//! `govbus provision`: accounts with exactly the wire contract's permissions, checked by
//! trying what each account must not do on the real broker.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::{
    connect, consume_refused, env_value, provision, provision_with, publish_refused, Accounts,
    World,
};
use govbus_tests::{unique_name, Process};
use lapin::{Connection, ConnectionProperties};

/// Agency A cannot consume agency B's queue; a department cannot publish under another's
/// routing keys, not even one whose id starts with its own; a second run changes nothing; an
/// agency removed from the catalogue loses its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_have_exactly_the_wire_contract_permissions() {
    let mut w = World::new().await;
    // Two departments whose ids are prefixes of each other.
    let police_pub = std::fs::read_to_string(w.path("keys/police/police-2026.pub")).unwrap();
    let mut cat = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
    for id in ["tax", "taxation"] {
        cat.push_str(&format!("\n[[department]]\nid = \"{id}\"\nname = \"{id}\"\nkeys = {{ \"{id}-2026\" = \"{}\" }}\n", police_pub.trim()));
    }
    std::fs::write(w.path("catalogue.toml"), &cat).unwrap();
    w.start_router().await;
    let prefix = format!("{}-", unique_name("t").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());

    let first = provision(&w, &prefix);
    assert!(first.contains("created"), "{first}");
    let acc = w.path("accounts");
    for f in [
        "agencies/civil.env",
        "agencies/health.env",
        "departments/police.env",
        "departments/taxation.env",
        "router.env",
    ] {
        let mode = std::fs::metadata(acc.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(
        env_value(&acc.join("agencies/civil.env"), "GOVBUS_QUEUE"),
        "agency.civil"
    );
    assert_eq!(
        env_value(
            &acc.join("agencies/civil.env"),
            "GOVBUS_PLATFORM_PUBLIC_KEY"
        ),
        std::fs::read_to_string(w.path("platform/platform-test.pub"))
            .unwrap()
            .trim()
    );

    let civil = connect(&acc.join("agencies/civil.env")).await;
    assert!(
        !consume_refused(&civil, "agency.civil").await,
        "civil reads its own queue"
    );
    assert!(
        !consume_refused(&civil, "agency.civil.dlq").await,
        "civil reads its dead letters"
    );
    assert!(
        consume_refused(&civil, "agency.health").await,
        "civil must not read health's queue"
    );
    assert!(consume_refused(&civil, "govbus.router.0").await);
    assert!(
        publish_refused(&civil, "police.household.7").await,
        "an agency publishes nothing"
    );

    let police = connect(&acc.join("departments/police.env")).await;
    assert!(
        !publish_refused(&police, "police.household.7").await,
        "police publishes its own item"
    );
    assert!(
        publish_refused(&police, "localtax.registration.7").await,
        "police must not publish as localtax"
    );
    assert!(
        publish_refused(&police, "police.household").await,
        "an ingest key without a shard is refused"
    );
    assert!(
        publish_refused(&police, "police.household.7.1").await,
        "the shard ends the key"
    );
    assert!(
        publish_refused(&police, "policex.household.7").await,
        "police must not publish as policex"
    );
    assert!(
        publish_refused(&police, "police.household.100").await,
        "a shard has at most two digits"
    );
    assert!(consume_refused(&police, "agency.civil").await);
    assert!(!consume_refused(&police, "quarantine.police").await);
    let tax = connect(&acc.join("departments/tax.env")).await;
    assert!(!publish_refused(&tax, "tax.registration.7").await);
    assert!(
        publish_refused(&tax, "taxation.registration.7").await,
        "tax must not publish under taxation's keys"
    );

    // Again: nothing changes.
    let before = std::fs::read_to_string(acc.join("agencies/civil.env")).unwrap();
    let second = provision(&w, &prefix);
    assert!(
        second.contains(" 0 created") && second.contains(" 0 revoked"),
        "{second}"
    );
    assert_eq!(
        std::fs::read_to_string(acc.join("agencies/civil.env")).unwrap(),
        before
    );
    let civil_again = connect(&acc.join("agencies/civil.env")).await;
    assert!(!consume_refused(&civil_again, "agency.civil").await);

    // Tianhe leaves the catalogue: its account goes.
    let tianhe_url = env_value(&acc.join("agencies/tianhe.env"), "GOVBUS__AMQP__URL");
    let cut = cat.find("[[agency]]\nid = \"tianhe\"").unwrap();
    let end = cut + cat[cut..].find("\n[[").unwrap() + 1;
    let mut without = format!("{}{}", &cat[..cut], &cat[end..]);
    let g = without
        .find("[[grant]]\nid = \"tianhe-enterprise\"")
        .unwrap();
    let gend = g + without[g..].find("\n[[").unwrap() + 1;
    without.replace_range(g..gend, "");
    std::fs::write(w.path("catalogue.toml"), without).unwrap();
    let third = provision(&w, &prefix);
    assert!(
        third.contains(&format!("revoked {prefix}agency-tianhe")),
        "{third}"
    );
    assert!(!acc.join("agencies/tianhe.env").exists());
    assert!(
        Connection::connect(&tianhe_url, ConnectionProperties::default())
            .await
            .is_err(),
        "a revoked account cannot log in"
    );
}

/// `GET /api/applications` with `token`: (status, body).
async fn applications(w: &World, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(w.api_url("/api/applications"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `govbus provision --platform-id-secret` writes a workflow API token into account files
/// that exist already (after an expiry or an id secret rotation), password untouched; the
/// token works until `govbus workflow token revoke` withdraws it, and only that token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_reissues_api_tokens_and_a_revoked_token_is_refused() {
    let mut w = World::new().await;
    w.start_router().await;
    let prefix = format!("{}-", unique_name("t").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());
    provision(&w, &prefix);
    let civil = w.path("accounts/agencies/civil.env");
    let police = w.path("accounts/departments/police.env");
    let password = env_value(&civil, "GOVBUS_PASSWORD");
    assert!(!std::fs::read_to_string(&civil)
        .unwrap()
        .contains("GOVBUS_API_TOKEN"));

    let secret = w.path("platform/id-secret");
    let out = provision_with(
        &w,
        &prefix,
        &["--platform-id-secret".as_ref(), secret.as_os_str()],
    );
    assert!(out.contains("API tokens re-issued"), "{out}");
    assert_eq!(
        env_value(&civil, "GOVBUS_PASSWORD"),
        password,
        "the password stays"
    );
    let token = env_value(&civil, "GOVBUS_API_TOKEN");
    let police_token = env_value(&police, "GOVBUS_API_TOKEN");
    assert_eq!(applications(&w, &token).await.0, 200);

    // Again: a fresh token replaces the line (one line, a new id), the old one still valid.
    provision_with(
        &w,
        &prefix,
        &["--platform-id-secret".as_ref(), secret.as_os_str()],
    );
    let text = std::fs::read_to_string(&civil).unwrap();
    assert_eq!(text.matches("GOVBUS_API_TOKEN=").count(), 1, "{text}");
    let newer = env_value(&civil, "GOVBUS_API_TOKEN");
    assert_ne!(newer, token);

    let out = Process::command("govbus")
        .args([
            "workflow",
            "token",
            "revoke",
            &token,
            "--database-url",
            &w.db.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let (status, body) = applications(&w, &token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    assert_eq!(applications(&w, &newer).await.0, 200, "only that token");
    assert_eq!(applications(&w, &police_token).await.0, 200);
}
