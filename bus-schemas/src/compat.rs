//! Schema compatibility against released versions. Every released version of a record type
//! is kept in `bus-schemas/released/<full name>/v<N>.avsc` (self-contained). A schema change
//! must stay readable both ways against every one of them (full transitive): a new reader
//! reads old data and an old reader reads new data. Only apache-avro's `Full` compatibility
//! passes; `Partial` ("resolving may fail") is a failure.
use std::{
    fs,
    path::{Path, PathBuf},
};

use apache_avro::{
    schema_compatibility::Compatibility, schema_compatibility::SchemaCompatibility, Schema,
};
use serde_json::Value as Json;

use crate::registry::Registry;

/// Checks that `a` and `b` can each read what the other writes, fully.
pub fn full_mutual(a: &Schema, b: &Schema) -> Result<(), String> {
    for (writer, reader, dir) in [
        (a, b, "new data read with the released schema"),
        (b, a, "released data read with the new schema"),
    ] {
        match SchemaCompatibility::can_read(writer, reader) {
            Ok(Compatibility::Full) => {}
            Ok(Compatibility::Partial) => {
                return Err(format!(
                    "{dir}: only partially compatible (resolving may fail for some values)"
                ))
            }
            Err(e) => return Err(format!("{dir}: {e}")),
        }
    }
    Ok(())
}

/// The released versions of one record type, oldest first, as (file, schema JSON).
pub fn released_versions(
    released_dir: &Path,
    full_name: &str,
) -> std::io::Result<Vec<(PathBuf, Json)>> {
    let dir = released_dir.join(full_name);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut versions = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let Some(n) = version_number(&path) else {
            continue;
        };
        let json: Json = serde_json::from_str(&fs::read_to_string(&path)?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        versions.push((n, path, json));
    }
    versions.sort_by_key(|(n, _, _)| *n);
    Ok(versions.into_iter().map(|(_, p, j)| (p, j)).collect())
}

fn version_number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix('v')?.strip_suffix(".avsc")?.parse().ok()
}

/// Every incompatibility between the registry's schemas and their released versions, each
/// naming the record type and the released file.
pub fn check_registry(registry: &Registry, released_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut problems = Vec::new();
    for rt in registry.types() {
        for (path, json) in released_versions(released_dir, &rt.full_name)? {
            let released = match Schema::parse(&json) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{}: not a valid schema: {e}", path.display()));
                    continue;
                }
            };
            if let Err(e) = full_mutual(rt.schema, &released) {
                problems.push(format!("{} vs {}: {e}", rt.full_name, path.display()));
            }
        }
    }
    Ok(problems)
}

/// Releases the current schemas: for each record type whose self-contained schema differs
/// from its latest released version (or that has none), writes the next `v<N>.avsc`.
/// Returns the files written. Refuses (writing nothing) when any schema is not fully
/// compatible with its released versions.
pub fn release(registry: &Registry, released_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let problems = check_registry(registry, released_dir).map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!(
            "not released, incompatible with released versions:\n{}",
            problems.join("\n")
        ));
    }
    let mut written = Vec::new();
    for rt in registry.types() {
        let versions = released_versions(released_dir, &rt.full_name).map_err(|e| e.to_string())?;
        if versions.last().is_some_and(|(_, j)| *j == rt.json) {
            continue;
        }
        let next = versions
            .last()
            .and_then(|(p, _)| version_number(p))
            .map_or(1, |n| n + 1);
        let dir = released_dir.join(&rt.full_name);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("v{next}.avsc"));
        let text = serde_json::to_string_pretty(&rt.json).expect("JSON serialises") + "\n";
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
