//! The AMQP wire contract both sides share: exchange and queue names, headers, keyed
//! message ids, and the signed bytes. See DESIGN.md, "Wire contract".
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Topic exchange departments publish records to, routing key `<department>.<item>.<shard>`.
pub const INGEST_EXCHANGE: &str = "govbus.ingest";
/// Topic exchange for records that failed mapping or validation, routing key `<department>.<item>`.
pub const QUARANTINE_EXCHANGE: &str = "govbus.quarantine";
/// For every quarantined row the adapter also publishes a bodiless count message (routing key
/// [`quarantine_count_key`]) that only this queue takes; the router counts them (per day,
/// department and item, for the yearly report's quarantine rate). The rows themselves, with
/// their personal data, go only to each department's own quarantine queue.
pub const QUARANTINE_COUNTS_QUEUE: &str = "govbus.quarantine.counts";
/// The binding of [`QUARANTINE_COUNTS_QUEUE`]: count messages only, never rows.
pub const QUARANTINE_COUNT_BINDING: &str = "*.*.count";
/// Direct exchange the router delivers through, routing key `<agency>`.
pub const DELIVER_EXCHANGE: &str = "govbus.deliver";
/// Direct exchange for dead letters, routing key = the dead-letter queue's name.
pub const DLX_EXCHANGE: &str = "govbus.dlx";
/// Shards a record can fall in (DESIGN.md, "Wire contract"): partitions are bound to shards.
pub const SHARDS: u8 = 64;
/// Most partitions a platform can have: every partition takes at least one shard.
pub const MAX_PARTITIONS: u8 = SHARDS;
/// Prefix of the routers' input queues, `govbus.router.<p>`, bound to the ingest exchange.
pub const ROUTER_QUEUE_PREFIX: &str = "govbus.router.";
/// Where messages the router cannot process end up.
pub const ROUTER_DLQ: &str = "govbus.router.dlq";

/// The ingest exchange's alternate exchange (fanout): what no binding takes lands in the
/// queue of the same name, kept and counted (a shovel does not publish `mandatory`).
pub const UNROUTED_EXCHANGE: &str = "govbus.unrouted";
/// The queue of [`UNROUTED_EXCHANGE`].
pub const UNROUTED_QUEUE: &str = "govbus.unrouted";
/// The id a catalogue gives its own platform when it names none.
pub const DEFAULT_PLATFORM_ID: &str = "city";

/// The exchange the router publishes to for a linked platform: `govbus.platform.<id>`.
pub fn platform_exchange(platform: &str) -> String {
    format!("govbus.platform.{platform}")
}

/// The queue a linked platform's shovel reads: `platform.<id>`.
pub fn platform_queue(platform: &str) -> String {
    format!("platform.{platform}")
}

/// The queue a department reads its quarantined records from.
pub fn quarantine_queue(department: &str) -> String {
    format!("quarantine.{department}")
}

/// An agency's delivery queue.
pub fn agency_queue(agency: &str) -> String {
    format!("agency.{agency}")
}

/// Routing key of a record on `govbus.ingest`: `<department>.<item>.<shard>`.
pub fn routing_key(department: &str, item: &str, shard: u8) -> String {
    format!("{department}.{item}.{shard}")
}

/// Routing key of a quarantined row on `govbus.quarantine`: `<department>.<item>`.
pub fn quarantine_key(department: &str, item: &str) -> String {
    format!("{department}.{item}")
}

/// Splits an ingest routing key into department, item and shard; `None` unless it is exactly
/// `<department>.<item>.<shard>` with a shard below [`SHARDS`] written without leading zeros.
pub fn parse_routing_key(key: &str) -> Option<(&str, &str, u8)> {
    let mut parts = key.split('.');
    let (dept, item, shard) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || shard.is_empty() || (shard.len() > 1 && shard.starts_with('0')) {
        return None;
    }
    let shard: u8 = shard.parse().ok()?;
    (shard < SHARDS).then_some((dept, item, shard))
}

