//! Workspace settings: the chat channels approvals use (SPEC §5). Tokens and webhook URLs are
//! credentials: what is answered is which of them are set, never them.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::settings::{Channels, SlackInput};
use agentnexus_app::types::Channel;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::Json;

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

impl From<Channels> for ChannelsView {
    fn from(c: Channels) -> Self {
        ChannelsView {
            slack: c.slack.map(|s| SlackView {
                bot_token_set: s.bot_token_set,
                webhook_url_set: s.webhook_url_set,
                updated_at: s.updated_at,
            }),
            teams: c.teams.map(|updated_at| TeamsView {
                webhook_url_set: true,
                updated_at,
            }),
        }
    }
}

/// The chat channels approvals can use in this workspace.
#[utoipa::path(get, path = "/api/v1/settings/channels", tag = "settings",
    responses((status = 200, body = ChannelsView), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn channels(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<ChannelsView>> {
    Ok(axum::Json(app.channels(&admin.reader()).await?.into()))
}

/// Connect Slack, or replace its settings: a bot token, an incoming webhook, or both.
#[utoipa::path(put, path = "/api/v1/settings/channels/slack", tag = "settings", request_body = SlackSettings,
    responses((status = 200, body = ChannelsView), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_slack(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<SlackSettings>,
) -> ApiResult<axum::Json<ChannelsView>> {
    let input = SlackInput {
        bot_token: req.bot_token,
        webhook_url: req.webhook_url,
    };
    Ok(axum::Json(app.put_slack(&admin, input).await?.into()))
}

/// Connect Teams, or replace its webhook.
#[utoipa::path(put, path = "/api/v1/settings/channels/teams", tag = "settings", request_body = TeamsSettings,
    responses((status = 200, body = ChannelsView), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_teams(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<TeamsSettings>,
) -> ApiResult<axum::Json<ChannelsView>> {
    Ok(axum::Json(
        app.put_teams(&admin, req.webhook_url).await?.into(),
    ))
}

/// Disconnect Slack.
#[utoipa::path(delete, path = "/api/v1/settings/channels/slack", tag = "settings",
    responses((status = 204), (status = 404, description = "Not connected", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_slack(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<StatusCode> {
    app.disconnect(&admin, Channel::Slack).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnect Teams.
#[utoipa::path(delete, path = "/api/v1/settings/channels/teams", tag = "settings",
    responses((status = 204), (status = 404, description = "Not connected", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_teams(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<StatusCode> {
    app.disconnect(&admin, Channel::Teams).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceSettingsView {
    /// The ISO 4217 code the workspace's amounts (`amount_cents`, `cost_cents`, spend) are in,
    /// counted in its minor unit; messages and pages show amounts with it. Default `USD`.
    pub currency: String,
}

impl From<agentnexus_app::settings::WorkspaceSettings> for WorkspaceSettingsView {
    fn from(s: agentnexus_app::settings::WorkspaceSettings) -> Self {
        WorkspaceSettingsView {
            currency: s.currency.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettingsInput {
    /// An ISO 4217 code, three letters (any case): `USD`, `EUR`, `JPY`, …
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
}

/// The workspace's own settings.
#[utoipa::path(get, path = "/api/v1/settings/workspace", tag = "settings",
    responses((status = 200, body = WorkspaceSettingsView),
        (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn workspace(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<WorkspaceSettingsView>> {
    Ok(axum::Json(
        app.workspace_settings(&admin.reader()).await?.into(),
    ))
}

/// Change the workspace's settings: its currency. Amounts already recorded are not converted;
/// they are shown in the new currency. Audited as `settings.workspace_updated` when it changes.
#[utoipa::path(put, path = "/api/v1/settings/workspace", tag = "settings",
    request_body = WorkspaceSettingsInput,
    responses((status = 200, body = WorkspaceSettingsView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a currency code", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_workspace(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(input): Json<WorkspaceSettingsInput>,
) -> ApiResult<axum::Json<WorkspaceSettingsView>> {
    Ok(axum::Json(
        app.set_currency(&admin, &input.currency).await?.into(),
    ))
}
