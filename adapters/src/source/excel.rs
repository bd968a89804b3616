//! Excel workbooks (`.xlsx`, `.xls`, also `.xlsb` and `.ods`) dropped into a folder, read with
//! calamine: one sheet, chosen by name or number, with its header row where the export puts
//! it. Chinese headers are column names like CSV headers. Dates come as date cells, as text
//! (`2016年5月17日`) or, in the columns named in `date_columns`, as Excel serial numbers.
//!
//! A row that cannot be read as one value per column is quarantined naming its cell: a merged
//! cell (`户籍.xlsx:Sheet1!C17:D17`) or a formula error (`户籍.xlsx:Sheet1!F17`). A row that
//! fails validation names the cell of the field at fault. Files move to `done/` and resume
//! after a crash exactly as CSV files do (see `folder.rs`).
use std::{collections::HashMap, path::Path, path::PathBuf, sync::Arc};

use calamine::{Data, Dimensions, Range, Reader, Sheets};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{
    folder::{FileFormat, FileRow, FileRows, Folder, FolderSource},
    record::{Cells, Row, SourceError},
};

/// `[source]` with `kind = "excel"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcelConfig {
    /// The folder workbooks are dropped into.
    pub path: PathBuf,
    /// Where finished workbooks go (default: `done/` inside `path`).
    #[serde(default)]
    pub done_dir: Option<PathBuf>,
    /// The sheet to read, by name (`户籍信息`). Default: the first sheet.
    #[serde(default)]
    pub sheet: Option<String>,
    /// The sheet to read, by number, the first being 1 (instead of `sheet`).
    #[serde(default)]
    pub sheet_index: Option<usize>,
    /// The row holding the column names, as Excel numbers rows (default 1). Rows above it
    /// (titles, notes) are ignored.
    #[serde(default = "default_header_row")]
    pub header_row: u32,
    /// Columns whose numbers are Excel date serials (`42507` = 2016-05-17), for exports whose
    /// date cells lost their date format. Cells formatted as dates are read as dates anyway.
    #[serde(default)]
    pub date_columns: Vec<String>,
    /// File name endings to pick up; other files are left alone.
    #[serde(default = "default_suffixes")]
    pub suffixes: Vec<String>,
    /// How often to look for new files when idle, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_header_row() -> u32 {
    1
}
fn default_suffixes() -> Vec<String> {
    [".xlsx", ".xls", ".xlsm", ".xlsb", ".ods"]
        .map(String::from)
        .to_vec()
}
fn default_poll_ms() -> u64 {
    1000
}

/// The Excel folder source.
pub type ExcelSource = FolderSource<ExcelFormat>;

/// How workbooks are read: which sheet, where the header is, which columns hold serials.
#[derive(Debug, Clone)]
pub struct ExcelFormat {
    sheet: Option<String>,
    sheet_index: Option<usize>,
    header_row: u32,
    date_columns: Arc<[String]>,
}

/// Opens the source, reading its saved position from `state_dir`.
pub fn source(cfg: ExcelConfig, state_dir: &Path) -> anyhow::Result<ExcelSource> {
    if cfg.sheet.is_some() && cfg.sheet_index.is_some() {
        anyhow::bail!("source.sheet and source.sheet_index are both set; keep one");
    }
    if cfg.sheet_index == Some(0) {
        anyhow::bail!("source.sheet_index counts from 1 (the first sheet)");
    }
    if cfg.header_row == 0 {
        anyhow::bail!("source.header_row counts from 1, as Excel numbers rows");
    }
    let folder = Folder::new(cfg.path, cfg.done_dir, cfg.suffixes, cfg.poll_interval_ms);
    let format = ExcelFormat {
        sheet: cfg.sheet,
        sheet_index: cfg.sheet_index,
        header_row: cfg.header_row,
        date_columns: cfg.date_columns.into(),
    };
    FolderSource::new(folder, format, state_dir)
}

