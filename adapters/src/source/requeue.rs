//! Corrected quarantined rows sent back through mapping and validation: the JSON-lines file
//! `govbus quarantine export` writes (one `{"item", "reason", "field", "source_position", "row"}`
//! per line), after the department fixed the rows. Lines of other items are skipped. Progress is
//! kept in the state folder, so an interrupted requeue resumes after the last confirmed line.
use std::{
    io::BufRead,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value as Json};

use super::record::{now_ms, Row, Source, SourceError, SourceRecord};

/// Reads a requeue file.
pub struct RequeueSource {
    path: PathBuf,
    item: String,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    line: u64,
    done_upto: u64,
    state: PathBuf,
    now: i64,
}

impl RequeueSource {
    /// Opens `path` for the adapter's `item`, resuming after what an earlier run confirmed.
    pub fn new(path: &Path, item: &str, state_dir: &Path) -> Result<Self, SourceError> {
        let file = std::fs::File::open(path).map_err(|e| {
            SourceError::Fatal(format!(
                "cannot read the requeue file {}: {e}",
                path.display()
            ))
        })?;
        std::fs::create_dir_all(state_dir).map_err(|e| {
            SourceError::Fatal(format!("cannot create {}: {e}", state_dir.display()))
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state = state_dir.join(format!("requeue-{name}.json"));
        let done_upto = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .and_then(|j| j["line"].as_u64())
            .unwrap_or(0);
        Ok(RequeueSource {
            path: path.to_path_buf(),
            item: item.to_string(),
            lines: std::io::BufReader::new(file).lines(),
            line: 0,
            done_upto,
            state,
            now: now_ms(),
        })
    }
}

impl Source for RequeueSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>, SourceError> {
        loop {
            let Some(text) = self.lines.next() else {
                return Ok(None);
            };
            self.line += 1;
            let text = text.map_err(|e| {
                SourceError::Fatal(format!("{} line {}: {e}", self.path.display(), self.line))
            })?;
            if self.line <= self.done_upto || text.trim().is_empty() {
                continue;
            }
            let label = format!("requeue {} line {}", self.path.display(), self.line);
            let entry: Json = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(e) => {
                    return Ok(Some(SourceRecord {
                        row: Default::default(),
                        position: json!(self.line),
                        label,
                        fallback_version: self.now,
                        problem: Some(format!("not a JSON line ({e}); fix it and requeue again")),
                        cells: None,
                    }))
                }
            };
            if entry["item"].as_str().is_some_and(|i| i != self.item) {
                continue;
            }
            let Some(row) = entry["row"].as_object() else {
                return Ok(Some(SourceRecord {
                    row: Default::default(),
                    position: json!(self.line),
                    label,
                    fallback_version: self.now,
                    problem: Some("the line has no \"row\" object".into()),
                    cells: None,
                }));
            };
            let was = entry["source_position"].as_str().unwrap_or("unknown");
            return Ok(Some(SourceRecord {
                row: Row::from_map(row.clone()),
                position: json!(self.line),
                label: format!("{label} (first quarantined at {was})"),
                // A correction is newer than what was quarantined.
                fallback_version: self.now,
                problem: None,
                cells: None,
            }));
        }
    }

    async fn commit(&mut self, position: &Json) -> Result<(), SourceError> {
        let tmp = self.state.with_extension("json.tmp");
        std::fs::write(&tmp, json!({"line": position}).to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.state))
            .map_err(|e| SourceError::Fatal(format!("cannot save {}: {e}", self.state.display())))
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}
