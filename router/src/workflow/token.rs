//! API tokens for the workflow: `gbt1.<role>.<subject>.<mac>`, where `mac` is
//! HMAC-SHA256 over role and subject under a key derived from the platform's id secret
//! (base64url, no padding). The router checks a token without a token table; provisioning
//! issues them (`govbus provision` writes `GOVBUS_API_TOKEN` into each `.env`,
//! `govbus workflow token` prints one for the coordinator or an operator). A token names who
//! acts, so every step in the workflow's record names its actor.
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agency (subject: its id): applies, reads its own applications.
    Agency,
    /// A department (subject: its id): answers applications for its items.
    Department,
    /// The sharing coordinator (article 36): mediates and records decisions.
    Coordinator,
    /// A platform operator: reads everything.
    Operator,
}

impl Role {
    /// The role's name in tokens and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agency => "agency",
            Role::Department => "department",
            Role::Coordinator => "coordinator",
            Role::Operator => "operator",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agency" => Role::Agency,
            "department" => Role::Department,
            "coordinator" => Role::Coordinator,
            "operator" => Role::Operator,
            _ => return None,
        })
    }
}

/// A checked token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Role.
    pub role: Role,
    /// Agency or department id, or the coordinator's or operator's name.
    pub subject: String,
}

/// The key tokens are made and checked with.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

fn mac(key: &[u8], parts: &[&str]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\n");
    }
    m
}

impl TokenKey {
    /// The token key derived from the platform's id secret.
    pub fn derive(id_secret: &[u8]) -> Self {
        TokenKey(
            mac(id_secret, &["govbus api token key", "v1"])
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    /// A token for `role` and `subject` (an id: letters, digits, `-` and `_`).
    pub fn issue(&self, role: Role, subject: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            !subject.is_empty()
                && subject
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "a token subject is an id of letters, digits, - and _ (got {} characters)",
            subject.chars().count()
        );
        let tag = mac(&self.0, &["gbt1", role.as_str(), subject])
            .finalize()
            .into_bytes();
        Ok(format!(
            "gbt1.{}.{subject}.{}",
            role.as_str(),
            B64URL.encode(tag)
        ))
    }

    /// The holder of `token`, or `None` when it is not one this platform issued.
    pub fn check(&self, token: &str) -> Option<Actor> {
        let mut parts = token.trim().split('.');
        let (Some("gbt1"), Some(role), Some(subject), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let role = Role::parse(role)?;
        let tag = B64URL.decode(tag).ok()?;
        mac(&self.0, &["gbt1", role.as_str(), subject])
            .verify_slice(&tag)
            .ok()?;
        Some(Actor {
            role,
            subject: subject.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token checks under its key only; any change to role, subject or tag is refused.
    #[test]
    fn issue_and_check() {
        let k = TokenKey::derive(&[7u8; 32]);
        let t = k.issue(Role::Agency, "civil").unwrap();
        assert_eq!(
            k.check(&t),
            Some(Actor {
                role: Role::Agency,
                subject: "civil".into()
            })
        );
        assert_eq!(TokenKey::derive(&[8u8; 32]).check(&t), None);
        assert_eq!(k.check(&t.replace("agency", "coordinator")), None);
        assert_eq!(k.check(&t.replace("civil", "tax")), None);
        assert_eq!(k.check(&format!("{t}x")), None);
        assert_eq!(k.check("gbt1.agency.civil"), None);
        assert!(k.issue(Role::Agency, "a.b").is_err());
    }
}
