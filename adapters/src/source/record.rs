//! What every source yields and does: rows with their position, and the `Source` trait.
use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use serde_json::{Map, Value as Json};

/// One source row: column names (shared by every row of a CSV file) and their values, in
/// the source's order. A CSV row costs no copy of its header and no hash map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Json>,
}

impl Row {
    /// A row of `values` under `columns` (as many of each).
    pub fn new(columns: Arc<[String]>, values: Vec<Json>) -> Self {
        debug_assert_eq!(columns.len(), values.len());
        Row { columns, values }
    }

    /// A row from a JSON object (PostgreSQL and HTTP rows, corrected quarantined rows).
    pub fn from_map(map: Map<String, Json>) -> Self {
        map.into_iter().collect()
    }

    /// The value of `column`.
    pub fn get(&self, column: &str) -> Option<&Json> {
        self.columns
            .iter()
            .position(|c| c == column)
            .map(|i| &self.values[i])
    }

    /// The value of `column`, looked for first where `hint` says it was in the last row (rows of
    /// one file share their columns, so that is nearly always where it is).
    pub fn get_hinted(&self, column: &str, hint: &AtomicUsize) -> Option<&Json> {
        let h = hint.load(Ordering::Relaxed);
        if self.columns.get(h).is_some_and(|c| c == column) {
            return Some(&self.values[h]);
        }
        let i = self.columns.iter().position(|c| c == column)?;
        hint.store(i, Ordering::Relaxed);
        Some(&self.values[i])
    }

    /// The row as a JSON object, columns in order.
    pub fn to_map(&self) -> Map<String, Json> {
        self.columns
            .iter()
            .cloned()
            .zip(self.values.iter().cloned())
            .collect()
    }
}

impl FromIterator<(String, Json)> for Row {
    fn from_iter<I: IntoIterator<Item = (String, Json)>>(iter: I) -> Self {
        let (columns, values): (Vec<String>, Vec<Json>) = iter.into_iter().unzip();
        Row {
            columns: columns.into(),
            values,
        }
    }
}

impl std::ops::Index<&str> for Row {
    type Output = Json;

    /// The value of a column; panics when the row has no such column (as a JSON map does).
    fn index(&self, column: &str) -> &Json {
        self.get(column)
            .unwrap_or_else(|| panic!("the row has no column `{column}`"))
    }
}

impl serde::Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.values.len()))?;
        for (c, v) in self.columns.iter().zip(&self.values) {
            m.serialize_entry(c, v)?;
        }
        m.end()
    }
}

/// How to name the cell of a column in one sheet row (`户籍.xlsx:Sheet1!C17`), so that a
/// quarantined row names the cell at fault, not only the row.
#[derive(Debug, Clone)]
pub struct Cells {
    /// `<file>:<sheet>!`
    pub prefix: Arc<str>,
    /// The row's number in the sheet (1-based, as Excel shows it).
    pub row: u32,
    /// Column name → column letters.
    pub letters: Arc<HashMap<String, String>>,
}

impl Cells {
    /// The cell of `column` in this row, if the sheet has that column.
    pub fn of(&self, column: &str) -> Option<String> {
        let l = self.letters.get(column)?;
        Some(format!("{}{l}{}", self.prefix, self.row))
    }
}

/// A source row with where it came from.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Column → value (strings for CSV, JSON values for PostgreSQL and HTTP).
    pub row: Row,
    /// Where the row is, for `commit` (opaque to the pipeline).
    pub position: Json,
    /// Human-readable position (`file.csv:line 12`), sent with quarantined rows.
    pub label: String,
    /// Version to use when the mapping has no version column: when the adapter first read the
    /// row, in milliseconds, kept with the position so a re-read gives the same version.
    pub fallback_version: i64,
    /// A row the source itself could not read (a CSV line with the wrong number of fields):
    /// it goes to quarantine with this reason.
    pub problem: Option<String>,
    /// For a spreadsheet row: how to name the cell of a column, so that a quarantined row
    /// names the cell at fault (`户籍.xlsx:Sheet1!C17`).
    pub cells: Option<Cells>,
}

/// A source failure.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Worth retrying (a connection dropped, a 5xx).
    #[error("{0} (retrying)")]
    Transient(String),
    /// Needs a person (a 4xx, a bad query, an unreadable folder): the adapter stops.
    #[error("{0}")]
    Fatal(String),
}

/// What every source does.
pub trait Source: Send {
    /// The next row, or `None` when the source has nothing new right now.
    fn next(&mut self) -> impl Future<Output = Result<Option<SourceRecord>, SourceError>> + Send;
    /// Every row up to and including `position` is confirmed or quarantined: remember it.
    fn commit(&mut self, position: &Json) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// How long to wait before asking again after `next` returned `None`.
    fn poll_interval(&self) -> std::time::Duration;
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
