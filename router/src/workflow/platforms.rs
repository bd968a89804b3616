//! Applications across platforms (article 37). An agency applies at its own platform for an
//! item another platform keeps (the item lists that platform among its `departments`); its
//! platform forwards the application to the other's workflow API with the platform token that
//! platform issued it (`workflow.platform_tokens`), and follows it there:
//!
//! - **There** the application names the forwarding platform as applicant and the agency as
//!   `on_behalf`; it is handed to the item's departments at once and answered by that
//!   platform's working days. An approval stores a grant to the forwarding platform, limited
//!   to its region, that comes into force when the platform confirms it takes the item
//!   (`POST /api/applications/{id}/confirm`); the item's records are then replayed to it. A
//!   grant it already holds that covers the fields puts nothing new in force.
//! - **Here** every `workflow.deadline_check_secs` the platform mirrors the other's steps and
//!   state into its own record of the application. On approval it stores, in one transaction,
//!   what the other grants it (its source of the item, unless the catalogue or an earlier
//!   approval already has one) and the agency's grant (the approved fields, identity and
//!   region: within the source, never wider), reloads, and confirms there. When the source
//!   was already here, it replays the records it holds to the agency itself.
//!
//! Nothing is sent before the receiving platform can take it: a record arriving before its
//! source is in force would be refused.
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    first_day, grant_of, insert_grant, token::Actor, Application, ApplyRequest, Event, Result,
    Workflow, WorkflowError, ANSWER_WORKING_DAYS,
};
use crate::{
    config::WorkflowConfig,
    routing::catalogue::{Identity, LinkedPlatform},
};
use bus_schemas::validate::today_in_shanghai;

