//! RabbitMQ accounts from the catalogue, through the management HTTP API, with exactly the
//! permissions of the wire contract (DESIGN.md): a department writes only the ingest and
//! quarantine exchanges under its own routing keys and reads its own quarantine; an agency
//! reads only its queue and its dead letters; only the router configures. Idempotent: a
//! second run changes nothing; an agency or department no longer in the catalogue loses its
//! account.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use bus_schemas::wire;
use serde_json::{json, Value as Json};

use crate::{routing::catalogue::Catalogue, workflow::token::Role};

/// Tag on every account govbus manages (revocation touches no other account).
pub const MANAGED_TAG: &str = "govbus-managed";
/// The router account's tags: managed, and `monitoring`, so it may read the shovel states of
/// the links it watches through the management API (RabbitMQ answers "Not monitor user" to
/// anything less; monitoring reads every vhost's statistics, and changes nothing).
pub const ROUTER_TAGS: &str = "govbus-managed,monitoring";

/// The management API of one broker, for one vhost.
#[derive(Debug, Clone)]
pub struct Management {
    /// Base URL (`http://127.0.0.1:15672`).
    pub base: String,
    /// Administrator user and password.
    pub auth: (String, String),
    /// The vhost the accounts get permissions on.
    pub vhost: String,
    client: reqwest::Client,
}

/// What one account may do: (configure, write, read) regular expressions, and topic write
/// permission on the ingest and quarantine exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Configure pattern.
    pub configure: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
    /// Topic write pattern on `govbus.ingest`, where set.
    pub topic_write: Option<String>,
    /// Topic write pattern on `govbus.quarantine`, where set (rows and their count messages).
    pub quarantine_topic_write: Option<String>,
}

/// A department's permissions.
pub fn department_permissions(id: &str) -> Permissions {
    Permissions {
        configure: "^$".into(),
        write: r"^govbus\.(ingest|quarantine)$".into(),
        read: format!(r"^quarantine\.{id}$"),
        topic_write: Some(format!(r"^{id}\.[a-z0-9_]+\.[0-9]{{1,2}}$")),
        quarantine_topic_write: Some(format!(r"^{id}\.[a-z0-9_]+(\.count)?$")),
    }
}

/// An agency's permissions.
pub fn agency_permissions(id: &str) -> Permissions {
    Permissions {
        configure: "^$".into(),
        write: "^$".into(),
        read: format!(r"^agency\.{id}(\.dlq)?$"),
        topic_write: None,
        quarantine_topic_write: None,
    }
}

/// The router's permissions: it declares the topology, consumes ingest, writes deliveries.
pub fn router_permissions() -> Permissions {
    Permissions {
        configure: r"^(govbus\..*|agency\..*|quarantine\..*|platform\..*)$".into(),
        write: r"^(govbus\..*|agency\..*|quarantine\..*|platform\..*)$".into(),
        read: r"^(govbus\..*|agency\..*|quarantine\..*|platform\..*)$".into(),
        topic_write: None,
        quarantine_topic_write: None,
    }
}

/// The permissions of the account a linked platform's shovel reads this platform's
/// `platform.<id>` with: that queue only. Configure on it too, because RabbitMQ 3.10's shovel
/// declares its source queue (with the queue's own arguments, so nothing changes).
pub fn link_reader_permissions(platform: &str) -> Permissions {
    let q = regex_escape(&wire::platform_queue(platform));
    Permissions {
        configure: format!("^{q}$"),
        write: "^$".into(),
        read: format!("^{q}$"),
        topic_write: None,
        quarantine_topic_write: None,
    }
}

