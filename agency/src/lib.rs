//! # agency: what an agency runs to receive its records (`govbus-agency tail|sink`)
//!
//! It links nothing of the platform: only `bus-schemas` (the wire contract, the checkpoint
//! format, key trust).
//!
//! ## Layout
//! - `lib.rs`: the account and queue (`Access`, from the provisioned env file), verifying and
//!   decoding a delivery (`Decoder`), and the consumer every tool shares (`consume`, `Handler`).
//! - `tail.rs`: deliveries as JSON lines. `sink.rs`: into the agency's PostgreSQL, or a webhook.
//! - `main.rs`: the `govbus-agency` command (parses and calls the above).
//!
//! The agency side: consuming `agency.<id>` with the account provisioning wrote, verifying the
//! platform's signature, decoding each delivery with its writer schema (fetched once from the
//! router's `GET /schemas/{fingerprint}`), and handing records to a tail, a table or a webhook.
//!
//! A delivery that cannot be verified or decoded is rejected without requeue, so the broker
//! dead-letters it to `agency.<id>.dlq`; it is never acked unseen. A handler that cannot finish
//! (database down) keeps its deliveries unacked and retries; on a lost connection the consumer
//! is rebuilt and the broker redelivers what was not acked.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use bus_schemas::{
    amqp::{AmqpConfig, Connector},
    codec::split_header,
    wire::{self, Op},
    Fingerprint, RecordType, Registry,
};
use clap::Args;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions},
    types::FieldTable,
};
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use bus_schemas::{
    amqp::headers::{header_i64, header_str},
    checkpoint::{self, Checkpoint},
    envfile,
    trust::{Listed, Trusted},
};

pub mod sink;
pub mod tail;

/// How an agency tool finds its queue, its account and the platform.
#[derive(Debug, Clone, Args)]
pub struct AgencyArgs {
    /// The agency's id in the catalogue.
    #[arg(long)]
    pub agency: String,
    /// The file `govbus provision` wrote for this agency (default
    /// `provisioned/agencies/<agency>.env`); flags and environment variables override it.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// AMQP URL with the agency's account (default: `GOVBUS__AMQP__URL` of the env file; the
    /// process environment's is not used, so a platform's own setting never leaks in).
    #[arg(long)]
    pub amqp_url: Option<String>,
    /// PEM file of the CA that signed the broker's certificate, for `amqps://` (default:
    /// `GOVBUS__AMQP__TLS_CA_FILE` of the env file, else the system roots).
    #[arg(long)]
    pub amqp_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present to the broker, with --amqp-tls-key-file (default:
    /// `GOVBUS__AMQP__TLS_CERT_FILE` / `GOVBUS__AMQP__TLS_KEY_FILE` of the env file).
    #[arg(long)]
    pub amqp_tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long)]
    pub amqp_tls_key_file: Option<PathBuf>,
    /// Base URL of the router's HTTP listener, for `/schemas/{fingerprint}` (default:
    /// `GOVBUS_ROUTER_URL` of the env file, else http://127.0.0.1:9200).
    #[arg(long, env = "GOVBUS_ROUTER_URL")]
    pub router_url: Option<String>,
    /// The platform's Ed25519 public key, base64 (default: `GOVBUS_PLATFORM_PUBLIC_KEY` of the
    /// env file; also served at the router's `/keys`).
    #[arg(long, env = "GOVBUS_PLATFORM_PUBLIC_KEY")]
    pub platform_public_key: Option<String>,
    /// That key's id (default: `GOVBUS_PLATFORM_KEY_ID` of the env file). Keys the platform
    /// rotates to later are accepted when this one endorsed them (read from `/keys`).
    #[arg(long, env = "GOVBUS_PLATFORM_KEY_ID")]
    pub platform_key_id: Option<String>,
    /// Deliveries the broker sends ahead of acks.
    #[arg(long, default_value_t = 500)]
    pub prefetch: u16,
    /// Keep the platform's signed ledger checkpoints here (one JSON file each; without it they
    /// are verified and acked only). `govbus ledger verify --checkpoints DIR` checks them.
    #[arg(long, env = "GOVBUS_CHECKPOINTS_DIR")]
    pub checkpoints: Option<PathBuf>,
}

/// Everything an agency tool needs, resolved from flags, environment and the env file.
#[derive(Debug, Clone)]
pub struct Access {
    /// Agency id.
    pub agency: String,
    /// `agency.<id>`.
    pub queue: String,
    /// Broker settings.
    pub amqp: AmqpConfig,
    /// Router base URL, without a trailing slash.
    pub router_url: String,
    /// Platform public key.
    pub platform_key: ed25519_dalek::VerifyingKey,
    /// Its key id, where known.
    pub platform_key_id: Option<String>,
    /// Where ledger checkpoints are kept, if anywhere.
    pub checkpoints: Option<PathBuf>,
}

