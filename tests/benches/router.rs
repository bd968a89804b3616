//! `scripts/bench router`: routed records/s of `govbus-router` (release) with 4 grants per
//! record (two full, one pseudonym, one region-free district grant), then 1 and 16 (the CPU
//! per delivery as fanout grows) and the large catalogue (200 agencies, 25 items, 4 grants a
//! record: a batch's deliveries spread over 100 agencies; `BENCH_FANOUTS`, default
//! `4,1,16,large`), every delivery confirmed
//! and written to the ledger before the ack, next to a plain lapin loop on the same broker in
//! the same run: consume a quorum queue → publish ×4 to quorum queues → confirms → ack.
//! Alternating rounds, median. Then delivery latency (source change → the agency's consumer)
//! p50/p99 at half the measured rate, through the plain loop and then the router, and the
//! router's peak RSS. Prints `ratio=<x>`.
//!
//! Every party shares the machine's cores, so each round also prints the CPU each one spent
//! per record (the plain loop, the router, RabbitMQ, PostgreSQL) and RabbitMQ's resident
//! memory at the start (its cost per message drifts with its state: with no queue left it
//! can still hold hundreds of MiB of deleted quorum queues' entries). `cpu_ratio=<x>`
//! compares the CPU per record of the two runs: what `ratio` comes to when both are bound by
//! the same cores, so a reader can tell which party's cost moved a round.
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bus_schemas::{
    amqp::{publish::classify, topology::quorum_args, OutgoingMessage},
    wire::header,
};
use common::World;
use futures::{FutureExt, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use support::*;

/// The router's default batch (`router.batch`): the plain loop takes at most as many at once.
const BATCH: usize = 250;

/// What a round routes: household records with `f` grants each, or the large catalogue.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Fanout(usize),
    Large,
}

impl Shape {
    fn label(self) -> String {
        match self {
            Shape::Fanout(f) => format!("fanout {f}"),
            Shape::Large => "large catalogue".into(),
        }
    }

    /// Deliveries per record.
    fn fanout(self) -> usize {
        match self {
            Shape::Fanout(f) => f,
            Shape::Large => 4,
        }
    }

    /// Queues the plain loop publishes to (one per receiving agency).
    fn queues(self) -> usize {
        match self {
            Shape::Fanout(f) => f,
            Shape::Large => 4 * LARGE_ITEMS,
        }
    }

    fn items(self) -> Vec<String> {
        match self {
            Shape::Fanout(_) => vec!["household".into()],
            Shape::Large => large_items(),
        }
    }

    /// The plain loop's queues for a record of item `item` (its index in [`Shape::items`]).
    fn targets(self, item: usize) -> std::ops::Range<usize> {
        let f = self.fanout();
        f * item..f * item + f
    }
}

/// The index of a record's item among `items`, from its `govbus-item` header (as the router
/// reads it).
fn item_index(props: &lapin::BasicProperties, items: &[String]) -> usize {
    let item = props
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get(header::ITEM) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        })
        .expect("records name their item");
    items.iter().position(|i| *i == item).expect("a known item")
}

