//! Working days for the sharing rules' deadlines (articles 34–37, 44): Monday to Friday, minus
//! public holidays, plus the make-up working days China moves onto weekends around them. Loaded
//! from a reviewed file, one `[[year]]` each; a date in a year the file does not cover is an
//! error, never a guess.
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
            })
        } else {
            Err(CalendarError(format!(
                "calendar {source}: {} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            )))
        }
    }

    /// Whether `d` is a working day.
    pub fn is_working_day(&self, d: NaiveDate) -> Result<bool, CalendarError> {
        let year = self.years.get(&d.year()).ok_or_else(|| {
            CalendarError(format!(
                "the working-day calendar {} has no year {} (needed for {d}): add a [[year]] with \
                 that year's public holidays and make-up working days",
                self.source,
                d.year()
            ))
        })?;
        Ok(if year.workdays.contains(&d) {
            true
        } else if year.holidays.contains(&d) {
            false
        } else {
            !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
        })
    }

    /// The deadline `n` working days after `start`: the `n`th working day following it
    /// (`start` itself does not count, as "within 5 working days of receipt" reads).
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d += Duration::days(1);
            if self.is_working_day(d)? {
                left -= 1;
            }
        }
        Ok(d)
    }

    /// Working days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn working_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, CalendarError> {
        let mut n = 0;
        let mut d = from;
        while d < to {
            d += Duration::days(1);
            if self.is_working_day(d)? {
                n += 1;
            }
        }
        Ok(n)
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
        assert!(
            !c.is_working_day(d("2026-01-01")).unwrap(),
            "New Year's Day"
        );
        assert!(
            c.is_working_day(d("2026-01-04")).unwrap(),
            "a Sunday worked for New Year"
        );
        assert!(
            !c.is_working_day(d("2026-01-10")).unwrap(),
            "an ordinary Saturday"
        );
        assert!(
            c.is_working_day(d("2026-02-14")).unwrap(),
            "a Saturday worked for Spring Festival"
        );
        assert!(
            !c.is_working_day(d("2026-02-16")).unwrap(),
            "a Monday of Spring Festival"
        );
        assert!(
            c.is_working_day(d("2026-03-02")).unwrap(),
            "an ordinary Monday"
        );
    }

    /// Deadlines skip holidays and count make-up days.
    #[test]
    fn deadlines_in_working_days() {
        let c = example();
        // Received Friday 2026-02-13: Sat 14 is worked (1), 15–23 off, Tue 24 (2) … Fri 27 (5).
        assert_eq!(
            c.add_working_days(d("2026-02-13"), 5).unwrap(),
            d("2026-02-27")
        );
        // Ten working days from Monday 2026-03-02: Mon 16.
        assert_eq!(
            c.add_working_days(d("2026-03-02"), 10).unwrap(),
            d("2026-03-16")
        );
        // Over National Day: received Tue 2026-09-29, 3 working days: Wed 30, (1–7 off), Thu 8, Fri 9.
        assert_eq!(
            c.add_working_days(d("2026-09-29"), 3).unwrap(),
            d("2026-10-09")
        );
        assert_eq!(
            c.working_days_between(d("2026-09-29"), d("2026-10-09"))
                .unwrap(),
            3
        );
        assert_eq!(
            c.add_working_days(d("2026-03-02"), 0).unwrap(),
            d("2026-03-02")
        );
    }

    /// A year the file does not cover is an error naming the year and what to add.
    #[test]
    fn a_missing_year_is_an_error_not_a_guess() {
        let c = example();
        let e = c.add_working_days(d("2026-12-30"), 5).unwrap_err();
        assert!(e.0.contains("has no year 2027"), "{e}");
        assert!(e.0.contains("add a [[year]]"), "{e}");
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
