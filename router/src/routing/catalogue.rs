//! The sharing catalogue (articles 30, 31, 34): departments and their signing keys, agencies
//! and their contacts, items, and grants. A reviewed TOML file; [`Catalogue::load`] checks
//! everything at once and reports every problem naming its entry.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use bus_schemas::{keys::parse_public_key, wire, RecordType, Registry};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

/// The text of a TOML date or date-time, or of a string.
fn toml_time_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Toml(toml::value::Datetime),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Toml(dt) => dt.to_string(),
        Raw::Text(s) => s,
    })
}

/// A date written either as a TOML date (`2026-01-01`) or as a string (`"2026-01-01"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = toml_time_text(d)?;
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .map(Date)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a date YYYY-MM-DD")))
    }
}

/// A moment written as a TOML offset date-time (`2026-12-01T00:00:00+08:00`), a local date-time
/// or a date (both taken in Asia/Shanghai), or the same as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = toml_time_text(d)?;
        let t = text.trim();
        let shanghai = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
        let local = |n: chrono::NaiveDateTime| n.and_local_timezone(shanghai).single();
        DateTime::parse_from_rfc3339(t)
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
                    .ok()
                    .and_then(local)
            })
            .or_else(|| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| local(d.and_time(chrono::NaiveTime::MIN)))
            })
            .map(|t| Moment(t.with_timezone(&Utc)))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a time like 2026-12-01T00:00:00+08:00 (or a date, taken in Asia/Shanghai)"
                ))
            })
    }
}

/// A department's signing key: its public key alone (`"<base64>"`, valid until removed), or a
/// table with its validity (`{ public = "<base64>", valid_from = …, valid_until = …,
/// revoked_at = …, revoked_reason = "…" }`). Rotation: add the new key with `valid_from`,
/// give the old one `valid_until` (the overlap in which both verify). Revocation: `revoked_at`
/// (records received from then on, replays included, are refused).
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub public: String,
    pub valid_from: Option<Moment>,
    pub valid_until: Option<Moment>,
    pub revoked_at: Option<Moment>,
    pub revoked_reason: Option<String>,
}

impl<'de> Deserialize<'de> for KeyEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            public: String,
            #[serde(default)]
            valid_from: Option<Moment>,
            #[serde(default)]
            valid_until: Option<Moment>,
            #[serde(default)]
            revoked_at: Option<Moment>,
            #[serde(default)]
            revoked_reason: Option<String>,
        }
        // Through a TOML value, so that a table's mistake is reported as itself (an untagged
        // enum would only say that nothing matched).
        match toml::Value::deserialize(d)? {
            toml::Value::String(public) => Ok(KeyEntry {
                public,
                valid_from: None,
                valid_until: None,
                revoked_at: None,
                revoked_reason: None,
            }),
            v @ toml::Value::Table(_) => {
                let f: Full = v.try_into().map_err(serde::de::Error::custom)?;
                Ok(KeyEntry {
                    public: f.public,
                    valid_from: f.valid_from,
                    valid_until: f.valid_until,
                    revoked_at: f.revoked_at,
                    revoked_reason: f.revoked_reason,
                })
            }
            other => Err(serde::de::Error::custom(format!(
                "a key is \"<base64 public key>\" or {{ public = \"…\", valid_from = …, valid_until = …, revoked_at = … }}, not a {}",
                other.type_str()
            ))),
        }
    }
}

