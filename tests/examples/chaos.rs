//! The fault campaign behind `scripts/chaos` (not part of CI: it restarts the shared RabbitMQ
//! and PostgreSQL). For N rounds, with records flowing from two departments' adapters (police
//! from CSV files, commerce from a PostgreSQL table that also takes updates) through
//! the router into three agencies' sinks and one independent consumer (a plain AMQP client
//! decoding Avro itself, for tianhe), it SIGKILLs a random process (an adapter, the router, a
//! sink), restarts RabbitMQ or PostgreSQL, SIGKILLs RabbitMQ's Erlang VM, or stops PostgreSQL
//! with `-m immediate`, at a random moment while the round's records flow (once the ledger has
//! taken a random part of them); each round prints what was in flight when the fault hit. The verdict is per record: every record's latest version must be held by every agency
//! granted it — in the ledger, in the agency's table, and in what the independent consumer
//! read — no agency may hold a record or a field it was not granted (judged from the bodies and
//! the tables, not from the ledger's own account), and the ledger must verify.
//!
//! With `--cluster` it runs on the suite's three-node RabbitMQ cluster (`scripts/lib-cluster.sh`)
//! with two routers over four partitions, each process given every node; its faults then also
//! stop a node (its partitions' leaders move, its connections go elsewhere) and SIGKILL either
//! router (the other takes its partitions over), instead of restarting the single broker.
//! Anything in the routers' dead-letter queue counts as lost; a record's versions out of order
//! in the ledger count as out of order.
//!
//! `scripts/chaos [--rounds N] [--seed S] [--cluster]`
#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bus_schemas::{
    apache_avro::{self, types::Value},
    wire::{self, IdKey},
};
use common::{citizen, uscc, World};
use futures::StreamExt;
use govbus_tests::{cluster::Cluster, ChaosOptions, Process, Services, TestDatabase, CHAOS_USAGE};

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

/// Records each round: new police households, police households updated, new enterprises,
/// enterprises updated (in the commerce table).
const POLICE_NEW: u64 = 600;
const POLICE_UPDATED: u64 = 150;
const COMMERCE_NEW: u64 = 300;
const COMMERCE_UPDATED: u64 = 80;

/// Agencies that land their records with `govbus-agency sink`; tianhe reads with the
/// independent consumer.
const SINKS: [&str; 3] = ["civil", "health", "hrss"];

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

/// What the independent consumer read of its agency's queue: each record key's newest
/// version, and every field outside the grant that a body carried.
#[derive(Default)]
struct Independent {
    latest: BTreeMap<String, i64>,
    ungranted: BTreeSet<String>,
    undecodable: u64,
    sessions: u64,
}

