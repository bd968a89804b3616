//! Body of the catalogue fuzz target (`fuzz/`), kept here so that the suite runs every saved
//! crash and seed through the same code (`tests/tests/fuzz_regressions.rs`).

use crate::catalogue::{Catalogue, CatalogueFile};
use crate::grants::{ProjectionCache, Routing};

/// A catalogue file as an operator might write it: parsed and checked as `govbus catalogue
/// check` and every reload do. A catalogue that passes the check must compile (every grant's
/// projection builds): the router never refuses, at reload, a file the check accepted.
pub fn catalogue(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<CatalogueFile>(text) else {
        return;
    };
    if let Ok(catalogue) = Catalogue::check(file) {
        if let Err(e) = Routing::compile(catalogue, &ProjectionCache::default()) {
            panic!("a catalogue that passed the check does not compile: {e}");
        }
    }
}
