//! Working days for the sharing rules' deadlines (articles 34–37, 44): Monday to Friday, minus
//! public holidays, plus the make-up working days China moves onto weekends around them. Loaded
//! from a reviewed file, one `[[year]]` each. A year the file does not cover counts Monday to
//! Friday only, with a warning in the log (once per year) and on the status page, until the
//! operator adds that year: deadlines keep running across New Year instead of failing.
//!
//! ```toml
//! [[year]]
//! year = 2026
//! holidays = [2026-01-01, 2026-01-02, 2026-01-03]   # days off, weekends included or not
//! workdays = [2026-01-04]                           # weekend days that are working days
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, Mutex},
};

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde::Deserialize;

/// A calendar problem: names the file, the year or the date, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CalendarError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "year")]
    years: Vec<YearFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    #[serde(default)]
    holidays: Vec<toml::value::Datetime>,
    #[serde(default)]
    workdays: Vec<toml::value::Datetime>,
}

#[derive(Debug, Default, Clone)]
struct Year {
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

/// The working-day calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    source: String,
    years: BTreeMap<i32, Year>,
    /// Years asked for that the file does not cover (each logged once).
    fell_back: Arc<Mutex<BTreeSet<i32>>>,
}

fn date(d: &toml::value::Datetime, what: &str) -> Result<NaiveDate, String> {
    match (&d.date, &d.time) {
        (Some(x), None) => {
            NaiveDate::from_ymd_opt(i32::from(x.year), u32::from(x.month), u32::from(x.day))
                .ok_or_else(|| format!("{what} {d} is not a date"))
        }
        _ => Err(format!("{what} {d} must be a plain date (YYYY-MM-DD)")),
    }
}

