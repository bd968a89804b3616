//! Batch signatures (DESIGN.md, "Batch signatures"): the messages a signer publishes together
//! are the leaves of one RFC 9162 Merkle tree; one Ed25519 signature covers a statement that
//! names the tree's root, its size, the key and the audience; every message carries its salt,
//! its leaf index and its inclusion path.
//!
//! - Leaf: SHA-256(0x00 ‖ salt ‖ signed bytes), with 16 random bytes of salt per message, so a
//!   hash kept apart from the body (the ledger's) cannot be brute-forced back to an ID number.
//! - Node: SHA-256(0x01 ‖ left ‖ right); the tree splits at the largest power of two below its
//!   size (RFC 9162 §2.1.1). The path runs leaf to root (§2.1.3.1) and is checked by §2.1.3.2.
//! - Statement: `govbus-batch-v1` ‖ 0x0A ‖ key id ‖ 0x0A ‖ audience ‖ 0x0A ‖ size ‖ 0x0A ‖ hex root.
//! - A batch holds 1 to [`MAX_SIZE`] messages; there is no unbatched form.
//!
//! [`sign`] builds a batch; [`Verifier`] checks one message, remembering the statements it has
//! already checked so the rest of a batch costs two dozen hashes and no signature.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::wire::{Op, Signer};

/// Most messages in one batch.
pub const MAX_SIZE: usize = 1024;
/// Bytes of salt per message.
pub const SALT_LEN: usize = 16;
/// The audience of a department's batch (the router checks it).
pub const AUDIENCE_INGEST: &str = "ingest";
/// The first line of every statement.
pub const STATEMENT_TAG: &str = "govbus-batch-v1";

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// The bytes a message's leaf covers (DESIGN.md, "Signed bytes"): `message_id ‖ 0x0A ‖ item ‖
/// 0x0A ‖ version ‖ 0x0A ‖ op ‖ 0x0A ‖ grant ‖ 0x0A ‖ grant revision ‖ 0x0A ‖ body`. Grant and
/// revision are `None` on ingest messages (empty lines); on deliveries they are the
/// `govbus-grant*` headers' values, so a delivery cannot pass for one under another grant.
pub fn signed_bytes(
    message_id: &str,
    item: &str,
    version: i64,
    op: Op,
    grant: Option<(&str, i64)>,
    body: &[u8],
) -> Vec<u8> {
    let version = version.to_string();
    let (grant, revision) = match grant {
        Some((g, r)) => (g, r.to_string()),
        None => ("", String::new()),
    };
    let mut out = Vec::with_capacity(
        message_id.len()
            + item.len()
            + version.len()
            + grant.len()
            + revision.len()
            + 16
            + body.len(),
    );
    for part in [
        message_id.as_bytes(),
        item.as_bytes(),
        version.as_bytes(),
        op.as_str().as_bytes(),
        grant.as_bytes(),
        revision.as_bytes(),
    ] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out.extend_from_slice(body);
    out
}

/// SHA-256(0x00 ‖ salt ‖ signed bytes).
pub fn leaf_hash(salt: &[u8], signed: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(salt);
    h.update(signed);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle Tree Hash of the leaf hashes (RFC 9162 §2.1.1); SHA-256 of nothing for none.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion path of leaf `m` (RFC 9162 §2.1.3.1), leaf to root.
pub fn inclusion_path(leaves: &[Hash], m: usize) -> Vec<Hash> {
    assert!(m < leaves.len(), "leaf {m} of {}", leaves.len());
    let mut path = Vec::new();
    fn walk(leaves: &[Hash], m: usize, path: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            walk(&leaves[..k], m, path);
            path.push(root(&leaves[k..]));
        } else {
            walk(&leaves[k..], m - k, path);
            path.push(root(&leaves[..k]));
        }
    }
    walk(leaves, m, &mut path);
    path
}

