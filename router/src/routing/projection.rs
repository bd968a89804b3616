//! Field-level projection: a record reduced to the fields a grant names.
//!
//! The projected writer schema is the record schema with only the granted fields (nested
//! records keep only their granted fields). It keeps the record's full name and every kept
//! field's type, so an agency can read a projected body with the full record schema as reader:
//! every field left out is `["null", T]` with default null, and Avro schema resolution fills it.
//!
//! A named type used by several fields (a `Subject` per role) has one definition, so the
//! projected `Subject` holds the union of the sub-fields granted for any role; a sub-field
//! granted for one role only is null in the others.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bus_schemas::{apache_avro::types::Value, RecordType};
use serde_json::{Map, Value as Json};

/// How to project one record type for one set of granted fields.
#[derive(Debug)]
pub struct Projection {
    /// The projected writer schema.
    pub writer: Arc<RecordType>,
    /// Top-level fields kept, in schema order, each with the nested fields granted for it
    /// (`None`: the whole field).
    kept: Vec<(String, Option<Nested>)>,
}

#[derive(Debug)]
struct Nested {
    /// Sub-fields of the projected definition, in its order, each whether granted here.
    fields: Vec<(String, bool)>,
}

/// Why a projection could not be built (a catalogue the check should have refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot project {record} to [{fields}]: {reason}")]
pub struct ProjectionError {
    record: String,
    fields: String,
    reason: String,
}

/// The non-null branch of a `["null", T]` union type, or the type itself.
fn non_null(t: &Json) -> &Json {
    match t {
        Json::Array(branches) => branches
            .iter()
            .find(|b| b.as_str() != Some("null"))
            .unwrap_or(t),
        _ => t,
    }
}

/// Full name of a record definition.
fn full_name(def: &Json) -> Option<String> {
    let name = def.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_string());
    }
    Some(match def.get("namespace").and_then(Json::as_str) {
        Some(ns) => format!("{ns}.{name}"),
        None => name.to_string(),
    })
}

/// Replaces the non-null branch of a field type.
fn with_non_null(t: &Json, new: Json) -> Json {
    match t {
        Json::Array(branches) => Json::Array(
            branches
                .iter()
                .map(|b| {
                    if b.as_str() == Some("null") {
                        b.clone()
                    } else {
                        new.clone()
                    }
                })
                .collect(),
        ),
        _ => new,
    }
}

