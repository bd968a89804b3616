//! The sharing workflow (articles 34–37): an agency applies for a catalogue item's fields; a
//! responsible department answers within 10 working days (approve, approve fewer fields, or
//! refuse with a reason); a late answer or a refusal escalates to the coordinator, who records
//! the outcome of mediation and, if still disputed, the decision. A grant approved at any
//! stage is kept in PostgreSQL beside the catalogue file's, in force at once (the router
//! reloads), and the item's existing records are replayed to the agency, which is how the
//! 5-working-day delivery deadline is met. Every step is recorded with its actor; closed
//! applications are published to every token holder.
//!
//! Deadlines are in working days of the configured [`Calendar`]; without one the workflow
//! answers 503 and says which setting to add.
pub mod api;
pub mod contacts;
pub mod disputes;
pub mod platforms;
pub mod token;
pub mod workdays;

use std::sync::Arc;

use bus_schemas::{amqp::Connector, validate::today_in_shanghai};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use crate::{
    config::RouterConfig,
    pipeline::shared::Shared,
    routing::catalogue::{field_within, Catalogue, Date, Grant, Identity, Item, SourceItem},
    routing::grants::ProjectionCache,
    workflow::workdays::Calendar,
};
use token::{Actor, Role, TokenKey};

/// Working days a department has to answer (article 36).
pub const ANSWER_WORKING_DAYS: u32 = 10;
/// Working days from approval to delivery (article 36).
pub const DELIVERY_WORKING_DAYS: u32 = 5;

/// Why a workflow request failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// No token, or not one this platform issued (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's holder may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such application (404).
    #[error("{0}")]
    NotFound(String),
    /// Not in a state that allows this step (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is wrong; the message says what to change (400).
    #[error("{0}")]
    Invalid(String),
    /// The workflow cannot run here now (no calendar, database down) (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for WorkflowError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "workflow database error");
        WorkflowError::Unavailable("the router's database is unreachable; retry".into())
    }
}

type Result<T> = std::result::Result<T, WorkflowError>;

/// An application as stored (a row of `select_applications!`).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Application {
    /// Id.
    pub id: i64,
    /// Applying agency.
    pub agency: String,
    /// Item applied for.
    pub item: String,
    /// Its responsible departments when applied for.
    pub departments: Vec<String>,
    /// Fields asked for.
    pub fields: Vec<String>,
    /// `full` or `pseudonym`.
    pub identity: String,
    /// Legal basis (article 35).
    pub legal_basis: String,
    /// Purpose of use.
    pub purpose: String,
    /// Last day asked for.
    pub valid_until: Option<NaiveDate>,
    /// Day applied (Asia/Shanghai).
    pub submitted_on: NaiveDate,
    /// Last day for the department's answer.
    pub answer_due: NaiveDate,
    /// `submitted`, `escalated`, `disputed` or `closed`.
    pub state: String,
    /// `granted`, `partially_granted` or `refused` once closed.
    pub outcome: Option<String>,
    /// Fields granted.
    pub granted_fields: Option<Vec<String>>,
    /// Day the department answered.
    pub answered_on: Option<NaiveDate>,
    /// Day it went to the coordinator.
    pub escalated_on: Option<NaiveDate>,
    /// Why it went to the coordinator.
    pub escalation: Option<String>,
    /// Day it closed.
    pub closed_on: Option<NaiveDate>,
    /// `department`, `mediation` or `decision`.
    pub closed_by: Option<String>,
    /// Deliveries due by (closing day + 5 working days) when granted.
    pub grant_due: Option<NaiveDate>,
    /// For a request outside the catalogue: the data asked for (`item` is empty).
    pub outside_catalogue: Option<String>,
    /// The platform the application was forwarded to (article 37): its id in `[[platform]]`.
    pub forwarded_to: Option<String>,
    /// Applications recorded before forwarding was real: the 5 working days the other
    /// platform had (no longer set).
    pub forward_due: Option<NaiveDate>,
    /// Forwarded by another platform: the agency there it applies for (`agency` is that
    /// platform).
    pub on_behalf: Option<String>,
    /// The region a grant to another platform is limited to (that platform's).
    pub region: Option<String>,
    /// Forwarded to another platform: the application's id there.
    pub remote_id: Option<i64>,
}

/// `SELECT <every application column> FROM applications <rest>`, as a literal.
macro_rules! select_applications {
    ($rest:literal) => {
        concat!("SELECT id, agency, item, departments, fields, identity, legal_basis, purpose, valid_until, submitted_on, answer_due, state, outcome, granted_fields, answered_on, escalated_on, escalation, closed_on, closed_by, grant_due, outside_catalogue, forwarded_to, forward_due, on_behalf, region, remote_id FROM applications ", $rest)
    };
}