/// The permissions of the account the shovel from linked platform `source` writes this
/// platform's `govbus.ingest` with: under `<source>.<item>.<shard>` only.
pub fn link_writer_permissions(source: &str) -> Permissions {
    Permissions {
        configure: "^$".into(),
        write: r"^govbus\.ingest$".into(),
        read: "^$".into(),
        topic_write: Some(format!(r"^{source}\.[a-z0-9_]+\.[0-9]{{1,2}}$")),
        quarantine_topic_write: None,
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

/// (scheme, user, password, host:port, vhost) of an AMQP URL.
pub fn parse_amqp_url(url: &str) -> anyhow::Result<(String, String, String, String, String)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        anyhow::anyhow!(
            "`{}` is not an AMQP URL",
            bus_schemas::amqp::config::redact(url)
        )
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.split('?').next().unwrap_or_default();
    let (creds, host) = authority
        .rsplit_once('@')
        .unwrap_or(("guest:guest", authority));
    let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5672")
    };
    let vhost = if path.is_empty() {
        "/".to_string()
    } else {
        decode(path)
    };
    Ok((scheme.to_string(), decode(user), decode(pass), host, vhost))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Management {
    /// A client for `base` as `auth` on `vhost`.
    pub fn new(base: &str, auth: (String, String), vhost: &str) -> Self {
        Management {
            base: base.trim_end_matches('/').to_string(),
            auth,
            vhost: vhost.to_string(),
            // A broker that stops mid-request must not hang the caller (the link watcher polls).
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> anyhow::Result<Option<Json>> {
        let url = format!("{}/api/{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .basic_auth(&self.auth.0, Some(&self.auth.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the RabbitMQ management API at {}: {e}; enable it with `rabbitmq-plugins enable rabbitmq_management` or set amqp.management_url", self.base)
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND && method == reqwest::Method::GET {
            return Ok(None);
        }
        if !status.is_success() {
            anyhow::bail!(
                "{method} {path}: HTTP {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let text = resp.text().await.unwrap_or_default();
        Ok(if text.trim().is_empty() {
            Some(Json::Null)
        } else {
            Some(serde_json::from_str(&text)?)
        })
    }

    /// A queue of the vhost as the management API describes it (`None` if there is none).
    pub async fn queue(&self, name: &str) -> anyhow::Result<Option<Json>> {
        self.call(
            reqwest::Method::GET,
            &format!("queues/{}/{}", enc(&self.vhost), enc(name)),
            None,
        )
        .await
    }

    /// Whether an account exists.
    pub async fn user_exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self
            .call(reqwest::Method::GET, &format!("users/{}", enc(name)), None)
            .await?
            .is_some())
    }

    /// Creates or updates an account with a password.
    pub async fn put_user(&self, name: &str, password: &str, tags: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("users/{}", enc(name)),
            Some(json!({"password": password, "tags": tags})),
        )
        .await
        .map(|_| ())
    }

    /// Sets an account's permissions on the vhost.
    pub async fn set_permissions(&self, user: &str, p: &Permissions) -> anyhow::Result<()> {
        let v = enc(&self.vhost);
        let u = enc(user);
        self.call(
            reqwest::Method::PUT,
            &format!("permissions/{v}/{u}"),
            Some(json!({"configure": p.configure, "write": p.write, "read": p.read})),
        )
        .await?;
        for (exchange, tw) in [
            (wire::INGEST_EXCHANGE, &p.topic_write),
            (wire::QUARANTINE_EXCHANGE, &p.quarantine_topic_write),
        ] {
            if let Some(tw) = tw {
                self.call(
                    reqwest::Method::PUT,
                    &format!("topic-permissions/{v}/{u}"),
                    Some(json!({"exchange": exchange, "write": tw, "read": "^$"})),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The management API of the broker an AMQP config names, as its account, on its vhost:
    /// `amqp.management_url` when set, else port 15672 of the first address's host.
    pub fn for_amqp(cfg: &bus_schemas::amqp::config::AmqpConfig) -> anyhow::Result<Self> {
        let (_, user, pass, host, vhost) = parse_amqp_url(cfg.first_url())?;
        let base = cfg.management_url.clone().unwrap_or_else(|| {
            let h = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
            format!("http://{h}:15672")
        });
        Ok(Management::new(&base, (user, pass), &vhost))
    }

    /// Declares (or replaces) a dynamic shovel in the vhost.
    pub async fn put_shovel(&self, name: &str, value: Json) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("parameters/shovel/{}/{}", enc(&self.vhost), enc(name)),
            Some(json!({ "value": value })),
        )
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("declaring the shovel {name}: {e} (is the rabbitmq_shovel plugin enabled? `rabbitmq-plugins enable rabbitmq_shovel rabbitmq_shovel_management`)"))
    }

    /// The state of the vhost's shovels, by name (`running`, `starting`, `terminated`…), from
    /// the shovel management plugin.
    pub async fn shovel_states(&self) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let list = self
            .call(
                reqwest::Method::GET,
                &format!("shovels/{}", enc(&self.vhost)),
                None,
            )
            .await?
            .unwrap_or(Json::Null);
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s["name"].as_str()?.to_string(),
                    s["state"].as_str().unwrap_or("unknown").to_string(),
                ))
            })
            .collect())
    }

    /// Deletes an account (its connections are closed by the broker).
    pub async fn delete_user(&self, name: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("users/{}", enc(name)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Managed accounts with permissions on the vhost.
    pub async fn managed_users(&self) -> anyhow::Result<Vec<String>> {
        let perms = self
            .call(
                reqwest::Method::GET,
                &format!("vhosts/{}/permissions", enc(&self.vhost)),
                None,
            )
            .await?
            .unwrap_or(Json::Null);
        let users = self
            .call(reqwest::Method::GET, "users", None)
            .await?
            .unwrap_or(Json::Null);
        let managed: std::collections::HashSet<&str> = users
            .as_array()
            .into_iter()
            .flatten()
            .filter(|u| {
                let tags = &u["tags"];
                tags.as_str()
                    .is_some_and(|t| t.split(',').any(|t| t.trim() == MANAGED_TAG))
                    || tags
                        .as_array()
                        .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(MANAGED_TAG)))
            })
            .filter_map(|u| u["name"].as_str())
            .collect();
        Ok(perms
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["user"].as_str())
            .filter(|u| managed.contains(u))
            .map(str::to_string)
            .collect())
    }
}

