//! Durable source positions: a small JSON file in the state directory, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory), so a crash leaves either the
//! old position or the new one, never a torn file.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

/// One JSON state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file `name` in `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(StateFile {
            path: dir.join(name),
        })
    }

    /// The saved state, or `None` when there is none yet.
    pub fn load<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "state file {} is corrupt ({e}); restore it or remove it to start over",
                    self.path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read state file {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save<T: Serialize>(&self, state: &T) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(state).expect("state serialises"))?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