/// The plain loop, written the way the best lapin user would (the router's own way, so the
/// ratio does not flatter it): consume `bench.in`, take what has arrived (up to the router's
/// batch), register the batch's publishes to each record's quorum queues (one per receiving
/// agency: 4 at fanout 4, 4 of 100 in the large catalogue) at once (`publish_all`), and ack
/// the batch with `multiple` once its confirms are in, while the next batch is taken.
/// Returns msgs/s.
async fn baseline(w: &World, msgs: &[OutgoingMessage], shape: Shape) -> f64 {
    let records = msgs.len() as u64;
    let conn = w.vhost.connect().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_plain(&conn, shape).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_all(
        &ch,
        msgs.iter().map(|m| OutgoingMessage {
            exchange: String::new(),
            routing_key: "bench.in".into(),
            ..m.clone()
        }),
    )
    .await;
    let start = Instant::now();
    copy_loop(&conn, records, shape).await;
    let rate = records as f64 / start.elapsed().as_secs_f64();
    for i in 0..shape.queues() {
        ch.queue_purge(
            format!("bench.out{i}").as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();
    rate
}

/// The plain loop: consumes `bench.in`, takes what has arrived up to [`BATCH`], publishes each
/// message to its `shape` targets `bench.out<i>` (the batch's publishes registered at once),
/// and acks the batch with `multiple` once its confirms are in, a few batches in flight.
/// Returns after `records` messages.
async fn copy_loop(conn: &lapin::Connection, records: u64, shape: Shape) {
    let items = shape.items();
    let consume = conn.create_channel().await.unwrap();
    consume
        .basic_qos(WINDOW as u16, BasicQosOptions::default())
        .await
        .unwrap();
    let out = conn.create_channel().await.unwrap();
    out.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut consumer = consume
        .basic_consume(
            "bench.in".into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // As the router: a few batches in flight behind the one being settled.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(
        lapin::message::Delivery,
        u64,
        Vec<lapin::PublisherConfirm>,
    )>(4);
    let settle = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some((last, taken, confirms)) = rx.recv().await {
            for c in confirms {
                assert!(matches!(c.await.unwrap(), lapin::Confirmation::Ack(None)));
            }
            n += taken;
            assert!(last
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap());
            if n == records {
                break;
            }
        }
    });
    let mut taken = 0;
    while taken < records {
        let mut batch = vec![consumer.next().await.unwrap().unwrap()];
        while batch.len() < BATCH {
            match consumer.next().now_or_never() {
                Some(d) => batch.push(d.unwrap().unwrap()),
                None => break,
            }
        }
        let out_msgs: Vec<OutgoingMessage> = batch
            .iter()
            .flat_map(|d| {
                shape
                    .targets(item_index(&d.properties, &items))
                    .map(|i| OutgoingMessage {
                        exchange: String::new(),
                        routing_key: format!("bench.out{i}"),
                        body: d.data.clone(),
                        properties: d.properties.clone(),
                    })
            })
            .collect();
        let confirms = bus_schemas::amqp::publish::publish_all(&out, &out_msgs)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        taken += batch.len() as u64;
        let n = batch.len() as u64;
        tx.send((batch.pop().unwrap(), n, confirms)).await.unwrap();
    }
    settle.await.unwrap();
    let _ = consume.close(200, "done".into()).await;
    let _ = out.close(200, "done".into()).await;
}

/// The plain loop's queues, declared and empty: `bench.in` and its `shape` targets.
async fn declare_plain(conn: &lapin::Connection, shape: Shape) {
    let ch = conn.create_channel().await.unwrap();
    let declare = |q: String| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum_args(None),
            )
            .await
            .unwrap();
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap();
        }
    };
    declare("bench.in".into()).await;
    for i in 0..shape.queues() {
        declare(format!("bench.out{i}")).await;
    }
    let _ = ch.close(200, "done".into()).await;
}

/// Publishes `n` messages (`make(i)`, each stamped with its source time) at `rate` a second
/// through `ch`, with a window of confirms, while a consumer of `queue` notes each arrival's
/// delay from its source time, in milliseconds.
async fn paced_latency(
    w: &World,
    ch: &lapin::Channel,
    queue: &str,
    rate: f64,
    n: u64,
    make: impl Fn(u64) -> OutgoingMessage,
) -> Vec<f64> {
    let agency = w.vhost.connect().await.unwrap();
    let ach = agency.create_channel().await.unwrap();
    ach.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ach
        .basic_consume(
            queue.into(),
            "bench-latency".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n as usize);
        while (lat.len() as u64) < n {
            let d = consumer.next().await.unwrap().unwrap();
            let sent = match d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(header::SOURCE_TIME_MS).cloned())
            {
                Some(AMQPValue::LongLongInt(t)) => t,
                other => panic!("{other:?}"),
            };
            lat.push((now_ms() - sent) as f64);
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
        lat
    });
    let start = Instant::now();
    let mut inflight = VecDeque::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let m = make(i);
        inflight.push_back((m.publish(ch).await.unwrap(), m));
        while inflight.len() > WINDOW {
            let (c, m) = inflight.pop_front().unwrap();
            classify(c.await, &m).unwrap();
        }
    }
    for (c, m) in inflight {
        classify(c.await, &m).unwrap();
    }
    let lat = receiver.await.unwrap();
    let _ = agency.close(200, "done".into()).await;
    lat
}

