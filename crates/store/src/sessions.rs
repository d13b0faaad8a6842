//! Who signs in to the dashboard: accounts (one per e-mail address, across workspaces),
//! sessions (a browser signed in, looking at one workspace), invitations (a link to set a
//! password), and the last verification of each workspace's chain, which pages show.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use crate::{
    Actor, EventKind, Message, NewAuditEvent, Result, Store, StoreError, Tenant, Verification,
    Workspace, from_micros, micros,
};

/// An invitation to record: the invited address, the link's token (hashed), until when it
/// works, and the e-mail that carries it.
pub struct NewInvitation<'a> {
    pub email: &'a str,
    pub token_hash: &'a str,
    pub expires_at: DateTime<Utc>,
    pub message: &'a Message,
}

/// A signed-in browser, as stored.
#[derive(Debug, Clone)]
pub struct Session {
    pub email: String,
    pub tenant: Tenant,
    pub created_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    /// The workspace whose identity provider signed this session in: it acts there only.
    pub sso: Option<Tenant>,
}

/// An invitation, as stored.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub tenant: Tenant,
    pub email: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// A workspace a person belongs to, with their roles there.
#[derive(Debug, Clone)]
pub struct Membership {
    pub workspace: Workspace,
    pub tenant: Tenant,
    pub roles: Vec<String>,
}

/// The last verification of a workspace's chain.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    pub checked_at: DateTime<Utc>,
    pub verification: Verification,
}

fn event(
    kind: EventKind,
    actor: &Actor,
    data: serde_json::Value,
    now: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        actor: actor.clone(),
        evaluation_id: None,
        data,
        occurred_at: now,
    }
}

