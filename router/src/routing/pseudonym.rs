//! Pseudonyms (DESIGN.md, router): `pgb1_` + lowercase base32 of the first 20 bytes of
//! HMAC-SHA256(platform pseudonym secret, length-prefixed agency ‖ ID type ‖ ID number).
//! One agency gets the same token for the same person every time, so it can link its own
//! records; two agencies get different tokens, so they cannot link theirs. `pgb1` names the
//! secret's version: after a rotation (`platform.pseudonym_version`, the old secrets under
//! `platform.previous_pseudonym_secrets`) tokens start `pgb2_`, and `govbus pseudonym-map`
//! gives each agency the old → new token of every person in the records it holds.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of tokens made with the first pseudonym secret (`pgb<version>_` in general).
pub const PREFIX: &str = "pgb1_";
/// What a pseudonymised Subject's `id_type` becomes.
pub const PSEUDONYM_ID_TYPE: &str = "pseudonym";

/// The keyed pseudonym function, with its secret's version (the token prefix `pgb<version>_`).
#[derive(Clone)]
pub struct Pseudonymizer(Hmac<Sha256>, u32);

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(..)")
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, without padding (20 bytes give exactly 32 characters).
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl Pseudonymizer {
    /// Keys the function with the platform pseudonym secret.
    pub fn new(secret: &[u8]) -> Self {
        Self::versioned(secret, 1)
    }

    /// Keys the function with version `version` of the secret.
    pub fn versioned(secret: &[u8], version: u32) -> Self {
        Pseudonymizer(
            Hmac::new_from_slice(secret).expect("HMAC takes any key length"),
            version,
        )
    }

    /// The secret's version.
    pub fn version(&self) -> u32 {
        self.1
    }

    /// The agency's token for a person's ID document.
    pub fn token(&self, agency: &str, id_type: &str, id_number: &str) -> String {
        let mut mac = self.0.clone();
        for part in [agency, id_type, id_number] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        format!("pgb{}_{}", self.1, base32(&digest[..20]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 test vectors, lowercase and unpadded.
    #[test]
    fn base32_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"fo"), "mzxq");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    /// Tokens are stable per agency, differ between agencies and between people, and do not
    /// contain the number.
    #[test]
    fn tokens_link_within_an_agency_only() {
        let p = Pseudonymizer::new(&[9u8; 32]);
        let a = p.token("health", "111", "440106198001010019");
        assert_eq!(a, p.token("health", "111", "440106198001010019"));
        assert_ne!(a, p.token("civil", "111", "440106198001010019"));
        assert_ne!(a, p.token("health", "111", "440106198001010027"));
        assert!(a.starts_with("pgb1_") && a.len() == 5 + 32, "{a}");
        assert!(!a.contains("440106"));
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(p.token("ab", "c", "x"), p.token("a", "bc", "x"));
        assert_ne!(
            a,
            Pseudonymizer::new(&[8u8; 32]).token("health", "111", "440106198001010019")
        );
    }
}
