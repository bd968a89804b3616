//! # agency: what an agency runs to receive its records (`govbus-agency tail|sink`)
//!
//! It links nothing of the platform: only `bus-schemas` (the wire contract, the checkpoint
//! format, key trust).
//!
//! ## Layout
//! - `access.rs`: the account, queue and platform key (`Access`, from the provisioned env file).
//! - `decode.rs`: verifying and decoding a delivery (`Decoder`, `Received`).
//! - `consume.rs`: the consumer every tool shares (`consume`, `Handler`, `Verdict`).
//! - `tail.rs`: deliveries as JSON lines. `sink.rs`: into the agency's PostgreSQL, or a webhook.
//!   `pseudonym_map.rs`: the agency's rows moved to new tokens after a pseudonym rotation.
//! - `main.rs`: the `govbus-agency` command (parses and calls the above).
//!
//! The agency side: consuming `agency.<id>` with the account provisioning wrote, verifying the
//! platform's signature, decoding each delivery with its writer schema (fetched once from the
//! router's `GET /schemas/{fingerprint}`), and handing records to a tail, a table or a webhook.
//!
//! A delivery that cannot be verified or decoded is rejected without requeue, so the broker
//! dead-letters it to `agency.<id>.dlq`; it is never acked unseen. A handler that cannot finish
//! (database down) keeps its deliveries unacked and retries; on a lost connection the consumer
//! is rebuilt and the broker redelivers what was not acked.
pub mod access;
pub mod consume;
pub mod decode;
pub mod pseudonym_map;
pub mod purge;
pub mod sink;
pub mod tail;

pub use access::{Access, AgencyArgs};
pub use consume::{consume, Batching, Handler, Seen, Verdict};
pub use decode::{DecodeError, Decoder, Received};
