//! `Type=notify` (deploy/systemd): started with `NOTIFY_SOCKET`, as systemd starts a unit, the
//! router tells `READY=1` once it is ready (what `/readyz` reports) and `STOPPING=1` when
//! SIGTERM makes it drain.
mod common;

use std::{os::unix::net::UnixDatagram, time::Duration};

use common::World;
use govbus_tests::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let w = World::new().await;
    let socket_path = w.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let router = Process(
        Process::command("govbus-router")
            .arg("--config")
            .arg(w.path("router.toml"))
            .env("NOTIFY_SOCKET", &socket_path)
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 60 s");
    assert_eq!(&buf[..n], b"READY=1");
    let ready = reqwest::get(w.url("/readyz")).await.unwrap().status();
    assert!(
        ready.is_success(),
        "READY=1 told while /readyz said {ready}"
    );
    let status = router.terminate();
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(status.success(), "the router drains and exits 0: {status}");
    // Told once each: nothing more came.
    socket.set_nonblocking(true).unwrap();
    assert!(socket.recv(&mut buf).is_err());
}
