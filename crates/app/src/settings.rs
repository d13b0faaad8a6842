//! Workspace settings: the chat channels approvals use (SPEC §5). A Slack bot token reaches
//! each approver privately (`users.lookupByEmail`, then `chat.postMessage` to that user) with
//! their own secure link, as the e-mail does; a channel webhook (Slack or Teams) reaches
//! everyone in a channel, so its message carries no credential and links to the sign-in page.
//!
//! Tokens and webhook URLs are credentials: stored sealed with the server key for their
//! workspace and channel, never answered back; what is answered is which of them are set.

use agentnexus_store::{Message, Tenant};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::types::{Channel, Currency, WebhookUrl};
use crate::{Admin, App, Reader};

/// Slack as a workspace connected it. Either or both: a bot token sends direct messages, a
/// webhook posts to one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// Teams as a workspace connected it: a channel's incoming webhook (a Workflows webhook or a
/// classic connector URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teams {
    pub webhook_url: String,
}

/// The chat channels of one workspace, opened with the server key.
#[derive(Debug, Clone, Default)]
pub struct Connected {
    pub slack: Option<Slack>,
    pub teams: Option<Teams>,
}

/// Which channels are connected and with what, never the secrets themselves.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub slack: Option<SlackState>,
    pub teams: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SlackState {
    pub bot_token_set: bool,
    pub webhook_url_set: bool,
    pub updated_at: DateTime<Utc>,
}

/// What `put_slack` takes; at least one of the two.
#[derive(Debug, Clone, Default)]
pub struct SlackInput {
    pub bot_token: Option<String>,
    pub webhook_url: Option<String>,
}

/// Bot tokens as Slack issues them: `xoxb-…`, or `xoxe.xoxb-…` with token rotation.
fn bot_token(token: String) -> Result<String> {
    let shaped = (token.starts_with("xoxb-") || token.starts_with("xoxe.xoxb-"))
        && token.len() <= 255
        && token.bytes().all(|b| b.is_ascii_graphic());
    if shaped {
        Ok(token)
    } else {
        Err(Error::field(
            "bot_token",
            "must be a Slack bot token (xoxb-…)",
        ))
    }
}

impl App {
    /// A chat webhook URL: shaped as the API says, and not a private address unless the
    /// server allows those.
    fn chat_webhook(&self, url: String) -> Result<String> {
        let url = WebhookUrl::parse("webhook_url", url)?;
        crate::outbound::check_destination(url.as_str(), self.config.webhook_allow_private)
            .map_err(|why| Error::field("webhook_url", why))?;
        Ok(url.into_string())
    }

