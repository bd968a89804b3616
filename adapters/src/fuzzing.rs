//! Bodies of the fuzz targets (`fuzz/`) for what an adapter reads from a department: CSV drops
//! (UTF-8, GB18030, detected) and HTTP source pages, each row then mapped and validated with an
//! example department's mapping, as the adapter does. Kept here so that the suite runs every
//! saved crash and seed through the same code (`tests/tests/fuzz_regressions.rs`).

use std::sync::OnceLock;

use bus_schemas::Registry;

use crate::mapping::{Mapper, MappingConfig, Outcome};
use crate::source::{csv, http};

/// The mapper of an example adapter config (its `record_type` and `[mapping]`).
fn example_mapper(config: &str) -> Mapper {
    #[derive(serde::Deserialize)]
    struct Part {
        record_type: String,
        mapping: MappingConfig,
    }
    let doc: toml::Table = toml::from_str(config).expect("example config is TOML");
    let part: Part = toml::Value::Table(doc)
        .try_into()
        .expect("example config has record_type and [mapping]");
    let rt = Registry::standard()
        .get(&part.record_type)
        .expect("example record type")
        .clone();
    Mapper::new(rt, part.mapping).expect("example mapping fits")
}

/// Maps a row; a record that passes must encode (what the adapter publishes next). True when
/// the row became a record.
fn map_row(mapper: &Mapper, row: &crate::source::Row) -> bool {
    let Outcome::Record(m) = mapper.map(row, 1, 1_700_000_000_000) else {
        return false;
    };
    mapper
        .record_type()
        .encode(&m.value)
        .expect("a mapped, valid record encodes");
    true
}

/// A CSV file as dropped into the police department's folder, read in each encoding setting.
/// Returns how many rows became valid records.
pub fn csv(data: &[u8]) -> usize {
    static MAPPER: OnceLock<Mapper> = OnceLock::new();
    let mapper = MAPPER
        .get_or_init(|| example_mapper(include_str!("../examples/police-household/adapter.toml")));
    let mut records = 0;
    for encoding in ["utf-8", "gb18030", "auto"] {
        if let Ok((_, rows)) = csv::parse_bytes(data.to_vec(), encoding, b',') {
            for (_, row) in rows {
                if let Ok(row) = row {
                    records += usize::from(map_row(mapper, &row));
                }
            }
        }
    }
    records
}

/// A page from the tax department's HTTP API. Returns how many rows became valid records.
pub fn http_json(data: &[u8]) -> usize {
    static MAPPER: OnceLock<Mapper> = OnceLock::new();
    let mapper = MAPPER
        .get_or_init(|| example_mapper(include_str!("../examples/tax-registration/adapter.toml")));
    let mut records = 0;
    for pointer in ["", "/data/items"] {
        if let Ok(rows) = http::parse_page(data, pointer) {
            for (row, problem) in rows {
                if problem.is_none() {
                    records += usize::from(map_row(mapper, &crate::source::Row::from_map(row)));
                }
            }
        }
    }
    records
}
