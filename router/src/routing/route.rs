//! What the router does with one ingest message, without I/O: check it (headers, department,
//! batch signature, schema), then for each grant in force project, pseudonymise and encode
//! one delivery. The caller seals each agency's deliveries of a batch as one batch
//! ([`seal_deliveries`]), publishes, writes the ledger and acks.
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::{
    amqp::{
        headers::{header_i64, header_str},
        seal, OutgoingMessage,
    },
    apache_avro::types::Value,
    batch::{SignError, AUDIENCE_INGEST},
    split_header,
    wire::{self, header, Op},
};
use chrono::{DateTime, NaiveDate, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

use crate::{
    routing::catalogue::Identity,
    routing::grants::{strip_union, CompiledGrant, Routing},
    routing::platform::Platform,
    routing::pseudonym::{Pseudonymizer, PSEUDONYM_ID_TYPE},
    store::ledger::{DeptProof, Destination, Entry},
};

/// Why a message reaches nobody. Refused messages are acked, counted and kept with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The body's fingerprint is not the item's record type.
    UnknownSchema,
    /// The signature does not verify with the department's key (or the key id is unknown).
    BadSignature,
    /// The routing key's department is not the item's responsible department (article 3).
    WrongDepartment,
    /// No grant of the item is in force.
    NoGrant,
    /// The item is not in the catalogue.
    UnknownItem,
    /// Signed with a department key that is revoked, expired or not yet valid when received.
    KeyNotInForce,
    /// Headers missing or contradicting the routing key.
    Malformed,
    /// The body does not decode with its schema.
    Undecodable,
}

impl Reason {
    /// Label for metrics and the refusals table.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownSchema => "unknown_schema",
            Reason::BadSignature => "bad_signature",
            Reason::WrongDepartment => "wrong_department",
            Reason::NoGrant => "no_grant",
            Reason::UnknownItem => "unknown_item",
            Reason::KeyNotInForce => "key_not_in_force",
            Reason::Malformed => "malformed",
            Reason::Undecodable => "undecodable",
        }
    }
}

/// One delivery to publish.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What the ledger will record.
    pub entry: Entry,
    /// A region-limited grant for a delete (division unknown): deliver only if the agency
    /// already holds the record.
    pub needs_prior: bool,
    /// The message.
    pub message: OutgoingMessage,
}

