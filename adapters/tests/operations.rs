//! What operators see: health and metrics while running, a clean drain on SIGTERM, key files.
mod common;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use bus_schemas::wire;
use common::*;

use govbus_tests::free_port;

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// `/readyz` turns 200 once connected, `/metrics` counts what was published and quarantined,
/// SIGTERM drains and exits 0 with the file finished, and the private key is mode 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_sigterm() {
    let env = Env::new("police").await;
    let mode = std::fs::metadata(env.path("keys/test-key.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private key is readable by its owner only"
    );
    let port = free_port();
    let config = env.config_file("police-household", &[]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        example_dir("police-household").join("inbox/household-20160517.csv"),
        env.path("inbox/household-20160517.csv"),
    )
    .unwrap();

    let child = Adapter::spawn(&config);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, metrics) = get(&format!("{base}/metrics")).await;
        if status == 200
            && metrics.contains("govbus_adapter_records_quarantined_total")
            && metrics.contains("govbus_adapter_records_confirmed_total 4")
        {
            assert!(metrics.contains("reason=\"citizen_id\""), "{metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed 4 confirmed and 1 quarantined: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    let pid = child.0.id() as i32;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "SIGTERM drains and exits 0: {exit:?}");
    assert!(env.path("inbox/done/household-20160517.csv").exists());
    assert_eq!(queue_count(&env.vhost, &wire::router_queue(0)).await, 4);
    assert_eq!(
        queue_count(&env.vhost, &wire::quarantine_queue("police")).await,
        1
    );
}
