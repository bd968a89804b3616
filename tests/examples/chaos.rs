//! The fault campaign behind `scripts/chaos` (not part of CI: it restarts the shared RabbitMQ
//! and PostgreSQL). For N rounds, with records flowing from two departments' adapters through
//! the router into four agencies' sinks, it SIGKILLs a random process (an adapter, the router,
//! a sink) or restarts RabbitMQ or PostgreSQL at a random moment. At the end every record's
//! latest version must have reached every agency granted its item (ledger and sink tables),
//! no agency may hold anything ungranted, and the ledger must verify.
//!
//! `cargo run -p govbus-tests --example chaos -- [ROUNDS] [SEED]`
#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use common::{citizen, World};
use govbus_tests::{ChaosOptions, Process, Services, TestDatabase, CHAOS_USAGE};

/// Grants of the example catalogue in force today: (agency, item) → granted fields, and
/// whether the grant is limited to Tianhe (even-numbered enterprises in `World::commerce`).
fn grants() -> Vec<(&'static str, &'static str, &'static [&'static str], bool)> {
    vec![
        (
            "civil",
            "household",
            &[
                "citizen_id_number",
                "name",
                "sex",
                "status",
                "cancellation_date",
                "cancellation_reason",
            ],
            false,
        ),
        (
            "health",
            "household",
            &["citizen_id_number", "sex", "ethnicity", "status"],
            false,
        ),
        (
            "hrss",
            "enterprise",
            &[
                "unified_social_credit_code",
                "name",
                "legal_representative.name",
                "legal_representative.id_type",
                "legal_representative.id_number",
                "established_date",
            ],
            false,
        ),
        (
            "health",
            "enterprise",
            &[
                "unified_social_credit_code",
                "name",
                "legal_representative.id_type",
                "legal_representative.id_number",
            ],
            false,
        ),
        (
            "tianhe",
            "enterprise",
            &[
                "unified_social_credit_code",
                "name",
                "division_code",
                "registered_address",
            ],
            true,
        ),
    ]
}

/// A small deterministic generator (xorshift), so a seed replays a campaign's choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres_version() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster (pg_ctlcluster) is needed to restart PostgreSQL")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v.pop().expect("a PostgreSQL version under /etc/postgresql")
}

struct Fleet {
    police: Option<Process>,
    commerce: Option<Process>,
    sinks: BTreeMap<&'static str, Process>,
    sink_args: BTreeMap<&'static str, Vec<String>>,
}

