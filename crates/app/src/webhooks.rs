//! Integrator webhooks (SPEC §6): the workspace's signing secret, its rotation, and each
//! evaluation's deliveries (webhooks and approval messages) with every attempt.

use agentnexus_store::Delivery;
use chrono::{DateTime, Utc};

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::types::EvaluationId;
use crate::{Admin, App, Reads};

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
}
