//! The messages an adapter publishes, exactly as the wire contract says: a batch-signed record to
//! `govbus.ingest`, or a quarantined row to `govbus.quarantine`. No personal data goes into
//! the routing key, properties or headers.
use bus_schemas::{
    amqp::OutgoingMessage,
    wire::{self, header, Signer},
    CodecError, RecordType,
};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

use crate::mapping::Mapped;

/// Who publishes: the department, its item, and its secrets.
pub struct Publisher {
    /// Department id.
    pub department: String,
    /// Item id.
    pub item: String,
    /// Ed25519 signer.
    pub signer: Signer,
    /// Department id secret, keyed once, for message ids.
    pub id_key: wire::IdKey,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Publisher {
    /// The record message for a mapped row, unsealed: the rows prepared together are sealed
    /// as one batch by [`Publisher::seal`].
    pub fn record(&self, rt: &RecordType, m: &Mapped) -> Result<OutgoingMessage, CodecError> {
        let body = rt.encode(&m.value)?;
        let id = self.id_key.ingest_message_id(&self.item, &m.key, m.version);
        let shard = self.id_key.shard(&self.item, &m.key);
        let mut h = FieldTable::default();
        h.insert(header::DEPARTMENT.into(), long(&self.department));
        h.insert(header::ITEM.into(), long(&self.item));
        h.insert(header::VERSION.into(), AMQPValue::LongLongInt(m.version));
        h.insert(header::OP.into(), long(m.op.as_str()));
        h.insert(
            header::SOURCE_TIME_MS.into(),
            AMQPValue::LongLongInt(m.source_time_ms),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(wire::AVRO_CONTENT_TYPE))
            .with_message_id(ShortString::from(id.as_str()))
            .with_timestamp(now_secs())
            .with_app_id(ShortString::from("govbus-adapter"))
            .with_headers(h);
        Ok(OutgoingMessage {
            exchange: wire::INGEST_EXCHANGE.into(),
            routing_key: wire::routing_key(&self.department, &self.item, shard),
            body,
            properties: props,
        })
    }

    /// Seals record messages prepared together as one batch for the audience `ingest` (more
    /// than 1,024 make consecutive batches).
    pub fn seal<'a>(
        &self,
        records: impl IntoIterator<Item = &'a mut OutgoingMessage>,
    ) -> Result<(), bus_schemas::batch::SignError> {
        bus_schemas::amqp::seal::seal(&self.signer, bus_schemas::batch::AUDIENCE_INGEST, records)
    }

    /// A keyed reference to a record key, safe for logs.
    pub fn key_ref(&self, m: &Mapped) -> String {
        self.id_key.record_key_ref(&self.item, &m.key)
    }

    /// The quarantine message for a row that failed mapping or validation: the source row as
    /// JSON, with the reason, the field and where the row is.
    pub fn quarantine(
        &self,
        row: &crate::source::Row,
        field: &str,
        reason: &str,
        label: &str,
    ) -> OutgoingMessage {
        let mut h = FieldTable::default();
        h.insert(header::DEPARTMENT.into(), long(&self.department));
        h.insert(header::ITEM.into(), long(&self.item));
        h.insert(header::REASON.into(), long(reason));
        h.insert(header::FIELD.into(), long(field));
        h.insert(header::SOURCE_POSITION.into(), long(label));
        let id = self
            .id_key
            .ingest_message_id(&self.item, &format!("quarantine\n{label}"), 0);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(wire::JSON_CONTENT_TYPE))
            .with_message_id(ShortString::from(id.as_str()))
            .with_timestamp(now_secs())
            .with_app_id(ShortString::from("govbus-adapter"))
            .with_headers(h);
        OutgoingMessage {
            exchange: wire::QUARANTINE_EXCHANGE.into(),
            routing_key: wire::quarantine_key(&self.department, &self.item),
            body: serde_json::to_vec(row).expect("a row serialises"),
            properties: props,
        }
    }

    /// The count message of a quarantined row: no body, no header but the department and
    /// item, routing key `<department>.<item>.count` (only `govbus.quarantine.counts` takes it).
    /// Its message id derives from the row's, so a resent count is recognisably the same.
    pub fn quarantine_count(&self, row_message: &OutgoingMessage) -> OutgoingMessage {
        let mut h = FieldTable::default();
        h.insert(header::DEPARTMENT.into(), long(&self.department));
        h.insert(header::ITEM.into(), long(&self.item));
        let row_id = row_message
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let id =
            self.id_key
                .ingest_message_id(&self.item, &format!("quarantine count\n{row_id}"), 0);
        OutgoingMessage {
            exchange: wire::QUARANTINE_EXCHANGE.into(),
            routing_key: wire::quarantine_count_key(&self.department, &self.item),
            body: Vec::new(),
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(id.as_str()))
                .with_timestamp(now_secs())
                .with_app_id(ShortString::from("govbus-adapter"))
                .with_headers(h),
        }
    }
}

/// Whether a message is a record or a quarantined row (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signed record to the ingest exchange.
    Record,
    /// A row to the quarantine exchange.
    Quarantine,
    /// The bodiless count message that follows a quarantined row (the router counts these,
    /// never the row).
    QuarantineCount,
}
