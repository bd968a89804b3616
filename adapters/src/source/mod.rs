//! Sources: where a department's records come from. Each kind is one file and is chosen by
//! `kind` in the `[source]` section. A source yields rows with their position; the pipeline
//! hands a position back through `commit` only when every row up to it is confirmed by the
//! broker or quarantined, so a restart resumes without losing anything.
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod csv;
pub mod excel;
pub mod folder;
pub mod http;
pub mod keyset;
pub mod mysql;
pub mod postgres;
pub mod record;
pub mod requeue;

pub use record::{now_ms, Row, Source, SourceError, SourceRecord};

/// The `[source]` section: `kind = "csv" | "excel" | "postgres" | "mysql" | "http"` and that kind's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// CSV files dropped into a folder.
    Csv(csv::CsvConfig),
    /// Excel workbooks dropped into a folder.
    Excel(excel::ExcelConfig),
    /// A PostgreSQL query polled incrementally.
    Postgres(postgres::PostgresConfig),
    /// A MySQL or MariaDB query polled incrementally.
    Mysql(mysql::MysqlConfig),
    /// A JSON HTTP API polled page by page.
    Http(http::HttpSourceConfig),
}

impl SourceConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match self {
            SourceConfig::Csv(c) => rebase(base, &mut c.path, &mut c.done_dir),
            SourceConfig::Excel(c) => rebase(base, &mut c.path, &mut c.done_dir),
            SourceConfig::Http(h) => h.resolve_paths(base),
            SourceConfig::Postgres(_) | SourceConfig::Mysql(_) => {}
        }
    }

    /// The kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Csv(_) => "csv",
            SourceConfig::Excel(_) => "excel",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Http(_) => "http",
        }
    }
}

/// A folder source's paths, relative ones taken from `base` (the config file's folder).
fn rebase(base: &Path, path: &mut PathBuf, done_dir: &mut Option<PathBuf>) {
    for p in std::iter::once(path).chain(done_dir.as_mut()) {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}
