//! Bodies of the fuzz targets (`fuzz/`), kept here so that the suite runs every saved crash and
//! seed through exactly the same code (`tests/tests/fuzz_regressions.rs`). Each function must
//! return for any input, without panicking; a property that fails panics with what broke.

use apache_avro::types::Value;

use crate::{RecordType, Registry, HEADER_LEN};

/// Single-object decoding: the router's first step on every message. The whole input as a
/// body; then, so that mutated headers still reach the datum decoder, the first fingerprint
/// byte picks a record type and the bytes after the header are read as its datum. Validation
/// and the JSON view must not panic on any datum; a record the router accepts (nothing
/// `unrepresentable`) must convert to JSON and back and re-encode to the same record.
pub fn decode(data: &[u8]) {
    let registry = Registry::standard();
    if let Ok((rt, value)) = registry.decode(data) {
        round_trip(registry, rt, &value);
    }
    if data.len() > HEADER_LEN {
        let types = registry.types();
        let rt = &types[data[2] as usize % types.len()];
        if let Ok(value) = rt.decode_datum(&data[HEADER_LEN..]) {
            round_trip(registry, rt, &value);
        }
    }
}

fn round_trip(registry: &Registry, rt: &RecordType, value: &Value) {
    let _ = rt.validate(value);
    // What the router lets through must convert to JSON and back, unchanged.
    let representable = crate::validate::unrepresentable(value).is_none();
    let json = match rt.value_to_json(value) {
        Ok(j) => j,
        Err(_) if !representable => return,
        Err(e) => panic!("a record the router accepts has no JSON view: {e}"),
    };
    assert!(representable, "an unrepresentable record has a JSON view");
    let again = rt
        .value_from_json(&json)
        .unwrap_or_else(|e| panic!("the JSON view of a record does not convert back: {e}"));
    let body = rt.encode(&again).expect("a decoded datum encodes again");
    let (_, round) = registry.decode(&body).expect("an encoded datum decodes");
    assert_eq!(
        rt.value_to_json(&round).expect("JSON view"),
        json,
        "round trip changed the record"
    );
}

/// Runs `target` over every saved input of a fuzz target: its seeds (`fuzz/seeds/<name>`) and
/// the crashes found and fixed (`fuzz/regressions/<name>`). Returns how many ran; a panic names
/// the file. For the crates' `fuzz_regressions` tests.
pub fn replay_saved<R>(
    workspace: &std::path::Path,
    name: &str,
    target: impl Fn(&[u8]) -> R + std::panic::RefUnwindSafe,
) -> usize {
    let mut ran = 0;
    for dir in ["seeds", "regressions"] {
        let dir = workspace.join("fuzz").join(dir).join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file() && !p.ends_with(".gitkeep"))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            if let Err(e) = outcome {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("fuzz target {name} fails on {}: {why}", file.display());
            }
            ran += 1;
        }
    }
    ran
}
