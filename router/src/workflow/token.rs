//! API tokens for the workflow: `gbt2.<role>.<subject>.<YYYYMMDD>.<id>.<mac>`, where `mac` is
//! HMAC-SHA256 over role, subject, last valid day and a random id under a key derived from the
//! platform's id secret (base64url, no padding). A token is accepted through its last day
//! (90 days after issue unless the issuer says otherwise) unless its id is in
//! `revoked_tokens` (`govbus workflow token revoke`); the first format (`gbt1`), which never
//! expired, is refused. Provisioning issues them (`govbus provision` writes `GOVBUS_API_TOKEN` into each `.env`,
//! `govbus workflow token` prints one for the coordinator or an operator). A token names who
//! acts, so every step in the workflow's record names its actor.
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use bus_schemas::validate::today_in_shanghai;
use chrono::NaiveDate;
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
    /// Another platform (subject: its id in this catalogue's `[[platform]]`): forwards its
    /// agencies' applications for this platform's items (article 37) and follows them.
    Platform,
    /// The citizen portal (subject: its name): asks a citizen's data-use log
    /// (`POST /api/subject-log`) for the citizen it vouches for, and nothing else.
    Portal,
}

impl Role {
    /// The role's name in tokens and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agency => "agency",
            Role::Department => "department",
            Role::Coordinator => "coordinator",
            Role::Operator => "operator",
            Role::Platform => "platform",
            Role::Portal => "portal",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agency" => Role::Agency,
            "department" => Role::Department,
            "coordinator" => Role::Coordinator,
            "operator" => Role::Operator,
            "platform" => Role::Platform,
            "portal" => Role::Portal,
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

/// Why a token is not accepted. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not made by this platform's key, or altered.
    #[error(
        "the API token is not one this platform issued; ask the platform operator for a new one"
    )]
    Unknown,
    /// A token of the first format, which never expired.
    #[error("API tokens of the first format (gbt1) are no longer accepted: ask the platform operator to re-issue yours (`govbus provision --platform-id-secret` rewrites the env files' tokens)")]
    OldFormat,
    /// Past its end date.
    #[error("the API token expired on {0}; ask the platform operator for a new one")]
    Expired(NaiveDate),
}

/// A checked token: who holds it, its id (for revocation) and its last valid day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The holder.
    pub actor: Actor,
    /// The token's id, as `govbus workflow token revoke` names it.
    pub id: String,
    /// The last day it is accepted (Asia/Shanghai).
    pub expires: NaiveDate,
}

/// Days a token is valid unless the issuer says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 90;

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

    /// A token for `role` and `subject` (an id: letters, digits, `-` and `_`), accepted through
    /// [`DEFAULT_VALID_DAYS`] days from today.
    pub fn issue(&self, role: Role, subject: &str) -> anyhow::Result<String> {
        self.issue_until(
            role,
            subject,
            today_in_shanghai() + chrono::Duration::days(i64::from(DEFAULT_VALID_DAYS)),
        )
    }

    /// A token for `role` and `subject` accepted through `expires`:
    /// `gbt2.<role>.<subject>.<YYYYMMDD>.<id>.<mac>`, the id random (for revocation).
    pub fn issue_until(
        &self,
        role: Role,
        subject: &str,
        expires: NaiveDate,
    ) -> anyhow::Result<String> {
        anyhow::ensure!(
            !subject.is_empty()
                && subject
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "a token subject is an id of letters, digits, - and _ (got {} characters)",
            subject.chars().count()
        );
        let mut rnd = [0u8; 9];
        getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let id = B64URL.encode(rnd);
        let until = expires.format("%Y%m%d").to_string();
        let tag = mac(&self.0, &["gbt2", role.as_str(), subject, &until, &id])
            .finalize()
            .into_bytes();
        Ok(format!(
            "gbt2.{}.{subject}.{until}.{id}.{}",
            role.as_str(),
            B64URL.encode(tag)
        ))
    }

    /// The holder of `token` on `today`, or why it is refused. Revocation is the caller's
    /// (the router's store) to check, by the id.
    pub fn check(&self, token: &str, today: NaiveDate) -> Result<Checked, TokenError> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        match parts.as_slice() {
            ["gbt1", ..] => Err(TokenError::OldFormat),
            ["gbt2", role, subject, until, id, tag] => {
                let role = Role::parse(role).ok_or(TokenError::Unknown)?;
                let tag = B64URL.decode(tag).map_err(|_| TokenError::Unknown)?;
                mac(&self.0, &["gbt2", role.as_str(), subject, until, id])
                    .verify_slice(&tag)
                    .map_err(|_| TokenError::Unknown)?;
                let expires =
                    NaiveDate::parse_from_str(until, "%Y%m%d").map_err(|_| TokenError::Unknown)?;
                if today > expires {
                    return Err(TokenError::Expired(expires));
                }
                Ok(Checked {
                    actor: Actor {
                        role,
                        subject: subject.to_string(),
                    },
                    id: id.to_string(),
                    expires,
                })
            }
            _ => Err(TokenError::Unknown),
        }
    }
}