/// Partition `p`'s queue: `govbus.router.<p>`.
pub fn router_queue(partition: u8) -> String {
    format!("{ROUTER_QUEUE_PREFIX}{partition}")
}

/// The partition a shard belongs to when there are `partitions` of them.
pub fn partition_of(shard: u8, partitions: u8) -> u8 {
    shard % partitions.max(1)
}

/// The bindings of partition `p` of `partitions` on `govbus.ingest`: `#` when there is one
/// partition, else `*.*.<s>` for every shard `s` with `s mod P = p`.
pub fn partition_bindings(partition: u8, partitions: u8) -> Vec<String> {
    if partitions <= 1 {
        return vec!["#".into()];
    }
    (0..SHARDS)
        .filter(|s| partition_of(*s, partitions) == partition)
        .map(|s| format!("*.*.{s}"))
        .collect()
}

/// Routing key of a quarantined row's count message on `govbus.quarantine`:
/// `<department>.<item>.count` (three words: a department's queue, bound to `<department>.*`,
/// does not take it).
pub fn quarantine_count_key(department: &str, item: &str) -> String {
    format!("{department}.{item}.count")
}

/// Whether an id (department, agency, item) has the allowed shape: `[a-z0-9_]+`, starting
/// with a letter, at most 64 characters. Ids appear in routing keys, queue names and
/// permission patterns, so nothing else is allowed.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Header names. None of them carries personal data.
pub mod header {
    pub const DEPARTMENT: &str = "govbus-department";
    pub const ITEM: &str = "govbus-item";
    pub const VERSION: &str = "govbus-version";
    pub const OP: &str = "govbus-op";
    pub const SOURCE_TIME_MS: &str = "govbus-source-time-ms";
    pub const KEY_ID: &str = "govbus-key-id";
    pub const SIGNATURE: &str = "govbus-signature";
    /// Batch signatures (see [`crate::batch`]): the message's 16 bytes of salt (base64).
    pub const SALT: &str = "govbus-salt";
    /// `<leaf index>/<tree size>`.
    pub const BATCH: &str = "govbus-batch";
    /// The inclusion path, leaf to root (base64 of 32-byte hashes; empty for a batch of one).
    pub const PROOF: &str = "govbus-proof";
    pub const GRANT: &str = "govbus-grant";
    pub const GRANT_REVISION: &str = "govbus-grant-revision";
    pub const REASON: &str = "govbus-reason";
    pub const FIELD: &str = "govbus-field";
    pub const SOURCE_POSITION: &str = "govbus-source-position";
}

/// Content type of record bodies.
pub const AVRO_CONTENT_TYPE: &str = "avro/binary";
/// Content type of quarantine bodies (the source row as JSON).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// What a record message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create or replace the record.
    Upsert,
    /// Tombstone: the body carries only the key.
    Delete,
}

impl Op {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }

    /// Parses the header value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upsert" => Some(Op::Upsert),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// An id secret keyed once: every message id then costs only the message's own hashing.