/// A plain AMQP consumer of `agency.<agency>` that decodes each body itself (Avro single-object
/// encoding, the writer schema from the router's `/schemas/{fingerprint}`), records the
/// record's version and checks its non-null fields against `granted`, and acks. It reconnects
/// whatever happens to the broker or the router, until `stop`.
fn independent(
    amqp_urls: Vec<String>,
    router_url: String,
    agency: &'static str,
    key_field: &'static str,
    granted: &'static [&'static str],
    stop: tokio_util::sync::CancellationToken,
) -> Arc<Mutex<Independent>> {
    let seen = Arc::new(Mutex::new(Independent::default()));
    let out = seen.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut schemas: BTreeMap<String, apache_avro::Schema> = BTreeMap::new();
        let mut node = 0usize;
        while !stop.is_cancelled() {
            // A cluster's nodes in turn: the next after each lost session.
            let amqp_url = amqp_urls[node % amqp_urls.len()].clone();
            node += 1;
            let session = async {
                let conn =
                    lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default())
                        .await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(100, Default::default()).await?;
                let mut consumer = ch
                    .basic_consume(
                        format!("agency.{agency}").as_str().into(),
                        "chaos-independent".into(),
                        Default::default(),
                        Default::default(),
                    )
                    .await?;
                seen.lock().unwrap().sessions += 1;
                while let Some(d) = consumer.next().await {
                    let d = d?;
                    let (fp, datum) = bus_schemas::split_header(&d.data)
                        .map_err(|e| anyhow::anyhow!("not single-object encoded: {e}"))?;
                    let hex = hex::encode(fp.0);
                    if !schemas.contains_key(&hex) {
                        let text = http
                            .get(format!("{router_url}/schemas/{hex}"))
                            .send()
                            .await?
                            .error_for_status()?
                            .text()
                            .await?;
                        schemas.insert(hex.clone(), apache_avro::Schema::parse_str(&text)?);
                    }
                    let value =
                        apache_avro::reader::datum::GenericDatumReader::builder(&schemas[&hex])
                            .build()?
                            .read_value(&mut &datum[..]);
                    let version = d
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| {
                            bus_schemas::amqp::headers::header_i64(h, wire::header::VERSION)
                        })
                        .unwrap_or(-1);
                    {
                        let mut s = seen.lock().unwrap();
                        match value {
                            Ok(Value::Record(fields)) => {
                                let mut key = None;
                                for (name, v) in &fields {
                                    let v = match v {
                                        Value::Union(_, inner) => inner.as_ref(),
                                        other => other,
                                    };
                                    if matches!(v, Value::Null) {
                                        continue;
                                    }
                                    if !granted
                                        .iter()
                                        .any(|g| g == name || g.starts_with(&format!("{name}.")))
                                    {
                                        s.ungranted.insert(name.clone());
                                    }
                                    if name == key_field {
                                        if let Value::String(k) = v {
                                            key = Some(k.clone());
                                        }
                                    }
                                }
                                if let Some(k) = key {
                                    let e = s.latest.entry(k).or_insert(version);
                                    *e = (*e).max(version);
                                }
                            }
                            _ => s.undecodable += 1,
                        }
                    }
                    anyhow::ensure!(
                        d.acker.ack(Default::default()).await?,
                        "ack on a closed channel"
                    );
                }
                anyhow::Ok(())
            };
            tokio::select! {
                _ = session => {}
                () = stop.cancelled() => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    out
}

/// Counts for the line each round prints: what was in flight when its fault hit.
async fn in_flight(w: &World, pool: &sqlx::PgPool, partitions: u8) -> String {
    let router = w.partition_backlog(partitions).await;
    let mut agencies = 0;
    for a in ["civil", "health", "hrss", "tianhe"] {
        agencies += w.count(&format!("agency.{a}")).await;
    }
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap_or(-1);
    let files = std::fs::read_dir(w.path("adapters/police/inbox"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .count()
        })
        .unwrap_or(0);
    format!(
        "{files} police files unfinished, {router} in the router partitions, {agencies} in agency queues, {ledger} ledger rows"
    )
}

