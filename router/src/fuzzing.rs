//! Body of the catalogue fuzz target (`fuzz/`), kept here so that the suite runs every saved
//! crash and seed through the same code (`tests/tests/fuzz_regressions.rs`).

use crate::routing::catalogue::{Catalogue, CatalogueFile};
use crate::routing::grants::{ProjectionCache, Routing};

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
    // One projection cache for the process, as in the router: a projection's schema lives as
    // long as the process (built once per record type and field set).
    static CACHE: std::sync::OnceLock<ProjectionCache> = std::sync::OnceLock::new();
    if let Ok(catalogue) = Catalogue::check(file) {
        if let Err(e) = Routing::compile(catalogue, CACHE.get_or_init(ProjectionCache::default)) {
            panic!("a catalogue that passed the check does not compile: {e}");
        }
    }
}
