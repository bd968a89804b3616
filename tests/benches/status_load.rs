//! `scripts/bench status-load`: does the public status page or a flood of bad API tokens slow
//! routing? Alternating rounds time `govbus-router` (release, 4 grants per record, ledger)
//! routing the same number of records alone, and while 200 clients each send a request every
//! 200 ms (1,000 requests/s in all) to the `[api]` listener: `/status`, `/`, and `/api/…`
//! with a forged or malformed token. Every forged token must get 401, the status 200, and
//! nothing a 5xx. Prints each round, then `ratio=<x>` (routing under load over routing alone,
//! medians; the target is at least 0.9).
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bus_schemas::amqp::OutgoingMessage;
use common::World;
use support::*;

const CLIENTS: usize = 200;
const EVERY: Duration = Duration::from_millis(200);

/// Status codes answered, by what was asked.
type Answers = Arc<Mutex<BTreeMap<(&'static str, u16), u64>>>;

/// 200 clients at a fixed rate until `stop`.
fn load(w: &World, stop: tokio_util::sync::CancellationToken, answers: Answers) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    for i in 0..CLIENTS {
        let (client, stop, answers) = (client.clone(), stop.clone(), answers.clone());
        let (what, url, token): (&'static str, String, Option<&'static str>) = match i % 4 {
            0 => ("status", w.api_url("/status"), None),
            1 => ("page", w.api_url("/"), None),
            2 => (
                "forged token",
                w.api_url("/api/applications"),
                Some("gbt2.agency.civil.20991231.AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ),
            _ => ("bad token", w.api_url("/api/outcomes"), Some("not-a-token")),
        };
        tokio::spawn(async move {
            // Spread the clients over the period.
            tokio::time::sleep(EVERY.mul_f64(i as f64 / CLIENTS as f64)).await;
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let mut req = client.get(&url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let code = match req.send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *answers.lock().unwrap().entry((what, code)).or_default() += 1;
            }
        });
    }
}

/// Routes `msgs` with the router started on a full queue, under `with_load` from the moment
/// it listens until the last ledger row: records/s.
async fn route(
    w: &mut World,
    ch: &lapin::Channel,
    pool: &sqlx::PgPool,
    msgs: Vec<OutgoingMessage>,
    with_load: Option<&Answers>,
) -> f64 {
    publish_all(ch, msgs.into_iter()).await;
    let before = ledger_rows(pool).await;
    w.start_router().await;
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(answers) = with_load {
        load(w, stop.clone(), answers.clone());
    }
    let start = Instant::now();
    while ledger_rows(pool).await < before + 4 * RECORDS as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = RECORDS as f64 / start.elapsed().as_secs_f64();
    stop.cancel();
    // Requests already sent get their answers before the router stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.router.take().unwrap().terminate().success());
    purge_agencies(w).await;
    r
}

#[tokio::main]
async fn main() {
    let Bench {
        rounds,
        mut w,
        signer,
        ids,
        pool,
        conn: _conn,
        ch,
    } = Bench::new().await;
    println!(
        "status-load bench: {RECORDS} household records, 4 grants each, {rounds} rounds; load: {CLIENTS} clients, one request each every {} ms",
        EVERY.as_millis()
    );
    let answers: Answers = Arc::default();
    let (mut alone, mut loaded) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    for round in 0..rounds {
        let mut batch = || {
            let m: Vec<OutgoingMessage> = records(&signer, &ids, n * RECORDS, RECORDS, now_ms());
            n += 1;
            m
        };
        let a = route(&mut w, &ch, &pool, batch(), None).await;
        let l = route(&mut w, &ch, &pool, batch(), Some(&answers)).await;
        println!(
            "round {round}: routing alone {a:.0} records/s, under load {l:.0} records/s, ratio {:.2}",
            l / a
        );
        alone.push(a);
        loaded.push(l);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = answers.lock().unwrap().clone();
    let total: u64 = answers.values().sum();
    println!("{total} requests answered: {answers:?}");
    for ((what, code), count) in &answers {
        let expected = match *what {
            "status" | "page" => 200,
            _ => 401,
        };
        // 0: no answer at all (refused, reset or timed out).
        assert!(
            *code == expected,
            "{count} `{what}` requests answered {code}, not {expected}"
        );
    }
    println!("ratio={:.2}", median(loaded) / median(alone));
}
