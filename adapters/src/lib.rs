//! # adapters: publish a department's authoritative records to the bus
//!
//! One process per department source (CSV drops, a PostgreSQL query, an HTTP API) maps rows
//! to bus-schemas records, validates, signs and publishes them with confirms. It is built in
//! its own issue; this crate holds the place in the workspace so the layout is the map.
