//! The agency starter kits, run against a live router: each connects with an agency's
//! provisioning file, verifies the platform signature, decodes by fingerprint via `/schemas`,
//! and acks.
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{citizen, World};
use govbus_tests::{python, workspace_root};

/// The file `govbus provision` would write for `agency`, pointed at this world.
fn env_file(w: &World, agency: &str) -> PathBuf {
    let key = std::fs::read_to_string(w.path("platform/platform-test.pub")).unwrap();
    let path = w.path(&format!("{agency}.env"));
    std::fs::write(
        &path,
        format!(
            "GOVBUS_ROLE=agency\nGOVBUS_AGENCY={agency}\nGOVBUS_QUEUE=agency.{agency}\n\
             GOVBUS_DEAD_LETTER_QUEUE=agency.{agency}.dlq\nGOVBUS_PLATFORM_KEY_ID=platform-test\n\
             GOVBUS_PLATFORM_PUBLIC_KEY={}\nGOVBUS_ROUTER_URL={}\nGOVBUS__AMQP__URL={}\n",
            key.trim(),
            w.url(""),
            w.vhost.amqp_url
        ),
    )
    .unwrap();
    path
}

/// Five police records under the provisioned platform key; then a platform key rotation
/// (`platform-2027`, endorsed by `platform-test`) and five more. The env files keep the old key.
async fn deliveries_across_a_platform_key_rotation(w: &mut World) {
    w.start_router().await;
    let cfg = w.police(0, 5, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    w.rotate_platform_key().await;
    let cfg = w.police(5, 10, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
}

/// Ten police records, five signed with the provisioned platform key and five after a rotation
/// with the new key, which the kit learnt from `/keys` through the old key's endorsement: civil
/// (full grant) sees them with names and ID numbers and without ungranted fields; health
/// (pseudonym grant) sees pseudonyms and no names.
fn check_kit_output(civil: &[serde_json::Value], health: &[serde_json::Value]) {
    assert_eq!(civil.len(), 10);
    let mut ids: Vec<&str> = civil
        .iter()
        .map(|l| l["record"]["citizen_id_number"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..10).map(citizen).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(civil.iter().all(|l| l["grant"] == "civil-household"
        && l["record"].get("ethnicity").is_none()
        && l["record"]["name"].as_str().unwrap().starts_with("居民")));
    assert_eq!(health.len(), 10);
    assert!(health.iter().all(|l| {
        let id = l["record"]["citizen_id_number"].as_str().unwrap();
        id.starts_with("pgb1_") && l["record"].get("name").is_none()
    }));
}

fn lines(out: std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "the kit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kit_reads_full_and_pseudonymised_deliveries() {
    let python = python().unwrap();
    let mut w = World::new().await;
    deliveries_across_a_platform_key_rotation(&mut w).await;
    let kit = workspace_root().join("examples/agency-python/agency.py");
    let run = |agency: &str, count: &str| {
        let out = Command::new(&python)
            .arg(&kit)
            .arg("--env-file")
            .arg(env_file(&w, agency))
            .args(["--count", count, "--idle-seconds", "20"])
            .output()
            .unwrap();
        lines(out)
    };
    let civil = run("civil", "10");
    let health = run("health", "10");
    check_kit_output(&civil, &health);
    // `govbus schemas export --agency` writes exactly the writer schemas the agency receives.
    let dir = w.path("health-schemas");
    let status = govbus_tests::Process::command("govbus")
        .args(["schemas", "export", "--agency", "health", "--catalogue"])
        .arg(w.path("catalogue.toml"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.len(), 2, "health holds two grants: {index:?}");
    let household = index.iter().find(|g| g["item"] == "household").unwrap();
    assert!(health
        .iter()
        .all(|l| l["fingerprint"] == household["fingerprint"]));
    assert!(dir.join(household["file"].as_str().unwrap()).exists());
    assert_eq!(w.count("agency.civil").await, 0, "the kit acked");
    assert_eq!(w.count("agency.civil.dlq").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kit_reads_full_and_pseudonymised_deliveries() {
    let mut w = World::new().await;
    deliveries_across_a_platform_key_rotation(&mut w).await;
    let kit = workspace_root().join("examples/agency-java/run.sh");
    let build = w.path("java-build");
    let run = |agency: &str, count: &str| {
        let out = Command::new(&kit)
            .env("AGENCY_JAVA_BUILD", &build)
            .arg("--env-file")
            .arg(env_file(&w, agency))
            .args(["--count", count, "--idle-seconds", "30"])
            .output()
            .expect(
                "run examples/agency-java/run.sh (needs a JDK 17: apt-get install default-jdk)",
            );
        lines(out)
    };
    let civil = run("civil", "10");
    let health = run("health", "10");
    check_kit_output(&civil, &health);
    assert_eq!(w.count("agency.health").await, 0, "the kit acked");
    assert_eq!(w.count("agency.health.dlq").await, 0);
}
