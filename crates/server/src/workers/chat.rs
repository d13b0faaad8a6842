//! Slack and Teams jobs: the workspace's channel settings are read (and opened) when the job
//! runs, so a token changed meanwhile is the one used, and the message is written then from
//! the facts the job keeps.

use std::time::Instant;

use agentnexus_store::Job;
use serde_json::{Value, json};

use super::delivery::{Answer, Outcome, check_destination, exchange};
use crate::channels::{self, Slack};
use crate::state::AppState;

/// Enough of a Slack Web API answer to read it (a user profile is a few KiB).
const SLACK_ANSWER: usize = 64 * 1024;

/// What the Slack Web API said, when it did not say `ok`.
enum SlackError {
    /// No answer, or one that could not be read; retry unless the cause is permanent.
    Transport(String, bool),
    /// An answer with `ok: false` (or an HTTP error status).
    Api(Answer, String, bool),
}

/// Slack's errors worth trying again; every other (`invalid_auth`, `users_not_found`,
/// `missing_scope`, `channel_not_found`, …) needs someone to fix something first.
fn slack_retryable(error: &str) -> bool {
    matches!(
        error,
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

/// Calls one Slack Web API method with the bot token; answers its JSON when `ok`.
async fn slack_call(
    state: &AppState,
    token: &str,
    method: &str,
    request: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(Answer, Value), SlackError> {
    let url = format!(
        "{}/{method}",
        state.config.slack_api_url.trim_end_matches('/')
    );
    let builder = request(state.http.post(&url).bearer_auth(token));
    let answer = exchange(builder, SLACK_ANSWER)
        .await
        .map_err(|(why, retryable)| SlackError::Transport(why, retryable))?;
    if !answer.status.is_success() {
        let retryable = answer.status.as_u16() == 429 || answer.status.is_server_error();
        let why = format!("Slack {method} answered {}", answer.status);
        return Err(SlackError::Api(answer, why, retryable));
    }
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if body["ok"] == true {
        return Ok((answer, body));
    }
    let error = body["error"]
        .as_str()
        .unwrap_or("unreadable answer")
        .to_owned();
    let retryable = slack_retryable(&error);
    Err(SlackError::Api(
        answer,
        format!("Slack {method}: {error}"),
        retryable,
    ))
}

/// Posts an approval request to Slack: to one approver (direct message with their link),
/// or to the workspace's channel webhook.
pub(crate) async fn slack(state: &AppState, job: &Job) -> (Outcome, Value) {
    let started = Instant::now();
    let about = &job.payload["about"];
    let to = job.payload["to"].as_str();
    let summary = json!({"to": to.unwrap_or("channel"), "stage": about["stage"]});
    let failed = |why: String, retryable: bool| {
        (
            Outcome::failed(job, started, why, retryable),
            summary.clone(),
        )
    };
    let slack = match channels::connected(state, &job.tenant).await {
        Ok(c) => c.slack.unwrap_or_default(),
        Err(e) => return failed(format!("cannot read the Slack settings: {e}"), true),
    };
    match to {
        Some(email) => {
            let Some(token) = slack.bot_token.as_deref() else {
                return failed(
                    "Slack has no bot token in this workspace's settings".into(),
                    false,
                );
            };
            let link = match state.cipher.open(
                job.payload["token"].as_str().unwrap_or_default(),
                crate::crypto::Purpose::LinkToken {
                    workspace_id: job.tenant.workspace_id(),
                },
            ) {
                Ok(t) => format!("{}/approvals/{t}", state.public_url()),
                Err(e) => return failed(format!("cannot open the message's link: {e}"), true),
            };
            let outcome = direct_message(state, job, started, token, email, about, &link).await;
            (outcome, summary)
        }
        None => {
            let Slack {
                webhook_url: Some(url),
                ..
            } = slack
            else {
                return failed(
                    "Slack is not connected for channel posts in this workspace \
                     (PUT /api/v1/settings/channels/slack with a webhook_url)"
                        .into(),
                    false,
                );
            };
            let link =
                channels::sign_in_url(state, about["evaluation_id"].as_str().unwrap_or_default());
            let message = channels::slack_message(about, &link, false);
            (
                post_webhook(state, job, started, &url, &message).await,
                summary,
            )
        }
    }
}

/// `users.lookupByEmail`, then `chat.postMessage` to that user: Slack delivers it as a direct
/// message from the app.
async fn direct_message(
    state: &AppState,
    job: &Job,
    started: Instant,
    token: &str,
    email: &str,
    about: &Value,
    link: &str,
) -> Outcome {
    let outcome = |result: Result<(Answer, Value), SlackError>| match result {
        Ok((answer, _)) => Outcome::answered(job, started, &answer, None, true),
        Err(SlackError::Transport(why, retryable)) => Outcome::failed(job, started, why, retryable),
        Err(SlackError::Api(answer, why, retryable)) => {
            Outcome::answered(job, started, &answer, Some(why), retryable)
        }
    };
    let user = slack_call(state, token, "users.lookupByEmail", |r| {
        r.form(&[("email", email)])
    })
    .await;
    let user_id = match &user {
        Ok((_, body)) => body["user"]["id"].as_str().unwrap_or_default().to_owned(),
        Err(_) => return outcome(user),
    };
    let mut message = channels::slack_message(about, link, true);
    message["channel"] = json!(user_id);
    message["unfurl_links"] = json!(false);
    outcome(slack_call(state, token, "chat.postMessage", |r| r.json(&message)).await)
}

/// POSTs a message to an incoming webhook (Slack's or Teams'): 2xx is delivered.
async fn post_webhook(
    state: &AppState,
    job: &Job,
    started: Instant,
    url: &str,
    message: &Value,
) -> Outcome {
    if let Err(why) = check_destination(url, state.config.webhook_allow_private) {
        return Outcome::failed(job, started, why, false);
    }
    match exchange(state.http.post(url).json(message), 1024).await {
        Ok(answer) => {
            let status = answer.status;
            // A classic Teams connector answers 200 with the failure in its text.
            let text = String::from_utf8_lossy(&answer.body).to_ascii_lowercase();
            let error = if !status.is_success() {
                Some(format!("the webhook answered {status}"))
            } else if text.contains("delivery failed") || text.contains("returned http error") {
                Some(format!("the webhook answered {status} with a failure"))
            } else {
                None
            };
            let retryable =
                status.as_u16() == 429 || status.is_server_error() || status.is_success();
            Outcome::answered(job, started, &answer, error, retryable)
        }
        Err((why, retryable)) => Outcome::failed(job, started, why, retryable),
    }
}

/// Posts an approval request card to the workspace's Teams channel.
pub(crate) async fn teams(state: &AppState, job: &Job) -> (Outcome, Value) {
    let started = Instant::now();
    let about = &job.payload["about"];
    let summary = json!({"to": "channel", "stage": about["stage"]});
    let teams = match channels::connected(state, &job.tenant).await {
        Ok(c) => c.teams,
        Err(e) => {
            let why = format!("cannot read the Teams settings: {e}");
            return (Outcome::failed(job, started, why, true), summary);
        }
    };
    let Some(teams) = teams else {
        let why = "Teams is not connected in this workspace \
                   (PUT /api/v1/settings/channels/teams with a webhook_url)";
        return (Outcome::failed(job, started, why.into(), false), summary);
    };
    let link = channels::sign_in_url(state, about["evaluation_id"].as_str().unwrap_or_default());
    let message = channels::teams_message(about, &link);
    let outcome = post_webhook(state, job, started, &teams.webhook_url, &message).await;
    (outcome, summary)
}
