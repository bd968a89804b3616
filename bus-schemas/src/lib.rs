//! # bus-schemas: the govbus data standard
//!
//! What every govbus process and every agency agrees on: the Avro schema of each record type
//! of articles 9–25 of the Guangzhou government information sharing rules, the data-element
//! validators, and the single-object codec.
//!
//! ## Layout
//! - `schemas/*.avsc`: one schema per record type (namespace `gov.gz.<department>`) and the
//!   shared `gov.gz.common.Subject`; embedded at build time.
//! - [`registry`]: record types made self-contained, fingerprinted, with reader and writer
//!   built once; lookup by name or fingerprint.
//! - [`canonical`]: Parsing Canonical Form and CRC-64-AVRO, as Java computes them.
//! - [`codec`]: Avro single-object encoding (`C3 01`, CRC-64-AVRO fingerprint, datum).
//! - [`json`]: the natural JSON form of a record, both ways. [`dates`]: dates as records carry
//!   them (parsed by hand, limited to years 0–9999).
//! - [`validate`]: data-element standards (GB 11643, GB 32100, GB/T 2260, GB/T 2261, GB/T 3304)
//!   and code tables; returns every violation.
//! - [`compat`]: full transitive compatibility against `released/`, and releasing a version.
//! - [`wire`]: the AMQP wire contract: names, headers, keyed message ids, signatures.
//! - [`batch`]: batch signatures: salted leaves, the RFC 9162 Merkle tree, the signed
//!   statement, and a verifier that remembers the statements it checked.
//! - `amqp` (feature `amqp`): the runtime half both sides share: `[amqp]` config,
//!   connector with backoff, confirmed publishing, topology, reading headers.
//! - [`health`]: what `/readyz` answers.
//! - [`keys`]: key material files (Ed25519 keys, secrets), written 0600. [`trust`]: platform
//!   key endorsements (a rotated key signed by the one before) and the keys an agency trusts.
//! - [`checkpoint`]: signed ledger checkpoints (chain heads), as delivered and as kept.
//! - [`envfile`]: the `KEY=VALUE` files `govbus provision` writes for each account.
//! - [`settings`]: `GOVBUS__SECTION__KEY` environment overrides, shared by every program.
//! - [`error`]: typed errors.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod batch;
pub mod canonical;
pub mod checkpoint;
pub mod codec;
pub mod compat;
pub mod dates;
pub mod envfile;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod json;
pub mod keys;
pub mod registry;
pub mod settings;
pub mod trust;
pub mod validate;
pub mod wire;

pub use apache_avro;
pub use codec::{split_header, HEADER_LEN, MAGIC};
pub use error::{CodecError, JsonError, SchemaError};
pub use registry::{FieldKind, Fingerprint, RecordType, Registry};
pub use validate::{Element, Report, Violation};
