//! `govbus backup` / `govbus restore`: the router's PostgreSQL state (ledger, catalogue
//! history, derived schemas, workflow, counts) and its catalogue and calendar files, consistent
//! and checksummed (article 38: regular backups).
//!
//! A backup is a folder (mode 0700, files 0600: it holds personal data):
//! - `tables/<table>.csv`: each table, `COPY … (FORMAT csv, HEADER)`, all read in one
//!   repeatable-read snapshot, so the ledger, its chain heads and everything else agree;
//! - `files/catalogue.toml` (and `files/workdays.toml` where configured);
//! - `manifest.json`: format, time, migrations applied, each table's columns and row count;
//! - `SHA256SUMS`: the SHA-256 of every other file (`sha256sum -c SHA256SUMS` checks it too).
//!
//! Restore checks every checksum first, refuses a database that already holds govbus data,
//! applies this binary's migrations, copies the tables in one transaction (referenced tables
//! first, named columns, so a backup from an older schema restores into a newer one), and sets
//! the id sequences past the restored rows. Private keys and secrets are not in a backup: they
//! are files the operator keeps apart (DESIGN.md).
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

const FORMAT: &str = "govbus-backup-1";
const SUMS: &str = "SHA256SUMS";
const MANIFEST: &str = "manifest.json";

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// `govbus-backup-1`.
    pub format: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// The govbus version that wrote it.
    pub govbus_version: String,
    /// Migration versions applied to the database it came from.
    pub migrations: Vec<i64>,
    /// Tables, in restore order (referenced tables first).
    pub tables: Vec<TableEntry>,
    /// Files beside the database: `catalogue`, `calendar`.
    pub files: Vec<FileEntry>,
}

/// One table of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: i64,
    /// Relative to the backup folder.
    pub file: String,
}

/// One file of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileEntry {
    /// `catalogue` or `calendar`.
    pub role: String,
    /// Relative to the backup folder.
    pub file: String,
}

/// A double-quoted SQL identifier (the names come from PostgreSQL's own catalogue, and are
/// quoted all the same).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The router's tables in dependency order (a table after the tables it references), each
/// with its columns in order.
async fn tables(conn: &mut sqlx::PgConnection) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
          WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations'
          ORDER BY tablename",
    )
    .fetch_all(&mut *conn)
    .await?;
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT cl.relname::text, rf.relname::text
           FROM pg_constraint c
           JOIN pg_class cl ON cl.oid = c.conrelid
           JOIN pg_class rf ON rf.oid = c.confrelid
          WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut needs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in &edges {
        if from != to {
            needs.entry(from).or_default().insert(to);
        }
    }
    let mut ordered: Vec<String> = Vec::with_capacity(names.len());
    while ordered.len() < names.len() {
        let before = ordered.len();
        for n in &names {
            let ready = needs
                .get(n.as_str())
                .is_none_or(|deps| deps.iter().all(|d| ordered.iter().any(|o| o == d)));
            if ready && !ordered.contains(n) {
                ordered.push(n.clone());
            }
        }
        anyhow::ensure!(
            ordered.len() > before,
            "the tables' foreign keys form a cycle; cannot order them"
        );
    }
    let mut out = Vec::with_capacity(ordered.len());
    for t in ordered {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
        )
        .bind(ident(&t))
        .fetch_all(&mut *conn)
        .await?;
        out.push((t, columns));
    }
    Ok(out)
}

