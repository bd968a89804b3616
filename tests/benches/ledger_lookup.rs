//! `scripts/bench ledger-lookup`: the lookup a dispute makes (an agency's delivery by message
//! id, through the id-secret aliases, `router/src/workflow/disputes.rs`) in a scratch ledger of
//! 10 million rows (200 agencies, the router's own migrations and indexes), timed by PostgreSQL
//! with `EXPLAIN (ANALYZE, BUFFERS)`. The baseline is the best plain lookup of the same ids: a
//! table of (agency, message_id) keyed by them alone, filled with the same rows. Target: the
//! dispute's lookup ≤ 10 ms. Prints `ratio=<baseline ms / ledger ms>` (medians over 200
//! lookups of random ids each, after one cold lookup of each that is printed too).
//!
//! `BENCH_LEDGER_ROWS` changes the size (default 10,000,000); the database is dropped at the end.
use std::time::Instant;

use govbus_tests::{Services, TestDatabase};
use sqlx::{postgres::PgPoolOptions, PgPool, Row};

const AGENCIES: i64 = 200;
const LOOKUPS: usize = 200;

/// The lookup as the dispute makes it.
const DISPUTE_LOOKUP: &str =
    "SELECT l.item, COALESCE(a.current, l.key_hash) AS key_hash, l.version, l.department
     FROM ledger l LEFT JOIN key_hash_aliases a ON a.item = l.item AND a.hash = l.key_hash
     WHERE l.agency = $1 AND l.message_id = COALESCE(
         (SELECT ledger_id FROM delivery_id_aliases WHERE agency = $1 AND message_id = $2), $2)";

const PLAIN_LOOKUP: &str = "SELECT agency FROM plain_lookup WHERE agency = $1 AND message_id = $2";

/// (agency, message id) of row `g`, as the fill makes them.
fn ids_of(g: i64) -> (String, String) {
    (format!("agency{}", g % AGENCIES), message_id(g))
}

fn message_id(g: i64) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("m{g}").as_bytes()))
}

async fn fill(pool: &PgPool, rows: i64) {
    let chunk = 1_000_000i64;
    let mut from = 0;
    while from < rows {
        let to = (from + chunk).min(rows);
        let t = Instant::now();
        sqlx::query(
            "INSERT INTO ledger (agency, seq, grant_id, grant_revision, item, message_id, ingest_id,
                                 key_hash, version, op, fields, department, dept_key_id,
                                 delivered_at_us, prev_hash, hash, dept_batch, dept_leaf)
             SELECT 'agency' || (g % $3), g / $3 + 1, 'grant-' || (g % 7), 1, 'household',
                    encode(sha256(('m' || g)::bytea), 'hex'), encode(sha256(('i' || g)::bytea), 'hex'),
                    encode(sha256(('k' || g)::bytea), 'hex'), 1 + g % 5, 'upsert',
                    '{citizen_id_number,name,sex,status}', 'police', 'police-2026',
                    1700000000000000 + g * 1000,
                    sha256(('p' || g)::bytea), sha256(('h' || g)::bytea),
                    sha256(('b' || g / 1024)::bytea), (g % 1024)::int
               FROM generate_series($1::bigint, $2::bigint - 1) g",
        )
        .bind(from)
        .bind(to)
        .bind(AGENCIES)
        .execute(pool)
        .await
        .unwrap();
        println!(
            "  ledger rows {from}..{to} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        from = to;
    }
    let t = Instant::now();
    // One statement at a time: VACUUM cannot run inside the transaction a multi-statement
    // query makes.
    for sql in [
        "CREATE TABLE plain_lookup AS SELECT agency, message_id FROM ledger",
        "ALTER TABLE plain_lookup ADD PRIMARY KEY (agency, message_id)",
        "VACUUM ANALYZE ledger",
        "VACUUM ANALYZE plain_lookup",
        "VACUUM ANALYZE key_hash_aliases",
        "VACUUM ANALYZE delivery_id_aliases",
    ] {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
    }
    println!(
        "  baseline table and statistics in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// PostgreSQL's execution time of one lookup, in ms, and its plan.
async fn explain(pool: &PgPool, sql: &str, agency: &str, id: &str) -> (f64, String) {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"
    )))
    .bind(agency)
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    let plan: serde_json::Value = rows[0].get(0);
    let ms = plan[0]["Execution Time"].as_f64().expect("Execution Time")
        + plan[0]["Planning Time"].as_f64().unwrap_or(0.0);
    (
        ms,
        plan[0]["Plan"]["Node Type"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rows: i64 = std::env::var("BENCH_LEDGER_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000_000);
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::migrate!("../router/migrations")
        .run(&pool)
        .await
        .unwrap();
    println!(
        "ledger-lookup bench: {rows} ledger rows over {AGENCIES} agencies in {}",
        db.name
    );
    fill(&pool, rows).await;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('ledger'))")
            .fetch_one(&pool)
            .await
            .unwrap();
    println!("  ledger with its indexes: {size}");

    // Random rows (xorshift, fixed seed): each looked up cold once, then timed.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let picks: Vec<(String, String)> = (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ids_of((x % rows as u64) as i64)
        })
        .collect();
    let (mut first, mut ledger, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut plans = std::collections::BTreeSet::new();
    for (a, m) in &picks {
        let (ms, plan) = explain(&pool, DISPUTE_LOOKUP, a, m).await;
        first.push(ms);
        plans.insert(plan);
    }
    for (a, m) in &picks {
        ledger.push(explain(&pool, DISPUTE_LOOKUP, a, m).await.0);
        plain.push(explain(&pool, PLAIN_LOOKUP, a, m).await.0);
    }
    // Every pick is found: the lookup the bench times is the one a dispute makes.
    for (a, m) in picks.iter().take(5) {
        let n = sqlx::query(DISPUTE_LOOKUP)
            .bind(a)
            .bind(m)
            .fetch_all(&pool)
            .await
            .unwrap()
            .len();
        assert_eq!(n, 1, "row ({a}, {m}) not found");
    }
    let worst_first = first.iter().cloned().fold(0.0, f64::max);
    let (f, l, p) = (median(first), median(ledger.clone()), median(plain));
    let worst = ledger.iter().cloned().fold(0.0, f64::max);
    println!(
        "dispute lookup: first {f:.3} ms (worst {worst_first:.3}), then {l:.3} ms (worst {worst:.3}); plain keyed lookup {p:.3} ms; plans {plans:?}"
    );
    println!("lookup_ms={l:.3} first_lookup_ms={f:.3} target_ms=10");
    println!("ratio={:.2}", p / l);
    pool.close().await;
}