/// One recorded step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339).
    pub at: String,
    /// Role of the actor (`platform` for deadlines).
    pub role: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Their note.
    pub note: String,
}

/// An agency's application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Item id (empty for a request outside the catalogue).
    #[serde(default)]
    pub item: String,
    /// Fields needed (schema paths, the record key among them; empty outside the catalogue).
    #[serde(default)]
    pub fields: Vec<String>,
    /// A request for data outside the catalogue: the department asked and the data needed.
    #[serde(default)]
    pub outside_catalogue: Option<OutsideCatalogue>,
    /// From another platform (its platform token): the agency there the application is for.
    #[serde(default)]
    pub on_behalf: Option<String>,
    /// `full` (default) or `pseudonym`.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Legal basis (article 35).
    pub legal_basis: String,
    /// Purpose of use.
    pub purpose: String,
    /// Last day needed; open-ended when absent.
    #[serde(default)]
    pub valid_until: Option<NaiveDate>,
}

/// What a request outside the catalogue asks for, and of whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutsideCatalogue {
    /// The department asked.
    pub department: String,
    /// The data needed, described.
    pub data: String,
}

/// A department's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerRequest {
    /// `approve` or `refuse`.
    pub decision: String,
    /// With `approve`: the fields granted, when fewer than asked (default: all asked).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// The reason (required with `refuse`).
    #[serde(default)]
    pub note: String,
}

/// The coordinator's record of mediation or decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// `mediation` or `decision`.
    pub stage: String,
    /// `grant`, `refuse`, or (mediation only) `disputed`.
    pub result: String,
    /// With `grant`: the fields granted (default: all asked).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// What was agreed or decided, and why.
    pub note: String,
}

/// The workflow's state and what it needs to put a grant in force.
pub struct Workflow {
    /// The router's shared state (routing, database).
    pub shared: Arc<Shared>,
    /// The router's config (the catalogue file, for reloads and replays).
    pub cfg: Arc<RouterConfig>,
    /// Projections (reloads reuse them).
    pub cache: Arc<ProjectionCache>,
    /// The broker (queues of newly granted agencies).
    pub connector: Connector,
    /// Working days; `None` when `workflow.calendar` is not set.
    pub calendar: Option<Arc<Calendar>>,
    /// API tokens.
    pub tokens: TokenKey,
    /// The client other platforms' workflow APIs are called with ([`platforms::client`]).
    pub platforms: reqwest::Client,
    /// The citizen's data-use log (keys and the portals' rate limit).
    pub subject_log: crate::ops::subject_log::SubjectLog,
}

impl Workflow {
    fn calendar(&self) -> Result<&Calendar> {
        self.calendar.as_deref().ok_or_else(|| {
            WorkflowError::Unavailable(
                "the sharing workflow needs a working-day calendar: set workflow.calendar in the router's config (see router/examples/workdays.toml)".into(),
            )
        })
    }

    fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The holder of a bearer token.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Actor> {
        let t = token.ok_or_else(|| {
            WorkflowError::Unauthenticated(
                "send the API token as `Authorization: Bearer <token>` (GOVBUS_API_TOKEN in your provisioning .env)".into(),
            )
        })?;
        let c = self
            .tokens
            .check(t, today_in_shanghai())
            .map_err(|e| WorkflowError::Unauthenticated(e.to_string()))?;
        if token::is_revoked(self.pool(), &c.id).await? {
            return Err(WorkflowError::Unauthenticated(format!(
                "the API token {} was revoked; ask the platform operator for a new one",
                c.id
            )));
        }
        Ok(c.actor)
    }

