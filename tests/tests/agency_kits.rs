//! The agency starter kits, run against a live router: each connects with an agency's
//! provisioning file, verifies the platform signature, decodes by fingerprint via `/schemas`,
//! and acks.
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{citizen, Got, World};
use govbus_tests::{python, workspace_root};

/// The file `govbus provision` would write for `agency`, pointed at this world. Its broker
/// address lists a node that is down first, as a cluster's list can: the kit must go on to
/// the next.
fn env_file(w: &World, agency: &str) -> PathBuf {
    let key = std::fs::read_to_string(w.path("platform/platform-test.pub")).unwrap();
    let url = &w.vhost.amqp_url;
    let (authority_end, port_at) = {
        let start = url.find("://").unwrap() + 3;
        let end = start + url[start..].find('/').unwrap();
        (end, url[..end].rfind(':').unwrap())
    };
    let down = format!(
        "{}:{}{}",
        &url[..port_at],
        govbus_tests::free_port(),
        &url[authority_end..]
    );
    let path = w.path(&format!("{agency}.env"));
    std::fs::write(
        &path,
        format!(
            "GOVBUS_ROLE=agency\nGOVBUS_AGENCY={agency}\nGOVBUS_QUEUE=agency.{agency}\n\
             GOVBUS_DEAD_LETTER_QUEUE=agency.{agency}.dlq\nGOVBUS_PLATFORM_KEY_ID=platform-test\n\
             GOVBUS_PLATFORM_PUBLIC_KEY={}\nGOVBUS_ROUTER_URL={}\nGOVBUS__AMQP__URL={down},{url}\n",
            key.trim(),
            w.url(""),
        ),
    )
    .unwrap();
    path
}

