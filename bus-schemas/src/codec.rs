//! Avro single-object encoding: `C3 01`, the 8-byte CRC-64-AVRO fingerprint of the writer
//! schema (little-endian), then the datum. Any Avro library finds the schema by fingerprint.
use std::sync::Arc;

use apache_avro::{reader::datum::GenericDatumReader, types::Value};
use serde_json::Value as Json;

use crate::{
    error::CodecError,
    registry::{Fingerprint, RecordType, Registry},
};

/// The two marker bytes that open every single-object encoded body.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header: marker and fingerprint.
pub const HEADER_LEN: usize = 10;

/// Splits a single-object body into the writer schema's fingerprint and the datum.
pub fn split_header(body: &[u8]) -> Result<(Fingerprint, &[u8]), CodecError> {
    if body.len() < HEADER_LEN {
        return Err(CodecError::Truncated(body.len()));
    }
    if body[..2] != MAGIC {
        return Err(CodecError::BadMagic(body[0], body[1]));
    }
    let fp = Fingerprint(body[2..HEADER_LEN].try_into().expect("8 bytes"));
    Ok((fp, &body[HEADER_LEN..]))
}

/// A reader over a datum that remembers whether anything tried to read past its end.
///
/// apache-avro 0.22 turns an unexpected end of input into `Null` for strings, booleans and
/// union indexes, so a truncated datum "decodes" with fields silently missing. A well-formed
/// datum never reads past its end, so any such attempt marks the body as truncated.
struct EofGuard<'a> {
    rest: &'a [u8],
    overran: bool,
}

impl std::io::Read for EofGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.overran = true;
        }
        self.rest.read(buf)
    }
}

fn read_guarded(
    datum: &[u8],
    schema: &str,
    read: impl FnOnce(&mut EofGuard<'_>) -> apache_avro::AvroResult<Value>,
) -> Result<Value, CodecError> {
    let mut guard = EofGuard {
        rest: datum,
        overran: false,
    };
    let result = read(&mut guard);
    if guard.overran {
        return Err(CodecError::Datum {
            schema: schema.to_string(),
            reason: format!(
                "the datum is truncated ({} bytes is too short)",
                datum.len()
            ),
        });
    }
    let value = result.map_err(|e| CodecError::Datum {
        schema: schema.to_string(),
        reason: e.to_string(),
    })?;
    if !guard.rest.is_empty() {
        return Err(CodecError::TrailingBytes {
            schema: schema.to_string(),
            extra: guard.rest.len(),
        });
    }
    Ok(value)
}

impl RecordType {
    /// Encodes a value of this type as a single-object body.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint.0);
        self.writer
            .write_value_ref(&mut out, value)
            .map_err(|e| CodecError::Encode {
                schema: self.full_name.clone(),
                reason: e.to_string(),
            })?;
        Ok(out)
    }

    /// Encodes a natural JSON document as a single-object body.
    pub fn encode_json(&self, json: &Json) -> Result<Vec<u8>, CodecError> {
        self.encode(&self.value_from_json(json)?)
    }

    /// Decodes a datum (the bytes after the header) written with this schema.
    pub fn decode_datum(&self, datum: &[u8]) -> Result<Value, CodecError> {
        read_guarded(datum, &self.full_name, |r| self.reader.read_value(r))
    }

    /// Decodes a datum written with this (writer) schema, resolved to `reader`'s schema by
    /// Avro schema resolution: how an agency reads a projected record with the full schema.
    pub fn decode_datum_as(&self, reader: &RecordType, datum: &[u8]) -> Result<Value, CodecError> {
        let name = format!("{} read as {}", self.full_name, reader.full_name);
        let resolving = GenericDatumReader::builder(self.schema)
            .reader_schema(reader.schema)
            .build()
            .map_err(|e| CodecError::Datum {
                schema: name.clone(),
                reason: e.to_string(),
            })?;
        read_guarded(datum, &name, |r| resolving.read_value(r))
    }
}

impl Registry {
    /// Decodes a single-object body, finding the writer schema by its fingerprint.
    pub fn decode(&self, body: &[u8]) -> Result<(&Arc<RecordType>, Value), CodecError> {
        let (fp, datum) = split_header(body)?;
        let rt = self
            .by_fingerprint(&fp)
            .ok_or_else(|| CodecError::UnknownFingerprint(fp.to_string()))?;
        Ok((rt, rt.decode_datum(datum)?))
    }

    /// Decodes a single-object body to natural JSON.
    pub fn decode_to_json(&self, body: &[u8]) -> Result<(&Arc<RecordType>, Json), CodecError> {
        let (rt, value) = self.decode(body)?;
        Ok((rt, rt.value_to_json(&value)?))
    }
}
