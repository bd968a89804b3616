//! AMQP over TLS against the suite's own TLS-only RabbitMQ node (scripts/test's TLS step starts
//! it with a throwaway CA): records flow adapter → router → agency over `amqps://`, every
//! connection is TLS and presents the client certificate, and a broker certificate from
//! another CA, or plain AMQP to the TLS port, is refused with a clear error.
mod common;

use std::time::Duration;

use common::World;
use govbus_tests::{Process, Services};

fn adapter_check(config: &std::path::Path) -> (bool, String) {
    let out = govbus_tests::output_within(
        Process::command("govbus-adapter")
            .arg("--config")
            .arg(config)
            .arg("--check"),
        60,
        "govbus-adapter --check",
    );
    (out.status.success(), govbus_tests::combined(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in scripts/test's TLS step, against the suite's TLS-only RabbitMQ node"]
async fn records_flow_over_tls_with_client_certificates_and_a_foreign_ca_is_refused() {
    let services = Services::from_env();
    assert!(
        services.amqp_url.starts_with("amqps://")
            && services.tls.ca_file.is_some()
            && services.tls.cert_file.is_some(),
        "this test needs the TLS node: run scripts/test (its TLS step sets GOVBUS__AMQP__URL=amqps://…, GOVBUS__AMQP__TLS_CA_FILE, …_CERT_FILE and …_KEY_FILE)"
    );
    let mut w = World::new().await;
    w.start_router().await;
    let cfg = w.police(0, 20, 1);
    w.run_adapter(&cfg);
    w.settle(Duration::from_millis(300)).await;
    let got = w.tail("civil", 20).await;
    assert_eq!(got.len(), 20, "civil's 20 records over amqps://");

    // Every connection to the test's vhost is TLS and presented the client certificate.
    // (The management API lists connections once their first statistics arrive, ~5 s.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let conns = loop {
        let conns: Vec<serde_json::Value> = serde_json::from_value(
            services
                .management_get(&format!("vhosts/{}/connections", w.vhost.name))
                .await,
        )
        .unwrap();
        if conns.iter().any(|c| c.get("ssl").is_some()) {
            break conns;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the router's connections are not listed within 60 s: {conns:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for c in &conns {
        assert_eq!(c["ssl"], true, "{c}");
        assert!(
            c["peer_cert_subject"]
                .as_str()
                .is_some_and(|s| s.contains("govbus-test-client")),
            "no client certificate: {c}"
        );
    }

    // A CA that did not sign the broker's certificate: refused, saying so.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let ca = services.tls.ca_file.clone().unwrap();
    let foreign = w.path("foreign.toml");
    std::fs::write(
        &foreign,
        text.replace(
            &format!("tls_ca_file = \"{}\"", ca.display()),
            &format!(
                "tls_ca_file = \"{}\"",
                services.tls.cert_file.clone().unwrap().display()
            ),
        ),
    )
    .unwrap();
    let (ok, out) = adapter_check(&foreign);
    assert!(!ok);
    assert!(
        out.contains("cannot connect to RabbitMQ") && out.to_lowercase().contains("certificate"),
        "{out}"
    );
    // Plain AMQP to the TLS port gets nowhere.
    let plain = w.path("plain.toml");
    std::fs::write(&plain, text.replace("url = \"amqps://", "url = \"amqp://")).unwrap();
    let (ok, out) = adapter_check(&plain);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot connect to RabbitMQ"), "{out}");
}
