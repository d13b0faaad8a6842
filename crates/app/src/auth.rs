//! Who is asking. Tenancy by type: the only way to a [`Caller`] (and so to a workspace's data)
//! is an API key [`App::authenticate`] accepted, and the ways to an [`Admin`] are a caller
//! whose key has the admin scope, or the operator at the command line, who has the database.

use agentnexus_store::{Actor, PolicySource, Scope, Tenant};

use crate::App;
use crate::error::{Error, Result};
use crate::types::KeyId;

/// A request made with a valid key of any scope.
#[derive(Debug, Clone)]
pub struct Caller {
    tenant: Tenant,
    key_id: KeyId,
    scope: Scope,
}

impl Caller {
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn actor(&self) -> Actor {
        Actor::Key(self.key_id.to_string())
    }
}

/// Who may manage a workspace: a request made with an admin key, or the operator.
#[derive(Debug, Clone)]
pub struct Admin {
    tenant: Tenant,
    actor: Actor,
    /// Where policy changes it makes are recorded as coming from.
    source: PolicySource,
}

impl Admin {
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn actor(&self) -> Actor {
        self.actor.clone()
    }

    pub fn source(&self) -> PolicySource {
        self.source.clone()
    }
}

impl App {
    /// The caller behind a key's secret (`anx_…`): known, not revoked, and within its key's
    /// request rate. Its use is recorded in the background.
    pub async fn authenticate(&self, secret: &str) -> Result<Caller> {
        if !secret.starts_with("anx_") {
            return Err(Error::Unauthorized);
        }
        let key = self.key(secret).await?.ok_or(Error::Unauthorized)?;
        self.limits.check_key(&key.identity.key_id)?;
        key.touch(self.now());
        Ok(Caller {
            tenant: key.identity.tenant.clone(),
            key_id: KeyId::from(key.identity.key_id.as_str()),
            scope: key.identity.scope,
        })
    }

    /// The caller as an admin, if its key has the scope; each such request also counts
    /// against the key's lower rate for managing the workspace.
    pub fn admin(&self, caller: Caller) -> Result<Admin> {
        match caller.scope {
            Scope::Admin => {
                self.limits.check_management(caller.key_id.as_str())?;
                Ok(Admin {
                    actor: caller.actor(),
                    tenant: caller.tenant,
                    source: PolicySource::Api,
                })
            }
            Scope::Agent => Err(Error::Forbidden),
        }
    }

    /// The operator of a workspace, named: whoever runs the command line against the
    /// database, which holds everything anyway. Only the CLI takes this way in.
    pub async fn operator(&self, workspace: &str) -> Result<Admin> {
        let (_, tenant) = self
            .store
            .workspace_by_name(workspace)
            .await?
            .ok_or_else(|| Error::Invalid {
                detail: format!("no workspace named `{workspace}`"),
                problems: Vec::new(),
            })?;
        Ok(Admin {
            tenant,
            actor: Actor::Cli,
            source: PolicySource::Cli,
        })
    }
}
