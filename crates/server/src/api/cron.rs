//! `POST /api/cron/approval-timeouts` (SPEC §5): for schedulers outside the server.

use std::sync::Arc;

use agentnexus_app::App;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};

#[derive(Debug, Serialize, ToSchema)]
pub struct Processed {
    /// Stages this call expired or escalated.
    pub processed: usize,
}

/// End the approval stages whose deadline passed.
#[utoipa::path(post, path = "/api/cron/approval-timeouts", tag = "approvals",
    responses((status = 200, body = Processed),
        (status = 401, description = "Missing or wrong CRON_SECRET", body = Problem, content_type = "application/problem+json")),
    security(("cron_secret" = [])))]
pub async fn approval_timeouts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Processed>> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let processed = app.sweep_deadlines_for(given).await?;
    Ok(axum::Json(Processed { processed }))
}
