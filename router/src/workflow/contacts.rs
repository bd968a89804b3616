//! Joining (article 34): an agency registers its three contact roles (leader in charge,
//! sharing officer, technical officer) and reports each change within 5 working days; the
//! platform records when it was told and whether that was late. Contacts are personal data:
//! readable over the API by the agency itself, the coordinator and operators; never logged.
use bus_schemas::validate::today_in_shanghai;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{
    token::{Actor, Role},
    Workflow, WorkflowError,
};

type Result<T> = std::result::Result<T, WorkflowError>;

/// Working days an agency has to report a change of contacts.
pub const REPORT_WORKING_DAYS: u32 = 5;

/// One contact person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Name.
    pub name: String,
    /// Telephone.
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
}

/// An agency's contacts as registered or changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactsRequest {
    /// Leader in charge.
    pub leader: Person,
    /// Sharing officer.
    pub sharing_officer: Person,
    /// Technical officer.
    pub technical_officer: Person,
    /// The day the contacts changed (default: today).
    #[serde(default)]
    pub changed_on: Option<NaiveDate>,
}

/// A registration or change as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contacts {
    /// Id.
    pub id: i64,
    /// Agency.
    pub agency: String,
    /// Leader in charge.
    pub leader: Person,
    /// Sharing officer.
    pub sharing_officer: Person,
    /// Technical officer.
    pub technical_officer: Person,
    /// When they changed.
    pub changed_on: NaiveDate,
    /// When the platform was told.
    pub reported_on: NaiveDate,
    /// The last day to report it.
    pub report_due: NaiveDate,
    /// Reported after `report_due`.
    pub late: bool,
}

impl Workflow {
    /// An agency registers or changes its contacts.
    pub async fn report_contacts(&self, actor: &Actor, req: ContactsRequest) -> Result<Contacts> {
        if actor.role != Role::Agency {
            return Err(WorkflowError::Forbidden(
                "an agency reports its own contacts (use the agency's token)".into(),
            ));
        }
        for (role, p) in [
            ("leader", &req.leader),
            ("sharing_officer", &req.sharing_officer),
            ("technical_officer", &req.technical_officer),
        ] {
            if p.name.trim().is_empty() || (p.phone.is_none() && p.email.is_none()) {
                return Err(WorkflowError::Invalid(format!(
                    "{role}: a name and a telephone or e-mail are required (article 34)"
                )));
            }
        }
        let today = today_in_shanghai();
        let changed = req.changed_on.unwrap_or(today);
        if changed > today {
            return Err(WorkflowError::Invalid(format!(
                "changed_on {changed} is in the future; report a change once it happened"
            )));
        }
        let due = self
            .calendar()?
            .add_working_days(changed, REPORT_WORKING_DAYS);
        let late = today > due;
        let json = |p: &Person| serde_json::to_value(p).expect("a person serialises");
        let id: i64 = sqlx::query_scalar("INSERT INTO agency_contacts (agency, leader, sharing_officer, technical_officer, changed_on, reported_on, report_due, late) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id")
            .bind(&actor.subject)
            .bind(json(&req.leader))
            .bind(json(&req.sharing_officer))
            .bind(json(&req.technical_officer))
            .bind(changed)
            .bind(today)
            .bind(due)
            .bind(late)
            .fetch_one(self.pool())
            .await?;
        if late {
            tracing::warn!(agency = %actor.subject, %changed, %due, "contact change reported late");
        } else {
            tracing::info!(agency = %actor.subject, "contacts recorded");
        }
        Ok(Contacts {
            id,
            agency: actor.subject.clone(),
            leader: req.leader,
            sharing_officer: req.sharing_officer,
            technical_officer: req.technical_officer,
            changed_on: changed,
            reported_on: today,
            report_due: due,
            late,
        })
    }

    /// Recorded contacts, newest first: an agency its own, the coordinator and operators all.
    pub async fn contacts(&self, actor: &Actor) -> Result<Vec<Contacts>> {
        let agency = match actor.role {
            Role::Agency => Some(actor.subject.as_str()),
            Role::Coordinator | Role::Operator => None,
            Role::Department | Role::Platform | Role::Portal => {
                return Err(WorkflowError::Forbidden(
                    "agencies' contacts are for the agency itself, the coordinator and operators"
                        .into(),
                ))
            }
        };
        let rows = sqlx::query("SELECT id, agency, leader, sharing_officer, technical_officer, changed_on, reported_on, report_due, late FROM agency_contacts WHERE ($1::text IS NULL OR agency = $1) ORDER BY id DESC")
            .bind(agency)
            .fetch_all(self.pool())
            .await?;
        let person = |v: serde_json::Value| {
            serde_json::from_value::<Person>(v).map_err(|e| {
                WorkflowError::Unavailable(format!("a stored contact does not read back: {e}"))
            })
        };
        rows.iter()
            .map(|r| {
                Ok(Contacts {
                    id: r.get("id"),
                    agency: r.get("agency"),
                    leader: person(r.get("leader"))?,
                    sharing_officer: person(r.get("sharing_officer"))?,
                    technical_officer: person(r.get("technical_officer"))?,
                    changed_on: r.get("changed_on"),
                    reported_on: r.get("reported_on"),
                    report_due: r.get("report_due"),
                    late: r.get("late"),
                })
            })
            .collect()
    }
}
