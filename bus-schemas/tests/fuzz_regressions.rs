//! Every saved input of the single-object decoding fuzz target (seeds and fixed crashes).

#[test]
fn decode_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let n = bus_schemas::fuzzing::replay_saved(&root, "decode", bus_schemas::fuzzing::decode);
    assert!(n > 0, "no saved inputs under fuzz/seeds/decode");
}
