//! Unified social credit code, GB 32100-2015: 18 characters from a 31-character alphabet
//! (no I, O, S, V, Z); positions 3-8 a division code; a check character at the end.
use super::{division, element::Fault};

const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// The GB 32100 check character for the first 17 characters.
pub fn check_character(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (b, w) in first17.bytes().zip(WEIGHTS) {
        sum += ALPHABET.iter().position(|&a| a == b)? as u32 * w;
    }
    Some(ALPHABET[((31 - sum % 31) % 31) as usize] as char)
}

/// Checks a unified social credit code.
pub fn check(s: &str) -> Result<(), Fault> {
    if s.len() != 18 {
        return Err(Fault::new(
            "gb32100-length",
            format!(
                "a unified social credit code has 18 characters, not {}",
                s.chars().count()
            ),
        ));
    }
    if !s.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(Fault::new(
            "gb32100-format",
            "only digits and the uppercase letters A-Y except I, O, S, V are allowed",
        ));
    }
    division::check(&s[2..8]).map_err(|f| Fault::new("gb32100-division", f.message))?;
    if check_character(&s[..17]) != s.chars().nth(17) {
        return Err(Fault::new(
            "gb32100-check-character",
            "the check character does not match the first 17 characters (GB 32100); the code was mistyped or altered",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of GB 32100 passes; a changed character or letter outside the alphabet fails.
    #[test]
    fn standard_example_and_mutations() {
        assert!(check("91350100M000100Y43").is_ok());
        assert_eq!(
            check("91350100M000100Y44").unwrap_err().rule,
            "gb32100-check-character"
        );
        assert_eq!(
            check("91350100M000100O43").unwrap_err().rule,
            "gb32100-format"
        );
        assert_eq!(check("9135010").unwrap_err().rule, "gb32100-length");
        assert_eq!(
            check("91990100M000100Y43").unwrap_err().rule,
            "gb32100-division"
        );
    }
}
