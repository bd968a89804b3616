//! The status page and the workflow API (where API tokens travel) are served over TLS on a
//! listener of their own; `/metrics`, `/readyz`, `/keys` and `/schemas` stay on the plain one,
//! so Prometheus and the agency kits need no change. Plain HTTP on the API only when the
//! config says so.
mod common;

use std::{path::Path, process::Command};

use common::World;
use govbus_tests::Process;

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost (openssl).
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=govbus api test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=govbus api",
        "-keyout",
        "api.key",
        "-out",
        "api.csr",
    ]);
    std::fs::write(
        dir.join("api.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "api.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "api.ext",
        "-out",
        "api.pem",
    ]);
}

/// Over TLS the status page and `/api` answer a client that trusts the CA (and `govbus
/// status --api-ca-file`); plain HTTP to that port, or a client without the CA, gets nothing;
/// the plain listener serves metrics and keys but neither the status page nor `/api`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_listener_is_tls_and_the_public_one_is_plain() {
    let mut w = World::new().await;
    let certs = w.path("api-certs");
    std::fs::create_dir_all(&certs).unwrap();
    certificates(&certs);
    let cfg = w.path("router.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "plain_http = true\n",
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            certs.join("api.pem").display(),
            certs.join("api.key").display()
        ),
    );
    assert!(text.contains("tls_cert_file"));
    std::fs::write(&cfg, text).unwrap();
    w.start_router().await;

    let https = format!("https://127.0.0.1:{}", w.api_port);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = trusting
        .get(format!("{https}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = trusting
        .get(format!("{https}/api/applications"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the workflow API is there, asking for a token"
    );

    assert!(
        reqwest::get(format!("{https}/status")).await.is_err(),
        "a client that does not trust the CA is refused"
    );
    let plain = reqwest::get(w.api_url("/status")).await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP to the TLS port gets no status"
    );

    assert_eq!(reqwest::get(w.url("/status")).await.unwrap().status(), 404);
    assert_eq!(
        reqwest::get(w.url("/api/applications"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(reqwest::get(w.url("/keys")).await.unwrap().status(), 200);
    assert!(w.metrics().await.contains("govbus_router_"));

    let out = Process::command("govbus")
        .args(["status", "--api-url", &https, "--api-ca-file"])
        .arg(certs.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AGENCY"),
        "govbus status over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An `[api]` listener with neither TLS files nor `plain_http = true` is a config error that
/// says what to set; the router does not start serving tokens in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_listener_without_tls_is_refused() {
    let w = World::new().await;
    let cfg = w.path("router.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("plain_http = true\n", "");
    std::fs::write(&cfg, text).unwrap();
    let out = govbus_tests::output_within(
        Process::command("govbus-router").arg("--config").arg(&cfg),
        60,
        "govbus-router with an [api] listener without TLS",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set api.tls_cert_file and api.tls_key_file"),
        "{err}"
    );
}
