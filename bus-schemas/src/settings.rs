//! Environment overrides shared by every govbus program: `GOVBUS__SECTION__KEY` overrides
//! `key` in `[section]` (`__` separates levels, since a single `_` is part of names).
//!
//! One environment often serves several programs (a compose file, CI), so a variable for a
//! section this program does not have at all (`GOVBUS__DATABASE__URL` for an adapter) is
//! skipped. An unknown key inside a section the program has is still an error.

/// The `GOVBUS__…` variables of `vars` whose first level is one of `known_sections`, with the
/// prefix removed and levels joined by `.` (lowercased), ready for the `config` crate.
pub fn env_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
    known_sections: &[&str],
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("GOVBUS__")?;
            let path = rest.split("__").map(str::to_lowercase).collect::<Vec<_>>();
            known_sections
                .contains(&path.first()?.as_str())
                .then(|| (path.join("."), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known sections pass, with nesting by `__`; other programs' sections and other variables do not.
    #[test]
    fn filtering() {
        let vars = [
            ("GOVBUS__AMQP__URL", "amqp://x"),
            ("GOVBUS__AMQP__CONFIRM_WINDOW", "10"),
            ("GOVBUS__DATABASE__URL", "postgres://x"),
            ("GOVBUS__SOURCE__PATH", "/in"),
            ("GOVBUS_PYTHON", "/py"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            env_overrides(vars, &["amqp", "source"]),
            vec![
                ("amqp.url".to_string(), "amqp://x".to_string()),
                ("amqp.confirm_window".to_string(), "10".to_string()),
                ("source.path".to_string(), "/in".to_string()),
            ]
        );
    }
}
