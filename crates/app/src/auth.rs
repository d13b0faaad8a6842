//! Who is asking, and what they may do. Tenancy by type: the only ways to a workspace's data
//! are an API key [`App::authenticate`] accepted ([`Caller`]), a session
//! [`App::signed`] accepted ([`Signed`]), or the operator at the command line, who has the
//! database. Rights by type too: managing takes an [`Admin`] (an admin key, a signed-in owner
//! or admin, the operator), reading the workspace a [`Reader`] (any of those, or any signed-in
//! member), reading one evaluation anything that [`Reads`].

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

    /// What an admin may read: everything.
    pub fn reader(&self) -> Reader {
        Reader {
            tenant: self.tenant.clone(),
        }
    }
}

/// Who may read a workspace's governance data (policies, evaluations, members, keys without
/// their secrets, the audit trail): an admin, or any member signed in, viewers included.
#[derive(Debug, Clone)]
pub struct Reader {
    tenant: Tenant,
}

impl Reader {
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }
}

/// Who may read one evaluation they know the id of (its timeline, its deliveries): any key of
/// its workspace (an agent follows its own proposals), or a reader.
pub trait Reads {
    fn tenant(&self) -> &Tenant;
}

impl Reads for Caller {
    fn tenant(&self) -> &Tenant {
        &self.tenant
    }
}

impl Reads for Reader {
    fn tenant(&self) -> &Tenant {
        &self.tenant
    }
}

/// A person signed in to the dashboard, looking at one workspace, with their roles there.
#[derive(Debug, Clone)]
pub struct Signed {
    pub(crate) token_hash: String,
    pub(crate) email: String,
    pub(crate) tenant: Tenant,
    pub(crate) workspace: String,
    pub(crate) roles: Vec<String>,
    pub(crate) csrf: String,
    /// Signed in through the workspace's identity provider (bound to the workspace).
    pub(crate) sso: bool,
}

impl Signed {
    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The name of the workspace the session looks at.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Whether the workspace's identity provider signed this session in.
    pub fn via_sso(&self) -> bool {
        self.sso
    }

    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The token every state-changing request of this session carries (a form field or a
    /// header): a cross-site request cannot know it.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Whether the person manages the workspace: `owner` or `admin`.
    pub fn manages(&self) -> bool {
        self.roles.iter().any(|r| r == "owner" || r == "admin")
    }

    pub fn actor(&self) -> Actor {
        Actor::Member(self.email.clone())
    }

    /// What every member may read.
    pub fn reader(&self) -> Reader {
        Reader {
            tenant: self.tenant.clone(),
        }
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

    /// A signed-in person as a manager of their workspace, if they are an owner or admin
    /// there.
    pub fn manager(&self, signed: &Signed) -> Result<Admin> {
        if !signed.manages() {
            return Err(Error::Forbidden);
        }
        Ok(Admin {
            tenant: signed.tenant.clone(),
            actor: signed.actor(),
            source: PolicySource::Dashboard,
        })
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