impl Access {
    /// Resolves flags over the env file. Names the file and the missing setting when one is absent.
    pub fn resolve(args: &AgencyArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            wire::valid_id(&args.agency),
            "--agency {:?} is not an id (lowercase letters, digits and _)",
            args.agency
        );
        let explicit = args.env_file.is_some();
        let path = args.env_file.clone().unwrap_or_else(|| {
            PathBuf::from("provisioned/agencies").join(format!("{}.env", args.agency))
        });
        let env = match envfile::read(&path) {
            Ok(e) => e,
            Err(e) if explicit => {
                anyhow::bail!("cannot read --env-file {}: {e}", path.display())
            }
            Err(_) => HashMap::new(),
        };
        if let Some(a) = env.get("GOVBUS_AGENCY") {
            anyhow::ensure!(
                a == &args.agency,
                "{} is agency {a}'s file, not {}'s",
                path.display(),
                args.agency
            );
        }
        let missing = |what: &str, flag: &str| {
            anyhow::anyhow!(
                "no {what}: pass {flag}, or the env file `govbus provision` wrote for this agency \
                 with --env-file (looked for {})",
                path.display()
            )
        };
        let url = args
            .amqp_url
            .clone()
            .or_else(|| env.get("GOVBUS__AMQP__URL").cloned())
            .ok_or_else(|| missing("AMQP URL", "--amqp-url"))?;
        let key = args
            .platform_public_key
            .clone()
            .or_else(|| env.get("GOVBUS_PLATFORM_PUBLIC_KEY").cloned())
            .ok_or_else(|| missing("platform public key", "--platform-public-key"))?;
        let platform_key = bus_schemas::keys::parse_public_key(&key)
            .map_err(|e| anyhow::anyhow!("the platform public key is {e}"))?;
        let router_url = args
            .router_url
            .clone()
            .or_else(|| env.get("GOVBUS_ROUTER_URL").cloned())
            .unwrap_or_else(|| "http://127.0.0.1:9200".into())
            .trim_end_matches('/')
            .to_string();
        let file = |flag: &Option<PathBuf>, key: &str| {
            flag.clone().or_else(|| env.get(key).map(PathBuf::from))
        };
        Ok(Access {
            queue: wire::agency_queue(&args.agency),
            agency: args.agency.clone(),
            amqp: AmqpConfig {
                url,
                prefetch: args.prefetch,
                tls_ca_file: file(&args.amqp_tls_ca_file, "GOVBUS__AMQP__TLS_CA_FILE"),
                tls_cert_file: file(&args.amqp_tls_cert_file, "GOVBUS__AMQP__TLS_CERT_FILE"),
                tls_key_file: file(&args.amqp_tls_key_file, "GOVBUS__AMQP__TLS_KEY_FILE"),
                ..AmqpConfig::default()
            },
            router_url,
            platform_key,
            platform_key_id: args
                .platform_key_id
                .clone()
                .or_else(|| env.get("GOVBUS_PLATFORM_KEY_ID").cloned()),
            checkpoints: args.checkpoints.clone(),
        })
    }
}

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
        let signature = s(wire::header::SIGNATURE)?;
        let op = Op::parse(&s(wire::header::OP)?)
            .ok_or_else(|| bad("govbus-op is neither upsert nor delete".into()))?;
        let version = header_i64(h, wire::header::VERSION)
            .ok_or_else(|| bad("no govbus-version header".into()))?;
        let grant_revision = header_i64(h, wire::header::GRANT_REVISION).unwrap_or(0);
        let key_id = header_str(h, wire::header::KEY_ID);
        self.learn_keys(key_id).await?;
        self.keys
            .verify(key_id, chrono::Utc::now(), |k| {
                wire::verify(k, &signature, &message_id, &item, version, op, &d.data)
            })
            .map_err(bad)?;
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

/// What to do with a delivery once handled.
#[derive(Debug)]
pub enum Verdict {
    /// Done: ack.
    Ack,
    /// Never deliverable here: reject without requeue (the broker dead-letters it).
    Reject(String),
}

/// Something that takes verified records, a batch at a time.
pub trait Handler {
    /// Handles a batch; one verdict per record, in order. An error leaves the whole batch
    /// unacked (it is redelivered after the consumer is rebuilt).
    fn handle(
        &mut self,
        batch: &[Received],
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<Verdict>>>;
}

/// Remembers the last `cap` message ids, to skip a redelivered message already handled.
pub struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    /// Remembers up to `cap` ids.
    pub fn new(cap: usize) -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    /// True the first time an id is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// Batching of the consumer.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most deliveries handled together.
    pub max: usize,
    /// How long to wait for more after the first.
    pub wait: Duration,
}

