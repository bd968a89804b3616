//! Purge at the end of a sharing period (articles 30, 38): the router purges what it keeps of
//! an item's records (latest records, kept deliveries, refused bodies) once its sharing period
//! ended and the grace passed, and not before; the ledger still verifies; `govbus report`
//! counts what was purged; `govbus-agency sink --purge-ended` deletes the agency's rows of
//! the item and keeps those of items it still holds.
mod common;

use std::time::Duration;

use bus_schemas::wire::Signer;
use common::{citizen, wait_for, World};
use govbus_tests::Process;
use serde_json::json;

/// Household records: enough that civil's full queue (max-length 2, which quorum queues
/// overshoot under pipelined publishes) refuses some, which the router keeps.
const HOUSEHOLDS: i64 = 200;

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// (latest records, kept deliveries, refused bodies) of the household item.
async fn kept(pool: &sqlx::PgPool) -> (i64, i64, i64) {
    (
        count(pool, "SELECT count(*) FROM latest_records WHERE item = 'household'").await,
        count(
            pool,
            "SELECT count(*) FROM pending_deliveries WHERE entry->>'item' = 'household'",
        )
        .await,
        count(
            pool,
            "SELECT count(*) FROM refusals WHERE split_part(routing_key, '.', 2) = 'household' AND length(body) > 0",
        )
        .await,
    )
}

/// Ends the household item's sharing period, and its two grants, on `day`.
fn end_household(w: &World, day: &str, was: Option<&str>) {
    match was {
        None => {
            w.edit(
                "catalogue.toml",
                "record_type = \"gov.gz.police.HouseholdRegistration\"",
                &format!(
                    "record_type = \"gov.gz.police.HouseholdRegistration\"\nshared_until = {day}"
                ),
            );
            for g in ["civil-household", "health-household"] {
                w.edit(
                    "catalogue.toml",
                    &format!("id = \"{g}\""),
                    &format!("id = \"{g}\"\nvalid_until = {day}"),
                );
            }
        }
        Some(was) => {
            let text = std::fs::read_to_string(w.path("catalogue.toml")).unwrap();
            assert_eq!(text.matches(&format!("= {was}\n")).count(), 3);
            std::fs::write(
                w.path("catalogue.toml"),
                text.replace(&format!("= {was}\n"), &format!("= {day}\n")),
            )
            .unwrap();
        }
    }
}

fn purge_due(w: &World, grace: u32) -> String {
    w.govbus_with_config(&["purge", "--dry-run", "--grace-days", &grace.to_string()])
}

