//! The Excel source against the real RabbitMQ: a 10,000-row workbook with Chinese headers
//! under a title row, dates as date cells, as text and as bare serials, 100 rows that cannot
//! be published (merged cells, formula errors, bad ID numbers, bad codes), and a SIGKILL in
//! the middle of the file.
mod common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use bus_schemas::wire::{self, header};
use common::*;
use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};

const HEADER: [&str; 12] = [
    "姓名",
    "公民身份号码",
    "性别",
    "民族",
    "户籍地镇街道",
    "户籍地派出所",
    "户籍状态",
    "注销前行政区划",
    "注销日期",
    "注销原因",
    "变更时间",
    "操作",
];

/// What the workbook holds.
struct Book {
    /// ID numbers of the rows that must be published.
    valid: Vec<String>,
    /// The cell each invalid row must be quarantined under (`户籍!B17`, `户籍!D17:E17`).
    invalid_cells: HashSet<String>,
    /// ID number → the cancellation date its record must carry.
    cancelled: HashMap<String, String>,
}

/// Writes `n` household rows into sheet 户籍 of `path`: a merged title in row 1, the header in
/// row 2, data from row 3. Every 100th row is invalid in one of four ways; every 7th valid row
/// is a cancellation dated by a bare serial (42507 = 2016-05-17) or by text (every 14th).
fn write_workbook(path: &std::path::Path, n: u32) -> Book {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("户籍").unwrap();
    ws.merge_range(
        0,
        0,
        0,
        11,
        "常住人口户籍信息导出（2016年5月）",
        &Format::new(),
    )
    .unwrap();
    for (c, h) in HEADER.iter().enumerate() {
        ws.write_string(1, c as u16, *h).unwrap();
    }
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let mut book = Book {
        valid: Vec::new(),
        invalid_cells: HashSet::new(),
        cancelled: HashMap::new(),
    };
    for i in 0..n {
        let r = i + 2; // 0-based sheet row; Excel shows r + 1
        let shown = r + 1;
        let mut id = citizen_id(i as u64);
        let mut sex = if i % 2 == 0 { "男" } else { "女" };
        let invalid = i % 100 == 99;
        let kind = (i / 100) % 4;
        if invalid && kind == 0 {
            let last = id.pop().unwrap();
            id.push(if last == '0' { '1' } else { '0' });
            book.invalid_cells.insert(format!("户籍!B{shown}"));
        } else if invalid && kind == 1 {
            sex = "M";
            book.invalid_cells.insert(format!("户籍!C{shown}"));
        }
        ws.write_string(r, 0, format!("姓名{i}")).unwrap();
        ws.write_string(r, 1, &id).unwrap();
        ws.write_string(r, 2, sex).unwrap();
        if invalid && kind == 2 {
            ws.merge_range(r, 3, r, 4, "汉族", &Format::new()).unwrap();
            book.invalid_cells.insert(format!("户籍!D{shown}:E{shown}"));
        } else {
            ws.write_string(r, 3, "汉族").unwrap();
            ws.write_string(r, 4, "石牌街道").unwrap();
        }
        ws.write_string(r, 5, "石牌派出所").unwrap();
        let cancelled = !invalid && i % 7 == 0;
        ws.write_string(r, 6, if cancelled { "注销" } else { "正常" })
            .unwrap();
        if invalid && kind == 3 {
            ws.write_formula(r, 8, Formula::new("=1/0").set_result("#DIV/0!"))
                .unwrap();
            book.invalid_cells.insert(format!("户籍!I{shown}"));
        } else if cancelled && i % 14 == 0 {
            ws.write_string(r, 8, "2016年5月17日").unwrap();
            ws.write_string(r, 9, "迁出").unwrap();
        } else if cancelled {
            ws.write_number(r, 8, 42_507).unwrap();
            ws.write_string(r, 9, "迁出").unwrap();
        }
        if i % 2 == 0 {
            let t = ExcelDateTime::from_ymd(2016, 5, 17)
                .unwrap()
                .and_hms(9, 30, 0)
                .unwrap();
            ws.write_datetime_with_format(r, 10, t, &datetime).unwrap();
        } else {
            ws.write_string(r, 10, "2016-05-17 09:30:00").unwrap();
        }
        ws.write_string(r, 11, "U").unwrap();
        if cancelled {
            book.cancelled.insert(id.clone(), "2016-05-17".into());
        }
        if !invalid {
            book.valid.push(id);
        }
    }
    let tmp = path.with_extension("part");
    wb.save(&tmp).unwrap();
    std::fs::rename(tmp, path).unwrap();
    book
}

/// The adapter binary SIGKILLed in the middle of the workbook and run again: 9,900 distinct
/// records (each duplicate under its first message id), 100 distinct quarantined rows, each
/// naming exactly the cell at fault, the dates read from serials, text and date cells alike,
/// and the workbook in `done/` at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_with_merged_cells_formula_errors_and_a_sigkill() {
    let env = Env::new("police").await;
    let config = env.config_file("police-household-excel", &["version_column"]);
    let book = write_workbook(&env.path("inbox/household.xlsx"), 10_000);
    assert_eq!((book.valid.len(), book.invalid_cells.len()), (9_900, 100));

    kill_mid_stream_then_finish(&env, &config, 3_000, book.valid.len()).await;
    let got =
        assert_each_record_arrived(&env, "police", "household", "/citizen_id_number", 9_900).await;
    let ids: HashSet<_> = got.iter().map(|g| g.message_id.clone()).collect();
    assert_eq!(ids.len(), 9_900, "9,900 distinct message ids");
    assert!(env.path("inbox/done/household.xlsx").exists());

    let reg = bus_schemas::Registry::standard();
    let mut dated = 0;
    for g in &got {
        let (_, rec) = reg.decode_to_json(&g.body).unwrap();
        let id = rec["citizen_id_number"].as_str().unwrap();
        assert_eq!(
            rec["cancellation_date"].as_str(),
            book.cancelled.get(id).map(String::as_str),
            "{id}: the cancellation date from a serial or text, or none"
        );
        dated += usize::from(book.cancelled.contains_key(id));
        assert_eq!(rec["ethnicity"], "01");
    }
    assert!(dated >= 1_400, "{dated} cancellations checked");

    let quarantined = drain(
        &env.vhost,
        &wire::quarantine_queue("police"),
        Duration::from_secs(2),
    )
    .await;
    let mut cells = HashMap::new();
    for q in &quarantined {
        let position = q.header_str(header::SOURCE_POSITION);
        let cell = position
            .strip_prefix("household.xlsx:")
            .unwrap_or_else(|| panic!("{position}: not named by its file"))
            .to_string();
        // A row quarantined twice (read again after the kill) keeps its message id.
        if let Some(id) = cells.insert(cell, q.message_id.clone()) {
            assert_eq!(id, q.message_id, "{position}: a second id");
        }
        let reason = q.header_str(header::REASON);
        assert!(!reason.is_empty(), "{position}: no reason");
        if position.contains(':') && position.matches(':').count() == 2 {
            assert!(reason.contains("merged cell"), "{position}: {reason}");
        }
    }
    assert_eq!(
        cells.keys().cloned().collect::<HashSet<_>>(),
        book.invalid_cells,
        "each invalid row quarantined once, named by the cell at fault"
    );
    let reasons: Vec<String> = quarantined
        .iter()
        .map(|q| q.header_str(header::REASON))
        .collect();
    assert!(reasons.iter().any(|r| r.contains("formula error #DIV/0!")));
    assert!(reasons.iter().any(|r| r.contains("gb11643")));
}
