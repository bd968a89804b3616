//! Dates and points in time as department exports write them (Asia/Shanghai where no offset
//! is given): for mapped fields and for sources' version columns alike.
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::Value as Json;

fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// Parses the date formats real exports use: `2016-05-17`, `20160517`, `2016/5/17`,
/// `2016.5.17`, `2016年5月17日`, optionally followed by a time.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let date_part = s.split([' ', 'T']).next().unwrap_or(s);
    if let Some(d) = bus_schemas::dates::parse_iso_date(date_part) {
        return Some(d);
    }
    for fmt in ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日"] {
        if let Ok(d) = NaiveDate::parse_from_str(date_part, fmt) {
            return Some(d);
        }
    }
    None
}

/// `YYYY-MM-DD HH:MM:SS` exactly (the commonest export form, and the version column of
/// most tables), without chrono's format machinery; anything else is left to the general
/// parsers.
fn fast_local_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() != 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| bus_schemas::dates::digits(&b[r]);
    bus_schemas::dates::parse_iso_date(&s[..10])?.and_hms_opt(
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    )
}

/// Parses a point in time: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (Asia/Shanghai), a date
/// (midnight Asia/Shanghai) or an integer of milliseconds since the epoch.
pub fn parse_time_ms(j: &Json) -> Option<i64> {
    if let Some(n) = j.as_i64() {
        return Some(n);
    }
    let s = j.as_str()?.trim();
    if let Ok(n) = s.parse::<i64>() {
        if s.len() != 8 {
            return Some(n);
        }
    }
    if let Some(t) = fast_local_datetime(s) {
        return shanghai()
            .from_local_datetime(&t)
            .single()
            .map(|t| t.timestamp_millis());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return shanghai()
                .from_local_datetime(&t)
                .single()
                .map(|t| t.timestamp_millis());
        }
    }
    let d = parse_date(s)?;
    shanghai()
        .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
        .single()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The date formats of real exports all parse; nonsense does not.
    #[test]
    fn dates() {
        let d = NaiveDate::from_ymd_opt(2016, 5, 17);
        for s in [
            "2016-05-17",
            "20160517",
            "2016/5/17",
            "2016年5月17日",
            "2016.05.17",
            "2016-05-17 10:00:00",
        ] {
            assert_eq!(parse_date(s), d, "{s}");
        }
        assert_eq!(parse_date("17/05/2016"), None);
        assert_eq!(
            parse_time_ms(&Json::from("2016-05-17 08:00:00")),
            Some(1_463_443_200_000)
        );
        assert_eq!(parse_time_ms(&Json::from(42)), Some(42));
        assert_eq!(
            parse_time_ms(&Json::from("20160517")),
            parse_time_ms(&Json::from("2016-05-17"))
        );
    }
}
