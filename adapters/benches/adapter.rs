//! `scripts/bench adapter`: confirmed records/s of `govbus-adapter` on a 100,000-row GB18030
//! household registration CSV, next to a plain lapin publisher's confirmed msgs/s for the same
//! message (size, headers, persistence, mandatory, window) to the same broker and quorum queue,
//! measured in the same run, alternating, median of the rounds. Prints `ratio=<x>`.
#[path = "../tests/common/mod.rs"]
mod common;

use std::{collections::VecDeque, time::Instant};

use adapters::{mapping::Mapper, mapping::Outcome, message::Publisher};
use bus_schemas::{
    amqp::publish::{classify, publish_all, OutgoingMessage},
    wire, Registry,
};
use common::*;
use futures::FutureExt;
use lapin::{
    options::{ConfirmSelectOptions, QueuePurgeOptions},
    types::{AMQPValue, ShortString},
};

const ROWS: u64 = 100_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The adapter's own record type, mapper and publisher for the police example.
fn adapter_parts(env: &Env) -> (std::sync::Arc<bus_schemas::RecordType>, Mapper, Publisher) {
    let cfg = env.config("police-household");
    let rt = Registry::standard().get(&cfg.record_type).unwrap().clone();
    let mapper = Mapper::new(rt.clone(), cfg.mapping.clone()).unwrap();
    let publisher = Publisher {
        department: "police".into(),
        item: "household".into(),
        signer: adapters::keys::load_signer(&cfg.signing.key_file, "test-key").unwrap(),
        id_key: bus_schemas::wire::IdKey::new(
            &adapters::keys::load_id_secret(&cfg.signing.id_secret_file).unwrap(),
        ),
    };
    (rt, mapper, publisher)
}

/// One adapter message, built by the adapter's own code from the CSV's first row.
fn sample_message(env: &Env) -> OutgoingMessage {
    let (rt, mapper, publisher) = adapter_parts(env);
    let (csv, _) = household_csv(1, 0, true);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row = lines
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.trim_matches('"'));
    let row = header
        .iter()
        .zip(row)
        .map(|(h, v)| (h.to_string(), serde_json::Value::from(v)))
        .collect();
    let Outcome::Record(m) = mapper.map(&row, 1, 0) else {
        panic!("sample row invalid")
    };
    // Sealed in a batch of the adapter's size, so it carries the same signature headers
    // (statement, signature, an inclusion path of 8 hashes) as the adapter's own messages.
    let mut batch: Vec<OutgoingMessage> = (0..256)
        .map(|v| {
            let mut m = m.clone();
            m.version = 1 + v;
            publisher.record(&rt, &m).unwrap()
        })
        .collect();
    publisher.seal(batch.iter_mut()).unwrap();
    batch.swap_remove(100)
}

/// CPU cost of mapping, validating, encoding and signing one row (no broker), in µs.
fn prepare_cost(env: &Env) -> (f64, f64, f64) {
    let (rt, mapper, publisher) = adapter_parts(env);
    let (csv, _) = household_csv(20_000, 0, true);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<adapters::source::Row> = lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(',').map(|v| v.trim_matches('"')))
                .map(|(h, v)| (h.to_string(), serde_json::Value::from(v)))
                .collect()
        })
        .collect();
    let t = Instant::now();
    let mapped: Vec<_> = rows
        .iter()
        .map(|r| match mapper.map(r, 1, 0) {
            Outcome::Record(m) => m,
            _ => panic!(),
        })
        .collect();
    let map_us = t.elapsed().as_secs_f64() * 1e6 / rows.len() as f64;
    let t = Instant::now();
    for m in &mapped {
        std::hint::black_box(rt.encode(&m.value).unwrap());
    }
    let enc_us = t.elapsed().as_secs_f64() * 1e6 / rows.len() as f64;
    let t = Instant::now();
    for m in &mapped {
        std::hint::black_box(publisher.record(&rt, m).unwrap());
    }
    let rec_us = t.elapsed().as_secs_f64() * 1e6 / rows.len() as f64;
    (map_us, enc_us, rec_us)
}

/// CPU seconds this process has used so far.
fn own_cpu() -> f64 {
    govbus_tests::proc_cpu_secs(std::process::id())
}

/// CPU seconds RabbitMQ has used so far, and the machine's idle CPU seconds (all cores).
fn broker_and_idle() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let idle = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(4)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 100.0;
    (govbus_tests::proc_cpu_secs_named("beam.smp"), idle)
}

/// The plain publisher, written the way the best lapin user would (the adapter's own way, so
/// the ratio does not flatter it): the same message (fresh message ids), the window filled a
/// run at a time with every publish of the run registered at once (`publish_all`), confirms
/// settled in order, as many as are in.
async fn baseline(env: &Env, msg: &OutgoingMessage, window: usize) -> f64 {
    let conn = env.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let make = |i: u64| {
        let mut h = msg.properties.headers().clone().unwrap_or_default();
        h.insert("bench-seq".into(), AMQPValue::LongLongInt(i as i64));
        OutgoingMessage {
            properties: msg
                .properties
                .clone()
                .with_message_id(ShortString::from(format!("{i:064x}")))
                .with_headers(h),
            ..msg.clone()
        }
    };
    let start = Instant::now();
    let mut inflight: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(window);
    let mut next = 0u64;
    while next < ROWS || !inflight.is_empty() {
        let room = (window - inflight.len()) as u64;
        if room > 0 && next < ROWS {
            let run: Vec<OutgoingMessage> = (next..(next + room).min(ROWS)).map(make).collect();
            next += run.len() as u64;
            for c in publish_all(&ch, &run).await {
                inflight.push_back(c.unwrap());
            }
        }
        let c = inflight.pop_front().expect("a publish in flight");
        classify(c.await, msg).unwrap();
        while let Some(c) = inflight.front_mut() {
            match c.now_or_never() {
                Some(r) => {
                    classify(r, msg).unwrap();
                    inflight.pop_front();
                }
                None => break,
            }
        }
    }
    let rate = ROWS as f64 / start.elapsed().as_secs_f64();
    conn.close(200, "done".into()).await.unwrap();
    rate
}

