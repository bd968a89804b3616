//! Embeds every `schemas/*.avsc` into the library, so the registry needs no files at run time.
use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("bus-schemas/schemas is missing")
        .map(|e| e.expect("read bus-schemas/schemas").path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .collect();
    names.sort();
    let mut out = String::from("/// Every `.avsc` file of `bus-schemas/schemas`, as (file name, contents).\npub static EMBEDDED: &[(&str, &str)] = &[\n");
    for p in &names {
        println!("cargo:rerun-if-changed={}", p.display());
        let file = p.file_name().unwrap().to_string_lossy();
        out.push_str(&format!(
            "    ({file:?}, include_str!({:?})),\n",
            p.display().to_string()
        ));
    }
    out.push_str("];\n");
    fs::write(
        Path::new(&env::var("OUT_DIR").unwrap()).join("embedded.rs"),
        out,
    )
    .unwrap();
}