/// Five police records under the provisioned platform key; then a platform key rotation
/// (`platform-2027`, endorsed by `platform-test`) and five more. The env files keep the old key.
/// Civil's queue then holds every batch-signature case first ([`World::publish_batch_cases`]),
/// then the router's ten deliveries again. Returns the cases.
async fn deliveries_across_a_platform_key_rotation(w: &mut World) -> common::BatchCases {
    w.start_router().await;
    let cfg = w.police(0, 5, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    w.rotate_platform_key().await;
    let cfg = w.police(5, 10, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    let real = w.drain("agency.civil", Duration::from_millis(300)).await;
    assert_eq!(real.len(), 10);
    let cases = w.publish_batch_cases("civil", &real[0]).await;
    let again: Vec<_> = real
        .iter()
        .map(|g| bus_schemas::amqp::OutgoingMessage {
            exchange: "govbus.deliver".into(),
            routing_key: "civil".into(),
            body: g.body.clone(),
            properties: lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(g.message_id.as_str().into())
                .with_headers({
                    let mut h = lapin::types::FieldTable::default();
                    for (k, v) in &g.headers {
                        h.insert(k.as_str().into(), v.clone());
                    }
                    h
                }),
        })
        .collect();
    w.publish(&again).await;
    cases
}

/// Splits a kit's civil lines into the router's deliveries and the good batches, checking
/// that no forgery was printed and every good batch was.
fn router_lines(
    lines: Vec<serde_json::Value>,
    cases: &common::BatchCases,
) -> Vec<serde_json::Value> {
    let id = |l: &serde_json::Value| l["message_id"].as_str().unwrap().to_string();
    assert!(
        lines.iter().all(|l| !id(l).starts_with("forged")),
        "a forgery was accepted"
    );
    let (batches, router): (Vec<_>, Vec<_>) =
        lines.into_iter().partition(|l| id(l).starts_with("batch"));
    assert_eq!(
        batches.len(),
        cases.good,
        "batches of 1, 2, 3, 5 and 1,024 verify"
    );
    router
}

/// After the platform key `platform-test` expired: a delivery under `platform-2027` (it
/// teaches the kit the listing), then one sealed with `platform-test`, which must be refused.
async fn expired_key_case(w: &mut World, template: &Got) {
    w.expire_previous_platform_key().await;
    let fresh = w.sealed_copies(
        template,
        "civil",
        &w.platform_signer("platform-2027"),
        "civil",
        "fresh",
        1,
    );
    let expired = w.sealed_copies(
        template,
        "civil",
        &w.platform_signer("platform-test"),
        "civil",
        "expired",
        1,
    );
    w.publish(&fresh).await;
    w.publish(&expired).await;
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
    let cases = deliveries_across_a_platform_key_rotation(&mut w).await;
    let kit = workspace_root().join("examples/agency-python/agency.py");
    let envs: std::collections::HashMap<&str, PathBuf> = ["civil", "health"]
        .into_iter()
        .map(|a| (a, env_file(&w, a)))
        .collect();
    let run = |agency: &str, count: &str| {
        let out = Command::new(&python)
            .arg(&kit)
            .arg("--env-file")
            .arg(&envs[agency])
            .args(["--count", count, "--idle-seconds", "20"])
            .output()
            .unwrap();
        lines(out)
    };
    let total = (cases.bad + cases.good + 10).to_string();
    let civil = router_lines(run("civil", &total), &cases);
    let health = run("health", "10");
    check_kit_output(&civil, &health);
    assert_eq!(
        w.count("agency.civil.dlq").await,
        cases.bad as u32,
        "every forgery dead-lettered"
    );
    let template = w.drain("agency.health", Duration::from_millis(100)).await;
    assert!(template.is_empty(), "the kit acked health's");
    let civil_template = civil_template(&w).await;
    expired_key_case(&mut w, &civil_template).await;
    let after = run("civil", "2");
    assert_eq!(
        after.len(),
        1,
        "only the delivery under the key in force: {after:?}"
    );
    assert_eq!(after[0]["message_id"], "fresh-0");
    assert_eq!(
        w.count("agency.civil.dlq").await,
        cases.bad as u32 + 1,
        "the expired key's delivery dead-lettered"
    );
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kit_reads_full_and_pseudonymised_deliveries() {
    let mut w = World::new().await;
    let cases = deliveries_across_a_platform_key_rotation(&mut w).await;
    let kit = workspace_root().join("examples/agency-java/run.sh");
    let build = w.path("java-build");
    let envs: std::collections::HashMap<&str, PathBuf> = ["civil", "health"]
        .into_iter()
        .map(|a| (a, env_file(&w, a)))
        .collect();
    let run = |agency: &str, count: &str| {
        let out = Command::new(&kit)
            .env("AGENCY_JAVA_BUILD", &build)
            .arg("--env-file")
            .arg(&envs[agency])
            .args(["--count", count, "--idle-seconds", "30"])
            .output()
            .expect(
                "run examples/agency-java/run.sh (needs a JDK 17: apt-get install default-jdk)",
            );
        lines(out)
    };
    let total = (cases.bad + cases.good + 10).to_string();
    let civil = router_lines(run("civil", &total), &cases);
    let health = run("health", "10");
    check_kit_output(&civil, &health);
    assert_eq!(w.count("agency.health").await, 0, "the kit acked");
    assert_eq!(w.count("agency.health.dlq").await, 0);
    assert_eq!(
        w.count("agency.civil.dlq").await,
        cases.bad as u32,
        "every forgery dead-lettered"
    );
    let civil_template = civil_template(&w).await;
    expired_key_case(&mut w, &civil_template).await;
    let after = run("civil", "2");
    assert_eq!(
        after.len(),
        1,
        "only the delivery under the key in force: {after:?}"
    );
    assert_eq!(after[0]["message_id"], "fresh-0");
    assert_eq!(
        w.count("agency.civil.dlq").await,
        cases.bad as u32 + 1,
        "the expired key's delivery dead-lettered"
    );
}

/// A delivery to civil to copy: one more police record, routed.
async fn civil_template(w: &World) -> Got {
    let cfg = w.police(10, 11, 1);
    w.run_adapter(&cfg);
    let got = w.drain_until_delivered("agency.civil", 1, 30).await;
    got.into_iter().next().unwrap()
}
