//! Webhook deliveries (SPEC §6): one event POSTed to the evaluation's `webhook_url`, signed
//! (Standard Webhooks) with every secret of its workspace that signs now.

use std::time::Instant;

use agentnexus_store::{Job, WebhookEvent};

use super::Outcome;
use crate::App;
use crate::outbound::{check_destination, exchange};

pub(super) async fn send(app: &App, job: &Job, url: &str, event: &WebhookEvent) -> Outcome {
    let started = Instant::now();
    let failed = |error: String, retryable: bool| Outcome::failed(job, started, error, retryable);
    if let Err(why) = check_destination(url, app.config.webhook_allow_private) {
        return failed(why, false);
    }
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => return failed(format!("the event cannot be written: {e}"), false),
    };
    let secrets = match app.signing_secrets(&job.tenant).await {
        Ok(s) => s,
        Err(e) => {
            // Most likely servers sharing a database with different AGENTNEXUS_SECRET_KEYs.
            tracing::error!(error = %e, job = %job.id, "cannot sign a webhook");
            return failed(format!("no signing secret: {e}"), true);
        }
    };
    let timestamp = app.now().timestamp();
    let request = app
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &job.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            crate::signing::signature_header(&secrets, &job.id, timestamp, &body),
        )
        .body(body);
    match exchange(request, super::BODY_KEPT).await {
        Ok(answer) => {
            let error = (!answer.status.is_success())
                .then(|| format!("the receiver answered {}", answer.status));
            Outcome::answered(job, started, &answer, error, true)
        }
        Err((why, retryable)) => failed(why, retryable),
    }
}