/// p50 and p99 of `lat`.
fn percentiles(lat: &[f64]) -> (f64, f64) {
    let mut lat = lat.to_vec();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

/// What the rounds at one fanout measured (medians).
struct Measured {
    shape: Shape,
    baseline: f64,
    router: f64,
    cpu_ratio: f64,
    /// CPU per delivery of the router process, and of router, RabbitMQ and PostgreSQL.
    router_us_per_delivery: f64,
    total_us_per_delivery: f64,
    peak: f64,
}

/// Rounds of one shape: the plain loop, then the router on the same records.
async fn rounds_at(bench: &mut Bench, shape: Shape) -> Measured {
    let fanout = shape.fanout();
    let Bench {
        rounds,
        w,
        signer,
        ids,
        pool,
        ch,
        ..
    } = bench;
    let records_n = RECORDS.min(RECORDS * 4 / fanout as u64);
    let f = fanout as f64;
    println!(
        "{}: {records_n} household records over {} item(s), {fanout} grants each, window {WINDOW}, {rounds} rounds",
        shape.label(),
        shape.items().len()
    );
    let (mut base, mut ours, mut peak) = (Vec::new(), Vec::new(), 0.0f64);
    let (mut cpu_base, mut cpu_ours, mut router_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..*rounds as u64 {
        let first = match shape {
            Shape::Fanout(f) => f as u64 * 1_000 + round,
            Shape::Large => 100_000 + round,
        };
        let msgs: Vec<OutgoingMessage> = records_of(
            signer,
            ids,
            &shape.items(),
            first * RECORDS,
            records_n,
            now_ms(),
        );
        let others = || {
            (
                govbus_tests::proc_cpu_secs_named("beam.smp"),
                govbus_tests::proc_cpu_secs_named("postgres"),
            )
        };
        let broker_mib = govbus_tests::proc_rss_mib_named("beam.smp");
        let (mq0, pg0) = others();
        let me0 = govbus_tests::proc_cpu_secs(std::process::id());
        let b = baseline(w, &msgs, shape).await;
        let me1 = govbus_tests::proc_cpu_secs(std::process::id());
        let (mq1, pg1) = others();
        // The router: its queue filled while it is stopped, then timed from ready to the last ledger row.
        publish_all(ch, msgs.into_iter()).await;
        let before = ledger_rows(pool).await;
        w.start_router().await;
        let start = Instant::now();
        let pid = w.router.as_ref().unwrap().0.id();
        let mut p = 0.0f64;
        let mut cpu = 0.0f64;
        while ledger_rows(pool).await < before + fanout as i64 * records_n as i64 {
            p = p.max(govbus_tests::proc_peak_rss_mib(pid));
            cpu = cpu.max(govbus_tests::proc_cpu_secs(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = records_n as f64 / start.elapsed().as_secs_f64();
        let (mq2, pg2) = others();
        p = p.max(govbus_tests::proc_peak_rss_mib(pid));
        peak = peak.max(p);
        assert!(w.router.take().unwrap().terminate().success());
        match shape {
            Shape::Fanout(f) => purge_fanout(w, f).await,
            Shape::Large => purge_large(w).await,
        }
        let us = |secs: f64| secs * 1e6 / records_n as f64;
        let (loop_us, base_mq, base_pg) = (us(me1 - me0), us(mq1 - mq0), us(pg1 - pg0));
        let (router_us, mq_us, pg_us) = (us(cpu), us(mq2 - mq1), us(pg2 - pg1));
        let (base_total, ours_total) = (loop_us + base_mq + base_pg, router_us + mq_us + pg_us);
        println!("round {round}: baseline {b:.0} msgs/s ({:.0} deliveries/s), router {r:.0} records/s ({:.0} deliveries/s), ratio {:.2}, router peak RSS {p:.1} MiB; CPU per record: baseline {base_total:.0} µs (loop {loop_us:.0}, RabbitMQ {base_mq:.0}, PostgreSQL {base_pg:.0}), router {ours_total:.0} µs (router {router_us:.0}, RabbitMQ {mq_us:.0}, PostgreSQL {pg_us:.0}), CPU ratio {:.2}; per delivery: router {:.0} µs, all parties {:.0} µs; RabbitMQ RSS at start {broker_mib:.0} MiB",
            b * f,
            r * f,
            r / b,
            base_total / ours_total,
            router_us / f,
            ours_total / f,
        );
        base.push(b);
        ours.push(r);
        cpu_base.push(base_total);
        cpu_ours.push(ours_total);
        router_cpu.push(router_us);
    }
    let ours_total = median(cpu_ours);
    Measured {
        shape,
        baseline: median(base),
        router: median(ours),
        cpu_ratio: median(cpu_base) / ours_total,
        router_us_per_delivery: median(router_cpu) / f,
        total_us_per_delivery: ours_total / f,
        peak,
    }
}

/// The large catalogue declares 400 quorum queues (a queue and a dead-letter queue per
/// agency). A RabbitMQ 3.10 node allowed 1,024 open files (what `su rabbitmq` gives one started
/// by hand) stops accepting connections once they exist: each new connection's protocol header
/// sits unread. Fails first, saying how to start the broker, instead of hanging there.
async fn broker_takes_large_catalogue() {
    let nodes = govbus_tests::Services::from_env()
        .management_get("nodes")
        .await;
    for n in nodes.as_array().expect("a list of nodes") {
        let fds = n["fd_total"].as_u64().unwrap_or(0);
        assert!(
            fds >= 4096,
            "RabbitMQ node {} may open only {fds} files: with the large catalogue's 400 quorum \
             queues it stops accepting connections (docs/benchmarks.md). Restart it with a \
             higher limit: `rabbitmqctl stop; su rabbitmq -s /bin/sh -c 'ulimit -n $(ulimit -Hn) \
             && rabbitmq-server -detached'` (its systemd unit sets LimitNOFILE), or leave `large` \
             out of BENCH_FANOUTS",
            n["name"]
        );
    }
}

#[tokio::main]
async fn main() {
    // Fanout 4 is the target's; 1 and 16 show how the cost per delivery moves with it, and
    // the large catalogue what small batches per agency cost.
    let shapes: Vec<Shape> = std::env::var("BENCH_FANOUTS")
        .unwrap_or_else(|_| "4,1,16,large".into())
        .split(',')
        .map(|f| match f.trim() {
            "large" => Shape::Large,
            f => Shape::Fanout(
                f.parse()
                    .expect("BENCH_FANOUTS: 1, 4, 16 or large, comma-separated"),
            ),
        })
        .collect();
    assert!(
        shapes.contains(&Shape::Fanout(4)),
        "BENCH_FANOUTS must include 4 (the ratio's fanout)"
    );
    if shapes.contains(&Shape::Large) {
        broker_takes_large_catalogue().await;
    }
    let mut measured = Vec::new();
    let mut four = None;
    for shape in shapes {
        let mut bench = match shape {
            Shape::Fanout(f) => Bench::with_fanout(f).await,
            Shape::Large => Bench::large().await,
        };
        measured.push(rounds_at(&mut bench, shape).await);
        if shape == Shape::Fanout(4) {
            four = Some(bench);
        }
    }
    for m in &measured {
        let name = match m.shape {
            Shape::Fanout(f) => format!("fanout={f}"),
            Shape::Large => "catalogue=large fanout=4 agencies=200 items=25".into(),
        };
        println!("{name} baseline_msgs_per_s={:.0} router_records_per_s={:.0} ratio={:.2} cpu_ratio={:.2} router_cpu_us_per_delivery={:.1} all_cpu_us_per_delivery={:.1} peak_rss_mib={:.1}",
            m.baseline, m.router, m.router / m.baseline, m.cpu_ratio, m.router_us_per_delivery, m.total_us_per_delivery, m.peak);
    }
    let m4 = measured
        .iter()
        .find(|m| m.shape == Shape::Fanout(4))
        .unwrap();
    let (b, r, cpu_ratio) = (m4.baseline, m4.router, m4.cpu_ratio);
    // The RSS target is at fanout 4 (its peak, then the latency run's).
    let mut peak = m4.peak;
    let Bench {
        mut w,
        signer,
        ids,
        conn: _conn,
        ch,
        ..
    } = four.unwrap();

    // Latency at half the router's rate: publish paced, an agency consumer timestamps
    // arrivals. First the plain loop's (the same records forwarded ×4 to quorum queues, the
    // first one timed): what the broker alone costs on this machine at that rate.
    let rate = (r / 2.0).max(100.0);
    let n = (rate * 10.0) as u64;
    let plain = w.vhost.connect().await.unwrap();
    declare_plain(&plain, Shape::Fanout(4)).await;
    let (_, base_lat) = tokio::join!(
        copy_loop(&plain, n, Shape::Fanout(4)),
        paced_latency(&w, &ch, "bench.out0", rate, n, |i| OutgoingMessage {
            exchange: String::new(),
            routing_key: "bench.in".into(),
            ..record(&signer, &ids, 2_000_000 + i, now_ms())
        })
    );
    let _ = plain.close(200, "done".into()).await;
    let (bp50, bp99) = percentiles(&base_lat);
    println!("plain loop latency at {rate:.0} records/s ({n} records, publish → consumer of the first copy): p50 {bp50:.0} ms, p99 {bp99:.0} ms");
    w.start_router().await;
    let lat = paced_latency(&w, &ch, "agency.civil", rate, n, |i| {
        record(&signer, &ids, 1_000_000 + i, now_ms())
    })
    .await;
    let (p50, p99) = percentiles(&lat);
    let pid = w.router.as_ref().unwrap().0.id();
    peak = peak.max(govbus_tests::proc_peak_rss_mib(pid));
    println!("latency at {rate:.0} records/s ({n} records, source change → agency consumer): p50 {p50:.0} ms, p99 {p99:.0} ms");
    println!("fanout 4: baseline_msgs_per_s={b:.0} router_records_per_s={r:.0} peak_rss_mib={peak:.1} latency_p50_ms={p50:.0} latency_p99_ms={p99:.0} plain_loop_latency_p50_ms={bp50:.0} plain_loop_latency_p99_ms={bp99:.0}");
    println!("cpu_ratio={cpu_ratio:.2}");
    println!("ratio={:.2}", r / b);
}
