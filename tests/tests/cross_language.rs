//! Agencies consume with any Avro library: the Rust encoding must be what an independent Avro
//! implementation (fastavro, Python) reads, and the other way round. The Java and Python agency
//! kits are run end to end against a live router in `agency_kits.rs`; no .NET client is tested.
use std::{fs, process::Command};

use bus_schemas::Registry;
use govbus_tests::{python, workspace_root};

/// fastavro finds every record type by the fingerprint in Rust's header, decodes the golden bytes
/// to the golden JSON, and its own encoding of the golden JSON decodes in Rust to the same JSON,
/// byte for byte what Rust writes.
#[test]
fn fastavro_and_rust_agree_both_ways() {
    let python = python().unwrap();
    let reg = Registry::standard();
    let work = tempfile::tempdir().unwrap();
    let schemas = work.path().join("schemas");
    let out = work.path().join("python");
    assert_eq!(reg.export(&schemas).unwrap(), 26);
    let golden = workspace_root().join("bus-schemas/golden");
    let run = Command::new(python)
        .arg(workspace_root().join("tests/python/crosscheck.py"))
        .args([&schemas, &golden, &out])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "fastavro disagrees:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["decoded"], 25, "{summary}");
    for t in reg.types() {
        let bytes = fs::read(out.join(format!("{}.bin", t.full_name))).unwrap();
        let (found, json) = reg.decode_to_json(&bytes).unwrap();
        assert_eq!(found.full_name, t.full_name);
        let expected: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(golden.join(format!("{}.json", t.full_name))).unwrap(),
        )
        .unwrap();
        assert_eq!(json, expected, "{}", t.full_name);
        assert_eq!(
            bytes,
            fs::read(golden.join(format!("{}.bin", t.full_name))).unwrap(),
            "{}",
            t.full_name
        );
    }
}
