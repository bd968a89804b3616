//! The workflow's HTTP API on the router, JSON in and out, each request authenticated by its
//! bearer token:
//! - `POST /api/applications` (agency): apply. `GET /api/applications`: those the token may see.
//! - `GET /api/applications/{id}`: one, with every recorded step.
//! - `POST /api/applications/{id}/answer` (responsible department): approve (fewer fields
//!   allowed) or refuse with a reason.
//! - `POST /api/applications/{id}/resolve` (coordinator): mediation or decision.
//! - `POST /api/applications/{id}/confirm` (another platform): it takes the item it was
//!   granted; the grant comes into force (see [`super::platforms`]).
//! - `GET /api/outcomes` (any token): closed applications, published to all.
//! - `POST /api/disputes` (agency): dispute a delivered record by `message_id`.
//!   `GET /api/disputes`, `GET /api/disputes/{id}` (with its steps and report).
//! - `POST /api/disputes/{id}/finding` (operator): `technical`, `data` or `unfounded`.
//! - `GET /api/grants` (agency, another platform: its own; coordinator, operator: all): the
//!   grants in the catalogue now, each with whether it is in force and whether it ended
//!   (`govbus-agency sink --purge-ended` asks it).
//! - `POST /api/subject-log` (citizen portal): a citizen's data-use log
//!   (see [`crate::ops::subject_log`]).
//! - `POST /api/contacts` (agency): register or change its three contacts;
//!   `GET /api/contacts`: the agency its own, the coordinator and operators all.
use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;

use super::{
    contacts::ContactsRequest,
    disputes::{DisputeRequest, FindingRequest},
    AnswerRequest, ApplyRequest, ResolveRequest, Workflow, WorkflowError,
};

impl IntoResponse for WorkflowError {
    fn into_response(self) -> Response {
        let status = match &self {
            WorkflowError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            WorkflowError::Forbidden(_) => StatusCode::FORBIDDEN,
            WorkflowError::NotFound(_) => StatusCode::NOT_FOUND,
            WorkflowError::Conflict(_) => StatusCode::CONFLICT,
            WorkflowError::Invalid(_) => StatusCode::BAD_REQUEST,
            WorkflowError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

type Wf = State<Arc<Workflow>>;

async fn list(State(wf): Wf, h: HeaderMap) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    Ok(Json(wf.list(&actor).await?).into_response())
}

async fn one(State(wf): Wf, h: HeaderMap, Path(id): Path<i64>) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let (app, events) = wf.get(&actor, id).await?;
    Ok(Json(json!({ "application": app, "events": events })).into_response())
}

async fn apply(
    State(wf): Wf,
    h: HeaderMap,
    body: Result<Json<ApplyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok((StatusCode::CREATED, Json(wf.apply(&actor, req).await?)).into_response())
}

async fn answer(
    State(wf): Wf,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<AnswerRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok(Json(wf.answer(&actor, id, req).await?).into_response())
}

async fn resolve(
    State(wf): Wf,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<ResolveRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok(Json(wf.resolve(&actor, id, req).await?).into_response())
}

async fn confirm(
    State(wf): Wf,
    h: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    Ok(Json(wf.confirm(&actor, id).await?).into_response())
}

async fn outcomes(State(wf): Wf, h: HeaderMap) -> Result<Response, WorkflowError> {
    wf.authenticate(bearer(&h)).await?;
    Ok(Json(wf.outcomes().await?).into_response())
}

async fn disputes(State(wf): Wf, h: HeaderMap) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    Ok(Json(wf.disputes(&actor).await?).into_response())
}

async fn open_dispute(
    State(wf): Wf,
    h: HeaderMap,
    body: Result<Json<DisputeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok((StatusCode::CREATED, Json(wf.dispute(&actor, req).await?)).into_response())
}

async fn one_dispute(
    State(wf): Wf,
    h: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let (d, events) = wf.dispute_with_events(&actor, id).await?;
    Ok(Json(json!({ "dispute": d, "events": events })).into_response())
}

async fn finding(
    State(wf): Wf,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<FindingRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok(Json(wf.finding(&actor, id, req).await?).into_response())
}

