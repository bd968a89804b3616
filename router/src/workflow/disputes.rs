//! Disputes and corrections (article 44). An agency disputes a delivered record by its
//! message id, saying what is wrong. The platform (an operator) checks within 3 working days
//! and records its finding: a technical cause is corrected by the platform at once (the record
//! is sent to the agency again from the latest version the router holds); a data error is
//! passed to the responsible department, which has 3 working days to publish a corrected
//! version through its adapter; an unfounded dispute is closed as not upheld. A correction
//! reaches every agency that received the record and still holds a grant for it, through the
//! ordinary routing (under each grant as it stands); the verification report names each past
//! recipient, whether it got the corrected version, and who was left out and why. The report
//! is archived with the dispute and readable by the agency that asked.
use bus_schemas::validate::today_in_shanghai;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use crate::ops::replay::Context;

use super::{
    events_query, insert_event_query, read_events,
    token::{Actor, Role},
    Event, Workflow, WorkflowError,
};

type Result<T> = std::result::Result<T, WorkflowError>;

/// Working days the platform has to check a dispute, and each side has to correct.
pub const CHECK_WORKING_DAYS: u32 = 3;

/// A dispute as stored (a row of `select_disputes!`).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Dispute {
    /// Id.
    pub id: i64,
    /// The agency that disputes.
    pub agency: String,
    /// The disputed delivery.
    pub message_id: String,
    /// Its item.
    pub item: String,
    /// Keyed hash of its record key (as in the ledger).
    pub key_hash: String,
    /// The version delivered.
    pub version: i64,
    /// The responsible department.
    pub department: String,
    /// What the agency says is wrong.
    pub problem: String,
    /// Day opened.
    pub opened_on: NaiveDate,
    /// The platform's check is due by.
    pub check_due: NaiveDate,
    /// `open`, `with_department` or `closed`.
    pub state: String,
    /// `technical`, `data` or `unfounded` once checked.
    pub cause: Option<String>,
    /// The platform's finding.
    pub finding: Option<String>,
    /// The correction is due by.
    pub fix_due: Option<NaiveDate>,
    /// The version that corrected it.
    pub corrected_version: Option<i64>,
    /// `corrected` or `not_upheld` once closed.
    pub outcome: Option<String>,
    /// Day closed.
    pub closed_on: Option<NaiveDate>,
    /// The verification report.
    pub report: Option<Value>,
}

macro_rules! select_disputes {
    ($rest:literal) => {
        concat!("SELECT id, agency, message_id, item, key_hash, version, department, problem, opened_on, check_due, state, cause, finding, fix_due, corrected_version, outcome, closed_on, report FROM disputes ", $rest)
    };
}

/// An agency's dispute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisputeRequest {
    /// The delivery's `message_id`.
    pub message_id: String,
    /// What is wrong.
    pub problem: String,
}

/// The platform's finding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingRequest {
    /// `technical`, `data` or `unfounded`.
    pub cause: String,
    /// What was found.
    pub note: String,
}

/// Records a step of a dispute; given the transaction of the change it records, a reader never
/// sees a state without its step, and a crash never leaves one.
async fn event<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: i64,
    role: &str,
    actor: &str,
    action: &str,
    note: &str,
) -> Result<()> {
    sqlx::query(insert_event_query!("dispute_events", "dispute"))
        .bind(id)
        .bind(role)
        .bind(actor)
        .bind(action)
        .bind(note)
        .execute(exec)
        .await?;
    Ok(())
}

fn may_see(actor: &Actor, d: &Dispute) -> bool {
    match actor.role {
        Role::Agency => d.agency == actor.subject,
        Role::Department => d.department == actor.subject,
        Role::Coordinator | Role::Operator => true,
        Role::Platform | Role::Portal => false,
    }
}

impl Workflow {
    async fn load_dispute(&self, id: i64) -> Result<Dispute> {
        sqlx::query_as::<_, Dispute>(select_disputes!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| WorkflowError::NotFound(format!("no dispute {id}")))
    }

