//! Evaluate (SPEC §4) and reading evaluations back, over REST.

use std::sync::Arc;
use std::time::Duration;

use agentnexus_app::App;
use agentnexus_app::evaluations::ListInput;
use agentnexus_app::types::EvaluationId;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Caller};
use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path, Query};
use crate::wire::{EvaluateRequest, EvaluationDetail, EvaluationResponse};

/// Decide a proposed action.
#[utoipa::path(
    post, path = "/api/v1/evaluate", tag = "evaluate",
    request_body = EvaluateRequest,
    responses(
        (status = 200, description = "The decision, recorded with its audit event", body = EvaluationResponse),
        (status = 409, description = "The idempotency key was used for another proposal in the last 24 hours; nothing was recorded", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn evaluate(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Json(req): Json<EvaluateRequest>,
) -> ApiResult<axum::Json<EvaluationResponse>> {
    let summary = app.evaluate(&caller, req.into()).await?;
    Ok(axum::Json(summary.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Hold the request until the status changes or this many seconds pass (at most 60).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
}

/// One evaluation with its current status, stages and decisions.
#[utoipa::path(
    get, path = "/api/v1/evaluations/{id}", tag = "evaluate",
    params(("id" = String, Path, description = "Evaluation id"), WaitParams),
    responses(
        (status = 200, body = EvaluationDetail),
        (status = 404, description = "No such evaluation in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get_evaluation(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
) -> ApiResult<axum::Json<EvaluationDetail>> {
    let wait = Duration::from_secs(params.wait.unwrap_or(0));
    let ev = app
        .evaluation(&caller, &EvaluationId::from(id), wait)
        .await?;
    Ok(axum::Json(ev.into()))
}

/// What the executing system reports after acting on an evaluation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    /// What happened.
    #[schema(pattern = "^(executed|failed|skipped)$")]
    pub outcome: String,
    /// The proposal hash of what was run (the evaluation's `proposal_hash` when it is what
    /// was decided); expected with `executed`.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub proposal_hash: Option<String>,
    /// Anything the executing system wants kept with it (at most 16 KiB of JSON).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// Report what was done with a decided evaluation: the execution receipt. One per evaluation.
/// The answer is the evaluation carrying it; `receipt.conforms` is false when `executed` was
/// reported for an evaluation that is not `allowed` or `approved`, or with another proposal
/// hash. Audited as `receipt.recorded`.
#[utoipa::path(
    post, path = "/api/v1/evaluations/{id}/receipt", tag = "evaluate",
    params(("id" = String, Path, description = "Evaluation id")),
    request_body = ReceiptRequest,
    responses(
        (status = 201, body = EvaluationDetail),
        (status = 404, description = "No such evaluation in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The evaluation has a receipt already", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn report_receipt(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(req): Json<ReceiptRequest>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<EvaluationDetail>)> {
    let input = agentnexus_app::receipts::ReceiptInput {
        outcome: req.outcome,
        proposal_hash: req.proposal_hash,
        detail: req.detail,
    };
    let ev = app
        .report_receipt(&caller, &EvaluationId::from(id), input)
        .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(ev.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status.
    #[param(pattern = "^(allowed|denied|pending|approved|rejected|expired)$")]
    pub status: Option<String>,
    /// Only this agent.
    #[param(min_length = 1, max_length = 256)]
    pub agent_id: Option<String>,
    /// Only this action.
    #[param(min_length = 1, max_length = 256)]
    pub action: Option<String>,
    /// Only evaluations a rule of this policy matched.
    #[param(pattern = "^[a-z0-9._-]{1,64}$")]
    pub policy: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 64)]
    pub cursor: Option<String>,
    /// Only evaluations created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Only evaluations created before this time (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationList {
    pub evaluations: Vec<EvaluationDetail>,
    /// Pass as `cursor` for the next page; null on the last. A page filtered by agent,
    /// status, action or policy searches a bounded part of the history, so it may hold fewer
    /// than `limit` evaluations, or none, and still not be the last.
    pub next_cursor: Option<String>,
}

/// Evaluations of the workspace, newest first.
#[utoipa::path(
    get, path = "/api/v1/evaluations", tag = "evaluate", params(ListParams),
    responses(
        (status = 200, body = EvaluationList),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_evaluations(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<EvaluationList>> {
    let input = ListInput {
        status: params.status,
        agent_id: params.agent_id,
        action: params.action,
        policy: params.policy,
        limit: params.limit,
        cursor: params.cursor,
        from: params.from,
        to: params.to,
    };
    let page = app.evaluations(&admin.reader(), input).await?;
    Ok(axum::Json(EvaluationList {
        evaluations: page.evaluations.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