#[derive(Clone)]
pub struct IdKey(Hmac<Sha256>);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// Keys HMAC-SHA256 with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        IdKey(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length"))
    }

    fn hex(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.0.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"|");
            }
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// See [`ingest_message_id`].
    pub fn ingest_message_id(&self, item: &str, record_key: &str, version: i64) -> String {
        self.hex(&[
            item.as_bytes(),
            record_key.as_bytes(),
            version.to_string().as_bytes(),
        ])
    }

    /// See [`delivery_message_id`].
    pub fn delivery_message_id(
        &self,
        agency: &str,
        grant: &str,
        grant_revision: i64,
        ingest_id: &str,
    ) -> String {
        self.hex(&[
            agency.as_bytes(),
            grant.as_bytes(),
            grant_revision.to_string().as_bytes(),
            ingest_id.as_bytes(),
        ])
    }

    /// Keyed hash of a record key for the router's ledger and version table (64 hex
    /// characters): the same record always has the same hash, and the hash reveals nothing.
    pub fn record_key_hash(&self, item: &str, record_key: &str) -> String {
        self.hex(&[b"ledger", item.as_bytes(), record_key.as_bytes()])
    }

    /// An HMAC of a fixed string under this secret: tells one secret from another (to notice a
    /// replaced secret file) and reveals nothing of it.
    pub fn check_value(&self) -> String {
        self.hex(&[b"govbus id secret check"])
    }

    /// Keyed hash of a whole message body (64 hex characters), kept where the body itself is
    /// not: tells two bodies apart or alike without holding what they say.
    pub fn body_hmac(&self, body: &[u8]) -> String {
        self.hex(&[b"body", body])
    }

    /// The shard of a record (0–63): the first 8 bytes, big-endian, of
    /// HMAC-SHA256(department id secret, `shard|item|record key`), modulo 64. One record's
    /// versions always share a shard, so they reach one partition and stay in order.
    pub fn shard(&self, item: &str, record_key: &str) -> u8 {
        let mut mac = self.0.clone();
        mac.update(b"shard|");
        mac.update(item.as_bytes());
        mac.update(b"|");
        mac.update(record_key.as_bytes());
        let out = mac.finalize().into_bytes();
        let first = u64::from_be_bytes(out[..8].try_into().expect("8 bytes"));
        (first % u64::from(SHARDS)) as u8
    }

    /// See [`record_key_ref`].
    pub fn record_key_ref(&self, item: &str, record_key: &str) -> String {
        self.hex(&[b"log", item.as_bytes(), record_key.as_bytes()])[..16].to_string()
    }
}

fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    IdKey::new(secret).hex(parts)
}

/// The record key as one string: the value of a single key field, or for a composite key the
/// JSON array of the values (unambiguous whatever the values contain).
pub fn record_key_string(values: &[&str]) -> String {
    match values {
        [one] => (*one).to_string(),
        many => serde_json::to_string(many).expect("strings serialise"),
    }
}

/// Ingest message id: hex HMAC-SHA256(department id secret, `item|record key|version`).
/// Deterministic, so a republished record keeps its id, and keyed, so it reveals nothing.
pub fn ingest_message_id(
    department_secret: &[u8],
    item: &str,
    record_key: &str,
    version: i64,
) -> String {
    hmac_hex(
        department_secret,
        &[
            item.as_bytes(),
            record_key.as_bytes(),
            version.to_string().as_bytes(),
        ],
    )
}

/// Delivery message id: hex HMAC-SHA256(platform secret, `agency|grant id|grant revision|ingest id`).
pub fn delivery_message_id(
    platform_secret: &[u8],
    agency: &str,
    grant: &str,
    grant_revision: i64,
    ingest_id: &str,
) -> String {
    IdKey::new(platform_secret).delivery_message_id(agency, grant, grant_revision, ingest_id)
}

/// A short keyed reference to a record key, safe for logs (16 hex characters).
pub fn record_key_ref(secret: &[u8], item: &str, record_key: &str) -> String {
    IdKey::new(secret).record_key_ref(item, record_key)
}

/// The bytes a one-by-one signature covers (ledger checkpoints, key endorsements):
/// `message_id ‖ 0x0A ‖ item ‖ 0x0A ‖ version ‖ 0x0A ‖ op ‖ 0x0A ‖ body`. Records are batch-signed
/// over [`crate::batch::signed_bytes`], which adds the grant.
pub fn signed_bytes(message_id: &str, item: &str, version: i64, op: Op, body: &[u8]) -> Vec<u8> {
    let version = version.to_string();
    let mut out =
        Vec::with_capacity(message_id.len() + item.len() + version.len() + 10 + body.len());
    for part in [
        message_id.as_bytes(),
        item.as_bytes(),
        version.as_bytes(),
        op.as_str().as_bytes(),
    ] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out.extend_from_slice(body);
    out
}

