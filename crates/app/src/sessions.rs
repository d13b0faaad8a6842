//! Signing in to the dashboard (SPEC §11): e-mail and password (argon2id, checked off the
//! request threads), one account per person across the workspaces that have them as a member;
//! sessions kept in the store (so every replica accepts them, and each can be revoked) that
//! end after [`SESSION_IDLE`] unused or [`SESSION_LIFETIME`] in all; a CSRF token per session;
//! invitations that let a new member set their password; and switching between workspaces.
//! Sign-in is limited per account and per address, and its failures answer alike whether the
//! address is known or not.

use std::net::IpAddr;

use agentnexus_store::{Member, Membership, Message, NewInvitation, Tenant};
use chrono::{DateTime, Duration, Utc};

use crate::accounts::{hash_password, verify_password};
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::members::NewMemberInput;
use crate::notify::token_hash;
use crate::types::Email;
use crate::{Admin, App, Signed};

/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::hours(12);

/// A session ends this long after sign-in, however used.
pub const SESSION_LIFETIME: Duration = Duration::days(7);

/// An invitation works this long.
pub const INVITATION_LIFETIME: Duration = Duration::days(7);

/// Passwords are 10 to 1024 characters.
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 10..=1024;

/// What every failed sign-in answers, known address or not.
const WRONG: &str = "the e-mail address or the password is not right";

/// A hash to check passwords of unknown addresses against, so they take as long.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no account has this password"))
}

fn new_token(prefix: &str) -> String {
    crate::crypto::random_token(prefix)
}

fn csrf_for(session_token: &str) -> String {
    token_hash(&format!("agentnexus/csrf\0{session_token}"))
}

fn check_password(password: &str) -> Result<()> {
    if PASSWORD_LENGTH.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Error::field("password", "must be 10 to 1024 characters"))
    }
}

/// How many argon2id computations a server runs at once. Each takes tens of milliseconds of
/// CPU on purpose; sign-ins past this many wait their turn, so a flood of them (many accounts,
/// many addresses: under every per-account and per-address limit) cannot take every core from
/// evaluations.
const HASHING_AT_ONCE: usize = 2;

/// Runs an argon2id computation on a blocking thread, at most [`HASHING_AT_ONCE`] at a time.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHING_AT_ONCE);
    let _turn = PERMITS.acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::internal)
}

