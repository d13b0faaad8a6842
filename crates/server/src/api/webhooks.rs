//! Integrator webhooks (SPEC §6): the signing secret and each evaluation's deliveries.

use std::sync::Arc;

use agentnexus_store::Delivery;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Path;
use crate::state::AppState;

/// How long a rotated secret keeps signing beside the new one.
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecret {
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    pub signing_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub signing_secret: String,
    /// Until then deliveries carry a signature with the previous secret too.
    pub previous_expires_at: String,
}

/// The workspace's webhook signing secret (made on first use).
#[utoipa::path(get, path = "/api/v1/webhooks/secret", tag = "webhooks",
    responses((status = 200, body = SigningSecret), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn secret(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<axum::Json<SigningSecret>> {
    Ok(axum::Json(SigningSecret {
        signing_secret: state.webhook_secret(&caller.tenant).await?,
    }))
}

/// Make a new signing secret; the previous one keeps signing for 24 hours.
#[utoipa::path(post, path = "/api/v1/webhooks/secret/rotate", tag = "webhooks",
    responses((status = 200, body = RotatedSecret), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<axum::Json<RotatedSecret>> {
    // A workspace that never had a secret gets one first, so there is always one to keep.
    state.webhook_secret(&caller.tenant).await?;
    let fresh = crate::webhooks::new_secret();
    let until = state
        .store
        .rotate_webhook_secret(
            &caller.tenant,
            &state.cipher.seal(
                &fresh,
                crate::crypto::Purpose::WebhookSecret {
                    workspace_id: caller.tenant.workspace_id(),
                },
            ),
            ROTATION_GRACE,
            caller.actor(),
            state.now(),
        )
        .await?;
    Ok(axum::Json(RotatedSecret {
        signing_secret: fresh,
        previous_expires_at: agentnexus_store::timestamp_text(until),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub attempted_at: String,
    /// The receiver's HTTP status; absent when no answer came.
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// At most 1 KiB of the receiver's answer.
    pub response_body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    /// `webhook` (to the evaluation's `webhook_url`), or an approval message: `email`,
    /// `slack` or `teams`.
    pub kind: String,
    /// Who a message is for: an approver's e-mail address, or `channel` for a chat channel
    /// post. Absent for webhooks.
    pub to: Option<String>,
    /// `approval_required` or `terminal_outcome`.
    pub event: Option<String>,
    pub url: Option<String>,
    /// `queued`, `running`, `done` (delivered) or `dead` (given up).
    pub status: String,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    /// The event as sent.
    #[schema(value_type = Object)]
    pub body: Value,
    pub attempts: Vec<AttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        DeliveryView {
            event: text(&d.payload["body"]["event"]),
            url: text(&d.payload["url"]),
            body: d.payload["body"].clone(),
            kind: d.kind.to_owned(),
            to: match d.kind {
                "webhook" => None,
                _ => Some(text(&d.payload["to"]).unwrap_or_else(|| "channel".into())),
            },
            id: d.id,
            status: d.status,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    attempted_at: a.attempted_at,
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error,
                    response_body: a.response_body,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// The deliveries of one evaluation (webhooks and approval messages), with every attempt.
#[utoipa::path(get, path = "/api/v1/evaluations/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryList>> {
    if state.store.evaluation(&caller.tenant, &id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let deliveries = state.store.deliveries(&caller.tenant, &id).await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}
