//! CSV files dropped into a folder. Files are taken in name order; UTF-8 (with or without BOM)
//! and GB18030 (what Chinese government systems export) are read, detected or configured; the
//! header row names the columns; quoted fields may hold newlines. A file moves to `done/` only
//! when every row of it is confirmed or quarantined; a partly sent file resumes at its row.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use serde_json::Value as Json;

use super::{
    folder::{FileFormat, FileRow, FileRows, Folder, FolderSource},
    record::{Row, SourceError},
};

/// `[source]` with `kind = "csv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The folder files are dropped into.
    pub path: PathBuf,
    /// Where finished files go (default: `done/` inside `path`).
    #[serde(default)]
    pub done_dir: Option<PathBuf>,
    /// `auto` (UTF-8 if the file is valid UTF-8, else GB18030), `utf-8` or `gb18030`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// File name suffix to pick up; other files are left alone.
    #[serde(default = "default_suffix")]
    pub suffix: String,
    /// Field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// How often to look for new files when idle, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_encoding() -> String {
    "auto".into()
}
fn default_suffix() -> String {
    ".csv".into()
}
fn default_delimiter() -> char {
    ','
}
fn default_poll_ms() -> u64 {
    1000
}

/// A CSV row: its line, and its columns or why it cannot be read.
pub type CsvRow = (u64, Result<Row, String>);

/// A file being read: its decoded text, parsed one record at a time (memory stays about the
/// size of the text, whatever the number of rows).
pub struct OpenFile {
    reader: ::csv::Reader<std::io::Cursor<Vec<u8>>>,
    headers: Arc<[String]>,
    total: usize,
    /// Index of the next record to yield.
    index: usize,
    lines: LineCounter,
    record: ::csv::StringRecord,
}

/// Line numbers from byte offsets. The csv crate's own are one short after CRLF line ends (a
/// record's position points at the `\n` ending the previous line).
#[derive(Default)]
struct LineCounter {
    counted_to: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_at(&mut self, text: &[u8], byte: u64) -> u64 {
        let mut b = byte as usize;
        if text.get(b) == Some(&b'\n') {
            b += 1;
        }
        let b = b.min(text.len());
        if b > self.counted_to {
            self.newlines += text[self.counted_to..b]
                .iter()
                .filter(|&&c| c == b'\n')
                .count() as u64;
            self.counted_to = b;
        }
        self.newlines + 1
    }
}

impl OpenFile {
    /// The next record as (line, columns or why it cannot be read); `None` at the end.
    fn read_row(&mut self) -> Option<CsvRow> {
        if self.index >= self.total {
            return None;
        }
        self.index += 1;
        let result = self.reader.read_record(&mut self.record);
        let text = self.reader.get_ref().get_ref();
        match result {
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(0, |p| self.lines.line_at(text, p.byte()));
                if self.record.len() != self.headers.len() {
                    let why = format!(
                        "the row has {} fields but the header has {}",
                        self.record.len(),
                        self.headers.len()
                    );
                    return Some((line, Err(why)));
                }
                let values = self
                    .record
                    .iter()
                    .map(|v| Json::String(v.to_string()))
                    .collect();
                Some((line, Ok(Row::new(self.headers.clone(), values))))
            }
            Ok(false) => None,
            Err(e) => {
                let line = e
                    .position()
                    .map_or(0, |p| self.lines.line_at(text, p.byte()));
                Some((line, Err(format!("unreadable CSV: {e}"))))
            }
        }
    }
}

/// The CSV folder source.
pub type CsvSource = FolderSource<CsvFormat>;

/// How CSV files are read: their encoding and delimiter.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    encoding: String,
    delimiter: u8,
}

/// Opens the source, reading its saved position from `state_dir`.
pub fn source(cfg: CsvConfig, state_dir: &Path) -> anyhow::Result<CsvSource> {
    let encoding = cfg.encoding.to_lowercase();
    if !["auto", "utf-8", "utf8", "gb18030"].contains(&encoding.as_str()) {
        anyhow::bail!(
            "source.encoding `{}` is not supported: use auto, utf-8 or gb18030",
            cfg.encoding
        );
    }
    if !cfg.delimiter.is_ascii() {
        anyhow::bail!("source.delimiter must be one ASCII character");
    }
    let folder = Folder::new(
        cfg.path,
        cfg.done_dir,
        vec![cfg.suffix],
        cfg.poll_interval_ms,
    );
    let format = CsvFormat {
        encoding,
        delimiter: cfg.delimiter as u8,
    };
    FolderSource::new(folder, format, state_dir)
}

impl FileFormat for CsvFormat {
    type Rows = OpenFile;
    const WHAT: &'static str = "CSV";
    const STATE_FILE: &'static str = "csv-position.json";

    fn open(&self, path: &Path, _name: &str) -> Result<OpenFile, SourceError> {
        open_csv(path, &self.encoding, self.delimiter)
    }
}

impl FileRows for OpenFile {
    fn total(&self) -> usize {
        self.total
    }

    fn index(&self) -> usize {
        self.index
    }

