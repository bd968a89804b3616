//! Batch signatures on AMQP messages (DESIGN.md, "Batch signatures"): the signed bytes and
//! the seal as a message's properties carry them, sealing the messages published together,
//! and verifying one received.
use lapin::{
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};

use super::{
    headers::{header_i64, header_str},
    OutgoingMessage,
};
use crate::{
    batch::{self, Proof, Seal, SignError, Verifier, VerifyError, MAX_SIZE},
    wire::{header, Op, Signer},
};
use ed25519_dalek::VerifyingKey;

/// The bytes a message's leaf covers, from its `message_id` and headers (the grant and its
/// revision only where the message names a grant: deliveries).
pub fn signed_bytes(props: &BasicProperties, body: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let empty = FieldTable::default();
    let h = props.headers().as_ref().unwrap_or(&empty);
    let id = props
        .message_id()
        .as_ref()
        .ok_or(VerifyError::Missing("message_id"))?;
    let item = header_str(h, header::ITEM).ok_or(VerifyError::Missing(header::ITEM))?;
    let version = header_i64(h, header::VERSION).ok_or(VerifyError::Missing(header::VERSION))?;
    let op = header_str(h, header::OP).ok_or(VerifyError::Missing(header::OP))?;
    let op = Op::parse(op).ok_or(VerifyError::Malformed(header::OP))?;
    let grant = match header_str(h, header::GRANT) {
        Some(g) => Some((
            g,
            header_i64(h, header::GRANT_REVISION)
                .ok_or(VerifyError::Missing(header::GRANT_REVISION))?,
        )),
        None => None,
    };
    Ok(batch::signed_bytes(
        id.as_str(),
        item,
        version,
        op,
        grant,
        body,
    ))
}

/// The seal a message carries; every one of the five headers is required.
pub fn seal_of(h: &FieldTable) -> Result<Seal, VerifyError> {
    let get = |n: &'static str| {
        header_str(h, n)
            .map(str::to_string)
            .ok_or(VerifyError::Missing(n))
    };
    Ok(Seal {
        key_id: get(header::KEY_ID)?,
        salt: get(header::SALT)?,
        signature: get(header::SIGNATURE)?,
        batch: get(header::BATCH)?,
        proof: get(header::PROOF)?,
    })
}

/// Verifies a received message for `audience` with `key` (the key the receiver trusts, now,
/// for the message's `govbus-key-id`); returns what a ledger keeps.
pub fn verify(
    verifier: &Verifier,
    key: &VerifyingKey,
    audience: &str,
    props: &BasicProperties,
    body: &[u8],
) -> Result<Proof, VerifyError> {
    let empty = FieldTable::default();
    let seal = seal_of(props.headers().as_ref().unwrap_or(&empty))?;
    let signed = signed_bytes(props, body)?;
    verifier.verify(key, audience, &seal, &signed)
}

fn long(s: String) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Writes a seal's five headers into `h`.
pub fn put_seal(h: &mut FieldTable, seal: Seal) {
    h.insert(header::KEY_ID.into(), long(seal.key_id));
    h.insert(header::SALT.into(), long(seal.salt));
    h.insert(header::SIGNATURE.into(), long(seal.signature));
    h.insert(header::BATCH.into(), long(seal.batch));
    h.insert(header::PROOF.into(), long(seal.proof));
}

/// Seals the messages published together, in publish order, for `audience`: each gets its
/// salt, leaf index and path, and the batch's signature. More than [`MAX_SIZE`] messages
/// make consecutive batches. A message without the headers its signed bytes need is a
/// programming error, reported as [`SignError::Unsigned`].
pub fn seal<'a>(
    signer: &Signer,
    audience: &str,
    messages: impl IntoIterator<Item = &'a mut OutgoingMessage>,
) -> Result<(), SignError> {
    let mut messages: Vec<&mut OutgoingMessage> = messages.into_iter().collect();
    for chunk in messages.chunks_mut(MAX_SIZE) {
        let signed = chunk
            .iter()
            .map(|m| signed_bytes(&m.properties, &m.body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SignError::Unsigned(e.to_string()))?;
        let seals = batch::sign(
            signer,
            audience,
            &signed.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )?;
        for (m, s) in chunk.iter_mut().zip(seals) {
            let props = std::mem::take(&mut m.properties);
            let mut h = props.headers().clone().unwrap_or_default();
            put_seal(&mut h, s);
            m.properties = props.with_headers(h);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    fn message(i: i64, grant: Option<&str>) -> OutgoingMessage {
        let mut h = FieldTable::default();
        h.insert(header::ITEM.into(), long("household".into()));
        h.insert(header::VERSION.into(), AMQPValue::LongLongInt(i));
        h.insert(header::OP.into(), long("upsert".into()));
        if let Some(g) = grant {
            h.insert(header::GRANT.into(), long(g.into()));
            h.insert(header::GRANT_REVISION.into(), AMQPValue::LongLongInt(2));
        }
        OutgoingMessage {
            exchange: String::new(),
            routing_key: String::new(),
            body: format!("body {i}").into_bytes(),
            properties: BasicProperties::default()
                .with_message_id(ShortString::from(format!("{i:064x}")))
                .with_headers(h),
        }
    }

    /// Sealed messages verify from their headers; more than 1,024 make two batches; a message
    /// whose grant header changed after sealing, or that lost a seal header, is refused.
    #[test]
    fn sealed_messages_verify_from_their_headers() {
        let signer = Signer::from_seed("platform-2026", &[3; 32]);
        let key = signer.verifying_key();
        let mut msgs: Vec<OutgoingMessage> = (0..1030)
            .map(|i| message(i, Some("civil-household")))
            .collect();
        seal(&signer, "civil", msgs.iter_mut()).unwrap();
        let v = Verifier::new();
        for m in &msgs {
            verify(&v, &key, "civil", &m.properties, &m.body).unwrap();
        }
        let h = |m: &OutgoingMessage, n| {
            header_str(m.properties.headers().as_ref().unwrap(), n)
                .unwrap()
                .to_string()
        };
        assert_eq!(h(&msgs[0], header::BATCH), "0/1024");
        assert_eq!(h(&msgs[1029], header::BATCH), "5/6");
        let mut changed = msgs[7].properties.headers().clone().unwrap();
        changed.insert(header::GRANT.into(), long("health-household".into()));
        let props = msgs[7].properties.clone().with_headers(changed);
        assert!(verify(&v, &key, "civil", &props, &msgs[7].body).is_err());
        for gone in [
            header::SALT,
            header::BATCH,
            header::PROOF,
            header::SIGNATURE,
            header::KEY_ID,
        ] {
            let mut less = FieldTable::default();
            for (k, v) in msgs[7].properties.headers().as_ref().unwrap().inner() {
                if k.as_str() != gone {
                    less.insert(k.clone(), v.clone());
                }
            }
            let props = msgs[7].properties.clone().with_headers(less);
            assert_eq!(
                verify(&v, &key, "civil", &props, &msgs[7].body),
                Err(VerifyError::Missing(gone))
            );
        }
        // An ingest message (no grant) verifies for `ingest`.
        let mut ingest = [message(1, None)];
        seal(&signer, batch::AUDIENCE_INGEST, ingest.iter_mut()).unwrap();
        verify(&v, &key, "ingest", &ingest[0].properties, &ingest[0].body).unwrap();
        assert!(verify(&v, &key, "civil", &ingest[0].properties, &ingest[0].body).is_err());
    }
}
