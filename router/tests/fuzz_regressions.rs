//! Every saved input of the catalogue fuzz target (seeds and fixed crashes).

#[test]
fn catalogue_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let n = bus_schemas::fuzzing::replay_saved(&root, "catalogue", router::fuzzing::catalogue);
    assert!(n > 0, "no saved inputs under fuzz/seeds/catalogue");
}