/// Column letters of a 0-based column index: 0 → `A`, 25 → `Z`, 26 → `AA`.
pub fn column_letters(mut c: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (c % 26) as u8);
        if c < 26 {
            break;
        }
        c = c / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// `C17` of a 0-based (row, column).
fn cell_name((row, col): (u32, u32)) -> String {
    format!("{}{}", column_letters(col), row + 1)
}

/// A sheet being read: the cells in memory (calamine reads a sheet whole), the data rows'
/// numbers, the merged areas by row.
pub struct SheetRows {
    range: Range<Data>,
    /// `<file>:<sheet>!`
    prefix: Arc<str>,
    /// `<sheet>!`
    sheet: String,
    /// (column index, name) of each named column, in sheet order.
    columns: Vec<(u32, String)>,
    names: Arc<[String]>,
    letters: Arc<HashMap<String, String>>,
    /// Which of `names` hold Excel serial dates.
    serial: Vec<bool>,
    /// 0-based numbers of the data rows (empty rows left out).
    rows: Vec<u32>,
    merges: Vec<Dimensions>,
    index: usize,
}

impl FileFormat for ExcelFormat {
    type Rows = SheetRows;
    const WHAT: &'static str = "Excel";
    const STATE_FILE: &'static str = "excel-position.json";

    fn open(&self, path: &Path, name: &str) -> Result<SheetRows, SourceError> {
        let mut book = calamine::open_workbook_auto(path).map_err(|e| {
            SourceError::Fatal(format!(
                "{name} is not a readable workbook ({e}); export it again as .xlsx, or move it out of the folder"
            ))
        })?;
        let sheets = book.sheet_names();
        let sheet = match (&self.sheet, self.sheet_index) {
            (Some(s), _) => sheets.iter().find(|n| *n == s).cloned(),
            (None, Some(i)) => sheets.get(i - 1).cloned(),
            (None, None) => sheets.first().cloned(),
        }
        .ok_or_else(|| {
            SourceError::Fatal(format!(
                "{name} has no sheet {}; its sheets are {}: fix source.sheet or source.sheet_index",
                self.sheet
                    .clone()
                    .unwrap_or_else(|| format!("number {}", self.sheet_index.unwrap_or(1))),
                sheets.join(", ")
            ))
        })?;
        let range = book
            .worksheet_range(&sheet)
            .map_err(|e| SourceError::Fatal(format!("{name}: cannot read sheet {sheet}: {e}")))?;
        let merges = match &mut book {
            Sheets::Xlsx(x) => x
                .merge_cells_by_sheet_name(&sheet)
                .map_err(|e| e.to_string()),
            Sheets::Xls(x) => x
                .merge_cells_by_sheet_name(&sheet)
                .map_err(|e| e.to_string()),
            _ => Ok(Vec::new()),
        }
        .map_err(|e| {
            SourceError::Fatal(format!(
                "{name}: cannot read the merged cells of {sheet}: {e}"
            ))
        })?;
        self.sheet_rows(range, merges, name, &sheet)
    }
}

