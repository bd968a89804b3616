//! `govbus-demo-sources`: the three sample departments' own systems, for the demo (scripts/demo
//! and docker compose). Every few seconds it adds records and changes some:
//! - police: drops a GB18030 CSV export (Chinese headers) into the household inbox;
//! - commerce: inserts and updates rows of `enterprise_registration` in PostgreSQL;
//! - local tax: serves its registrations as a JSON API with cursor pages and a bearer token.
//!
//! All data is invented: names are generated, ID numbers and credit codes are made valid by
//! their check characters only.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use bus_schemas::validate::{citizen_id, credit_code};
use clap::Parser;
use serde_json::{json, Value};

/// The sample departments' systems for the govbus demo.
#[derive(Debug, Parser)]
#[command(name = "govbus-demo-sources", version, about)]
struct Args {
    /// Police: the household adapter's CSV inbox.
    #[arg(long)]
    police_inbox: Option<PathBuf>,
    /// Commerce: the PostgreSQL database the enterprise adapter reads (the table is created).
    #[arg(long)]
    commerce_db: Option<String>,
    /// Local tax: where to serve the registration API.
    #[arg(long)]
    tax_listen: Option<std::net::SocketAddr>,
    /// Local tax: file with the API's bearer token (written with a new token if missing).
    #[arg(long)]
    tax_token_file: Option<PathBuf>,
    /// Milliseconds between changes.
    #[arg(long, default_value_t = 3000)]
    every_ms: u64,
    /// New records per department per change.
    #[arg(long, default_value_t = 3)]
    per_tick: u64,
    /// Stop after this many changes (default: until Ctrl-C).
    #[arg(long)]
    ticks: Option<u64>,
}

const SURNAMES: &[&str] = &["陈", "黄", "李", "梁", "林", "张", "刘", "王", "吴", "何"];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "杰", "涛", "明",
];
/// (division, town (街道) code, police station): the town is written as its code, so a
/// district's grant can select its records by the division prefix (`registered_town`).
const TOWNS: &[(&str, &str, &str)] = &[
    ("440106", "440106001", "石牌派出所"),
    ("440104", "440104001", "北京街派出所"),
    ("440111", "440111001", "棠景派出所"),
    ("440105", "440105001", "滨江派出所"),
];
const DIVISIONS: &[(&str, &str)] = &[("440106", "广州市天河区"), ("440104", "广州市越秀区")];

fn name(n: u64) -> String {
    format!(
        "{}{}{}",
        SURNAMES[(n % 10) as usize],
        GIVEN[((n / 10) % 12) as usize],
        GIVEN[((n / 120 + n) % 12) as usize]
    )
}

fn citizen(n: u64) -> String {
    let (division, _, _) = TOWNS[(n % TOWNS.len() as u64) as usize];
    let birth = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap()
        + chrono::Duration::days(((n * 7919) % 20000) as i64);
    let first17 = format!("{division}{}{:03}", birth.format("%Y%m%d"), n % 1000);
    let c = citizen_id::check_character(&first17).expect("digits");
    format!("{first17}{c}")
}

fn uscc(n: u64) -> String {
    let first17 = format!("91440101{n:09}");
    let c = credit_code::check_character(&first17).expect("digits");
    format!("{first17}{c}")
}

fn now_text() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Police: one CSV export per tick, GB18030 as the household system writes it.
fn police_tick(inbox: &std::path::Path, tick: u64, per: u64) -> anyhow::Result<()> {
    let mut text = String::from(
        "姓名,公民身份号码,性别,民族,户籍地镇街道,户籍地派出所,户籍状态,注销前行政区划,注销日期,注销原因,版本号,变更时间,操作\n",
    );
    let now = now_text();
    for i in 0..per {
        let n = tick * per + i;
        let (_, town, station) = TOWNS[(n % TOWNS.len() as u64) as usize];
        text.push_str(&format!(
            "{},{},{},汉族,{town},{station},正常,,,,{},{now},U\n",
            name(n),
            citizen(n),
            if n.is_multiple_of(2) { "男" } else { "女" },
            tick * 10 + 1
        ));
    }
    // Every third tick someone registered earlier moves away: a newer version, cancelled.
    if tick > 0 && tick.is_multiple_of(3) {
        let n = (tick - 1) * per;
        let (division, town, station) = TOWNS[(n % TOWNS.len() as u64) as usize];
        let today = chrono::Utc::now().date_naive().format("%Y-%m-%d");
        text.push_str(&format!(
            "{},{},{},汉族,{town},{station},注销,{division},{today},迁出,{},{now},U\n",
            name(n),
            citizen(n),
            if n.is_multiple_of(2) { "男" } else { "女" },
            tick * 10 + 2
        ));
    }
    let (bytes, _, _) = encoding_rs::GB18030.encode(&text);
    let file = format!("household-{tick:06}.csv");
    let tmp = inbox.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, inbox.join(&file))?;
    Ok(())
}

