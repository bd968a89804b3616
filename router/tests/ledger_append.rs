//! The ledger on a real PostgreSQL: appending skips deliveries already in it, and the router's
//! fast path (no second look-up) is caught by the message-id constraint and falls back.
use govbus_tests::{Services, TestDatabase};
use router::store::ledger::{self, Entry};

fn entry(message_id: &str, version: i64) -> Entry {
    Entry {
        agency: "health".into(),
        chain: 0,
        grant_id: "g".into(),
        grant_revision: 1,
        item: "household".into(),
        message_id: message_id.into(),
        ingest_id: format!("ingest-{message_id}"),
        key_hash: "k".into(),
        version,
        op: "upsert".into(),
        fields: vec!["a".into()],
        department: "police".into(),
        dept_key_id: "police-2026".into(),
        dept_signature: "sig".into(),
        // Rows of both kinds verify: with a department batch proof, and without (written
        // before batch signatures).
        dept_proof: (version % 2 == 0).then(|| ledger::DeptProof {
            signature: "sig".into(),
            statement: "govbus-batch-v1\npolice-2026\ningest\n2\n00".into(),
            leaf: 1,
            path: vec![7; 32],
        }),
        source_time_ms: None,
        replay: None,
        to: None,
    }
}

#[tokio::test]
async fn a_delivery_already_in_the_ledger_is_refused_on_the_fast_path_and_skipped_on_the_checked_one(
) {
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let pool = router::store::connect(&db.url, 2).await.unwrap();
    let (a, b, c) = (entry("m1", 1), entry("m2", 2), entry("m3", 3));

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        ledger::append_checked(&mut tx, &[&a, &b], false)
            .await
            .unwrap(),
        2
    );
    tx.commit().await.unwrap();

    // m2 again beside the new m3: the fast path hits the constraint, and says so.
    let mut tx = pool.begin().await.unwrap();
    let err = ledger::append_checked(&mut tx, &[&b, &c], false)
        .await
        .unwrap_err();
    assert!(ledger::is_duplicate(&err), "{err}");
    drop(tx);

    // Checked: m2 is skipped, m3 is added once, and the chain holds.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        ledger::append_checked(&mut tx, &[&b, &c], true)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM ledger WHERE agency = 'health' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    let verified = ledger::verify(&pool).await.unwrap();
    assert_eq!(verified.rows, 3);
    assert!(verified.broken.is_empty(), "{:?}", verified.broken);

    // Any other database error is not taken for a duplicate.
    let other = sqlx::query("SELECT 1/0").execute(&pool).await.unwrap_err();
    assert!(!ledger::is_duplicate(&other));
    pool.close().await;
}