/// A department's public key as the router checks it.
#[derive(Debug, Clone)]
pub struct DepartmentKey {
    pub key: VerifyingKey,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl DepartmentKey {
    /// Why a message received at `at` must not be accepted with this key, if it must not.
    pub fn not_in_force(&self, at: DateTime<Utc>) -> Option<String> {
        let fmt = |t: DateTime<Utc>| {
            t.with_timezone(&FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
                .to_rfc3339()
        };
        if let Some(r) = self.revoked_at.filter(|r| at >= *r) {
            return Some(format!("was revoked at {}", fmt(r)));
        }
        if let Some(f) = self.valid_from.filter(|f| at < *f) {
            return Some(format!("is valid only from {}", fmt(f)));
        }
        if let Some(u) = self.valid_until.filter(|u| at >= *u) {
            return Some(format!("expired at {}", fmt(u)));
        }
        None
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
    /// Grants of items to agencies and to linked platforms.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
    /// This platform's id among linked platforms (`city`, `tianhe`): the first word of the
    /// routing keys it sends to another platform, and the audience of the batches it receives
    /// from one. `city` when absent.
    #[serde(default)]
    pub platform_id: Option<String>,
    /// The other platforms this one is linked to (articles 28, 32, 33): a recipient of grants,
    /// a source of records, or both.
    #[serde(default, rename = "platform")]
    pub platforms: Vec<LinkedPlatform>,
}

/// Another platform (the city's, or a district's) this one exchanges records with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedPlatform {
    /// Id used in exchange, queue, account and routing-key names (`tianhe`).
    pub id: String,
    /// Name (`天河区政务数据共享平台`).
    pub name: String,
    /// Its region: a division code prefix (`440106`; the city's `4401`).
    pub region: String,
    /// Its broker, for the link's shovel (declared on this platform's broker when the other
    /// platform sends here).
    #[serde(default)]
    pub link: Option<Link>,
    /// Its workflow API base URL (applications across platforms, article 37).
    #[serde(default)]
    pub workflow_api: Option<String>,
    /// Its platform signing keys (`GET /keys` there), when it sends records here: the
    /// batches it sends are verified for the audience of this platform's id.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyEntry>,
    /// What it grants this platform, item by item, when it sends records here. An item
    /// listed here names this platform among its `departments`; grants of it may narrow
    /// these fields, identity and region, never widen them.
    #[serde(default, rename = "item")]
    pub items: Vec<SourceItem>,
}

/// Where another platform's broker is, as this platform's broker reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// AMQP URL without credentials or vhost (`amqps://city-mq.example:5671`, with the
    /// shovel's TLS options as a query: `?cacertfile=/etc/rabbitmq/city-ca.pem&verify=verify_peer`);
    /// the link account's credentials are added from its provisioning file.
    pub url: String,
    /// Its vhost.
    #[serde(default = "default_vhost")]
    pub vhost: String,
}

fn default_vhost() -> String {
    "/".into()
}

/// An item another platform grants this one: what arrives from it, and the bound for this
/// platform's own grants of the item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceItem {
    /// The item id (the same on both platforms).
    pub id: String,
    /// The fields the other platform grants (its delivery's projection).
    pub fields: Vec<String>,
    /// The identity mode it grants.
    pub identity: Identity,
    /// The region it grants, if limited.
    #[serde(default)]
    pub region: Option<String>,
}