    fn read(&mut self) -> Option<FileRow> {
        let (line, row) = self.read_row()?;
        Some(FileRow {
            at: format!("line {line}"),
            row,
            cells: None,
        })
    }
}

/// Reads and decodes a CSV file, reads its header and counts its records (a cheap pass
/// without allocation), and returns it ready to be read record by record.
fn open_csv(path: &Path, encoding: &str, delimiter: u8) -> Result<OpenFile, SourceError> {
    let bytes = std::fs::read(path)
        .map_err(|e| SourceError::Transient(format!("cannot read {}: {e}", path.display())))?;
    open_bytes(bytes, &path.display().to_string(), encoding, delimiter)
}

/// Parses a whole CSV file held in memory, as the source would: its header, then each row as
/// (line, columns or why it cannot be read). For the fuzz targets and tests; the source itself
/// reads one row at a time.
pub fn parse_bytes(
    bytes: Vec<u8>,
    encoding: &str,
    delimiter: u8,
) -> Result<(Vec<String>, Vec<CsvRow>), String> {
    let mut file = open_bytes(bytes, "input", encoding, delimiter).map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(file.total);
    while let Some(row) = file.read_row() {
        rows.push(row);
    }
    Ok((file.headers.to_vec(), rows))
}

/// Decodes a file's bytes (`label` names it in errors) and opens it for reading.
fn open_bytes(
    mut bytes: Vec<u8>,
    label: &str,
    encoding: &str,
    delimiter: u8,
) -> Result<OpenFile, SourceError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    let text: Vec<u8> = match encoding {
        "utf-8" | "utf8" => String::from_utf8(bytes)
            .map_err(|e| {
                SourceError::Fatal(format!(
                "{label} is not valid UTF-8 (byte {}); set source.encoding = \"gb18030\" or \"auto\"",
                e.utf8_error().valid_up_to()
            ))
            })?
            .into_bytes(),
        "gb18030" => encoding_rs::GB18030
            .decode_without_bom_handling(&bytes)
            .0
            .into_owned()
            .into_bytes(),
        _ => match std::str::from_utf8(&bytes) {
            Ok(_) => bytes,
            Err(_) => encoding_rs::GB18030
                .decode_without_bom_handling(&bytes)
                .0
                .into_owned()
                .into_bytes(),
        },
    };
    let builder = || {
        let mut b = ::csv::ReaderBuilder::new();
        b.delimiter(delimiter).flexible(true);
        b
    };
    let mut counter = builder().from_reader(text.as_slice());
    let mut record = ::csv::ByteRecord::new();
    let mut total = 0usize;
    while let Ok(true) | Err(_) = counter.read_byte_record(&mut record) {
        total += 1;
        if counter.is_done() {
            break;
        }
    }
    drop(counter);
    let mut reader = builder().from_reader(std::io::Cursor::new(text));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| SourceError::Fatal(format!("{label}: cannot read the header row: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let headers: Arc<[String]> = headers.into();
    Ok(OpenFile {
        reader,
        headers,
        total,
        index: 0,
        lines: LineCounter::default(),
        record: ::csv::StringRecord::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB18030 and UTF-8 (with BOM) decode alike; quoted newlines stay in one field; a row with
    /// the wrong field count is reported, not dropped; labels give the file's line numbers.
    #[test]
    fn encodings_quotes_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = "姓名,备注\r\n张伟,\"两行\r\n备注\"\r\n李娜\r\n王芳,x\r\n";
        let gb = encoding_rs::GB18030.encode(text).0.into_owned();
        std::fs::write(dir.path().join("a.csv"), &gb).unwrap();
        let mut utf = b"\xEF\xBB\xBF".to_vec();
        utf.extend_from_slice(text.as_bytes());
        std::fs::write(dir.path().join("b.csv"), &utf).unwrap();
        std::fs::write(dir.path().join("c.csv"), text.replace("\r\n", "\n")).unwrap();
        for f in ["a.csv", "b.csv", "c.csv"] {
            let mut file = open_csv(&dir.path().join(f), "auto", b',').unwrap();
            let rows: Vec<_> = std::iter::from_fn(|| file.read_row()).collect();
            assert_eq!(rows.len(), 3, "{f}");
            let first = rows[0].1.as_ref().unwrap();
            assert_eq!(first["姓名"], "张伟");
            let note = if f == "c.csv" {
                "两行\n备注"
            } else {
                "两行\r\n备注"
            };
            assert_eq!(
                first["备注"], note,
                "{f}: a quoted newline stays in its field"
            );
            assert_eq!(rows[0].0, 2, "the first data row is on line 2");
            assert!(rows[1]
                .1
                .as_ref()
                .unwrap_err()
                .contains("1 fields but the header has 2"));
            assert_eq!(rows[1].0, 4);
            assert_eq!(rows[2].0, 5);
        }
        assert!(matches!(
            open_csv(&dir.path().join("a.csv"), "utf-8", b','),
            Err(SourceError::Fatal(_))
        ));
    }
}