/// The root that `leaf` at `index` of a tree of `size` leads to along `path` (RFC 9162
/// §2.1.3.2); `None` when the index is outside the tree or the path is too short or too long.
pub fn root_from_path(index: u64, size: u64, leaf: Hash, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// The statement a batch signature covers.
pub fn statement(key_id: &str, audience: &str, size: usize, root: &Hash) -> String {
    format!(
        "{STATEMENT_TAG}\n{key_id}\n{audience}\n{size}\n{}",
        hex::encode(root)
    )
}

/// What one message of a batch carries, as header values (DESIGN.md: `govbus-key-id`,
/// `govbus-salt`, `govbus-signature`, `govbus-batch`, `govbus-proof`; base64 in the standard
/// alphabet with padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// `govbus-key-id`.
    pub key_id: String,
    /// `govbus-salt`: base64 of 16 bytes.
    pub salt: String,
    /// `govbus-signature`: base64 of the Ed25519 signature over the statement.
    pub signature: String,
    /// `govbus-batch`: `<leaf index>/<tree size>`.
    pub batch: String,
    /// `govbus-proof`: base64 of the concatenated 32-byte path, leaf to root (empty for a
    /// batch of one).
    pub proof: String,
}

/// Why a batch could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// 0 or more than [`MAX_SIZE`] messages.
    #[error("a batch holds 1 to {MAX_SIZE} messages, not {0}")]
    Size(usize),
    /// A message lacks what its signed bytes need (a programming error).
    #[error("a message cannot be sealed: {0}")]
    Unsigned(String),
    /// The system's random source failed.
    #[error("no random bytes for the salts: {0}")]
    Random(String),
}

/// Signs the messages published together (their signed bytes, in publish order) for
/// `audience`: one seal per message, in the same order.
pub fn sign(signer: &Signer, audience: &str, messages: &[&[u8]]) -> Result<Vec<Seal>, SignError> {
    let n = messages.len();
    if n == 0 || n > MAX_SIZE {
        return Err(SignError::Size(n));
    }
    let mut salts = vec![0u8; SALT_LEN * n];
    getrandom::fill(&mut salts).map_err(|e| SignError::Random(e.to_string()))?;
    let leaves: Vec<Hash> = messages
        .iter()
        .zip(salts.chunks_exact(SALT_LEN))
        .map(|(m, salt)| leaf_hash(salt, m))
        .collect();
    let (root, paths) = tree(&leaves);
    let signature =
        B64.encode(signer.sign_raw(statement(&signer.key_id, audience, n, &root).as_bytes()));
    Ok(paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| Seal {
            key_id: signer.key_id.clone(),
            salt: B64.encode(&salts[i * SALT_LEN..(i + 1) * SALT_LEN]),
            signature: signature.clone(),
            batch: format!("{i}/{n}"),
            proof: B64.encode(path.concat()),
        })
        .collect())
}

/// The root and every leaf's inclusion path at once: each node is hashed once (n − 1 hashes
/// in all), where one [`inclusion_path`] per leaf would hash its subtrees again (n² / 2).
pub fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    fn build(leaves: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n);
                let (left_paths, right_paths) = paths.split_at_mut(k);
                let l = build(&leaves[..k], left_paths);
                let r = build(&leaves[k..], right_paths);
                // Deeper siblings were pushed first: paths run leaf to root.
                left_paths.iter_mut().for_each(|p| p.push(r));
                right_paths.iter_mut().for_each(|p| p.push(l));
                node_hash(&l, &r)
            }
        }
    }
    let depth = (usize::BITS - leaves.len().leading_zeros()) as usize;
    let mut paths = vec![Vec::with_capacity(depth); leaves.len()];
    let root = build(leaves, &mut paths);
    (root, paths)
}

/// Why a message's seal was refused (every one is a bad signature to the caller).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the contract requires is absent (there is no unbatched form).
    #[error("no {0} header")]
    Missing(&'static str),
    /// A header is not what the contract says (not base64, a wrong length, a bad `i/n`).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Size 0 or over [`MAX_SIZE`].
    #[error("a batch of {0} messages")]
    Size(u64),
    /// The path does not fit the index and size.
    #[error("an inclusion path of the wrong length")]
    PathLength,
    /// The statement's signature does not verify with the key for this audience.
    #[error("the batch signature does not verify")]
    Signature,
}