    /// An agency disputes one of its deliveries.
    pub async fn dispute(&self, actor: &Actor, req: DisputeRequest) -> Result<Dispute> {
        if actor.role != Role::Agency {
            return Err(WorkflowError::Forbidden(
                "only the agency that received a record disputes it (use the agency's token)"
                    .into(),
            ));
        }
        if req.problem.trim().is_empty() {
            return Err(WorkflowError::Invalid(
                "say what is wrong with the record in `problem`".into(),
            ));
        }
        let cal = self.calendar()?;
        // The id as delivered, or under a later id secret version; the record's hash as the
        // tables in force keep it (the ledger keeps the hash of its time).
        let row = sqlx::query(
            "SELECT l.item, COALESCE(a.current, l.key_hash) AS key_hash, l.version, l.department
             FROM ledger l LEFT JOIN key_hash_aliases a ON a.item = l.item AND a.hash = l.key_hash
             WHERE l.agency = $1 AND l.message_id = COALESCE(
                 (SELECT ledger_id FROM delivery_id_aliases WHERE agency = $1 AND message_id = $2), $2)",
        )
            .bind(&actor.subject)
            .bind(&req.message_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| WorkflowError::NotFound(format!(
                "no delivery to {} with message id {} in the ledger; give the message_id of a record you received",
                actor.subject, req.message_id
            )))?;
        let today = today_in_shanghai();
        let due = cal.add_working_days(today, CHECK_WORKING_DAYS);
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO disputes (agency, message_id, item, key_hash, version, department, problem, opened_on, check_due, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open') RETURNING id")
            .bind(&actor.subject)
            .bind(&req.message_id)
            .bind(row.get::<String, _>("item"))
            .bind(row.get::<String, _>("key_hash"))
            .bind(row.get::<i64, _>("version"))
            .bind(row.get::<String, _>("department"))
            .bind(&req.problem)
            .bind(today)
            .bind(due)
            .fetch_one(&mut *tx)
            .await?;
        event(
            &mut *tx,
            id,
            "agency",
            &actor.subject,
            "disputed",
            &format!("{}; check due {due}", req.problem),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(dispute = id, agency = %actor.subject, %due, "delivered record disputed");
        self.load_dispute(id).await
    }

    /// Disputes `actor` may see.
    pub async fn disputes(&self, actor: &Actor) -> Result<Vec<Dispute>> {
        let rows = sqlx::query_as::<_, Dispute>(select_disputes!("ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().filter(|d| may_see(actor, d)).collect())
    }

    /// One dispute with its steps, if `actor` may see it.
    pub async fn dispute_with_events(
        &self,
        actor: &Actor,
        id: i64,
    ) -> Result<(Dispute, Vec<Event>)> {
        let d = self.load_dispute(id).await?;
        if !may_see(actor, &d) {
            return Err(WorkflowError::NotFound(format!("no dispute {id} of yours")));
        }
        let events =
            read_events(self.pool(), events_query!("dispute_events", "dispute"), id).await?;
        Ok((d, events))
    }

    /// The platform records what its check found.
    pub async fn finding(&self, actor: &Actor, id: i64, req: FindingRequest) -> Result<Dispute> {
        if actor.role != Role::Operator {
            return Err(WorkflowError::Forbidden(
                "the platform's operators check disputes (use an operator token)".into(),
            ));
        }
        let cal = self.calendar()?;
        let d = self.load_dispute(id).await?;
        if d.state != "open" {
            return Err(WorkflowError::Conflict(format!(
                "dispute {id} is {} already",
                d.state
            )));
        }
        if req.note.trim().is_empty() {
            return Err(WorkflowError::Invalid(
                "say what the check found in `note`".into(),
            ));
        }
        let today = today_in_shanghai();
        let fix_due = cal.add_working_days(today, CHECK_WORKING_DAYS);
        match req.cause.as_str() {
            "technical" => {
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query("UPDATE disputes SET cause = 'technical', finding = $2, fix_due = $3 WHERE id = $1 AND state = 'open' AND cause IS NULL")
                    .bind(id)
                    .bind(&req.note)
                    .bind(fix_due)
                    .execute(&mut *tx)
                    .await?;
                if changed.rows_affected() == 0 {
                    return Err(found_first(id));
                }
                event(&mut *tx, id, "operator", &actor.subject, "found: technical", &req.note).await?;
                tx.commit().await?;
                // The platform's correction: the record sent again from the latest version held.
                let r = crate::ops::replay::replay_records(&Context::of_router(&self.shared, &self.connector, &self.cfg.catalogue), &d.agency, &d.item, None, Some(&d.key_hash))
                    .await
                    .map_err(|e| WorkflowError::Unavailable(format!("the record could not be sent again: {e:#}; retry")))?;
                event(self.pool(), id, "platform", "govbus", "sent again", &format!("{}: {} delivered", r.id, r.delivered)).await?;
                let report = self.report(&d, "technical", &req.note, None).await?;
                self.close(&d, "corrected", None, report).await
            }
            "data" => {
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query("UPDATE disputes SET state = 'with_department', cause = 'data', finding = $2, fix_due = $3 WHERE id = $1 AND state = 'open' AND cause IS NULL")
                    .bind(id)
                    .bind(&req.note)
                    .bind(fix_due)
                    .execute(&mut *tx)
                    .await?;
                if changed.rows_affected() == 0 {
                    return Err(found_first(id));
                }
                event(&mut *tx, id, "operator", &actor.subject, "found: data error", &req.note).await?;
                event(&mut *tx, id, "platform", "govbus", "department notified", &format!("{} to publish a corrected version through its adapter by {fix_due}", d.department)).await?;
                tx.commit().await?;
                tracing::warn!(dispute = id, department = %d.department, %fix_due, "disputed record: the department is to publish a correction");
                self.load_dispute(id).await
            }
            "unfounded" => {
                let mut tx = self.pool().begin().await?;
                let changed = sqlx::query("UPDATE disputes SET cause = 'unfounded', finding = $2 WHERE id = $1 AND state = 'open' AND cause IS NULL")
                    .bind(id)
                    .bind(&req.note)
                    .execute(&mut *tx)
                    .await?;
                if changed.rows_affected() == 0 {
                    return Err(found_first(id));
                }
                event(&mut *tx, id, "operator", &actor.subject, "found: not upheld", &req.note).await?;
                tx.commit().await?;
                let report = self.report(&d, "unfounded", &req.note, None).await?;
                self.close(&d, "not_upheld", None, report).await
            }
            other => Err(WorkflowError::Invalid(format!(
                "cause `{other}`: use `technical` (the platform corrects it), `data` (the department does) or `unfounded`"
            ))),
        }
    }

    /// The verification report: every agency that received the record, and for each whether
    /// it has the corrected version, or why not.
    async fn report(
        &self,
        d: &Dispute,
        cause: &str,
        finding: &str,
        corrected: Option<i64>,
    ) -> Result<Value> {
        let routing = self.shared.routing();
        let today = today_in_shanghai();
        let mut recipients = Vec::new();
        let mut pending = 0;
        // Agency → the version of the record it holds, for every agency at once.
        let held: Option<Value> = sqlx::query_scalar(
            "SELECT held FROM record_versions WHERE item = $1 AND key_hash = $2",
        )
        .bind(&d.item)
        .bind(&d.key_hash)
        .fetch_optional(self.pool())
        .await?;
        for agency in routing.catalogue.agency_ids() {
            let Some(version) = held.as_ref().and_then(|h| h.get(agency)?.as_i64()) else {
                continue;
            };
            let granted = routing
                .catalogue
                .grants_by_item
                .get(&d.item)
                .into_iter()
                .flatten()
                .any(|g| g.agency == agency && g.in_force(today));
            let status = match corrected {
                Some(c) if version >= c => format!("has the corrected version {version}"),
                Some(_) if !granted => format!(
                    "left out: holds no grant of {} in force today; has version {version}",
                    d.item
                ),
                Some(_) => {
                    pending += 1;
                    format!("waiting: has version {version}")
                }
                None => format!("has version {version}"),
            };
            recipients.push(json!({ "agency": agency, "version": version, "grant_in_force": granted, "status": status }));
        }
        Ok(json!({
            "dispute": d.id,
            "agency": d.agency,
            "message_id": d.message_id,
            "item": d.item,
            "version_disputed": d.version,
            "problem": d.problem,
            "opened_on": d.opened_on,
            "cause": cause,
            "finding": finding,
            "corrected_version": corrected,
            "recipients": recipients,
            "pending": pending,
            "made_on": today,
        }))
    }

    async fn close(
        &self,
        d: &Dispute,
        outcome: &str,
        corrected: Option<i64>,
        report: Value,
    ) -> Result<Dispute> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query("UPDATE disputes SET state = 'closed', outcome = $2, corrected_version = $3, closed_on = $4, report = $5 WHERE id = $1 AND state <> 'closed'")
            .bind(d.id)
            .bind(outcome)
            .bind(corrected)
            .bind(today_in_shanghai())
            .bind(&report)
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(WorkflowError::Conflict(format!(
                "dispute {} was closed by another step first",
                d.id
            )));
        }
        event(
            &mut *tx,
            d.id,
            "platform",
            "govbus",
            "report archived and sent",
            &format!(
                "{outcome}; readable by {} at /api/disputes/{}",
                d.agency, d.id
            ),
        )
        .await?;
        tx.commit().await?;
        self.load_dispute(d.id).await
    }

    /// Closes each dispute passed to a department once its corrected version has reached
    /// every past recipient that still holds a grant; notes those past their fix date.
    pub async fn settle_disputes(&self) -> Result<()> {
        let waiting = sqlx::query_as::<_, Dispute>(select_disputes!(
            "WHERE state = 'with_department' ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        for d in waiting {
            let latest: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM latest_records WHERE item = $1 AND key_hash = $2",
            )
            .bind(&d.item)
            .bind(&d.key_hash)
            .fetch_optional(self.pool())
            .await?;
            match latest {
                Some(v) if v > d.version => {
                    let report = self
                        .report(&d, "data", d.finding.as_deref().unwrap_or(""), Some(v))
                        .await?;
                    if report["pending"].as_i64() == Some(0) {
                        self.close(&d, "corrected", Some(v), report).await?;
                        tracing::info!(
                            dispute = d.id,
                            version = v,
                            "disputed record corrected and delivered"
                        );
                    }
                }
                _ => {
                    if d.fix_due.is_some_and(|due| due < today_in_shanghai()) {
                        let noted: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dispute_events WHERE dispute = $1 AND action = 'correction overdue')")
                            .bind(d.id)
                            .fetch_one(self.pool())
                            .await?;
                        if !noted {
                            event(
                                self.pool(),
                                d.id,
                                "platform",
                                "govbus",
                                "correction overdue",
                                &format!("{} has not published a corrected version", d.department),
                            )
                            .await?;
                            tracing::warn!(dispute = d.id, department = %d.department, "correction overdue");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The answer to a finding when another finding on the same dispute was recorded first.
fn found_first(id: i64) -> WorkflowError {
    WorkflowError::Conflict(format!(
        "dispute {id}: another finding was recorded first; read it with GET /api/disputes/{id}"
    ))
}
