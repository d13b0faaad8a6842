//! Background deliveries: the queue loop ([`queue`]) claims due jobs, performs each by what it
//! carries — a signed webhook ([`webhook`]), an e-mail over SMTP ([`mail`]), a Slack or Teams
//! post ([`chat`]) — and records every attempt, retrying on the [`crate::retry`] schedule.

mod chat;
mod mail;
pub mod queue;
mod webhook;

use std::time::{Duration, Instant};

use agentnexus_store::{Attempt, Finished, Job, Message, Next};
use serde_json::{Value, json};

use crate::App;
use crate::outbound::{Answer, without_query};

pub use queue::run;

/// Most of a response body kept with an attempt.
const BODY_KEPT: usize = 1024;

/// What an attempt came to, before it is recorded.
pub(crate) struct Outcome {
    attempt: Attempt,
    /// The receiver's `Retry-After`, if it sent one.
    retry_after: Option<Duration>,
    /// Whether trying again could help.
    retryable: bool,
    delivered: bool,
}

impl Outcome {
    /// An attempt that got no answer (or was not made).
    pub(crate) fn failed(job: &Job, started: Instant, error: String, retryable: bool) -> Outcome {
        Outcome {
            attempt: Attempt {
                attempt: job.attempts,
                attempted_at: String::new(),
                status_code: None,
                latency_ms: started.elapsed().as_millis() as i64,
                error: Some(error),
                response_body: None,
            },
            retry_after: None,
            retryable,
            delivered: false,
        }
    }

    /// An attempt the receiver answered: delivered unless `error` says why not.
    pub(crate) fn answered(
        job: &Job,
        started: Instant,
        answer: &Answer,
        error: Option<String>,
        retryable: bool,
    ) -> Outcome {
        let kept = &answer.body[..answer.body.len().min(BODY_KEPT)];
        Outcome {
            attempt: Attempt {
                attempt: job.attempts,
                attempted_at: String::new(),
                status_code: Some(answer.status.as_u16()),
                latency_ms: started.elapsed().as_millis() as i64,
                error: error.clone(),
                response_body: (!kept.is_empty())
                    .then(|| String::from_utf8_lossy(kept).into_owned()),
            },
            retry_after: answer.retry_after,
            retryable,
            delivered: error.is_none(),
        }
    }

    /// An SMTP exchange: delivered unless `error` says why not (SMTP has no `Retry-After`).
    pub(crate) fn mailed(
        job: &Job,
        started: Instant,
        status_code: Option<u16>,
        error: Option<String>,
        retryable: bool,
    ) -> Outcome {
        Outcome {
            attempt: Attempt {
                attempt: job.attempts,
                attempted_at: String::new(),
                status_code,
                latency_ms: started.elapsed().as_millis() as i64,
                error: error.clone(),
                response_body: None,
            },
            retry_after: None,
            retryable,
            delivered: error.is_none(),
        }
    }
}

/// What the audit trail records of an attempt besides its outcome: what was sent, where.
fn summary(message: &Message) -> Value {
    match message {
        Message::Webhook { url, event } => {
            json!({"event": event.name(), "url": without_query(url)})
        }
        Message::LinkEmail { to, about, .. } => {
            json!({"to": to, "subject": crate::render::email::link_subject(about)})
        }
        Message::CodeEmail { to, .. } => {
            json!({"to": to, "subject": crate::render::email::CODE_SUBJECT})
        }
        Message::WrittenEmail { to, subject, .. } => json!({"to": to, "subject": subject}),
        Message::TestEmail { to, .. } => json!({"to": to, "test": true}),
        Message::SlackTest { .. } | Message::TeamsTest { .. } => json!({"test": true}),
        Message::InviteEmail { to, workspace, .. } => {
            json!({"to": to, "subject": crate::render::email::invitation_subject(workspace)})
        }
        Message::SlackDirect { to, about, .. } => json!({"to": to, "stage": about.stage}),
        Message::SlackChannel { about } | Message::TeamsChannel { about } => {
            json!({"to": "channel", "stage": about.stage})
        }
    }
}

/// Performs one job; what it came to is recorded by the queue loop.
pub(crate) async fn perform(app: &App, job: Job) -> Finished {
    // The whole attempt (secrets included) ends well inside the lease, so no other worker
    // can take the job while this one still works on it.
    let bound = (app.config.delivery().lease - chrono::Duration::seconds(5))
        .to_std()
        .unwrap_or(Duration::from_secs(15));
    let started = Instant::now();
    let attempt = async {
        match &job.message {
            Message::Webhook { url, event } => webhook::send(app, &job, url, event).await,
            Message::SlackDirect { to, token, about } => {
                chat::direct(app, &job, to, token, about).await
            }
            Message::SlackChannel { about } => chat::slack_channel(app, &job, about).await,
            Message::TeamsChannel { about } => chat::teams_channel(app, &job, about).await,
            Message::SlackTest {
                workspace,
                requested_by,
            } => {
                let message = crate::render::slack::test(workspace, requested_by);
                chat::slack_post(app, &job, &message).await
            }
            Message::TeamsTest {
                workspace,
                requested_by,
            } => {
                let message = crate::render::teams::test(workspace, requested_by);
                chat::teams_post(app, &job, &message).await
            }
            email => mail::send(app, &job, email).await,
        }
    };
    let outcome = match tokio::time::timeout(bound, attempt).await {
        Ok(done) => done,
        Err(_) => Outcome::failed(&job, started, "the attempt ran out of time".into(), true),
    };
    let now = app.now();
    let next = if outcome.delivered {
        Next::Done
    } else if !outcome.retryable {
        Next::Dead
    } else {
        app.config.delivery().retry.next(
            job.attempts - job.attempts_before_retry,
            outcome.retry_after,
            job.scheduled_from,
            now,
        )
    };
    metrics::histogram!("agentnexus_webhook_latency_seconds")
        .record(outcome.attempt.latency_ms as f64 / 1000.0);
    let label = match next {
        Next::Done => "delivered",
        Next::RetryAt(_) => "retrying",
        Next::Dead => "dead",
    };
    metrics::counter!("agentnexus_deliveries_total", "kind" => job.kind.as_str(), "outcome" => label)
        .increment(1);
    Finished {
        summary: summary(&job.message),
        job,
        attempt: outcome.attempt,
        next,
        at: now,
    }
}

/// The currency the job's workspace shows amounts in, read when the message is written; a
/// store that cannot say fails the attempt, to be retried.
async fn currency(
    app: &App,
    job: &Job,
    started: Instant,
) -> Result<crate::types::Currency, Outcome> {
    app.currency(&job.tenant)
        .await
        .map_err(|e| Outcome::failed(job, started, format!("the workspace's currency: {e}"), true))
}
