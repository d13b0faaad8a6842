//! Integrator webhooks (SPEC §6): the signing secret and each evaluation's deliveries.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::types::EvaluationId;
use agentnexus_store::{Delivery, Message};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Admin, Caller};
use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path};

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

/// One delivery (an evaluation's, or a test's), with every attempt.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The delivery's id (`msg_…`, also its `webhook-id`)")),
    responses((status = 200, body = DeliveryView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery in this workspace", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delivery(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryView>> {
    Ok(axum::Json(app.delivery(&admin.reader(), &id).await?.into()))
}

/// Try a delivery that was given up (`dead`) again now, with a fresh retry schedule and the
/// same `webhook-id`. Audited as `delivery.retried`.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "The delivery's id (`msg_…`)")),
    responses((status = 200, description = "The delivery, queued again", body = DeliveryView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery was not given up: it is queued, running or done", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn retry(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryView>> {
    Ok(axum::Json(app.retry_delivery(&admin, &id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestWebhook {
    /// Where to send the test event: an http(s) URL with a host name or an IP address, at
    /// most 2048 characters (the pattern is exact, as for an evaluation's `webhook_url`).
    #[schema(max_length = 2048)]
    pub url: String,
}

/// Send a signed `test` event (`{"event": "test", "message", "occurred_at"}`) to a URL, as a
/// delivery like any other: follow it with `GET /api/v1/deliveries/{id}`. Audited as
/// `channel.test_queued`.
#[utoipa::path(post, path = "/api/v1/webhooks/test", tag = "webhooks",
    request_body = TestWebhook,
    responses((status = 202, description = "The test delivery, queued", body = DeliveryView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an http(s) URL", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The workspace's delivery queue is full", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn test(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<TestWebhook>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<DeliveryView>)> {
    let delivery = app.test_webhook(&admin, req.url).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(delivery.into()),
    ))
}