/// What a ledger keeps of a verified message: enough to prove it later with its body and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The statement the signature covers.
    pub statement: String,
    /// The signature (64 bytes).
    pub signature: Vec<u8>,
    /// The leaf's index in the tree.
    pub index: u32,
    /// The inclusion path, leaf to root.
    pub path: Vec<Hash>,
}

/// (key id, public key, audience, size, root, signature) of statements already verified.
type Checked = (
    String,
    [u8; 32],
    String,
    u64,
    Hash,
    [u8; Signature::BYTE_SIZE],
);

/// Checks sealed messages against a key for an expected audience, remembering verified
/// statements (bounded; [`Verifier::forget_key`] drops a revoked or expired key's).
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    checked: Arc<Mutex<HashSet<Checked>>>,
}

/// Statements remembered before the cache starts over (a few thousand batches).
const CACHE_MAX: usize = 16_384;

impl Verifier {
    /// An empty cache.
    pub fn new() -> Self {
        Verifier::default()
    }

    /// Verifies one message: its signed bytes and seal, for `audience`, with `key` (the key
    /// the caller found for `seal.key_id`, valid now). Returns what the ledger keeps.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        audience: &str,
        seal: &Seal,
        signed: &[u8],
    ) -> Result<Proof, VerifyError> {
        let salt = decode(&seal.salt, "govbus-salt")?;
        if salt.len() != SALT_LEN {
            return Err(VerifyError::Malformed("govbus-salt"));
        }
        let (index, size) = parse_batch(&seal.batch)?;
        if size == 0 || size > MAX_SIZE as u64 {
            return Err(VerifyError::Size(size));
        }
        let raw = decode(&seal.proof, "govbus-proof")?;
        if raw.len() % 32 != 0 {
            return Err(VerifyError::Malformed("govbus-proof"));
        }
        let path: Vec<Hash> = raw
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        let root = root_from_path(index, size, leaf_hash(&salt, signed), &path)
            .ok_or(VerifyError::PathLength)?;
        let sig: [u8; Signature::BYTE_SIZE] = decode(&seal.signature, "govbus-signature")?
            .try_into()
            .map_err(|_| VerifyError::Malformed("govbus-signature"))?;
        let statement = statement(&seal.key_id, audience, size as usize, &root);
        // The signature is part of what is remembered: a cached statement with another
        // signature beside it is checked (and refused), so the ledger never keeps a wrong one.
        let key_of = (
            seal.key_id.clone(),
            *key.as_bytes(),
            audience.to_string(),
            size,
            root,
            sig,
        );
        let known = self.checked.lock().expect("cache lock").contains(&key_of);
        if !known {
            key.verify_strict(statement.as_bytes(), &Signature::from_bytes(&sig))
                .map_err(|_| VerifyError::Signature)?;
            let mut c = self.checked.lock().expect("cache lock");
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key_of);
        }
        Ok(Proof {
            statement,
            signature: sig.to_vec(),
            index: index as u32,
            path,
        })
    }

    /// Forgets every statement verified with `key_id` (the key was revoked or expired).
    pub fn forget_key(&self, key_id: &str) {
        self.checked
            .lock()
            .expect("cache lock")
            .retain(|(k, ..)| k != key_id);
    }
}

fn decode(s: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    B64.decode(s).map_err(|_| VerifyError::Malformed(what))
}

