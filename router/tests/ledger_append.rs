//! The ledger on a real PostgreSQL: appending skips deliveries already in it, and the router's
//! fast path (no second look-up) is caught by the unique index and falls back.
use govbus_tests::{Services, TestDatabase};
use router::store::ledger::{self, Entry};

fn entry(message_id: &str, version: i64) -> Entry {
    Entry {
        agency: "health".into(),
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

    // m2 again beside the new m3: the fast path hits the unique index, and says so.
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
