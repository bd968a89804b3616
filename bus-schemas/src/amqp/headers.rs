//! Reading the wire contract's headers from an AMQP field table, as every consumer does.
use lapin::types::{AMQPValue, FieldTable};

/// A text header's value.
pub fn header_str<'h>(h: &'h FieldTable, name: &str) -> Option<&'h str> {
    match h.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// An integer header's value (any AMQP integer type, or a timestamp).
pub fn header_i64(h: &FieldTable, name: &str) -> Option<i64> {
    match h.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}
