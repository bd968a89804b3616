//! The registry of record types: every embedded `.avsc`, made self-contained, parsed once,
//! fingerprinted, with its Avro reader and writer built once and reused.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, OnceLock},
};

use apache_avro::{reader::datum::GenericDatumReader, writer::datum::GenericDatumWriter, Schema};
use serde_json::{Map, Value as Json};

use crate::{canonical, error::SchemaError, validate::element::Element};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Full name of the shared natural-person record (article 19).
pub const SUBJECT: &str = "gov.gz.common.Subject";
/// Custom schema attribute naming a record's key fields (dotted paths).
pub const KEY_ATTRIBUTE: &str = "govbus.key";
/// Custom field attribute naming the data-element standard a field follows.
pub const ELEMENT_ATTRIBUTE: &str = "govbus.element";
/// Custom schema attribute naming the article of the rules a record type implements.
pub const ARTICLE_ATTRIBUTE: &str = "govbus.article";

/// CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, in wire order
/// (little-endian), as it stands in a single-object header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 8]);

impl Fingerprint {
    /// Fingerprint of a self-contained schema JSON: CRC-64-AVRO of its Parsing Canonical
    /// Form as the Java reference implementation computes it (see [`crate::canonical`]).
    pub fn of_json(schema: &Json) -> Result<Self, String> {
        let pcf = canonical::parsing_canonical_form(schema)?;
        Ok(Fingerprint(canonical::crc64_avro(pcf.as_bytes())))
    }

    /// Parses the lowercase (or uppercase) hex form printed by `schemas list`.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 16 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The kind of value a field holds, as far as mapping source data is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text (also enums and UUIDs).
    String,
    /// `int` or `long`.
    Integer,
    /// `float` or `double`.
    Number,
    /// `boolean`.
    Boolean,
    /// `bytes` or `fixed` (base64 in JSON).
    Bytes,
    /// `date` (`YYYY-MM-DD` in JSON).
    Date,
    /// `timestamp-millis`/`-micros` (RFC 3339 in JSON).
    Timestamp,
    /// A nested record.
    Record,
    /// Anything else (arrays, maps, general unions).
    Other,
}

/// One record type: its self-contained schema (JSON with docs, and parsed), fingerprint,
/// key, data elements, and the Avro reader and writer built for it.
pub struct RecordType {
    /// Full name, e.g. `gov.gz.police.HouseholdRegistration`.
    pub full_name: String,
    /// The self-contained schema JSON (named types from other files inlined at first use),
    /// with `doc` and `govbus.*` attributes: what `schemas export` writes.
    pub json: Json,
    /// The parsed schema. Registered schemas live as long as the process.
    pub schema: &'static Schema,
    /// Fingerprint of [`Self::schema`].
    pub fingerprint: Fingerprint,
    /// Record key: one field or a composite of named fields (dotted paths).
    pub key: Vec<String>,
    /// Fields that follow a data-element standard, as (dotted path, element).
    pub elements: Vec<(String, Element)>,
    /// Article of the rules, where the schema names one.
    pub article: Option<u32>,
    pub(crate) names: HashMap<String, &'static Schema>,
    pub(crate) writer: GenericDatumWriter<'static>,
    pub(crate) reader: GenericDatumReader<'static>,
}

