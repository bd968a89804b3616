//! A district platform on a RabbitMQ node of its own (scripts/lib-district.sh), restarted while
//! the city's records cross the link: nothing is lost, nothing lands in `govbus.unrouted`, and
//! both ledgers verify. Run by scripts/test after the rest, alone.
mod common;

use std::time::{Duration, Instant};

use bus_schemas::wire;
use common::{
    metric,
    platforms::{
        city_catalogue, expected_tianhe, link, police_households, tianhe_catalogue, tianhe_records,
        DISTRICT, TIANHE_GRANTS,
    },
    Accounts, World,
};
use govbus_tests::{cluster::DistrictNode, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the district's RabbitMQ node: run by scripts/test after the rest, against its district node"]
async fn a_district_broker_restarted_mid_stream_loses_nothing() {
    const RECORDS: u64 = 10_000;
    let node = DistrictNode::from_env();
    let mut city = World::new().await;
    let mut tianhe = World::on(&node.services()).await;
    city_catalogue(&city);
    std::fs::write(
        tianhe.path("catalogue.toml"),
        tianhe_catalogue(&city, TIANHE_GRANTS, "440106"),
    )
    .unwrap();
    tianhe.edit(
        "router.toml",
        "[router]\n",
        "[router]\nlink_poll_ms = 200\n",
    );
    city.start_router().await;
    tianhe.start_router().await;

    // The city's records for Tianhe wait in platform.tianhe until the link exists; then the
    // shovel moves them while Tianhe's router delivers, and the district's node restarts.
    let cfg = police_households(&city, RECORDS);
    city.run_adapter(&cfg);
    let deadline = Instant::now() + Duration::from_secs(120);
    while city.count(&wire::platform_queue(DISTRICT)).await < (RECORDS / 2) as u32 {
        assert!(
            Instant::now() < deadline,
            "the city never routed its records for Tianhe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prefix = format!("{}-", unique_name("f").replace('_', ""));
    let _cleanup = Accounts(prefix.clone());
    link(&city, &tianhe, &prefix);
    // The restart comes as soon as the shovel has started moving them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while city.count(&wire::platform_queue(DISTRICT)).await == (RECORDS / 2) as u32 {
        assert!(Instant::now() < deadline, "nothing crossed the link");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pool = tianhe.pg().await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    let waiting = city.count(&wire::platform_queue(DISTRICT)).await;
    node.ctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.ctl(&["start_app"]);
    node.ctl(&["await_startup"]);
    assert!(
        (before as u64) < RECORDS / 2,
        "the restart missed the stream: {before} of {} already delivered",
        RECORDS / 2
    );

    let got = tianhe
        .drain_until_delivered("agency.civil", (RECORDS / 2) as usize, 300)
        .await;
    assert_eq!(
        tianhe_records(&tianhe, &got).await,
        expected_tianhe(RECORDS),
        "exactly the Tianhe records, none lost"
    );
    assert_eq!(
        tianhe.count(wire::UNROUTED_QUEUE).await,
        0,
        "nothing unrouted"
    );
    assert_eq!(city.count(&wire::platform_queue(DISTRICT)).await, 0);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after as u64, RECORDS / 2, "one ledger row per delivery");
    let reconnects = metric(&tianhe.metrics().await, "govbus_router_reconnects_total ");
    assert!(
        reconnects >= 1.0,
        "Tianhe's router never reconnected: the restart missed it"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = reqwest::get(tianhe.api_url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["links"]["links"][0]["state"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shovel from the city did not run again after the restart: {}",
            status["links"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    city.verify_ledger();
    tianhe.verify_ledger();
    println!(
        "district node restarted with {before} of {} delivered and {waiting} waiting in platform.tianhe; {reconnects} reconnect(s)",
        RECORDS / 2
    );
}
