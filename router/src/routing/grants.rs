//! The catalogue compiled for routing: per item, its record type and responsible
//! departments, and each grant with its projection built once.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bus_schemas::{apache_avro::types::Value, Element, RecordType};
use chrono::NaiveDate;

use crate::{
    routing::catalogue::{Catalogue, Grant, Item},
    routing::projection::{Projection, ProjectionError},
};

/// A grant ready to apply.
#[derive(Debug)]
pub struct CompiledGrant {
    /// The grant as the catalogue states it.
    pub grant: Grant,
    /// Its projection.
    pub projection: Arc<Projection>,
}

/// An item ready to route.
#[derive(Debug)]
pub struct CompiledItem {
    /// The item as the catalogue states it.
    pub item: Item,
    /// Its record type.
    pub record_type: Arc<RecordType>,
    /// Its grants.
    pub grants: Vec<CompiledGrant>,
    /// Identity fields a pseudonym grant replaces: top-level `Subject` fields (one per role)…
    pub subjects: Vec<String>,
    /// …and top-level citizen ID number fields (the record key among them, where it is one).
    pub id_fields: Vec<String>,
    /// When a linked platform sends the item: that platform's id and the projection it
    /// encodes with (its grant's fields), whose schema the bodies it sends are written in.
    pub source: Option<(String, Arc<Projection>)>,
}

/// A catalogue compiled for routing. Replaced whole on reload.
#[derive(Debug)]
pub struct Routing {
    /// The checked catalogue.
    pub catalogue: Catalogue,
    /// Item id → compiled item.
    pub items: HashMap<String, CompiledItem>,
    /// Department batch statements already verified. A reload starts a new cache, so a key
    /// the new catalogue revokes or drops has nothing cached; a key found out of force
    /// while routing has its entries forgotten at once.
    pub verifier: bus_schemas::batch::Verifier,
}

/// Projections built so far, by record type and granted fields: a reload that keeps a grant's
/// fields reuses its projection (and its registered writer schema).
#[derive(Debug, Default)]
pub struct ProjectionCache(Mutex<HashMap<ProjectionKey, Arc<Projection>>>);

/// Record type full name and sorted granted fields.
type ProjectionKey = (String, Vec<String>);

impl ProjectionCache {
    fn get(&self, rt: &RecordType, fields: &[String]) -> Result<Arc<Projection>, ProjectionError> {
        let mut sorted = fields.to_vec();
        sorted.sort();
        sorted.dedup();
        let key = (rt.full_name.clone(), sorted);
        let mut map = self.0.lock().expect("projection cache lock");
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(Projection::new(rt, &key.1)?);
        map.insert(key, p.clone());
        Ok(p)
    }

    /// Every projection built so far (to register their writer schemas).
    pub fn all(&self) -> Vec<Arc<Projection>> {
        self.0
            .lock()
            .expect("projection cache lock")
            .values()
            .cloned()
            .collect()
    }
}

impl Routing {
    /// Compiles a checked catalogue, building each grant's projection (or reusing it).
    pub fn compile(catalogue: Catalogue, cache: &ProjectionCache) -> Result<Self, ProjectionError> {
        let mut items = HashMap::new();
        for (id, (item, rt)) in &catalogue.items {
            let mut grants = Vec::new();
            for g in catalogue.grants_by_item.get(id).into_iter().flatten() {
                grants.push(CompiledGrant {
                    grant: g.clone(),
                    projection: cache.get(rt, &g.fields)?,
                });
            }
            let source = match catalogue.sources.get(id) {
                Some((platform, si)) => Some((platform.clone(), cache.get(rt, &si.fields)?)),
                None => None,
            };
            items.insert(
                id.clone(),
                CompiledItem {
                    source,
                    item: item.clone(),
                    record_type: rt.clone(),
                    grants,
                    subjects: rt.subject_fields().into_iter().map(String::from).collect(),
                    id_fields: rt
                        .elements
                        .iter()
                        // Identities outside a Subject: ID numbers, and taxpayer ids (often an
                        // owner's ID number), replaced by the marker, never by guessing a value.
                        .filter(|(p, e)| {
                            matches!(e, Element::CitizenIdNumber | Element::TaxpayerId)
                                && !p.contains('.')
                        })
                        .map(|(p, _)| p.clone())
                        .collect(),
                },
            );
        }
        Ok(Routing {
            catalogue,
            items,
            verifier: bus_schemas::batch::Verifier::new(),
        })
    }
}

/// The string value of a (dotted) field of a decoded record, through nullable unions.
pub fn string_at<'v>(record: &'v Value, path: &str) -> Option<&'v str> {
    let mut current = record;
    for part in path.split('.') {
        current = match strip_union(current) {
            Value::Record(fields) => &fields.iter().find(|(n, _)| n == part)?.1,
            _ => return None,
        };
    }
    match strip_union(current) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The value inside a union.
pub fn strip_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

impl CompiledItem {
    /// The grants in force on `day` that cover a record: a region-limited grant only where
    /// the record's division (the item's division field) starts with the region.
    /// A delete carries only the key, so its division is unknown: region-limited grants
    /// are returned with `region_unknown` set, for the caller to decide from the ledger.
    pub fn grants_for<'a>(
        &'a self,
        day: NaiveDate,
        record: &Value,
    ) -> impl Iterator<Item = (&'a CompiledGrant, bool)> + 'a {
        let division = self
            .item
            .division_field
            .as_deref()
            .and_then(|f| string_at(record, f))
            .map(str::to_string);
        self.grants.iter().filter_map(move |g| {
            if !g.grant.in_force(day) {
                return None;
            }
            match (&g.grant.region, &division) {
                (None, _) => Some((g, false)),
                (Some(r), Some(d)) => d.starts_with(r.as_str()).then_some((g, false)),
                (Some(_), None) => Some((g, true)),
            }
        })
    }
}
