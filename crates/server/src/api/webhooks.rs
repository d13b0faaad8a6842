//! Integrator webhooks (SPEC §6): the signing secret and each evaluation's deliveries.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::types::EvaluationId;
use agentnexus_store::{Delivery, Message};
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Admin, Caller};
use crate::error::{ApiResult, Problem};
use crate::extract::Path;

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
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<SigningSecret>> {
    Ok(axum::Json(SigningSecret {
        signing_secret: app.signing_secret(&admin).await?,
    }))
}

/// Make a new signing secret; the previous one keeps signing for 24 hours.
#[utoipa::path(post, path = "/api/v1/webhooks/secret/rotate", tag = "webhooks",
    responses((status = 200, body = RotatedSecret), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rotate(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<RotatedSecret>> {
    let (fresh, until) = app.rotate_signing_secret(&admin).await?;
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
        let (event, url, body) = match &d.message {
            Message::Webhook { url, event } => (
                Some(event.name().to_owned()),
                Some(url.clone()),
                serde_json::to_value(event).unwrap_or_default(),
            ),
            _ => (None, None, Value::Null),
        };
        DeliveryView {
            to: match &d.message {
                Message::Webhook { .. } => None,
                m => Some(m.recipient().unwrap_or("channel").to_owned()),
            },
            kind: d.message.kind().as_str().to_owned(),
            event,
            url,
            body,
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
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryList>> {
    let deliveries = app.deliveries(&caller, &EvaluationId::from(id)).await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}