    /// Records a step of an application, in the transaction of the change it records: a
    /// reader never sees a state without its step, and a crash never leaves one.
    async fn event(
        tx: &mut sqlx::PgConnection,
        app: i64,
        role: &str,
        actor: &str,
        action: &str,
        note: &str,
    ) -> Result<()> {
        sqlx::query(insert_event_query!("application_events", "application"))
            .bind(app)
            .bind(role)
            .bind(actor)
            .bind(action)
            .bind(note)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// One application, if `actor` may see it.
    pub async fn get(&self, actor: &Actor, id: i64) -> Result<(Application, Vec<Event>)> {
        let app = self.load(id).await?;
        if !may_see(actor, &app) {
            return Err(WorkflowError::NotFound(format!(
                "no application {id} of yours"
            )));
        }
        let events = read_events(
            self.pool(),
            events_query!("application_events", "application"),
            id,
        )
        .await?;
        Ok((app, events))
    }

    async fn load(&self, id: i64) -> Result<Application> {
        sqlx::query_as::<_, Application>(select_applications!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| WorkflowError::NotFound(format!("no application {id}")))
    }

    /// The applications `actor` may see: an agency its own, a department those for its items,
    /// the coordinator and operators all.
    pub async fn list(&self, actor: &Actor) -> Result<Vec<Application>> {
        let rows = sqlx::query_as::<_, Application>(select_applications!("ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().filter(|a| may_see(actor, a)).collect())
    }

    /// Closed applications: published to every token holder (article 36).
    pub async fn outcomes(&self) -> Result<Vec<Application>> {
        Ok(sqlx::query_as::<_, Application>(select_applications!(
            "WHERE state = 'closed' ORDER BY closed_on, id"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    /// An agency applies.
    pub async fn apply(&self, actor: &Actor, req: ApplyRequest) -> Result<Application> {
        if actor.role != Role::Agency && actor.role != Role::Platform {
            return Err(WorkflowError::Forbidden(
                "only an agency applies for catalogue items (use the agency's token), or another platform for one of its agencies".into(),
            ));
        }
        let cal = self.calendar()?;
        if let Some(o) = req.outside_catalogue.clone() {
            if actor.role == Role::Platform {
                return Err(WorkflowError::Invalid(
                    "another platform forwards applications for catalogue items only".into(),
                ));
            }
            return self.apply_outside(actor, &req, o).await;
        }
        let today = today_in_shanghai();
        let routing = self.shared.routing();
        let cat = &routing.catalogue;
        let Some((item, _)) = cat.items.get(&req.item) else {
            return Err(WorkflowError::Invalid(format!(
                "item `{}` is not in the catalogue; items: {}",
                req.item,
                sorted(cat.items.keys())
            )));
        };
        if req.legal_basis.trim().is_empty() || req.purpose.trim().is_empty() {
            return Err(WorkflowError::Invalid(
                "legal_basis and purpose are required (article 35)".into(),
            ));
        }
        let identity = req.identity.unwrap_or(Identity::Full);
        // From another platform: the grant asked for is to that platform, limited to its region.
        let (on_behalf, region) = match actor.role {
            Role::Platform => applying_platform(cat, &actor.subject, &req, item)?,
            _ => (None, None),
        };
        let mut candidate = grant_of(
            "application",
            &actor.subject,
            &req.item,
            &req.fields,
            identity,
            &req.legal_basis,
            &req.purpose,
            first_day(cat, &req.item),
            req.valid_until,
        );
        candidate.region = region.clone();
        // Another platform's item arrives limited to what it grants here: so is the agency's.
        if let Some((_, si)) = cat.sources.get(&req.item) {
            candidate.region = si.region.clone();
        }
        let problems = cat.check_grant(&candidate);
        if !problems.is_empty() {
            return Err(WorkflowError::Invalid(problems.join("; ")));
        }
        if actor.role == Role::Platform {
            keeps_division(cat, &candidate)?;
            check_receives(cat, &candidate)?;
        }
        // Another platform's item: applied for there (article 37).
        if let Some(p) = cat.item_platform(&req.item) {
            if actor.role == Role::Agency {
                let p = p.clone();
                drop(routing);
                return self.apply_there(actor, &req, identity, &p).await;
            }
        }
        let due = cal.add_working_days(today, ANSWER_WORKING_DAYS);
        // The application, its first step and its forwarding in one transaction: a bad
        // district leaves no application behind.
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO applications (agency, item, departments, fields, identity, legal_basis, purpose, valid_until, submitted_on, answer_due, state, on_behalf, region) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'submitted', $11, $12) RETURNING id")
            .bind(&actor.subject)
            .bind(&req.item)
            .bind(&item.departments)
            .bind(&req.fields)
            .bind(identity.as_str())
            .bind(&req.legal_basis)
            .bind(&req.purpose)
            .bind(req.valid_until)
            .bind(today)
            .bind(due)
            .bind(&on_behalf)
            .bind(&region)
            .fetch_one(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            id,
            actor.role.as_str(),
            &actor.subject,
            "applied",
            &match &on_behalf {
                Some(a) => format!(
                    "{} field(s) of {} for its agency {a}; handed to {} at once; answer due {due}",
                    req.fields.len(),
                    req.item,
                    item.departments.join(", ")
                ),
                None => format!(
                    "{} field(s) of {}; answer due {due}",
                    req.fields.len(),
                    req.item
                ),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(application = id, agency = %actor.subject, item = %req.item, %due, "application received");
        self.load(id).await
    }

    /// A request for data outside the catalogue: the same path, the two parties named; an
    /// approval records the outcome (there is no item to route until the catalogue lists one).
    async fn apply_outside(
        &self,
        actor: &Actor,
        req: &ApplyRequest,
        o: OutsideCatalogue,
    ) -> Result<Application> {
        let cal = self.calendar()?;
        if !req.item.is_empty() || !req.fields.is_empty() {
            return Err(WorkflowError::Invalid(
                "a request outside the catalogue names no item or fields: describe the data in outside_catalogue.data".into(),
            ));
        }
        if !self
            .shared
            .routing()
            .catalogue
            .department_ids()
            .any(|d| d == o.department)
        {
            return Err(WorkflowError::Invalid(format!(
                "department `{}` is not in the catalogue",
                o.department
            )));
        }
        if o.data.trim().is_empty()
            || req.legal_basis.trim().is_empty()
            || req.purpose.trim().is_empty()
        {
            return Err(WorkflowError::Invalid(
                "describe the data, and give legal_basis and purpose (article 35)".into(),
            ));
        }
        let today = today_in_shanghai();
        let due = cal.add_working_days(today, ANSWER_WORKING_DAYS);
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO applications (agency, item, departments, fields, identity, legal_basis, purpose, submitted_on, answer_due, state, outside_catalogue) VALUES ($1, '', $2, '{}', 'full', $3, $4, $5, $6, 'submitted', $7) RETURNING id")
            .bind(&actor.subject)
            .bind(vec![o.department.clone()])
            .bind(&req.legal_basis)
            .bind(&req.purpose)
            .bind(today)
            .bind(due)
            .bind(&o.data)
            .fetch_one(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            id,
            "agency",
            &actor.subject,
            "applied outside the catalogue",
            &format!(
                "{} asked of {}; answer due {due}",
                actor.subject, o.department
            ),
        )
        .await?;
        tx.commit().await?;
        self.load(id).await
    }

    /// A responsible department answers.
    pub async fn answer(&self, actor: &Actor, id: i64, req: AnswerRequest) -> Result<Application> {
        let app = self.load(id).await?;
        if actor.role != Role::Department || !app.departments.contains(&actor.subject) {
            return Err(WorkflowError::Forbidden(format!(
                "only a department responsible for `{}` ({}) answers this application",
                app.item,
                app.departments.join(", ")
            )));
        }
        self.calendar()?;
        self.escalate_overdue().await?;
        let app = self.load(id).await?;
        if app.state != "submitted" {
            return Err(WorkflowError::Conflict(format!(
                "application {id} is {}{}; the coordinator handles it now",
                app.state,
                app.escalation
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        let today = today_in_shanghai();
        match req.decision.as_str() {
            "approve" => {
                let fields = self.granted_fields(&app, req.fields)?;
                self.grant(&app, &fields, "department", actor, &req.note).await
            }
            "refuse" => {
                if req.note.trim().is_empty() {
                    return Err(WorkflowError::Invalid(
                        "a refusal needs its reason in `note` (article 36)".into(),
                    ));
                }
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query("UPDATE applications SET state = 'escalated', answered_on = $2, escalated_on = $2, escalation = 'refused by the department' WHERE id = $1 AND state = 'submitted'")
                    .bind(id)
                    .bind(today)
                    .execute(&mut *tx)
                    .await?;
                if changed.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(self.moved_on(id).await);
                }
                Self::event(&mut tx, id, "department", &actor.subject, "refused", &req.note)
                    .await?;
                Self::event(&mut tx, id, "platform", "govbus", "escalated", "refused by the department: to the coordinator for mediation")
                    .await?;
                tx.commit().await?;
                self.load(id).await
            }
            other => Err(WorkflowError::Invalid(format!(
                "decision `{other}`: use `approve` (with `fields` to grant fewer) or `refuse` (with the reason in `note`)"
            ))),
        }
    }

    /// The coordinator records mediation or a decision.
    pub async fn resolve(
        &self,
        actor: &Actor,
        id: i64,
        req: ResolveRequest,
    ) -> Result<Application> {
        if actor.role != Role::Coordinator {
            return Err(WorkflowError::Forbidden(
                "only the coordinator records mediation and decisions".into(),
            ));
        }
        self.calendar()?;
        let app = self.load(id).await?;
        let allowed = match req.stage.as_str() {
            "mediation" => app.state == "escalated",
            "decision" => app.state == "escalated" || app.state == "disputed",
            other => {
                return Err(WorkflowError::Invalid(format!(
                    "stage `{other}`: use `mediation` or `decision`"
                )))
            }
        };
        if !allowed {
            return Err(WorkflowError::Conflict(format!(
                "application {id} is {}; {} is for escalated{} applications",
                app.state,
                req.stage,
                if req.stage == "decision" {
                    " or disputed"
                } else {
                    ""
                }
            )));
        }
        if req.note.trim().is_empty() {
            return Err(WorkflowError::Invalid(
                "record what was agreed or decided, and why, in `note`".into(),
            ));
        }
        let today = today_in_shanghai();
        match req.result.as_str() {
            "grant" => {
                let fields = self.granted_fields(&app, req.fields)?;
                self.grant(&app, &fields, &req.stage, actor, &req.note)
                    .await
            }
            "refuse" => {
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query("UPDATE applications SET state = 'closed', outcome = 'refused', closed_on = $2, closed_by = $3 WHERE id = $1 AND state = ANY($4)")
                    .bind(id)
                    .bind(today)
                    .bind(&req.stage)
                    .bind(from_states(&req.stage))
                    .execute(&mut *tx)
                    .await?;
                if changed.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(self.moved_on(id).await);
                }
                Self::event(
                    &mut tx,
                    id,
                    "coordinator",
                    &actor.subject,
                    &format!("{}: refused", req.stage),
                    &req.note,
                )
                .await?;
                tx.commit().await?;
                self.load(id).await
            }
            "disputed" if req.stage == "mediation" => {
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query(
                    "UPDATE applications SET state = 'disputed' WHERE id = $1 AND state = 'escalated'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if changed.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(self.moved_on(id).await);
                }
                Self::event(
                    &mut tx,
                    id,
                    "coordinator",
                    &actor.subject,
                    "mediation: still disputed",
                    &req.note,
                )
                .await?;
                tx.commit().await?;
                self.load(id).await
            }
            other => Err(WorkflowError::Invalid(format!(
                "result `{other}`: use `grant`, `refuse`{}",
                if req.stage == "mediation" {
                    " or `disputed`"
                } else {
                    ""
                }
            ))),
        }
    }

    /// The answer to a step whose application another step changed first (it checked the state,
    /// then the conditional update found another).
    async fn moved_on(&self, id: i64) -> WorkflowError {
        match self.load(id).await {
            Ok(app) => WorkflowError::Conflict(format!(
                "application {id} is {} now: another step was recorded first; reload it",
                app.state
            )),
            Err(e) => e,
        }
    }

    /// The fields to grant: those given (a subset of those asked) or all asked.
    fn granted_fields(&self, app: &Application, given: Option<Vec<String>>) -> Result<Vec<String>> {
        let fields = given.unwrap_or_else(|| app.fields.clone());
        let extra: Vec<&String> = fields.iter().filter(|f| !app.fields.contains(f)).collect();
        if !extra.is_empty() {
            return Err(WorkflowError::Invalid(format!(
                "only fields asked for can be granted; not asked: {}",
                extra
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(fields)
    }

    /// Closes `app` with a grant of `fields`, puts it in force and replays the item's records.
    async fn grant(
        &self,
        app: &Application,
        fields: &[String],
        by: &str,
        actor: &Actor,
        note: &str,
    ) -> Result<Application> {
        let cal = self.calendar()?;
        let today = today_in_shanghai();
        let role = if by == "department" {
            "department"
        } else {
            "coordinator"
        };
        if app.outside_catalogue.is_some() {
            // Nothing to route until the catalogue lists the data: the outcome is recorded.
            let mut tx = self.pool().begin().await?;
            let changed = sqlx::query("UPDATE applications SET state = 'closed', outcome = 'granted', closed_on = $2, closed_by = $3, answered_on = CASE WHEN $3 = 'department' THEN $2 ELSE answered_on END WHERE id = $1 AND state = ANY($4)")
                .bind(app.id)
                .bind(today)
                .bind(by)
                .bind(from_states(by))
                .execute(&mut *tx)
                .await?;
            if changed.rows_affected() == 0 {
                tx.rollback().await?;
                return Err(self.moved_on(app.id).await);
            }
            Self::event(
                &mut tx,
                app.id,
                role,
                &actor.subject,
                "agreed outside the catalogue",
                &format!("{note}; the data is shared once the catalogue lists it as an item"),
            )
            .await?;
            tx.commit().await?;
            return self.load(app.id).await;
        }
        let routing = self.shared.routing();
        let identity = Identity::from_stored(&app.identity);
        let from = first_day(&routing.catalogue, &app.item);
        let mut g = grant_of(
            &format!("app-{}", app.id),
            &app.agency,
            &app.item,
            fields,
            identity,
            &app.legal_basis,
            &app.purpose,
            from,
            app.valid_until,
        );
        g.region = app.region.clone();
        let problems = routing.catalogue.check_grant(&g);
        if !problems.is_empty() {
            return Err(WorkflowError::Invalid(problems.join("; ")));
        }
        // To another platform: in force once it confirms it takes the item (its source), or
        // at once when a grant it holds already covers this one.
        let to_platform = routing.catalogue.linked_platform(&app.agency).is_some();
        if to_platform {
            keeps_division(&routing.catalogue, &g)?;
        }
        let covering = to_platform
            .then(|| covering(&routing.catalogue, &g).map(|c| c.id.clone()))
            .flatten();
        drop(routing);
        let outcome = if fields.len() < app.fields.len() {
            "partially_granted"
        } else {
            "granted"
        };
        let due = cal.add_working_days(today, DELIVERY_WORKING_DAYS);
        let mut tx = self.pool().begin().await?;
        // The state change first: it locks the application's row, so of two concurrent steps
        // the second sees the first's state and changes nothing (409), before any grant exists.
        let changed = sqlx::query("UPDATE applications SET state = 'closed', outcome = $2, granted_fields = $3, closed_on = $4, closed_by = $5, grant_due = $6, answered_on = CASE WHEN $5 = 'department' THEN $4 ELSE answered_on END WHERE id = $1 AND state = ANY($7)")
            .bind(app.id)
            .bind(outcome)
            .bind(fields)
            .bind(today)
            .bind(by)
            .bind(due)
            .bind(from_states(by))
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(self.moved_on(app.id).await);
        }
        if covering.is_none() {
            insert_grant(&mut tx, &g, app.id, !to_platform).await?;
        }
        let action = if by == "department" {
            outcome.to_string()
        } else {
            format!("{by}: {outcome}")
        };
        Self::event(
            &mut tx,
            app.id,
            role,
            &actor.subject,
            &action,
            &format!("{}; {note}", fields.join(", ")),
        )
        .await?;
        if to_platform {
            let step = match &covering {
                Some(c) => format!("platform {} already receives these fields under grant {c}; it delivers them to its agency", app.agency),
                None => format!("the grant to platform {} comes into force when it confirms it takes the item; the item's records are then sent to it", app.agency),
            };
            Self::event(
                &mut tx,
                app.id,
                "platform",
                "govbus",
                "awaiting the platform",
                &step,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(application = app.id, platform = %app.agency, item = %app.item, outcome, "grant to another platform approved; awaiting its confirmation");
            return self.load(app.id).await;
        }
        tx.commit().await?;
        tracing::info!(application = app.id, agency = %app.agency, item = %app.item, outcome, "grant approved; putting it in force");
        self.put_in_force(app.id).await;
        self.spawn_replay(app.id, app.agency.clone(), app.item.clone());
        self.load(app.id).await
    }

    /// Reloads the routing tables with the grants stored now (one approved or confirmed
    /// through application `id`).
    async fn put_in_force(&self, id: i64) {
        if let Err(e) = crate::pipeline::reload::apply(
            &self.shared,
            &self.cfg.catalogue,
            &self.cache,
            &self.connector,
        )
        .await
        {
            tracing::error!(error = %format!("{e:#}"), application = id, "the approved grant is stored but the catalogue could not be reloaded; it takes effect at the next reload");
        }
    }

    /// Sends the agency the item's existing records under its new grant, and records it.
    fn spawn_replay(&self, app: i64, agency: String, item: String) {
        let cfg = self.cfg.clone();
        let shared = self.shared.clone();
        let connector = self.connector.clone();
        tokio::spawn(async move {
            let pool = &shared.pool;
            let cx = crate::ops::replay::Context::of_router(&shared, &connector, &cfg.catalogue);
            let (action, note) = match crate::ops::replay::replay(&cx, &agency, &item, None).await {
                Ok(r) => (
                    "replayed",
                    format!(
                        "{}: {} latest records, {} delivered, {} not covered, {} refused",
                        r.id, r.records, r.delivered, r.not_granted, r.refused
                    ),
                ),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), application = app, "replay after approval failed; run `govbus replay` by hand");
                    (
                        "replay failed",
                        format!("{e:#}; run `govbus replay --agency {agency} --item {item}`"),
                    )
                }
            };
            let _ = record_event(
                pool,
                insert_event_query!("application_events", "application"),
                app,
                "platform",
                "govbus",
                action,
                &note,
            )
            .await;
        });
    }

    /// Escalates every application whose department did not answer in time. The state and
    /// its event are written in one statement: a reader never sees an escalation without its
    /// step (the suite once did, between the two), and a crash never leaves one.
    pub async fn escalate_overdue(&self) -> Result<Vec<i64>> {
        let today = today_in_shanghai();
        // One forwarded to another platform runs by that platform's deadlines (mirrored here).
        let ids: Vec<(i64, NaiveDate)> = sqlx::query_as(
            "WITH up AS (
                 UPDATE applications SET state = 'escalated', escalated_on = $1,
                        escalation = 'no answer within 10 working days'
                  WHERE state = 'submitted' AND answer_due < $1 AND remote_id IS NULL
              RETURNING id, answer_due),
             ev AS (
                 INSERT INTO application_events (application, role, actor, action, note)
                 SELECT id, 'platform', 'govbus', 'escalated',
                        'no answer by ' || to_char(answer_due, 'YYYY-MM-DD')
                        || ' (10 working days): to the coordinator for mediation'
                   FROM up ORDER BY id)
             SELECT id, answer_due FROM up ORDER BY id",
        )
        .bind(today)
        .fetch_all(self.pool())
        .await?;
        for (id, due) in &ids {
            tracing::warn!(application = id, %due, "application unanswered by its deadline; escalated to the coordinator");
        }
        Ok(ids.into_iter().map(|(id, _)| id).collect())
    }
}

/// `SELECT` of the steps of one application or dispute, times in Asia/Shanghai.
macro_rules! events_query {
    ($table:literal, $key:literal) => {
        concat!("SELECT to_char(at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+08:00\"') AS at, role, actor, action, note FROM ", $table, " WHERE ", $key, " = $1 ORDER BY id")
    };
}
pub(crate) use events_query;

/// The steps `query` (from [`events_query`]) reads for `id`.
async fn read_events(pool: &PgPool, query: &'static str, id: i64) -> Result<Vec<Event>> {
    Ok(sqlx::query(query)
        .bind(id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Event {
            at: r.get("at"),
            role: r.get("role"),
            actor: r.get("actor"),
            action: r.get("action"),
            note: r.get("note"),
        })
        .collect())
}

/// `INSERT` of one step of an application or dispute.
macro_rules! insert_event_query {
    ($table:literal, $key:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (",
            $key,
            ", role, actor, action, note) VALUES ($1, $2, $3, $4, $5)"
        )
    };
}
pub(crate) use insert_event_query;

/// Records one step of an application or dispute with `query` (from [`insert_event_query`]).
async fn record_event(
    pool: &PgPool,
    query: &'static str,
    id: i64,
    role: &str,
    actor: &str,
    action: &str,
    note: &str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(query)
        .bind(id)
        .bind(role)
        .bind(actor)
        .bind(action)
        .bind(note)
        .execute(pool)
        .await?;
    Ok(())
}

fn may_see(actor: &Actor, app: &Application) -> bool {
    match actor.role {
        Role::Agency | Role::Platform => app.agency == actor.subject,
        Role::Department => app.departments.contains(&actor.subject),
        Role::Coordinator | Role::Operator => true,
        Role::Portal => false,
    }
}

fn sorted<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = ids.map(String::as_str).collect();
    v.sort_unstable();
    v.join(", ")
}

#[allow(clippy::too_many_arguments)]
fn grant_of(
    id: &str,
    agency: &str,
    item: &str,
    fields: &[String],
    identity: Identity,
    legal_basis: &str,
    purpose: &str,
    from: NaiveDate,
    until: Option<NaiveDate>,
) -> Grant {
    Grant {
        id: id.to_string(),
        revision: 1,
        agency: agency.to_string(),
        item: item.to_string(),
        fields: fields.to_vec(),
        identity,
        legal_basis: legal_basis.to_string(),
        purpose: purpose.to_string(),
        valid_from: Date(from),
        valid_until: until.map(Date),
        region: None,
    }
}

// Applications from another platform (article 37; the forwarding and following are in
// `platforms`).

/// For an application forwarded by platform `subject`: the agency it is for, and the region
/// its grant is limited to (the platform's, when the item has a division field).
fn applying_platform(
    cat: &Catalogue,
    subject: &str,
    req: &ApplyRequest,
    item: &Item,
) -> Result<(Option<String>, Option<String>)> {
    let Some(p) = cat.linked_platform(subject) else {
        return Err(WorkflowError::Forbidden(format!(
            "platform `{subject}` is not among this catalogue's [[platform]] entries; its token \
             is accepted once the operator lists it"
        )));
    };
    let Some(agency) = req.on_behalf.clone().filter(|a| !a.trim().is_empty()) else {
        return Err(WorkflowError::Invalid(
            "a platform forwards an application of one of its agencies: name it in `on_behalf`"
                .into(),
        ));
    };
    if cat.item_platform(&item.id).is_some() {
        return Err(WorkflowError::Invalid(format!(
            "item `{}` is another platform's here ({}): apply there",
            item.id,
            item.departments.join(", ")
        )));
    }
    Ok((
        Some(agency),
        item.division_field.as_ref().map(|_| p.region.clone()),
    ))
}

/// A grant to a platform limited to its region carries the item's division field: the platform
/// delivers by region too, and refuses a source without it.
fn keeps_division(cat: &Catalogue, g: &Grant) -> Result<()> {
    let Some((item, _)) = cat.items.get(&g.item) else {
        return Ok(());
    };
    match (&g.region, &item.division_field) {
        (Some(_), Some(df)) if !field_within(df, &g.fields) => {
            Err(WorkflowError::Invalid(format!(
                "a grant to platform `{}` is limited to its region: its fields must hold item `{}`'s division field `{df}`",
                g.agency, g.item
            )))
        }
        _ => Ok(()),
    }
}

/// A grant in force to `g`'s recipient for `g`'s item that already gives everything `g`
/// asks (fields, identity, region: the bound a grant of a sent item is checked against).
fn covering<'c>(cat: &'c Catalogue, g: &Grant) -> Option<&'c Grant> {
    let today = today_in_shanghai();
    cat.grants_by_item
        .get(&g.item)?
        .iter()
        .find(|e| e.agency == g.agency && e.in_force(today) && SourceItem::of_grant(e).bounds(g))
}

/// The first day a grant of `item` approved today is in force: today, or the item's first
/// day of sharing if that is later.
fn first_day(cat: &Catalogue, item: &str) -> NaiveDate {
    let today = today_in_shanghai();
    cat.items
        .get(item)
        .map_or(today, |(i, _)| today.max(i.shared_from.0))
}

/// A platform receives one projection of an item (what its source is decoded with): one that
/// already receives the item may ask for what its grant covers, not more.
fn check_receives(cat: &Catalogue, g: &Grant) -> Result<()> {
    let held: Vec<&Grant> = cat
        .grants_by_item
        .get(&g.item)
        .into_iter()
        .flatten()
        .filter(|e| e.agency == g.agency)
        .collect();
    if held.is_empty() || covering(cat, g).is_some() {
        return Ok(());
    }
    Err(WorkflowError::Invalid(format!(
        "platform `{}` already receives item `{}` under grant {} ({}, identity {}): an \
         application through it can ask for those fields only; a wider grant to the platform \
         is a change of that grant in this platform's catalogue (ask its coordinator)",
        g.agency,
        g.item,
        held.iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        held[0].fields.join(", "),
        held[0].identity.as_str()
    )))
}

/// Stores a grant approved through the workflow, in force at once or (`in_force` false) when
/// the platform it names confirms.
async fn insert_grant(
    tx: &mut sqlx::PgConnection,
    g: &Grant,
    application: i64,
    in_force: bool,
) -> Result<()> {
    sqlx::query("INSERT INTO workflow_grants (id, application, agency, item, fields, identity, legal_basis, purpose, valid_from, valid_until, region, in_force) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .bind(&g.id)
        .bind(application)
        .bind(&g.agency)
        .bind(&g.item)
        .bind(&g.fields)
        .bind(g.identity.as_str())
        .bind(&g.legal_basis)
        .bind(&g.purpose)
        .bind(g.valid_from.0)
        .bind(g.valid_until.map(|d| d.0))
        .bind(&g.region)
        .bind(in_force)
        .execute(tx)
        .await?;
    Ok(())
}

/// The states from which a step by `by` (`department`, `mediation`, `decision`) may close or
/// change an application: every state change is conditional on it.
fn from_states(by: &str) -> Vec<&'static str> {
    match by {
        "department" => vec!["submitted"],
        "mediation" => vec!["escalated"],
        _ => vec!["escalated", "disputed"],
    }
}

/// Escalates overdue applications and closes corrected disputes every `every` until `stop`.
pub async fn deadlines(
    wf: Arc<Workflow>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    if wf.calendar.is_none() {
        return;
    }
    loop {
        // One router escalates and settles at a time: two would escalate an application twice.
        let round = async {
            if let Err(e) = wf.escalate_overdue().await {
                tracing::warn!(error = %e, "cannot check application deadlines now; retrying");
            }
            if let Err(e) = wf.settle_disputes().await {
                tracing::warn!(error = %e, "cannot check disputes now; retrying");
            }
            wf.follow_forwarded().await;
        };
        if let Err(e) =
            crate::store::jobs::once(&wf.shared.pool, crate::store::jobs::Job::Deadlines, round)
                .await
        {
            tracing::warn!(error = %e, "cannot take the deadline job's lock; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
