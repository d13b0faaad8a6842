//! Reaching approvers (SPEC §5): who a stage's approvers are, their secure links, and the
//! messages that carry them — e-mail and Slack direct messages to each person, Slack and
//! Teams channel posts to everyone. Messages are queued as facts ([`Message`]) and written
//! when sent (`render`).

use agentnexus_engine::Tier;
use agentnexus_store::{About, Evaluation, Message, NewLink, Notice, StageRecord, Tenant};
use chrono::{DateTime, Duration, Utc};

use crate::App;
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::types::Channel;

/// A link to a stage without a deadline stays valid this long.
pub const LINK_WITHOUT_DEADLINE: Duration = Duration::days(7);

/// The hash a secure link (or a one-time code) is stored as.
pub(crate) fn token_hash(token: &str) -> String {
    agentnexus_store::key_hash(token)
}

/// A secure link's token.
pub(crate) fn new_token() -> String {
    crate::crypto::random_token("apr_")
}

/// Who a stage reaches and how.
pub(crate) struct Reach<'a> {
    pub approvers: &'a [String],
    pub channels: &'a [Channel],
    pub timeout_secs: Option<i64>,
}

impl<'a> Reach<'a> {
    pub(crate) fn of(stage: &'a StageRecord) -> Reach<'a> {
        Reach {
            approvers: &stage.approvers,
            channels: &stage.channels,
            timeout_secs: stage.timeout_secs,
        }
    }
}

/// What messages about a stage of a proposal say, but for who they reach and until when.
pub(crate) struct Subject<'a> {
    pub evaluation_id: &'a str,
    pub agent_id: &'a str,
    pub action: &'a str,
    pub resource: Option<&'a str>,
    pub amount_cents: i64,
    pub reason: &'a str,
    pub stage_name: &'a str,
    pub tier: Option<Tier>,
}

impl<'a> Subject<'a> {
    /// Messages about a stored evaluation's stage `stage_name`.
    pub(crate) fn of(ev: &'a Evaluation, stage_name: &'a str) -> Subject<'a> {
        Subject {
            evaluation_id: &ev.id,
            agent_id: &ev.agent_id,
            action: &ev.action,
            resource: ev.resource.as_deref(),
            amount_cents: ev.amount_cents,
            reason: &ev.reason,
            stage_name,
            tier: ev.approval.as_ref().map(|a| a.tier),
        }
    }

    fn about(&self, people: &[String], expires_at: Option<DateTime<Utc>>) -> About {
        About {
            evaluation_id: self.evaluation_id.to_owned(),
            agent_id: self.agent_id.to_owned(),
            action: self.action.to_owned(),
            resource: self.resource.map(str::to_owned),
            amount_cents: self.amount_cents,
            reason: self.reason.to_owned(),
            stage: self.stage_name.to_owned(),
            tier: self.tier,
            approvers: people.to_vec(),
            expires_at,
        }
    }
}

impl App {
    /// A link's token as a queued message carries it: sealed for its workspace.
    fn seal_token(&self, tenant: &Tenant, token: &str) -> Result<String> {
        Ok(self.cipher()?.seal(
            token,
            Purpose::LinkToken {
                workspace_id: tenant.workspace_id(),
            },
        ))
    }