impl Store {
    /// The password hash of the account with this e-mail address, if there is one.
    pub async fn account_password(&self, email: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("password_hash")).transpose()?)
    }

    /// Every workspace that has this e-mail address as a member, by name.
    pub async fn memberships(&self, email: &str) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT w.id, w.name, w.created_at, m.roles FROM members m \
             JOIN workspaces w ON w.id = m.workspace_id WHERE m.email = $1 ORDER BY w.name",
        )
        .bind(email)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let roles: String = r.try_get("roles")?;
                Ok(Membership {
                    tenant: Tenant::new(id.clone()),
                    workspace: Workspace {
                        id,
                        name: r.try_get("name")?,
                        created_at: from_micros(r.try_get("created_at")?),
                    },
                    roles: serde_json::from_str(&roles)?,
                })
            })
            .collect()
    }

    /// Sets the password of the account with this e-mail address (making the account when it
    /// has none), audited in the workspace the change was made from. Every session of the
    /// person ends but `keep` (the one the change was made in).
    pub async fn set_password(
        &self,
        tenant: &Tenant,
        email: &str,
        password_hash: &str,
        keep: Option<&str>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO accounts (email, password_hash, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (email) DO UPDATE SET \
                 password_hash = excluded.password_hash, updated_at = excluded.updated_at",
            )
            .bind(email)
            .bind(password_hash)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            // Every other browser signed in as this person is signed out.
            sqlx::query(
                "UPDATE sessions SET revoked_at = $2 WHERE email = $1 AND revoked_at IS NULL \
                 AND token_hash <> $3",
            )
            .bind(email)
            .bind(micros(now))
            .bind(keep.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            chain.append(&event(
                EventKind::AccountPasswordChanged,
                &actor,
                json!({"email": email}),
                now,
            ));
            Ok(())
        })
        .await
    }

    /// Starts a session for a member of `tenant`, audited there with how they signed in
    /// (`via`: `password`, `invitation`, `oidc`, `saml`). A session signed in through the
    /// workspace's identity provider (`sso`) is bound to that workspace.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        token_hash: &str,
        email: &str,
        tenant: &Tenant,
        via: &str,
        sso: bool,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO sessions (token_hash, email, workspace_id, created_at, seen_at, \
                 expires_at, sso_workspace_id) VALUES ($1, $2, $3, $4, $4, $5, $6)",
            )
            .bind(token_hash)
            .bind(email)
            .bind(tenant.workspace_id())
            .bind(micros(now))
            .bind(micros(expires_at))
            .bind(sso.then(|| tenant.workspace_id()))
            .execute(&mut *tx)
            .await?;
            chain.append(&event(
                EventKind::SessionSignedIn,
                &Actor::Member(email.to_owned()),
                json!({"email": email, "via": via}),
                now,
            ));
            Ok(())
        })
        .await
    }

    /// A failed sign-in of a known account, audited in each workspace it belongs to.
    pub async fn record_sign_in_failure(
        &self,
        email: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for m in self.memberships(email).await? {
            self.append_audit(
                &m.tenant,
                &[event(
                    EventKind::SessionSignInFailed,
                    &Actor::System,
                    json!({"email": email, "reason": reason}),
                    now,
                )],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT email, workspace_id, created_at, seen_at, expires_at, revoked_at, \
             sso_workspace_id FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                email: r.try_get("email")?,
                tenant: Tenant::new(r.try_get("workspace_id")?),
                created_at: from_micros(r.try_get("created_at")?),
                seen_at: from_micros(r.try_get("seen_at")?),
                expires_at: from_micros(r.try_get("expires_at")?),
                revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                sso: r
                    .try_get::<Option<String>, _>("sso_workspace_id")?
                    .map(Tenant::new),
            })
        })
        .transpose()
    }

    /// Records that a session was used now (callers do it at most once a minute).
    pub async fn touch_session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE sessions SET seen_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Points a session at another workspace of the same person.
    pub async fn switch_session(&self, token_hash: &str, tenant: &Tenant) -> Result<()> {
        sqlx::query("UPDATE sessions SET workspace_id = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(tenant.workspace_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a session (signing out), audited in the workspace it looked at.
    pub async fn revoke_session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(session) = self.session(token_hash).await? else {
            return Ok(());
        };
        self.audited(&session.tenant, async |tx, chain| {
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            chain.append(&event(
                EventKind::SessionSignedOut,
                &Actor::Member(session.email.clone()),
                json!({"email": session.email}),
                now,
            ));
            Ok(())
        })
        .await
    }

    /// Records an invitation and queues the e-mail that carries it, audited.
    pub async fn create_invitation(
        &self,
        tenant: &Tenant,
        invitation: NewInvitation<'_>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let ws = tenant.workspace_id();
        let NewInvitation {
            email,
            token_hash,
            expires_at,
            message,
        } = invitation;
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO invitations (token_hash, workspace_id, email, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(ws)
            .bind(email)
            .bind(micros(now))
            .bind(micros(expires_at))
            .execute(&mut *tx)
            .await?;
            crate::jobs::enqueue(tx, ws, None, message, now).await?;
            chain.append(&event(
                EventKind::MemberInvited,
                &actor,
                json!({"email": email, "expires_at": crate::timestamp_text(expires_at)}),
                now,
            ));
            Ok(())
        })
        .await
        .inspect(|()| self.jobs_ready.notify_one())
    }

    pub async fn invitation(&self, token_hash: &str) -> Result<Option<Invitation>> {
        let row = sqlx::query(
            "SELECT workspace_id, email, expires_at, used_at FROM invitations \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Invitation {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                email: r.try_get("email")?,
                expires_at: from_micros(r.try_get("expires_at")?),
                used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Uses an invitation once: sets the person's password when one is given (an account that
    /// has one keeps it otherwise), audited. Gone when used or expired meanwhile.
    pub async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Invitation> {
        let invitation = self
            .invitation(token_hash)
            .await?
            .ok_or(StoreError::NotFound)?;
        self.audited(&invitation.tenant, async |tx, chain| {
            let used = sqlx::query(
                "UPDATE invitations SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
                 AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() == 0 {
                return Err(StoreError::Gone(
                    "this invitation has been used or has expired".into(),
                ));
            }
            if let Some(hash) = password_hash {
                sqlx::query(
                    "INSERT INTO accounts (email, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3) ON CONFLICT (email) DO UPDATE SET \
                     password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                )
                .bind(&invitation.email)
                .bind(hash)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            }
            chain.append(&event(
                EventKind::InvitationAccepted,
                &Actor::Member(invitation.email.clone()),
                json!({"email": invitation.email, "password_set": password_hash.is_some()}),
                now,
            ));
            Ok(())
        })
        .await?;
        Ok(invitation)
    }

    /// Keeps the result of a verification of a workspace's chain.
    pub async fn record_chain_check(
        &self,
        tenant: &Tenant,
        verification: &Verification,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (ok, events, head_hash, broken_at, reason) = match verification {
            Verification::Ok {
                events, head_hash, ..
            } => (1i64, *events, Some(head_hash.as_str()), None, None),
            Verification::Broken {
                broken_at_seq,
                events_checked,
                reason,
                ..
            } => (
                0,
                *events_checked,
                None,
                Some(*broken_at_seq),
                Some(reason.as_str()),
            ),
        };
        sqlx::query(
            "INSERT INTO chain_checks (workspace_id, checked_at, ok, events, head_hash, \
             broken_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (workspace_id) DO UPDATE SET checked_at = excluded.checked_at, \
             ok = excluded.ok, events = excluded.events, head_hash = excluded.head_hash, \
             broken_at = excluded.broken_at, reason = excluded.reason",
        )
        .bind(tenant.workspace_id())
        .bind(micros(now))
        .bind(ok)
        .bind(events)
        .bind(head_hash)
        .bind(broken_at)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last verification of a workspace's chain, if any.
    pub async fn chain_check(&self, tenant: &Tenant) -> Result<Option<ChainCheck>> {
        let row = sqlx::query(
            "SELECT checked_at, ok, events, head_hash, broken_at, reason FROM chain_checks \
             WHERE workspace_id = $1",
        )
        .bind(tenant.workspace_id())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let events: i64 = r.try_get("events")?;
            let verification = if r.try_get::<i64, _>("ok")? == 1 {
                Verification::Ok {
                    ok: true,
                    events,
                    head_hash: r
                        .try_get::<Option<String>, _>("head_hash")?
                        .unwrap_or_default(),
                }
            } else {
                Verification::Broken {
                    ok: false,
                    broken_at_seq: r
                        .try_get::<Option<i64>, _>("broken_at")?
                        .unwrap_or_default(),
                    events_checked: events,
                    reason: r
                        .try_get::<Option<String>, _>("reason")?
                        .unwrap_or_default(),
                }
            };
            Ok(ChainCheck {
                checked_at: from_micros(r.try_get("checked_at")?),
                verification,
            })
        })
        .transpose()
    }

    /// The chain's head: its last seq and hash.
    pub async fn chain_head(&self, tenant: &Tenant) -> Result<(i64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1")
            .bind(tenant.workspace_id())
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }
}

/// A stage waiting for decisions, as the approvals inbox lists them.
#[derive(Debug, Clone)]
pub struct WaitingApproval {
    pub evaluation_id: String,
    pub stage: i64,
    pub approvers: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Who has decided this stage already.
    pub decided_by: Vec<String>,
}

impl Store {
    /// A workspace's waiting stages, nearest deadline first (those without one last), at most
    /// `limit`.
    pub async fn waiting_approvals(
        &self,
        tenant: &Tenant,
        limit: i64,
    ) -> Result<Vec<WaitingApproval>> {
        let rows = sqlx::query(
            "SELECT s.evaluation_id, s.idx, s.approvers, s.expires_at, \
             (SELECT STRING_AGG(d.approver, ',') FROM approval_decisions d \
              WHERE d.evaluation_id = s.evaluation_id AND d.stage_idx = s.idx) AS decided_by \
             FROM evaluation_stages s WHERE s.workspace_id = $1 AND s.status = 'waiting' \
             ORDER BY s.expires_at IS NULL, s.expires_at, s.evaluation_id LIMIT $2",
        )
        .bind(tenant.workspace_id())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let approvers: String = r.try_get("approvers")?;
                let decided: Option<String> = r.try_get("decided_by")?;
                let expires: Option<i64> = r.try_get("expires_at")?;
                Ok(WaitingApproval {
                    evaluation_id: r.try_get("evaluation_id")?,
                    stage: r.try_get("idx")?,
                    approvers: serde_json::from_str(&approvers)?,
                    expires_at: expires.map(from_micros),
                    decided_by: decided
                        .map(|d| d.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

impl Store {
    /// Queues a test message (settings' "send a test e-mail"), audited.
    pub async fn queue_test_message(
        &self,
        tenant: &Tenant,
        message: &Message,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let id = crate::jobs::enqueue(tx, ws, None, message, now).await?;
            let mut data = json!({
                "job_id": id,
                "channel": message.kind().as_str(),
                "to": message.recipient(),
            });
            if let Message::Webhook { url, .. } = message {
                data["url"] = json!(url);
            }
            chain.append(&event(EventKind::ChannelTestQueued, &actor, data, now));
            Ok(id)
        })
        .await
        .inspect(|_| self.jobs_ready.notify_one())
    }
}