/// `<leaf index>/<tree size>`, both decimal without sign or leading zeros.
fn parse_batch(s: &str) -> Result<(u64, u64), VerifyError> {
    let bad = || VerifyError::Malformed("govbus-batch");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let num = |t: &str| -> Result<u64, VerifyError> {
        let ok = !t.is_empty()
            && t.len() <= 5
            && t.bytes().all(|b| b.is_ascii_digit())
            && (t == "0" || !t.starts_with('0'));
        if ok {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    Ok((num(i)?, num(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The Certificate Transparency reference inputs (RFC 6962's test data, as the Go, C++
    /// and Java implementations use it).
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&[], &hex::decode(d).unwrap()))
        .collect()
    }

    /// `tree` gives the reference root and, for every leaf, the reference path.
    #[test]
    fn tree_matches_root_and_inclusion_path() {
        let all: Vec<Hash> = (0..300u32)
            .map(|i| leaf_hash(&[], &i.to_be_bytes()))
            .collect();
        for n in (1..=70).chain([255, 256, 257, 300]) {
            let (r, paths) = tree(&all[..n]);
            assert_eq!(r, root(&all[..n]), "root of {n}");
            for (m, p) in paths.iter().enumerate() {
                assert_eq!(*p, inclusion_path(&all[..n], m), "path {m}/{n}");
            }
        }
    }

    #[test]
    fn roots_match_the_reference_for_every_size() {
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = ct_leaves();
        for (n, want) in roots.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..n])), *want, "size {n}");
        }
    }

    #[test]
    fn inclusion_paths_match_the_reference() {
        let leaves = ct_leaves();
        let cases: [(usize, usize, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (m, n, want) in cases {
            let path = inclusion_path(&leaves[..n], m);
            assert_eq!(
                path,
                want.iter().map(|s| h(s)).collect::<Vec<_>>(),
                "leaf {m} of {n}"
            );
            assert_eq!(
                root_from_path(m as u64, n as u64, leaves[m], &path),
                Some(root(&leaves[..n]))
            );
        }
    }

    /// Every leaf of every tree shape up to 70 (and 1,024) leads to the root; a path one hash
    /// short or long, another index, or another leaf does not.
    #[test]
    fn every_path_verifies_and_nothing_else_does() {
        let all: Vec<Hash> = (0..1024u32)
            .map(|i| leaf_hash(&[], &i.to_be_bytes()))
            .collect();
        for n in (1..=70).chain([1024]) {
            let leaves = &all[..n];
            let r = root(leaves);
            for m in 0..n {
                let path = inclusion_path(leaves, m);
                let (i, s) = (m as u64, n as u64);
                assert_eq!(root_from_path(i, s, leaves[m], &path), Some(r), "{m}/{n}");
                let mut long = path.clone();
                long.push(r);
                assert_ne!(
                    root_from_path(i, s, leaves[m], &long),
                    Some(r),
                    "long {m}/{n}"
                );
                if !path.is_empty() {
                    let short = &path[..path.len() - 1];
                    assert_ne!(
                        root_from_path(i, s, leaves[m], short),
                        Some(r),
                        "short {m}/{n}"
                    );
                }
                if n > 1 {
                    let other = (m + 1) % n;
                    assert_ne!(root_from_path(other as u64, s, leaves[m], &path), Some(r));
                    assert_ne!(root_from_path(i, s, leaves[other], &path), Some(r));
                }
            }
            assert_eq!(root_from_path(n as u64, n as u64, leaves[0], &[]), None);
        }
    }

    fn messages(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                signed_bytes(
                    &format!("{i:064x}"),
                    "household",
                    i as i64 + 1,
                    Op::Upsert,
                    Some(("civil-household", 3)),
                    format!("body {i}").as_bytes(),
                )
            })
            .collect()
    }

    fn seal_all(signer: &Signer, audience: &str, msgs: &[Vec<u8>]) -> Vec<Seal> {
        sign(
            signer,
            audience,
            &msgs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn batches_of_1_2_3_5_and_1024_verify() {
        let signer = Signer::from_seed("platform-2026", &[7; 32]);
        let key = signer.verifying_key();
        for n in [1, 2, 3, 5, 1024] {
            let msgs = messages(n);
            let seals = seal_all(&signer, "civil", &msgs);
            let v = Verifier::new();
            let mut statements = HashSet::new();
            for (i, (m, s)) in msgs.iter().zip(&seals).enumerate() {
                assert_eq!(s.batch, format!("{i}/{n}"));
                let p = v
                    .verify(&key, "civil", s, m)
                    .unwrap_or_else(|e| panic!("{i}/{n}: {e}"));
                assert_eq!(p.index as usize, i);
                statements.insert(p.statement);
            }
            assert_eq!(statements.len(), 1, "one statement a batch");
            if n == 1 {
                assert_eq!(seals[0].proof, "", "present and empty for a batch of one");
            }
        }
    }

    /// Each change a forger could make is refused.
    #[test]
    fn tampering_is_refused() {
        let signer = Signer::from_seed("platform-2026", &[7; 32]);
        let key = signer.verifying_key();
        let msgs = messages(5);
        let seals = seal_all(&signer, "civil", &msgs);
        let other = seal_all(&signer, "civil", &messages(5));
        let v = Verifier::new();
        // The good message first, so its statement is cached: tampering must fail regardless.
        v.verify(&key, "civil", &seals[3], &msgs[3]).unwrap();
        let refused = |seal: &Seal, msg: &[u8], audience: &str, what: &str| {
            for verifier in [&v, &Verifier::new()] {
                assert!(
                    verifier.verify(&key, audience, seal, msg).is_err(),
                    "{what} was accepted"
                );
            }
        };
        let mut body = msgs[3].clone();
        *body.last_mut().unwrap() ^= 1;
        refused(&seals[3], &body, "civil", "a flipped body byte");
        let grant_changed = signed_bytes(
            &format!("{:064x}", 3),
            "household",
            4,
            Op::Upsert,
            Some(("health-household", 3)),
            b"body 3",
        );
        refused(&seals[3], &grant_changed, "civil", "another grant");
        let mut s = seals[3].clone();
        let mut salt = B64.decode(&s.salt).unwrap();
        salt[0] ^= 1;
        s.salt = B64.encode(salt);
        refused(&s, &msgs[3], "civil", "a flipped salt");
        let mut s = seals[3].clone();
        s.batch = "2/5".into();
        refused(&s, &msgs[3], "civil", "a wrong leaf index");
        let mut s = seals[3].clone();
        s.proof = other[3].proof.clone();
        refused(&s, &msgs[3], "civil", "a path from another batch");
        let path = B64.decode(&seals[3].proof).unwrap();
        let mut s = seals[3].clone();
        s.proof = B64.encode(&path[..path.len() - 32]);
        refused(&s, &msgs[3], "civil", "a path one hash short");
        let mut s = seals[3].clone();
        s.proof = B64.encode([&path[..], &[0u8; 32]].concat());
        refused(&s, &msgs[3], "civil", "a path one hash long");
        for batch in ["0/0", "3/1025", "3/5x", "03/5", "-1/5", "3", ""] {
            let mut s = seals[3].clone();
            s.batch = batch.into();
            refused(&s, &msgs[3], "civil", batch);
        }
        refused(
            &seals[3],
            &msgs[3],
            "health",
            "a batch signed for another audience",
        );
        let mut s = seals[3].clone();
        s.signature = other[3].signature.clone();
        refused(&s, &msgs[3], "civil", "another batch's signature");
        let mut s = seals[3].clone();
        s.salt = s.salt.trim_end_matches('=').to_string();
        refused(&s, &msgs[3], "civil", "base64 without its padding");
        let stranger = Signer::from_seed("platform-2026", &[8; 32]);
        assert!(v
            .verify(&stranger.verifying_key(), "civil", &seals[3], &msgs[3])
            .is_err_and(|e| e == VerifyError::Signature));
        // The cache answers for the key it was checked with only while that key is trusted.
        v.forget_key("platform-2026");
        v.verify(&key, "civil", &seals[4], &msgs[4]).unwrap();
    }

    #[test]
    fn sizes_outside_1_to_1024_are_not_signed() {
        let signer = Signer::from_seed("k", &[7; 32]);
        assert_eq!(sign(&signer, "civil", &[]), Err(SignError::Size(0)));
        let msgs = messages(1025);
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(sign(&signer, "civil", &refs), Err(SignError::Size(1025)));
    }
}
