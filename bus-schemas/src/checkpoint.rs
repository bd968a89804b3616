//! Ledger checkpoints, the format both sides share: the router signs each agency's chain head
//! (sequence number and hash of its last ledger row) with the platform key and delivers it to
//! that agency; the agency keeps it (`govbus-agency tail|sink --checkpoints DIR`), and
//! `govbus ledger verify --checkpoints DIR` later proves the ledger still holds, at each
//! checkpointed sequence number, the row the agency was shown.
//!
//! A checkpoint travels like a delivery (any AMQP client reads it): message id
//! `checkpoint-<agency>-<seq>` (partition 0) or `checkpoint-<agency>-p<partition>-<seq>`
//! (each router partition keeps its own chain per agency), header `govbus-kind: checkpoint`, `govbus-item:
//! govbus.checkpoint`, `govbus-version: <seq>`, `govbus-op: upsert`, the platform's
//! `govbus-key-id` and `govbus-signature` over the usual signed bytes, and a JSON body
//! `{"agency","seq","hash","made_at"}`, with `"partition"` when it is not 0. Its file keeps the body text exactly as signed.
use std::path::Path;

use ed25519_dalek::VerifyingKey;
#[cfg(feature = "amqp")]
use lapin::{
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "amqp")]
use crate::amqp::{headers::header_str, publish::OutgoingMessage};
use crate::wire::{self, Op, Signer};

/// The header that marks a checkpoint among an agency's deliveries.
pub const KIND_HEADER: &str = "govbus-kind";
/// Its value.
pub const KIND: &str = "checkpoint";
/// The `govbus-item` of a checkpoint (what the signature covers in place of an item).
pub const ITEM: &str = "govbus.checkpoint";
/// The format of a kept checkpoint file.
pub const FORMAT: &str = "govbus-checkpoint-1";

/// What a checkpoint attests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub agency: String,
    /// The router partition whose chain this is (0 is written as nothing, as before
    /// partitions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partition: i16,
    /// Sequence number of the agency's last ledger row.
    pub seq: i64,
    /// That row's hash, hex.
    pub hash: String,
    /// When the router signed it (RFC 3339).
    pub made_at: String,
}

fn is_zero(n: &i16) -> bool {
    *n == 0
}

impl Head {
    /// The message id of its checkpoint.
    pub fn message_id(&self) -> String {
        if self.partition == 0 {
            format!("checkpoint-{}-{}", self.agency, self.seq)
        } else {
            format!(
                "checkpoint-{}-p{}-{}",
                self.agency, self.partition, self.seq
            )
        }
    }
}

/// A signed checkpoint as an agency keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub message_id: String,
    pub key_id: String,
    pub signature: String,
    /// The JSON of a [`Head`], exactly as signed.
    pub body: String,
}

impl Checkpoint {
    /// Signs a chain head.
    pub fn sign(signer: &Signer, head: &Head) -> Self {
        let body = serde_json::to_string(head).expect("a head serialises");
        let message_id = head.message_id();
        Checkpoint {
            format: FORMAT.into(),
            signature: signer.sign(&message_id, ITEM, head.seq, Op::Upsert, body.as_bytes()),
            key_id: signer.key_id.clone(),
            message_id,
            body,
        }
    }

    /// The head it attests, if the platform's signature verifies with `key`.
    pub fn verified(&self, key: &VerifyingKey) -> Result<Head, String> {
        let head: Head = serde_json::from_str(&self.body)
            .map_err(|e| format!("its body is not a checkpoint: {e}"))?;
        if self.message_id != head.message_id() {
            return Err("its message id does not match its body".into());
        }
        if !wire::verify(
            key,
            &self.signature,
            &self.message_id,
            ITEM,
            head.seq,
            Op::Upsert,
            self.body.as_bytes(),
        ) {
            return Err(format!(
                "the platform signature (key {}) does not verify: not made by this platform, or altered",
                self.key_id
            ));
        }
        Ok(head)
    }

