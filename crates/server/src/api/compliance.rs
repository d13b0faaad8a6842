//! The compliance evidence bundle (SPEC §8): `GET /api/v1/compliance/evidence.zip`.

use std::sync::Arc;

use agentnexus_app::App;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::Query;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvidenceParams {
    /// The period's start (RFC 3339, included); default 30 days before `to`.
    pub from: Option<String>,
    /// The period's end (RFC 3339, excluded); default now. At most 400 days after `from`.
    pub to: Option<String>,
}

/// A ZIP an auditor checks offline: the period's full populations as CSV, its audit events
/// with their hashes, a signed checkpoint, a narrative and a control crosswalk, `SHA256SUMS`,
/// a DSSE attestation signed with the server's Ed25519 key, and `verify.py` (Python 3's
/// standard library alone) that checks all of it. Streamed as it is made; one at a time per
/// workspace (429 for a second).
#[utoipa::path(get, path = "/api/v1/compliance/evidence.zip", tag = "audit",
    params(EvidenceParams),
    responses((status = 200, description = "The bundle (binary)", content_type = "application/zip", body = String),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad period", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A bundle of this workspace is being made", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn evidence(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Query(params): Query<EvidenceParams>,
) -> ApiResult<Response> {
    let chunks = app
        .evidence(
            &admin.reader(),
            params.from.as_deref(),
            params.to.as_deref(),
        )
        .await?;
    Ok(crate::wire::evidence_zip(chunks))
}