impl ExcelFormat {
    fn sheet_rows(
        &self,
        range: Range<Data>,
        merges: Vec<Dimensions>,
        file: &str,
        sheet: &str,
    ) -> Result<SheetRows, SourceError> {
        let prefix = format!("{file}:{sheet}!");
        let header = self.header_row - 1;
        let (Some(start), Some(end)) = (range.start(), range.end()) else {
            return Err(SourceError::Fatal(format!(
                "{prefix} the sheet is empty: check source.sheet"
            )));
        };
        if header < start.0 || header > end.0 {
            return Err(SourceError::Fatal(format!(
                "{prefix} row {} (source.header_row) is outside the sheet's rows {}–{}",
                self.header_row,
                start.0 + 1,
                end.0 + 1
            )));
        }
        let mut columns = Vec::new();
        for c in start.1..=end.1 {
            let name = match range.get_value((header, c)) {
                Some(Data::String(s)) => s.trim().to_string(),
                Some(Data::Empty) | None => continue,
                Some(other) => other.to_string().trim().to_string(),
            };
            if !name.is_empty() {
                columns.push((c, name));
            }
        }
        if columns.is_empty() {
            return Err(SourceError::Fatal(format!(
                "{prefix} row {} (source.header_row) holds no column names",
                self.header_row
            )));
        }
        for d in self.date_columns.iter() {
            if !columns.iter().any(|(_, n)| n == d) {
                return Err(SourceError::Fatal(format!(
                    "{prefix} source.date_columns names `{d}`, which the header row does not have"
                )));
            }
        }
        let merges: Vec<Dimensions> = merges.into_iter().filter(|m| m.end.0 > header).collect();
        let rows = (header + 1..=end.0)
            .filter(|&r| {
                columns
                    .iter()
                    .any(|&(c, _)| !matches!(range.get_value((r, c)), None | Some(Data::Empty)))
                    || merges.iter().any(|m| m.start.0 <= r && r <= m.end.0)
            })
            .collect();
        let names: Arc<[String]> = columns.iter().map(|(_, n)| n.clone()).collect();
        let letters = columns
            .iter()
            .map(|(c, n)| (n.clone(), column_letters(*c)))
            .collect();
        let serial = names
            .iter()
            .map(|n| self.date_columns.contains(n))
            .collect();
        Ok(SheetRows {
            range,
            prefix: prefix.into(),
            sheet: format!("{sheet}!"),
            columns,
            names,
            letters: Arc::new(letters),
            serial,
            rows,
            merges,
            index: 0,
        })
    }
}