/// Consumes the agency's queue until `stop` (or until `limit` records were handled), rebuilding
/// the connection whenever it fails.
pub async fn consume<H: Handler>(
    access: &Access,
    handler: &mut H,
    batching: Batching,
    limit: Option<u64>,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let connector = Connector::new(
        access.amqp.clone(),
        format!("govbus-agency-{}", access.agency),
    );
    let mut decoder = Decoder::new(access)?;
    let mut handled = 0u64;
    let mut delay = Duration::from_millis(200);
    while !stop.is_cancelled() && limit.is_none_or(|l| handled < l) {
        let conn = match connector
            .connect(stop, |e, d| {
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "RabbitMQ unreachable")
            })
            .await
        {
            Ok(c) => c,
            Err(bus_schemas::amqp::connect::ConnectError::Cancelled) => break,
            Err(e) => return Err(e.into()),
        };
        let r = session(
            access,
            &conn,
            &mut decoder,
            handler,
            batching,
            limit,
            &mut handled,
            stop,
        )
        .await;
        let _ = conn.close(200, "closing".into()).await;
        match r {
            Ok(()) => break,
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("ACCESS_REFUSED") || text.contains("NOT_FOUND") {
                    return Err(e.context(format!(
                        "cannot consume {}: does the queue exist (the router declares it once the \
                         agency is in the catalogue) and does this account read it?",
                        access.queue
                    )));
                }
                tracing::warn!(error = %text, "consumer failed; reconnecting (unacked deliveries are redelivered)");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(handled)
}

#[allow(clippy::too_many_arguments)]
async fn session<H: Handler>(
    access: &Access,
    conn: &lapin::Connection,
    decoder: &mut Decoder,
    handler: &mut H,
    batching: Batching,
    limit: Option<u64>,
    handled: &mut u64,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(access.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            access.queue.as_str().into(),
            format!("govbus-{}", access.agency).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {}", access.queue))?;
    tracing::info!(queue = %access.queue, "consuming");
    loop {
        if limit.is_some_and(|l| *handled >= l) {
            return Ok(());
        }
        let want = match limit {
            Some(l) => ((l - *handled) as usize).min(batching.max),
            None => batching.max,
        };
        let first = tokio::select! {
            d = consumer.next() => d,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("the broker closed the consumer");
        };
        let mut deliveries = vec![first?];
        let deadline = tokio::time::Instant::now() + batching.wait;
        while deliveries.len() < want {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => deliveries.push(d?),
                Ok(None) => anyhow::bail!("the broker closed the consumer"),
                Err(_) => break,
            }
        }
        // Verify and decode (a ledger checkpoint: verify and keep it); retry while the
        // router's schema endpoint is unreachable or a checkpoint cannot be saved.
        let mut decoded: Vec<Result<Option<Received>, DecodeError>> =
            Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            let mut wait = Duration::from_millis(500);
            loop {
                let r = if is_checkpoint(d) {
                    decoder
                        .checkpoint(d, access.checkpoints.as_deref())
                        .await
                        .map(|()| None)
                } else {
                    decoder.decode(d).await.map(Some)
                };
                match r {
                    Err(DecodeError::Transient(m)) => {
                        tracing::warn!(error = %m, "cannot read a schema; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return Ok(()),
                        }
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                    other => {
                        decoded.push(other);
                        break;
                    }
                }
            }
        }
        let good: Vec<Received> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned().flatten())
            .collect();
        let mut verdicts = handler.handle(&good, stop).await?.into_iter();
        let mut records = 0u64;
        for (d, r) in deliveries.iter().zip(&decoded) {
            let verdict = match r {
                Ok(Some(_)) => verdicts.next().unwrap_or(Verdict::Ack),
                Ok(None) => Verdict::Ack,
                Err(e) => Verdict::Reject(e.to_string()),
            };
            records += u64::from(!matches!(r, Ok(None)));
            let message_id = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let ok = match verdict {
                Verdict::Ack => d.acker.ack(BasicAckOptions::default()).await?,
                Verdict::Reject(why) => {
                    tracing::warn!(%message_id, reason = %why, queue = %access.queue,
                        "rejected: dead-lettered to the agency's .dlq");
                    d.acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await?
                }
            };
            anyhow::ensure!(ok, "the channel closed before the ack was sent");
        }
        *handled += records;
    }
}

/// Whether a delivery is a ledger checkpoint rather than a record.
fn is_checkpoint(d: &Delivery) -> bool {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| header_str(h, checkpoint::KIND_HEADER))
        == Some(checkpoint::KIND)
}

/// The catalogue-free check that a `--table` name is a plain SQL identifier (optionally
/// `schema.table`).
pub fn valid_table(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once('.') {
        Some((s, t)) => part(s) && part(t),
        None => part(name),
    }
}
