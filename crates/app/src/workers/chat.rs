//! Slack and Teams deliveries: the workspace's channel settings are read (and opened) when
//! the job runs, so a token changed meanwhile is the one used, and the message is written then
//! (`render::slack`, `render::teams`) from the facts the job keeps.

use std::time::Instant;

use agentnexus_store::{About, Job};
use serde_json::{Value, json};

use super::Outcome;
use crate::App;
use crate::crypto::Purpose;
use crate::outbound::{Answer, check_destination, exchange};
use crate::render;
use crate::settings::Slack;

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
    app: &App,
    token: &str,
    method: &str,
    request: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(Answer, Value), SlackError> {
    let url = format!(
        "{}/{method}",
        app.config.slack_api_url.trim_end_matches('/')
    );
    let builder = request(app.http.post(&url).bearer_auth(token));
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

/// The page a shared channel's message links to: where an approver signs in.
fn sign_in_url(app: &App, about: &About) -> String {
    app.sign_in_url(&about.evaluation_id)
}

/// The workspace's Slack settings, read (and opened) now; a failure to read them is the
/// attempt's outcome, tried again later.
async fn slack_settings(app: &App, job: &Job, started: Instant) -> Result<Slack, Outcome> {
    match app.connected(&job.tenant).await {
        Ok(c) => Ok(c.slack.unwrap_or_default()),
        Err(e) => {
            let why = format!("cannot read the Slack settings: {e}");
            Err(Outcome::failed(job, started, why, true))
        }
    }
}

/// One approver's secure link by Slack direct message: `users.lookupByEmail`, then
/// `chat.postMessage` to that user, which Slack delivers as a direct message from the app.
pub(super) async fn direct(
    app: &App,
    job: &Job,
    email: &str,
    token: &str,
    about: &About,
) -> Outcome {
    let started = Instant::now();
    let slack = match slack_settings(app, job, started).await {
        Ok(slack) => slack,
        Err(failed) => return failed,
    };
    let Some(bot) = slack.bot_token.as_deref() else {
        let why = "Slack has no bot token in this workspace's settings";
        return Outcome::failed(job, started, why.into(), false);
    };
    let purpose = Purpose::LinkToken {
        workspace_id: job.tenant.workspace_id(),
    };
    let link = match app
        .cipher()
        .map_err(|e| e.to_string())
        .and_then(|c| c.open(token, purpose).map_err(|e| e.to_string()))
    {
        Ok(t) => format!("{}/approvals/{t}", app.public_url()),
        Err(e) => {
            let why = format!("cannot open the message's link: {e}");
            return Outcome::failed(job, started, why, true);
        }
    };
    let outcome = |result: Result<(Answer, Value), SlackError>| match result {
        Ok((answer, _)) => Outcome::answered(job, started, &answer, None, true),
        Err(SlackError::Transport(why, retryable)) => Outcome::failed(job, started, why, retryable),
        Err(SlackError::Api(answer, why, retryable)) => {
            Outcome::answered(job, started, &answer, Some(why), retryable)
        }
    };
    let user = slack_call(app, bot, "users.lookupByEmail", |r| {
        r.form(&[("email", email)])
    })
    .await;
    let user_id = match &user {
        Ok((_, body)) => body["user"]["id"].as_str().unwrap_or_default().to_owned(),
        Err(_) => return outcome(user),
    };
    let currency = match super::currency(app, job, started).await {
        Ok(c) => c,
        Err(failed) => return failed,
    };
    let mut message = render::slack::message(about, &currency, &link, true);
    message["channel"] = json!(user_id);
    message["unfurl_links"] = json!(false);
    outcome(slack_call(app, bot, "chat.postMessage", |r| r.json(&message)).await)
}

/// A stage announced in the workspace's Slack channel, through its incoming webhook.
pub(super) async fn slack_channel(app: &App, job: &Job, about: &About) -> Outcome {
    let currency = match super::currency(app, job, Instant::now()).await {
        Ok(c) => c,
        Err(failed) => return failed,
    };
    let message = render::slack::message(about, &currency, &sign_in_url(app, about), false);
    slack_post(app, job, &message).await
}

/// A message posted to the workspace's Slack channel, through its incoming webhook.
pub(super) async fn slack_post(app: &App, job: &Job, message: &Value) -> Outcome {
    let started = Instant::now();
    let slack = match slack_settings(app, job, started).await {
        Ok(slack) => slack,
        Err(failed) => return failed,
    };
    let Slack {
        webhook_url: Some(url),
        ..
    } = slack
    else {
        let why = "Slack is not connected for channel posts in this workspace \
                   (PUT /api/v1/settings/channels/slack with a webhook_url)";
        return Outcome::failed(job, started, why.into(), false);
    };
    post_webhook(app, job, started, &url, message).await
}

/// A stage announced in the workspace's Teams channel.
pub(super) async fn teams_channel(app: &App, job: &Job, about: &About) -> Outcome {
    let currency = match super::currency(app, job, Instant::now()).await {
        Ok(c) => c,
        Err(failed) => return failed,
    };
    let message = render::teams::message(about, &currency, &sign_in_url(app, about));
    teams_post(app, job, &message).await
}

/// A message posted to the workspace's Teams channel.
pub(super) async fn teams_post(app: &App, job: &Job, message: &Value) -> Outcome {
    let started = Instant::now();
    let teams = match app.connected(&job.tenant).await {
        Ok(c) => c.teams,
        Err(e) => {
            let why = format!("cannot read the Teams settings: {e}");
            return Outcome::failed(job, started, why, true);
        }
    };
    let Some(teams) = teams else {
        let why = "Teams is not connected in this workspace \
                   (PUT /api/v1/settings/channels/teams with a webhook_url)";
        return Outcome::failed(job, started, why.into(), false);
    };
    post_webhook(app, job, started, &teams.webhook_url, message).await
}

/// POSTs a message to an incoming webhook (Slack's or Teams'): 2xx is delivered.
async fn post_webhook(
    app: &App,
    job: &Job,
    started: Instant,
    url: &str,
    message: &Value,
) -> Outcome {
    if let Err(why) = check_destination(url, app.config.webhook_allow_private) {
        return Outcome::failed(job, started, why, false);
    }
    match exchange(app.http.post(url).json(message), 1024).await {
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