impl Projection {
    /// Builds the projection of `rt` to `granted` (field names, nested ones dotted).
    pub fn new(rt: &RecordType, granted: &[String]) -> Result<Self, ProjectionError> {
        let err = |reason: String| ProjectionError {
            record: rt.full_name.clone(),
            fields: granted.join(", "),
            reason,
        };
        let fields = rt.json["fields"]
            .as_array()
            .ok_or_else(|| err("the schema has no fields".into()))?;
        // Named record definitions anywhere in the schema (inlined at first use).
        let mut defs: HashMap<String, Json> = HashMap::new();
        for f in fields {
            let t = non_null(&f["type"]);
            if t.get("type").and_then(Json::as_str) == Some("record") {
                if let Some(n) = full_name(t) {
                    defs.insert(n, t.clone());
                }
            }
        }
        // Which top-level fields are kept, and which sub-fields are granted per field.
        let mut whole: HashSet<&str> = HashSet::new();
        let mut partial: HashMap<&str, HashSet<&str>> = HashMap::new();
        for g in granted {
            match g.split_once('.') {
                None => {
                    whole.insert(g);
                }
                Some((top, sub)) => {
                    partial.entry(top).or_default().insert(sub);
                }
            }
        }
        // Type name of each record-valued field.
        let record_type_of = |f: &Json| -> Option<String> {
            match non_null(&f["type"]) {
                Json::String(s) if defs.contains_key(s) => Some(s.clone()),
                t @ Json::Object(_) if t.get("type").and_then(Json::as_str) == Some("record") => {
                    full_name(t)
                }
                _ => None,
            }
        };
        // Union of granted sub-fields per named type (whole field = every sub-field).
        let mut union: HashMap<String, HashSet<String>> = HashMap::new();
        for f in fields {
            let name = f["name"].as_str().unwrap_or_default();
            let Some(tn) = record_type_of(f) else {
                continue;
            };
            let entry = union.entry(tn.clone()).or_default();
            if whole.contains(name) {
                for sf in defs[&tn]["fields"].as_array().into_iter().flatten() {
                    entry.insert(sf["name"].as_str().unwrap_or_default().to_string());
                }
            } else if let Some(subs) = partial.get(name) {
                entry.extend(subs.iter().map(|s| s.to_string()));
            }
        }
        let mut out_fields = Vec::new();
        let mut kept = Vec::new();
        let mut defined: HashSet<String> = HashSet::new();
        for f in fields {
            let name = f["name"].as_str().unwrap_or_default();
            if !whole.contains(name) && !partial.contains_key(name) {
                continue;
            }
            let mut field = f.clone();
            let nested = match record_type_of(f) {
                None => {
                    if partial.contains_key(name) {
                        return Err(err(format!("`{name}` is not a record")));
                    }
                    None
                }
                Some(tn) => {
                    let def = &defs[&tn];
                    let keep = &union[&tn];
                    let sub_defs: Vec<Json> = def["fields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|sf| keep.contains(sf["name"].as_str().unwrap_or_default()))
                        .cloned()
                        .collect();
                    let granted_here = |sf: &str| {
                        whole.contains(name) || partial.get(name).is_some_and(|s| s.contains(sf))
                    };
                    let nested = Nested {
                        fields: sub_defs
                            .iter()
                            .map(|sf| {
                                let n = sf["name"].as_str().unwrap_or_default();
                                (n.to_string(), granted_here(n))
                            })
                            .collect(),
                    };
                    let new_type = if defined.insert(tn.clone()) {
                        let mut d: Map<String, Json> = def.as_object().cloned().unwrap_or_default();
                        d.insert("fields".into(), Json::Array(sub_defs));
                        Json::Object(d)
                    } else {
                        Json::String(tn.clone())
                    };
                    field["type"] = with_non_null(&f["type"], new_type);
                    Some(nested)
                }
            };
            out_fields.push(field);
            kept.push((name.to_string(), nested));
        }
        let mut schema = rt.json.clone();
        schema["fields"] = Json::Array(out_fields);
        let writer =
            RecordType::from_self_contained(schema, &format!("projection of {}", rt.full_name))
                .map_err(|e| err(e.to_string()))?;
        Ok(Projection {
            writer: Arc::new(writer),
            kept,
        })
    }

    /// Projects a decoded full record (fields in the full schema's order).
    pub fn apply(&self, full: &[(String, Value)]) -> Value {
        let mut out = Vec::with_capacity(self.kept.len());
        for (name, nested) in &self.kept {
            let v = full
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .cloned()
                .unwrap_or(Value::Union(0, Box::new(Value::Null)));
            let v = match nested {
                None => v,
                Some(n) => project_nested(v, n),
            };
            out.push((name.clone(), v));
        }
        Value::Record(out)
    }
}

fn project_nested(v: Value, n: &Nested) -> Value {
    match v {
        Value::Union(i, inner) => Value::Union(i, Box::new(project_nested(*inner, n))),
        Value::Record(subs) => Value::Record(
            n.fields
                .iter()
                .map(|(name, granted)| {
                    let value = if *granted {
                        subs.iter().find(|(s, _)| s == name).map(|(_, v)| v.clone())
                    } else {
                        None
                    };
                    (
                        name.clone(),
                        value.unwrap_or(Value::Union(0, Box::new(Value::Null))),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schemas::Registry;
    use serde_json::json;

    fn enterprise() -> Arc<RecordType> {
        Registry::standard()
            .get("gov.gz.commerce.EnterpriseRegistration")
            .unwrap()
            .clone()
    }

    /// Only granted fields are written; the full schema reads the projection back with the
    /// rest null.
    #[test]
    fn project_and_read_with_full_schema() {
        let rt = enterprise();
        let doc = json!({
            "unified_social_credit_code": "91440101MA59ABCD1X",
            "name": "广州某某有限公司",
            "legal_representative": {"name": "张三", "id_type": "111", "id_number": "440106198001010019"},
            "division_code": "440106",
            "registered_address": "天河路1号",
        });
        let value = rt.value_from_json(&doc).unwrap();
        let Value::Record(fields) = value else {
            panic!()
        };
        let p = Projection::new(
            &rt,
            &[
                "unified_social_credit_code".into(),
                "legal_representative.id_number".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            p.writer.field_names(),
            ["unified_social_credit_code", "legal_representative"]
        );
        assert_eq!(
            p.writer.leaf_paths(),
            [
                "unified_social_credit_code",
                "legal_representative.id_number"
            ]
        );
        let body = p.writer.encode(&p.apply(&fields)).unwrap();
        let (_, datum) = bus_schemas::split_header(&body).unwrap();
        let back = p.writer.decode_datum_as(&rt, datum).unwrap();
        let json = rt.value_to_json(&back).unwrap();
        assert_eq!(json["unified_social_credit_code"], "91440101MA59ABCD1X");
        assert_eq!(
            json["legal_representative"]["id_number"],
            "440106198001010019"
        );
        assert_eq!(json["legal_representative"]["name"], Json::Null);
        assert_eq!(json["name"], Json::Null);
        assert_eq!(json["registered_address"], Json::Null);
        assert_ne!(p.writer.fingerprint, rt.fingerprint);
    }

    /// Two roles of one named type share one definition: a sub-field granted for one role is
    /// null in the other.
    #[test]
    fn roles_share_one_definition() {
        let rt = Registry::standard()
            .get("gov.gz.civil.MarriageRegistration")
            .unwrap()
            .clone();
        let roles = rt.subject_fields();
        assert!(roles.len() >= 2, "{roles:?}");
        let mut granted: Vec<String> = rt.key.clone();
        granted.push(format!("{}.name", roles[0]));
        granted.push(format!("{}.id_number", roles[1]));
        let p = Projection::new(&rt, &granted).unwrap();
        let mut doc = json!({});
        for k in &rt.key {
            doc[k] = json!("K1");
        }
        for r in &roles {
            doc[*r] = json!({"name": "某", "id_type": "111", "id_number": "440106198001010019"});
        }
        let full = rt.value_from_json(&fill_required(&rt, doc)).unwrap();
        let Value::Record(fields) = full else {
            panic!()
        };
        let out = p.writer.value_to_json(&p.apply(&fields)).unwrap();
        assert_eq!(out[roles[0]]["name"], "某");
        assert_eq!(out[roles[0]]["id_number"], Json::Null);
        assert_eq!(out[roles[1]]["name"], Json::Null);
        assert_eq!(out[roles[1]]["id_number"], "440106198001010019");
        assert!(out[roles[0]].get("id_type").is_none());
    }

    /// Non-nullable fields get a placeholder so the full document encodes.
    fn fill_required(rt: &RecordType, mut doc: Json) -> Json {
        for f in rt.field_names() {
            if doc.get(f).is_none() && rt.field_nullable(f) == Some(false) {
                doc[f] = json!("X");
            }
        }
        doc
    }
}
