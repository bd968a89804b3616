//! The natural JSON form of a record, both ways: an optional field is `null` or its value,
//! `date` is `YYYY-MM-DD`, timestamps RFC 3339, enums their symbol, bytes and fixed base64.
//! Errors name the field.
use apache_avro::{types::Value, Schema};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Number, Value as Json};

use crate::{
    dates::{date_from_days, format_iso_date, parse_iso_date, timestamp_from, EPOCH},
    error::JsonError,
    registry::RecordType,
};

fn err(field: &str, problem: impl Into<String>) -> JsonError {
    JsonError {
        field: if field.is_empty() {
            "$".into()
        } else {
            field.into()
        },
        problem: problem.into(),
    }
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl RecordType {
    /// Converts a natural JSON document into an Avro value of this record type.
    pub fn value_from_json(&self, json: &Json) -> Result<Value, JsonError> {
        self.json_value(self.schema, json, &mut String::new())
    }

    /// Converts an Avro value of this record type (or one resolved to it) into natural JSON.
    pub fn value_to_json(&self, value: &Value) -> Result<Json, JsonError> {
        self.to_json(self.schema, value, "")
    }

    /// `path` is one buffer grown and cut back as the conversion descends, so a field costs no
    /// allocation unless it is wrong.
    fn json_value(
        &self,
        schema: &'static Schema,
        j: &Json,
        path: &mut String,
    ) -> Result<Value, JsonError> {
        let schema = self.resolve(schema);
        let mismatch =
            |expected: &str| err(path, format!("expected {expected}, found {}", kind(j)));
        Ok(match schema {
            Schema::Null => match j {
                Json::Null => Value::Null,
                _ => return Err(mismatch("null")),
            },
            Schema::Boolean => {
                Value::Boolean(j.as_bool().ok_or_else(|| mismatch("true or false"))?)
            }
            Schema::Int => {
                let n = j.as_i64().ok_or_else(|| mismatch("a whole number"))?;
                Value::Int(
                    i32::try_from(n)
                        .map_err(|_| err(path, format!("{n} is out of range for a 32-bit int")))?,
                )
            }
            Schema::Long => Value::Long(j.as_i64().ok_or_else(|| mismatch("a whole number"))?),
            Schema::Float => Value::Float(j.as_f64().ok_or_else(|| mismatch("a number"))? as f32),
            Schema::Double => Value::Double(j.as_f64().ok_or_else(|| mismatch("a number"))?),
            Schema::String => {
                Value::String(j.as_str().ok_or_else(|| mismatch("a string"))?.to_string())
            }
            Schema::Bytes => Value::Bytes(self.base64(j, path)?),
            Schema::Fixed(f) => {
                let b = self.base64(j, path)?;
                if b.len() != f.size {
                    return Err(err(
                        path,
                        format!("expected {} bytes, found {}", f.size, b.len()),
                    ));
                }
                Value::Fixed(f.size, b)
            }
            Schema::Uuid(_) => {
                let s = j.as_str().ok_or_else(|| mismatch("a UUID string"))?;
                Value::Uuid(s.parse().map_err(|_| {
                    err(
                        path,
                        "expected a UUID like 123e4567-e89b-12d3-a456-426614174000",
                    )
                })?)
            }
            Schema::Enum(e) => {
                let s = j.as_str().ok_or_else(|| mismatch("an enum symbol"))?;
                let i = e.symbols.iter().position(|x| x == s).ok_or_else(|| {
                    err(
                        path,
                        format!("`{s}` is not one of the symbols {}", e.symbols.join(", ")),
                    )
                })?;
                Value::Enum(i as u32, s.to_string())
            }
            Schema::Date => {
                let s = j.as_str().ok_or_else(|| mismatch("a date YYYY-MM-DD"))?;
                let d = parse_iso_date(s).ok_or_else(|| {
                    err(path, "expected a date YYYY-MM-DD (a real calendar date)")
                })?;
                Value::Date((d - EPOCH).num_days() as i32)
            }
            Schema::TimestampMillis | Schema::TimestampMicros => {
                let s = j
                    .as_str()
                    .ok_or_else(|| mismatch("an RFC 3339 timestamp"))?;
                let t = DateTime::parse_from_rfc3339(s).map_err(|_| {
                    err(
                        path,
                        "expected an RFC 3339 timestamp such as 2016-05-17T09:30:00+08:00",
                    )
                })?;
                if matches!(schema, Schema::TimestampMillis) {
                    Value::TimestampMillis(t.timestamp_millis())
                } else {
                    Value::TimestampMicros(t.timestamp_micros())
                }
            }
            Schema::Array(a) => {
                let items = j.as_array().ok_or_else(|| mismatch("an array"))?;
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, x)| self.json_value(&a.items, x, &mut format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                )
            }
            Schema::Map(m) => {
                let obj = j.as_object().ok_or_else(|| mismatch("an object"))?;
                Value::Map(
                    obj.iter()
                        .map(|(k, x)| {
                            Ok((k.clone(), self.json_value(&m.types, x, &mut join(path, k))?))
                        })
                        .collect::<Result<_, JsonError>>()?,
                )
            }
            Schema::Union(u) => {
                if j.is_null() {
                    if let Some(i) = u.variants().iter().position(|v| matches!(v, Schema::Null)) {
                        return Ok(Value::Union(i as u32, Box::new(Value::Null)));
                    }
                    return Err(err(path, "must not be null"));
                }
                let mut first_err = None;
                for (i, v) in u.variants().iter().enumerate() {
                    if matches!(v, Schema::Null) {
                        continue;
                    }
                    let len = path.len();
                    match self.json_value(v, j, path) {
                        Ok(x) => return Ok(Value::Union(i as u32, Box::new(x))),
                        Err(e) => {
                            // A failed branch may have left its field names on the path.
                            path.truncate(len);
                            first_err.get_or_insert(e);
                        }
                    }
                }
                return Err(first_err.unwrap_or_else(|| err(path, "no branch of the union fits")));
            }
            Schema::Record(r) => {
                let obj = j.as_object().ok_or_else(|| mismatch("an object"))?;
                if let Some(unknown) = obj.keys().find(|k| !r.lookup.contains_key(k.as_str())) {
                    let known: Vec<_> = r.fields.iter().map(|f| f.name.as_str()).collect();
                    return Err(err(
                        &join(path, unknown),
                        format!(
                            "{} has no such field; its fields are {}",
                            r.name.fullname(None),
                            known.join(", ")
                        ),
                    ));
                }
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let len = path.len();
                    if len > 0 {
                        path.push('.');
                    }
                    path.push_str(&f.name);
                    let v = match (obj.get(&f.name), &f.default) {
                        (Some(x), _) => self.json_value(&f.schema, x, path)?,
                        (None, Some(default)) => self.json_value(&f.schema, default, path)?,
                        (None, None) => return Err(err(path, "is required and missing")),
                    };
                    path.truncate(len);
                    fields.push((f.name.clone(), v));
                }
                Value::Record(fields)
            }
            other => {
                return Err(err(
                    path,
                    format!("the schema type {other:?} has no JSON form in govbus"),
                ))
            }
        })
    }

    fn base64(&self, j: &Json, path: &str) -> Result<Vec<u8>, JsonError> {
        let s = j
            .as_str()
            .ok_or_else(|| err(path, format!("expected base64 text, found {}", kind(j))))?;
        B64.decode(s)
            .map_err(|_| err(path, "expected standard base64 (RFC 4648, with padding)"))
    }

    fn to_json(&self, schema: &'static Schema, v: &Value, path: &str) -> Result<Json, JsonError> {
        let schema = self.resolve(schema);
        let bad = || err(path, format!("value {v:?} does not fit schema {schema:?}"));
        Ok(match (schema, v) {
            (_, Value::Null) => Json::Null,
            (Schema::Union(u), Value::Union(i, inner)) => {
                let branch = u.variants().get(*i as usize).ok_or_else(bad)?;
                self.to_json(branch, inner, path)?
            }
            (_, Value::Boolean(b)) => Json::Bool(*b),
            (_, Value::Int(n)) => Json::from(*n),
            (_, Value::Long(n)) => Json::from(*n),
            (_, Value::Float(x)) => Number::from_f64(f64::from(*x))
                .map(Json::Number)
                .ok_or_else(bad)?,
            (_, Value::Double(x)) => Number::from_f64(*x).map(Json::Number).ok_or_else(bad)?,
            (_, Value::String(s)) => Json::String(s.clone()),
            (_, Value::Bytes(b)) | (_, Value::Fixed(_, b)) => Json::String(B64.encode(b)),
            (_, Value::Enum(_, s)) => Json::String(s.clone()),
            (_, Value::Uuid(u)) => Json::String(u.to_string()),
            (_, Value::Date(d)) => {
                Json::String(format_iso_date(date_from_days(*d).ok_or_else(bad)?))
            }
            (_, Value::TimestampMillis(ms)) => Json::String(
                timestamp_from(*ms, false)
                    .ok_or_else(bad)?
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            (_, Value::TimestampMicros(us)) => Json::String(
                timestamp_from(*us, true)
                    .ok_or_else(bad)?
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (Schema::Array(a), Value::Array(items)) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.to_json(&a.items, x, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Map(m), Value::Map(entries)) => {
                let mut keys: Vec<_> = entries.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(
                        k.clone(),
                        self.to_json(&m.types, &entries[k], &join(path, k))?,
                    );
                }
                Json::Object(out)
            }
            (Schema::Record(r), Value::Record(fields)) => {
                let mut out = Map::new();
                for (name, x) in fields {
                    let f = r.lookup.get(name).map(|&i| &r.fields[i]).ok_or_else(bad)?;
                    out.insert(name.clone(), self.to_json(&f.schema, x, &join(path, name))?);
                }
                Json::Object(out)
            }
            _ => return Err(bad()),
        })
    }
}
