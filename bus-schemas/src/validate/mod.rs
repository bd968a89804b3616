//! Data-element validators. [`validate`] checks a whole record and returns *every* violation
//! with its field, never only the first. Messages describe the value's shape ("18 digits"),
//! never the value itself, so a report can be logged without personal data.
use apache_avro::{types::Value, Schema};
use chrono::{FixedOffset, NaiveDate, Utc};

use crate::registry::RecordType;

pub mod citizen_id;
pub mod codes;
pub mod credit_code;
pub mod division;
pub mod element;

pub use element::{Element, Fault};

/// One violation of a data-element standard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field (`subject.id_number`).
    pub field: String,
    /// The value's shape ("18 characters", "empty"), never the value.
    pub class: String,
    /// Rule id, e.g. `gb11643-check-digit`.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Something worth reporting that is not a violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Dotted path of the field.
    pub field: String,
    /// What was noticed.
    pub message: String,
}

/// The outcome of validating one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violation, in field order.
    pub violations: Vec<Violation>,
    /// Accepted but noteworthy values (a legacy 15-digit ID number).
    pub notices: Vec<Notice>,
}

impl Report {
    /// True when there is no violation.
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Longest text a field of the standard holds, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Rules for every text field: no control characters (which break databases and logs
/// downstream; tab and line breaks are allowed), a bounded length, and no name that a
/// spreadsheet would run as a formula.
fn text_rules(path: &str, text: &str, report: &mut Report) {
    let mut push = |rule: &'static str, message: String| {
        report.violations.push(Violation {
            field: path.to_string(),
            class: value_class(text),
            rule,
            message,
        })
    };
    if text
        .chars()
        .any(|c| (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{feff}')
    {
        push(
            "text-no-control",
            "holds a control character (such as NUL) or a byte-order mark; remove it in the source"
                .into(),
        );
    }
    // A UTF-8 character is at least one byte: count characters only where bytes could exceed.
    let n = if text.len() > MAX_TEXT_CHARS {
        text.chars().count()
    } else {
        0
    };
    if n > MAX_TEXT_CHARS {
        push(
            "text-length",
            format!("is {n} characters; a text field holds at most {MAX_TEXT_CHARS}"),
        );
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    if (last == "name" || last.ends_with("_name"))
        && text.trim_start().starts_with(['=', '+', '-', '@'])
    {
        push(
            "name-not-formula",
            "begins with =, +, - or @: no name does, and spreadsheets would run it as a formula"
                .into(),
        );
    }
}

/// Today's date in Asia/Shanghai (UTC+8 all year: China has no daylight saving time).
pub fn today_in_shanghai() -> NaiveDate {
    let offset = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    Utc::now().with_timezone(&offset).date_naive()
}

/// The shape of a value, safe to print: length and character classes, not the characters.
pub fn value_class(s: &str) -> String {
    let n = s.chars().count();
    let chars = if n == 1 { "character" } else { "characters" };
    if n == 0 {
        "empty".into()
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{n} digits")
    } else if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{n} letters and digits")
    } else if s.is_ascii() {
        format!("{n} ASCII {chars}")
    } else {
        format!("{n} {chars}, not all ASCII")
    }
}

/// The first value of a decoded record that no reader can show as JSON or a date: a date or a
/// timestamp outside years 0–9999, a NaN or infinite number. A
/// datum can hold them (any 32- or 64-bit count, any IEEE bits) though no adapter writes them;
/// the router refuses such a record rather than deliver what agencies cannot read.
pub fn unrepresentable(value: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut String) -> Option<String> {
        let bad = |path: &str, what: &str| Some(format!("field `{path}` holds {what}"));
        match v {
            Value::Union(_, inner) => walk(inner, path),
            Value::Record(fields) => fields.iter().find_map(|(name, x)| {
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(name);
                let r = walk(x, path);
                path.truncate(len);
                r
            }),
            Value::Array(items) => items.iter().find_map(|x| walk(x, path)),
            Value::Map(m) => m.values().find_map(|x| walk(x, path)),
            Value::Date(d) if crate::dates::date_from_days(*d).is_none() => {
                bad(path, "a date outside years 0000–9999")
            }
            Value::TimestampMillis(ms) if crate::dates::timestamp_from(*ms, false).is_none() => {
                bad(path, "a timestamp outside years 0000–9999")
            }
            Value::TimestampMicros(us) if crate::dates::timestamp_from(*us, true).is_none() => {
                bad(path, "a timestamp outside years 0000–9999")
            }
            Value::Float(x) if !x.is_finite() => bad(path, "NaN or an infinite number"),
            Value::Double(x) if !x.is_finite() => bad(path, "NaN or an infinite number"),
            _ => None,
        }
    }
    walk(value, &mut String::new())
}

impl RecordType {
    /// Validates a record against the data-element standards, with "today" in Asia/Shanghai.
    pub fn validate(&self, value: &Value) -> Report {
        self.validate_on(value, today_in_shanghai())
    }

    /// Validates a record with a given "today" (for reproducible tests).
    pub fn validate_on(&self, value: &Value, today: NaiveDate) -> Report {
        let mut report = Report::default();
        for key in &self.key {
            match lookup(value, key) {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(Value::String(_)) | Some(Value::Null) | None => {
                    report.violations.push(Violation {
                        field: key.clone(),
                        class: "empty".into(),
                        rule: "record-key",
                        message: "is part of the record key and must be present and not empty"
                            .into(),
                    })
                }
                Some(_) => {}
            }
        }
        for (path, element) in &self.elements {
            let Some(Value::String(s)) = lookup(value, path) else {
                continue;
            };
            let fault = match element {
                Element::CitizenIdNumber => self.citizen_id(path, s, today, &mut report),
                Element::IdDocumentNumber => {
                    let sibling = match path.rsplit_once('.') {
                        Some((parent, _)) => format!("{parent}.id_type"),
                        None => "id_type".into(),
                    };
                    match lookup(value, &sibling) {
                        Some(Value::String(t)) if t == codes::RESIDENT_ID_CARD => {
                            self.citizen_id(path, s, today, &mut report)
                        }
                        Some(Value::String(_)) if s.trim().is_empty() => {
                            Some(Fault::new("id-number-empty", "an ID number must not be empty"))
                        }
                        Some(Value::String(_)) => None,
                        _ => Some(Fault::new(
                            "subject-id-type-required",
                            format!("an ID number needs its ID document type in `{sibling}` (article 19)"),
                        )),
                    }
                }
                Element::CreditCode => credit_code::check(s).err(),
                Element::DivisionCode => division::check(s).err(),
                Element::TaxpayerId => (!(15..=20).contains(&s.len())
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
                .then(|| {
                    Fault::new(
                        "taxpayer-id-shape",
                        "a taxpayer identification number is 15 to 20 digits and capital letters",
                    )
                }),
                coded => {
                    let table = coded.code_table().expect("coded element has a table");
                    (!table.contains(s)).then(|| {
                        let hint = table
                            .code_for(s)
                            .map(|c| format!("; the name given maps to code {c}, send the code"))
                            .unwrap_or_default();
                        Fault::new(
                            "code-table",
                            format!(
                                "is not a code of {} ({}); allowed: {}{hint}",
                                table.standard,
                                table.id,
                                table.codes()
                            ),
                        )
                    })
                }
            };
            if let Some(f) = fault {
                report.violations.push(Violation {
                    field: path.clone(),
                    class: value_class(s),
                    rule: f.rule,
                    message: f.message,
                });
            }
        }
        self.walk_dates(self.schema, value, &mut String::new(), today, &mut report);
        report
            .violations
            .sort_by_key(|v| self.field_position(&v.field));
        report
    }

    fn citizen_id(
        &self,
        path: &str,
        s: &str,
        today: NaiveDate,
        report: &mut Report,
    ) -> Option<Fault> {
        match citizen_id::check(s, today) {
            Ok(citizen_id::CitizenId::Legacy15) => {
                report.notices.push(Notice {
                    field: path.to_string(),
                    message: "legacy 15-digit citizen ID number (accepted; the holder has an 18-digit number since 1999)".into(),
                });
                None
            }
            Ok(_) => None,
            Err(f) => Some(f),
        }
    }

    /// Dates must be in years 0–9999 and, like timestamps, not in the future; numbers must be
    /// finite; text follows `text_rules`. `path` is
    /// one buffer grown and cut back as the walk descends (no allocation per field).
    fn walk_dates(
        &self,
        schema: &'static Schema,
        v: &Value,
        path: &mut String,
        today: NaiveDate,
        report: &mut Report,
    ) {
        let schema = self.resolve(schema);
        match (schema, v) {
            (Schema::Union(u), Value::Union(i, inner)) => {
                if let Some(branch) = u.variants().get(*i as usize) {
                    self.walk_dates(branch, inner, path, today, report);
                }
            }
            (Schema::Record(r), Value::Record(fields)) => {
                for (name, x) in fields {
                    if let Some(&i) = r.lookup.get(name) {
                        let len = path.len();
                        if len > 0 {
                            path.push('.');
                        }
                        path.push_str(name);
                        self.walk_dates(&r.fields[i].schema, x, path, today, report);
                        path.truncate(len);
                    }
                }
            }
            (_, Value::Date(days)) => {
                let Some(d) = crate::dates::date_from_days(*days) else {
                    report.violations.push(Violation {
                        field: path.to_string(),
                        class: "date".into(),
                        rule: "date-range",
                        message: "is not a date of years 0000–9999 (YYYY-MM-DD)".into(),
                    });
                    return;
                };
                if d > today {
                    report.violations.push(Violation {
                        field: path.to_string(),
                        class: "date".into(),
                        rule: "date-not-future",
                        message: format!("is after today ({today}, Asia/Shanghai); a recorded event cannot be in the future"),
                    });
                }
            }
            (_, Value::TimestampMillis(ms)) => {
                let offset = FixedOffset::east_opt(8 * 3600).expect("valid offset");
                let Some(d) = crate::dates::timestamp_from(*ms, false)
                    .map(|t| t.with_timezone(&offset).date_naive())
                else {
                    report.violations.push(Violation {
                        field: path.to_string(),
                        class: "timestamp".into(),
                        rule: "date-range",
                        message: "is not a time of years 0000–9999".into(),
                    });
                    return;
                };
                let d = Some(d);
                if d.is_none_or(|d| d > today) {
                    report.violations.push(Violation {
                        field: path.to_string(),
                        class: "timestamp".into(),
                        rule: "date-not-future",
                        message: format!("is after today ({today}, Asia/Shanghai); a recorded event cannot be in the future"),
                    });
                }
            }
            (_, Value::String(text)) => text_rules(path, text, report),
            (_, Value::Float(_) | Value::Double(_))
                if !matches!(v, Value::Float(x) if x.is_finite())
                    && !matches!(v, Value::Double(x) if x.is_finite()) =>
            {
                report.violations.push(Violation {
                    field: path.to_string(),
                    class: "number".into(),
                    rule: "number-finite",
                    message: "is NaN or infinite; give a number".into(),
                });
            }
            _ => {}
        }
    }

    fn field_position(&self, path: &str) -> usize {
        let top = path.split('.').next().unwrap_or(path);
        self.field_names()
            .iter()
            .position(|f| *f == top)
            .unwrap_or(usize::MAX)
    }
}

/// The value at a dotted path, through nullable unions; `None` where a parent is null.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = unwrap_union(value);
    for part in path.split('.') {
        let Value::Record(fields) = current else {
            return None;
        };
        current = unwrap_union(&fields.iter().find(|(n, _)| n == part)?.1);
    }
    Some(current)
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}
