//! `govbus-agency sink --apply-pseudonym-map FILE`: after the platform rotated its pseudonym
//! secret, rewrites the agency's own rows from the old tokens to the new ones (the
//! `old_token,new_token` file `govbus pseudonym-map` made for this agency), in one transaction,
//! so the agency's links between records survive the rotation. Where a person's record arrived
//! under both tokens, the newer version is kept.
use std::{collections::HashMap, path::Path};

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, Row};

use crate::sink::{tombstones, valid_table, Tables};

/// What applying a map changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Token pairs in the file.
    pub pairs: usize,
    /// Rows whose record key was a token and now is the new one.
    pub keys: u64,
    /// Rows of the same person under both tokens merged into the newer.
    pub merged: u64,
    /// Values replaced in other columns (text columns, and strings inside JSON columns).
    pub values: u64,
}

/// Reads `old_token,new_token` lines (with that header), naming the line of any problem.
pub fn read_map(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "old_token,new_token")) => {}
        _ => anyhow::bail!(
            "{}:1: expected the header `old_token,new_token` (the file `govbus pseudonym-map` writes)",
            path.display()
        ),
    }
    let token = |t: &str| {
        t.starts_with("pgb")
            && t.contains('_')
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let mut map = HashMap::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (old, new) = line
            .split_once(',')
            .filter(|(o, n)| token(o) && token(n))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}:{}: not `old_token,new_token` (two pgb…_ tokens)",
                    path.display(),
                    i + 1
                )
            })?;
        map.insert(old.to_string(), new.to_string());
    }
    Ok(map)
}

/// Replaces every string of `v` that is an old token; returns how many.
fn replace_in(v: &mut Json, map: &HashMap<String, String>) -> u64 {
    match v {
        Json::String(s) => match map.get(s.as_str()) {
            Some(n) => {
                *s = n.clone();
                1
            }
            None => 0,
        },
        Json::Array(a) => a.iter_mut().map(|x| replace_in(x, map)).sum(),
        Json::Object(o) => o.values_mut().map(|x| replace_in(x, map)).sum(),
        _ => 0,
    }
}

/// Applies `map` to every table of `tables` (and its tombstones) in one transaction.
pub async fn apply(
    pool: &sqlx::PgPool,
    tables: &Tables,
    map: &HashMap<String, String>,
) -> anyhow::Result<Applied> {
    let mut out = Applied {
        pairs: map.len(),
        ..Default::default()
    };
    let mut tx = pool.begin().await?;
    sqlx::query("CREATE TEMP TABLE govbus_pseudonym_map (old text PRIMARY KEY, new text NOT NULL) ON COMMIT DROP")
        .execute(&mut *tx)
        .await?;
    let (olds, news): (Vec<&str>, Vec<&str>) =
        map.iter().map(|(o, n)| (o.as_str(), n.as_str())).unzip();
    sqlx::query("INSERT INTO govbus_pseudonym_map SELECT * FROM unnest($1::text[], $2::text[])")
        .bind(&olds)
        .bind(&news)
        .execute(&mut *tx)
        .await?;
    for t in tables.names() {
        anyhow::ensure!(valid_table(t), "`{t}` is not a table name");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            continue;
        }
        let ts = tombstones(t);
        // The same person under both tokens: keep the newer version's row.
        for sql in [
            "DELETE FROM {t} n USING govbus_pseudonym_map m, {t} o
              WHERE n.govbus_key = m.new AND o.govbus_key = m.old
                AND o.govbus_item = n.govbus_item AND o.govbus_version > n.govbus_version",
            "DELETE FROM {t} o USING govbus_pseudonym_map m, {t} n
              WHERE o.govbus_key = m.old AND n.govbus_key = m.new AND n.govbus_item = o.govbus_item",
        ] {
            out.merged += sqlx::query(AssertSqlSafe(sql.replace("{t}", t)))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        out.keys += sqlx::query(AssertSqlSafe(format!(
            "UPDATE {t} SET govbus_key = m.new FROM govbus_pseudonym_map m WHERE {t}.govbus_key = m.old"
        )))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let has_tombstones: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&ts)
            .fetch_one(&mut *tx)
            .await?;
        if has_tombstones {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {ts} (govbus_item, govbus_key, govbus_version)
                 SELECT d.govbus_item, m.new, d.govbus_version FROM {ts} d
                   JOIN govbus_pseudonym_map m ON d.govbus_key = m.old
                 ON CONFLICT (govbus_item, govbus_key) DO UPDATE
                   SET govbus_version = GREATEST({ts}.govbus_version, EXCLUDED.govbus_version)"
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {ts} USING govbus_pseudonym_map m WHERE {ts}.govbus_key = m.old"
            )))
            .execute(&mut *tx)
            .await?;
        }
        let columns: Vec<(String, String)> = sqlx::query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = $1
                AND column_name NOT LIKE 'govbus\\_%'",
        )
        .bind(t.rsplit('.').next().unwrap_or(t))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        for (c, ty) in columns {
            let q = format!("\"{}\"", c.replace('"', "\"\""));
            match ty.as_str() {
                "text" | "character varying" => {
                    out.values += sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {t} SET {q} = m.new FROM govbus_pseudonym_map m WHERE {t}.{q} = m.old"
                    )))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                "jsonb" => {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT govbus_item, govbus_key, {q} FROM {t} WHERE {q}::text LIKE '%\"pgb%'"
                    )))
                    .fetch_all(&mut *tx)
                    .await?;
                    for r in rows {
                        let (item, key): (String, String) = (r.get(0), r.get(1));
                        let mut v: Json = r.get(2);
                        let n = replace_in(&mut v, map);
                        if n > 0 {
                            sqlx::query(AssertSqlSafe(format!(
                                "UPDATE {t} SET {q} = $3 WHERE govbus_item = $1 AND govbus_key = $2"
                            )))
                            .bind(&item)
                            .bind(&key)
                            .bind(&v)
                            .execute(&mut *tx)
                            .await?;
                            out.values += n;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}