/// SHA-256 of a file, hex.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// A new private file in the backup, or an error naming it.
fn create(path: &Path) -> anyhow::Result<std::fs::File> {
    bus_schemas::keys::create_private(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupSummary {
    pub tables: usize,
    pub rows: i64,
    pub ledger_rows: i64,
    pub bytes: u64,
}

/// Writes a backup of the database and `files` (role, path) into `dir`, which must not exist
/// or be empty.
pub async fn backup(
    pool: &PgPool,
    files: &[(&str, &Path)],
    dir: &Path,
    refusal_retention_days: u32,
) -> anyhow::Result<BackupSummary> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: give a new folder for each backup",
            dir.display()
        );
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for d in [dir.to_path_buf(), dir.join("tables"), dir.join("files")] {
            b.create(&d)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
        }
    }
    // Refused messages past their retention go before the snapshot, not into the backup.
    crate::store::refusals::purge_expired(pool, refusal_retention_days).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let created_at = chrono::Utc::now().to_rfc3339();
    let migrations: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
    let mut sums: Vec<(String, String)> = Vec::new();
    let mut entries = Vec::new();
    let (mut rows_total, mut bytes, mut ledger_rows) = (0i64, 0u64, 0i64);
    for (table, columns) in tables(&mut tx).await? {
        let rel = format!("tables/{table}.csv");
        let path = dir.join(&rel);
        let mut out = std::io::BufWriter::new(create(&path)?);
        let mut hash = Sha256::new();
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            ident(&table)
        )))
        .fetch_one(&mut *tx)
        .await?;
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let statement = format!(
            "COPY {} ({}) TO STDOUT WITH (FORMAT csv, HEADER true)",
            ident(&table),
            cols.join(", ")
        );
        let mut stream = tx.copy_out_raw(&statement).await?;
        while let Some(chunk) = stream.try_next().await? {
            hash.update(&chunk);
            bytes += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        drop(stream);
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
            .sync_all()?;
        sums.push((hex::encode(hash.finalize()), rel.clone()));
        rows_total += rows;
        if table == "ledger" {
            ledger_rows = rows;
        }
        entries.push(TableEntry {
            name: table,
            columns,
            rows,
            file: rel,
        });
    }
    tx.commit().await?;
    let mut file_entries = Vec::new();
    for (role, src) in files {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{role}.toml"));
        let rel = format!("files/{name}");
        let data = std::fs::read(src)
            .map_err(|e| anyhow::anyhow!("cannot read the {role} file {}: {e}", src.display()))?;
        let mut f = create(&dir.join(&rel))?;
        f.write_all(&data)?;
        f.sync_all()?;
        sums.push((hex::encode(Sha256::digest(&data)), rel.clone()));
        file_entries.push(FileEntry {
            role: role.to_string(),
            file: rel,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at,
        govbus_version: env!("CARGO_PKG_VERSION").into(),
        migrations,
        tables: entries,
        files: file_entries,
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    let mut f = create(&dir.join(MANIFEST))?;
    f.write_all(&text)?;
    f.sync_all()?;
    sums.push((hex::encode(Sha256::digest(&text)), MANIFEST.into()));
    let mut f = create(&dir.join(SUMS))?;
    for (sum, rel) in &sums {
        writeln!(f, "{sum}  {rel}")?;
    }
    f.sync_all()?;
    Ok(BackupSummary {
        tables: manifest.tables.len(),
        rows: rows_total,
        ledger_rows,
        bytes,
    })
}

/// Checks every checksum of a backup folder and reads its manifest. Every problem at once.
pub fn check(dir: &Path) -> anyhow::Result<Manifest> {
    let sums_path = dir.join(SUMS);
    let sums = std::fs::read_to_string(&sums_path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; is {} a govbus backup folder?",
            sums_path.display(),
            dir.display()
        )
    })?;
    let mut listed = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in sums.lines().enumerate() {
        match line.split_once("  ") {
            Some((sum, rel)) if !rel.contains("..") && !rel.starts_with('/') => {
                listed.insert(rel.to_string(), sum.to_string());
            }
            _ => problems.push(format!("{SUMS} line {}: not `<sha256>  <file>`", i + 1)),
        }
    }
    for (rel, sum) in &listed {
        match file_sha256(&dir.join(rel)) {
            Ok(actual) if &actual == sum => {}
            Ok(actual) => problems.push(format!(
                "{rel}: checksum {actual} is not the {sum} recorded in {SUMS}: the file changed after the backup"
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !listed.contains_key(MANIFEST) {
        problems.push(format!("{SUMS} does not list {MANIFEST}"));
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "backup {} is damaged ({} problem(s)); nothing was restored:\n  {}",
            dir.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join(MANIFEST))?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(MANIFEST).display()))?;
    anyhow::ensure!(
        manifest.format == FORMAT,
        "{}: format {} is not {FORMAT}; restore it with the govbus version that wrote it ({})",
        dir.join(MANIFEST).display(),
        manifest.format,
        manifest.govbus_version
    );
    for t in &manifest.tables {
        anyhow::ensure!(
            listed.contains_key(&t.file),
            "{MANIFEST} names {} but {SUMS} does not list it",
            t.file
        );
    }
    for f in &manifest.files {
        anyhow::ensure!(
            listed.contains_key(&f.file),
            "{MANIFEST} names {} but {SUMS} does not list it",
            f.file
        );
    }
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreSummary {
    pub tables: usize,
    pub rows: u64,
}

/// Restores a checked backup into `pool`'s database, which must hold no govbus data. The
/// caller has run [`check`]; the migrations are applied by [`crate::store::connect`].
pub async fn restore(
    pool: &PgPool,
    dir: &Path,
    manifest: &Manifest,
    refusal_retention_days: u32,
) -> anyhow::Result<RestoreSummary> {
    let known: BTreeSet<i64> = crate::store::MIGRATOR.iter().map(|m| m.version).collect();
    let newer: Vec<String> = manifest
        .migrations
        .iter()
        .filter(|v| !known.contains(v))
        .map(|v| v.to_string())
        .collect();
    anyhow::ensure!(
        newer.is_empty(),
        "the backup was written by a newer govbus ({}; migrations {} unknown here): restore it with that version",
        manifest.govbus_version,
        newer.join(", ")
    );
    let mut tx = pool.begin().await?;
    let here = tables(&mut tx).await?;
    for (table, _) in &here {
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            ident(table)
        )))
        .fetch_one(&mut *tx)
        .await?;
        anyhow::ensure!(
            !any,
            "the database already holds govbus data (table {table} has rows): restore into a new, empty database (createdb …) and point database.url at it"
        );
    }
    let mut rows = 0u64;
    for t in &manifest.tables {
        let Some((_, columns_here)) = here.iter().find(|(n, _)| n == &t.name) else {
            anyhow::bail!(
                "table {} of the backup does not exist in this govbus version's schema",
                t.name
            );
        };
        if let Some(c) = t.columns.iter().find(|c| !columns_here.contains(c)) {
            anyhow::bail!(
                "column {}.{c} of the backup does not exist in this govbus version's schema",
                t.name
            );
        }
        let path = dir.join(&t.file);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let cols: Vec<String> = t.columns.iter().map(|c| ident(c)).collect();
        let statement = format!(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)",
            ident(&t.name),
            cols.join(", ")
        );
        let mut copy = tx.copy_in_raw(&statement).await?;
        copy.read_from(file).await?;
        let n = copy
            .finish()
            .await
            .map_err(|e| anyhow::anyhow!("restoring {}: {e}", path.display()))?;
        anyhow::ensure!(
            n as i64 == t.rows,
            "{}: {n} rows restored, the manifest says {}",
            path.display(),
            t.rows
        );
        rows += n;
    }
    // Id sequences continue after the restored rows.
    let serials: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text,
                pg_get_serial_sequence(quote_ident(c.relname), a.attname)
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
          WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
            AND a.attnum > 0 AND NOT a.attisdropped
            AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (table, column, sequence) in serials {
        let max: Option<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT max({})::bigint FROM {}",
            ident(&column),
            ident(&table)
        )))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if let Some(max) = max {
            sqlx::query("SELECT setval($1, $2)")
                .bind(&sequence)
                .bind(max)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    // An old backup does not bring back refused messages past their retention.
    crate::store::refusals::purge_expired(pool, refusal_retention_days).await?;
    Ok(RestoreSummary {
        tables: manifest.tables.len(),
        rows,
    })
}

/// Where a backup's file of `role` is, if it has one.
pub fn file_of(dir: &Path, manifest: &Manifest, role: &str) -> Option<PathBuf> {
    manifest
        .files
        .iter()
        .find(|f| f.role == role)
        .map(|f| dir.join(&f.file))
}
