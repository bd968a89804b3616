//! Verifying a delivery's platform signature and decoding its body with its exact writer
//! schema (fetched once per fingerprint from the router's `GET /schemas/{fingerprint}`).
use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use bus_schemas::{
    amqp::{
        headers::{header_i64, header_str},
        seal,
    },
    batch::Verifier,
    checkpoint::Checkpoint,
    codec::split_header,
    trust::{Listed, Trusted},
    wire::{self, Op},
    Fingerprint, RecordType, Registry,
};
use lapin::{message::Delivery, types::FieldTable};
use serde_json::{json, Value as Json};

use crate::access::Access;

/// One verified, decoded delivery.
#[derive(Debug, Clone)]
pub struct Received {
    /// The delivery's `message_id` (keyed; unique per agency, grant revision and record version).
    pub message_id: String,
    /// Catalogue item.
    pub item: String,
    /// Grant id and revision it was delivered under.
    pub grant: String,
    /// Grant revision.
    pub grant_revision: i64,
    /// Record version (monotone per record).
    pub version: i64,
    /// Upsert or delete.
    pub op: Op,
    /// When the source changed, ms since epoch.
    pub source_time_ms: Option<i64>,
    /// The record type's writer schema as delivered.
    pub writer: Arc<RecordType>,
    /// The record key (one value, or a JSON array of several), as delivered: pseudonymised
    /// where the grant says so.
    pub key: String,
    /// The record in natural JSON, the granted fields only.
    pub record: Json,
}

impl Received {
    /// The JSON line `govbus-agency tail` prints and a webhook receives.
    pub fn envelope(&self) -> Json {
        json!({
            "message_id": self.message_id,
            "item": self.item,
            "record_type": self.writer.full_name,
            "fingerprint": self.writer.fingerprint.to_string(),
            "grant": self.grant,
            "grant_revision": self.grant_revision,
            "version": self.version,
            "op": self.op.as_str(),
            "source_time_ms": self.source_time_ms,
            "key": self.key,
            "record": self.record,
        })
    }
}

/// Why a delivery was not accepted. `Permanent` ones go to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Cannot ever be read: dead-letter it.
    #[error("{0}")]
    Permanent(String),
    /// The router (schema source) is unreachable: retry later.
    #[error("{0}")]
    Transient(String),
}

/// Verifies and decodes deliveries; caches writer schemas by fingerprint.
pub struct Decoder {
    http: reqwest::Client,
    router_url: String,
    keys: Trusted,
    /// This agency's id: the audience its delivery batches must be signed for.
    agency: String,
    /// Delivery batch statements already verified.
    verifier: Verifier,
    /// When `/keys` was last read (at most every 10 s, on a key id not trusted yet).
    keys_read: Option<std::time::Instant>,
    schemas: HashMap<Fingerprint, Arc<RecordType>>,
}

/// The string at a dotted path of a JSON record (numbers as their text).
fn json_at<'a>(record: &'a Json, path: &str) -> Option<std::borrow::Cow<'a, str>> {
    let mut v = record;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Json::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        Json::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

impl Decoder {
    /// A decoder for one agency.
    pub fn new(access: &Access) -> anyhow::Result<Self> {
        Ok(Decoder {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            router_url: access.router_url.clone(),
            keys: Trusted::new(access.platform_key, access.platform_key_id.clone()),
            agency: access.agency.clone(),
            verifier: Verifier::new(),
            keys_read: None,
            schemas: HashMap::new(),
        })
    }

    /// On a key id not trusted yet, reads the router's `/keys` (at most every 10 s) and trusts
    /// the keys a trusted key endorsed.
    async fn learn_keys(&mut self, key_id: Option<&str>) -> Result<(), DecodeError> {
        let Some(id) = key_id else { return Ok(()) };
        if self.keys.knows(id)
            || self
                .keys_read
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return Ok(());
        }
        self.keys_read = Some(std::time::Instant::now());
        let url = format!("{}/keys", self.router_url);
        let listing: Json = async {
            self.http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await
        .map_err(|e| {
            DecodeError::Transient(format!("cannot read the platform keys at {url}: {e}"))
        })?;
        let listed: Vec<Listed> = serde_json::from_value(listing["keys"].clone())
            .map_err(|e| DecodeError::Transient(format!("{url} did not list keys: {e}")))?;
        let added = self.keys.learn(&listed);
        if added > 0 {
            tracing::info!(added, "trusting platform keys endorsed by a trusted key");
        }
        Ok(())
    }

