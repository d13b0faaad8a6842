//! Deciding through a secure link (SPEC §5): `POST /api/v1/approvals/{token}`. The link is the
//! credential: random, single-use, stored hashed, bound to one approver and one stage.

use std::sync::Arc;

use agentnexus_store::{CodeSent, Decide, DecideOutcome, Link, Status};
use axum::extract::State;
use chrono::Duration;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::approvals::{code_email, next_stage_notices, token_hash};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// How long a one-time code works.
pub const CODE_LIFETIME: Duration = Duration::minutes(10);

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

fn code_hash(link_hash: &str, code: &str) -> String {
    token_hash(&format!("{link_hash}:{code}"))
}

/// The link, if it can still decide: unknown is 404; used, locked, expired or already
/// decided is 410.
pub async fn usable_link(state: &AppState, token: &str) -> ApiResult<(String, Link)> {
    let hash = token_hash(token);
    let link = state
        .store
        .approval_link(&hash)
        .await?
        .ok_or(ApiError::NotFound)?;
    if link.used {
        return Err(ApiError::Gone("this link has been used".into()));
    }
    if link.locked {
        return Err(ApiError::Gone(
            "this link is locked after too many wrong codes".into(),
        ));
    }
    if link.expires_at < state.now() {
        return Err(ApiError::Gone("this link has expired".into()));
    }
    Ok((hash, link))
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
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    Json(req): Json<DecisionRequest>,
) -> ApiResult<axum::Json<DecisionResponse>> {
    record(&state, &token, req).await.map(axum::Json)
}

/// The use case behind the JSON endpoint and the approval page.
pub async fn record(
    state: &AppState,
    token: &str,
    req: DecisionRequest,
) -> ApiResult<DecisionResponse> {
    let approve = match req.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::field("decision", "must be approve or reject")),
    };
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 2000)
    {
        return Err(ApiError::field(
            "comment",
            "must be at most 2000 characters",
        ));
    }
    if req
        .otp
        .as_ref()
        .is_some_and(|o| o.len() != 6 || !o.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ApiError::field(
            "otp",
            "must be the 6-digit code we e-mailed",
        ));
    }
    let comment = req
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    state.limits.check_link(token)?;
    let (hash, link) = usable_link(state, token).await?;
    let now = state.now();
    let ev = state
        .store
        .evaluation(&link.tenant, &link.evaluation_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if ev.status != Status::Pending || ev.current_stage != Some(link.stage) {
        return Err(ApiError::Gone("this stage has already been decided".into()));
    }
    let critical = ev
        .approval
        .as_ref()
        .is_some_and(|a| a["tier"] == "critical");
    let given = req.otp.as_deref().map(|c| code_hash(&hash, c));
    if critical && given.is_none() {
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
        let email = code_email(
            state,
            &link.tenant,
            &link.approver,
            &code,
            &link.evaluation_id,
        );
        let sent = state
            .store
            .start_otp(
                &link,
                &hash,
                &code_hash(&hash, &code),
                now + CODE_LIFETIME,
                &email,
                now,
            )
            .await?;
        if sent == CodeSent::Locked {
            return Err(ApiError::Gone(
                "too many codes asked for: this link is locked".into(),
            ));
        }
        return Ok(DecisionResponse {
            status: "otp_required",
            evaluation_id: link.evaluation_id,
            evaluation_status: None,
            stage: link.stage,
        });
    }
    // Links for the next stage, used only if this decision passes the current one.
    let next_notices = if approve {
        next_stage_notices(state, &link.tenant, &ev, link.stage, now).await?
    } else {
        Vec::new()
    };
    let outcome = state
        .store
        .decide(Decide {
            tenant: &link.tenant,
            token_hash: &hash,
            otp_hash: given.as_deref().filter(|_| critical),
            approve,
            comment: comment.as_deref(),
            next_notices,
            now,
        })
        .await?;
    let decided = match outcome {
        DecideOutcome::Recorded(d) => d,
        DecideOutcome::WrongCode { locked: true } => {
            return Err(ApiError::Gone(
                "too many wrong codes: this link is locked".into(),
            ));
        }
        DecideOutcome::WrongCode { locked: false } => {
            return Err(ApiError::field(
                "otp",
                "the code is wrong or has expired; send the decision without otp for a new one",
            ));
        }
    };
    Ok(DecisionResponse {
        status: "recorded",
        evaluation_id: decided.evaluation_id,
        evaluation_status: Some(decided.status.as_str()),
        stage: decided.stage,
    })
}