/// Household records delivered (civil's queue full, so some are kept for it), one refused
/// with its body kept, enterprise records alongside, health's sink holding both items. The
/// household's sharing period ends today: nothing is purged. It ends yesterday: with the
/// grace (0 days here, 1 day in the dry run) past, the router purges the household's latest
/// records, kept deliveries and refused bodies, and nothing of the enterprise; the ledger
/// verifies; the report counts it; the sink's `--purge-ended` deletes health's household rows
/// and keeps its enterprise rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharing_period_that_ended_is_purged_after_the_grace() {
    let mut w = World::new().await;
    let config = std::fs::read_to_string(w.path("router.toml")).unwrap();
    std::fs::write(
        w.path("router.toml"),
        config + "\n[retention]\npurge_grace_days = 0\npurge_check_secs = 1\n",
    )
    .unwrap();
    w.start_router().await;
    w.set_policy(
        "^agency\\.civil$",
        json!({"max-length": 2, "overflow": "reject-publish"}),
    )
    .await;
    w.await_policy("agency.civil").await;
    let police = w.police(0, HOUSEHOLDS as u64, 1);
    let commerce = w.commerce(0, 10);
    w.run_adapter(&police);
    w.run_adapter(&commerce);
    let rogue = Signer::from_seed("police-2026", &[42u8; 32]);
    let household = bus_schemas::Registry::standard()
        .get("gov.gz.police.HouseholdRegistration")
        .unwrap()
        .clone();
    w.publish_raw(
        "police.household.7",
        "household",
        &household,
        json!({"citizen_id_number": citizen(900), "name": "冒名"}),
        &rogue,
    )
    .await;
    let pool = w.pg().await;
    wait_for(
        30,
        "every delivery settled, some kept for civil",
        || async {
            let (latest, pending, refused) = kept(&pool).await;
            latest == HOUSEHOLDS && pending > 0 && refused == 1
        },
    )
    .await;
    let sink_flags = ["--postgres", &w.db.url, "--table", "health_records"];
    let sink = w.spawn_agency_tool("sink", "health", &sink_flags);
    wait_for(
        60,
        "health's households and 10 enterprises landed",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM health_records")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == HOUSEHOLDS + 10
        },
    )
    .await;
    sink.kill();

    let today = bus_schemas::validate::today_in_shanghai();
    let yesterday = today.pred_opt().unwrap();
    end_household(&w, &today.to_string(), None);
    // The router takes the new catalogue (the grants end today) and runs its purge rounds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let before = kept(&pool).await;
    assert_eq!(before.0, HOUSEHOLDS, "still shared today: nothing purged");
    assert!(before.1 > 0 && before.2 == 1, "{before:?}");
    // (The example catalogue's expired civil-registration grant is due; the household not.)
    let due = purge_due(&w, 0);
    assert!(
        due.contains("\"grant\":\"civil-registration\",\"reason\":\"grant_ended\""),
        "{due}"
    );
    assert!(
        !due.contains("household"),
        "nothing due while the period has not ended: {due}"
    );

    end_household(&w, &yesterday.to_string(), Some(&today.to_string()));
    assert!(
        !purge_due(&w, 1).contains("household"),
        "ended yesterday, with one day of grace: not yet"
    );
    assert!(purge_due(&w, 0).contains("\"item\":\"household\""));
    wait_for(
        15,
        "the router purged the household's kept records",
        || async { kept(&pool).await == (0, 0, 0) },
    )
    .await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM latest_records WHERE item = 'enterprise'"
        )
        .await,
        10,
        "the enterprise is still shared: its records stay"
    );
    let refusal_kept = count(
        &pool,
        "SELECT count(*) FROM refusals WHERE body_hmac IS NOT NULL AND reason = 'bad_signature'",
    )
    .await;
    assert_eq!(
        refusal_kept, 1,
        "the refusal and its body's keyed hash stay"
    );
    let purged: (String, i64, i64, i64) = sqlx::query_as(
        "SELECT reason, latest_records, kept_deliveries, refused_bodies FROM purges WHERE item = 'household'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(purged, ("item_ended".into(), before.0, before.1, before.2));
    w.verify_ledger();

    // The report counts what was purged.
    let csv = w.govbus_with_config(&["report", "--year", &today.format("%Y").to_string()]);
    assert!(
        csv.contains(&format!(
            "purges,,,household,purged_latest_records,{HOUSEHOLDS}"
        )),
        "{csv}"
    );
    assert!(csv.contains(&format!(
        "purges,,,household,purged_kept_deliveries,{}",
        before.1
    )));

    // The agency deletes its rows of the ended item, and only those: a row of an item the
    // platform lists no grant of (put there by hand here) is named and kept.
    sqlx::query(
        "INSERT INTO health_records (govbus_item, govbus_key, govbus_version, govbus_message_id)
         VALUES ('adoption', 'k-1', 1, 'by-hand')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let token = w.api_token("agency", "health");
    let api = w.api_url("");
    let mut args: Vec<std::ffi::OsString> = vec!["sink".into()];
    args.extend(w.agency_flags("health"));
    for a in [
        "--postgres",
        w.db.url.as_str(),
        "--table",
        "health_records",
        "--purge-ended",
        "--api-url",
        api.as_str(),
    ] {
        args.push(a.into());
    }
    let out = Process::command("govbus-agency")
        .args(&args)
        .env("GOVBUS_API_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{HOUSEHOLDS} rows deleted")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT govbus_item, count(*) FROM health_records GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        [("adoption".to_string(), 1), ("enterprise".to_string(), 10)]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kept the rows of adoption"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong token is named, and deletes nothing.
    let out = Process::command("govbus-agency")
        .args(&args)
        .env("GOVBUS_API_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
