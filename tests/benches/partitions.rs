//! `scripts/bench router --partitions 4 --routers 2`: routed records/s of two routers over four
//! partitions on the suite's three-node cluster (`scripts/lib-cluster.sh`), each active on its
//! own two partitions and connected to its own node, beside one router holding all four in the
//! same run, alternating rounds (`BENCH_ROUNDS`, default 3), median. Household records with
//! four grants each, every delivery confirmed and in the ledger. Both runs start their routers
//! first and time from the first publish to the last ledger row, so the publishing is inside
//! both. Prints `ratio=<x>` (two routers over one) and the CPU per record of the routers,
//! RabbitMQ's three nodes and PostgreSQL, to say what bounds it on this machine.
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::World;
use govbus_tests::{cluster::Cluster, Process};
use support::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Round {
    records_per_s: f64,
    routers_us: f64,
    rabbitmq_us: f64,
    postgres_us: f64,
}

#[allow(clippy::too_many_arguments)]
async fn round(
    w: &mut World,
    second: Option<&(std::path::PathBuf, u16)>,
    partitions: u8,
    ch: &lapin::Channel,
    pool: &sqlx::PgPool,
    signer: &bus_schemas::wire::Signer,
    ids: &bus_schemas::wire::IdKey,
    first: u64,
    records: u64,
) -> Round {
    w.start_router().await;
    let mut routers: Vec<u32> = vec![w.router.as_ref().unwrap().0.id()];
    let b: Option<Process> = match second {
        Some((cfg, port)) => Some(w.spawn_router(cfg, *port).await),
        None => None,
    };
    if let Some(b) = &b {
        routers.push(b.0.id());
        w.await_partitions_held(
            partitions,
            |p| if p < partitions / 2 { "a" } else { "b" },
            2,
        )
        .await;
    } else {
        w.await_partitions_held(partitions, |_| "a", 1).await;
    }
    let msgs = support::records(signer, ids, first, records, now_ms());
    let others = || {
        (
            govbus_tests::proc_cpu_secs_named("beam.smp"),
            govbus_tests::proc_cpu_secs_named("postgres"),
        )
    };
    let cpu = |pids: &[u32]| {
        pids.iter()
            .map(|p| govbus_tests::proc_cpu_secs(*p))
            .sum::<f64>()
    };
    let before = ledger_rows(pool).await;
    let (mq0, pg0, r0) = {
        let (m, p) = others();
        (m, p, cpu(&routers))
    };
    let start = Instant::now();
    publish_all(ch, msgs.into_iter()).await;
    let mut r1 = r0;
    while ledger_rows(pool).await < before + 4 * records as i64 {
        r1 = r1.max(cpu(&routers));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    r1 = r1.max(cpu(&routers));
    let (mq1, pg1) = others();
    if let Some(b) = b {
        assert!(b.terminate().success());
    }
    assert!(w.router.take().unwrap().terminate().success());
    purge_agencies(w).await;
    let us = |s: f64| s * 1e6 / records as f64;
    Round {
        records_per_s: records as f64 / secs,
        routers_us: us(r1 - r0),
        rabbitmq_us: us(mq1 - mq0),
        postgres_us: us(pg1 - pg0),
    }
}

#[tokio::main]
async fn main() {
    let partitions = env_u64("BENCH_PARTITIONS", 4) as u8;
    let routers = env_u64("BENCH_ROUTERS", 2);
    assert_eq!(
        routers, 2,
        "BENCH_ROUTERS: the bench compares two routers with one"
    );
    assert!(
        partitions >= 2 && partitions.is_multiple_of(2),
        "BENCH_PARTITIONS: even, at least 2"
    );
    let rounds = env_u64("BENCH_ROUNDS", 3);
    let records = env_u64("BENCH_RECORDS", 10_000);
    let cluster = Cluster::from_env();
    let mut w = World::on(&cluster.services()).await;
    four_grants(&w);
    let one = w.vhost.amqp_url.clone();
    let nodes = cluster.node_urls(&one);
    let from = |first: usize| cluster.nodes_from(&one, first);
    w.edit(
        "router.toml",
        &format!("url = \"{one}\""),
        &format!("url = \"{}\"", from(0)),
    );
    let half = partitions / 2;
    let prefer = |r: std::ops::Range<u8>| r.map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    w.partitioned(partitions, &prefer(0..half), "a");
    let second = w.second_router("b", &prefer(half..partitions), Some(&from(1)));
    // Release binaries when built (scripts/bench builds them).
    let signer =
        bus_schemas::keys::load_signer(&w.path("keys/police/police-2026.key"), "police-2026")
            .unwrap();
    let ids = bus_schemas::wire::IdKey::new(
        &bus_schemas::keys::load_id_secret(&w.path("keys/police/id-secret")).unwrap(),
    );
    w.start_router().await; // binds the partitions, declares the topology
    assert!(w.router.take().unwrap().terminate().success());
    let pool = w.pg().await;
    // Published through node 3: neither router's node.
    let conn = lapin::Connection::connect(&nodes[2], lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    println!(
        "{records} household records, 4 grants each, {partitions} partitions on a three-node cluster, {rounds} rounds"
    );
    let (mut one_r, mut two_r) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    for i in 0..rounds {
        for two in [false, true] {
            n += 1;
            let r = round(
                &mut w,
                two.then_some(&second),
                partitions,
                &ch,
                &pool,
                &signer,
                &ids,
                (1_000 + n) * records,
                records,
            )
            .await;
            println!(
                "round {i}, {}: {:.0} records/s ({:.0} deliveries/s); CPU per record: routers {:.0} µs, RabbitMQ (3 nodes) {:.0} µs, PostgreSQL {:.0} µs",
                if two { "two routers" } else { "one router" },
                r.records_per_s,
                4.0 * r.records_per_s,
                r.routers_us,
                r.rabbitmq_us,
                r.postgres_us
            );
            if two {
                two_r.push(r.records_per_s);
            } else {
                one_r.push(r.records_per_s);
            }
        }
    }
    let (a, b) = (median(one_r), median(two_r));
    println!("one router {a:.0} records/s, two routers {b:.0} records/s");
    println!("ratio={:.2}", b / a);
}