/// Checks a password against a hash, off the request threads.
async fn verified(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    hashing(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

async fn hashed(password: &str) -> Result<String> {
    let password = password.to_owned();
    hashing(move || hash_password(&password)).await
}

/// An invitation as its page shows it.
#[derive(Debug, Clone)]
pub struct InvitationView {
    pub email: String,
    pub workspace: String,
    /// Whether the person has an account already (then they only sign in).
    pub has_account: bool,
    pub expires_at: DateTime<Utc>,
}

impl App {
    /// Signs a person in with their e-mail address and password; answers the session's token
    /// (for the cookie) and the session. They land in the first of their workspaces by name.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<(String, Signed)> {
        self.limits.check_sign_in(email, address)?;
        let Ok(email) = Email::parse(email) else {
            verified(password, dummy_hash()).await;
            return Err(Error::Refused(WRONG.into()));
        };
        let email = email.into_string();
        let stored = self.store.account_password(&email).await?;
        let right = verified(password, stored.as_deref().unwrap_or(dummy_hash())).await;
        let memberships = self.store.memberships(&email).await?;
        let now = self.now();
        if stored.is_none() || !right || memberships.is_empty() {
            let reason = match (stored.is_some(), right) {
                (false, _) => "no account",
                (true, false) => "wrong password",
                (true, true) => "a member of no workspace",
            };
            tracing::info!(%email, reason, "a sign-in failed");
            if stored.is_some() {
                self.store
                    .record_sign_in_failure(&email, reason, now)
                    .await?;
            }
            return Err(Error::Refused(WRONG.into()));
        }
        // A workspace whose SSO is required takes passwords from its owners only (the
        // break-glass path, audited); its other members sign in through its provider.
        for m in &memberships {
            if !self.sso_required(&m.tenant).await? {
                return self
                    .start_session(&email, &m.tenant, "password", false, now)
                    .await;
            }
        }
        for m in &memberships {
            if m.roles.iter().any(|r| r == "owner") {
                self.store
                    .record_break_glass(&m.tenant, &email, now)
                    .await?;
                return self
                    .start_session(&email, &m.tenant, "password", false, now)
                    .await;
            }
        }
        tracing::info!(%email, "a password sign-in to workspaces that require SSO was refused");
        self.store
            .record_sign_in_failure(&email, "single sign-on required", now)
            .await?;
        Err(Error::Refused(format!(
            "{} signs in through its identity provider: use “Sign in with SSO”",
            memberships[0].workspace.name
        )))
    }

    pub(crate) async fn start_session(
        &self,
        email: &str,
        tenant: &Tenant,
        via: &str,
        sso: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, Signed)> {
        let token = new_token("ses_");
        self.store
            .create_session(
                &token_hash(&token),
                email,
                tenant,
                via,
                sso,
                now + SESSION_LIFETIME,
                now,
            )
            .await?;
        let signed = self.signed(&token).await?;
        Ok((token, signed))
    }

    /// The session a cookie's token names, if it is still good: not signed out, not past its
    /// lifetime or its idle time, and its person still a member of its workspace.
    pub async fn signed(&self, token: &str) -> Result<Signed> {
        let hash = token_hash(token);
        let session = self
            .store
            .session(&hash)
            .await?
            .ok_or(Error::Unauthorized)?;
        let now = self.now();
        if session.revoked || session.expires_at <= now || session.seen_at + SESSION_IDLE <= now {
            return Err(Error::Unauthorized);
        }
        // A session the workspace's provider signed in acts there only.
        if session.sso.as_ref().is_some_and(|t| *t != session.tenant) {
            return Err(Error::Unauthorized);
        }
        let memberships = self.store.memberships(&session.email).await?;
        let here = memberships
            .into_iter()
            .find(|m| m.tenant == session.tenant)
            .ok_or(Error::Unauthorized)?;
        // A password session stops working where SSO became required (owners excepted).
        if session.sso.is_none()
            && !here.roles.iter().any(|r| r == "owner")
            && self.sso_required(&here.tenant).await?
        {
            return Err(Error::Unauthorized);
        }
        // Kept to the minute: a page view is not a write.
        if now - session.seen_at > Duration::minutes(1) {
            self.store.touch_session(&hash, now).await?;
        }
        Ok(Signed {
            csrf: csrf_for(token),
            sso: session.sso.is_some(),
            token_hash: hash,
            email: session.email,
            tenant: here.tenant,
            workspace: here.workspace.name,
            roles: here.roles,
        })
    }

    /// Whether a state-changing request carries its session's CSRF token.
    pub fn csrf_ok(&self, signed: &Signed, given: &str) -> bool {
        crate::crypto::constant_time_eq(signed.csrf.as_bytes(), given.as_bytes())
    }

    pub async fn sign_out(&self, signed: &Signed) -> Result<()> {
        Ok(self
            .store
            .revoke_session(&signed.token_hash, self.now())
            .await?)
    }

    /// The workspaces the signed-in person belongs to.
    /// A session signed in through a provider sees only its own workspace.
    pub async fn workspaces_of(&self, signed: &Signed) -> Result<Vec<Membership>> {
        let mut all = self.store.memberships(&signed.email).await?;
        if signed.sso {
            all.retain(|m| m.tenant == signed.tenant);
        }
        Ok(all)
    }

    /// Points the session at another of the person's workspaces, by name.
    pub async fn switch_workspace(&self, signed: &Signed, workspace: &str) -> Result<()> {
        let target = self
            .store
            .memberships(&signed.email)
            .await?
            .into_iter()
            .find(|m| m.workspace.name == workspace)
            .ok_or(Error::NotFound)?;
        if signed.sso && target.tenant != signed.tenant {
            return Err(Error::Refused(format!(
                "this session was signed in through {}'s identity provider: sign in to \
                 {workspace} on its own",
                signed.workspace
            )));
        }
        if !signed.sso
            && !target.roles.iter().any(|r| r == "owner")
            && self.sso_required(&target.tenant).await?
        {
            return Err(Error::Refused(format!(
                "{workspace} signs in through its identity provider: sign out and use “Sign in \
                 with SSO”"
            )));
        }
        Ok(self
            .store
            .switch_session(&signed.token_hash, &target.tenant)
            .await?)
    }

    /// Changes the signed-in person's password, given their current one; every other session
    /// of theirs ends.
    pub async fn change_password(&self, signed: &Signed, current: &str, new: &str) -> Result<()> {
        let stored = self
            .store
            .account_password(&signed.email)
            .await?
            .ok_or(Error::Refused(WRONG.into()))?;
        if !verified(current, &stored).await {
            return Err(Error::field("current_password", "is not your password"));
        }
        check_password(new)?;
        let hash = hashed(new).await?;
        self.store
            .set_password(
                &signed.tenant,
                &signed.email,
                &hash,
                Some(&signed.token_hash),
                signed.actor(),
                self.now(),
            )
            .await?;
        Ok(())
    }

    /// Adds a member and e-mails them an invitation to set a password and sign in.
    pub async fn invite(&self, admin: &Admin, input: NewMemberInput) -> Result<Member> {
        let member = self.add_member(admin, input).await?;
        let token = new_token("inv_");
        let now = self.now();
        let expires_at = now + INVITATION_LIFETIME;
        let tenant = admin.tenant();
        let workspace = self
            .store
            .workspaces()
            .await?
            .into_iter()
            .find(|(_, t)| t == tenant)
            .map(|(w, _)| w.name)
            .unwrap_or_default();
        let message = Message::InviteEmail {
            to: member.email.clone(),
            token: self.cipher()?.seal(
                &token,
                Purpose::InvitationToken {
                    workspace_id: tenant.workspace_id(),
                },
            ),
            workspace,
            invited_by: admin.actor().label(),
            expires_at,
        };
        self.store
            .create_invitation(
                tenant,
                NewInvitation {
                    email: &member.email,
                    token_hash: &token_hash(&token),
                    expires_at,
                    message: &message,
                },
                admin.actor(),
                now,
            )
            .await?;
        Ok(member)
    }

    /// What an invitation's page shows; gone when used or expired.
    pub async fn invitation(&self, token: &str) -> Result<InvitationView> {
        self.limits.check_link(token)?;
        let invitation = self
            .store
            .invitation(&token_hash(token))
            .await?
            .ok_or(Error::NotFound)?;
        if invitation.used || invitation.expires_at <= self.now() {
            return Err(Error::Gone(
                "this invitation has been used or has expired".into(),
            ));
        }
        let workspace = self
            .store
            .memberships(&invitation.email)
            .await?
            .into_iter()
            .find(|m| m.tenant == invitation.tenant)
            .map(|m| m.workspace.name)
            .ok_or(Error::Gone(
                "this invitation's membership has been removed".into(),
            ))?;
        Ok(InvitationView {
            has_account: self
                .store
                .account_password(&invitation.email)
                .await?
                .is_some(),
            email: invitation.email,
            workspace,
            expires_at: invitation.expires_at,
        })
    }

    /// Uses an invitation: sets the person's password if they have no account (they must give
    /// one), and signs them in to the workspace that invited them.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: Option<&str>,
    ) -> Result<(String, Signed)> {
        let view = self.invitation(token).await?;
        let hash = match (view.has_account, password) {
            (true, _) => None,
            (false, Some(p)) => {
                check_password(p)?;
                Some(hashed(p).await?)
            }
            (false, None) => return Err(Error::field("password", "choose a password")),
        };
        let now = self.now();
        let invitation = self
            .store
            .accept_invitation(&token_hash(token), hash.as_deref(), now)
            .await?;
        self.start_session(
            &invitation.email,
            &invitation.tenant,
            "invitation",
            false,
            now,
        )
        .await
    }
}