/// The decision for one message.
#[derive(Debug)]
pub enum Outcome {
    /// Reaches nobody.
    Refused {
        /// Why.
        reason: Reason,
        /// Details for the operator (no personal data).
        detail: String,
    },
    /// Deliveries to make.
    Deliver {
        /// One per grant in force.
        deliveries: Vec<Planned>,
        /// When the source changed the record (ms), for the latency histogram.
        source_time_ms: Option<i64>,
        /// The keyed hash of each person the record names (the subject index).
        subjects: Vec<crate::routing::subjects::SubjectHash>,
    },
    /// Cannot be processed (goes to `govbus.router.dlq`).
    Failed(String),
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn refused(reason: Reason, detail: impl Into<String>) -> Outcome {
    Outcome::Refused {
        reason,
        detail: detail.into(),
    }
}

/// Replaces every ID number by the agency's pseudonym: in each Subject (its `id_type` becomes
/// `pseudonym`), and in top-level citizen ID number fields (the record key among them).
fn pseudonymise(
    value: &mut Value,
    agency: &str,
    p: &Pseudonymizer,
    subjects: &[String],
    id_fields: &[String],
) {
    replace_ids(value, subjects, id_fields, &mut |id_type, num| {
        p.token(agency, id_type, num)
    });
}

/// Replaces every ID number a pseudonym grant replaces by `f(id_type, number)` (Subjects'
/// `id_type` becomes `pseudonym`); also how the pseudonym mapping finds a record's numbers.
pub fn replace_ids(
    value: &mut Value,
    subjects: &[String],
    id_fields: &[String],
    f: &mut dyn FnMut(&str, &str) -> String,
) {
    let Value::Record(fields) = value else {
        return;
    };
    for (name, v) in fields.iter_mut() {
        if subjects.iter().any(|s| s == name) {
            let inner = match v {
                Value::Union(_, inner) => inner.as_mut(),
                other => other,
            };
            if let Value::Record(sub) = inner {
                let id_type = sub
                    .iter()
                    .find(|(n, _)| n == "id_type")
                    .and_then(|(_, v)| match strip_union(v) {
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let mut replaced = false;
                for (n, sv) in sub.iter_mut() {
                    if n == "id_number" {
                        if let Value::Union(_, s) = sv {
                            if let Value::String(num) = s.as_mut() {
                                *num = f(&id_type, num);
                                replaced = true;
                            }
                        }
                    }
                }
                if replaced {
                    for (n, sv) in sub.iter_mut() {
                        if n == "id_type" {
                            *sv =
                                Value::Union(1, Box::new(Value::String(PSEUDONYM_ID_TYPE.into())));
                        }
                    }
                }
            }
        } else if id_fields.iter().any(|f| f == name) {
            let s = match v {
                Value::Union(_, inner) => inner.as_mut(),
                other => other,
            };
            if let Value::String(num) = s {
                *num = f("111", num);
            }
        }
    }
}

/// The ID documents of every person a record names, as (ID type, number): each Subject role
/// with a number, and each top-level citizen ID number field (type `111`). The same places a
/// pseudonym grant replaces ([`replace_ids`]).
pub fn persons<'v>(
    value: &'v Value,
    subjects: &[String],
    id_fields: &[String],
) -> Vec<(&'v str, &'v str)> {
    let mut out = Vec::new();
    let Value::Record(fields) = value else {
        return out;
    };
    for (name, v) in fields {
        if subjects.iter().any(|s| s == name) {
            if let Value::Record(sub) = strip_union(v) {
                let text = |field: &str| {
                    sub.iter()
                        .find(|(n, _)| n == field)
                        .and_then(|(_, v)| match strip_union(v) {
                            Value::String(s) if !s.trim().is_empty() => Some(s.as_str()),
                            _ => None,
                        })
                };
                if let Some(number) = text("id_number") {
                    out.push((text("id_type").unwrap_or_default(), number));
                }
            }
        } else if id_fields.iter().any(|f| f == name) {
            if let Value::String(number) = strip_union(v) {
                if !number.trim().is_empty() {
                    out.push((crate::routing::subjects::RESIDENT_ID, number.as_str()));
                }
            }
        }
    }
    out
}

impl Platform {
    /// Decides what to do with one message, received at `received` (the moment the
    /// department's key must be in force; `today` is its date in Asia/Shanghai). The
    /// department's batch signature is checked for the audience `ingest` through the
    /// routing's cache of verified statements (one signature per department batch).
    pub fn route(
        &self,
        routing: &Routing,
        received: DateTime<Utc>,
        today: NaiveDate,
        routing_key: &str,
        props: &BasicProperties,
        body: &[u8],
    ) -> Outcome {
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let Some((rk_dept, rk_item, shard)) = wire::parse_routing_key(routing_key) else {
            return refused(
                Reason::Malformed,
                format!(
                    "routing key `{routing_key}` is not <department>.<item>.<shard> (shard 0–{})",
                    wire::SHARDS - 1
                ),
            );
        };
        let (Some(dept), Some(item_id), Some(version), Some(op), Some(key_id)) = (
            header_str(h, header::DEPARTMENT),
            header_str(h, header::ITEM),
            header_i64(h, header::VERSION),
            header_str(h, header::OP).and_then(Op::parse),
            header_str(h, header::KEY_ID),
        ) else {
            return refused(Reason::Malformed, "a govbus header is missing or of the wrong type (department, item, version, op, key id)");
        };
        let Some(ingest_id) = props.message_id().as_ref().map(|m| m.as_str()) else {
            return refused(Reason::Malformed, "no message_id");
        };
        let Some(item) = routing.items.get(rk_item) else {
            return refused(
                Reason::UnknownItem,
                format!("item `{rk_item}` is not in the catalogue"),
            );
        };
        // From a linked platform, the department header names the department the record
        // came from there; the routing key names the platform, whose batch it is.
        let from_platform = item
            .source
            .as_ref()
            .filter(|(p, _)| p == rk_dept)
            .map(|(_, writer)| writer);
        if (dept != rk_dept && from_platform.is_none()) || item_id != rk_item {
            return refused(
                Reason::Malformed,
                format!("headers name {dept}.{item_id} but the routing key is {routing_key}"),
            );
        }
        if !item.item.departments.iter().any(|d| d == rk_dept) {
            return refused(
                Reason::WrongDepartment,
                format!("department `{rk_dept}` is not responsible for item `{rk_item}` (responsible: {})", item.item.departments.join(", ")),
            );
        }
        let Some(key) = routing
            .catalogue
            .keys
            .get(rk_dept)
            .and_then(|k| k.get(key_id))
        else {
            return refused(
                Reason::BadSignature,
                format!(
                    "key id `{key_id}` is not a key of department `{rk_dept}` in the catalogue"
                ),
            );
        };
        if let Some(why) = key.not_in_force(received) {
            routing.verifier.forget_key(key_id);
            return refused(
                Reason::KeyNotInForce,
                format!("key `{key_id}` of department `{rk_dept}` {why}"),
            );
        }
        // A department's batch is signed for `ingest`; a linked platform's for this platform.
        let audience = match from_platform {
            Some(_) => routing.catalogue.platform_id.as_str(),
            None => AUDIENCE_INGEST,
        };
        let proof = match seal::verify(&routing.verifier, &key.key, audience, props, body) {
            Ok(p) => p,
            Err(e) => {
                return refused(
                    Reason::BadSignature,
                    format!(
                        "the batch signature does not verify with key `{key_id}` of `{rk_dept}` \
                         for the audience `{audience}`: {e}"
                    ),
                )
            }
        };
        let dept_proof = DeptProof {
            signature: B64.encode(&proof.signature),
            statement: proof.statement,
            leaf: proof.index,
            path: proof.path.concat(),
        };
        // What the body is written in: the record type, or the sending platform's projection.
        let rt = match from_platform {
            Some(writer) => &writer.writer,
            None => &item.record_type,
        };
        let datum = match split_header(body) {
            Ok((fp, datum)) if fp == rt.fingerprint => datum,
            Ok((fp, _)) if from_platform.is_some() => {
                return refused(
                    Reason::UnknownSchema,
                    format!(
                        "fingerprint {fp} is not the projection ({}) of {} to the fields the \
                         catalogue says platform `{rk_dept}` grants of item `{rk_item}`: its grant \
                         to this platform changed; make `[[platform.item]]` fields the same as \
                         that grant's",
                        rt.fingerprint, item.record_type.full_name
                    ),
                );
            }
            Ok((fp, _)) => {
                return refused(
                    Reason::UnknownSchema,
                    format!(
                        "fingerprint {fp} is not {} ({}) of item `{rk_item}`",
                        rt.full_name, rt.fingerprint
                    ),
                );
            }
            Err(e) => return refused(Reason::UnknownSchema, e.to_string()),
        };
        let value = match rt.decode_datum(datum) {
            Ok(v) => v,
            Err(e) => return refused(Reason::Undecodable, e.to_string()),
        };
        if let Some(why) = bus_schemas::validate::unrepresentable(&value) {
            return refused(
                Reason::Undecodable,
                format!(
                    "{why}: no reader can show it; the department's publisher must not write it"
                ),
            );
        }
        let key_values: Vec<&str> = item
            .record_type
            .key
            .iter()
            .map(|k| crate::routing::grants::string_at(&value, k).unwrap_or_default())
            .collect();
        let record_key = wire::record_key_string(&key_values);
        let key_hash = self.ids.record_key_hash(rk_item, &record_key);
        let source_time_ms = header_i64(h, header::SOURCE_TIME_MS);
        let mut deliveries = Vec::new();
        for (g, needs_prior) in item.grants_for(today, &value) {
            match self.delivery(
                g,
                &value,
                &item.subjects,
                &item.id_fields,
                Delivered {
                    item: rk_item,
                    department: rk_dept,
                    key_id,
                    proof: &dept_proof,
                    ingest_id,
                    key_hash: &key_hash,
                    version,
                    op,
                    source_time_ms,
                    chain: i16::from(wire::partition_of(shard, self.partitions)),
                    shard,
                    this_platform: &routing.catalogue.platform_id,
                    to_platform: routing.catalogue.linked_platform(&g.grant.agency).is_some(),
                },
            ) {
                Ok(mut p) => {
                    p.needs_prior = needs_prior;
                    deliveries.push(p);
                }
                Err(e) => return Outcome::Failed(e),
            }
        }
        if deliveries.is_empty() {
            return refused(
                Reason::NoGrant,
                format!("no grant of item `{rk_item}` is in force on {today} for this record"),
            );
        }
        let subjects = persons(&value, &item.subjects, &item.id_fields)
            .iter()
            .map(|&(t, n)| self.subjects.hash(t, n))
            .collect();
        Outcome::Deliver {
            deliveries,
            source_time_ms,
            subjects,
        }
    }

    fn delivery(
        &self,
        g: &CompiledGrant,
        value: &Value,
        subjects: &[String],
        id_fields: &[String],
        d: Delivered<'_>,
    ) -> Result<Planned, String> {
        let agency = g.grant.agency.as_str();
        let projected = match g.grant.identity {
            Identity::Full => match value {
                Value::Record(fields) => g.projection.apply(fields),
                _ => return Err("the decoded body is not a record".into()),
            },
            Identity::Pseudonym => {
                let mut v = value.clone();
                pseudonymise(&mut v, agency, &self.pseudonyms, subjects, id_fields);
                match &v {
                    Value::Record(fields) => g.projection.apply(fields),
                    _ => return Err("the decoded body is not a record".into()),
                }
            }
        };
        let body = g.projection.writer.encode(&projected).map_err(|e| {
            format!(
                "cannot encode the projection for grant `{}`: {e}",
                g.grant.id
            )
        })?;
        let message_id =
            self.ids
                .delivery_message_id(agency, &g.grant.id, g.grant.revision, d.ingest_id);
        let mut h = FieldTable::default();
        h.insert(header::DEPARTMENT.into(), long(d.department));
        h.insert(header::ITEM.into(), long(d.item));
        h.insert(header::VERSION.into(), AMQPValue::LongLongInt(d.version));
        h.insert(header::OP.into(), long(d.op.as_str()));
        if let Some(t) = d.source_time_ms {
            h.insert(header::SOURCE_TIME_MS.into(), AMQPValue::LongLongInt(t));
        }
        h.insert(header::GRANT.into(), long(&g.grant.id));
        h.insert(
            header::GRANT_REVISION.into(),
            AMQPValue::LongLongInt(g.grant.revision),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(wire::AVRO_CONTENT_TYPE))
            .with_message_id(ShortString::from(message_id.as_str()))
            .with_timestamp(now_secs())
            .with_app_id(ShortString::from("govbus-router"))
            .with_headers(h);
        // To a linked platform: its exchange, under `<this platform>.<item>.<shard>`.
        let to = d.to_platform.then(|| Destination {
            exchange: wire::platform_exchange(agency),
            routing_key: wire::routing_key(d.this_platform, d.item, d.shard),
        });
        Ok(Planned {
            entry: Entry {
                agency: agency.to_string(),
                chain: d.chain,
                grant_id: g.grant.id.clone(),
                grant_revision: g.grant.revision,
                item: d.item.to_string(),
                message_id,
                ingest_id: d.ingest_id.to_string(),
                key_hash: d.key_hash.to_string(),
                version: d.version,
                op: d.op.as_str().to_string(),
                fields: g.grant.fields.clone(),
                department: d.department.to_string(),
                dept_key_id: d.key_id.to_string(),
                dept_signature: d.proof.signature.clone(),
                dept_proof: Some(d.proof.clone()),
                source_time_ms: d.source_time_ms,
                replay: None,
                to: to.clone(),
            },
            needs_prior: false,
            message: OutgoingMessage {
                exchange: to
                    .as_ref()
                    .map_or(wire::DELIVER_EXCHANGE.into(), |t| t.exchange.clone()),
                routing_key: to.map_or(agency.to_string(), |t| t.routing_key),
                body,
                properties: props,
            },
        })
    }
}

/// Seals the deliveries of one decided batch: each agency's as one batch for that agency
/// (DESIGN.md: a delivery batch never mixes recipients), in the order they are published.
pub fn seal_deliveries<'a>(
    signer: &wire::Signer,
    planned: impl IntoIterator<Item = &'a mut Planned>,
) -> Result<(), SignError> {
    let mut by_agency: std::collections::BTreeMap<String, Vec<&mut OutgoingMessage>> =
        Default::default();
    for p in planned {
        by_agency
            .entry(p.entry.agency.clone())
            .or_default()
            .push(&mut p.message);
    }
    for (agency, messages) in by_agency {
        seal::seal(signer, &agency, messages)?;
    }
    Ok(())
}

/// What a delivery carries over from the ingest message.
struct Delivered<'a> {
    item: &'a str,
    department: &'a str,
    key_id: &'a str,
    proof: &'a DeptProof,
    ingest_id: &'a str,
    key_hash: &'a str,
    /// The ledger chain: the partition of the record's shard.
    chain: i16,
    version: i64,
    op: Op,
    source_time_ms: Option<i64>,
    /// The record's shard (kept in the routing key a linked platform receives).
    shard: u8,
    /// This platform's id (the first word of that routing key).
    this_platform: &'a str,
    /// Whether the grant's recipient is a linked platform rather than an agency.
    to_platform: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
