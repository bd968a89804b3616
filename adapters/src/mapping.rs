//! Source row → schema record: column or constant per field, with the conversions real exports
//! need (date formats, code tables, trimming, empty → null), the version, and deletes.
use std::{collections::HashSet, sync::atomic::AtomicUsize};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::{
    apache_avro::types::Value,
    validate::{codes, lookup},
    wire::{self, Op},
    FieldKind, RecordType,
};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::{
    source::record::Row,
    times::{parse_date, parse_time_ms},
};

/// The `[mapping]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Column holding the record's version: a sequence (integer) or a modification time. When
    /// unset, the version is the time the adapter first read the row, in milliseconds.
    #[serde(default)]
    pub version_column: Option<String>,
    /// Column holding when the source changed the record (the latency clock); when unset, the
    /// version column if it is a time, else the time the row was read.
    #[serde(default)]
    pub source_time_column: Option<String>,
    /// Which rows are deletes (tombstones), where the source marks them.
    #[serde(default)]
    pub delete: Option<DeleteRule>,
    /// One `[[mapping.field]]` per schema field that the source fills.
    #[serde(rename = "field")]
    pub fields: Vec<FieldMapping>,
}

/// Rows whose `column` holds one of `values` are deletes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRule {
    /// The column that marks deletes.
    pub column: String,
    /// Values of that column that mean "deleted" (compared after trimming).
    pub values: Vec<String>,
}

fn yes() -> bool {
    true
}

/// How one schema field is filled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Schema field, dotted for nested fields (`subject.id_number`).
    pub target: String,
    /// Source column it comes from.
    #[serde(default)]
    pub column: Option<String>,
    /// A constant instead of a column (`value = "111"` for an ID type).
    #[serde(default)]
    pub value: Option<String>,
    /// Code table mapping names to codes: `sex`, `ethnicity`, `marital_status`,
    /// `id_document_type`, `household_status`, `household_cancellation_reason`
    /// (Simplified and Traditional names; codes pass through).
    #[serde(default)]
    pub code_table: Option<String>,
    /// Trim surrounding white space (default true).
    #[serde(default = "yes")]
    pub trim: bool,
    /// Treat an empty value as null (default true).
    #[serde(default = "yes")]
    pub empty_is_null: bool,
}

/// A row that could not be mapped, naming the field and the reason (never the value).
#[derive(Debug, Clone, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct MapError {
    /// The rule broken: a validator rule id (`gb11643-check-digit`) or `mapping`.
    pub rule: &'static str,
    /// The schema field (or source column) concerned.
    pub field: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// A mapped record, ready to encode.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The record as an Avro value of the record type.
    pub value: Value,
    /// The record key as one string (see `wire::record_key_string`).
    pub key: String,
    /// The record version (monotone per record).
    pub version: i64,
    /// Upsert or delete.
    pub op: Op,
    /// When the source changed the record, ms since the epoch.
    pub source_time_ms: i64,
}

/// Outcome of mapping one row.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Valid: publish it.
    Record(Box<Mapped>),
    /// Invalid: quarantine it with the reason and the first field at fault.
    Invalid {
        rule: &'static str,
        field: String,
        reason: String,
    },
}

fn table(name: &str) -> Option<&'static codes::CodeTable> {
    Some(match name {
        "sex" => &codes::SEX,
        "ethnicity" => &codes::ETHNICITY,
        "marital_status" => &codes::MARITAL_STATUS,
        "id_document_type" => &codes::ID_DOCUMENT_TYPE,
        "household_status" => &codes::HOUSEHOLD_STATUS,
        "household_cancellation_reason" => &codes::HOUSEHOLD_CANCELLATION_REASON,
        _ => return None,
    })
}

struct Field {
    cfg: FieldMapping,
    /// `cfg.target` split at the dots, once.
    path: Vec<String>,
    kind: FieldKind,
    table: Option<&'static codes::CodeTable>,
    /// Where its column was in the last row (see [`Row::get_hinted`]).
    hint: AtomicUsize,
}

/// A mapping checked against its record type, built once and used for every row.
pub struct Mapper {
    rt: std::sync::Arc<RecordType>,
    fields: Vec<Field>,
    cfg: MappingConfig,
    /// Nullable record-typed top-level fields (Subject roles) that become null when all their
    /// mapped leaves are null.
    nullable_parents: Vec<String>,
    /// Where the delete, version and source time columns were in the last row.
    hints: [AtomicUsize; 3],
}

