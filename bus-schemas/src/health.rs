//! What `/readyz` answers, shared by every govbus process: ready while connected to the
//! broker and not draining. Under systemd (`Type=notify`, `NOTIFY_SOCKET` set) the first
//! readiness is reported as `READY=1` and draining as `STOPPING=1`.
use std::sync::atomic::{AtomicBool, Ordering};

/// What readiness depends on.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    draining: AtomicBool,
    /// `READY=1` sent to systemd (once: later reconnects are not a start).
    told_ready: AtomicBool,
}

impl Health {
    /// Connected to the broker (or not).
    pub fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
        if v && !self.told_ready.swap(true, Ordering::Relaxed) {
            notify_systemd("READY=1");
        }
    }
    /// Stopping: take no more work.
    pub fn set_draining(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            notify_systemd("STOPPING=1");
        }
    }
    /// Ready for work.
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

/// Tells systemd a state (`READY=1`, `STOPPING=1`) when it started this process with
/// `NOTIFY_SOCKET` (a `Type=notify` unit); does nothing otherwise.
pub fn notify_systemd(state: &str) {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_to(&socket, state) {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }
}

/// Sends `state` as one datagram to the notification socket `socket` (a path, or `@name` in
/// Linux's abstract namespace), as sd_notify(3) does.
#[cfg(target_os = "linux")]
pub fn notify_to(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Elsewhere there is no systemd to tell.
#[cfg(not(target_os = "linux"))]
pub fn notify_to(_socket: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A notification reaches a socket named by path and one in the abstract namespace, as
    /// systemd's own would receive it.
    #[test]
    fn notifications_reach_the_socket() {
        use std::os::{
            linux::net::SocketAddrExt,
            unix::net::{SocketAddr, UnixDatagram},
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("govbus-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
