//! Every saved input of the CSV and HTTP-page fuzz targets (seeds and fixed crashes), and the
//! seeds really reach the mapping (each sample row becomes a record).

use adapters::fuzzing;
use bus_schemas::fuzzing::replay_saved;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seed(path: &str) -> Vec<u8> {
    std::fs::read(root().join("fuzz/seeds").join(path)).expect(path)
}

#[test]
fn csv_inputs() {
    assert!(replay_saved(&root(), "csv", fuzzing::csv) > 0);
    // Both sample files: 4 valid rows of 5, read by the setting that fits and by auto.
    assert_eq!(fuzzing::csv(&seed("csv/household-gb18030.csv")), 8);
    assert_eq!(fuzzing::csv(&seed("csv/household-utf8.csv")), 8);
}

#[test]
fn http_json_inputs() {
    assert!(replay_saved(&root(), "http_json", fuzzing::http_json) > 0);
    assert_eq!(fuzzing::http_json(&seed("http_json/page.json")), 2);
    assert_eq!(fuzzing::http_json(&seed("http_json/bare.json")), 2);
}