async fn contacts(State(wf): Wf, h: HeaderMap) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    Ok(Json(wf.contacts(&actor).await?).into_response())
}

async fn report_contacts(
    State(wf): Wf,
    h: HeaderMap,
    body: Result<Json<ContactsRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, WorkflowError> {
    let actor = wf.authenticate(bearer(&h)).await?;
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    Ok((
        StatusCode::CREATED,
        Json(wf.report_contacts(&actor, req).await?),
    )
        .into_response())
}

async fn grants(State(wf): Wf, h: HeaderMap) -> Result<Response, WorkflowError> {
    use super::token::Role;
    let actor = wf.authenticate(bearer(&h)).await?;
    let only = match actor.role {
        Role::Agency | Role::Platform => Some(actor.subject.as_str()),
        Role::Coordinator | Role::Operator => None,
        Role::Department | Role::Portal => {
            return Err(WorkflowError::Forbidden(
                "grants are listed to their agency, the coordinator and operators".into(),
            ))
        }
    };
    let routing = wf.shared.routing();
    let today = bus_schemas::validate::today_in_shanghai();
    let mut out = Vec::new();
    for (item_id, grants) in &routing.catalogue.grants_by_item {
        let item_ended = routing
            .catalogue
            .items
            .get(item_id)
            .and_then(|(i, _)| i.shared_until.as_ref())
            .is_some_and(|u| u.0 < today);
        for g in grants.iter().filter(|g| only.is_none_or(|a| g.agency == a)) {
            let ended = item_ended || g.valid_until.as_ref().is_some_and(|u| u.0 < today);
            out.push(json!({
                "id": g.id, "revision": g.revision, "agency": g.agency, "item": g.item,
                "fields": g.fields, "identity": g.identity.as_str(),
                "valid_from": g.valid_from.0, "valid_until": g.valid_until.as_ref().map(|u| u.0),
                "in_force": !ended && g.in_force(today), "ended": ended,
            }));
        }
    }
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "today": today, "grants": out })).into_response())
}

async fn subject_log(
    State(wf): Wf,
    h: HeaderMap,
    body: Result<
        Json<crate::ops::subject_log::SubjectLogRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<Response, WorkflowError> {
    use crate::ops::subject_log::SubjectLogError;
    let actor = wf.authenticate(bearer(&h)).await?;
    if actor.role != super::token::Role::Portal {
        return Err(WorkflowError::Forbidden(
            "the data-use log answers the citizen portal's token (role portal); an operator answers a written request with `govbus subject-log`".into(),
        ));
    }
    let Json(req) = body.map_err(|e| WorkflowError::Invalid(e.body_text()))?;
    let answer = match wf.subject_log.admit(&actor.subject) {
        Ok(()) => {
            wf.subject_log
                .query(
                    wf.pool(),
                    &wf.shared.routing().catalogue,
                    &actor.subject,
                    &req,
                )
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(log) => Ok(Json(log).into_response()),
        Err(e @ SubjectLogError::RateLimited { retry_after, .. }) => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            Json(json!({ "error": e.to_string() })),
        )
            .into_response()),
        Err(SubjectLogError::Invalid(why)) => Err(WorkflowError::Invalid(why)),
        Err(e @ SubjectLogError::Database(_)) => Err(WorkflowError::Unavailable(e.to_string())),
    }
}

/// The `/api` routes.
pub fn routes(wf: Arc<Workflow>) -> Router {
    Router::new()
        .route("/api/applications", get(list).post(apply))
        .route("/api/applications/{id}", get(one))
        .route("/api/applications/{id}/answer", post(answer))
        .route("/api/applications/{id}/resolve", post(resolve))
        .route("/api/applications/{id}/confirm", post(confirm))
        .route("/api/outcomes", get(outcomes))
        .route("/api/disputes", get(disputes).post(open_dispute))
        .route("/api/contacts", get(contacts).post(report_contacts))
        .route("/api/disputes/{id}", get(one_dispute))
        .route("/api/disputes/{id}/finding", post(finding))
        .route("/api/subject-log", post(subject_log))
        .route("/api/grants", get(grants))
        .with_state(wf)
}
