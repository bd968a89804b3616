//! Platform key rotation. The platform signs deliveries with one key at a time; to rotate, the
//! operator makes a new key endorsed by the old one (`govbus keygen --endorse-with OLD.key`),
//! points `platform.key_file` at it with `platform.endorsement_file`, and lists the old key under
//! `[[platform.previous_keys]]` with a `valid_until`. `GET /keys` serves every key with its
//! endorsement and validity. An agency trusts the key it was provisioned with; a delivery signed
//! with a key it does not know makes it read `/keys` and accept a new key only when a key it
//! already trusts endorsed it (a chain, one link per rotation), so a forged `/keys` answer
//! gains nothing. A key past its `valid_until` verifies nothing.
//!
//! An endorsement is a platform signature in the wire contract's form: message id
//! `govbus-key-endorsement`, item = the new key id, version 0, op upsert, body = the new
//! 32-byte public key.
use std::collections::HashMap;

use crate::wire::{self, Op, Signer};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

const ENDORSEMENT_ID: &str = "govbus-key-endorsement";

/// A new platform key, vouched for by the key before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// The new key's id.
    pub key_id: String,
    /// The new public key, base64.
    pub public_key: String,
    /// The id of the key that signed this.
    pub endorsed_by: String,
    /// Its signature, base64.
    pub signature: String,
}

impl Endorsement {
    /// `old` vouches for `new`.
    pub fn make(old: &Signer, new_id: &str, new: &VerifyingKey) -> Self {
        Endorsement {
            key_id: new_id.to_string(),
            public_key: B64.encode(new.as_bytes()),
            endorsed_by: old.key_id.clone(),
            signature: old.sign(ENDORSEMENT_ID, new_id, 0, Op::Upsert, new.as_bytes()),
        }
    }

    /// The endorsed key, if `endorser` signed this.
    pub fn verify(&self, endorser: &VerifyingKey) -> Option<VerifyingKey> {
        let key = crate::keys::parse_public_key(&self.public_key).ok()?;
        wire::verify(
            endorser,
            &self.signature,
            ENDORSEMENT_ID,
            &self.key_id,
            0,
            Op::Upsert,
            key.as_bytes(),
        )
        .then_some(key)
    }
}

/// A key as `GET /keys` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    pub key_id: String,
    pub algorithm: String,
    pub public_key: String,
    /// Whether deliveries are signed with it now.
    #[serde(default)]
    pub current: bool,
    /// After this (RFC 3339) nothing signed with it is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// The previous key's endorsement of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<Endorsement>,
}

/// The platform keys an agency trusts.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Key id → key and the end of its validity.
    keys: HashMap<String, (VerifyingKey, Option<DateTime<Utc>>)>,
    /// The provisioned key when its id is not known (older env files).
    anonymous: Option<VerifyingKey>,
}

impl Trusted {
    /// Trust the provisioned key (under its id where known).
    pub fn new(key: VerifyingKey, key_id: Option<String>) -> Self {
        match key_id {
            Some(id) => Trusted {
                keys: HashMap::from([(id, (key, None))]),
                anonymous: None,
            },
            None => Trusted {
                keys: HashMap::new(),
                anonymous: Some(key),
            },
        }
    }

    /// Whether `key_id` is a trusted key's id.
    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Checks a signature made with `key_id` (`check` verifies with one key).
    pub fn verify(
        &self,
        key_id: Option<&str>,
        now: DateTime<Utc>,
        mut check: impl FnMut(&VerifyingKey) -> bool,
    ) -> Result<(), String> {
        let fmt = |t: &DateTime<Utc>| t.to_rfc3339();
        if let Some((key, until)) = key_id.and_then(|k| self.keys.get(k)) {
            if let Some(u) = until.filter(|u| now > *u) {
                return Err(format!(
                    "signed with platform key {} which expired at {}",
                    key_id.unwrap_or_default(),
                    fmt(&u)
                ));
            }
            return if check(key) {
                Ok(())
            } else {
                Err("the platform signature does not verify (the message was altered)".into())
            };
        }
        if let Some(k) = &self.anonymous {
            if check(k) {
                return Ok(());
            }
        }
        Err(format!(
            "the platform signature does not verify with a platform key this agency trusts (key id {}): wrong platform key, an unendorsed key, or the message was altered",
            key_id.unwrap_or("none")
        ))
    }

