//! Full transitive compatibility against every released version in `released/`.
use std::path::PathBuf;

use apache_avro::Schema;
use bus_schemas::{compat, Registry};
use serde_json::json;

fn released_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("released")
}

/// Every current schema reads and is read by every released version of its type, fully.
#[test]
fn current_schemas_are_fully_compatible_with_every_release() {
    let reg = Registry::standard();
    let problems = compat::check_registry(reg, &released_dir()).unwrap();
    assert!(
        problems.is_empty(),
        "incompatible schema changes:\n{}",
        problems.join("\n")
    );
    for t in reg.types() {
        let versions = compat::released_versions(&released_dir(), &t.full_name).unwrap();
        assert!(
            !versions.is_empty(),
            "{} was never released: run `govbus schemas release`",
            t.full_name
        );
    }
}

/// The current schemas are released: `govbus schemas release` would write nothing.
#[test]
fn current_schemas_are_released() {
    let reg = Registry::standard();
    for t in reg.types() {
        let versions = compat::released_versions(&released_dir(), &t.full_name).unwrap();
        assert_eq!(
            versions.last().map(|(_, j)| j),
            Some(&t.json),
            "{} changed since its last release: run `govbus schemas release` and commit the new version",
            t.full_name
        );
    }
}

fn base() -> serde_json::Value {
    json!({"type": "record", "name": "gov.gz.t.T", "fields": [
        {"name": "k", "type": "string"},
        {"name": "a", "type": ["null", "string"], "default": null}]})
}

/// Adding an optional field is compatible both ways; breaking changes are caught, including
/// ones apache-avro rates only `Partial`.
#[test]
fn the_check_catches_breaking_changes() {
    let old = Schema::parse(&base()).unwrap();
    let mut added = base();
    added["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "type": ["null", "long"], "default": null}));
    assert_eq!(
        compat::full_mutual(&Schema::parse(&added).unwrap(), &old),
        Ok(())
    );

    let mut required = base();
    required["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "type": "long"}));
    assert!(compat::full_mutual(&Schema::parse(&required).unwrap(), &old).is_err());

    let mut retyped = base();
    retyped["fields"][1]["type"] = json!(["null", "int"]);
    assert!(compat::full_mutual(&Schema::parse(&retyped).unwrap(), &old).is_err());

    // A union that gains a branch: old readers may meet a value they cannot read (Partial).
    let mut widened = base();
    widened["fields"][1]["type"] = json!(["null", "string", "long"]);
    let e = compat::full_mutual(&Schema::parse(&widened).unwrap(), &old).unwrap_err();
    assert!(
        e.contains("partially") || e.contains("union") || e.contains("Union"),
        "{e}"
    );
}

/// Releasing writes v1 for a new type, nothing when unchanged, and refuses an incompatible change.
#[test]
fn release_versions_and_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let file = |s: &serde_json::Value| {
        let mut s = s.clone();
        s["govbus.key"] = json!(["k"]);
        s.to_string()
    };
    let v1 = file(&base());
    let reg = Registry::from_files([("T.avsc", v1.as_str())]).unwrap();
    let written = compat::release(&reg, dir.path()).unwrap();
    assert_eq!(written, vec![dir.path().join("gov.gz.t.T/v1.avsc")]);
    assert!(compat::release(&reg, dir.path()).unwrap().is_empty());

    let mut next = base();
    next["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "type": ["null", "long"], "default": null}));
    let v2 = file(&next);
    let reg = Registry::from_files([("T.avsc", v2.as_str())]).unwrap();
    assert_eq!(
        compat::release(&reg, dir.path()).unwrap(),
        vec![dir.path().join("gov.gz.t.T/v2.avsc")]
    );

    let mut broken = base();
    broken["fields"][1]["type"] = json!(["null", "int"]);
    let v3 = file(&broken);
    let reg = Registry::from_files([("T.avsc", v3.as_str())]).unwrap();
    let e = compat::release(&reg, dir.path()).unwrap_err();
    assert!(
        e.contains("v1.avsc") && e.contains("v2.avsc"),
        "names every release it breaks: {e}"
    );
}
