//! Integrator webhooks (SPEC §6): the workspace's signing secret, its rotation, and each
//! evaluation's deliveries (webhooks and approval messages) with every attempt.

use agentnexus_store::{Delivery, Message, WebhookEvent};
use chrono::{DateTime, Utc};

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::types::{EvaluationId, WebhookUrl};
use crate::{Admin, App, Reader, Reads};

/// How long a rotated secret keeps signing beside the new one.
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

impl App {
    /// The workspace's signing secret (`whsec_…`), made on first use.
    pub async fn signing_secret(&self, admin: &Admin) -> Result<String> {
        self.webhook_secret(admin.tenant()).await
    }

    /// Makes a new signing secret; the previous one keeps signing until the time answered.
    pub async fn rotate_signing_secret(&self, admin: &Admin) -> Result<(String, DateTime<Utc>)> {
        let tenant = admin.tenant();
        // A workspace that never had a secret gets one first, so there is always one to keep.
        self.webhook_secret(tenant).await?;
        let fresh = crate::signing::new_secret();
        let sealed = self.cipher()?.seal(
            &fresh,
            Purpose::WebhookSecret {
                workspace_id: tenant.workspace_id(),
            },
        );
        let until = self
            .store
            .rotate_webhook_secret(tenant, &sealed, ROTATION_GRACE, admin.actor(), self.now())
            .await?;
        Ok((fresh, until))
    }

    /// The deliveries of one evaluation, oldest first, with every attempt.
    pub async fn deliveries(&self, who: &impl Reads, id: &EvaluationId) -> Result<Vec<Delivery>> {
        let tenant = who.tenant();
        if self.store.evaluation(tenant, id.as_str()).await?.is_none() {
            return Err(Error::NotFound);
        }
        Ok(self.store.deliveries(tenant, id.as_str()).await?)
    }

    /// One delivery of the workspace (an evaluation's, or a test), with every attempt.
    pub async fn delivery(&self, reader: &Reader, id: &str) -> Result<Delivery> {
        self.store
            .delivery(reader.tenant(), id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Tries a delivery that was given up (dead) again at once, with a fresh retry schedule
    /// (same `webhook-id`, so receivers still see one message). Audited (`delivery.retried`).
    pub async fn retry_delivery(&self, admin: &Admin, id: &str) -> Result<Delivery> {
        self.store
            .retry_delivery(admin.tenant(), id, admin.actor(), self.now())
            .await?;
        self.delivery(&admin.reader(), id).await
    }

    /// Queues a signed `test` event to `url`, delivered (and retried) as any webhook is, to
    /// check a receiver and its signature check. Audited (`channel.test_queued`).
    pub async fn test_webhook(&self, admin: &Admin, url: String) -> Result<Delivery> {
        let url = WebhookUrl::parse("url", url)?;
        let tenant = admin.tenant();
        if self.limits.queue_full(tenant.workspace_id()) {
            return Err(Error::TooMany {
                detail: "this workspace has too many deliveries waiting; test again when some \
                         are delivered"
                    .into(),
                retry_after_secs: 5,
            });
        }
        // The workspace's secret exists before anything is signed with it.
        self.webhook_secret(tenant).await?;
        let now = self.now();
        let message = Message::Webhook {
            url: url.into_string(),
            event: WebhookEvent::Test {
                message: "A test event from AgentNexus: your receiver is reachable.".into(),
                occurred_at: now,
            },
        };
        let id = self
            .store
            .queue_test_message(tenant, &message, admin.actor(), now)
            .await?;
        self.delivery(&admin.reader(), &id).await
    }
}