/// A date-time as department exports write it: `2016-05-17` at midnight, else with the time.
fn date_text(d: chrono::NaiveDateTime) -> String {
    if d.time() == chrono::NaiveTime::MIN {
        d.format("%Y-%m-%d").to_string()
    } else {
        d.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// An Excel serial (days since 1899-12-30) as a date-time.
fn serial_date(v: f64) -> Option<chrono::NaiveDateTime> {
    if !(1.0..2_958_466.0).contains(&v) {
        return None;
    }
    calamine::ExcelDateTime::new(v, calamine::ExcelDateTimeType::DateTime, false).as_datetime()
}

/// A number as text without a spurious `.0`: `110105` stays `110105`.
fn number_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

impl SheetRows {
    /// The value of one cell, as text (CSV rows are text too), or why it cannot be read.
    fn value(&self, at: (u32, u32), serial: bool) -> Result<Json, String> {
        let cell = self.range.get_value(at).unwrap_or(&Data::Empty);
        let number = |v: f64| {
            if serial {
                serial_date(v).map(date_text).ok_or_else(|| {
                    format!(
                        "{}{} holds {} in a date column (source.date_columns), which is no Excel date",
                        self.prefix,
                        cell_name(at),
                        number_text(v)
                    )
                })
            } else {
                Ok(number_text(v))
            }
        };
        let text = match cell {
            Data::Empty => String::new(),
            Data::String(s) => s.clone(),
            Data::Int(i) => number(*i as f64)?,
            Data::Float(f) => number(*f)?,
            Data::Bool(b) => b.to_string(),
            Data::DateTime(d) if d.is_datetime() => match d.as_datetime() {
                Some(t) if d.as_f64() < 1.0 => t.format("%H:%M:%S").to_string(),
                Some(t) => date_text(t),
                None => return Err(format!("{}{} holds a date Excel cannot place", self.prefix, cell_name(at))),
            },
            Data::DateTime(d) => number_text(d.as_f64()),
            Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
            Data::Error(e) => {
                return Err(format!(
                    "{}{} holds the formula error {e}: fix the formula in the workbook (or paste values) and export again",
                    self.prefix,
                    cell_name(at)
                ))
            }
        };
        Ok(Json::String(text))
    }
}

impl FileRows for SheetRows {
    fn total(&self) -> usize {
        self.rows.len()
    }

    fn index(&self) -> usize {
        self.index
    }

    fn read(&mut self) -> Option<FileRow> {
        let r = *self.rows.get(self.index)?;
        self.index += 1;
        let cells = Cells {
            prefix: self.prefix.clone(),
            row: r + 1,
            letters: self.letters.clone(),
        };
        if let Some(m) = self.merges.iter().find(|m| m.start.0 <= r && r <= m.end.0) {
            let area = format!("{}:{}", cell_name(m.start), cell_name(m.end));
            return Some(FileRow {
                at: format!("{}{area}", self.sheet),
                row: Err(format!(
                    "{}{area} is a merged cell: a row needs one value in each column; unmerge it and fill every cell, then export again",
                    self.prefix
                )),
                cells: Some(cells),
            });
        }
        let mut values = Vec::with_capacity(self.columns.len());
        for (i, &(c, _)) in self.columns.iter().enumerate() {
            match self.value((r, c), self.serial[i]) {
                Ok(v) => values.push(v),
                Err(why) => {
                    return Some(FileRow {
                        at: format!("{}{}", self.sheet, cell_name((r, c))),
                        row: Err(why),
                        cells: Some(cells),
                    })
                }
            }
        }
        Some(FileRow {
            at: format!("{}{}:{}", self.sheet, r + 1, r + 1),
            row: Ok(Row::new(self.names.clone(), values)),
            cells: Some(cells),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An old-format `.xls` (tests/fixtures/household.xls, written by Python's xlwt): a merged
    /// title above the header in row 2, a date cell, a bare serial in a `date_columns` column,
    /// and a merged cell in a data row, quarantined naming its cells.
    #[test]
    fn an_xls_workbook_reads_like_an_xlsx() {
        let format = ExcelFormat {
            sheet: Some("户籍".into()),
            sheet_index: None,
            header_row: 2,
            date_columns: vec!["注销日期".to_string()].into(),
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/household.xls");
        let mut rows = format.open(&path, "household.xls").unwrap();
        assert_eq!(rows.total(), 4);
        let got: Vec<FileRow> = std::iter::from_fn(|| rows.read()).collect();
        let ok = |i: usize| got[i].row.as_ref().unwrap();
        assert_eq!(got[0].at, "户籍!3:3");
        assert_eq!(ok(0)["姓名"], "王芳");
        assert_eq!(ok(0)["公民身份号码"], "440106196001010012");
        assert_eq!(ok(0)["注销日期"], "");
        assert_eq!(ok(1)["注销日期"], "2016-05-17", "a date cell");
        assert_eq!(ok(2)["注销日期"], "2016-05-17", "a serial in a date column");
        assert_eq!(got[3].at, "户籍!D6:E6");
        let why = got[3].row.as_ref().unwrap_err();
        assert!(
            why.contains("household.xls:户籍!D6:E6 is a merged cell"),
            "{why}"
        );
        assert_eq!(
            got[0].cells.as_ref().unwrap().of("公民身份号码").as_deref(),
            Some("household.xls:户籍!B3")
        );
    }

    /// Column letters past Z, serials to dates (1900 system, Excel's leap-year bug included),
    /// numbers without a spurious fraction.
    #[test]
    fn letters_serials_and_numbers() {
        let l: Vec<String> = [0, 25, 26, 51, 52, 701, 702].map(column_letters).to_vec();
        assert_eq!(l, ["A", "Z", "AA", "AZ", "BA", "ZZ", "AAA"]);
        assert_eq!(
            serial_date(42_507.0).map(date_text).as_deref(),
            Some("2016-05-17")
        );
        assert_eq!(
            serial_date(42_507.5).map(date_text).as_deref(),
            Some("2016-05-17 12:00:00")
        );
        assert_eq!(
            serial_date(61.0).map(date_text).as_deref(),
            Some("1900-03-01")
        );
        assert_eq!(serial_date(0.0), None);
        assert_eq!(serial_date(1e9), None);
        assert_eq!(number_text(110_105.0), "110105");
        assert_eq!(number_text(1.5), "1.5");
    }
}