    /// A ledger checkpoint among the deliveries: verified with the platform key, saved into
    /// `dir` when given (not acked until saved).
    pub async fn checkpoint(
        &mut self,
        d: &Delivery,
        dir: Option<&Path>,
    ) -> Result<(), DecodeError> {
        let bad = |m: String| DecodeError::Permanent(m);
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| bad("a checkpoint without a message_id".into()))?;
        let empty = FieldTable::default();
        let h = d.properties.headers().as_ref().unwrap_or(&empty);
        let cp = Checkpoint::from_delivery(&message_id, h, &d.data).map_err(bad)?;
        self.learn_keys(Some(&cp.key_id)).await?;
        let mut head = Err(String::new());
        self.keys
            .verify(Some(&cp.key_id), chrono::Utc::now(), |k| {
                head = cp.verified(k);
                head.is_ok()
            })
            .map_err(bad)?;
        let head = head.map_err(bad)?;
        if let Some(dir) = dir {
            cp.save(dir, &head).map_err(|e| {
                DecodeError::Transient(format!(
                    "cannot save a ledger checkpoint in {}: {e}",
                    dir.display()
                ))
            })?;
        }
        tracing::info!(seq = head.seq, hash = %head.hash, saved = dir.is_some(), "ledger checkpoint received");
        Ok(())
    }

    /// The writer schema for a fingerprint: cached, else fetched from the router.
    pub async fn schema(&mut self, fp: Fingerprint) -> Result<Arc<RecordType>, DecodeError> {
        if let Some(rt) = self.schemas.get(&fp) {
            return Ok(rt.clone());
        }
        let url = format!("{}/schemas/{fp}", self.router_url);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            DecodeError::Transient(format!("cannot fetch schema {fp} from {url}: {e}"))
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(DecodeError::Permanent(format!(
                "the router has no schema with fingerprint {fp} ({url} answered 404)"
            )));
        }
        if !status.is_success() {
            return Err(DecodeError::Transient(format!(
                "{url} answered {status}; retrying"
            )));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| DecodeError::Transient(format!("reading {url}: {e}")))?;
        let json: Json = serde_json::from_str(&text)
            .map_err(|e| DecodeError::Permanent(format!("{url} is not JSON: {e}")))?;
        let rt = RecordType::from_self_contained(json, &url)
            .map_err(|e| DecodeError::Permanent(format!("{url} is not a record schema: {e}")))?;
        if rt.fingerprint != fp {
            return Err(DecodeError::Permanent(format!(
                "{url} served a schema whose fingerprint is {}, not {fp}",
                rt.fingerprint
            )));
        }
        let rt = Arc::new(rt);
        self.schemas.insert(fp, rt.clone());
        Ok(rt)
    }

    /// Verifies the platform signature and decodes one delivery.
    pub async fn decode(&mut self, d: &Delivery) -> Result<Received, DecodeError> {
        let bad = |m: String| DecodeError::Permanent(m);
        let props = &d.properties;
        let message_id = props
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| bad("no message_id".into()))?;
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let s = |n: &str| {
            header_str(h, n)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no {n} header")))
        };
        let item = s(wire::header::ITEM)?;
        let grant = s(wire::header::GRANT)?;
        let op = Op::parse(&s(wire::header::OP)?)
            .ok_or_else(|| bad("govbus-op is neither upsert nor delete".into()))?;
        let version = header_i64(h, wire::header::VERSION)
            .ok_or_else(|| bad("no govbus-version header".into()))?;
        let grant_revision = header_i64(h, wire::header::GRANT_REVISION).unwrap_or(0);
        let key_id = header_str(h, wire::header::KEY_ID);
        self.learn_keys(key_id).await?;
        // The batch signature, for this agency as its audience: a batch signed for another
        // recipient is refused like an altered one.
        let mut why = None;
        self.keys
            .verify(key_id, chrono::Utc::now(), |k| {
                match seal::verify(&self.verifier, k, &self.agency, props, &d.data) {
                    Ok(_) => true,
                    Err(e) => {
                        why = Some(e);
                        false
                    }
                }
            })
            .map_err(|e| match why.take() {
                Some(w) => bad(format!(
                    "{e}: {w} (a delivery batch is signed for one agency, here `{}`)",
                    self.agency
                )),
                None => bad(e),
            })?;
        let (fp, datum) = split_header(&d.data).map_err(|e| bad(e.to_string()))?;
        let writer = self.schema(fp).await?;
        let value = writer.decode_datum(datum).map_err(|e| bad(e.to_string()))?;
        let record = writer
            .value_to_json(&value)
            .map_err(|e| bad(e.to_string()))?;
        let full = Registry::standard()
            .get(&writer.full_name)
            .map_err(|e| bad(e.to_string()))?;
        let parts: Vec<_> = full
            .key
            .iter()
            .map(|p| {
                json_at(&record, p).ok_or_else(|| bad(format!("the record key field {p} is empty")))
            })
            .collect::<Result<_, _>>()?;
        let refs: Vec<&str> = parts.iter().map(|c| c.as_ref()).collect();
        Ok(Received {
            message_id,
            item,
            grant,
            grant_revision,
            version,
            op,
            source_time_ms: header_i64(h, wire::header::SOURCE_TIME_MS),
            key: wire::record_key_string(&refs),
            writer,
            record,
        })
    }
}