async fn commerce_setup(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(include_str!(
        "../../examples/commerce-enterprise/schema.sql"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// Commerce: new enterprises (Tianhe and Yuexiu alternating) and an address change.
async fn commerce_tick(pool: &sqlx::PgPool, tick: u64, per: u64) -> anyhow::Result<()> {
    for i in 0..per {
        let n = 1000 + tick * per + i;
        let (code, division) = DIVISIONS[(n % 2) as usize];
        sqlx::query(
            "INSERT INTO enterprise_registration (uscc, reg_no, name, legal_rep_name, legal_rep_id,
                 division_code, division_name, address, ent_type, industry, established, authority)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '有限责任公司', '软件和信息技术服务业',
                     current_date - 30, $9)",
        )
        .bind(uscc(n))
        .bind(format!("{code}{n:09}"))
        .bind(format!("广州示例{n}号科技有限公司"))
        .bind(name(n))
        .bind(citizen(n))
        .bind(code)
        .bind(division)
        .bind(format!("{division}示例路{n}号"))
        .bind(format!("{division}市场监督管理局"))
        .execute(pool)
        .await?;
    }
    if tick % 2 == 1 {
        sqlx::query(
            "UPDATE enterprise_registration SET address = address || '(迁址)', updated_at = now()
             WHERE id = (SELECT min(id) + $1 FROM enterprise_registration)",
        )
        .bind((tick % 7) as i64)
        .execute(pool)
        .await?;
    }
    Ok(())
}

struct Tax {
    token: String,
    rows: Vec<Value>,
}

async fn tax_list(
    State(api): State<Arc<Mutex<Tax>>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let api = api.lock().expect("tax lock");
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {}", api.token))
    {
        return (StatusCode::UNAUTHORIZED, "bad or missing bearer token\n").into_response();
    }
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let end = (start + limit).min(api.rows.len());
    let items = api.rows[start.min(end)..end].to_vec();
    let next = (end < api.rows.len()).then(|| end.to_string());
    Json(json!({"data": {"items": items}, "next_cursor": next})).into_response()
}

fn tax_tick(api: &Mutex<Tax>, tick: u64, per: u64) {
    let mut api = api.lock().expect("tax lock");
    for i in 0..per {
        let n = 1000 + tick * per + i;
        let (_, division) = DIVISIONS[(n % 2) as usize];
        api.rows.push(json!({
            "nsrsbh": format!("4401{n:014}"),
            "tyshxydm": uscc(n),
            "zcdz": format!("{division}示例路{n}号"),
            "djrq": chrono::Utc::now().date_naive().format("%Y/%m/%d").to_string(),
            "djjg": "广州市地方税务局",
            "xgsj": chrono::Utc::now().timestamp_millis(),
        }));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bus_schemas::amqp::process::init_tracing(&bus_schemas::settings::LogConfig::default());
    let stop = bus_schemas::amqp::process::stop_on_signals();
    if let Some(inbox) = &args.police_inbox {
        std::fs::create_dir_all(inbox)?;
    }
    let pool = match &args.commerce_db {
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to --commerce-db: {e}"))?;
            commerce_setup(&pool).await?;
            Some(pool)
        }
        None => None,
    };
    let tax = match (&args.tax_listen, &args.tax_token_file) {
        (Some(addr), Some(token_file)) => {
            let token = match std::fs::read_to_string(token_file) {
                Ok(t) => t.trim().to_string(),
                Err(_) => {
                    let mut b = [0u8; 16];
                    getrandom::fill(&mut b)?;
                    let t = hex::encode(b);
                    if let Some(d) = token_file.parent() {
                        std::fs::create_dir_all(d)?;
                    }
                    std::fs::write(token_file, format!("{t}\n"))?;
                    t
                }
            };
            let api = Arc::new(Mutex::new(Tax {
                token,
                rows: Vec::new(),
            }));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on --tax-listen {addr}: {e}"))?;
            let app = Router::new()
                .route("/api/tax-registrations", get(tax_list))
                .with_state(api.clone());
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(s.cancelled_owned())
                    .await;
            });
            tracing::info!(%addr, "tax registration API at /api/tax-registrations");
            Some(api)
        }
        (None, None) => None,
        _ => anyhow::bail!("--tax-listen and --tax-token-file go together"),
    };
    let mut tick = 0u64;
    loop {
        if let Some(inbox) = &args.police_inbox {
            police_tick(inbox, tick, args.per_tick)?;
        }
        if let Some(pool) = &pool {
            if let Err(e) = commerce_tick(pool, tick, args.per_tick).await {
                tracing::warn!(error = %e, "commerce database write failed; trying next tick");
            }
        }
        if let Some(api) = &tax {
            tax_tick(api, tick, args.per_tick);
        }
        tracing::info!(
            tick,
            "sample departments changed {} records each",
            args.per_tick
        );
        tick += 1;
        if args.ticks.is_some_and(|t| tick >= t) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.every_ms)) => {}
            () = stop.cancelled() => break,
        }
    }
    if tax.is_some() && args.ticks.is_some() {
        // Keep serving the API until stopped, so the tax adapter can read the last page.
        stop.cancelled().await;
    }
    Ok(())
}
