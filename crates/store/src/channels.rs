//! The chat channels a workspace has connected for approvals (Slack, Teams). Their settings
//! hold credentials (a bot token, webhook URLs that post on their own), so the store keeps
//! them only as the ciphertext the server hands it.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use crate::{
    Actor, EventKind, NewAuditEvent, Result, Store, StoreError, Tenant, from_micros, micros,
};

/// One channel's settings as stored: sealed with the server key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// `slack` or `teams`.
    pub channel: String,
    pub sealed: String,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Every channel the workspace has connected.
    pub async fn channel_settings(&self, tenant: &Tenant) -> Result<Vec<ChannelSettings>> {
        let rows = sqlx::query(
            "SELECT channel, settings, updated_at FROM channel_settings WHERE workspace_id = $1 \
             ORDER BY channel",
        )
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChannelSettings {
                    channel: r.try_get("channel")?,
                    sealed: r.try_get("settings")?,
                    updated_at: from_micros(r.try_get("updated_at")?),
                })
            })
            .collect()
    }

    /// Each connected channel with how many workspaces connected it, by name.
    pub async fn channels_in_use(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS workspaces FROM channel_settings GROUP BY channel \
             ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("workspaces")?)))
            .collect()
    }

    /// Connects a channel or replaces its settings. `described` is what the audit trail keeps
    /// of them: which fields are set, never their values.
    pub async fn put_channel_settings(
        &self,
        tenant: &Tenant,
        channel: &str,
        sealed: &str,
        described: serde_json::Value,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO channel_settings (workspace_id, channel, settings, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, channel) \
                 DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(tenant.workspace_id())
            .bind(channel)
            .bind(sealed)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::SettingsChannelUpdated,
                actor,
                evaluation_id: None,
                data: json!({"channel": channel, "settings": described}),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }

    /// Disconnects a channel; `NotFound` when it was not connected.
    pub async fn delete_channel_settings(
        &self,
        tenant: &Tenant,
        channel: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            let deleted = sqlx::query(
                "DELETE FROM channel_settings WHERE workspace_id = $1 AND channel = $2",
            )
            .bind(tenant.workspace_id())
            .bind(channel)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            chain.append(&NewAuditEvent {
                kind: EventKind::SettingsChannelRemoved,
                actor,
                evaluation_id: None,
                data: json!({"channel": channel}),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }
}