impl Mapper {
    /// Checks the mapping against the record type: every target a field, the record key
    /// and every required field mapped, code tables known. Reports every problem at once.
    pub fn new(rt: std::sync::Arc<RecordType>, cfg: MappingConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let leaves = rt.leaf_paths();
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        for f in &cfg.fields {
            if !seen.insert(f.target.clone()) {
                problems.push(format!("mapping: `{}` is mapped twice", f.target));
            }
            let Some(kind) = rt
                .field_kind(&f.target)
                .filter(|_| leaves.contains(&f.target))
            else {
                problems.push(format!(
                    "mapping: `{}` is not a field of {}; its fields are: {}",
                    f.target,
                    rt.full_name,
                    leaves.join(", ")
                ));
                continue;
            };
            match (&f.column, &f.value) {
                (Some(_), Some(_)) => problems.push(format!(
                    "mapping `{}`: give `column` or `value`, not both",
                    f.target
                )),
                (None, None) => problems.push(format!(
                    "mapping `{}`: give a `column` or a constant `value`",
                    f.target
                )),
                _ => {}
            }
            let table = match &f.code_table {
                Some(name) => match table(name) {
                    Some(t) => Some(t),
                    None => {
                        problems.push(format!(
                            "mapping `{}`: unknown code_table `{name}`; known: sex, ethnicity, marital_status, id_document_type, household_status, household_cancellation_reason",
                            f.target
                        ));
                        None
                    }
                },
                None => None,
            };
            let path = f.target.split('.').map(str::to_string).collect();
            fields.push(Field {
                cfg: f.clone(),
                path,
                kind,
                table,
                hint: AtomicUsize::new(0),
            });
        }
        for key in &rt.key {
            if !seen.contains(key) {
                problems.push(format!(
                    "mapping: the record key field `{key}` of {} is not mapped",
                    rt.full_name
                ));
            }
        }
        for leaf in &leaves {
            let top = leaf.split('.').next().unwrap_or(leaf);
            let required = rt.field_nullable(leaf) == Some(false)
                && (top == leaf || rt.field_nullable(top) == Some(false));
            if required && !seen.contains(leaf) && !rt.key.contains(leaf) {
                problems.push(format!(
                    "mapping: the required field `{leaf}` is not mapped"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let nullable_parents = rt
            .field_names()
            .into_iter()
            .filter(|f| {
                rt.field_kind(f) == Some(FieldKind::Record) && rt.field_nullable(f) == Some(true)
            })
            .map(str::to_string)
            .collect();
        Ok(Mapper {
            rt,
            fields,
            cfg,
            nullable_parents,
            hints: Default::default(),
        })
    }

    /// The record type.
    pub fn record_type(&self) -> &std::sync::Arc<RecordType> {
        &self.rt
    }

    /// The source column a quarantined row's field came from: the column mapped to that schema
    /// field, or the field itself when it names a column (the version column, say).
    pub fn column_of<'a>(&'a self, field: &'a str) -> &'a str {
        self.fields
            .iter()
            .find(|f| f.cfg.target == field)
            .and_then(|f| f.cfg.column.as_deref())
            .unwrap_or(field)
    }

    /// Source columns the mapping reads (for header checks).
    pub fn columns(&self) -> Vec<&str> {
        let mut cols: Vec<&str> = self
            .fields
            .iter()
            .filter_map(|f| f.cfg.column.as_deref())
            .collect();
        cols.extend(self.cfg.version_column.as_deref());
        cols.extend(self.cfg.source_time_column.as_deref());
        cols.extend(self.cfg.delete.as_ref().map(|d| d.column.as_str()));
        cols
    }

    /// Whether the mapping has a version column (else the caller supplies the read time).
    pub fn has_version_column(&self) -> bool {
        self.cfg.version_column.is_some()
    }

    /// Maps and validates one row. `fallback_version` is used when there is no version column.
    pub fn map(&self, row: &Row, fallback_version: i64, now_ms: i64) -> Outcome {
        match self.try_map(row, fallback_version, now_ms) {
            Ok(m) => Outcome::Record(Box::new(m)),
            Err(e) => Outcome::Invalid {
                rule: e.rule,
                field: e.field,
                reason: e.reason,
            },
        }
    }

    fn column<'r>(
        &self,
        row: &'r Row,
        column: &str,
        hint: &AtomicUsize,
    ) -> Result<&'r Json, MapError> {
        row.get_hinted(column, hint).ok_or_else(|| MapError {
            rule: "mapping",
            field: column.to_string(),
            reason: format!(
                "the source row has no column `{column}`; fix the export or the mapping"
            ),
        })
    }

    fn try_map(&self, row: &Row, fallback_version: i64, now_ms: i64) -> Result<Mapped, MapError> {
        let op = match &self.cfg.delete {
            Some(rule) => {
                let v = self.column(row, &rule.column, &self.hints[0])?;
                let v = json_text(v);
                if rule.values.iter().any(|d| d.trim() == v.trim()) {
                    Op::Delete
                } else {
                    Op::Upsert
                }
            }
            None => Op::Upsert,
        };
        let mut doc = Map::new();
        for f in &self.fields {
            let constant;
            let raw = match (&f.cfg.value, &f.cfg.column) {
                (Some(v), _) => {
                    constant = Json::String(v.clone());
                    &constant
                }
                (None, Some(c)) => self.column(row, c, &f.hint)?,
                (None, None) => &Json::Null,
            };
            let v = convert(f, raw)?;
            set_path(&mut doc, &f.path, v);
        }
        for parent in &self.nullable_parents {
            if let Some(Json::Object(o)) = doc.get(parent) {
                if o.values().all(Json::is_null) {
                    doc.insert(parent.clone(), Json::Null);
                }
            }
        }
        let value = self
            .rt
            .value_from_json(&Json::Object(doc))
            .map_err(|e| MapError {
                rule: "mapping",
                field: e.field,
                reason: e.problem,
            })?;
        let version = match &self.cfg.version_column {
            Some(c) => {
                parse_time_ms(self.column(row, c, &self.hints[1])?).ok_or_else(|| MapError {
                    rule: "mapping",
                    field: c.clone(),
                    reason: "the version column holds neither an integer nor a date-time".into(),
                })?
            }
            None => fallback_version,
        };
        let source_time_ms = match &self.cfg.source_time_column {
            Some(c) => {
                parse_time_ms(self.column(row, c, &self.hints[2])?).ok_or_else(|| MapError {
                    rule: "mapping",
                    field: c.clone(),
                    reason: "the source time column holds no date-time".into(),
                })?
            }
            None => {
                let version_is_time =
                    self.cfg.version_column.is_some() && version > 946_684_800_000;
                if version_is_time {
                    version
                } else {
                    now_ms
                }
            }
        };
        let mut value = value;
        let report = self.rt.validate(&value);
        if let Some(first) = report.violations.first() {
            let reason = report
                .violations
                .iter()
                .map(|v| format!("{} ({}): {}", v.field, v.rule, v.message))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(MapError {
                rule: first.rule,
                field: first.field.clone(),
                reason,
            });
        }
        let key_values: Vec<String> = self
            .rt
            .key
            .iter()
            .map(|k| match lookup(&value, k) {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            })
            .collect();
        let key_refs: Vec<&str> = key_values.iter().map(String::as_str).collect();
        let key = wire::record_key_string(&key_refs);
        if op == Op::Delete {
            value = self.tombstone(&value)?;
        }
        Ok(Mapped {
            value,
            key,
            version,
            op,
            source_time_ms,
        })
    }

    /// A delete carries only the key: every other field null.
    fn tombstone(&self, full: &Value) -> Result<Value, MapError> {
        let mut doc = Map::new();
        for k in &self.rt.key {
            if let Some(Value::String(s)) = lookup(full, k) {
                let path: Vec<String> = k.split('.').map(str::to_string).collect();
                set_path(&mut doc, &path, Json::String(s.clone()));
            }
        }
        self.rt
            .value_from_json(&Json::Object(doc))
            .map_err(|e| MapError {
                rule: "mapping",
                field: e.field,
                reason: e.problem,
            })
    }
}

fn json_text(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn convert(f: &Field, raw: &Json) -> Result<Json, MapError> {
    let err = |reason: String| MapError {
        rule: "mapping",
        field: f.cfg.target.clone(),
        reason,
    };
    let text = match raw {
        Json::Null => return Ok(Json::Null),
        Json::String(s) => {
            let s = if f.cfg.trim {
                s.trim().to_string()
            } else {
                s.clone()
            };
            if s.is_empty() && f.cfg.empty_is_null {
                return Ok(Json::Null);
            }
            s
        }
        other => other.to_string(),
    };
    Ok(match f.kind {
        FieldKind::String => {
            let s = match f.table {
                Some(t) => t.code_for(&text).map_or(text, str::to_string),
                None => text,
            };
            Json::String(s)
        }
        FieldKind::Integer => Json::from(
            text.parse::<i64>()
                .map_err(|_| err("expected a whole number".into()))?,
        ),
        FieldKind::Number => Json::from(
            text.parse::<f64>()
                .map_err(|_| err("expected a number".into()))?,
        ),
        FieldKind::Boolean => Json::Bool(match text.as_str() {
            "true" | "1" | "是" | "Y" | "y" => true,
            "false" | "0" | "否" | "N" | "n" => false,
            _ => return Err(err("expected true/false, 1/0 or 是/否".into())),
        }),
        FieldKind::Date => {
            let d = parse_date(&text).ok_or_else(|| {
                err("expected a date like 2016-05-17, 20160517, 2016/5/17 or 2016年5月17日".into())
            })?;
            Json::String(bus_schemas::dates::format_iso_date(d))
        }
        FieldKind::Timestamp => {
            let ms = parse_time_ms(&Json::String(text)).ok_or_else(|| {
                err(
                    "expected a date-time like 2016-05-17 09:30:00 (Asia/Shanghai) or RFC 3339"
                        .into(),
                )
            })?;
            let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| err("date-time out of range".into()))?;
            Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        FieldKind::Bytes => {
            B64.decode(&text)
                .map_err(|_| err("expected base64".into()))?;
            Json::String(text)
        }
        FieldKind::Record | FieldKind::Other => {
            return Err(err("this field cannot be mapped from one column".into()))
        }
    })
}

fn set_path(doc: &mut Map<String, Json>, path: &[String], v: Json) {
    match path {
        [] => {}
        [last] => {
            doc.insert(last.clone(), v);
        }
        [head, rest @ ..] => {
            let entry = doc
                .entry(head.clone())
                .or_insert_with(|| Json::Object(Map::new()));
            if !entry.is_object() {
                *entry = Json::Object(Map::new());
            }
            if let Json::Object(inner) = entry {
                set_path(inner, rest, v);
            }
        }
    }
}
