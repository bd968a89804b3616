//! Files dropped into a folder, whatever their format (CSV, Excel). Files are taken in name
//! order. A file moves to `done/` only when every row of it is confirmed or quarantined; a
//! partly sent file resumes at its next unconfirmed row, with the same versions (and so the
//! same message ids) as before.
use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::record::{now_ms, Cells, Row, Source, SourceError, SourceRecord};
use crate::checkpoint::StateFile;

/// Where the files are: the part of `[source]` every folder kind shares.
#[derive(Debug, Clone)]
pub struct Folder {
    /// The folder files are dropped into.
    pub path: PathBuf,
    /// Where finished files go.
    pub done_dir: PathBuf,
    /// File name endings to pick up; other files are left alone.
    pub suffixes: Vec<String>,
    /// How often to look for new files when idle.
    pub poll: Duration,
}

impl Folder {
    /// `path`, finished files to `done_dir` (default `path/done`), files ending in one of
    /// `suffixes`, looked for every `poll_ms` when idle.
    pub fn new(
        path: PathBuf,
        done_dir: Option<PathBuf>,
        suffixes: Vec<String>,
        poll_ms: u64,
    ) -> Folder {
        Folder {
            done_dir: done_dir.unwrap_or_else(|| path.join("done")),
            path,
            suffixes,
            poll: Duration::from_millis(poll_ms),
        }
    }
}

/// One row of a file: where it is (`line 12`, `Sheet1!12:12`), its columns or why it cannot be
/// read, and, for a sheet, how to name its cells.
pub struct FileRow {
    pub at: String,
    pub row: Result<Row, String>,
    pub cells: Option<Cells>,
}

/// A file being read, one row at a time.
pub trait FileRows: Send + 'static {
    /// Rows in the file (after its header).
    fn total(&self) -> usize;
    /// Index of the next row `read` yields.
    fn index(&self) -> usize;
    /// The next row; `None` at the end.
    fn read(&mut self) -> Option<FileRow>;
}

/// A file format: how to open one file for reading (on a blocking thread).
pub trait FileFormat: Send + Sync + Clone + 'static {
    type Rows: FileRows;
    /// For logs and state: `CSV`, `Excel`.
    const WHAT: &'static str;
    /// The state file's name in the state directory.
    const STATE_FILE: &'static str;
    /// Opens the file at `path`, named `name` in labels.
    fn open(&self, path: &Path, name: &str) -> Result<Self::Rows, SourceError>;
}

/// What the state file remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FolderState {
    /// The file being sent, with the index of the next row not yet confirmed.
    file: Option<String>,
    next: usize,
    /// Files opened and not yet finished, with their version base: versions of their rows
    /// (without a version column) are `base + row index`. Saved before a row is yielded, so a
    /// re-read after a crash gives the same versions and so the same message ids.
    bases: BTreeMap<String, i64>,
    /// The next file's version base is at least this (keeps versions monotone across files).
    version_floor: i64,
}

struct Current<R> {
    name: String,
    rows: R,
    version_base: i64,
}

/// The folder source, for any file format.
pub struct FolderSource<F: FileFormat> {
    folder: Folder,
    format: F,
    state_file: StateFile,
    state: FolderState,
    /// Files read (or being read) whose rows are not all committed yet, oldest first.
    open: VecDeque<(String, usize, i64)>,
    current: Option<Current<F::Rows>>,
}

impl<F: FileFormat> FolderSource<F> {
    /// Opens the source, reading its saved position from `state_dir`.
    pub fn new(folder: Folder, format: F, state_dir: &Path) -> anyhow::Result<Self> {
        if !folder.path.is_dir() {
            anyhow::bail!(
                "source.path {} is not a folder; create it or fix the path",
                folder.path.display()
            );
        }
        std::fs::create_dir_all(&folder.done_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", folder.done_dir.display()))?;
        let state_file = StateFile::new(state_dir, F::STATE_FILE)?;
        let mut state: FolderState = state_file.load()?.unwrap_or_default();
        // Files moved to done/ just before a crash, before the state was saved.
        let gone: Vec<String> = state
            .bases
            .keys()
            .filter(|f| !folder.path.join(f).exists())
            .cloned()
            .collect();
        for f in gone {
            state.bases.remove(&f);
            if state.file.as_deref() == Some(f.as_str()) {
                state.file = None;
                state.next = 0;
            }
        }
        Ok(FolderSource {
            folder,
            format,
            state_file,
            state,
            open: VecDeque::new(),
            current: None,
        })
    }

    fn pending_files(&self) -> Result<Vec<String>, SourceError> {
        let entries = std::fs::read_dir(&self.folder.path).map_err(|e| {
            SourceError::Fatal(format!("cannot list {}: {e}", self.folder.path.display()))
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                !n.starts_with('.')
                    // Office's lock files (`~$户籍.xlsx`) while a file is open in Excel.
                    && !n.starts_with("~$")
                    && self.folder.suffixes.iter().any(|s| n.ends_with(s.as_str()))
            })
            .filter(|n| !self.open.iter().any(|(o, _, _)| o == n))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn open_next(&mut self) -> Result<bool, SourceError> {
        let Some(name) = self.pending_files()?.into_iter().next() else {
            return Ok(false);
        };
        let path = self.folder.path.join(&name);
        let (format, label) = (self.format.clone(), name.clone());
        let mut rows = tokio::task::spawn_blocking(move || format.open(&path, &label))
            .await
            .map_err(|e| SourceError::Fatal(format!("reading {name} panicked: {e}")))??;
        let total = rows.total();
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
                self.state.version_floor = b + total as i64 + 1;
                if self.state.file.is_none() {
                    self.state.file = Some(name.clone());
                    self.state.next = 0;
                }
                self.save()?;
                b
            }
        };
        while rows.index() < start.min(total) {
            rows.read();
        }
        tracing::info!(file = %name, rows = total, resume_at = start, "reading {} file", F::WHAT);
        self.open.push_back((name.clone(), total, base));
        self.current = Some(Current {
            name,
            rows,
            version_base: base,
        });
        Ok(true)
    }

    fn save(&self) -> Result<(), SourceError> {
        self.state_file
            .save(&self.state)
            .map_err(|e| SourceError::Fatal(format!("cannot save the {} position: {e}", F::WHAT)))
    }

    fn finish_file(&mut self, name: &str) -> Result<(), SourceError> {
        let from = self.folder.path.join(name);
        let mut to = self.folder.done_dir.join(name);
        if to.exists() {
            to = self.folder.done_dir.join(format!("{}.{}", name, now_ms()));
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

impl<F: FileFormat> Source for FolderSource<F> {
    async fn next(&mut self) -> Result<Option<SourceRecord>, SourceError> {
        loop {
            if let Some(cur) = &mut self.current {
                let i = cur.rows.index();
                if let Some(r) = cur.rows.read() {
                    let (row, problem) = match r.row {
                        Ok(r) => (r, None),
                        Err(p) => (Row::default(), Some(p)),
                    };
                    return Ok(Some(SourceRecord {
                        row,
                        position: json!({"file": cur.name, "next": i + 1}),
                        label: format!("{}:{}", cur.name, r.at),
                        fallback_version: cur.version_base + i as i64,
                        problem,
                        cells: r.cells,
                    }));
                }
                self.current = None;
            }
            if !self.open_next().await? {
                return Ok(None);
            }
            // An empty file (header only, or resumed at its end) finishes at once.
            if let Some(cur) = &self.current {
                if cur.rows.index() >= cur.rows.total() {
                    let pos = json!({"file": cur.name, "next": cur.rows.total()});
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
        self.folder.poll
    }
}