/// An Ed25519 signing key with its key id.
///
/// Signing uses AWS-LC (already in the tree through lapin's TLS): Ed25519 is deterministic,
/// so its signatures are byte for byte those of ed25519-dalek, at a third of the cost, which
/// matters for every batch. Keys are ed25519-dalek types; [`verify`] uses AWS-LC.
pub struct Signer {
    /// Key id, sent in `govbus-key-id`.
    pub key_id: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from the 32-byte Ed25519 secret seed.
    pub fn from_seed(key_id: impl Into<String>, seed: &[u8; 32]) -> Self {
        Signer {
            key_id: key_id.into(),
            key: Ed25519KeyPair::from_seed_unchecked(seed)
                .expect("any 32 bytes are an Ed25519 seed"),
        }
    }

    /// Signs one message on its own (ledger checkpoints, key endorsements); returns base64 of
    /// the signature. Records are batch-signed ([`crate::batch::sign`]).
    pub fn sign(&self, message_id: &str, item: &str, version: i64, op: Op, body: &[u8]) -> String {
        let sig = self
            .key
            .sign(&signed_bytes(message_id, item, version, op, body));
        B64.encode(sig.as_ref())
    }

    /// The Ed25519 signature of any bytes (a batch statement, a checkpoint).
    pub fn sign_raw(&self, bytes: &[u8]) -> [u8; 64] {
        self.key
            .sign(bytes)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }

    /// The public key, for the catalogue and agencies.
    pub fn verifying_key(&self) -> VerifyingKey {
        let public: [u8; 32] = self
            .key
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes");
        VerifyingKey::from_bytes(&public).expect("AWS-LC gives a valid public key")
    }
}

