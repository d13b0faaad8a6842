//! `POST /api/cron/approval-timeouts` (SPEC §5): for schedulers outside the server.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Processed {
    /// Stages this call expired or escalated.
    pub processed: usize,
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    // Constant time: how much of the secret matched must not show in the answer's timing.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// End the approval stages whose deadline passed.
#[utoipa::path(post, path = "/api/cron/approval-timeouts", tag = "approvals",
    responses((status = 200, body = Processed),
        (status = 401, description = "Missing or wrong CRON_SECRET", body = Problem, content_type = "application/problem+json")),
    security(("cron_secret" = [])))]
pub async fn approval_timeouts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Processed>> {
    let expected = state
        .config
        .cron_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !equal(given.trim().as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    let processed = crate::workers::deadlines::sweep_guarded(state).await?;
    Ok(axum::Json(Processed { processed }))
}
