//! The sharing catalogue (articles 30, 31, 34): departments and their signing keys, agencies
//! and their contacts, items, and grants. A reviewed TOML file; [`Catalogue::load`] checks
//! everything at once and reports every problem naming its entry.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use bus_schemas::{keys::parse_public_key, wire, RecordType, Registry};
use chrono::NaiveDate;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

/// A date written either as a TOML date (`2026-01-01`) or as a string (`"2026-01-01"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Toml(toml::value::Datetime),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Toml(dt) => dt.to_string(),
            Raw::Text(s) => s,
        };
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .map(Date)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a date YYYY-MM-DD")))
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueFile {
    /// Departments that publish.
    #[serde(default, rename = "department")]
    pub departments: Vec<Department>,
    /// Agencies that receive.
    #[serde(default, rename = "agency")]
    pub agencies: Vec<Agency>,
    /// Shared items (article 30).
    #[serde(default, rename = "item")]
    pub items: Vec<Item>,
    /// Grants of items to agencies.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
}

/// A responsible collecting department.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Id used in routing keys and account names (`police`).
    pub id: String,
    /// Name (`广州市公安局`).
    pub name: String,
    /// Signing public keys, key id → base64 Ed25519 public key (`govbus-adapter keygen` prints it).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// A contact of an agency (article 34).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Name.
    pub name: String,
    /// Telephone.
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
}

/// An agency that uses shared data (article 34: registered with three contact roles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    /// Id used in queue names and account names (`tax`).
    pub id: String,
    /// Name.
    pub name: String,
    /// Leader in charge.
    pub leader: Contact,
    /// Sharing officer.
    pub sharing_officer: Contact,
    /// Technical officer.
    pub technical_officer: Contact,
}

/// A catalogue item (article 30).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Id used in routing keys (`household`).
    pub id: String,
    /// Name (`户籍登记信息`).
    pub name: String,
    /// Content: what the item holds.
    #[serde(default)]
    pub content: String,
    /// The bus-schemas record type (`gov.gz.police.HouseholdRegistration`).
    pub record_type: String,
    /// Responsible department(s): only these may publish the item (article 3).
    pub departments: Vec<String>,
    /// Update frequency (`realtime`, `daily`, …).
    #[serde(default)]
    pub update_frequency: String,
    /// Platform: city or district division code (`440100`).
    #[serde(default)]
    pub platform: String,
    /// Scope of use.
    #[serde(default)]
    pub scope: String,
    /// Method of use (`subscription`, `query`, …).
    #[serde(default)]
    pub method: String,
    /// First day the item is shared.
    pub shared_from: Date,
    /// Last day the item is shared; open-ended when absent.
    #[serde(default)]
    pub shared_until: Option<Date>,
    /// Field holding a record's administrative division code, for region-limited grants.
    #[serde(default)]
    pub division_field: Option<String>,
}

/// How identity reaches an agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// ID numbers as the department sent them.
    Full,
    /// Every ID number replaced by the agency's pseudonym (`pgb1_…`).
    Pseudonym,
}

impl Identity {
    /// The name the catalogue file and the workflow's tables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Full => "full",
            Identity::Pseudonym => "pseudonym",
        }
    }

    /// The identity stored as `s` (`pseudonym`; anything else is `full`, the default).
    pub fn from_stored(s: &str) -> Self {
        if s == Identity::Pseudonym.as_str() {
            Identity::Pseudonym
        } else {
            Identity::Full
        }
    }
}