/// Where and how accounts reach the broker, for the files `provision` writes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `amqp` or `amqps`.
    pub scheme: String,
    /// `host:port` as the accounts will reach it.
    pub host: String,
    /// Account name prefix (empty in production; tests use one to stay apart).
    pub prefix: String,
    /// Platform key id and base64 public key, written into agencies' files.
    pub platform_key: (String, String),
    /// The router's HTTP base URL as agencies reach it (`/schemas`, `/keys`), for their files.
    pub router_url: Option<String>,
    /// The router's `[api]` listener as departments and agencies reach it (the workflow API).
    pub api_url: Option<String>,
    /// Issues each agency's and department's workflow API token (`GOVBUS_API_TOKEN`), when
    /// the platform's id secret was given.
    pub tokens: Option<crate::workflow::token::TokenKey>,
}

/// What `provision` did.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// Accounts created (new password written).
    pub created: Vec<String>,
    /// Accounts that existed with their file (permissions re-applied, nothing else changed).
    pub unchanged: Vec<String>,
    /// Accounts removed (no longer in the catalogue).
    pub revoked: Vec<String>,
    /// Existing env files whose workflow lines (`GOVBUS_API_TOKEN`, `GOVBUS_ROUTER_URL`) were
    /// rewritten, password and everything else kept (after a token expiry or an id secret
    /// rotation).
    pub reissued: Vec<String>,
    /// One line per link from a sending platform: its shovel declared, or what it waits for.
    pub links: Vec<String>,
}