async fn ledger_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// The commerce bureau's registration table, which its adapter polls by `(updated_at, id)`.
const COMMERCE_TABLE: &str = "CREATE TABLE enterprise (
    id bigserial PRIMARY KEY,
    uscc text NOT NULL, name text, rep text, rep_id text, division text, address text,
    established text, version bigint NOT NULL, op text NOT NULL DEFAULT 'U',
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// The commerce adapter's config: `World::commerce`'s mapping over the PostgreSQL table.
fn commerce_from_postgres(w: &World, url: &str) -> std::path::PathBuf {
    let cfg = w.commerce(0, 0);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let source = "[source]\nkind = \"csv\"\npath = \"inbox\"\npoll_interval_ms = 100\n";
    assert!(text.contains(source), "World::commerce's [source] changed");
    let text = text.replace(
        source,
        &format!(
            "[source]\nkind = \"postgres\"\nurl = \"{url}\"\nquery = \"SELECT * FROM enterprise\"\n\
             cursor_column = \"updated_at\"\ncursor_type = \"timestamptz\"\nid_column = \"id\"\n\
             id_type = \"bigint\"\npoll_interval_ms = 100\nbatch_size = 200\n"
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Writes to the commerce table, retrying while PostgreSQL restarts (a fault of the round
/// before may still be on its way out).
async fn commerce_write(url: &str, new: std::ops::Range<u64>, updated: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(url).await?;
            let n: Vec<i64> = new.clone().map(|n| n as i64).collect();
            let codes: Vec<String> = new.clone().map(uscc).collect();
            let reps: Vec<String> = new.clone().map(|n| citizen(100_000 + n)).collect();
            // One row at a time, in order: each commit's updated_at is later than the last.
            sqlx::query(
                "INSERT INTO enterprise (uscc, name, rep, rep_id, division, address, established, version)
                 SELECT c, '企业' || n || '有限公司', '法人' || n, r,
                        CASE WHEN n % 2 = 0 THEN '440106' ELSE '440104' END, '某路' || n || '号',
                        '2015-03-0' || (1 + n % 9), 1
                   FROM unnest($1::bigint[], $2::text[], $3::text[]) AS x(n, c, r)",
            )
            .bind(&n)
            .bind(&codes)
            .bind(&reps)
            .execute(&mut c)
            .await?;
            let codes: Vec<String> = updated.iter().map(|&n| uscc(n)).collect();
            sqlx::query(
                "UPDATE enterprise SET version = version + 1, name = name || '(变更)',
                        updated_at = clock_timestamp()
                  WHERE uscc = ANY($1)",
            )
            .bind(&codes)
            .execute(&mut c)
            .await?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot write the commerce table for 120 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What an operator does for RabbitMQ 3.10's known fault on a single node
/// (rabbitmq-server#10070, docs/operators.md): a quorum queue that came back from a crash as a
/// follower without a leader, never electing itself, is made to hold an election. Returns the
/// queues it found so.
fn elect_leaderless(vhost: &str) -> Vec<String> {
    let code = format!(
        "lists:filtermap(fun(Q) -> \
           {{Name, Node}} = amqqueue:get_pid(Q), \
           case catch ra:members({{Name, Node}}, 2000) of \
             {{ok, _, {{_, _}}}} -> false; \
             _ -> ra:trigger_election({{Name, Node}}), \
                  {{true, element(4, amqqueue:get_name(Q))}} \
           end \
         end, [Q || Q <- rabbit_amqqueue:list(<<\"{vhost}\">>), amqqueue:get_type(Q) =:= rabbit_quorum_queue])."
    );
    let out = Command::new("rabbitmqctl")
        .args(["eval", &code])
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rabbitmqctl eval (elections): {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("<<\"")
        .skip(1)
        .filter_map(|p| p.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Waits until the local broker takes AMQP connections again.
async fn broker_back(w: &World) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while w.vhost.connect().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "RabbitMQ did not come back within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Fleet {
    /// The second router (`--cluster`), its config and `/metrics` port.
    router_b: Option<Process>,
    router_b_cfg: Option<(std::path::PathBuf, u16)>,
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
    let (rounds, seed, on_cluster) = match ChaosOptions::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => (o.rounds, o.seed, o.cluster),
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
    println!(
        "chaos: {rounds} rounds, seed {seed}{}",
        if on_cluster {
            ", on a three-node cluster with two routers over four partitions"
        } else {
            ""
        }
    );
    let started = Instant::now();

    let cluster = on_cluster.then(Cluster::from_env);
    let mut w = match &cluster {
        Some(c) => World::on(&c.services()).await,
        None => World::new().await,
    };
    // Every node, starting at node `first` (the one broker without a cluster).
    let one = w.vhost.amqp_url.clone();
    let from = |first: usize| match &cluster {
        Some(c) => c.nodes_from(&one, first),
        None => one.clone(),
    };
    let partitions: u8 = if on_cluster { 4 } else { 1 };
    let mut router_b_cfg = None;
    if on_cluster {
        w.edit(
            "router.toml",
            &format!("url = \"{one}\""),
            &format!("url = \"{}\"", from(0)),
        );
        w.partitioned(partitions, "0,1", "a");
        router_b_cfg = Some(w.second_router("b", "2,3", Some(&from(1))));
        w.agency_amqp_url = Some(from(2));
    }
    w.start_router().await;
    let router_b = match &router_b_cfg {
        Some((cfg, port)) => Some(w.spawn_router(cfg, *port).await),
        None => None,
    };
    // Adapters publish through node 3 on a cluster (neither router's first node).
    let through_cluster = |cfg: &std::path::Path| {
        if on_cluster {
            let text = std::fs::read_to_string(cfg).unwrap();
            std::fs::write(cfg, text.replace(&one, &from(2))).unwrap();
        }
    };
    let agencies_db = TestDatabase::create(&Services::from_env()).await.unwrap();
    // Adapters run all along; each round drops new files into their folders.
    let police_cfg = w.police(0, 0, 1);
    through_cluster(&police_cfg);
    let sources_db = TestDatabase::create(&Services::from_env()).await.unwrap();
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&sources_db.url).await.unwrap();
        sqlx::raw_sql(COMMERCE_TABLE).execute(&mut c).await.unwrap();
    }
    let commerce_cfg = commerce_from_postgres(&w, &sources_db.url);
    through_cluster(&commerce_cfg);
    let mut fleet = Fleet {
        router_b,
        router_b_cfg,
        police: Some(Fleet::adapter(&police_cfg)),
        commerce: Some(Fleet::adapter(&commerce_cfg)),
        sinks: BTreeMap::new(),
        sink_args: BTreeMap::new(),
    };
    let stop_independent = tokio_util::sync::CancellationToken::new();
    let tianhe = independent(
        cluster
            .as_ref()
            .map_or_else(|| vec![one.clone()], |c| c.node_urls(&one)),
        w.url(""),
        "tianhe",
        "unified_social_credit_code",
        grants()
            .into_iter()
            .find(|g| g.0 == "tianhe")
            .map(|g| g.2)
            .unwrap(),
        stop_independent.clone(),
    );
    let pool = w.pg().await;
    for agency in SINKS {
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

    // What the sources published: record n → its latest version.
    let mut police: BTreeMap<u64, u64> = BTreeMap::new();
    let mut commerce: BTreeMap<u64, u64> = BTreeMap::new();
    let mut versions = 0u64;
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let pg = postgres_version();
    let mut cluster_faults = [
        "kill router a",
        "kill router b",
        "stop node 1",
        "stop node 2",
        "stop node 3",
    ];
    for i in (1..cluster_faults.len()).rev() {
        cluster_faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for round in 1..=rounds {
        let rows_before = ledger_rows(&pool).await;
        // New records, and newer versions of some earlier ones.
        let from = police.len() as u64;
        let cfg = w.police(from, from + POLICE_NEW, 1);
        debug_assert_eq!(cfg, police_cfg);
        through_cluster(&cfg);
        for n in from..from + POLICE_NEW {
            police.insert(n, 1);
        }
        versions += POLICE_NEW;
        if from > 0 {
            let version = round + 1;
            let mut csv = String::from("id,name,sex,ethnicity,status,version,op\n");
            for _ in 0..POLICE_UPDATED {
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
        let c_from = commerce.len() as u64;
        let mut updated = BTreeSet::new();
        if c_from > 0 {
            for _ in 0..COMMERCE_UPDATED {
                updated.insert(rng.below(c_from));
            }
        }
        for &n in &updated {
            *commerce.get_mut(&n).unwrap() += 1;
        }
        for n in c_from..c_from + COMMERCE_NEW {
            commerce.insert(n, 1);
        }
        versions += COMMERCE_NEW + updated.len() as u64;
        commerce_write(
            &sources_db.url,
            c_from..c_from + COMMERCE_NEW,
            &updated.into_iter().collect::<Vec<_>>(),
        )
        .await;

        // While the round's records flow: once the ledger has taken a random part of them
        // (about 2.5 rows a police record, 2.5 a commerce record).
        let round_rows =
            (5 * (POLICE_NEW + POLICE_UPDATED + COMMERCE_NEW + COMMERCE_UPDATED) / 2) as i64;
        let wait_for = rows_before + 1 + rng.below(round_rows as u64 / 2) as i64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ledger_rows(&pool).await < wait_for && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kind = if on_cluster && (round as usize) <= cluster_faults.len() {
            // The first rounds go through every cluster fault once, in the seed's order.
            cluster_faults[round as usize - 1]
        } else if on_cluster {
            match rng.below(10) {
                0 => "kill police adapter",
                1 => "kill commerce adapter",
                2 => "kill router a",
                3 => "kill router b",
                4 => "kill a sink",
                5 => "stop node 1",
                6 => "stop node 2",
                7 => "stop node 3",
                8 => "restart PostgreSQL",
                _ => "stop PostgreSQL -m immediate",
            }
        } else {
            match rng.below(9) {
                0 => "kill police adapter",
                1 => "kill commerce adapter",
                2 | 3 => "kill router",
                4 => "kill a sink",
                5 => "restart RabbitMQ",
                6 => "SIGKILL RabbitMQ's VM",
                7 => "restart PostgreSQL",
                _ => "stop PostgreSQL -m immediate",
            }
        };
        let pause = Duration::from_millis(200 + rng.below(2000));
        let hit = format!(
            "{} of the round's ~{round_rows} ledger rows written, {}",
            ledger_rows(&pool).await - rows_before,
            in_flight(&w, &pool, partitions).await
        );
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
            "kill router" | "kill router a" => {
                w.router.take().unwrap().kill();
                tokio::time::sleep(pause).await;
                w.start_router().await;
            }
            "kill router b" => {
                fleet.router_b.take().unwrap().kill();
                tokio::time::sleep(pause).await;
                let (cfg, port) = fleet.router_b_cfg.clone().unwrap();
                fleet.router_b = Some(w.spawn_router(&cfg, port).await);
            }
            "stop node 1" | "stop node 2" | "stop node 3" => {
                let c = cluster.as_ref().unwrap();
                let n: usize = kind[kind.len() - 1..].parse().unwrap();
                c.ctl(n, &["stop_app"]);
                let _back = govbus_tests::cluster::Stopped(c, n);
                tokio::time::sleep(pause).await;
            }
            "kill a sink" => {
                let agency = SINKS[rng.below(SINKS.len() as u64) as usize];
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
            "SIGKILL RabbitMQ's VM" => {
                run(
                    Command::new("pkill").args(["-KILL", "-f", "beam.smp"]),
                    "pkill -KILL beam.smp",
                );
                tokio::time::sleep(pause).await;
                run(
                    Command::new("rabbitmq-server").arg("-detached"),
                    "rabbitmq-server -detached",
                );
                broker_back(&w).await;
            }
            "restart PostgreSQL" => run(
                Command::new("pg_ctlcluster").args([
                    "--skip-systemctl-redirect",
                    &pg,
                    "main",
                    "restart",
                ]),
                "pg_ctlcluster restart",
            ),
            _ => {
                run(
                    Command::new("pg_ctlcluster").args([
                        "--skip-systemctl-redirect",
                        &pg,
                        "main",
                        "stop",
                        "-m",
                        "immediate",
                    ]),
                    "pg_ctlcluster stop -m immediate",
                );
                tokio::time::sleep(pause).await;
                run(
                    Command::new("pg_ctlcluster").args([
                        "--skip-systemctl-redirect",
                        &pg,
                        "main",
                        "start",
                    ]),
                    "pg_ctlcluster start",
                );
            }
        }
        *faults.entry(kind).or_default() += 1;
        println!(
            "round {round:>2}: {kind:<28} hit {hit}; police {:>5} records, commerce {:>5}, {:>4.0} s",
            police.len(),
            commerce.len(),
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(rng.below(2000))).await;
    }

    // Settle: every file sent, the router's and every agency's queue empty, nothing kept for
    // retry, the ledger still.
    println!("settling …");
    // The operator's check after the campaign: quorum queues RabbitMQ left without a leader
    // (meanwhile the router kept their deliveries and served every other agency).
    let leaderless = if on_cluster {
        Vec::new() // a cluster's queues elect their leaders among three nodes
    } else {
        elect_leaderless(&w.vhost.name)
    };
    if !leaderless.is_empty() {
        println!(
            "  RabbitMQ left {} without a leader (rabbitmq-server#10070); elections triggered",
            leaderless.join(", ")
        );
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = (-1i64, Instant::now());
    loop {
        // The commerce adapter polls its table every 100 ms: the quiet window covers it.
        let inboxes_empty = std::fs::read_dir(w.path("adapters/police/inbox"))
            .map(|r| r.filter_map(|e| e.ok()).all(|e| e.path().is_dir()))
            .unwrap_or(false);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        if rows != last.0 {
            last = (rows, Instant::now());
        }
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_deliveries")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        let mut queues_empty =
            inboxes_empty && kept == 0 && w.partition_backlog(partitions).await == 0;
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

    stop_independent.cancel();

    // Per record: the version each granted agency must hold (keyed hash as the ledger has it).
    let ids =
        IdKey::new(&bus_schemas::keys::load_id_secret(&w.path("platform/id-secret")).unwrap());
    let expect = |item: &str, tianhe_only: bool| -> BTreeMap<String, (String, i64)> {
        match item {
            "household" => police
                .iter()
                .map(|(n, v)| {
                    let k = citizen(*n);
                    (ids.record_key_hash("household", &k), (k, *v as i64))
                })
                .collect(),
            _ => commerce
                .iter()
                .filter(|(n, _)| !tianhe_only || *n % 2 == 0)
                .map(|(n, v)| {
                    let k = uscc(*n);
                    (ids.record_key_hash("enterprise", &k), (k, *v as i64))
                })
                .collect(),
        }
    };
    let agencies = sqlx::PgPool::connect(&agencies_db.url).await.unwrap();
    let (mut lost, mut stale, mut ungranted, mut sink_off, mut delivered) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut shown = 0;
    let mut show = |what: String| {
        if shown < 20 {
            println!("  {what}");
        }
        shown += 1;
    };
    for (agency, item, fields, tianhe_only) in grants() {
        let want = expect(item, tianhe_only);
        // The ledger: each record's newest version delivered to this agency.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT key_hash, message_id, version FROM ledger WHERE agency = $1 AND item = $2",
        )
        .bind(agency)
        .bind(item)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut ledger: BTreeMap<&str, i64> = BTreeMap::new();
        let mut by_message: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, m, v) in &rows {
            let e = ledger.entry(k.as_str()).or_insert(*v);
            *e = (*e).max(*v);
            by_message.insert(m.as_str(), k.as_str());
        }
        for (k, (key, v)) in &want {
            match ledger.get(k.as_str()) {
                None => {
                    lost += 1;
                    show(format!(
                        "{agency}/{item}: record {}… version {v} not in the ledger",
                        &key[..6]
                    ));
                }
                Some(g) if g < v => {
                    stale += 1;
                    show(format!(
                        "{agency}/{item}: record {}… at version {g} in the ledger, {v} sent",
                        &key[..6]
                    ));
                }
                Some(_) => delivered += 1,
            }
        }
        let extra = ledger.keys().filter(|k| !want.contains_key(**k)).count() as i64;
        if extra > 0 {
            ungranted += extra;
            show(format!(
                "{agency}/{item}: {extra} records in the ledger it was not granted"
            ));
        }
        if agency == "tianhe" {
            // The independent consumer: what the bodies said.
            let t = tianhe.lock().unwrap();
            let want_keys: BTreeMap<&str, i64> =
                want.values().map(|(k, v)| (k.as_str(), *v)).collect();
            for (key, v) in &want_keys {
                match t.latest.get(*key) {
                    Some(g) if g >= v => {}
                    other => {
                        sink_off += 1;
                        show(format!(
                            "tianhe (independent consumer): record {}… read at {other:?}, {v} sent",
                            &key[..6]
                        ));
                    }
                }
            }
            let extra = t
                .latest
                .keys()
                .filter(|k| !want_keys.contains_key(k.as_str()))
                .count();
            ungranted += extra as i64 + t.ungranted.len() as i64;
            if extra > 0 || !t.ungranted.is_empty() || t.undecodable > 0 {
                show(format!(
                    "tianhe (independent consumer): {extra} ungranted records, fields beyond the grant {:?}, {} undecodable",
                    t.ungranted, t.undecodable
                ));
            }
            sink_off += t.undecodable as i64;
            println!(
                "  tianhe's independent consumer: {} records read over {} sessions",
                t.latest.len(),
                t.sessions
            );
            continue;
        }
        // The agency's own table: each record's row at its newest version (rows are matched
        // to records through their delivery's message id in the ledger, pseudonyms too).
        let table = format!("{agency}_{item}");
        let sink: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT govbus_message_id, govbus_version FROM {table}"
        )))
        .fetch_all(&agencies)
        .await
        .unwrap_or_default();
        let mut held: BTreeMap<&str, i64> = BTreeMap::new();
        for (m, v) in &sink {
            match by_message.get(m.as_str()) {
                Some(k) => {
                    let e = held.entry(*k).or_insert(*v);
                    *e = (*e).max(*v);
                }
                None => {
                    ungranted += 1;
                    show(format!(
                        "{table}: a row whose delivery is not in the ledger"
                    ));
                }
            }
        }
        for (k, (key, v)) in &want {
            match held.get(k.as_str()) {
                Some(g) if g == v => {}
                other => {
                    sink_off += 1;
                    show(format!(
                        "{table}: record {}… at {other:?}, {v} sent",
                        &key[..6]
                    ));
                }
            }
        }
        if sink.len() != held.len() {
            sink_off += (sink.len() as i64 - held.len() as i64).abs();
            show(format!(
                "{table}: {} rows for {} records",
                sink.len(),
                held.len()
            ));
        }
        // Fields beyond the grant, from what the table holds (not the ledger's own account).
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
              WHERE table_name = $1 AND column_name NOT LIKE 'govbus\\_%'",
        )
        .bind(&table)
        .fetch_all(&agencies)
        .await
        .unwrap();
        for (c, ty) in columns {
            let filled: Vec<String> = if ty == "jsonb" {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT DISTINCT '{c}.' || k FROM {table}, jsonb_object_keys(jsonb_strip_nulls(\"{c}\")) k"
                )))
                .fetch_all(&agencies)
                .await
                .unwrap()
            } else {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT '{c}' FROM {table} WHERE \"{c}\" IS NOT NULL LIMIT 1"
                )))
                .fetch_all(&agencies)
                .await
                .unwrap()
            };
            for f in filled {
                if !fields.contains(&f.as_str()) {
                    ungranted += 1;
                    show(format!(
                        "{table}: field {f} holds values; the grant does not list it"
                    ));
                }
            }
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
    // What the routers dead-lettered never reached an agency: lost.
    let dead_lettered = i64::from(w.count("govbus.router.dlq").await);
    if dead_lettered > 0 {
        lost += dead_lettered;
        show(format!("{dead_lettered} messages in govbus.router.dlq"));
    }
    // Each record's versions in its ledger chain in order.
    let out_of_order = common::ledger_versions_out_of_order(&pool).await;
    let verify = Process::command("govbus")
        .args(["ledger", "verify", "--database-url", &w.db.url])
        .output()
        .unwrap();
    let ledger_ok = verify.status.success();

    let published = police.len() as u64 + commerce.len() as u64;
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
        "  published: {published} records ({} police from {} files, {} commerce from PostgreSQL; {versions} versions)",
        police.len(),
        2 * rounds - 1,
        commerce.len()
    );
    println!(
        "  delivered: {delivered} (agency, record) pairs at their latest version in the ledger; lost {lost}; stale {stale}; ungranted {ungranted}; out of order {out_of_order}; agency copies off {sink_off}; ledger {}",
        if ledger_ok { "verifies" } else { "BROKEN" }
    );
    for p in [fleet.police.take(), fleet.commerce.take()]
        .into_iter()
        .flatten()
    {
        p.terminate();
    }
    if lost > 0 || stale > 0 || ungranted > 0 || out_of_order > 0 || sink_off > 0 || !ledger_ok {
        std::process::exit(1);
    }
}