impl fmt::Debug for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordType")
            .field("full_name", &self.full_name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl RecordType {
    /// Builds a record type from a self-contained schema JSON (no reference to a type it
    /// does not define itself). `source` names where it came from, for errors.
    ///
    /// The parsed schema is leaked on purpose: a record type is built once per schema and
    /// used for the life of the process, and its reader and writer borrow it.
    pub fn from_self_contained(json: Json, source: &str) -> Result<Self, SchemaError> {
        let invalid = |reason: String| SchemaError::InvalidSchema {
            file: source.to_string(),
            reason,
        };
        let schema = Schema::parse(&json).map_err(|e| invalid(e.to_string()))?;
        let Schema::Record(record) = &schema else {
            return Err(invalid("a record type must be an Avro record".into()));
        };
        let full_name = record.name.fullname(None);
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let fingerprint = Fingerprint::of_json(&json).map_err(&invalid)?;
        let mut names = HashMap::new();
        collect_names(schema, &mut names);
        let key = match json.get(KEY_ATTRIBUTE) {
            None => Vec::new(),
            Some(Json::Array(items)) => items
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(format!("`{KEY_ATTRIBUTE}` must be a list of field paths"))
                })?,
            Some(_) => {
                return Err(invalid(format!(
                    "`{KEY_ATTRIBUTE}` must be a list of field paths"
                )))
            }
        };
        let mut elements = Vec::new();
        collect_elements(&json, "", &mut HashMap::new(), &mut elements).map_err(invalid)?;
        let article = json
            .get(ARTICLE_ATTRIBUTE)
            .and_then(Json::as_u64)
            .map(|a| a as u32);
        let writer = GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let reader = GenericDatumReader::builder(schema)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let this = RecordType {
            full_name,
            json,
            schema,
            fingerprint,
            key,
            elements,
            article,
            names,
            writer,
            reader,
        };
        for k in &this.key {
            if this.field_schema(k).is_none() {
                return Err(invalid(format!(
                    "key field `{k}` is not a field of the record"
                )));
            }
        }
        Ok(this)
    }

    /// Number of top-level fields.
    pub fn field_count(&self) -> usize {
        match self.schema {
            Schema::Record(r) => r.fields.len(),
            _ => 0,
        }
    }

    /// Top-level field names, in schema order.
    pub fn field_names(&self) -> Vec<&str> {
        match self.schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The kind of value a field (dotted path) holds, through nullable unions.
    pub fn field_kind(&self, path: &str) -> Option<FieldKind> {
        let schema = self.deref_nullable(self.field_schema(path)?);
        Some(match schema {
            Schema::String | Schema::Uuid(_) | Schema::Enum(_) => FieldKind::String,
            Schema::Int | Schema::Long => FieldKind::Integer,
            Schema::Float | Schema::Double => FieldKind::Number,
            Schema::Boolean => FieldKind::Boolean,
            Schema::Bytes | Schema::Fixed(_) => FieldKind::Bytes,
            Schema::Date => FieldKind::Date,
            Schema::TimestampMillis | Schema::TimestampMicros => FieldKind::Timestamp,
            Schema::Record(_) => FieldKind::Record,
            _ => FieldKind::Other,
        })
    }

    /// Whether a field (dotted path) may be null.
    pub fn field_nullable(&self, path: &str) -> Option<bool> {
        let schema = self.resolve(self.field_schema(path)?);
        Some(
            matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null))),
        )
    }

    /// Every scalar field as a dotted path (descending into records), in schema order.
    pub fn leaf_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_leaves(self.schema, "", &mut out);
        out
    }

    fn collect_leaves(&self, schema: &'static Schema, prefix: &str, out: &mut Vec<String>) {
        if let Schema::Record(r) = self.deref_nullable(schema) {
            for f in &r.fields {
                let p = if prefix.is_empty() {
                    f.name.clone()
                } else {
                    format!("{prefix}.{}", f.name)
                };
                if matches!(self.deref_nullable(&f.schema), Schema::Record(_)) {
                    self.collect_leaves(&f.schema, &p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }

    /// Top-level fields holding a `gov.gz.common.Subject` (one per role: `subject`, `mother`, …).
    pub fn subject_fields(&self) -> Vec<&str> {
        self.field_names()
            .into_iter()
            .filter(|f| {
                self.field_schema(f).is_some_and(|s| {
                    matches!(self.deref_nullable(s), Schema::Record(r) if r.name.fullname(None) == SUBJECT)
                })
            })
            .collect()
    }

    /// Short name (`HouseholdRegistration`).
    pub fn short_name(&self) -> &str {
        self.full_name.rsplit('.').next().unwrap_or(&self.full_name)
    }

    /// The schema of a field by dotted path (`subject.id_number`), through nullable unions
    /// and references; `None` when there is no such field.
    pub fn field_schema(&self, path: &str) -> Option<&'static Schema> {
        let mut current: &'static Schema = self.schema;
        for part in path.split('.') {
            let record = match self.deref_nullable(current) {
                Schema::Record(r) => r,
                _ => return None,
            };
            current = &record.fields.get(*record.lookup.get(part)?)?.schema;
        }
        Some(current)
    }

    /// Follows a reference to its definition, and a `["null", T]` union to `T`.
    pub(crate) fn deref_nullable(&self, schema: &'static Schema) -> &'static Schema {
        let schema = self.resolve(schema);
        if let Schema::Union(u) = schema {
            let non_null: Vec<_> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            if non_null.len() == 1 {
                return self.resolve(non_null[0]);
            }
        }
        schema
    }

    /// Follows a reference to the named type it names.
    pub(crate) fn resolve(&self, schema: &'static Schema) -> &'static Schema {
        match schema {
            Schema::Ref { name } => self
                .names
                .get(&name.fullname(None))
                .copied()
                .unwrap_or(schema),
            other => other,
        }
    }
}

fn collect_names(schema: &'static Schema, names: &mut HashMap<String, &'static Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema);
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

/// Walks a self-contained schema JSON and lists the fields carrying `govbus.element`,
/// descending into nested records (also where a later field refers to one by name).
fn collect_elements(
    json: &Json,
    prefix: &str,
    records: &mut HashMap<String, Json>,
    out: &mut Vec<(String, Element)>,
) -> Result<(), String> {
    let Some(fields) = json.get("fields").and_then(Json::as_array) else {
        return Ok(());
    };
    let namespace = namespace_of(json, None);
    if let Some(name) = json.get("name").and_then(Json::as_str) {
        records.insert(qualify(name, namespace.as_deref()), json.clone());
    }
    for field in fields {
        let name = field.get("name").and_then(Json::as_str).unwrap_or_default();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(e) = field.get(ELEMENT_ATTRIBUTE) {
            let e = e.as_str().unwrap_or_default();
            let element = Element::from_name(e)
                .ok_or_else(|| format!("field `{path}`: unknown {ELEMENT_ATTRIBUTE} `{e}`"))?;
            out.push((path.clone(), element));
        }
        let mut types = vec![field.get("type").cloned().unwrap_or(Json::Null)];
        if let Some(Json::Array(branches)) = types.first().cloned() {
            types = branches;
        }
        for t in types {
            match &t {
                Json::Object(_) if t.get("type").and_then(Json::as_str) == Some("record") => {
                    collect_elements(&t, &path, records, out)?;
                }
                Json::String(n) => {
                    if let Some(def) = records.get(&qualify(n, namespace.as_deref())).cloned() {
                        collect_elements(&def, &path, records, out)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn namespace_of(json: &Json, enclosing: Option<&str>) -> Option<String> {
    let name = json.get("name").and_then(Json::as_str);
    if let Some(n) = name {
        if let Some((ns, _)) = n.rsplit_once('.') {
            return Some(ns.to_string());
        }
    }
    json.get("namespace")
        .and_then(Json::as_str)
        .map(str::to_string)
        .or_else(|| enclosing.map(str::to_string))
}

fn qualify(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// Inlines, at its first use, every named type that `json` refers to but does not define,
/// taking definitions from `library` (full name → definition). Later uses stay references.
/// This is the self-contained form whose Parsing Canonical Form is fingerprinted.
pub fn make_self_contained(
    json: &Json,
    library: &HashMap<String, Json>,
    source: &str,
) -> Result<Json, SchemaError> {
    let mut defined = HashSet::new();
    inline(json, None, library, &mut defined, source)
}

fn inline(
    json: &Json,
    enclosing: Option<&str>,
    library: &HashMap<String, Json>,
    defined: &mut HashSet<String>,
    source: &str,
) -> Result<Json, SchemaError> {
    match json {
        Json::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
            let full = qualify(name, enclosing);
            if defined.contains(&full) {
                return Ok(Json::String(full));
            }
            let def = library
                .get(&full)
                .ok_or_else(|| SchemaError::UnknownReference {
                    file: source.to_string(),
                    name: full.clone(),
                })?;
            inline(def, enclosing, library, defined, source)
        }
        Json::Array(branches) => Ok(Json::Array(
            branches
                .iter()
                .map(|b| inline(b, enclosing, library, defined, source))
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(obj) => {
            let kind = obj.get("type").and_then(Json::as_str).unwrap_or_default();
            let named = matches!(kind, "record" | "error" | "enum" | "fixed");
            let namespace = if named {
                namespace_of(json, enclosing)
            } else {
                enclosing.map(str::to_string)
            };
            let mut out = Map::new();
            if named {
                let name = obj.get("name").and_then(Json::as_str).unwrap_or_default();
                let full = qualify(name, namespace.as_deref());
                defined.insert(full.clone());
                // Qualify the name fully: an inlined type must keep its own namespace
                // wherever it lands.
                for (k, v) in obj {
                    match k.as_str() {
                        "name" => {
                            out.insert(k.clone(), Json::String(full.clone()));
                        }
                        "namespace" => {}
                        "fields" => {
                            let fields = v.as_array().cloned().unwrap_or_default();
                            let mut new_fields = Vec::with_capacity(fields.len());
                            for f in fields {
                                let mut f = f.as_object().cloned().unwrap_or_default();
                                if let Some(t) = f.get("type").cloned() {
                                    f.insert(
                                        "type".into(),
                                        inline(&t, namespace.as_deref(), library, defined, source)?,
                                    );
                                }
                                new_fields.push(Json::Object(f));
                            }
                            out.insert(k.clone(), Json::Array(new_fields));
                        }
                        _ => {
                            out.insert(k.clone(), v.clone());
                        }
                    }
                }
                return Ok(Json::Object(out));
            }
            for (k, v) in obj {
                let v = match k.as_str() {
                    "items" | "values" => {
                        inline(v, namespace.as_deref(), library, defined, source)?
                    }
                    "type" if v.is_object() || v.is_array() => {
                        inline(v, namespace.as_deref(), library, defined, source)?
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            Ok(Json::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// All record types of the standard, and the shared named types they use.
pub struct Registry {
    types: Vec<Arc<RecordType>>,
    by_name: HashMap<String, usize>,
    by_fingerprint: HashMap<Fingerprint, usize>,
    shared: Vec<(String, Json)>,
}

impl Registry {
    /// The standard: every schema embedded from `bus-schemas/schemas`, built once.
    ///
    /// # Panics
    /// When an embedded schema is invalid; the crate's own tests catch that before release.
    pub fn standard() -> &'static Registry {
        static STANDARD: OnceLock<Registry> = OnceLock::new();
        STANDARD.get_or_init(|| {
            Registry::from_files(embedded::EMBEDDED.iter().map(|(f, s)| (*f, *s)))
                .unwrap_or_else(|e| panic!("embedded bus-schemas are invalid: {e}"))
        })
    }

    /// Builds a registry from `(file name, contents)` pairs. A file whose top-level record
    /// has a `govbus.key` attribute is a record type; the others are shared named types
    /// (like `gov.gz.common.Subject`) that record types use.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Registry, SchemaError> {
        let mut library: HashMap<String, Json> = HashMap::new();
        let mut origin: HashMap<String, String> = HashMap::new();
        let mut order = Vec::new();
        for (file, text) in files {
            let json: Json =
                serde_json::from_str(text).map_err(|e| SchemaError::InvalidSchema {
                    file: file.to_string(),
                    reason: format!("not valid JSON: {e}"),
                })?;
            let name = json.get("name").and_then(Json::as_str).unwrap_or_default();
            let full = qualify(name, namespace_of(&json, None).as_deref());
            if full.is_empty() {
                return Err(SchemaError::InvalidSchema {
                    file: file.to_string(),
                    reason: "top-level schema must be a named type".into(),
                });
            }
            if let Some(first) = origin.insert(full.clone(), file.to_string()) {
                return Err(SchemaError::Duplicate {
                    name: full,
                    first,
                    second: file.to_string(),
                });
            }
            library.insert(full.clone(), json.clone());
            order.push((full, file.to_string(), json));
        }
        let mut reg = Registry {
            types: Vec::new(),
            by_name: HashMap::new(),
            by_fingerprint: HashMap::new(),
            shared: Vec::new(),
        };
        for (full, file, json) in order {
            let contained = make_self_contained(&json, &library, &file)?;
            if json.get(KEY_ATTRIBUTE).is_none() {
                reg.shared.push((full, contained));
                continue;
            }
            let rt = RecordType::from_self_contained(contained, &file)?;
            reg.types.push(Arc::new(rt));
        }
        reg.types.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        reg.by_name = reg
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.full_name.clone(), i))
            .collect();
        reg.by_fingerprint = reg
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.fingerprint, i))
            .collect();
        Ok(reg)
    }

    /// Every record type, sorted by full name.
    pub fn types(&self) -> &[Arc<RecordType>] {
        &self.types
    }

    /// Shared named types (full name, self-contained JSON), such as `gov.gz.common.Subject`.
    pub fn shared_types(&self) -> &[(String, Json)] {
        &self.shared
    }

    /// A record type by full name, or by short name where that is unambiguous.
    pub fn get(&self, name: &str) -> Result<&Arc<RecordType>, SchemaError> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(&self.types[i]);
        }
        let matches: Vec<_> = self
            .types
            .iter()
            .filter(|t| t.short_name() == name)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(SchemaError::UnknownType(name.to_string())),
            many => Err(SchemaError::AmbiguousType {
                name: name.to_string(),
                candidates: many
                    .iter()
                    .map(|t| t.full_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Writes every shared named type and every record type as a self-contained, indented
    /// `<full name>.avsc` into `dir` (created if missing). Returns how many files it wrote.
    pub fn export(&self, dir: &std::path::Path) -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let shared = self.shared.iter().map(|(n, j)| (n.as_str(), j));
        let types = self.types.iter().map(|t| (t.full_name.as_str(), &t.json));
        let mut count = 0;
        for (name, json) in shared.chain(types) {
            let text = serde_json::to_string_pretty(json).expect("JSON serialises") + "\n";
            std::fs::write(dir.join(format!("{name}.avsc")), text)?;
            count += 1;
        }
        Ok(count)
    }

    /// A record type by the fingerprint of its schema.
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Option<&Arc<RecordType>> {
        self.by_fingerprint.get(fp).map(|&i| &self.types[i])
    }
}
