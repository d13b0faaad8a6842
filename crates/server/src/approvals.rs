//! Reaching approvers: who a stage's approvers are, their secure links, and the messages that
//! carry them (SPEC §5): e-mail and Slack direct messages to each person, Slack and Teams
//! channel posts to everyone.

use agentnexus_store::{JobKind, NewLink, Notice, Tenant};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use crate::crypto::Purpose;
use crate::error::ApiResult;
use crate::state::AppState;

/// A link to a stage without a deadline stays valid this long.
pub const LINK_WITHOUT_DEADLINE: Duration = Duration::days(7);

/// The hash a secure link (or a one-time code) is stored as.
pub fn token_hash(token: &str) -> String {
    agentnexus_store::key_hash(token)
}

/// A link's token as a queued message carries it: sealed for its workspace.
fn seal_token(state: &AppState, tenant: &Tenant, token: &str) -> String {
    state.cipher.seal(
        token,
        Purpose::LinkToken {
            workspace_id: tenant.workspace_id(),
        },
    )
}

fn new_token() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("apr_{random}")
}

/// Who a stage reaches and how: its approvers, channels and timeout.
pub struct Reach<'a> {
    pub approvers: &'a [String],
    pub channels: &'a [String],
    pub timeout_secs: Option<u64>,
}

/// Links and e-mails for the stage after `stage` of an evaluation, if there is one: made
/// before the decision (or deadline) that may open it, used only if it does.
pub async fn next_stage_notices(
    state: &AppState,
    tenant: &Tenant,
    ev: &agentnexus_store::Evaluation,
    stage: i64,
    now: DateTime<Utc>,
) -> ApiResult<Vec<Notice>> {
    let Some(next) = ev.stages.iter().find(|s| s.index == stage + 1) else {
        return Ok(Vec::new());
    };
    let about = About::of(ev, &next.name);
    let reach = Reach {
        approvers: &next.approvers,
        channels: &next.channels,
        timeout_secs: next.timeout_secs.map(|t| t as u64),
    };
    notices(state, tenant, reach, &about, now).await
}

/// What a message says about the proposal.
pub struct About<'a> {
    pub evaluation_id: &'a str,
    pub agent_id: &'a str,
    pub action: &'a str,
    pub resource: Option<&'a str>,
    pub amount_cents: i64,
    pub reason: &'a str,
    pub stage_name: &'a str,
    pub tier: Option<&'a str>,
}

impl<'a> About<'a> {
    /// What messages about a stored evaluation's stage `stage_name` say.
    pub fn of(ev: &'a agentnexus_store::Evaluation, stage_name: &'a str) -> About<'a> {
        About {
            evaluation_id: &ev.id,
            agent_id: &ev.agent_id,
            action: &ev.action,
            resource: ev.resource.as_deref(),
            amount_cents: ev.amount_cents,
            reason: &ev.reason,
            stage_name,
            tier: ev.approval.as_ref().and_then(|a| a["tier"].as_str()),
        }
    }

    /// What a chat job keeps to write its message when it runs.
    fn facts(&self, people: &[String], expires_at: DateTime<Utc>, deadline: bool) -> Value {
        json!({
            "evaluation_id": self.evaluation_id,
            "agent_id": self.agent_id,
            "action": self.action,
            "resource": self.resource,
            "amount_cents": self.amount_cents,
            "reason": self.reason,
            "stage": self.stage_name,
            "tier": self.tier,
            "approvers": people,
            "expires_at": deadline.then(|| expires_at.format("%Y-%m-%d %H:%M").to_string()),
        })
    }
}

/// The people a stage reaches: its e-mails, and every member holding one of its roles.
pub async fn resolve(
    state: &AppState,
    tenant: &Tenant,
    approvers: &[String],
) -> ApiResult<Vec<String>> {
    let mut people: Vec<String> = approvers
        .iter()
        .filter(|a| !a.starts_with("role:"))
        .map(|a| agentnexus_store::normalize_email(a))
        .collect();
    let roles: Vec<&str> = approvers
        .iter()
        .filter_map(|a| a.strip_prefix("role:"))
        .collect();
    if !roles.is_empty() {
        for m in state.store.members(tenant).await? {
            if m.roles.iter().any(|r| roles.contains(&r.as_str())) {
                people.push(agentnexus_store::normalize_email(&m.email));
            }
        }
    }
    people.sort();
    people.dedup();
    Ok(people)
}

