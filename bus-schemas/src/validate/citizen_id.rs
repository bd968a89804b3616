//! Citizen ID number, GB 11643-1999: 6-digit division code, 8-digit birth date, 3-digit
//! sequence, and an ISO 7064 MOD 11-2 check character. The legacy 15-digit form (2-digit
//! birth year, no check character) is accepted and reported as legacy.
use chrono::NaiveDate;

use super::{division, element::Fault};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";

/// What kind of valid citizen ID number a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitizenId {
    /// The 18-character form with a correct check character.
    Current,
    /// The legacy 15-digit form (issued before 1999): valid, but reported.
    Legacy15,
}

/// The GB 11643 check character for the first 17 digits.
pub fn check_character(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(CHECK[(sum % 11) as usize] as char)
}

/// Checks a citizen ID number: shape, division prefix, a real birth date not after
/// `today`, and the check character.
pub fn check(s: &str, today: NaiveDate) -> Result<CitizenId, Fault> {
    let b = s.as_bytes();
    match b.len() {
        18 => {
            if !b[..17].iter().all(u8::is_ascii_digit) {
                return Err(Fault::new(
                    "gb11643-format",
                    "the first 17 characters must be digits",
                ));
            }
            if !(b[17].is_ascii_digit() || b[17] == b'X') {
                return Err(Fault::new(
                    "gb11643-format",
                    "the 18th character must be a digit or an uppercase X",
                ));
            }
            division::check(&s[..6]).map_err(|f| Fault::new("gb11643-division", f.message))?;
            birth_date(&s[6..14], today)?;
            if check_character(&s[..17]) != Some(b[17] as char) {
                return Err(Fault::new(
                    "gb11643-check-digit",
                    "the check character does not match the first 17 digits (GB 11643); the number was mistyped or altered",
                ));
            }
            Ok(CitizenId::Current)
        }
        15 => {
            if !b.iter().all(u8::is_ascii_digit) {
                return Err(Fault::new(
                    "gb11643-format",
                    "a 15-character legacy number is all digits",
                ));
            }
            division::check(&s[..6]).map_err(|f| Fault::new("gb11643-division", f.message))?;
            birth_date(&format!("19{}", &s[6..12]), today)?;
            Ok(CitizenId::Legacy15)
        }
        n => Err(Fault::new(
            "gb11643-length",
            format!("a citizen ID number has 18 characters (or 15 for the legacy form), not {n}"),
        )),
    }
}

fn birth_date(yyyymmdd: &str, today: NaiveDate) -> Result<(), Fault> {
    let d = NaiveDate::parse_from_str(yyyymmdd, "%Y%m%d").map_err(|_| {
        Fault::new(
            "gb11643-birth-date",
            "the birth date inside the number is not a real date",
        )
    })?;
    if d > today || d < NaiveDate::from_ymd_opt(1880, 1, 1).unwrap() {
        return Err(Fault::new(
            "gb11643-birth-date",
            "the birth date inside the number is in the future or before 1880",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    /// The published GB 11643 example number passes, and each single-digit change fails.
    #[test]
    fn standard_example_and_mutations() {
        assert_eq!(check("11010519491231002X", today()), Ok(CitizenId::Current));
        assert_eq!(
            check("440106198001010019", today()).map_err(|f| f.rule),
            Ok(CitizenId::Current)
        );
        let f = check("11010519491231002Y", today()).unwrap_err();
        assert_eq!(f.rule, "gb11643-format");
        let f = check("110105194912310021", today()).unwrap_err();
        assert_eq!(f.rule, "gb11643-check-digit");
        let f = check("11010519491231002x", today()).unwrap_err();
        assert_eq!(f.rule, "gb11643-format");
    }

    /// Birth dates that do not exist or lie in the future are refused.
    #[test]
    fn birth_date_must_be_real_and_past() {
        let mut n = String::from("44010619990230001");
        n.push(check_character(&n).unwrap());
        assert_eq!(check(&n, today()).unwrap_err().rule, "gb11643-birth-date");
        let mut n = String::from("44010620300101001");
        n.push(check_character(&n).unwrap());
        assert_eq!(check(&n, today()).unwrap_err().rule, "gb11643-birth-date");
    }

    /// The legacy 15-digit number is accepted as legacy; other lengths are refused.
    #[test]
    fn legacy_and_lengths() {
        assert_eq!(check("440106800101001", today()), Ok(CitizenId::Legacy15));
        assert_eq!(
            check("4401068001010", today()).unwrap_err().rule,
            "gb11643-length"
        );
        assert_eq!(
            check("999106198001010016", today()).unwrap_err().rule,
            "gb11643-division"
        );
    }
}