    /// The people a stage reaches: its e-mails, and every member holding one of its roles.
    pub(crate) async fn resolve(
        &self,
        tenant: &Tenant,
        approvers: &[String],
    ) -> Result<Vec<String>> {
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
            for m in self.store.members(tenant).await? {
                if m.roles.iter().any(|r| roles.contains(&r.as_str())) {
                    people.push(agentnexus_store::normalize_email(&m.email));
                }
            }
        }
        people.sort();
        people.dedup();
        Ok(people)
    }

    /// Links and messages for the stage after `stage` of an evaluation, if there is one:
    /// made before the decision (or deadline) that may open it, used only if it does.
    pub(crate) async fn next_stage_notices(
        &self,
        tenant: &Tenant,
        ev: &Evaluation,
        stage: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Notice>> {
        let Some(next) = ev.stages.iter().find(|s| s.index == stage + 1) else {
            return Ok(Vec::new());
        };
        self.notices(tenant, Reach::of(next), &Subject::of(ev, &next.name), now)
            .await
    }

    /// What a stage's start sends on its channels: to each person it reaches, a secure link
    /// by e-mail and by Slack direct message (with a bot token); to the workspace's Slack
    /// channel (webhook) and Teams channel, one post that links to the sign-in page. A chat
    /// channel the stage names but the workspace has not connected still gets its job, which
    /// fails saying so (visible in the deliveries and the audit trail) rather than vanishing.
    pub(crate) async fn notices(
        &self,
        tenant: &Tenant,
        stage: Reach<'_>,
        subject: &Subject<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Notice>> {
        let wants = |c: Channel| stage.channels.contains(&c);
        let deadline = stage
            .timeout_secs
            .map(|s| {
                agentnexus_engine::approval::deadline(now, s).ok_or_else(|| {
                    Error::Internal(format!("a stage timeout of {s} s is out of range"))
                })
            })
            .transpose()?;
        let link_expires_at = deadline.unwrap_or(now + LINK_WITHOUT_DEADLINE);
        let people = self.resolve(tenant, stage.approvers).await?;
        let slack = if wants(Channel::Slack) {
            self.connected(tenant).await?.slack.unwrap_or_default()
        } else {
            Default::default()
        };
        let about = subject.about(&people, deadline);
        let direct = wants(Channel::Slack) && slack.bot_token.is_some();
        let mut out = Vec::new();
        for approver in &people {
            let token = new_token();
            let sealed = self.seal_token(tenant, &token)?;
            let mut messages = Vec::new();
            if wants(Channel::Email) {
                messages.push(Message::LinkEmail {
                    to: approver.clone(),
                    token: sealed.clone(),
                    link_expires_at,
                    about: about.clone(),
                });
            }
            if direct {
                messages.push(Message::SlackDirect {
                    to: approver.clone(),
                    token: sealed,
                    about: about.clone(),
                });
            }
            if !messages.is_empty() {
                out.push(Notice {
                    link: Some(NewLink {
                        approver: approver.clone(),
                        token_hash: token_hash(&token),
                        expires_at: link_expires_at,
                    }),
                    messages,
                });
            }
        }
        if wants(Channel::Slack) && (slack.webhook_url.is_some() || !direct) {
            out.push(Notice {
                link: None,
                messages: vec![Message::SlackChannel {
                    about: about.clone(),
                }],
            });
        }
        if wants(Channel::Teams) {
            out.push(Notice {
                link: None,
                messages: vec![Message::TeamsChannel { about }],
            });
        }
        Ok(out)
    }

    /// A fresh link for one approver, by e-mail only: what the sign-in page sends.
    pub(crate) fn personal_notice(
        &self,
        tenant: &Tenant,
        approver: &str,
        subject: &Subject<'_>,
        deadline: Option<DateTime<Utc>>,
        link_expires_at: DateTime<Utc>,
    ) -> Result<Notice> {
        let token = new_token();
        Ok(Notice {
            link: Some(NewLink {
                approver: approver.to_owned(),
                token_hash: token_hash(&token),
                expires_at: link_expires_at,
            }),
            messages: vec![Message::LinkEmail {
                to: approver.to_owned(),
                token: self.seal_token(tenant, &token)?,
                link_expires_at,
                about: subject.about(&[approver.to_owned()], deadline),
            }],
        })
    }

    /// The e-mail that carries a one-time code (critical tier), the code sealed.
    pub(crate) fn code_message(
        &self,
        tenant: &Tenant,
        to: &str,
        code: &str,
        evaluation_id: &str,
    ) -> Result<Message> {
        Ok(Message::CodeEmail {
            to: to.to_owned(),
            code: self.cipher()?.seal(
                code,
                Purpose::OneTimeCode {
                    workspace_id: tenant.workspace_id(),
                },
            ),
            evaluation_id: evaluation_id.to_owned(),
        })
    }
}
