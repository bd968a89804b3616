//! Dates and times as records carry them: `YYYY-MM-DD` parsed by hand (every date of every
//! record passes through here), and Avro's day and instant counts limited to years 0–9999.
use chrono::{DateTime, NaiveDate, Utc};

/// Day 0 of an Avro `date`.
pub const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

/// The number a run of ASCII digits spells (`None` if any byte is not a digit); for the
/// fixed-width date and time fields parsed by hand.
pub fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Parses exactly `YYYY-MM-DD` (a real calendar date), without chrono's format machinery:
/// every date of every record passes through here.
pub fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )
}

/// The date an Avro `date` (days since 1970-01-01) stands for, if it is in years 0–9999 (what
/// `YYYY-MM-DD` can say; a hostile datum can hold any 32-bit day count).
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    use chrono::Datelike;
    EPOCH
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .filter(|d| (0..=9999).contains(&d.year()))
}

/// The moment of an Avro `timestamp-millis` / `timestamp-micros` (`micros`), if it is in years
/// 0–9999 (what RFC 3339 can say).
pub fn timestamp_from(count: i64, micros: bool) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    if micros {
        DateTime::<Utc>::from_timestamp_micros(count)
    } else {
        DateTime::<Utc>::from_timestamp_millis(count)
    }
    .filter(|t| (0..=9999).contains(&t.year()))
}

/// `YYYY-MM-DD` of a date (years 0–9999), as `parse_iso_date` reads it.
pub fn format_iso_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}
