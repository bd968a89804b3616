//! CSV files dropped into a folder. Files are taken in name order; UTF-8 (with or without BOM)
//! and GB18030 (what Chinese government systems export) are read, detected or configured; the
//! header row names the columns; quoted fields may hold newlines. A file moves to `done/` only
//! when every row of it is confirmed or quarantined; a partly sent file resumes at its row.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::record::{now_ms, Row, Source, SourceError, SourceRecord};
use crate::checkpoint::StateFile;

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

/// What the state file remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CsvState {
    /// The file being sent, with the index of the next row not yet confirmed.
    file: Option<String>,
    next: usize,
    /// Files opened and not yet finished, with their version base: versions of their rows
    /// (without a version column) are `base + row index`. Saved before a row is yielded, so a
    /// re-read after a crash gives the same versions and so the same message ids.
    bases: std::collections::BTreeMap<String, i64>,
    /// The next file's version base is at least this (keeps versions monotone across files).
    version_floor: i64,
}

/// A CSV row: its line, and its columns or why it cannot be read.
pub type CsvRow = (u64, Result<Row, String>);

/// A file being read: its decoded text, parsed one record at a time (memory stays about the
/// size of the text, whatever the number of rows).
struct OpenFile {
    name: String,
    reader: ::csv::Reader<std::io::Cursor<Vec<u8>>>,
    headers: Arc<[String]>,
    total: usize,
    /// Index of the next record to yield.
    index: usize,
    lines: LineCounter,
    record: ::csv::StringRecord,
    version_base: i64,
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
    fn read(&mut self) -> Option<CsvRow> {
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
pub struct CsvSource {
    cfg: CsvConfig,
    done_dir: PathBuf,
    state_file: StateFile,
    state: CsvState,
    /// Files read (or being read) whose rows are not all committed yet, oldest first.
    open: VecDeque<(String, usize, i64)>,
    current: Option<OpenFile>,
}

impl CsvSource {
    /// Opens the source, reading its saved position from `state_dir`.
    pub fn new(cfg: CsvConfig, state_dir: &Path) -> anyhow::Result<Self> {
        if !["auto", "utf-8", "utf8", "gb18030"].contains(&cfg.encoding.to_lowercase().as_str()) {
            anyhow::bail!(
                "source.encoding `{}` is not supported: use auto, utf-8 or gb18030",
                cfg.encoding
            );
        }
        if !cfg.delimiter.is_ascii() {
            anyhow::bail!("source.delimiter must be one ASCII character");
        }
        if !cfg.path.is_dir() {
            anyhow::bail!(
                "source.path {} is not a folder; create it or fix the path",
                cfg.path.display()
            );
        }
        let done_dir = cfg
            .done_dir
            .clone()
            .unwrap_or_else(|| cfg.path.join("done"));
        std::fs::create_dir_all(&done_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", done_dir.display()))?;
        let state_file = StateFile::new(state_dir, "csv-position.json")?;
        let mut state: CsvState = state_file.load()?.unwrap_or_default();
        // Files moved to done/ just before a crash, before the state was saved.
        let gone: Vec<String> = state
            .bases
            .keys()
            .filter(|f| !cfg.path.join(f).exists())
            .cloned()
            .collect();
        for f in gone {
            state.bases.remove(&f);
            if state.file.as_deref() == Some(f.as_str()) {
                state.file = None;
                state.next = 0;
            }
        }
        Ok(CsvSource {
            cfg,
            done_dir,
            state_file,
            state,
            open: VecDeque::new(),
            current: None,
        })
    }

    fn pending_files(&self) -> Result<Vec<String>, SourceError> {
        let entries = std::fs::read_dir(&self.cfg.path).map_err(|e| {
            SourceError::Fatal(format!("cannot list {}: {e}", self.cfg.path.display()))
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(&self.cfg.suffix) && !n.starts_with('.'))
            .filter(|n| !self.open.iter().any(|(o, _, _)| o == n))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn open_next(&mut self) -> Result<bool, SourceError> {
        let Some(name) = self.pending_files()?.into_iter().next() else {
            return Ok(false);
        };
        let path = self.cfg.path.join(&name);
        let (encoding, delimiter) = (self.cfg.encoding.to_lowercase(), self.cfg.delimiter as u8);
        let mut file = tokio::task::spawn_blocking(move || open_csv(&path, &encoding, delimiter))
            .await
            .map_err(|e| SourceError::Fatal(format!("reading {name} panicked: {e}")))??;
        file.name = name.clone();
        let start = if self.state.file.as_deref() == Some(name.as_str()) {
            self.state.next
        } else {
            0
        };
        let base = match self.state.bases.get(&name) {
            Some(&b) => b,
            None => {
                let b = now_ms().max(self.state.version_floor);
                self.state.bases.insert(name.clone(), b);
                self.state.version_floor = b + file.total as i64 + 1;
                if self.state.file.is_none() {
                    self.state.file = Some(name.clone());
                    self.state.next = 0;
                }
                self.save()?;
                b
            }
        };
        file.version_base = base;
        while file.index < start.min(file.total) {
            file.read();
        }
        tracing::info!(file = %name, rows = file.total, resume_at = start, "reading CSV file");
        self.open.push_back((name, file.total, base));
        self.current = Some(file);
        Ok(true)
    }

    fn save(&self) -> Result<(), SourceError> {
        self.state_file
            .save(&self.state)
            .map_err(|e| SourceError::Fatal(format!("cannot save the CSV position: {e}")))
    }

    fn finish_file(&mut self, name: &str) -> Result<(), SourceError> {
        let from = self.cfg.path.join(name);
        let mut to = self.done_dir.join(name);
        if to.exists() {
            to = self.done_dir.join(format!("{}.{}", name, now_ms()));
        }
        std::fs::rename(&from, &to).map_err(|e| {
            SourceError::Fatal(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })?;
        tracing::info!(file = %name, "file sent: every row confirmed or quarantined; moved to done");
        Ok(())
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
    while let Some(row) = file.read() {
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
        name: String::new(),
        reader,
        headers,
        total,
        index: 0,
        lines: LineCounter::default(),
        record: ::csv::StringRecord::new(),
        version_base: 0,
    })
}

impl Source for CsvSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>, SourceError> {
        loop {
            if let Some(file) = &mut self.current {
                let i = file.index;
                if let Some((line, row)) = file.read() {
                    let (row, problem) = match row {
                        Ok(r) => (r, None),
                        Err(p) => (Row::default(), Some(p)),
                    };
                    return Ok(Some(SourceRecord {
                        row,
                        position: json!({"file": file.name, "next": i + 1}),
                        label: format!("{}:line {line}", file.name),
                        fallback_version: file.version_base + i as i64,
                        problem,
                    }));
                }
                self.current = None;
            }
            if !self.open_next().await? {
                return Ok(None);
            }
            // An empty file (header only, or resumed at its end) finishes at once.
            if let Some(file) = &self.current {
                if file.index >= file.total {
                    let pos = json!({"file": file.name, "next": file.total});
                    self.current = None;
                    self.commit(&pos).await?;
                }
            }
        }
    }

    async fn commit(&mut self, position: &Json) -> Result<(), SourceError> {
        let file = position["file"].as_str().unwrap_or_default().to_string();
        let next = position["next"].as_u64().unwrap_or(0) as usize;
        // Files opened before this one are wholly committed; this one up to `next`.
        while let Some((name, total, _)) = self.open.front().cloned() {
            let done = name != file || next >= total;
            if !done {
                self.state.file = Some(name);
                self.state.next = next;
                break;
            }
            self.open.pop_front();
            self.finish_file(&name)?;
            self.state.bases.remove(&name);
            self.state.file = self.open.front().map(|(n, _, _)| n.clone());
            self.state.next = 0;
            if name == file {
                break;
            }
        }
        self.save()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }
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
            let rows: Vec<_> = std::iter::from_fn(|| file.read()).collect();
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