/// What a stage's start sends on its channels: to each person it reaches, a secure link by
/// e-mail and by Slack direct message (with a bot token); to the workspace's Slack channel
/// (webhook) and Teams channel, one post that links to the sign-in page. A chat channel the
/// stage names but the workspace has not connected still gets its job, which fails saying so
/// (visible in the deliveries and the audit trail) rather than vanishing.
pub async fn notices(
    state: &AppState,
    tenant: &Tenant,
    stage: Reach<'_>,
    about: &About<'_>,
    now: DateTime<Utc>,
) -> ApiResult<Vec<Notice>> {
    let wants = |c: &str| stage.channels.iter().any(|x| x == c);
    let expires_at = match stage.timeout_secs {
        None => now + LINK_WITHOUT_DEADLINE,
        Some(s) => i64::try_from(s)
            .ok()
            .and_then(Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| {
                crate::error::ApiError::Internal(format!(
                    "a stage timeout of {s} s is out of range"
                ))
            })?,
    };
    let people = resolve(state, tenant, stage.approvers).await?;
    let slack = if wants("slack") {
        crate::channels::connected(state, tenant)
            .await?
            .slack
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let facts = about.facts(&people, expires_at, stage.timeout_secs.is_some());
    let direct = wants("slack") && slack.bot_token.is_some();
    let mut out = Vec::new();
    for approver in &people {
        let token = new_token();
        let sealed = seal_token(state, tenant, &token);
        let mut messages = Vec::new();
        if wants("email") {
            messages.push((
                JobKind::Email,
                link_email(approver, &sealed, about, expires_at),
            ));
        }
        if direct {
            messages.push((
                JobKind::Slack,
                json!({"to": approver, "token": sealed, "about": facts}),
            ));
        }
        if !messages.is_empty() {
            out.push(Notice {
                link: Some(NewLink {
                    approver: approver.clone(),
                    token_hash: token_hash(&token),
                    expires_at,
                }),
                messages,
            });
        }
    }
    if wants("slack") && (slack.webhook_url.is_some() || !direct) {
        out.push(Notice {
            link: None,
            messages: vec![(JobKind::Slack, json!({"about": facts}))],
        });
    }
    if wants("teams") {
        out.push(Notice {
            link: None,
            messages: vec![(JobKind::Teams, json!({"about": facts}))],
        });
    }
    Ok(out)
}

/// A fresh link for one approver, by e-mail only: what the sign-in page sends.
pub fn personal_notice(
    state: &AppState,
    tenant: &Tenant,
    approver: &str,
    about: &About<'_>,
    expires_at: DateTime<Utc>,
) -> Notice {
    let token = new_token();
    let sealed = seal_token(state, tenant, &token);
    Notice {
        link: Some(NewLink {
            approver: approver.to_owned(),
            token_hash: token_hash(&token),
            expires_at,
        }),
        messages: vec![(
            JobKind::Email,
            link_email(approver, &sealed, about, expires_at),
        )],
    }
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A value on one line of a plain-text e-mail: control characters (line breaks among them)
/// become spaces, so no value can start a line of its own, and it is cut to 300 characters.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// The e-mail job's payload: the token is sealed with the server key, so the job table never
/// holds a usable link; the sender opens it and writes the link in place of `{link}`. The
/// link comes first, on a line of its own after a fixed sentence, before anything taken from
/// the proposal or the policy, each of which is kept to one labelled line.
fn link_email(to: &str, sealed_token: &str, about: &About<'_>, expires: DateTime<Utc>) -> Value {
    let amount = if about.amount_cents > 0 {
        money(about.amount_cents)
    } else {
        "none".to_owned()
    };
    let text = format!(
        "An AI agent asks for your decision on an action it proposes.\n\n\
         Approve or reject it here (the link is yours alone, works once and expires at \
         {expires} UTC):\n\
         {{link}}\n\n\
         Agent:    {agent}\n\
         Action:   {action}\n\
         Resource: {resource}\n\
         Amount:   {amount}\n\
         Why:      {reason}\n\
         Stage:    {stage}\n\n\
         Evaluation {id}.\n",
        agent = one_line(about.agent_id),
        action = one_line(about.action),
        resource = one_line(about.resource.unwrap_or("none")),
        reason = one_line(about.reason),
        stage = one_line(about.stage_name),
        expires = expires.format("%Y-%m-%d %H:%M"),
        id = about.evaluation_id,
    );
    json!({
        "to": to,
        "subject": one_line(&format!("Approval needed: {} by {}", about.action, about.agent_id)),
        "text": text,
        "token": sealed_token,
    })
}

/// The e-mail that carries a one-time code (critical tier).
pub fn code_email(
    state: &AppState,
    tenant: &Tenant,
    to: &str,
    code: &str,
    evaluation_id: &str,
) -> Value {
    json!({
        "to": to,
        "subject": "Your AgentNexus approval code",
        "text": format!(
            "Your code to decide on evaluation {evaluation_id}: {{code}}\n\
             It works for 10 minutes. If you did not ask for it, ignore this e-mail.\n"
        ),
        "code": state.cipher.seal(
            code,
            Purpose::OneTimeCode {
                workspace_id: tenant.workspace_id(),
            },
        ),
    })
}
