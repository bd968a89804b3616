//! The subject index behind a citizen's data-use log: with each routed record the router keeps
//! a keyed hash of every person the record names (each `Subject` role, each citizen ID number
//! field), never the number itself. The key is derived from the platform's pseudonym secret,
//! so it needs no secret of its own; after a rotation the log asks with every version's key
//! (`platform.previous_pseudonym_secrets`).
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a subject hash: 128 bits, collision-free for any population.
pub const SUBJECT_HASH_BYTES: usize = 16;

/// A person's keyed hash in the index.
pub type SubjectHash = [u8; SUBJECT_HASH_BYTES];

/// The keyed function of the subject index.
#[derive(Clone)]
pub struct SubjectKey(Hmac<Sha256>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

/// The ID type of a resident identity card (GB 11643 numbers), assumed where a record gives none.
pub const RESIDENT_ID: &str = "111";

impl SubjectKey {
    /// The index key of a pseudonym secret (one key per secret version).
    pub fn from_pseudonym_secret(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"govbus subject index v1");
        let key = mac.finalize().into_bytes();
        SubjectKey(Hmac::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    /// The hash of a person's ID document. The type defaults to the resident ID card, the
    /// number is trimmed and upper-cased (a check character `x` is `X`), so a record and a
    /// query that write the same document differently agree.
    pub fn hash(&self, id_type: &str, id_number: &str) -> SubjectHash {
        let id_type = match id_type.trim() {
            "" => RESIDENT_ID,
            t => t,
        };
        let number = id_number.trim().to_uppercase();
        let mut mac = self.0.clone();
        for part in [id_type, number.as_str()] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; SUBJECT_HASH_BYTES];
        out.copy_from_slice(&digest[..SUBJECT_HASH_BYTES]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing type is the resident ID card; a lower-case check character and spaces do not
    /// change the hash; another number, type or secret does.
    #[test]
    fn one_person_one_hash() {
        let k = SubjectKey::from_pseudonym_secret(&[7; 32]);
        let h = k.hash("111", "44010619800101001X");
        assert_eq!(k.hash("", " 44010619800101001x "), h);
        assert_ne!(k.hash("111", "440106198001010027"), h);
        assert_ne!(k.hash("414", "44010619800101001X"), h);
        assert_ne!(
            SubjectKey::from_pseudonym_secret(&[8; 32]).hash("111", "44010619800101001X"),
            h
        );
    }
}