impl Calendar {
    /// Reads and checks a calendar file; every problem is named at once.
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CalendarError(format!(
                "cannot read the working-day calendar {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a calendar (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<Self, CalendarError> {
        let file: File =
            toml::from_str(text).map_err(|e| CalendarError(format!("calendar {source}: {e}")))?;
        let mut problems = Vec::new();
        let mut years = BTreeMap::new();
        for y in file.years {
            let mut year = Year::default();
            for (list, what, into) in [
                (&y.holidays, "holiday", &mut year.holidays),
                (&y.workdays, "make-up working day", &mut year.workdays),
            ] {
                for d in list {
                    match date(d, what) {
                        Ok(d) if d.year() != y.year => {
                            problems.push(format!("year {}: {what} {d} is in another year", y.year))
                        }
                        Ok(d) => {
                            into.insert(d);
                        }
                        Err(e) => problems.push(format!("year {}: {e}", y.year)),
                    }
                }
            }
            for d in &year.workdays {
                if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
                    problems.push(format!(
                        "year {}: make-up working day {d} is a {}, already a working day",
                        y.year,
                        d.weekday()
                    ));
                }
                if year.holidays.contains(d) {
                    problems.push(format!(
                        "year {}: {d} is both a holiday and a make-up working day",
                        y.year
                    ));
                }
            }
            if years.insert(y.year, year).is_some() {
                problems.push(format!("year {} is listed twice", y.year));
            }
        }
        if problems.is_empty() {
            Ok(Calendar {
                source: source.to_string(),
                years,
                fell_back: Arc::default(),
            })
        } else {
            Err(CalendarError(format!(
                "calendar {source}: {} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            )))
        }
    }

    /// Whether the file lists `year` (its holidays and make-up working days).
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// Where the calendar was read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `d` is a working day. In a year the file does not cover: Monday to Friday,
    /// logged once per year.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        let weekday = !matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        let Some(year) = self.years.get(&d.year()) else {
            if self
                .fell_back
                .lock()
                .expect("calendar lock")
                .insert(d.year())
            {
                tracing::warn!(
                    year = d.year(),
                    calendar = %self.source,
                    "the working-day calendar has no year {}: its deadlines count Monday to Friday \
                     only (no public holidays) until the year is added to the file",
                    d.year()
                );
            }
            return weekday;
        };
        if year.workdays.contains(&d) {
            true
        } else if year.holidays.contains(&d) {
            false
        } else {
            weekday
        }
    }

    /// The deadline `n` working days after `start`: the `n`th working day following it
    /// (`start` itself does not count, as "within 5 working days of receipt" reads).
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> NaiveDate {
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d += Duration::days(1);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// Working days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        let mut n = 0;
        let mut d = from;
        while d < to {
            d += Duration::days(1);
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }

    /// The status page's warning when the calendar does not cover this year or the next 31
    /// days (deadlines that far ahead count weekends only).
    pub fn warning(&self, today: NaiveDate) -> Option<String> {
        let ahead = today + Duration::days(31);
        let missing: Vec<i32> = [today.year(), ahead.year()]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|y| !self.covers(*y))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the working-day calendar {} has no year {}: deadlines in it count Monday to \
                 Friday only; add the year's holidays and make-up working days",
                self.source,
                missing
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn example() -> Calendar {
        Calendar::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workdays.toml"))
            .unwrap()
    }

    /// Holidays are off, make-up weekend days are on, ordinary weekends are off.
    #[test]
    fn holidays_and_make_up_days() {
        let c = example();
        assert!(!c.is_working_day(d("2026-01-01")), "New Year's Day");
        assert!(
            c.is_working_day(d("2026-01-04")),
            "a Sunday worked for New Year"
        );
        assert!(!c.is_working_day(d("2026-01-10")), "an ordinary Saturday");
        assert!(
            c.is_working_day(d("2026-02-14")),
            "a Saturday worked for Spring Festival"
        );
        assert!(
            !c.is_working_day(d("2026-02-16")),
            "a Monday of Spring Festival"
        );
        assert!(c.is_working_day(d("2026-03-02")), "an ordinary Monday");
    }

    /// Deadlines skip holidays and count make-up days.
    #[test]
    fn deadlines_in_working_days() {
        let c = example();
        // Received Friday 2026-02-13: Sat 14 is worked (1), 15–23 off, Tue 24 (2) … Fri 27 (5).
        assert_eq!(c.add_working_days(d("2026-02-13"), 5), d("2026-02-27"));
        // Ten working days from Monday 2026-03-02: Mon 16.
        assert_eq!(c.add_working_days(d("2026-03-02"), 10), d("2026-03-16"));
        // Over National Day: received Tue 2026-09-29, 3 working days: Wed 30, (1–7 off), Thu 8, Fri 9.
        assert_eq!(c.add_working_days(d("2026-09-29"), 3), d("2026-10-09"));
        assert_eq!(c.working_days_between(d("2026-09-29"), d("2026-10-09")), 3);
        assert_eq!(c.add_working_days(d("2026-03-02"), 0), d("2026-03-02"));
    }

    /// A year the file does not cover counts Monday to Friday (deadlines keep running across
    /// New Year, where they once failed), and the status page says which year to add.
    #[test]
    fn a_missing_year_counts_weekdays_and_warns() {
        let c = example();
        assert!(!c.covers(2027));
        // Wed 2026-12-30: Thu 31 (1), then 2027 by weekdays: Fri 1 (2), Mon 4 … Wed 6 (5).
        assert_eq!(c.add_working_days(d("2026-12-30"), 5), d("2027-01-06"));
        assert!(!c.is_working_day(d("2027-01-09")), "a Saturday");
        assert!(
            c.is_working_day(d("2027-02-08")),
            "a Monday, holiday or not"
        );
        assert_eq!(c.warning(d("2026-06-01")), None);
        let w = c.warning(d("2026-12-10")).expect("2027 is 31 days ahead");
        assert!(w.contains("has no year 2027"), "{w}");
        assert!(c.warning(d("2028-03-01")).unwrap().contains("no year 2028"));
    }

    /// Every problem of a bad file is named at once.
    #[test]
    fn bad_files_name_every_problem() {
        let e = Calendar::parse(
            "[[year]]\nyear = 2026\nholidays = [2025-12-31]\nworkdays = [2026-03-02, 2026-01-04]\n\
             [[year]]\nyear = 2026\n",
            "test.toml",
        )
        .unwrap_err();
        assert!(e.0.contains("3 problem(s)"), "{e}");
        assert!(e.0.contains("holiday 2025-12-31 is in another year"), "{e}");
        assert!(
            e.0.contains("2026-03-02 is a Mon, already a working day"),
            "{e}"
        );
        assert!(e.0.contains("year 2026 is listed twice"), "{e}");
    }
}
