//! What `/readyz` answers, shared by every govbus process: ready while connected to the
//! broker and not draining.
use std::sync::atomic::{AtomicBool, Ordering};

/// What readiness depends on.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Connected to the broker (or not).
    pub fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }
    /// Stopping: take no more work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
    /// Ready for work.
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}