/// A grant of an item's fields to an agency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Id, unique in the catalogue.
    pub id: String,
    /// Revision, raised whenever the grant changes (deliveries carry it).
    pub revision: i64,
    /// The receiving agency.
    pub agency: String,
    /// The item granted.
    pub item: String,
    /// Granted fields: schema field names, nested ones as `subject.name`. Must include the
    /// record key (agencies need it to apply updates and deletes).
    pub fields: Vec<String>,
    /// `full` or `pseudonym`.
    pub identity: Identity,
    /// Legal basis (article 35).
    pub legal_basis: String,
    /// Purpose of use.
    pub purpose: String,
    /// First day in force.
    pub valid_from: Date,
    /// Last day in force; open-ended when absent.
    #[serde(default)]
    pub valid_until: Option<Date>,
    /// Administrative division prefix (`440106`) matched against the item's division field.
    #[serde(default)]
    pub region: Option<String>,
}

/// What is wrong with one grant (besides a repeated id), one line each.
fn grant_problems(
    g: &Grant,
    agencies: &HashSet<&str>,
    items: &HashMap<String, (Item, Arc<RecordType>)>,
) -> Vec<String> {
    let at = format!("grant `{}`", g.id);
    let mut problems = Vec::new();
    if g.revision < 1 {
        problems.push(format!("{at}: revision must be 1 or more"));
    }
    if !agencies.contains(g.agency.as_str()) {
        problems.push(format!(
            "{at}: agency `{}` is not a listed agency",
            g.agency
        ));
    }
    if let Some(u) = g.valid_until {
        if u < g.valid_from {
            problems.push(format!(
                "{at}: valid_until {} is before valid_from {}",
                u.0, g.valid_from.0
            ));
        }
    }
    if g.legal_basis.trim().is_empty() {
        problems.push(format!(
            "{at}: legal_basis is empty (article 35 requires one)"
        ));
    }
    if let Some(r) = &g.region {
        if r.is_empty() || r.len() > 6 || !r.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!(
                "{at}: region `{r}` must be a division code prefix of up to 6 digits"
            ));
        }
    }
    let Some((item, rt)) = items.get(&g.item) else {
        problems.push(format!("{at}: item `{}` is not a listed item", g.item));
        return problems;
    };
    if g.valid_from < item.shared_from
        || matches!((g.valid_until, item.shared_until), (_, Some(iu)) if g.valid_until.is_none_or(|gu| gu > iu))
    {
        problems.push(format!(
            "{at}: valid {}..{} lies outside item `{}`'s sharing period {}..{}",
            g.valid_from.0,
            g.valid_until.map_or("(open)".into(), |d| d.0.to_string()),
            item.id,
            item.shared_from.0,
            item.shared_until
                .map_or("(open)".into(), |d| d.0.to_string()),
        ));
    }
    if g.region.is_some() && item.division_field.is_none() {
        problems.push(format!(
            "{at}: has a region but item `{}` names no division_field",
            item.id
        ));
    }
    if g.fields.is_empty() {
        problems.push(format!("{at}: grants no fields"));
    }
    let mut bad = Vec::new();
    for f in &g.fields {
        if rt.field_schema(f).is_none() {
            bad.push(f.as_str());
        }
    }
    if !bad.is_empty() {
        problems.push(format!(
            "{at}: {} has no field {}; it has: {}",
            rt.full_name,
            bad.iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
            rt.leaf_paths().join(", ")
        ));
    }
    for k in &rt.key {
        if !g
            .fields
            .iter()
            .any(|f| f == k || k.starts_with(&format!("{f}.")))
        {
            problems.push(format!(
                    "{at}: must grant the record key `{k}` (agencies need it to apply updates and deletes; pseudonym identity replaces an ID number there)"
                ));
        }
    }
    problems
}

impl Grant {
    /// Whether the grant is in force on `day`.
    pub fn in_force(&self, day: NaiveDate) -> bool {
        self.valid_from.0 <= day && self.valid_until.is_none_or(|u| day <= u.0)
    }
}

/// A checked catalogue, indexed for the router.
#[derive(Debug)]
pub struct Catalogue {
    /// The file as written.
    pub file: CatalogueFile,
    /// Department id → key id → public key.
    pub keys: HashMap<String, HashMap<String, VerifyingKey>>,
    /// Item id → (item, record type).
    pub items: HashMap<String, (Item, Arc<RecordType>)>,
    /// Item id → grants of it.
    pub grants_by_item: HashMap<String, Vec<Grant>>,
}

