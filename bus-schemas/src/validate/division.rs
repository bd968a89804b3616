//! Administrative division code, GB/T 2260: six digits, province (2), city (2), county (2).
//! Only the shape is checked (a known province, no county without a city): the list of
//! codes changes every year and lives with the catalogue, not the standard.
use super::element::Fault;

/// Province-level codes of GB/T 2260 (including Taiwan 71, Hong Kong 81, Macao 82).
pub const PROVINCES: &[&str] = &[
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];

/// Checks the shape of a six-digit division code.
pub fn check(s: &str) -> Result<(), Fault> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::new(
            "gbt2260-format",
            "a division code is six digits",
        ));
    }
    if !PROVINCES.contains(&&s[..2]) {
        return Err(Fault::new(
            "gbt2260-province",
            "the first two digits are not a GB/T 2260 province code",
        ));
    }
    if &s[2..4] == "00" && &s[4..6] != "00" {
        return Err(Fault::new(
            "gbt2260-format",
            "a county-level code needs its city digits (positions 3-4 are 00)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guangzhou's codes pass; unknown provinces and malformed codes fail.
    #[test]
    fn shapes() {
        assert!(check("440106").is_ok());
        assert!(check("440000").is_ok());
        assert!(check("110101").is_ok());
        assert_eq!(check("990106").unwrap_err().rule, "gbt2260-province");
        assert_eq!(check("440006").unwrap_err().rule, "gbt2260-format");
        assert_eq!(check("44010").unwrap_err().rule, "gbt2260-format");
        assert_eq!(check("44010A").unwrap_err().rule, "gbt2260-format");
    }
}
