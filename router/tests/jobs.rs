//! Jobs that run once per platform hold a PostgreSQL advisory lock: while one router runs a
//! round, another router's `once` skips it and `exclusive` waits for it.
use std::time::Duration;

use govbus_tests::{Services, TestDatabase};
use router::store::jobs::{exclusive, once, Job};

#[tokio::test]
async fn a_job_runs_on_one_router_at_a_time() {
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    // Two routers: two pools.
    let a = router::store::connect(&db.url, 2).await.unwrap();
    let b = router::store::connect(&db.url, 2).await.unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            once(&a, Job::Retry, async {
                started_tx.send(()).unwrap();
                release_rx.await.unwrap();
            })
            .await
            .unwrap()
        })
    };
    started_rx.await.unwrap();
    // While a holds the retry round, b's round is skipped; another job is not held up.
    assert_eq!(once(&b, Job::Retry, async { 1 }).await.unwrap(), None);
    assert_eq!(
        once(&b, Job::Checkpoints, async { 2 }).await.unwrap(),
        Some(2)
    );
    // A replay waits for the one in progress instead of skipping.
    let (replay_started_tx, replay_started_rx) = tokio::sync::oneshot::channel();
    let (replay_release_tx, replay_release_rx) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let a = a.clone();
        tokio::spawn(async move {
            exclusive(&a, Job::Replay, async {
                replay_started_tx.send(()).unwrap();
                replay_release_rx.await.unwrap();
            })
            .await
            .unwrap()
        })
    };
    replay_started_rx.await.unwrap();
    let second = tokio::spawn({
        let b = b.clone();
        async move { exclusive(&b, Job::Replay, async { 3 }).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second replay ran beside the first"
    );
    replay_release_tx.send(()).unwrap();
    first.await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second replay ran once the first ended")
            .unwrap(),
        3
    );
    // Once a's round ends, b's runs.
    release_tx.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Some(()));
    assert_eq!(once(&b, Job::Retry, async { 4 }).await.unwrap(), Some(4));
    a.close().await;
    b.close().await;
}
