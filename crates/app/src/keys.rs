//! API keys (SPEC §2): an agent key evaluates and reads its workspace's evaluations; an admin
//! key manages the workspace. A key's secret is shown once, stored only as a hash; a revoked
//! key fails at once on this server and within `AGENTNEXUS_REFRESH_SECS` on the others.

use agentnexus_store::{ApiKey, NewKey, Scope};

use crate::error::{Error, Result};
use crate::types::KeyId;
use crate::{Admin, App, Reader};

impl App {
    /// The workspace's keys, never their secrets.
    pub async fn keys(&self, reader: &Reader) -> Result<Vec<ApiKey>> {
        Ok(self.store.keys(reader.tenant()).await?)
    }

    /// A new key named `name` (1-128 characters, no control characters); its secret is in
    /// this answer only.
    pub async fn create_key(&self, admin: &Admin, name: &str, scope: &str) -> Result<NewKey> {
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(Error::field(
                "name",
                "must be 1 to 128 characters, no control characters",
            ));
        }
        let scope =
            Scope::parse(scope).ok_or_else(|| Error::field("scope", "must be agent or admin"))?;
        Ok(self
            .store
            .create_key(admin.tenant(), name, scope, admin.actor(), self.now())
            .await?)
    }

    /// Revokes a key: it fails at once.
    pub async fn revoke_key(&self, admin: &Admin, id: &KeyId) -> Result<ApiKey> {
        let tenant = admin.tenant();
        let key = self
            .store
            .revoke_key(tenant, id.as_str(), admin.actor(), self.now())
            .await?;
        let uses = self.keys.forget(std::slice::from_ref(&key.id));
        self.record_key_uses(&uses).await;
        if uses.is_empty() {
            return Ok(key);
        }
        // Read again so the answer shows the use just recorded.
        Ok(self
            .store
            .keys(tenant)
            .await?
            .into_iter()
            .find(|k| k.id == key.id)
            .unwrap_or(key))
    }
}