/// `text` (an env file) with each of `lines`' keys set: replaced in place where present,
/// appended where not; every other line kept as it was.
fn set_lines(text: &str, lines: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = std::collections::HashSet::new();
    for line in text.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key.and_then(|k| lines.iter().find(|(lk, _)| lk == k)) {
            Some((k, v)) if !line.trim_start().starts_with('#') => {
                out.push_str(&format!("{k}={v}\n"));
                done.insert(k.as_str());
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, v) in lines {
        if !done.contains(k.as_str()) {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

fn new_password() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("env.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = bus_schemas::keys::create_private(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The router's URL and the account holder's workflow API token, where known.
fn workflow_lines(
    target: &Target,
    role: Role,
    subject: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut lines = Vec::new();
    if let Some(u) = &target.router_url {
        lines.push(("GOVBUS_ROUTER_URL".to_string(), u.clone()));
    }
    if let Some(u) = &target.api_url {
        lines.push(("GOVBUS_API_URL".to_string(), u.clone()));
    }
    if let Some(k) = &target.tokens {
        lines.push(("GOVBUS_API_TOKEN".to_string(), k.issue(role, subject)?));
    }
    Ok(lines)
}

/// One account to provision.
struct Account {
    name: String,
    file: PathBuf,
    permissions: Permissions,
    lines: Vec<(String, String)>,
    /// The workflow lines (router URL, API token), rewritten in an existing file too.
    workflow: Vec<(String, String)>,
    /// The account's tags (the router's also reads shovel states through the management API).
    tags: &'static str,
}

/// Creates, updates and revokes accounts; writes `DIR/departments/<id>.env`,
/// `DIR/agencies/<id>.env` and `DIR/router.env` (mode 0600).
pub async fn provision(
    m: &Management,
    catalogue: &Catalogue,
    target: &Target,
    out: &Path,
) -> anyhow::Result<Provisioned> {
    let mut accounts = Vec::new();
    for d in catalogue.department_ids() {
        accounts.push(Account {
            name: format!("{}dept-{d}", target.prefix),
            file: out.join("departments").join(format!("{d}.env")),
            permissions: department_permissions(d),
            lines: vec![
                ("GOVBUS_ROLE".into(), "department".into()),
                ("GOVBUS_DEPARTMENT".into(), d.into()),
                ("GOVBUS_QUARANTINE_QUEUE".into(), wire::quarantine_queue(d)),
            ],
            workflow: workflow_lines(target, Role::Department, d)?,
            tags: MANAGED_TAG,
        });
    }
    for a in catalogue.agency_ids() {
        accounts.push(Account {
            name: format!("{}agency-{a}", target.prefix),
            file: out.join("agencies").join(format!("{a}.env")),
            permissions: agency_permissions(a),
            lines: vec![
                ("GOVBUS_ROLE".into(), "agency".into()),
                ("GOVBUS_AGENCY".into(), a.into()),
                ("GOVBUS_QUEUE".into(), wire::agency_queue(a)),
                (
                    "GOVBUS_DEAD_LETTER_QUEUE".into(),
                    format!("{}.dlq", wire::agency_queue(a)),
                ),
                (
                    "GOVBUS_PLATFORM_KEY_ID".into(),
                    target.platform_key.0.clone(),
                ),
                (
                    "GOVBUS_PLATFORM_PUBLIC_KEY".into(),
                    target.platform_key.1.clone(),
                ),
            ],
            workflow: workflow_lines(target, Role::Agency, a)?,
            tags: MANAGED_TAG,
        });
    }
    // Links (articles 32, 33): the account a linked platform's shovel reads our
    // `platform.<id>` with (`link-to-<id>`), and the account the shovel from a sending
    // platform writes our ingest with (`link-from-<id>`): two accounts when a platform both
    // sends here and receives from here. Every listed platform gets its reader, so the link
    // is there before a first grant to it comes through the workflow (article 37); its file
    // carries the platform token that platform forwards applications here with
    // (`GOVBUS_API_TOKEN`, role platform), for its `workflow.platform_tokens`.
    for p in &catalogue.file.platforms {
        accounts.push(Account {
            name: format!("{}link-to-{}", target.prefix, p.id),
            file: out.join("links").join(format!("to-{}.env", p.id)),
            permissions: link_reader_permissions(&p.id),
            lines: vec![
                ("GOVBUS_ROLE".into(), "link".into()),
                ("GOVBUS_LINK_FROM".into(), catalogue.platform_id.clone()),
                ("GOVBUS_LINK_TO".into(), p.id.clone()),
                ("GOVBUS_QUEUE".into(), wire::platform_queue(&p.id)),
            ],
            workflow: workflow_lines(target, Role::Platform, &p.id)?,
            tags: MANAGED_TAG,
        });
    }
    for p in catalogue.source_platforms() {
        accounts.push(Account {
            name: format!("{}link-from-{}", target.prefix, p.id),
            file: out.join("links").join(format!("into-{}.env", p.id)),
            permissions: link_writer_permissions(&p.id),
            lines: vec![
                ("GOVBUS_ROLE".into(), "link".into()),
                ("GOVBUS_LINK_FROM".into(), p.id.clone()),
                ("GOVBUS_LINK_TO".into(), catalogue.platform_id.clone()),
            ],
            workflow: Vec::new(),
            tags: MANAGED_TAG,
        });
    }
    accounts.push(Account {
        name: format!("{}govbus-router", target.prefix),
        file: out.join("router.env"),
        permissions: router_permissions(),
        lines: vec![("GOVBUS_ROLE".into(), "router".into())],
        workflow: Vec::new(),
        tags: ROUTER_TAGS,
    });
    let mut done = Provisioned::default();
    for acc in &accounts {
        let existing = bus_schemas::envfile::read(&acc.file)
            .ok()
            .and_then(|mut env| env.remove("GOVBUS_PASSWORD"));
        let exists = m.user_exists(&acc.name).await?;
        if existing.is_some() && target.tokens.is_some() && !acc.workflow.is_empty() {
            // A token to re-issue (expiring, or after an id secret rotation): only the
            // workflow lines change; the account and its password stay.
            let text = std::fs::read_to_string(&acc.file)?;
            write_private(&acc.file, &set_lines(&text, &acc.workflow))?;
            done.reissued.push(acc.name.clone());
        }
        let created = match (&existing, exists) {
            (Some(p), true) => {
                if acc.tags != MANAGED_TAG {
                    // Same password; tags an earlier version did not give (the router's).
                    m.put_user(&acc.name, p, acc.tags).await?;
                }
                false
            }
            (Some(p), false) => {
                m.put_user(&acc.name, p, acc.tags).await?;
                true
            }
            (None, _) => {
                let p = new_password()?;
                m.put_user(&acc.name, &p, acc.tags).await?;
                let mut text = format!(
                    "# govbus account {} (written by `govbus provision`; keep it secret, mode 0600)\n",
                    acc.name
                );
                let vhost_enc = enc(&m.vhost);
                for (k, v) in acc.lines.iter().chain(&acc.workflow).cloned().chain([
                    ("GOVBUS_ACCOUNT".into(), acc.name.clone()),
                    ("GOVBUS_PASSWORD".into(), p.clone()),
                    ("GOVBUS_VHOST".into(), m.vhost.clone()),
                    (
                        "GOVBUS__AMQP__URL".into(),
                        format!(
                            "{}://{}:{p}@{}/{vhost_enc}",
                            target.scheme, acc.name, target.host
                        ),
                    ),
                ]) {
                    text.push_str(&format!("{k}={v}\n"));
                }
                write_private(&acc.file, &text)?;
                true
            }
        };
        m.set_permissions(&acc.name, &acc.permissions).await?;
        if created {
            done.created.push(acc.name.clone());
        } else {
            done.unchanged.push(acc.name.clone());
        }
    }
    let wanted: std::collections::HashSet<&str> =
        accounts.iter().map(|a| a.name.as_str()).collect();
    for user in m.managed_users().await? {
        let ours = user.strip_prefix(&target.prefix).is_some_and(|rest| {
            rest.starts_with("dept-") || rest.starts_with("agency-") || rest.starts_with("link-")
        });
        if ours && !wanted.contains(user.as_str()) {
            m.delete_user(&user).await?;
            let rest = &user[target.prefix.len()..];
            let file = match rest.split_once('-') {
                Some(("dept", id)) => out.join("departments").join(format!("{id}.env")),
                Some(("link", _)) => {
                    done.revoked.push(user);
                    continue;
                }
                Some((_, id)) => out.join("agencies").join(format!("{id}.env")),
                None => continue,
            };
            let _ = std::fs::remove_file(file);
            done.revoked.push(user);
        }
    }
    done.links = shovels(m, catalogue, target, out).await?;
    Ok(done)
}

/// The shovel's name for the link from platform `source`.
pub fn shovel_name(prefix: &str, source: &str) -> String {
    format!("{prefix}govbus-link-{source}")
}

/// Declares, on this broker, the shovel of each link from a sending platform (it pulls):
/// from `platform.<this id>` on the sender, read with the account in
/// `DIR/links/from-<sender>.env` (the file the sender's `govbus provision` wrote as
/// `links/to-<this id>.env`), to this platform's `govbus.ingest`, keeping the routing key,
/// written with this platform's link account, acknowledged at the source only once this
/// broker has confirmed (`on-confirm`). A link whose file has not arrived yet is reported,
/// not declared.
async fn shovels(
    m: &Management,
    catalogue: &Catalogue,
    target: &Target,
    out: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for p in catalogue.source_platforms() {
        let name = shovel_name(&target.prefix, &p.id);
        let Some(link) = &p.link else {
            said.push(format!(
                "link from `{}`: no `link` in its catalogue entry; no shovel declared",
                p.id
            ));
            continue;
        };
        let from_file = out.join("links").join(format!("from-{}.env", p.id));
        let Ok(reader) = bus_schemas::envfile::read(&from_file) else {
            said.push(format!(
                "link from `{}`: waiting for {} (the file platform `{}`'s `govbus provision` writes as links/to-{}.env); no shovel declared yet",
                p.id,
                from_file.display(),
                p.id,
                catalogue.platform_id
            ));
            continue;
        };
        let (Some(ruser), Some(rpass)) =
            (reader.get("GOVBUS_ACCOUNT"), reader.get("GOVBUS_PASSWORD"))
        else {
            anyhow::bail!(
                "{}: GOVBUS_ACCOUNT or GOVBUS_PASSWORD is missing; copy the file platform `{}` wrote",
                from_file.display(),
                p.id
            );
        };
        let into_file = out.join("links").join(format!("into-{}.env", p.id));
        let writer = bus_schemas::envfile::read(&into_file)?;
        let (Some(wuser), Some(wpass)) =
            (writer.get("GOVBUS_ACCOUNT"), writer.get("GOVBUS_PASSWORD"))
        else {
            anyhow::bail!(
                "{}: GOVBUS_ACCOUNT or GOVBUS_PASSWORD is missing",
                into_file.display()
            );
        };
        let (scheme, rest) = link
            .url
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("platform `{}`: link.url has no scheme", p.id))?;
        // Query options (amqps: `cacertfile`, `verify=verify_peer`, `server_name_indication`)
        // go after the vhost, as the shovel's URI syntax wants them.
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        let host = host.trim_end_matches('/');
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let src_uri = format!(
            "{scheme}://{}:{}@{host}/{}{query}",
            enc(ruser),
            enc(rpass),
            enc(&link.vhost)
        );
        let dest_uri = format!(
            "{}://{}:{}@{}/{}",
            target.scheme,
            enc(wuser),
            enc(wpass),
            target.host,
            enc(&m.vhost)
        );
        m.put_shovel(
            &name,
            json!({
                "src-protocol": "amqp091",
                "src-uri": src_uri,
                "src-queue": wire::platform_queue(&catalogue.platform_id),
                "src-queue-args": {"x-queue-type": "quorum", "x-overflow": "reject-publish"},
                "src-prefetch-count": 1000,
                "dest-protocol": "amqp091",
                "dest-uri": dest_uri,
                "dest-exchange": wire::INGEST_EXCHANGE,
                "ack-mode": "on-confirm",
                "src-delete-after": "never",
                "reconnect-delay": 2,
            }),
        )
        .await?;
        said.push(format!(
            "link from `{}`: shovel `{name}` declared ({}/{} → this broker's govbus.ingest)",
            p.id,
            link.url,
            wire::platform_queue(&catalogue.platform_id)
        ));
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns are anchored, so `tax` cannot write under `taxation.` keys.
    #[test]
    fn anchored_patterns() {
        let p = department_permissions("tax");
        let re = p.topic_write.unwrap();
        assert_eq!(re, r"^tax\.[a-z0-9_]+\.[0-9]{1,2}$");
        assert_eq!(
            p.quarantine_topic_write.unwrap(),
            r"^tax\.[a-z0-9_]+(\.count)?$"
        );
        let r = link_reader_permissions("tianhe");
        assert_eq!(
            (r.configure.as_str(), r.write.as_str(), r.read.as_str()),
            (r"^platform\.tianhe$", "^$", r"^platform\.tianhe$")
        );
        let w = link_writer_permissions("city");
        assert_eq!(
            (w.configure.as_str(), w.write.as_str(), w.read.as_str()),
            ("^$", r"^govbus\.ingest$", "^$")
        );
        assert_eq!(w.topic_write.unwrap(), r"^city\.[a-z0-9_]+\.[0-9]{1,2}$");
        assert!(agency_permissions("a").read.starts_with('^'));
        assert!(agency_permissions("a").read.ends_with('$'));
        assert_eq!(enc("/"), "%2F");
    }
}