/// A record delivered to four agencies keeps its department's statement and signature once
/// and its leaf and path once (migration 0015); every row's hash still covers them, so
/// editing the kept batch or removing a leaf breaks each chain that names it.
#[tokio::test]
async fn a_department_batch_is_kept_once_and_still_covered_by_every_row_that_names_it() {
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let pool = router::store::connect(&db.url, 2).await.unwrap();
    let agencies = ["civil", "health", "hrss", "tax"];
    let deliveries: Vec<Entry> = (0..2)
        .flat_map(|leaf| {
            agencies.iter().map(move |a| {
                let mut e = entry(&format!("{a}-{leaf}"), 2);
                e.agency = a.to_string();
                e.ingest_id = format!("ingest-{leaf}");
                let p = e.dept_proof.as_mut().unwrap();
                p.leaf = leaf;
                p.path = vec![leaf as u8 + 1; 32];
                e
            })
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    let refs: Vec<&Entry> = deliveries.iter().collect();
    assert_eq!(ledger::append(&mut tx, &refs).await.unwrap(), 8);
    tx.commit().await.unwrap();
    // A replay of the same record writes no second copy of its proof.
    let mut again = deliveries[0].clone();
    again.message_id = "civil-replayed".into();
    again.replay = Some("r1".into());
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(ledger::append(&mut tx, &[&again]).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM dept_batches").await, 1);
    assert_eq!(count("SELECT count(*) FROM dept_leaves").await, 2);
    assert_eq!(
        count(
            "SELECT count(*) FROM ledger WHERE dept_signature IS NULL AND dept_batch IS NOT NULL"
        )
        .await,
        9
    );
    let verified = ledger::verify(&pool).await.unwrap();
    assert_eq!((verified.agencies, verified.rows), (4, 9));
    assert!(verified.broken.is_empty(), "{:?}", verified.broken);

    // Runs `sql`, then expects every one of the four chains to break at `seq`, saying `why`.
    let breaks_at = |sql: &'static str, seq: i64, why: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).execute(&pool).await.unwrap();
            let broken = ledger::verify(&pool).await.unwrap().broken;
            assert_eq!(broken.len(), 4, "after {sql}: {broken:?}");
            assert!(
                broken
                    .iter()
                    .all(|b| b.seq == seq && b.problem.contains(why)),
                "after {sql}: {broken:?}"
            );
        }
    };
    // The kept signature edited: every chain breaks at its first row; put back, none does.
    breaks_at("UPDATE dept_batches SET signature = 'forged'", 1, "edited").await;
    sqlx::query("UPDATE dept_batches SET signature = 'sig'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(ledger::verify(&pool).await.unwrap().broken.is_empty());
    // Leaf 1's path removed: the chains break at the rows naming it, and say why.
    breaks_at("DELETE FROM dept_leaves WHERE leaf = 1", 2, "missing").await;
    pool.close().await;
}

/// Each router partition keeps its own chain per agency: two partitions append to one
/// agency's ledger side by side, each chain numbered from 1, and verify walks both, naming the
/// partition of a broken row. A row moved to the other partition's chain breaks it.
#[tokio::test]
async fn each_partition_keeps_its_own_chain_per_agency() {
    let db = TestDatabase::create(&Services::from_env()).await.unwrap();
    let pool = router::store::connect(&db.url, 4).await.unwrap();
    let of = |chain: i16, n: i64| {
        let mut e = entry(&format!("p{chain}-{n}"), n);
        e.chain = chain;
        e.key_hash = format!("k{chain}-{n}");
        e
    };
    // Two transactions at once, one per partition: neither waits on the other's head.
    let mut t0 = pool.begin().await.unwrap();
    let mut t1 = pool.begin().await.unwrap();
    let (a, b) = (of(0, 1), of(1, 1));
    assert_eq!(ledger::append(&mut t0, &[&a]).await.unwrap(), 1);
    let in_time = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        ledger::append(&mut t1, &[&b]),
    )
    .await
    .expect("partition 1's append waited on partition 0's chain head");
    assert_eq!(in_time.unwrap(), 1);
    t1.commit().await.unwrap();
    t0.commit().await.unwrap();
    let more: Vec<Entry> = (2..=3).flat_map(|n| [of(0, n), of(1, n)]).collect();
    let mut tx = pool.begin().await.unwrap();
    let refs: Vec<&Entry> = more.iter().collect();
    assert_eq!(ledger::append(&mut tx, &refs).await.unwrap(), 4);
    tx.commit().await.unwrap();
    let seqs: Vec<(i16, i64)> =
        sqlx::query_as("SELECT chain, seq FROM ledger WHERE agency = 'health' ORDER BY chain, seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(seqs, [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]);
    let verified = ledger::verify(&pool).await.unwrap();
    assert_eq!((verified.agencies, verified.rows), (2, 6));
    assert!(verified.broken.is_empty(), "{:?}", verified.broken);
    // Partition 1's second row moved into partition 0's chain (as seq 4 there): both break.
    sqlx::query("UPDATE ledger SET chain = 0, seq = 4 WHERE chain = 1 AND seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let broken = ledger::verify(&pool).await.unwrap().broken;
    let mut at: Vec<(i16, i64)> = broken.iter().map(|b| (b.chain, b.seq)).collect();
    at.sort();
    assert_eq!(at, [(0, 4), (1, 3)], "{broken:?}");
    pool.close().await;
}
