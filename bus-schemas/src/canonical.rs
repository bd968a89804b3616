//! Parsing Canonical Form and CRC-64-AVRO fingerprint, computed as the Avro specification and
//! its Java reference implementation (`SchemaNormalization`) do.
//!
//! Why not `apache_avro::Schema::canonical_form`: apache-avro 0.22 (like Python `avro` 1.12)
//! writes a primitive with a logical type as `{"type":"int"}`, where the specification's
//! [PRIMITIVES] rule and Java write `"int"`. Their fingerprints for any schema with a `date`
//! or timestamp field differ from Java's and fastavro's, and agencies' decoders would not
//! find the schema. The cross-language test pins this against fastavro.
use serde_json::Value as Json;

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a (self-contained) schema JSON.
pub fn parsing_canonical_form(schema: &Json) -> Result<String, String> {
    let mut out = String::new();
    let mut defined = Vec::new();
    build(schema, None, &mut defined, &mut out)?;
    Ok(out)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn build(
    s: &Json,
    ns: Option<&str>,
    defined: &mut Vec<String>,
    o: &mut String,
) -> Result<(), String> {
    match s {
        Json::String(name) if PRIMITIVES.contains(&name.as_str()) => o.push_str(&quote(name)),
        Json::String(name) => {
            let full = full_name(name, ns);
            if !defined.contains(&full) {
                return Err(format!(
                    "reference to `{full}`, which the schema does not define before use"
                ));
            }
            o.push_str(&quote(&full));
        }
        Json::Array(branches) => {
            o.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                build(b, ns, defined, o)?;
            }
            o.push(']');
        }
        Json::Object(obj) => {
            let t = obj
                .get("type")
                .ok_or_else(|| "a schema object without `type`".to_string())?;
            let Json::String(t) = t else {
                // {"type": {...}} or {"type": [...]}: the inner schema is the schema.
                return build(t, ns, defined, o);
            };
            match t.as_str() {
                p if PRIMITIVES.contains(&p) => o.push_str(&quote(p)),
                "array" => {
                    o.push_str("{\"type\":\"array\",\"items\":");
                    build(
                        obj.get("items").ok_or("array without `items`")?,
                        ns,
                        defined,
                        o,
                    )?;
                    o.push('}');
                }
                "map" => {
                    o.push_str("{\"type\":\"map\",\"values\":");
                    build(
                        obj.get("values").ok_or("map without `values`")?,
                        ns,
                        defined,
                        o,
                    )?;
                    o.push('}');
                }
                kind @ ("record" | "error" | "enum" | "fixed") => {
                    let name = obj
                        .get("name")
                        .and_then(Json::as_str)
                        .ok_or("named type without `name`")?;
                    let own_ns = if name.contains('.') {
                        name.rsplit_once('.').map(|(n, _)| n.to_string())
                    } else {
                        obj.get("namespace")
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or_else(|| ns.map(str::to_string))
                    };
                    let full = full_name(name, own_ns.as_deref());
                    if defined.contains(&full) {
                        o.push_str(&quote(&full));
                        return Ok(());
                    }
                    defined.push(full.clone());
                    let kind = if kind == "error" { "record" } else { kind };
                    o.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        quote(&full),
                        quote(kind)
                    ));
                    match kind {
                        "enum" => {
                            let symbols = obj
                                .get("symbols")
                                .and_then(Json::as_array)
                                .ok_or("enum without `symbols`")?;
                            let symbols: Vec<String> = symbols
                                .iter()
                                .map(|x| quote(x.as_str().unwrap_or_default()))
                                .collect();
                            o.push_str(&format!(",\"symbols\":[{}]", symbols.join(",")));
                        }
                        "fixed" => {
                            let size = obj
                                .get("size")
                                .and_then(Json::as_u64)
                                .ok_or("fixed without `size`")?;
                            o.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            o.push_str(",\"fields\":[");
                            let fields = obj
                                .get("fields")
                                .and_then(Json::as_array)
                                .ok_or("record without `fields`")?;
                            for (i, f) in fields.iter().enumerate() {
                                if i > 0 {
                                    o.push(',');
                                }
                                let fname = f
                                    .get("name")
                                    .and_then(Json::as_str)
                                    .ok_or("field without `name`")?;
                                o.push_str(&format!("{{\"name\":{},\"type\":", quote(fname)));
                                build(
                                    f.get("type").ok_or("field without `type`")?,
                                    own_ns.as_deref(),
                                    defined,
                                    o,
                                )?;
                                o.push('}');
                            }
                            o.push(']');
                        }
                    }
                    o.push('}');
                }
                other => return Err(format!("unknown type `{other}`")),
            }
        }
        other => return Err(format!("not a schema: {other}")),
    }
    Ok(())
}

const EMPTY64: u64 = 0xc15d_213a_a4d7_a795;

fn table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY64 & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    })
}

/// CRC-64-AVRO (the Avro specification's 64-bit Rabin fingerprint) of bytes, as 8 bytes in
/// wire order (little-endian), as Java's `SchemaNormalization.fingerprint("CRC-64-AVRO", …)`.
pub fn crc64_avro(data: &[u8]) -> [u8; 8] {
    let t = table();
    let mut fp = EMPTY64;
    for &b in data {
        fp = (fp >> 8) ^ t[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{rabin::Rabin, Schema};
    use serde_json::json;

    /// Logical types are stripped to their primitive name, as the specification and Java do.
    #[test]
    fn logical_types_become_primitive_names() {
        let s = json!({"type": "record", "name": "R", "namespace": "a.b", "doc": "x",
            "fields": [{"name": "d", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
                       {"name": "n", "type": {"type": "record", "name": "N", "fields": [{"name": "x", "type": "string"}]}},
                       {"name": "m", "type": "N"}]});
        assert_eq!(
            parsing_canonical_form(&s).unwrap(),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"d","type":["null","int"]},{"name":"n","type":{"name":"a.b.N","type":"record","fields":[{"name":"x","type":"string"}]}},{"name":"m","type":"a.b.N"}]}"#
        );
    }

    /// Without logical types, the fingerprint equals apache-avro's Rabin fingerprint.
    #[test]
    fn crc64_matches_apache_avro_where_forms_agree() {
        let s = json!({"type": "record", "name": "gov.T", "fields": [
            {"name": "a", "type": ["null", "string"], "default": null},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}},
            {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}},
            {"name": "l", "type": {"type": "array", "items": {"type": "map", "values": "long"}}}]});
        let parsed = Schema::parse(&s).unwrap();
        assert_eq!(parsing_canonical_form(&s).unwrap(), parsed.canonical_form());
        let theirs = parsed.fingerprint::<Rabin>().bytes;
        assert_eq!(
            crc64_avro(parsing_canonical_form(&s).unwrap().as_bytes()).to_vec(),
            theirs
        );
    }

    /// The specification's fingerprint of the schema `"int"`, in wire order.
    #[test]
    fn known_fingerprint_of_int() {
        // Java: SchemaNormalization.parsingFingerprint64(Schema.create(INT)) = 0x7275d51a3f395c8f
        assert_eq!(
            crc64_avro(b"\"int\""),
            0x7275_d51a_3f39_5c8f_u64.to_le_bytes()
        );
    }
}
