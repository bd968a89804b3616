//! The files `govbus provision` writes for each department and agency: `KEY=VALUE` lines
//! (`GOVBUS_ROLE`, `GOVBUS_AGENCY`, `GOVBUS_QUEUE`, the AMQP URL, the platform key, ...), read
//! by `govbus-agency` and by the department's `govbus quarantine`.
use std::{collections::HashMap, path::Path};

/// The `KEY=VALUE` lines of a file `govbus provision` wrote (comments skipped).
pub fn read(path: &Path) -> std::io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}
