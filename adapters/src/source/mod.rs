//! Sources: where a department's records come from. Each kind is one file and is chosen by
//! `kind` in the `[source]` section. A source yields rows with their position; the pipeline
//! hands a position back through `commit` only when every row up to it is confirmed by the
//! broker or quarantined, so a restart resumes without losing anything.
use std::path::Path;

use serde::Deserialize;

pub mod csv;
pub mod http;
pub mod postgres;
pub mod record;
pub mod requeue;

pub use record::{now_ms, Row, Source, SourceError, SourceRecord};

/// The `[source]` section: `kind = "csv" | "postgres" | "http"` and that kind's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// CSV files dropped into a folder.
    Csv(csv::CsvConfig),
    /// A PostgreSQL query polled incrementally.
    Postgres(postgres::PostgresConfig),
    /// A JSON HTTP API polled page by page.
    Http(http::HttpSourceConfig),
}

impl SourceConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match self {
            SourceConfig::Csv(c) => {
                if c.path.is_relative() {
                    c.path = base.join(&c.path);
                }
                if let Some(d) = &mut c.done_dir {
                    if d.is_relative() {
                        *d = base.join(&*d);
                    }
                }
            }
            SourceConfig::Http(h) => h.resolve_paths(base),
            SourceConfig::Postgres(_) => {}
        }
    }

    /// The kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Csv(_) => "csv",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Http(_) => "http",
        }
    }
}
