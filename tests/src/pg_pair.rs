//! A PostgreSQL primary and its synchronous standby of the test's own, on other ports, built
//! from the installed server (`initdb`, `pg_basebackup`, run as the `postgres` user: PostgreSQL
//! refuses to run as root). It never touches the shared server. Stopped and removed on drop.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};

/// The standby's `application_name`, named in the primary's `synchronous_standby_names`.
const STANDBY: &str = "govbus_standby";

/// A primary on `primary_port` replicating synchronously to a standby on `standby_port`.
pub struct PgPair {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The primary's port.
    pub primary_port: u16,
    /// The standby's port.
    pub standby_port: u16,
}

/// The installed server's programs: `GOVBUS_PG_BIN`, else the newest /usr/lib/postgresql/*/bin.
fn bin_dir() -> PathBuf {
    if let Ok(b) = std::env::var("GOVBUS_PG_BIN") {
        return b.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("no /usr/lib/postgresql: install PostgreSQL's server or set GOVBUS_PG_BIN")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin: set GOVBUS_PG_BIN")
}

impl PgPair {
    /// Builds both servers, starts them, and waits until the standby replicates synchronously.
    pub async fn start() -> PgPair {
        let dir = tempfile::tempdir().unwrap();
        let pair = PgPair {
            bin: bin_dir(),
            primary_port: crate::free_port(),
            standby_port: crate::free_port(),
            dir,
        };
        pair.run("chown", &["-R", "postgres", pair.root()], false);
        let primary = pair.data("primary");
        pair.pg(
            "initdb",
            &[
                "-D",
                &primary,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pair.append(
            "primary",
            &format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 wal_level = replica\nmax_wal_senders = 5\n\
                 synchronous_standby_names = '{STANDBY}'\nsynchronous_commit = on\n",
                pair.primary_port,
                pair.root()
            ),
        );
        pair.start_server("primary");
        let standby = pair.data("standby");
        let port = pair.primary_port.to_string();
        pair.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &standby,
                "-R",
                "-X",
                "stream",
            ],
        );
        // A promoted standby must not wait for a synchronous standby of its own. The
        // connection `pg_basebackup -R` wrote to postgresql.auto.conf (read last) gets the name
        // the primary waits for.
        pair.append(
            "standby",
            &format!(
                "port = {}\nsynchronous_standby_names = ''\n",
                pair.standby_port
            ),
        );
        pair.append_to(
            "standby",
            "postgresql.auto.conf",
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={STANDBY}'\n",
                pair.primary_port
            ),
        );
        pair.start_server("standby");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = PgConnection::connect(&pair.url(pair.primary_port, "postgres"))
            .await
            .unwrap();
        loop {
            let state: Option<String> = sqlx::query_scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
            )
            .bind(STANDBY)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
            if state.as_deref() == Some("sync") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the standby did not replicate synchronously in 60 s ({state:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sqlx::raw_sql("CREATE DATABASE govbus")
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        pair
    }

    fn root(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn data(&self, name: &str) -> String {
        format!("{}/{name}", self.root())
    }

    /// A database URL on one of the pair's ports.
    pub fn url(&self, port: u16, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{db}")
    }

    /// `database.url` naming both: the primary first.
    pub fn urls(&self, db: &str) -> String {
        format!(
            "{},{}",
            self.url(self.primary_port, db),
            self.url(self.standby_port, db)
        )
    }

    fn append(&self, name: &str, lines: &str) {
        self.append_to(name, "postgresql.conf", lines);
    }

    fn append_to(&self, name: &str, file: &str, lines: &str) {
        use std::io::Write;
        let path = Path::new(&self.data(name)).join(file);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(lines.as_bytes()).unwrap();
    }

    fn run(&self, program: &str, args: &[&str], as_postgres: bool) {
        let mut cmd = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(args).current_dir(self.root()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let p = self.bin.join(program);
        self.run(p.to_str().unwrap(), args, true);
    }

    fn start_server(&self, name: &str) {
        let log = format!("{}/{name}.log", self.root());
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(name),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the primary at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash_primary(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data("primary"), "-m", "immediate", "stop"],
        );
    }

    /// Promotes the standby to primary and waits until it takes writes.
    pub fn promote_standby(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data("standby"), "-w", "-t", "60", "promote"],
        );
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for name in ["standby", "primary"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data(name), "-m", "immediate", "stop"])
                .output();
        }
    }
}
