//! Workspace settings: the chat channels approvals use (SPEC §5). Tokens and webhook URLs are
//! credentials: they are stored encrypted with the server key and never answered back; what
//! is answered is which of them are set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::channels::{Slack, Teams};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Json;
use crate::state::AppState;
use crate::workers::delivery::check_destination;

#[derive(Debug, Serialize, ToSchema)]
pub struct SlackView {
    /// A bot token is set: each approver gets a direct message with their own link.
    pub bot_token_set: bool,
    /// An incoming webhook is set: each stage is announced in its channel.
    pub webhook_url_set: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamsView {
    /// Always true while Teams is connected: each stage is announced in the webhook's channel.
    pub webhook_url_set: bool,
    pub updated_at: DateTime<Utc>,
}

/// The workspace's chat channels; absent ones are not connected.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelsView {
    pub slack: Option<SlackView>,
    pub teams: Option<TeamsView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// A bot token (`xoxb-…`) with the scopes `chat:write`, `users:read` and
    /// `users:read.email`.
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 255, pattern = "^(xoxb-|xoxe\\.xoxb-)[!-~]*$")]
    pub bot_token: Option<String>,
    /// An incoming webhook (`https://hooks.slack.com/services/…`): an http(s) URL, at most
    /// 2048 characters.
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 2048)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsSettings {
    /// A channel's incoming webhook: a Workflows ("Post to a channel when a webhook request is
    /// received") URL or a classic connector URL; an http(s) URL, at most 2048 characters.
    #[schema(max_length = 2048)]
    pub webhook_url: String,
}

async fn view(state: &AppState, tenant: &agentnexus_store::Tenant) -> ApiResult<ChannelsView> {
    let stored = state.store.channel_settings(tenant).await?;
    let connected = crate::channels::connected(state, tenant).await?;
    let updated = |name: &str| {
        stored
            .iter()
            .find(|s| s.channel == name)
            .map(|s| s.updated_at)
    };
    Ok(ChannelsView {
        slack: connected
            .slack
            .zip(updated("slack"))
            .map(|(s, updated_at)| SlackView {
                bot_token_set: s.bot_token.is_some(),
                webhook_url_set: s.webhook_url.is_some(),
                updated_at,
            }),
        teams: updated("teams").map(|updated_at| TeamsView {
            webhook_url_set: true,
            updated_at,
        }),
    })
}

fn webhook_url(state: &AppState, url: &str) -> ApiResult<String> {
    if !crate::extract::is_webhook_url(url) {
        return Err(ApiError::field(
            "webhook_url",
            "must be an http(s) URL with a host, at most 2048 characters",
        ));
    }
    check_destination(url, state.config.webhook_allow_private)
        .map_err(|why| ApiError::field("webhook_url", why))?;
    Ok(url.to_owned())
}

/// Bot tokens as Slack issues them: `xoxb-…`, or `xoxe.xoxb-…` with token rotation.
fn bot_token(token: &str) -> ApiResult<String> {
    let shaped = (token.starts_with("xoxb-") || token.starts_with("xoxe.xoxb-"))
        && token.len() <= 255
        && token.bytes().all(|b| b.is_ascii_graphic());
    if shaped {
        Ok(token.to_owned())
    } else {
        Err(ApiError::field(
            "bot_token",
            "must be a Slack bot token (xoxb-…)",
        ))
    }
}

/// The chat channels approvals can use in this workspace.
#[utoipa::path(get, path = "/api/v1/settings/channels", tag = "settings",
    responses((status = 200, body = ChannelsView), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn channels(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<axum::Json<ChannelsView>> {
    Ok(axum::Json(view(&state, &caller.tenant).await?))
}

/// Connect Slack, or replace its settings: a bot token, an incoming webhook, or both.
#[utoipa::path(put, path = "/api/v1/settings/channels/slack", tag = "settings", request_body = SlackSettings,
    responses((status = 200, body = ChannelsView), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_slack(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(req): Json<SlackSettings>,
) -> ApiResult<axum::Json<ChannelsView>> {
    let slack = Slack {
        bot_token: req.bot_token.as_deref().map(bot_token).transpose()?,
        webhook_url: req
            .webhook_url
            .as_deref()
            .map(|u| webhook_url(&state, u))
            .transpose()?,
    };
    if slack.bot_token.is_none() && slack.webhook_url.is_none() {
        return Err(ApiError::field(
            "bot_token",
            "give a bot_token, a webhook_url or both",
        ));
    }
    let described = json!({
        "bot_token": slack.bot_token.is_some(),
        "webhook_url": slack.webhook_url.is_some(),
    });
    let settings = serde_json::to_string(&slack).map_err(|e| ApiError::Internal(e.to_string()))?;
    save(&state, &caller, "slack", &settings, described).await
}

/// Connect Teams, or replace its webhook.
#[utoipa::path(put, path = "/api/v1/settings/channels/teams", tag = "settings", request_body = TeamsSettings,
    responses((status = 200, body = ChannelsView), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_teams(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(req): Json<TeamsSettings>,
) -> ApiResult<axum::Json<ChannelsView>> {
    let teams = Teams {
        webhook_url: webhook_url(&state, &req.webhook_url)?,
    };
    let described = json!({"webhook_url": true});
    let settings = serde_json::to_string(&teams).map_err(|e| ApiError::Internal(e.to_string()))?;
    save(&state, &caller, "teams", &settings, described).await
}

async fn save(
    state: &AppState,
    caller: &crate::auth::Caller,
    channel: &str,
    settings: &str,
    described: serde_json::Value,
) -> ApiResult<axum::Json<ChannelsView>> {
    state
        .store
        .put_channel_settings(
            &caller.tenant,
            channel,
            &state.cipher.seal(
                settings,
                crate::crypto::Purpose::ChannelSettings {
                    workspace_id: caller.tenant.workspace_id(),
                    channel,
                },
            ),
            described,
            caller.actor(),
            state.now(),
        )
        .await?;
    Ok(axum::Json(view(state, &caller.tenant).await?))
}

/// Disconnect Slack.
#[utoipa::path(delete, path = "/api/v1/settings/channels/slack", tag = "settings",
    responses((status = 204), (status = 404, description = "Not connected", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_slack(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<StatusCode> {
    remove(&state, &caller, "slack").await
}

/// Disconnect Teams.
#[utoipa::path(delete, path = "/api/v1/settings/channels/teams", tag = "settings",
    responses((status = 204), (status = 404, description = "Not connected", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_teams(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<StatusCode> {
    remove(&state, &caller, "teams").await
}

async fn remove(
    state: &AppState,
    caller: &crate::auth::Caller,
    channel: &str,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_channel_settings(&caller.tenant, channel, caller.actor(), state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