/// The id of a token, or the id itself: what `govbus workflow token revoke` takes.
pub fn token_id(token_or_id: &str) -> Option<&str> {
    let parts: Vec<&str> = token_or_id.trim().split('.').collect();
    let id = match parts.as_slice() {
        ["gbt2", _, _, _, id, _] => id,
        [id] => id,
        _ => return None,
    };
    (id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(*id)
}

/// Revokes a token by id (idempotent): the router refuses it from its next request.
pub async fn revoke(pool: &sqlx::PgPool, id: &str, note: &str) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO revoked_tokens (id, note) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether the token with `id` was revoked.
pub async fn is_revoked(pool: &sqlx::PgPool, id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// A token checks under its key only; any change to role, subject, date, id or tag is
    /// refused.
    #[test]
    fn issue_and_check() {
        let k = TokenKey::derive(&[7u8; 32]);
        let t = k
            .issue_until(Role::Agency, "civil", d("2027-03-01"))
            .unwrap();
        let c = k.check(&t, d("2026-12-01")).unwrap();
        assert_eq!(
            c.actor,
            Actor {
                role: Role::Agency,
                subject: "civil".into()
            }
        );
        assert_eq!(c.expires, d("2027-03-01"));
        assert_eq!(token_id(&t), Some(c.id.as_str()));
        assert_eq!(token_id(&c.id), Some(c.id.as_str()));
        let unknown = Err(TokenError::Unknown);
        let today = d("2026-12-01");
        assert_eq!(TokenKey::derive(&[8u8; 32]).check(&t, today), unknown);
        assert_eq!(k.check(&t.replace("agency", "coordinator"), today), unknown);
        assert_eq!(k.check(&t.replace("civil", "tax"), today), unknown);
        assert_eq!(k.check(&t.replace("20270301", "20990301"), today), unknown);
        assert_eq!(k.check(&t.replace(&c.id, "AAAAAAAAAAAA"), today), unknown);
        assert_eq!(k.check(&format!("{t}x"), today), unknown);
        assert!(k.issue(Role::Agency, "a.b").is_err());
        // Two tokens for the same holder have ids of their own (one can be revoked alone).
        let t2 = k
            .issue_until(Role::Agency, "civil", d("2027-03-01"))
            .unwrap();
        assert_ne!(token_id(&t), token_id(&t2));
    }

    /// A token is accepted through its last day, refused after; the never-expiring first
    /// format is refused with what to do.
    #[test]
    fn tokens_expire_and_the_old_format_is_refused() {
        let k = TokenKey::derive(&[7u8; 32]);
        let t = k
            .issue_until(Role::Operator, "li", d("2027-03-01"))
            .unwrap();
        assert!(k.check(&t, d("2027-03-01")).is_ok());
        assert_eq!(
            k.check(&t, d("2027-03-02")),
            Err(TokenError::Expired(d("2027-03-01")))
        );
        assert_eq!(
            k.check("gbt1.agency.civil.AAAA", d("2026-12-01")),
            Err(TokenError::OldFormat)
        );
        let t = k.issue(Role::Agency, "civil").unwrap();
        let c = k.check(&t, today_in_shanghai()).unwrap();
        assert_eq!(
            c.expires,
            today_in_shanghai() + chrono::Duration::days(i64::from(DEFAULT_VALID_DAYS))
        );
    }
}