    /// Learns from a `/keys` listing: every key endorsed, link by link, by a key already
    /// trusted, and the validity of trusted keys. Returns how many keys were added.
    pub fn learn(&mut self, listed: &[Listed]) -> usize {
        let until = |l: &Listed| {
            l.valid_until
                .as_deref()
                .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
                .map(|u| u.with_timezone(&Utc))
        };
        // The anonymous key gets its id once the listing shows it.
        if let Some(anon) = self.anonymous {
            let b64 = B64.encode(anon.as_bytes());
            if let Some(l) = listed.iter().find(|l| l.public_key == b64) {
                self.keys.insert(l.key_id.clone(), (anon, None));
                self.anonymous = None;
            }
        }
        for l in listed {
            if let Some((key, u)) = self.keys.get_mut(&l.key_id) {
                if B64.encode(key.as_bytes()) == l.public_key {
                    *u = until(l);
                }
            }
        }
        let mut added = 0;
        loop {
            let mut grew = false;
            for l in listed {
                if self.keys.contains_key(&l.key_id) {
                    continue;
                }
                let Some(e) = &l.endorsement else { continue };
                if e.key_id != l.key_id || e.public_key != l.public_key {
                    continue;
                }
                let Some((endorser, _)) = self.keys.get(&e.endorsed_by) else {
                    continue;
                };
                if let Some(key) = e.verify(endorser) {
                    self.keys.insert(l.key_id.clone(), (key, until(l)));
                    added += 1;
                    grew = true;
                }
            }
            if !grew {
                return added;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(signer: &Signer, endorsement: Option<Endorsement>, until: Option<&str>) -> Listed {
        Listed {
            key_id: signer.key_id.clone(),
            algorithm: "Ed25519".into(),
            public_key: B64.encode(signer.verifying_key().as_bytes()),
            current: until.is_none(),
            valid_until: until.map(String::from),
            endorsement,
        }
    }

    /// A chain of two rotations is followed from the provisioned key; an unendorsed key, or one
    /// endorsed by a stranger, is not; an expired key verifies nothing.
    #[test]
    fn endorsement_chains() {
        let k1 = Signer::from_seed("p-2025", &[1; 32]);
        let k2 = Signer::from_seed("p-2026", &[2; 32]);
        let k3 = Signer::from_seed("p-2027", &[3; 32]);
        let stranger = Signer::from_seed("evil", &[9; 32]);
        let rogue = Signer::from_seed("p-rogue", &[8; 32]);
        let e2 = Endorsement::make(&k1, "p-2026", &k2.verifying_key());
        let e3 = Endorsement::make(&k2, "p-2027", &k3.verifying_key());
        let bad = Endorsement::make(&stranger, "p-rogue", &rogue.verifying_key());
        let mut t = Trusted::new(k1.verifying_key(), None);
        let now = Utc::now();
        let sign = |s: &Signer| s.sign("m", "i", 1, Op::Upsert, b"body");
        let ok = |t: &Trusted, s: &Signer| {
            let sig = sign(s);
            t.verify(Some(&s.key_id), now, |k| {
                wire::verify(k, &sig, "m", "i", 1, Op::Upsert, b"body")
            })
        };
        assert!(ok(&t, &k1).is_ok(), "the provisioned key, id unknown");
        assert!(ok(&t, &k3).is_err());
        let added = t.learn(&[
            listed(&k3, Some(e3), None),
            listed(&k2, Some(e2), Some("2020-01-01T00:00:00Z")),
            listed(&k1, None, Some("2030-01-01T00:00:00Z")),
            listed(&rogue, Some(bad), None),
        ]);
        assert_eq!(added, 2);
        assert!(ok(&t, &k3).is_ok(), "two links from the provisioned key");
        assert!(ok(&t, &k1).is_ok());
        assert!(ok(&t, &k2).unwrap_err().contains("expired at 2020-01-01"));
        assert!(ok(&t, &rogue).is_err(), "endorsed by a stranger");
        assert!(t.knows("p-2025") && !t.knows("p-rogue"));
    }
}
