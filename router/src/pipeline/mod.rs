//! The hot path and the tasks beside it: consume, decide, publish, settle (`run.rs`), kept
//! deliveries retried (`retry.rs`), catalogue reloads (`reload.rs`), quarantine counts
//! (`quarantined.rs`); `shared.rs` is what they share, `topology.rs` what they declare.
pub mod quarantined;
pub mod reload;
pub mod retry;
pub mod run;
pub mod shared;
pub mod topology;
