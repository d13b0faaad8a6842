//! The audit trail over HTTP (SPEC §7).

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::types::EvaluationId;
use agentnexus_store::AuditEvent;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Caller};
use crate::error::{ApiResult, Problem};
use crate::extract::{Path, Query};

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Part of what the hash covers.
    pub workspace_id: String,
    pub seq: i64,
    /// RFC 3339 in UTC with six fractional digits, exactly as hashed.
    #[schema(example = "2026-11-25T15:04:33.123456Z")]
    pub occurred_at: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `key:ID`, `member:EMAIL`, `cli` or `system`.
    pub actor: String,
    pub evaluation_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEvent> for EventView {
    fn from(e: AuditEvent) -> Self {
        EventView {
            workspace_id: e.workspace_id,
            seq: e.seq,
            occurred_at: e.occurred_at,
            kind: e.kind,
            actor: e.actor,
            evaluation_id: e.evaluation_id,
            data: e.data,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<EventView>,
    /// Pass as `after_seq` for the next page; null when this page is the last.
    pub next_after_seq: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Events after this sequence number (default 0: from the start).
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The workspace's audit log, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(PageParams),
    responses((status = 200, body = AuditPage), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn page(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Query(params): Query<PageParams>,
) -> ApiResult<axum::Json<AuditPage>> {
    let page = app
        .audit_page(&admin.reader(), params.after_seq, params.limit)
        .await?;
    Ok(axum::Json(AuditPage {
        events: page.events.into_iter().map(Into::into).collect(),
        next_after_seq: page.next_after_seq,
    }))
}

/// Recompute the workspace's hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "`{\"ok\": true, \"events\", \"head_hash\"}` or `{\"ok\": false, \"broken_at_seq\", \"events_checked\", \"reason\"}`", body = Object)),
    security(("api_key" = [])))]
pub async fn verify(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<agentnexus_store::Verification>> {
    Ok(axum::Json(app.verify_audit(&admin.reader()).await?))
}

/// Every audit event of one evaluation, oldest first.
#[utoipa::path(get, path = "/api/v1/evaluations/{id}/timeline", tag = "audit",
    params(("id" = String, Path)),
    responses((status = 200, body = Timeline), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn timeline(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Timeline>> {
    let events = app.timeline(&caller, &EvaluationId::from(id)).await?;
    Ok(axum::Json(Timeline {
        events: events.into_iter().map(Into::into).collect(),
    }))
}

/// A workspace's chain head signed with the server's Ed25519 key (SPEC §7).
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// The workspace's name.
    pub workspace: String,
    /// The chain's length: the `seq` of its last event.
    pub seq: i64,
    pub head_hash: String,
    #[schema(example = "2026-12-05T10:15:00.123456Z")]
    pub issued_at: String,
    /// The signing key's id (`GET /api/v1/audit/signing-key`).
    pub key_id: String,
    /// Ed25519 over the RFC 8785 canonical JSON of the other fields, base64.
    pub signature: String,
}

impl From<agentnexus_app::notary::Checkpoint> for CheckpointView {
    fn from(c: agentnexus_app::notary::Checkpoint) -> Self {
        CheckpointView {
            workspace: c.workspace,
            seq: c.seq,
            head_hash: c.head_hash,
            issued_at: c.issued_at,
            key_id: c.key_id,
            signature: c.signature,
        }
    }
}

/// The public half of the server's signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyView {
    /// The first 16 hex characters of the SHA-256 of the raw 32-byte public key.
    pub key_id: String,
    /// SubjectPublicKeyInfo, PEM.
    pub public_key_pem: String,
}

/// Sign the workspace's chain head now.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointView)),
    security(("api_key" = [])))]
pub async fn checkpoint(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<CheckpointView>> {
    Ok(axum::Json(app.checkpoint(&admin.reader()).await?.into()))
}

/// The key checkpoints and evidence bundles are signed with.
#[utoipa::path(get, path = "/api/v1/audit/signing-key", tag = "audit",
    responses((status = 200, body = SigningKeyView)),
    security(("api_key" = [])))]
pub async fn signing_key(
    State(app): State<Arc<App>>,
    _admin: Admin,
) -> ApiResult<axum::Json<SigningKeyView>> {
    let public = app.notary()?.public();
    Ok(axum::Json(SigningKeyView {
        key_id: public.key_id().to_owned(),
        public_key_pem: public.to_pem(),
    }))
}