/// The adapter binary on a fresh 100,000-row file; returns (records/s, peak RSS in MiB, CPU
/// seconds used by the adapter process, wall seconds).
fn adapter_run(
    env: &Env,
    config: &std::path::Path,
    csv: &[u8],
    round: &str,
) -> (f64, f64, f64, f64) {
    let _ = std::fs::remove_dir_all(env.path("state"));
    std::fs::write(env.path(&format!("inbox/household-{round}.csv")), csv).unwrap();
    let start = Instant::now();
    let mut child = Adapter::command(config).arg("--once").spawn().unwrap();
    let pid = child.id();
    let mut peak_mib = 0f64;
    let mut cpu = 0f64;
    loop {
        cpu = cpu.max(govbus_tests::proc_cpu_secs(pid));
        peak_mib = peak_mib.max(govbus_tests::proc_peak_rss_mib(pid));
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "the adapter failed");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let wall = start.elapsed().as_secs_f64();
    (ROWS as f64 / wall, peak_mib, cpu, wall)
}

async fn purge(env: &Env) {
    let conn = env.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(
        wire::router_queue(0).as_str().into(),
        QueuePurgeOptions::default(),
    )
    .await
    .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let env = Env::new("police").await;
    let config = env.config_file("police-household", &["version_column"]);
    let window = env.config("police-household").amqp.confirm_window;
    let (csv, valid) = household_csv(ROWS, 0, false);
    assert_eq!(valid.len() as u64, ROWS);
    let csv = encoding_rs::GB18030.encode(&csv).0.into_owned();
    let msg = sample_message(&env);
    println!(
        "adapter bench: {ROWS} rows of household registration (GB18030 CSV), message {} bytes body, window {window}, {rounds} rounds",
        msg.body.len()
    );
    // What a run costs besides its rows: process start, config, keys, connection, file
    // handling, final commit and stop. Measured with a one-row file and printed, so the
    // whole-run ratio below can be read against it; it is not subtracted.
    let one_row = encoding_rs::GB18030
        .encode(&household_csv(1, 0, false).0)
        .0
        .into_owned();
    let fixed: Vec<f64> = (0..3)
        .map(|i| adapter_run(&env, &config, &one_row, &format!("one-{i}")).3)
        .collect();
    purge(&env).await;
    println!(
        "adapter fixed cost per run (one-row file, start to exit): {:.2} s",
        median(fixed.clone())
    );
    let (map_us, enc_us, rec_us) = prepare_cost(&env);
    println!("cpu per row (no broker): map+validate {map_us:.1} µs, encode {enc_us:.1} µs, encode+id+sign+headers {rec_us:.1} µs");
    let (mut base, mut ours, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let cpu0 = own_cpu();
        let (rmq0, idle0) = broker_and_idle();
        let t0 = Instant::now();
        let b = baseline(&env, &msg, window).await;
        let base_cpu = own_cpu() - cpu0;
        let (rmq1, idle1) = broker_and_idle();
        let base_wall = t0.elapsed().as_secs_f64();
        purge(&env).await;
        let (rmq2, idle2) = broker_and_idle();
        let (a, peak, cpu, wall) = adapter_run(&env, &config, &csv, &round.to_string());
        let (rmq3, idle3) = broker_and_idle();
        let per = |s: f64| s * 1e6 / ROWS as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!(
            "round {round} cpu per record: baseline client {:.1} µs + RabbitMQ {:.1} µs, machine idle {:.0}%; adapter {:.1} µs + RabbitMQ {:.1} µs, machine idle {:.0}%",
            per(base_cpu),
            per(rmq1 - rmq0),
            100.0 * (idle1 - idle0) / (cores * base_wall),
            per(cpu),
            per(rmq3 - rmq2),
            100.0 * (idle3 - idle2) / (cores * wall),
        );
        assert_eq!(
            queue_count(&env.vhost, &wire::router_queue(0)).await as u64,
            ROWS,
            "every row confirmed"
        );
        purge(&env).await;
        println!(
            "round {round}: baseline {b:.0} msgs/s (client CPU {base_cpu:.1} s), adapter {a:.0} records/s, ratio {:.2}, adapter peak RSS {peak:.1} MiB, adapter CPU {cpu:.1} s in {wall:.1} s",
            a / b
        );
        base.push(b);
        ours.push(a);
        peaks.push(peak);
    }
    let (b, a) = (median(base), median(ours));
    let peak = peaks.iter().cloned().fold(0.0, f64::max);
    println!("baseline_msgs_per_s={b:.0} adapter_records_per_s={a:.0} peak_rss_mib={peak:.1}");
    println!("ratio={:.2}", a / b);
}