/// Verifies a base64 signature made by [`Signer::sign`] (ledger checkpoints and key
/// endorsements, signed one by one; records travel under batch signatures, [`crate::batch`]).
pub fn verify(
    key: &VerifyingKey,
    signature_b64: &str,
    message_id: &str,
    item: &str,
    version: i64,
    op: Op,
    body: &[u8],
) -> bool {
    let Some(raw) = B64
        .decode(signature_b64)
        .ok()
        .and_then(|r| <[u8; Signature::BYTE_SIZE]>::try_from(r).ok())
    else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(&signed_bytes(message_id, item, version, op, body), &raw)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Message ids are deterministic, keyed, and differ by item, key, version and secret.
    #[test]
    fn message_ids() {
        let a = ingest_message_id(b"s1", "household", "440106198001010019", 7);
        assert_eq!(
            a,
            ingest_message_id(b"s1", "household", "440106198001010019", 7)
        );
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            ingest_message_id(b"s2", "household", "440106198001010019", 7)
        );
        assert_ne!(
            a,
            ingest_message_id(b"s1", "household", "440106198001010019", 8)
        );
        assert_ne!(
            a,
            ingest_message_id(b"s1", "residence", "440106198001010019", 7)
        );
        assert!(!a.contains("440106"));
        let d1 = delivery_message_id(b"p", "tax", "g1", 1, &a);
        assert_ne!(d1, delivery_message_id(b"p", "tax", "g1", 2, &a));
        assert_ne!(d1, delivery_message_id(b"p", "health", "g1", 1, &a));
        assert_eq!(record_key_string(&["a"]), "a");
        assert_eq!(record_key_string(&["111", "x|y"]), r#"["111","x|y"]"#);
    }

    /// A signature verifies with the right key over the same bytes, and fails on any change.
    #[test]
    fn signatures() {
        let s = Signer::from_seed("police-2026", &[7u8; 32]);
        let sig = s.sign("id", "household", 3, Op::Upsert, b"body");
        let k = s.verifying_key();
        assert!(verify(&k, &sig, "id", "household", 3, Op::Upsert, b"body"));
        assert!(!verify(&k, &sig, "id", "household", 4, Op::Upsert, b"body"));
        assert!(!verify(&k, &sig, "id", "household", 3, Op::Delete, b"body"));
        assert!(!verify(&k, &sig, "id", "household", 3, Op::Upsert, b"bodz"));
        assert!(!verify(
            &k,
            "not base64!",
            "id",
            "household",
            3,
            Op::Upsert,
            b"body"
        ));
        let other = Signer::from_seed("x", &[8u8; 32]).verifying_key();
        assert!(!verify(
            &other,
            &sig,
            "id",
            "household",
            3,
            Op::Upsert,
            b"body"
        ));
    }

    /// AWS-LC's signatures are exactly ed25519-dalek's for the same key and message, and the
    /// public key is the same.
    #[test]
    fn signatures_match_ed25519_dalek() {
        use ed25519_dalek::Signer as _;
        for seed in [[0u8; 32], [7u8; 32], [255u8; 32]] {
            let ours = Signer::from_seed("k", &seed);
            let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
            assert_eq!(ours.verifying_key(), dalek.verifying_key());
            let bytes = signed_bytes("id", "household", 9, Op::Upsert, b"body");
            let theirs = B64.encode(dalek.sign(&bytes).to_bytes());
            assert_eq!(ours.sign("id", "household", 9, Op::Upsert, b"body"), theirs);
        }
    }

    /// Ids for routing keys and queue names are lowercase words.
    #[test]
    fn ids() {
        assert!(valid_id("police"));
        assert!(valid_id("tax_2"));
        assert!(!valid_id("Police"));
        assert!(!valid_id("a.b"));
        assert!(!valid_id("a*"));
        assert!(!valid_id("1a"));
        assert!(!valid_id(""));
    }

    /// The shard is the wire contract's HMAC, computed independently (Python's `hmac`):
    /// `int.from_bytes(hmac.new(k, b"shard|" + item + b"|" + key, sha256).digest()[:8], "big") % 64`.
    #[test]
    fn shards_follow_the_wire_contract() {
        assert_eq!(
            IdKey::new(b"police-secret").shard("household", "440106199001011234"),
            58
        );
        assert_eq!(
            IdKey::new(&[b'x'; 32]).shard("enterprise", r#"["a","b"]"#),
            33
        );
        // Spread: 6,400 keys fill every shard.
        let k = IdKey::new(b"s");
        let mut seen = [0u32; SHARDS as usize];
        for n in 0..6400 {
            seen[k.shard("household", &n.to_string()) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50 && c < 160), "{seen:?}");
    }

    /// Routing keys parse only in the contract's shape; partitions split the shards between
    /// them, every shard in exactly one.
    #[test]
    fn routing_keys_and_partitions() {
        assert_eq!(routing_key("police", "household", 7), "police.household.7");
        assert_eq!(
            parse_routing_key("police.household.7"),
            Some(("police", "household", 7))
        );
        assert_eq!(
            parse_routing_key("police.household.63"),
            Some(("police", "household", 63))
        );
        for bad in [
            "police.household",
            "police.household.64",
            "police.household.07",
            "police.household.",
            "police.household.7.1",
            "police.household.x",
        ] {
            assert_eq!(parse_routing_key(bad), None, "{bad}");
        }
        assert_eq!(partition_bindings(0, 1), vec!["#".to_string()]);
        for p in [2u8, 3, 4, 64] {
            let mut all: Vec<String> = (0..p).flat_map(|i| partition_bindings(i, p)).collect();
            assert_eq!(all.len(), SHARDS as usize);
            all.sort();
            all.dedup();
            assert_eq!(all.len(), SHARDS as usize, "P = {p}: a shard bound twice");
        }
        assert_eq!(
            partition_bindings(1, 4)[..2],
            ["*.*.1".to_string(), "*.*.5".to_string()]
        );
        assert_eq!(router_queue(3), "govbus.router.3");
    }
}