/// A responsible collecting department.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Id used in routing keys and account names (`police`).
    pub id: String,
    /// Name (`广州市公安局`).
    pub name: String,
    /// Signing public keys, key id → base64 Ed25519 public key (`govbus-adapter keygen` prints
    /// it), or key id → `{ public = …, valid_from, valid_until, revoked_at, revoked_reason }`.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyEntry>,
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
    /// The receiving agency, or a linked platform (`platform = "tianhe"` says the same).
    #[serde(alias = "platform")]
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
    sources: &HashMap<String, (String, SourceItem)>,
) -> Vec<String> {
    let at = format!("grant `{}`", g.id);
    let mut problems = Vec::new();
    if g.revision < 1 {
        problems.push(format!("{at}: revision must be 1 or more"));
    }
    if !agencies.contains(g.agency.as_str()) {
        problems.push(format!(
            "{at}: agency `{}` is not a listed agency or linked platform",
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
    if let Some((platform, bound)) = sources.get(&g.item) {
        problems.extend(widening(&at, g, platform, bound));
        if let (Some(_), Some(df)) = (&g.region, &item.division_field) {
            if !field_within(df, &bound.fields) {
                problems.push(format!(
                    "{at}: has a region, but platform `{platform}` does not send the division field `{df}` of item `{}`",
                    item.id
                ));
            }
        }
    }
    problems
}

/// Whether granted field `f` lies within `fields` (a nested field is within its whole
/// top-level field).
pub fn field_within(f: &str, fields: &[String]) -> bool {
    fields
        .iter()
        .any(|b| b == f || f.split_once('.').is_some_and(|(top, _)| top == b))
}

/// How a grant of an item another platform sends here would widen what that platform grants
/// (fields, identity, region); empty when it narrows or keeps them.
fn widening(at: &str, g: &Grant, platform: &str, bound: &SourceItem) -> Vec<String> {
    let mut problems = Vec::new();
    let wider: Vec<&str> = g
        .fields
        .iter()
        .filter(|f| !field_within(f, &bound.fields))
        .map(String::as_str)
        .collect();
    if !wider.is_empty() {
        problems.push(format!(
            "{at}: widens what platform `{platform}` grants of item `{}`: field(s) {} are not among its fields {}",
            g.item,
            wider.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
            bound.fields.join(", ")
        ));
    }
    if bound.identity == Identity::Pseudonym && g.identity != Identity::Pseudonym {
        problems.push(format!(
            "{at}: widens what platform `{platform}` grants of item `{}`: identity `{}` where it grants `pseudonym`",
            g.item,
            g.identity.as_str()
        ));
    }
    if let Some(r) = &bound.region {
        if !g
            .region
            .as_deref()
            .is_some_and(|gr| gr.starts_with(r.as_str()))
        {
            problems.push(format!(
                "{at}: widens what platform `{platform}` grants of item `{}`: region {} where it grants only region `{r}` (give a region that starts with `{r}`)",
                g.item,
                g.region.as_deref().map_or("(none)".into(), |gr| format!("`{gr}`")),
            ));
        }
    }
    problems
}

impl SourceItem {
    /// The bound grant `e` sets: its fields, identity and region.
    pub fn of_grant(e: &Grant) -> Self {
        SourceItem {
            id: e.item.clone(),
            fields: e.fields.clone(),
            identity: e.identity,
            region: e.region.clone(),
        }
    }

    /// Whether grant `g` stays within this bound (fields, identity, region): what
    /// `catalogue check` asks of a grant of an item another platform sends.
    pub fn bounds(&self, g: &Grant) -> bool {
        widening("", g, "", self).is_empty()
    }
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
    /// Department id → key id → public key and its validity.
    pub keys: HashMap<String, HashMap<String, DepartmentKey>>,
    /// Item id → (item, record type).
    pub items: HashMap<String, (Item, Arc<RecordType>)>,
    /// Item id → grants of it.
    pub grants_by_item: HashMap<String, Vec<Grant>>,
    /// This platform's id (`platform_id`, `city` when absent).
    pub platform_id: String,
    /// Item id → the linked platform that sends it here, and what that platform grants.
    pub sources: HashMap<String, (String, SourceItem)>,
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
            keys.insert(d.id.clone(), parse_keys(&at, &d.keys, &mut problems));
        }
        let platform_id = file
            .platform_id
            .clone()
            .unwrap_or_else(|| wire::DEFAULT_PLATFORM_ID.into());
        if !wire::valid_id(&platform_id) {
            problems.push(format!(
                "platform_id `{platform_id}`: must be lowercase letters, digits and _, starting with a letter"
            ));
        }
        // Item id → (sending platform, what it grants here).
        let mut sources: HashMap<String, (String, SourceItem)> = HashMap::new();
        for lp in &file.platforms {
            let at = format!("platform `{}`", lp.id);
            if !wire::valid_id(&lp.id) {
                problems.push(format!(
                    "{at}: the id must be lowercase letters, digits and _, starting with a letter"
                ));
            }
            if lp.id == platform_id {
                problems.push(format!(
                    "{at}: is this platform's own id (platform_id); list the other platforms"
                ));
            }
            // Grants name agencies and platforms alike, and exchanges, queues and accounts
            // are named by id: one namespace.
            if keys.contains_key(&lp.id)
                || file.agencies.iter().any(|a| a.id == lp.id)
                || !seen.insert(("platform", lp.id.clone()))
            {
                problems.push(format!(
                    "{at}: listed twice, or also the id of a department or an agency; give the platform an id of its own"
                ));
            }
            if lp.region.is_empty()
                || lp.region.len() > 6
                || !lp.region.bytes().all(|b| b.is_ascii_digit())
            {
                problems.push(format!(
                    "{at}: region `{}` must be a division code prefix of up to 6 digits",
                    lp.region
                ));
            }
            if let Some(l) = &lp.link {
                if !(l.url.starts_with("amqp://") || l.url.starts_with("amqps://"))
                    || l.url.contains('@')
                {
                    problems.push(format!(
                        "{at}: link.url `{}` must be an amqp:// or amqps:// URL without credentials (the link account's come from its provisioning file)",
                        l.url
                    ));
                }
            }
            let responsible = file.items.iter().any(|it| it.departments.contains(&lp.id));
            if (!lp.items.is_empty() || responsible) && lp.keys.is_empty() {
                problems.push(format!(
                    "{at}: sends items (or is responsible for one) but lists no platform keys; add `keys = {{ \"<key id>\" = \"<public key>\" }}` from its `GET /keys`"
                ));
            }
            if !lp.keys.is_empty() {
                keys.insert(lp.id.clone(), parse_keys(&at, &lp.keys, &mut problems));
            }
            for si in &lp.items {
                if sources
                    .insert(si.id.clone(), (lp.id.clone(), si.clone()))
                    .is_some()
                {
                    problems.push(format!(
                        "{at}: item `{}` is sent here by more than one platform, or listed twice",
                        si.id
                    ));
                }
            }
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
        for id in sources.keys() {
            if !file.items.iter().any(|it| &it.id == id) {
                let (p, _) = &sources[id];
                problems.push(format!(
                    "platform `{p}`: sends item `{id}`, which is not a listed item; add it with `departments = [\"{p}\"]`"
                ));
            }
        }
        let agencies: HashSet<&str> = file
            .agencies
            .iter()
            .map(|a| a.id.as_str())
            .chain(file.platforms.iter().map(|p| p.id.as_str()))
            .collect();
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
                let from_platform = file.platforms.iter().any(|p| &p.id == d);
                if !keys.contains_key(d) && !from_platform {
                    problems.push(format!(
                        "{at}: responsible department `{d}` is not a listed department or linked platform"
                    ));
                }
                // An item of another platform that does not send it yet is one agencies here
                // may apply for there (article 37): its workflow API answers.
                let applicable = file
                    .platforms
                    .iter()
                    .any(|p| &p.id == d && p.workflow_api.is_some());
                if from_platform && !applicable && sources.get(&it.id).is_none_or(|(p, _)| p != d) {
                    problems.push(format!(
                        "{at}: platform `{d}` sends it, but its `[[platform.item]]` does not list `{}` (say which fields, identity and region it grants; or give the platform a `workflow_api` to apply for the item there)",
                        it.id
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
                    if let Some((p, si)) = sources.get(&it.id) {
                        problems.extend(source_item_problems(&at, p, si, it, rt));
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
            problems.extend(grant_problems(g, &agencies, &items, &sources));
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
                platform_id,
                sources,
            })
        } else {
            Err(problems)
        }
    }

    /// What is wrong with a grant against this catalogue (empty: it fits).
    pub fn check_grant(&self, g: &Grant) -> Vec<String> {
        let agencies: HashSet<&str> = self.recipient_ids().collect();
        grant_problems(g, &agencies, &self.items, &self.sources)
    }

    /// Adds grants approved through the sharing workflow (kept in PostgreSQL, not in the
    /// file). One that no longer fits the catalogue (its agency or item gone, a field renamed)
    /// is left out and its problems returned, so a reload of the file never fails over it.
    pub fn add_grants(&mut self, grants: Vec<Grant>) -> Vec<String> {
        let names: Vec<String> = self.recipient_ids().map(String::from).collect();
        let agencies: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut problems = Vec::new();
        let mut fit = Vec::new();
        for g in grants {
            let mut p = grant_problems(&g, &agencies, &self.items, &self.sources);
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

    /// Adds what other platforms grant this one through applications made here (kept in
    /// PostgreSQL: item, platform, and what it grants). One that no longer fits (the platform
    /// or item gone, the item listed as sent by another) is left out and its problems returned.
    pub fn add_sources(&mut self, stored: Vec<(String, SourceItem)>) -> Vec<String> {
        let mut problems = Vec::new();
        for (platform, si) in stored {
            let at = format!(
                "item `{}` (granted by platform `{platform}` through the workflow)",
                si.id
            );
            let Some((it, rt)) = self.items.get(&si.id) else {
                problems.push(format!("{at}: not a listed item"));
                continue;
            };
            if !it.departments.contains(&platform) {
                problems.push(format!(
                    "{at}: the item lists `{}` as responsible",
                    it.departments.join(", ")
                ));
                continue;
            }
            if let Some((p, _)) = self.sources.get(&si.id) {
                problems.push(format!("{at}: the catalogue file already has platform `{p}`'s `[[platform.item]]` for it"));
                continue;
            }
            let p = source_item_problems(&at, &platform, &si, it, rt);
            if !p.is_empty() {
                problems.extend(p);
                continue;
            }
            let Some(lp) = self.file.platforms.iter_mut().find(|p| p.id == platform) else {
                problems.push(format!("{at}: platform `{platform}` is not listed"));
                continue;
            };
            if lp.keys.is_empty() {
                problems.push(format!("{at}: platform `{platform}` lists no keys"));
                continue;
            }
            lp.items.push(si.clone());
            self.sources.insert(si.id.clone(), (platform, si));
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

    /// Whoever a grant may name: the agencies and the linked platforms.
    pub fn recipient_ids(&self) -> impl Iterator<Item = &str> {
        self.agency_ids()
            .chain(self.file.platforms.iter().map(|p| p.id.as_str()))
    }

    /// The linked platform `id`, if listed.
    pub fn linked_platform(&self, id: &str) -> Option<&LinkedPlatform> {
        self.file.platforms.iter().find(|p| p.id == id)
    }

    /// The linked platforms some grant names as recipient (this platform sends to them).
    pub fn recipient_platforms(&self) -> impl Iterator<Item = &LinkedPlatform> {
        self.file
            .platforms
            .iter()
            .filter(|p| self.file.grants.iter().any(|g| g.agency == p.id))
    }

    /// The linked platforms that send records here, or are responsible for an item agencies
    /// here may apply for there (the link is there before the first grant).
    pub fn source_platforms(&self) -> impl Iterator<Item = &LinkedPlatform> {
        self.file.platforms.iter().filter(|p| {
            !p.items.is_empty()
                || self
                    .file
                    .items
                    .iter()
                    .any(|it| it.departments.contains(&p.id))
        })
    }

    /// The linked platform responsible for `item`, if another platform's item.
    pub fn item_platform(&self, item: &str) -> Option<&LinkedPlatform> {
        let (it, _) = self.items.get(item)?;
        it.departments.iter().find_map(|d| self.linked_platform(d))
    }
}

/// A list of signing keys (a department's, or a linked platform's), checked.
fn parse_keys(
    at: &str,
    entries: &BTreeMap<String, KeyEntry>,
    problems: &mut Vec<String>,
) -> HashMap<String, DepartmentKey> {
    let mut dk = HashMap::new();
    for (kid, entry) in entries {
        let key_at = format!("{at}: key `{kid}`");
        if let (Some(f), Some(u)) = (entry.valid_from, entry.valid_until) {
            if u <= f {
                problems.push(format!("{key_at}: valid_until is not after valid_from"));
            }
        }
        if entry.revoked_reason.is_some() && entry.revoked_at.is_none() {
            problems.push(format!(
                "{key_at}: revoked_reason without revoked_at; give the revocation time"
            ));
        }
        match parse_public_key(&entry.public) {
            Ok(key) => {
                dk.insert(
                    kid.clone(),
                    DepartmentKey {
                        key,
                        valid_from: entry.valid_from.map(|m| m.0),
                        valid_until: entry.valid_until.map(|m| m.0),
                        revoked_at: entry.revoked_at.map(|m| m.0),
                    },
                );
            }
            Err(e) => problems.push(format!("{key_at} is {e}")),
        }
    }
    dk
}

/// What is wrong with what a linked platform says it grants of an item: fields the record
/// type lacks, a grant without the record key, a region without the division field.
fn source_item_problems(
    at: &str,
    platform: &str,
    si: &SourceItem,
    it: &Item,
    rt: &RecordType,
) -> Vec<String> {
    let at = format!("{at} (sent by platform `{platform}`)");
    let mut problems = Vec::new();
    let bad: Vec<&str> = si
        .fields
        .iter()
        .filter(|f| rt.field_schema(f).is_none())
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        problems.push(format!(
            "{at}: {} has no field {}",
            rt.full_name,
            bad.join(", ")
        ));
    }
    for k in &rt.key {
        if !field_within(k, &si.fields) {
            problems.push(format!(
                "{at}: the platform's fields must hold the record key `{k}`"
            ));
        }
    }
    if let Some(df) = &it.division_field {
        if si.region.is_some() && !field_within(df, &si.fields) {
            problems.push(format!(
                "{at}: a region-limited grant, but its fields lack the division field `{df}`"
            ));
        }
    }
    problems
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

    /// Keys with validity: times in three spellings, every problem named, and the moment a
    /// key stops (or starts) verifying.
    #[test]
    fn key_validity() {
        let pk = "fDk9tIwV7QCegB+0umeHSADUow/rk19KcMAyEnfdxdg=";
        let text = sample().replace(
            &format!("keys = {{ \"police-2026\" = \"{pk}\" }}"),
            &format!(
                "keys = {{ \"a\" = {{ public = \"{pk}\", valid_from = 2026-01-01, valid_until = 2026-06-01T12:00:00+08:00 }}, \"b\" = {{ public = \"{pk}\", revoked_at = \"2026-03-01T00:00:00\" }} }}"
            ),
        );
        let c = Catalogue::check(toml::from_str(&text).unwrap()).unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let a = &c.keys["police"]["a"];
        assert!(a
            .not_in_force(at("2025-12-31T15:59:59Z"))
            .unwrap()
            .starts_with("is valid only from 2026-01-01T00:00:00+08:00"));
        assert_eq!(a.not_in_force(at("2025-12-31T16:00:00Z")), None);
        assert_eq!(a.not_in_force(at("2026-06-01T03:59:59Z")), None);
        assert_eq!(
            a.not_in_force(at("2026-06-01T04:00:00Z")).unwrap(),
            "expired at 2026-06-01T12:00:00+08:00"
        );
        let b = &c.keys["police"]["b"];
        assert_eq!(b.not_in_force(at("2026-02-28T15:59:59Z")), None);
        assert_eq!(
            b.not_in_force(at("2026-02-28T16:00:00Z")).unwrap(),
            "was revoked at 2026-03-01T00:00:00+08:00"
        );

        let bad = sample().replace(
            &format!("keys = {{ \"police-2026\" = \"{pk}\" }}"),
            &format!(
                "keys = {{ \"a\" = {{ public = \"{pk}\", valid_from = 2026-02-01, valid_until = 2026-01-01 }}, \"b\" = {{ public = \"{pk}\", revoked_reason = \"lost\" }} }}"
            ),
        );
        let all = Catalogue::check(toml::from_str(&bad).unwrap())
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("department `police`: key `a`: valid_until is not after valid_from"),
            "{all}"
        );
        assert!(
            all.contains("department `police`: key `b`: revoked_reason without revoked_at"),
            "{all}"
        );
        let typo = sample().replace(
            &format!("keys = {{ \"police-2026\" = \"{pk}\" }}"),
            &format!("keys = {{ \"a\" = {{ public = \"{pk}\", revoked = 2026-01-01 }} }}"),
        );
        let e = toml::from_str::<CatalogueFile>(&typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `revoked`"), "{e}");
        let when = sample().replace(
            &format!("keys = {{ \"police-2026\" = \"{pk}\" }}"),
            &format!("keys = {{ \"a\" = {{ public = \"{pk}\", revoked_at = \"soon\" }} }}"),
        );
        let e = toml::from_str::<CatalogueFile>(&when)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`soon` is not a time"), "{e}");
    }

    /// A district's catalogue: what the city sends bounds the district's grants. A grant
    /// within the bound passes; a wider identity, a whole record where the city sends one of
    /// its fields, a region outside the city's, and an item the city is not said to send are
    /// each refused, naming the grant or item.
    #[test]
    fn grants_of_what_another_platform_sends_only_narrow_it() {
        let pk = "fDk9tIwV7QCegB+0umeHSADUow/rk19KcMAyEnfdxdg=";
        let district = |fields: &str, identity: &str, region: &str, sent: &str| {
            format!(
                r#"platform_id = "tianhe"
[[agency]]
id = "civil"
name = "天河区民政局"
leader = {{ name = "a" }}
sharing_officer = {{ name = "b" }}
technical_officer = {{ name = "c" }}
[[item]]
id = "enterprise"
name = "企业法人登记信息"
record_type = "gov.gz.commerce.EnterpriseRegistration"
departments = ["city"]
shared_from = 2016-01-01
division_field = "division_code"
[[platform]]
id = "city"
name = "广州市"
region = "4401"
keys = {{ "city-1" = "{pk}" }}
[[platform.item]]
id = "{sent}"
fields = ["unified_social_credit_code", "name", "division_code", "legal_representative.name"]
identity = "pseudonym"
region = "440106"
[[grant]]
id = "civil-enterprise"
revision = 1
agency = "civil"
item = "enterprise"
fields = {fields}
identity = "{identity}"
legal_basis = "第三十七条"
purpose = "p"
valid_from = 2026-01-01
region = "{region}"
"#
            )
        };
        let ok = district(
            r#"["unified_social_credit_code", "legal_representative.name", "division_code"]"#,
            "pseudonym",
            "440106",
            "enterprise",
        );
        let c = Catalogue::check(toml::from_str(&ok).unwrap()).unwrap();
        assert_eq!(c.platform_id, "tianhe");
        assert_eq!(c.sources["enterprise"].0, "city");
        assert!(c.keys["city"].contains_key("city-1"));
        assert_eq!(c.source_platforms().count(), 1);
        assert_eq!(c.recipient_platforms().count(), 0);

        let wide = district(
            r#"["unified_social_credit_code", "legal_representative", "division_code"]"#,
            "full",
            "4401",
            "enterprise",
        );
        let all = Catalogue::check(toml::from_str(&wide).unwrap())
            .unwrap_err()
            .join("\n");
        assert!(all.contains("grant `civil-enterprise`: widens what platform `city` grants of item `enterprise`: field(s) `legal_representative`"), "{all}");
        assert!(
            all.contains("identity `full` where it grants `pseudonym`"),
            "{all}"
        );
        assert!(
            all.contains("region `4401` where it grants only region `440106`"),
            "{all}"
        );

        let unsent = district(
            r#"["unified_social_credit_code"]"#,
            "pseudonym",
            "440106",
            "household",
        );
        let all = Catalogue::check(toml::from_str(&unsent).unwrap())
            .unwrap_err()
            .join("\n");
        assert!(all.contains("item `enterprise`: platform `city` sends it, but its `[[platform.item]]` does not list `enterprise`"), "{all}");
        assert!(
            all.contains("platform `city`: sends item `household`, which is not a listed item"),
            "{all}"
        );

        // An item of the city's that it does not send yet: agencies here may apply for it when
        // the city has a workflow API; what the city then grants (stored) bounds the grants.
        let applicable = |api: &str| {
            format!(
                r#"platform_id = "tianhe"
[[item]]
id = "enterprise"
name = "企业法人登记信息"
record_type = "gov.gz.commerce.EnterpriseRegistration"
departments = ["city"]
shared_from = 2016-01-01
division_field = "division_code"
[[platform]]
id = "city"
name = "广州市"
region = "4401"
keys = {{ "city-1" = "{pk}" }}
{api}
"#
            )
        };
        let all = Catalogue::check(toml::from_str(&applicable("")).unwrap())
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("or give the platform a `workflow_api`"),
            "{all}"
        );
        let mut c = Catalogue::check(
            toml::from_str(&applicable(r#"workflow_api = "https://city.example""#)).unwrap(),
        )
        .unwrap();
        assert!(c.sources.is_empty());
        assert_eq!(
            c.source_platforms().count(),
            1,
            "the link is there before any grant"
        );
        assert_eq!(c.item_platform("enterprise").unwrap().id, "city");
        let source = |fields: &[&str], region: Option<&str>| SourceItem {
            id: "enterprise".into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            identity: Identity::Full,
            region: region.map(String::from),
        };
        // A region without the division field, and an item the city is not responsible for,
        // are left out, saying why.
        let p = c.add_sources(vec![
            (
                "city".into(),
                source(&["unified_social_credit_code"], Some("440106")),
            ),
            (
                "haizhu".into(),
                source(&["unified_social_credit_code"], None),
            ),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("lack the division field"), "{p:?}");
        assert!(p[1].contains("lists `city` as responsible"), "{p:?}");
        assert!(c.sources.is_empty());
        let p = c.add_sources(vec![(
            "city".into(),
            source(
                &["unified_social_credit_code", "division_code"],
                Some("440106"),
            ),
        )]);
        assert!(p.is_empty(), "{p:?}");
        let grant = |fields: &str, region: &str| -> Grant {
            toml::from_str(&format!(
                r#"id = "app-1"
revision = 1
agency = "civil"
item = "enterprise"
fields = {fields}
identity = "full"
legal_basis = "第三十七条"
purpose = "p"
valid_from = 2026-12-01
region = "{region}"
"#
            ))
            .unwrap()
        };
        let within = grant(
            r#"["unified_social_credit_code", "division_code"]"#,
            "440106",
        );
        let wider = grant(r#"["unified_social_credit_code", "name"]"#, "440106");
        let mut agencies = HashSet::new();
        agencies.insert("civil");
        assert!(grant_problems(&within, &agencies, &c.items, &c.sources).is_empty());
        let p = grant_problems(&wider, &agencies, &c.items, &c.sources).join("\n");
        assert!(
            p.contains("widens what platform `city` grants of item `enterprise`: field(s) `name`"),
            "{p}"
        );

        // Grants name agencies and platforms alike: a platform cannot share an agency's id.
        let clash =
            sample() + "\n[[platform]]\nid = \"tianhe\"\nname = \"天河\"\nregion = \"440106\"\n";
        let all = Catalogue::check(toml::from_str(&clash).unwrap())
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains(
                "platform `tianhe`: listed twice, or also the id of a department or an agency"
            ),
            "{all}"
        );
    }
}