/// Every problem found in a catalogue, one line each.
#[derive(Debug, thiserror::Error)]
#[error("catalogue {file}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
pub struct CatalogueError {
    /// The file.
    pub file: String,
    /// One line per problem, naming the entry and what is wrong.
    pub problems: Vec<String>,
}

impl Catalogue {
    /// Reads and checks a catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let fail = |p: String| CatalogueError {
            file: path.display().to_string(),
            problems: vec![p],
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the file: {e}")))?;
        let file: CatalogueFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        Self::check(file).map_err(|problems| CatalogueError {
            file: path.display().to_string(),
            problems,
        })
    }

    /// Checks a parsed catalogue against the record types and itself; returns every problem.
    pub fn check(file: CatalogueFile) -> Result<Self, Vec<String>> {
        let registry = Registry::standard();
        let mut problems = Vec::new();
        let mut keys = HashMap::new();
        let mut seen = HashSet::new();
        for d in &file.departments {
            let at = format!("department `{}`", d.id);
            if !wire::valid_id(&d.id) {
                problems.push(format!(
                    "{at}: the id must be lowercase letters, digits and _, starting with a letter"
                ));
            }
            if !seen.insert(("department", d.id.clone())) {
                problems.push(format!("{at}: listed twice"));
            }
            if d.keys.is_empty() {
                problems.push(format!("{at}: no signing keys; add `keys = {{ \"<key id>\" = \"<public key>\" }}` from `govbus-adapter keygen`"));
            }
            let mut dk = HashMap::new();
            for (kid, pk) in &d.keys {
                match parse_public_key(pk) {
                    Ok(k) => {
                        dk.insert(kid.clone(), k);
                    }
                    Err(e) => problems.push(format!("{at}: key `{kid}` is {e}")),
                }
            }
            keys.insert(d.id.clone(), dk);
        }
        for a in &file.agencies {
            let at = format!("agency `{}`", a.id);
            if !wire::valid_id(&a.id) {
                problems.push(format!(
                    "{at}: the id must be lowercase letters, digits and _, starting with a letter"
                ));
            }
            if !seen.insert(("agency", a.id.clone())) {
                problems.push(format!("{at}: listed twice"));
            }
            for (role, c) in [
                ("leader", &a.leader),
                ("sharing_officer", &a.sharing_officer),
                ("technical_officer", &a.technical_officer),
            ] {
                if c.name.trim().is_empty() {
                    problems.push(format!(
                        "{at}: {role} has no name (article 34 requires all three contacts)"
                    ));
                }
            }
        }
        let agencies: HashSet<&str> = file.agencies.iter().map(|a| a.id.as_str()).collect();
        let mut items = HashMap::new();
        for it in &file.items {
            let at = format!("item `{}`", it.id);
            if !wire::valid_id(&it.id) {
                problems.push(format!(
                    "{at}: the id must be lowercase letters, digits and _, starting with a letter"
                ));
            }
            if items.contains_key(&it.id) {
                problems.push(format!("{at}: listed twice"));
            }
            if it.departments.is_empty() {
                problems.push(format!("{at}: no responsible department"));
            }
            for d in &it.departments {
                if !keys.contains_key(d) {
                    problems.push(format!(
                        "{at}: responsible department `{d}` is not a listed department"
                    ));
                }
            }
            if let Some(u) = it.shared_until {
                if u < it.shared_from {
                    problems.push(format!(
                        "{at}: shared_until {} is before shared_from {}",
                        u.0, it.shared_from.0
                    ));
                }
            }
            match registry.get(&it.record_type) {
                Ok(rt) => {
                    if let Some(df) = &it.division_field {
                        if rt.field_schema(df).is_none() {
                            problems.push(format!(
                                "{at}: division_field `{df}` is not a field of {}; it has: {}",
                                rt.full_name,
                                rt.leaf_paths().join(", ")
                            ));
                        }
                    }
                    items.insert(it.id.clone(), (it.clone(), rt.clone()));
                }
                Err(_) => problems.push(format!(
                    "{at}: record type `{}` is not a bus-schemas type; `govbus schemas list` shows them",
                    it.record_type
                )),
            }
        }
        let mut grants_by_item: HashMap<String, Vec<Grant>> = HashMap::new();
        let mut grant_ids = HashSet::new();
        for g in &file.grants {
            let at = format!("grant `{}`", g.id);
            if !grant_ids.insert(g.id.clone()) {
                problems.push(format!("{at}: listed twice"));
            }
            problems.extend(grant_problems(g, &agencies, &items));
            grants_by_item
                .entry(g.item.clone())
                .or_default()
                .push(g.clone());
        }
        if problems.is_empty() {
            Ok(Catalogue {
                file,
                keys,
                items,
                grants_by_item,
            })
        } else {
            Err(problems)
        }
    }

    /// What is wrong with a grant against this catalogue (empty: it fits).
    pub fn check_grant(&self, g: &Grant) -> Vec<String> {
        let agencies: HashSet<&str> = self.agency_ids().collect();
        grant_problems(g, &agencies, &self.items)
    }

    /// Adds grants approved through the sharing workflow (kept in PostgreSQL, not in the
    /// file). One that no longer fits the catalogue (its agency or item gone, a field renamed)
    /// is left out and its problems returned, so a reload of the file never fails over it.
    pub fn add_grants(&mut self, grants: Vec<Grant>) -> Vec<String> {
        let names: Vec<String> = self.file.agencies.iter().map(|a| a.id.clone()).collect();
        let agencies: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut problems = Vec::new();
        let mut fit = Vec::new();
        for g in grants {
            let mut p = grant_problems(&g, &agencies, &self.items);
            if self.file.grants.iter().any(|f| f.id == g.id) {
                p.push(format!(
                    "grant `{}`: the catalogue file has a grant with this id",
                    g.id
                ));
            }
            if p.is_empty() {
                fit.push(g);
            } else {
                problems.extend(p);
            }
        }
        for g in fit {
            self.grants_by_item
                .entry(g.item.clone())
                .or_default()
                .push(g.clone());
            self.file.grants.push(g);
        }
        problems
    }

    /// The agency ids.
    pub fn agency_ids(&self) -> impl Iterator<Item = &str> {
        self.file.agencies.iter().map(|a| a.id.as_str())
    }

    /// The department ids.
    pub fn department_ids(&self) -> impl Iterator<Item = &str> {
        self.file.departments.iter().map(|d| d.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/catalogue.toml"
        ))
        .unwrap()
    }

    /// The example catalogue is valid.
    #[test]
    fn example_is_valid() {
        let c = Catalogue::check(toml::from_str(&sample()).unwrap()).unwrap();
        assert!(c.items.contains_key("household"));
    }

    /// Every problem is reported at once, naming the entry, and a bad field lists the fields.
    #[test]
    fn every_problem_named() {
        let text = sample()
            .replace("agency = \"health\"", "agency = \"nobody\"")
            .replace(
                "\"legal_representative.name\"",
                "\"legal_representative.nmae\"",
            )
            .replace("valid_from = 2026-01-01", "valid_from = 2010-01-01");
        let problems = Catalogue::check(toml::from_str(&text).unwrap()).unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains("agency `nobody` is not a listed agency"),
            "{all}"
        );
        assert!(
            all.contains(
                "no field `legal_representative.nmae`; it has: unified_social_credit_code"
            ),
            "{all}"
        );
        assert!(all.contains("outside item"), "{all}");
        assert!(problems.len() >= 3);
    }
}