    /// Reads and opens a workspace's channel settings.
    pub(crate) async fn connected(&self, tenant: &Tenant) -> Result<Connected> {
        let mut out = Connected::default();
        for s in self.store.channel_settings(tenant).await? {
            let purpose = Purpose::ChannelSettings {
                workspace_id: tenant.workspace_id(),
                channel: &s.channel,
            };
            let open = self
                .cipher()?
                .open(&s.sealed, purpose)
                .map_err(|e| Error::Internal(format!("channel settings: {e}")))?;
            let corrupt = |e: serde_json::Error| Error::Internal(format!("channel settings: {e}"));
            match s.channel.as_str() {
                "slack" => out.slack = Some(serde_json::from_str(&open).map_err(corrupt)?),
                "teams" => out.teams = Some(serde_json::from_str(&open).map_err(corrupt)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The channels approvals can reach people on, across workspaces, for the start-up line:
    /// `email` when SMTP is configured, then each chat channel with how many workspaces
    /// connected it (`slack (2 workspaces)`); `none` when there is none.
    pub async fn channels_summary(&self) -> Result<String> {
        let mut parts: Vec<String> = Vec::new();
        if self.config.smtp_url.is_some() {
            parts.push("email".into());
        }
        for (channel, n) in self.store.channels_in_use().await? {
            let plural = if n == 1 { "" } else { "s" };
            parts.push(format!("{channel} ({n} workspace{plural})"));
        }
        Ok(if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        })
    }

    /// The chat channels approvals can use in the workspace.
    pub async fn channels(&self, reader: &Reader) -> Result<Channels> {
        let tenant = reader.tenant();
        let stored = self.store.channel_settings(tenant).await?;
        let connected = self.connected(tenant).await?;
        let updated = |name: &str| {
            stored
                .iter()
                .find(|s| s.channel == name)
                .map(|s| s.updated_at)
        };
        Ok(Channels {
            slack: connected
                .slack
                .zip(updated("slack"))
                .map(|(s, updated_at)| SlackState {
                    bot_token_set: s.bot_token.is_some(),
                    webhook_url_set: s.webhook_url.is_some(),
                    updated_at,
                }),
            teams: updated("teams"),
        })
    }

    /// Connects Slack, or replaces its settings: a bot token, an incoming webhook, or both.
    pub async fn put_slack(&self, admin: &Admin, input: SlackInput) -> Result<Channels> {
        let slack = Slack {
            bot_token: input.bot_token.map(bot_token).transpose()?,
            webhook_url: input
                .webhook_url
                .map(|u| self.chat_webhook(u))
                .transpose()?,
        };
        if slack.bot_token.is_none() && slack.webhook_url.is_none() {
            return Err(Error::field(
                "bot_token",
                "give a bot_token, a webhook_url or both",
            ));
        }
        let described = json!({
            "bot_token": slack.bot_token.is_some(),
            "webhook_url": slack.webhook_url.is_some(),
        });
        let settings = serde_json::to_string(&slack).map_err(Error::internal)?;
        self.save_channel(admin, Channel::Slack, &settings, described)
            .await
    }

    /// Connects Teams, or replaces its webhook.
    pub async fn put_teams(&self, admin: &Admin, webhook_url: String) -> Result<Channels> {
        let teams = Teams {
            webhook_url: self.chat_webhook(webhook_url)?,
        };
        let settings = serde_json::to_string(&teams).map_err(Error::internal)?;
        self.save_channel(
            admin,
            Channel::Teams,
            &settings,
            json!({"webhook_url": true}),
        )
        .await
    }

    async fn save_channel(
        &self,
        admin: &Admin,
        channel: Channel,
        settings: &str,
        described: serde_json::Value,
    ) -> Result<Channels> {
        let tenant = admin.tenant();
        let sealed = self.cipher()?.seal(
            settings,
            Purpose::ChannelSettings {
                workspace_id: tenant.workspace_id(),
                channel: channel.as_str(),
            },
        );
        self.store
            .put_channel_settings(
                tenant,
                channel.as_str(),
                &sealed,
                described,
                admin.actor(),
                self.now(),
            )
            .await?;
        self.channels(&admin.reader()).await
    }

    /// Disconnects a chat channel; not connected is not found.
    pub async fn disconnect(&self, admin: &Admin, channel: Channel) -> Result<()> {
        self.store
            .delete_channel_settings(admin.tenant(), channel.as_str(), admin.actor(), self.now())
            .await?;
        Ok(())
    }
}

impl App {
    /// Sends a test message, to check that a channel reaches people: an e-mail to the
    /// signed-in manager, or a post to the workspace's Slack or Teams channel (which must be
    /// connected). Audited (`channel.test_queued`); its delivery is a job like any other.
    pub async fn send_test_message(
        &self,
        admin: &Admin,
        signed: &crate::Signed,
        channel: Channel,
    ) -> Result<()> {
        let (workspace, requested_by) = (signed.workspace().to_owned(), admin.actor().label());
        let connected = self.channels(&signed.reader()).await?;
        let message = match channel {
            Channel::Email => Message::TestEmail {
                to: signed.email().to_owned(),
                workspace,
                requested_by,
            },
            Channel::Slack if connected.slack.as_ref().is_some_and(|s| s.webhook_url_set) => {
                Message::SlackTest {
                    workspace,
                    requested_by,
                }
            }
            Channel::Teams if connected.teams.is_some() => Message::TeamsTest {
                workspace,
                requested_by,
            },
            _ => {
                return Err(Error::Conflict(format!(
                    "{} is not connected for channel posts in this workspace",
                    channel.as_str()
                )));
            }
        };
        self.store
            .queue_test_message(admin.tenant(), &message, admin.actor(), self.now())
            .await?;
        Ok(())
    }

    /// The currency the workspace's amounts are in (default USD).
    pub async fn currency(&self, tenant: &Tenant) -> Result<Currency> {
        Ok(Currency::stored(self.store.currency(tenant).await?))
    }

    /// The workspace's own settings.
    pub async fn workspace_settings(&self, reader: &Reader) -> Result<WorkspaceSettings> {
        Ok(WorkspaceSettings {
            currency: self.currency(reader.tenant()).await?,
        })
    }

    /// Changes the workspace's currency (`currency`: an ISO 4217 code); audited
    /// (`settings.workspace_updated`) when it changes. Amounts already recorded are not
    /// converted: they are shown in the new currency.
    pub async fn set_currency(&self, admin: &Admin, code: &str) -> Result<WorkspaceSettings> {
        let currency = Currency::parse("currency", code)?;
        self.store
            .set_currency(admin.tenant(), currency.as_str(), admin.actor(), self.now())
            .await?;
        Ok(WorkspaceSettings { currency })
    }
}

/// A workspace's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSettings {
    pub currency: Currency,
}
