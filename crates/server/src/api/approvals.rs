//! Deciding through a secure link (SPEC §5): `POST /api/v1/approvals/{token}`.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::approvals::{Decision, DecisionInput};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve` or `reject`.
    #[schema(pattern = "^(approve|reject)$")]
    pub decision: String,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    pub comment: Option<String>,
    /// The 6-digit code e-mailed for a critical-tier approval.
    #[schema(pattern = "^[0-9]{6}$")]
    pub otp: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResponse {
    /// `recorded`, or `otp_required` (a code was e-mailed; send the decision again with it).
    pub status: &'static str,
    pub evaluation_id: String,
    /// The evaluation's status after the decision: `pending`, `approved` or `rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_status: Option<&'static str>,
    pub stage: i64,
}

impl From<DecisionRequest> for DecisionInput {
    fn from(r: DecisionRequest) -> Self {
        DecisionInput {
            decision: r.decision,
            comment: r.comment,
            otp: r.otp,
        }
    }
}

impl From<Decision> for DecisionResponse {
    fn from(d: Decision) -> Self {
        match d {
            Decision::CodeSent {
                evaluation_id,
                stage,
            } => DecisionResponse {
                status: "otp_required",
                evaluation_id,
                evaluation_status: None,
                stage,
            },
            Decision::Recorded {
                evaluation_id,
                status,
                stage,
            } => DecisionResponse {
                status: "recorded",
                evaluation_id,
                evaluation_status: Some(status.as_str()),
                stage,
            },
        }
    }
}

/// Record an approver's decision through their secure link.
#[utoipa::path(post, path = "/api/v1/approvals/{token}", tag = "approvals",
    params(("token" = String, Path, description = "The secure link's token")),
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "Recorded, or a one-time code was e-mailed", body = DecisionResponse),
        (status = 403, description = "Separation of duties", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown link", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Used, expired, locked or already decided", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad decision or wrong code", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn decide(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Json(req): Json<DecisionRequest>,
) -> ApiResult<axum::Json<DecisionResponse>> {
    Ok(axum::Json(app.decide(&token, req.into()).await?.into()))
}