/// The client other platforms' workflow APIs are called with (their CA from
/// `workflow.platform_ca_file` besides the system's roots).
pub fn client(cfg: &WorkflowConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(p) = &cfg.platform_ca_file {
        let pem = std::fs::read(p).map_err(|e| {
            anyhow::anyhow!("cannot read workflow.platform_ca_file {}: {e}", p.display())
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "workflow.platform_ca_file {} is not a PEM certificate: {e}",
                p.display()
            )
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b.build()?)
}

/// A forwarded application as the other platform answers `GET /api/applications/{id}`.
#[derive(serde::Deserialize)]
struct Remote {
    application: Application,
    events: Vec<Event>,
}

impl Workflow {
    /// `method <workflow_api>/api<path>` on platform `p` with the token it issued this one.
    async fn call_platform(
        &self,
        p: &LinkedPlatform,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let Some(base) = p.workflow_api.as_deref() else {
            return Err(WorkflowError::Invalid(format!(
                "platform `{}` has no workflow_api in the catalogue: applications for its items cannot be forwarded until the operator adds it",
                p.id
            )));
        };
        let Some(token) = self.cfg.workflow.platform_tokens.get(&p.id) else {
            return Err(WorkflowError::Unavailable(format!(
                "this platform holds no token for platform `{0}`'s workflow API: set \
                 workflow.platform_tokens.{0} (GOVBUS__WORKFLOW__PLATFORM_TOKENS__{1}) to the \
                 token its operator issued (`govbus workflow token --role platform --subject {2}`)",
                p.id,
                p.id.to_uppercase(),
                self.shared.routing().catalogue.platform_id
            )));
        };
        let url = format!("{}/api{path}", base.trim_end_matches('/'));
        let mut r = self.platforms.request(method, &url).bearer_auth(&token.0);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| {
            tracing::warn!(platform = %p.id, error = %e, "cannot reach another platform's workflow API");
            WorkflowError::Unavailable(format!(
                "platform `{}`'s workflow API ({base}) cannot be reached now; retry",
                p.id
            ))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let said = v["error"].as_str().unwrap_or("no reason given").to_string();
        Err(match status.as_u16() {
            400 => WorkflowError::Invalid(format!("platform `{}` refused it: {said}", p.id)),
            401 | 403 => WorkflowError::Unavailable(format!(
                "platform `{}` does not accept this platform's token ({status}: {said}); ask its operator for a new one",
                p.id
            )),
            404 => WorkflowError::NotFound(format!("platform `{}`: {said}", p.id)),
            409 => WorkflowError::Conflict(format!("platform `{}`: {said}", p.id)),
            _ => WorkflowError::Unavailable(format!(
                "platform `{}` answered {status}: {said}; retry",
                p.id
            )),
        })
    }

    /// An agency here applies for platform `p`'s item: recorded here and forwarded there in
    /// one step (a refusal there, or no answer, leaves nothing here).
    pub(super) async fn apply_there(
        &self,
        actor: &Actor,
        req: &ApplyRequest,
        identity: Identity,
        p: &LinkedPlatform,
    ) -> Result<Application> {
        let today = today_in_shanghai();
        let due = self
            .calendar()?
            .add_working_days(today, ANSWER_WORKING_DAYS);
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO applications (agency, item, departments, fields, identity, legal_basis, purpose, valid_until, submitted_on, answer_due, state, forwarded_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'submitted', $3[1]) RETURNING id")
            .bind(&actor.subject)
            .bind(&req.item)
            .bind(vec![p.id.clone()])
            .bind(&req.fields)
            .bind(identity.as_str())
            .bind(&req.legal_basis)
            .bind(&req.purpose)
            .bind(req.valid_until)
            .bind(today)
            .bind(due)
            .fetch_one(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            id,
            "agency",
            &actor.subject,
            "applied",
            &format!(
                "{} field(s) of {}, kept by platform {}",
                req.fields.len(),
                req.item,
                p.id
            ),
        )
        .await?;
        let there = self
            .call_platform(
                p,
                Method::POST,
                "/applications",
                Some(json!({
                    "item": req.item, "fields": req.fields, "identity": identity.as_str(),
                    "legal_basis": req.legal_basis, "purpose": req.purpose,
                    "valid_until": req.valid_until, "on_behalf": actor.subject,
                })),
            )
            .await?;
        let remote: Application = serde_json::from_value(there).map_err(|e| {
            WorkflowError::Unavailable(format!(
                "platform `{}` answered with no application ({e}); retry",
                p.id
            ))
        })?;
        sqlx::query("UPDATE applications SET remote_id = $2, answer_due = $3, remote_events = 1 WHERE id = $1")
            .bind(id)
            .bind(remote.id)
            .bind(remote.answer_due)
            .execute(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            id,
            "platform",
            "govbus",
            "forwarded",
            &format!(
                "to platform {} as its application {}; its departments ({}) answer by {} (its working days)",
                p.id,
                remote.id,
                remote.departments.join(", "),
                remote.answer_due
            ),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(application = id, platform = %p.id, remote = remote.id, item = %req.item, "application forwarded to another platform");
        self.load(id).await
    }

    /// Platform `actor` confirms it takes the item it was granted through application `id`:
    /// the grant comes into force and the item's records are replayed to it. Confirming again
    /// changes nothing.
    pub async fn confirm(&self, actor: &Actor, id: i64) -> Result<Application> {
        if actor.role != super::Role::Platform {
            return Err(WorkflowError::Forbidden(
                "only the platform an application was granted to confirms it".into(),
            ));
        }
        let app = self.load(id).await?;
        if app.agency != actor.subject {
            return Err(WorkflowError::NotFound(format!(
                "no application {id} of yours"
            )));
        }
        if app.state != "closed" || app.outcome.as_deref() == Some("refused") {
            return Err(WorkflowError::Conflict(format!(
                "application {id} is {}{}: there is no grant to confirm",
                app.state,
                app.outcome
                    .as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            )));
        }
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE workflow_grants SET in_force = true WHERE application = $1 AND NOT in_force",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(app);
        }
        Self::event(
            &mut tx,
            id,
            "platform",
            &actor.subject,
            "confirmed",
            "the platform takes the item: the grant is in force and the item's records are sent to it",
        )
        .await?;
        tx.commit().await?;
        tracing::info!(application = id, platform = %app.agency, item = %app.item, "another platform confirmed its grant; putting it in force");
        self.put_in_force(id).await;
        self.spawn_replay(id, app.agency.clone(), app.item.clone());
        self.load(id).await
    }

    /// Follows every application forwarded to another platform that is not settled here yet.
    pub async fn follow_forwarded(&self) {
        let open: Vec<(i64, i32)> = match sqlx::query_as(
            "SELECT id, remote_events FROM applications WHERE remote_id IS NOT NULL AND NOT remote_confirmed ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read forwarded applications now; retrying");
                return;
            }
        };
        for (id, seen) in open {
            if let Err(e) = self.follow(id, seen).await {
                tracing::warn!(application = id, error = %e, "cannot follow a forwarded application now; retrying");
            }
        }
    }

    /// Mirrors application `id`'s steps and state from the platform it was forwarded to, and
    /// puts an approval in force here.
    async fn follow(&self, id: i64, seen: i32) -> Result<()> {
        let app = self.load(id).await?;
        let (Some(platform), Some(remote_id)) = (app.forwarded_to.clone(), app.remote_id) else {
            return Ok(());
        };
        let Some(p) = self
            .shared
            .routing()
            .catalogue
            .linked_platform(&platform)
            .cloned()
        else {
            return Err(WorkflowError::Invalid(format!(
                "platform `{platform}` is no longer in the catalogue"
            )));
        };
        let v = self
            .call_platform(&p, Method::GET, &format!("/applications/{remote_id}"), None)
            .await?;
        let there: Remote = serde_json::from_value(v).map_err(|e| {
            WorkflowError::Unavailable(format!("platform `{platform}` answered oddly: {e}"))
        })?;
        let r = &there.application;
        let mut tx = self.pool().begin().await?;
        // Its steps after the first (the application itself, recorded here already).
        for e in there.events.iter().skip(seen.max(1) as usize) {
            Self::event(
                &mut tx,
                id,
                &e.role,
                &format!("{platform}:{}", e.actor),
                &e.action,
                &e.note,
            )
            .await?;
        }
        let closed_here = app.state == "closed";
        sqlx::query("UPDATE applications SET remote_events = $2, answer_due = $3, answered_on = $4, escalated_on = $5, escalation = $6, state = CASE WHEN state = 'closed' THEN state ELSE $7 END WHERE id = $1")
            .bind(id)
            .bind(there.events.len().max(seen as usize) as i32)
            .bind(r.answer_due)
            .bind(r.answered_on)
            .bind(r.escalated_on)
            .bind(&r.escalation)
            .bind(if r.state == "closed" { &app.state } else { &r.state })
            .execute(&mut *tx)
            .await?;
        if r.state != "closed" {
            tx.commit().await?;
            return Ok(());
        }
        let granted = r.outcome.as_deref() != Some("refused");
        // Whether this application brought the item's source here (its records then come
        // from the other platform's replay, not from this one's).
        let mut new_source: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM platform_sources WHERE application = $1)",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if !closed_here {
            sqlx::query("UPDATE applications SET state = 'closed', outcome = $2, granted_fields = $3, closed_on = $4, closed_by = $5, grant_due = $6, remote_confirmed = NOT $7 WHERE id = $1")
                .bind(id)
                .bind(&r.outcome)
                .bind(&r.granted_fields)
                .bind(r.closed_on)
                .bind(&r.closed_by)
                .bind(r.grant_due)
                .bind(granted)
                .execute(&mut *tx)
                .await?;
            if granted {
                new_source = self.store_grant_here(&mut tx, &app, r, &platform).await?;
            }
        }
        tx.commit().await?;
        if !granted {
            return Ok(());
        }
        if !closed_here {
            self.put_in_force(id).await;
        }
        // Confirmed there: its grant comes into force and it replays the records, which reach
        // the agency through the new source. With a source here already, the records are
        // here: replay them to the agency.
        self.call_platform(
            &p,
            Method::POST,
            &format!("/applications/{remote_id}/confirm"),
            None,
        )
        .await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE applications SET remote_confirmed = true WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            id,
            "platform",
            "govbus",
            "in force",
            &format!(
                "the grant is in force here and confirmed to platform {platform}; {}",
                if new_source {
                    "it sends the item's records"
                } else {
                    "the records this platform holds are replayed to the agency"
                }
            ),
        )
        .await?;
        tx.commit().await?;
        if !new_source {
            self.spawn_replay(id, app.agency.clone(), app.item.clone());
        }
        Ok(())
    }

    /// Stores what platform `platform` granted through application `app` (`r` there): its
    /// source of the item unless there is one, and the agency's grant. Whether the source is new.
    async fn store_grant_here(
        &self,
        tx: &mut sqlx::PgConnection,
        app: &Application,
        r: &Application,
        platform: &str,
    ) -> Result<bool> {
        let fields = r.granted_fields.clone().unwrap_or_default();
        let identity = Identity::from_stored(&r.identity);
        let routing = self.shared.routing();
        let existing = routing.catalogue.sources.get(&app.item).cloned();
        let stored_source: Option<(Vec<String>, String, Option<String>)> =
            sqlx::query_as("SELECT fields, identity, region FROM platform_sources WHERE item = $1")
                .bind(&app.item)
                .fetch_optional(&mut *tx)
                .await?;
        // The agency's grant lies within what arrives: the source in force, else this grant.
        let region = match (&existing, &stored_source) {
            (Some((_, si)), _) => si.region.clone(),
            (None, Some((_, _, region))) => region.clone(),
            (None, None) => r.region.clone(),
        };
        let new_source = existing.is_none() && stored_source.is_none();
        if new_source {
            sqlx::query("INSERT INTO platform_sources (item, platform, fields, identity, region, application) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&app.item)
                .bind(platform)
                .bind(&fields)
                .bind(identity.as_str())
                .bind(&r.region)
                .bind(app.id)
                .execute(&mut *tx)
                .await?;
        }
        let from = first_day(&routing.catalogue, &app.item);
        let mut g = grant_of(
            &format!("app-{}", app.id),
            &app.agency,
            &app.item,
            &fields,
            identity,
            &app.legal_basis,
            &app.purpose,
            from,
            app.valid_until,
        );
        g.region = region;
        drop(routing);
        insert_grant(tx, &g, app.id, true).await?;
        Ok(new_source)
    }
}
