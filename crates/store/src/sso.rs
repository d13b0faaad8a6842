//! Enterprise sign-in (SPEC §11): a workspace's SSO connection (sealed: an OIDC client secret
//! is inside), the e-mail domains it routes, the sign-ins sent to its identity provider and not
//! yet back (single use), and the SAML assertions already used (every replica refuses a
//! second use).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use crate::{
    Actor, EventKind, NewAuditEvent, Result, Store, StoreError, Tenant, Workspace, from_micros,
    micros,
};

/// A workspace's SSO connection as stored.
#[derive(Debug, Clone)]
pub struct SsoConnection {
    /// `oidc` or `saml`.
    pub protocol: String,
    pub sealed: String,
    pub required: bool,
    pub jit: bool,
    pub domains: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

/// A connection to save. `described` is what the audit trail keeps of it (no secret).
pub struct NewSsoConnection<'a> {
    pub protocol: &'a str,
    pub sealed: &'a str,
    pub required: bool,
    pub jit: bool,
    pub domains: &'a [String],
    pub described: serde_json::Value,
}

fn audit(
    kind: EventKind,
    actor: Actor,
    data: serde_json::Value,
    now: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        actor,
        evaluation_id: None,
        data,
        occurred_at: now,
    }
}

impl Store {
    /// The workspace's SSO connection, if it has one.
    pub async fn sso_connection(&self, tenant: &Tenant) -> Result<Option<SsoConnection>> {
        let Some(row) = sqlx::query(
            "SELECT protocol, settings, required, jit, updated_at FROM sso_connections \
             WHERE workspace_id = $1",
        )
        .bind(tenant.workspace_id())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let domains =
            sqlx::query("SELECT domain FROM sso_domains WHERE workspace_id = $1 ORDER BY domain")
                .bind(tenant.workspace_id())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get("domain"))
                .collect::<std::result::Result<_, _>>()?;
        Ok(Some(SsoConnection {
            protocol: row.try_get("protocol")?,
            sealed: row.try_get("settings")?,
            required: row.try_get::<i64, _>("required")? != 0,
            jit: row.try_get::<i64, _>("jit")? != 0,
            domains,
            updated_at: from_micros(row.try_get("updated_at")?),
        }))
    }

    /// Saves the workspace's connection and the domains it routes (replacing both); a domain
    /// another workspace routes is a conflict. Audited (`settings.sso_updated`).
    pub async fn put_sso_connection(
        &self,
        tenant: &Tenant,
        new: NewSsoConnection<'_>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO sso_connections (workspace_id, protocol, settings, required, jit, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id) DO UPDATE \
                 SET protocol = excluded.protocol, settings = excluded.settings, \
                 required = excluded.required, jit = excluded.jit, updated_at = excluded.updated_at",
            )
            .bind(tenant.workspace_id())
            .bind(new.protocol)
            .bind(new.sealed)
            .bind(i64::from(new.required))
            .bind(i64::from(new.jit))
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM sso_domains WHERE workspace_id = $1")
                .bind(tenant.workspace_id())
                .execute(&mut *tx)
                .await?;
            for domain in new.domains {
                sqlx::query("INSERT INTO sso_domains (domain, workspace_id) VALUES ($1, $2)")
                    .bind(domain)
                    .bind(tenant.workspace_id())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if StoreError::is_unique_violation(&e) {
                            StoreError::Conflict(format!(
                                "{domain} is routed to another workspace's identity provider"
                            ))
                        } else {
                            e.into()
                        }
                    })?;
            }
            chain.append(&audit(EventKind::SettingsSsoUpdated, actor, new.described, now));
            Ok(())
        })
        .await
    }

    /// Removes the workspace's connection and its domains; `NotFound` when it had none.
    pub async fn delete_sso_connection(
        &self,
        tenant: &Tenant,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            sqlx::query("DELETE FROM sso_domains WHERE workspace_id = $1")
                .bind(tenant.workspace_id())
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM sso_connections WHERE workspace_id = $1")
                .bind(tenant.workspace_id())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            chain.append(&audit(EventKind::SettingsSsoRemoved, actor, json!({}), now));
            Ok(())
        })
        .await
    }

    /// The workspace whose provider an e-mail domain routes to.
    pub async fn sso_route(&self, domain: &str) -> Result<Option<(Workspace, Tenant)>> {
        let row = sqlx::query(
            "SELECT w.id, w.name, w.created_at FROM sso_domains d \
             JOIN workspaces w ON w.id = d.workspace_id WHERE d.domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            Ok((
                Workspace {
                    id: id.clone(),
                    name: r.try_get("name")?,
                    created_at: from_micros(r.try_get("created_at")?),
                },
                Tenant::new(id),
            ))
        })
        .transpose()
    }

    /// Records a sign-in sent to the provider. Requests past their lifetime are cleared on
    /// the way (there are as many as sign-ins started, so the table stays small).
    pub async fn create_sso_request(
        &self,
        id: &str,
        tenant: &Tenant,
        sealed: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sso_requests WHERE expires_at <= $1")
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sso_requests (id, workspace_id, secrets, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(tenant.workspace_id())
        .bind(sealed)
        .bind(micros(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses a sign-in request: its workspace and sealed secrets, once, while it lasts; `None`
    /// when unknown, used or expired (two replicas taking one at once: one gets it).
    pub async fn take_sso_request(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(Tenant, String)>> {
        let taken = sqlx::query(
            "UPDATE sso_requests SET used_at = $2 WHERE id = $1 AND used_at IS NULL \
             AND expires_at > $2",
        )
        .bind(id)
        .bind(micros(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT workspace_id, secrets FROM sso_requests WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some((
            Tenant::new(row.try_get("workspace_id")?),
            row.try_get("secrets")?,
        )))
    }

    /// Records a SAML assertion's use; `false` when it was used before (a replay). Kept until
    /// `expires_at`, when the assertion could not be accepted anyway.
    pub async fn use_saml_assertion(
        &self,
        tenant: &Tenant,
        assertion_id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        sqlx::query("DELETE FROM sso_assertions WHERE expires_at <= $1")
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO sso_assertions (workspace_id, assertion_id, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT (workspace_id, assertion_id) DO NOTHING",
        )
        .bind(tenant.workspace_id())
        .bind(assertion_id)
        .bind(micros(expires_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// A refused SSO sign-in, audited in the workspace with the reason.
    pub async fn record_sso_failure(
        &self,
        tenant: &Tenant,
        data: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.append_audit(
            tenant,
            &[audit(EventKind::SsoSignInFailed, Actor::System, data, now)],
        )
        .await
    }

    /// An owner's password sign-in to a workspace whose SSO is required (break-glass).
    pub async fn record_break_glass(
        &self,
        tenant: &Tenant,
        email: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.append_audit(
            tenant,
            &[audit(
                EventKind::SessionBreakGlass,
                Actor::Member(email.to_owned()),
                json!({"email": email}),
                now,
            )],
        )
        .await
    }
}
