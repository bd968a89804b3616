//! Typed errors of the data standard. None of them is retryable: each one means the input
//! (a schema file, a JSON document, a message body) has to be corrected.
use thiserror::Error;

/// What went wrong, naming the schema, field or byte offset concerned.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// A schema file is not valid JSON or not a valid Avro schema.
    #[error("schema {file}: {reason}")]
    InvalidSchema { file: String, reason: String },
    /// A type refers to a named type that no schema file defines.
    #[error(
        "schema {file}: refers to unknown type `{name}`; add its .avsc to bus-schemas/schemas"
    )]
    UnknownReference { file: String, name: String },
    /// Two files define the same full name.
    #[error("schema {name} is defined twice ({first} and {second})")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    /// No record type has that name.
    #[error("unknown record type `{0}`; `govbus schemas list` shows the known ones")]
    UnknownType(String),
    /// The short name matches several record types.
    #[error("record type `{name}` is ambiguous: {candidates}; give the full name")]
    AmbiguousType { name: String, candidates: String },
}

/// A JSON document does not fit the record type.
#[derive(Debug, Error)]
#[error("field `{field}`: {problem}")]
pub struct JsonError {
    /// Dotted path of the field, `$` for the whole record.
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

/// A message body could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Fewer bytes than the 10-byte single-object header.
    #[error("body is {0} bytes, shorter than the 10-byte Avro single-object header")]
    Truncated(usize),
    /// The body does not start with the single-object marker C3 01.
    #[error(
        "body does not start with the Avro single-object marker C3 01 (found {0:02x} {1:02x})"
    )]
    BadMagic(u8, u8),
    /// The fingerprint names no schema this registry knows.
    #[error(
        "no schema with fingerprint {0}; the writer used a schema this platform does not know"
    )]
    UnknownFingerprint(String),
    /// The datum does not decode with the writer schema.
    #[error("{schema}: datum does not decode: {reason}")]
    Datum { schema: String, reason: String },
    /// Bytes were left after the datum.
    #[error("{schema}: {0} bytes left after the datum", .extra)]
    TrailingBytes { schema: String, extra: usize },
    /// A value does not fit the schema it is written with.
    #[error("{schema}: value does not fit the schema: {reason}")]
    Encode { schema: String, reason: String },
    /// The JSON form does not fit the schema.
    #[error(transparent)]
    Json(#[from] JsonError),
}
