//! Values the server sealed with its key before storing them (webhook signing secrets, channel
//! settings, the links and codes inside queued e-mails and chat messages). The store never
//! reads them; it only finds those sealed in the first format, without associated data, so
//! the server can seal them again bound to their workspace and purpose.

use sqlx::Row;

use crate::{Result, Store, Tenant};

/// Where a sealed value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedAt {
    /// `webhook_secrets.secret` of this row id.
    WebhookSecret { id: String },
    /// `channel_settings.settings` of this channel.
    ChannelSettings { channel: String },
    /// A queued or running job's payload (JSON holding `token` or `code`).
    JobPayload { id: String },
}

/// A value sealed in the first format, as stored.
#[derive(Debug, Clone)]
pub struct LegacySealed {
    pub tenant: Tenant,
    pub at: SealedAt,
    /// The stored text: the ciphertext itself, or the job payload holding it.
    pub stored: String,
}

/// The first format's prefix.
const LEGACY: &str = "v1.%";

impl Store {
    /// Every stored value still sealed in the first format (jobs only while they may still run).
    pub async fn legacy_sealed(&self) -> Result<Vec<LegacySealed>> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT id, workspace_id, secret FROM webhook_secrets WHERE secret LIKE $1",
        )
        .bind(LEGACY)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            out.push(LegacySealed {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                at: SealedAt::WebhookSecret {
                    id: r.try_get("id")?,
                },
                stored: r.try_get("secret")?,
            });
        }
        let rows = sqlx::query(
            "SELECT workspace_id, channel, settings FROM channel_settings WHERE settings LIKE $1",
        )
        .bind(LEGACY)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            out.push(LegacySealed {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                at: SealedAt::ChannelSettings {
                    channel: r.try_get("channel")?,
                },
                stored: r.try_get("settings")?,
            });
        }
        let rows = sqlx::query(
            "SELECT id, workspace_id, payload FROM jobs WHERE status IN ('queued', 'running') \
             AND payload LIKE '%\"v1.%'",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            out.push(LegacySealed {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                at: SealedAt::JobPayload {
                    id: r.try_get("id")?,
                },
                stored: r.try_get("payload")?,
            });
        }
        Ok(out)
    }

    /// Replaces a stored sealed value, if it is still `old` (another server may have replaced
    /// it first). Answers whether this call did.
    pub async fn replace_sealed(&self, value: &LegacySealed, new: &str) -> Result<bool> {
        let ws = value.tenant.workspace_id();
        let query = match &value.at {
            SealedAt::WebhookSecret { id } => sqlx::query(
                "UPDATE webhook_secrets SET secret = $3 WHERE id = $1 AND workspace_id = $2 \
                 AND secret = $4",
            )
            .bind(id),
            SealedAt::ChannelSettings { channel } => sqlx::query(
                "UPDATE channel_settings SET settings = $3 WHERE channel = $1 \
                 AND workspace_id = $2 AND settings = $4",
            )
            .bind(channel),
            SealedAt::JobPayload { id } => sqlx::query(
                "UPDATE jobs SET payload = $3 WHERE id = $1 AND workspace_id = $2 AND payload = $4",
            )
            .bind(id),
        };
        let done = query
            .bind(ws)
            .bind(new)
            .bind(&value.stored)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