impl Fleet {
    fn adapter(cfg: &std::path::Path) -> Process {
        Process::spawn("govbus-adapter", &["--config".as_ref(), cfg.as_os_str()])
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (rounds, seed) = match ChaosOptions::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => (o.rounds, o.seed),
        Ok(None) => {
            println!("{CHAOS_USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("chaos: {e}\n{CHAOS_USAGE}");
            std::process::exit(2);
        }
    };
    let mut rng = Rng(seed);
    println!("chaos: {rounds} rounds, seed {seed}");
    let started = Instant::now();

    let mut w = World::new().await;
    w.start_router().await;
    let agencies_db = TestDatabase::create(&Services::from_env()).await.unwrap();
    // Adapters run all along; each round drops new files into their folders.
    let police_cfg = w.police(0, 0, 1);
    let commerce_cfg = w.commerce(0, 0);
    let mut fleet = Fleet {
        police: Some(Fleet::adapter(&police_cfg)),
        commerce: Some(Fleet::adapter(&commerce_cfg)),
        sinks: BTreeMap::new(),
        sink_args: BTreeMap::new(),
    };
    for agency in ["civil", "health", "hrss", "tianhe"] {
        let mut a = vec!["--postgres".to_string(), agencies_db.url.clone()];
        for (g, item, _, _) in grants() {
            if g == agency {
                a.push("--table".into());
                a.push(format!("{item}={agency}_{item}"));
            }
        }
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        fleet
            .sinks
            .insert(agency, w.spawn_agency_tool("sink", agency, &refs));
        fleet.sink_args.insert(agency, a);
    }

    // What the sources published: police record n → its latest version; commerce count.
    let mut police: BTreeMap<u64, u64> = BTreeMap::new();
    let mut commerce = 0u64;
    let mut versions = 0u64;
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let pg = postgres_version();
    for round in 1..=rounds {
        // New records, and newer versions of some earlier ones.
        let from = police.len() as u64;
        let cfg = w.police(from, from + 150, 1);
        debug_assert_eq!(cfg, police_cfg);
        for n in from..from + 150 {
            police.insert(n, 1);
        }
        versions += 150;
        if from > 0 {
            let version = round + 1;
            let mut csv = String::from("id,name,sex,ethnicity,status,version,op\n");
            for _ in 0..50 {
                let n = rng.below(from);
                police.insert(n, version);
                versions += 1;
                csv.push_str(&format!(
                    "{},居民{n}改,女,汉族,正常,{version},U\n",
                    citizen(n)
                ));
            }
            w.drop_csv("police", &format!("update-{round}.csv"), &csv);
        }
        w.commerce(commerce, commerce + 60);
        commerce += 60;
        versions += 60;

        tokio::time::sleep(Duration::from_millis(200 + rng.below(2500))).await;
        let kind = match rng.below(7) {
            0 => "kill police adapter",
            1 => "kill commerce adapter",
            2 | 3 => "kill router",
            4 => "kill a sink",
            5 => "restart RabbitMQ",
            _ => "restart PostgreSQL",
        };
        let pause = Duration::from_millis(200 + rng.below(2000));
        match kind {
            "kill police adapter" => {
                fleet.police.take().unwrap().kill();
                tokio::time::sleep(pause).await;
                fleet.police = Some(Fleet::adapter(&police_cfg));
            }
            "kill commerce adapter" => {
                fleet.commerce.take().unwrap().kill();
                tokio::time::sleep(pause).await;
                fleet.commerce = Some(Fleet::adapter(&commerce_cfg));
            }
            "kill router" => {
                w.router.take().unwrap().kill();
                tokio::time::sleep(pause).await;
                w.start_router().await;
            }
            "kill a sink" => {
                let agency = ["civil", "health", "hrss", "tianhe"][rng.below(4) as usize];
                fleet.sinks.remove(agency).unwrap().kill();
                tokio::time::sleep(pause).await;
                let refs: Vec<&str> = fleet.sink_args[agency].iter().map(String::as_str).collect();
                fleet
                    .sinks
                    .insert(agency, w.spawn_agency_tool("sink", agency, &refs));
            }
            "restart RabbitMQ" => {
                run(
                    Command::new("rabbitmqctl").arg("stop_app"),
                    "rabbitmqctl stop_app",
                );
                tokio::time::sleep(pause).await;
                run(
                    Command::new("rabbitmqctl").arg("start_app"),
                    "rabbitmqctl start_app",
                );
            }
            _ => run(
                Command::new("pg_ctlcluster").args([
                    "--skip-systemctl-redirect",
                    &pg,
                    "main",
                    "restart",
                ]),
                "pg_ctlcluster restart",
            ),
        }
        *faults.entry(kind).or_default() += 1;
        println!(
            "round {round:>2}: {kind:<22} police {:>5} records, commerce {:>5}, {:>4.0} s",
            police.len(),
            commerce,
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(rng.below(2000))).await;
    }

    // Settle: every file sent, the router's and every agency's queue empty, the ledger still.
    println!("settling …");
    let pool = loop {
        if let Ok(p) = sqlx::PgPool::connect(&w.db.url).await {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = (-1i64, Instant::now());
    loop {
        let inboxes_empty = ["police", "commerce"].iter().all(|d| {
            std::fs::read_dir(w.path(&format!("adapters/{d}/inbox")))
                .map(|r| r.filter_map(|e| e.ok()).all(|e| e.path().is_dir()))
                .unwrap_or(false)
        });
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        if rows != last.0 {
            last = (rows, Instant::now());
        }
        let mut queues_empty = inboxes_empty && w.count("govbus.router").await == 0;
        for a in ["civil", "health", "hrss", "tianhe"] {
            queues_empty &= queues_empty && w.count(&format!("agency.{a}")).await == 0;
        }
        if queues_empty && last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        assert!(Instant::now() < deadline, "not settled within 600 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The sinks commit in batches: give them a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, s) in std::mem::take(&mut fleet.sinks) {
        s.terminate();
    }

    // Expected latest-version histogram per (agency, item).
    let mut police_hist: BTreeMap<i64, i64> = BTreeMap::new();
    for v in police.values() {
        *police_hist.entry(*v as i64).or_default() += 1;
    }
    let expect = |item: &str, tianhe_only: bool| -> BTreeMap<i64, i64> {
        match item {
            "household" => police_hist.clone(),
            _ => BTreeMap::from([(
                1,
                if tianhe_only {
                    commerce.div_ceil(2) as i64
                } else {
                    commerce as i64
                },
            )]),
        }
    };
    let agencies = sqlx::PgPool::connect(&agencies_db.url).await.unwrap();
    let mut lost = 0i64;
    let mut ungranted = 0i64;
    let mut sink_short = 0i64;
    let mut delivered = 0i64;
    for (agency, item, fields, tianhe_only) in grants() {
        let want = expect(item, tianhe_only);
        let got: BTreeMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
            "SELECT v, count(*) FROM (SELECT key_hash, max(version) AS v FROM ledger
              WHERE agency = $1 AND item = $2 GROUP BY key_hash) x GROUP BY v",
        )
        .bind(agency)
        .bind(item)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let want_n: i64 = want.values().sum();
        let got_n: i64 = got.values().sum();
        delivered += got_n;
        lost += (want_n - got_n).max(0);
        ungranted += (got_n - want_n).max(0);
        if got != want {
            println!("  {agency}/{item}: ledger latest versions {got:?}, expected {want:?}");
        }
        // Fields beyond the grant.
        let extra: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledger WHERE agency = $1 AND item = $2 AND NOT (fields <@ $3)",
        )
        .bind(agency)
        .bind(item)
        .bind(fields.iter().map(|f| f.to_string()).collect::<Vec<_>>())
        .fetch_one(&pool)
        .await
        .unwrap();
        ungranted += extra;
        // The agency's own table: one row per record, at its latest version.
        let table = format!("{agency}_{item}");
        let in_sink: BTreeMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(
            format!("SELECT govbus_version, count(*) FROM {table} GROUP BY 1"),
        ))
        .fetch_all(&agencies)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
        if in_sink != want {
            sink_short += (want_n - in_sink.values().sum::<i64>()).abs();
            println!("  {table}: sink latest versions {in_sink:?}, expected {want:?}");
        }
    }
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger WHERE (agency, item) NOT IN
           (('civil','household'), ('health','household'), ('hrss','enterprise'),
            ('health','enterprise'), ('tianhe','enterprise'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    ungranted += outside;
    let verify = Process::command("govbus")
        .args(["ledger", "verify", "--database-url", &w.db.url])
        .output()
        .unwrap();
    let ledger_ok = verify.status.success();

    let published = police.len() as u64 + commerce;
    println!(
        "chaos done in {:.0} s: {rounds} rounds, seed {seed}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  faults: {}",
        faults
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  published: {published} records ({} police, {commerce} commerce; {versions} versions in {} files)",
        police.len(),
        3 * rounds - 1
    );
    println!(
        "  delivered: {delivered} (agency, record) pairs at their latest version; lost {lost}; ungranted {ungranted}; sink rows off {sink_short}; ledger {}",
        if ledger_ok { "verifies" } else { "BROKEN" }
    );
    for p in [fleet.police.take(), fleet.commerce.take()]
        .into_iter()
        .flatten()
    {
        p.terminate();
    }
    if lost > 0 || ungranted > 0 || sink_short > 0 || !ledger_ok {
        std::process::exit(1);
    }
}
