//! # router: delivers each record only to granted agencies, and the `govbus` command line
//!
//! ## Layout
//! - [`cli`]: the `govbus` command line (`src/bin/govbus.rs` only parses and dispatches).
//!   - `cli/schemas.rs`: `govbus schemas list|export|encode|decode|validate|release`.
//!   - `cli/topology.rs`: `govbus topology`, declaring the wire contract's exchanges and queues.
//!
//! The router itself (grants, projection, pseudonyms, ledger) comes with its own issue.

pub mod cli;
