//! # router: delivers each record only to granted agencies, and the `govbus` command line
//!
//! ## Layout
//! - [`cli`]: the `govbus` command line (`src/bin/govbus.rs` only parses and dispatches).
//!   - `cli/schemas.rs`: `govbus schemas list|export|encode|decode|validate|release`.
//!
//! The router itself (grants, projection, pseudonyms, ledger) comes with its own issue.

pub mod cli;