    #[cfg(feature = "amqp")]
    /// Reads a checkpoint from a delivery's message id, headers and body.
    pub fn from_delivery(
        message_id: &str,
        headers: &FieldTable,
        body: &[u8],
    ) -> Result<Self, String> {
        let get = |n: &str| {
            header_str(headers, n)
                .map(str::to_string)
                .ok_or_else(|| format!("a checkpoint without the {n} header"))
        };
        Ok(Checkpoint {
            format: FORMAT.into(),
            message_id: message_id.to_string(),
            key_id: get(wire::header::KEY_ID)?,
            signature: get(wire::header::SIGNATURE)?,
            body: String::from_utf8(body.to_vec())
                .map_err(|_| "a checkpoint body that is not UTF-8".to_string())?,
        })
    }

    #[cfg(feature = "amqp")]
    /// The message that delivers it to its agency.
    pub fn message(&self, head: &Head) -> OutgoingMessage {
        let mut h = FieldTable::default();
        let mut put = |k: &str, v: &str| {
            h.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        };
        put(KIND_HEADER, KIND);
        put(wire::header::ITEM, ITEM);
        put(wire::header::OP, Op::Upsert.as_str());
        put(wire::header::KEY_ID, &self.key_id);
        put(wire::header::SIGNATURE, &self.signature);
        h.insert(
            wire::header::VERSION.into(),
            AMQPValue::LongLongInt(head.seq),
        );
        OutgoingMessage {
            exchange: wire::DELIVER_EXCHANGE.into(),
            routing_key: head.agency.clone(),
            body: self.body.clone().into_bytes(),
            properties: BasicProperties::default()
                .with_message_id(self.message_id.as_str().into())
                .with_content_type(wire::JSON_CONTENT_TYPE.into())
                .with_delivery_mode(2)
                .with_headers(h),
        }
    }

    /// Its file name in a checkpoints folder.
    pub fn file_name(head: &Head) -> String {
        if head.partition == 0 {
            format!("{}-{:012}.json", head.agency, head.seq)
        } else {
            format!("{}-p{}-{:012}.json", head.agency, head.partition, head.seq)
        }
    }

    /// Saves it into `dir` (created if missing), atomically.
    pub fn save(&self, dir: &Path, head: &Head) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::file_name(head));
        let tmp = dir.join(format!(".{}.tmp", Self::file_name(head)));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(partition: i16) -> Head {
        Head {
            agency: "civil".into(),
            partition,
            seq: 42,
            hash: "00ff".into(),
            made_at: "2026-11-30T00:00:00+00:00".into(),
        }
    }

    /// Partition 0 keeps the id, body and file name it had before partitions; another
    /// partition's checkpoint names it in all three, and its signature covers it: the same
    /// head claimed for another partition does not verify.
    #[test]
    fn a_checkpoint_names_its_partition() {
        let signer = Signer::from_seed("platform-test", &[7; 32]);
        let key = signer.verifying_key();
        let zero = Checkpoint::sign(&signer, &head(0));
        assert_eq!(zero.message_id, "checkpoint-civil-42");
        assert!(!zero.body.contains("partition"));
        assert_eq!(Checkpoint::file_name(&head(0)), "civil-000000000042.json");
        let two = Checkpoint::sign(&signer, &head(2));
        assert_eq!(two.message_id, "checkpoint-civil-p2-42");
        assert!(two.body.contains("\"partition\":2"));
        assert_eq!(
            Checkpoint::file_name(&head(2)),
            "civil-p2-000000000042.json"
        );
        assert_eq!(two.verified(&key).unwrap(), head(2));
        let mut moved = two.clone();
        moved.body = moved.body.replace("\"partition\":2", "\"partition\":3");
        assert!(moved.verified(&key).is_err());
        let mut renamed = two;
        renamed.message_id = "checkpoint-civil-42".into();
        assert!(renamed.verified(&key).is_err());
    }
}
