//! Deciding an approval (SPEC §5). A secure link is the credential: random, single-use,
//! stored hashed, bound to one approver and one stage. Through it a person sees the proposal,
//! asks for a one-time code (critical tier) and decides; from the page a chat channel's post
//! leads to, an approver of the waiting stage asks for a link of their own. Every route here
//! is limited per link (or per evaluation), since none takes a key.

use agentnexus_engine::approval::Vote;
use agentnexus_store::{
    Actor, CodeSent, Decide, DecideOutcome, Evaluation, EventKind, Link, NewAuditEvent, Status,
    Tenant, WaitingStage,
};
use chrono::Duration;
use rand::Rng;
use serde_json::json;

use crate::App;
use crate::error::{Error, Result};
use crate::notify::{LINK_WITHOUT_DEADLINE, Subject, token_hash};
use crate::types::{Email, EvaluationId};

/// How long a one-time code works.
pub const CODE_LIFETIME: Duration = Duration::minutes(10);

/// A person's decision, as sent.
#[derive(Debug, Clone, Default)]
pub struct DecisionInput {
    /// `approve` or `reject`.
    pub decision: String,
    /// At most 2000 characters.
    pub comment: Option<String>,
    /// The 6-digit code e-mailed for a critical-tier approval.
    pub otp: Option<String>,
}

/// What deciding through a link came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A critical approval: a code was e-mailed; decide again with it.
    CodeSent { evaluation_id: String, stage: i64 },
    /// Recorded; the evaluation's status after it.
    Recorded {
        evaluation_id: String,
        status: Status,
        stage: i64,
    },
}

/// What a secure link shows its approver.
pub struct LinkView {
    pub approver: String,
    pub stage: i64,
    pub evaluation: Evaluation,
    /// Whether deciding takes a one-time code.
    pub needs_code: bool,
    /// The currency the workspace's amounts are in.
    pub currency: crate::types::Currency,
}

fn code_hash(link_hash: &str, code: &str) -> String {
    token_hash(&format!("{link_hash}:{code}"))
}

fn needs_code(ev: &Evaluation) -> bool {
    ev.approval.as_ref().is_some_and(|a| a.tier.needs_code())
}

impl App {
    /// The page a shared channel's message links to: where an approver signs in.
    pub fn sign_in_url(&self, evaluation_id: &str) -> String {
        format!(
            "{}/approvals/evaluations/{evaluation_id}",
            self.public_url()
        )
    }

    /// The link, if it can still decide: unknown is not found; used, locked or expired is
    /// gone.
    async fn usable_link(&self, token: &str) -> Result<(String, Link)> {
        self.limits.check_link(token)?;
        let hash = token_hash(token);
        let link = self
            .store
            .approval_link(&hash)
            .await?
            .ok_or(Error::NotFound)?;
        if link.used {
            return Err(Error::Gone("this link has been used".into()));
        }
        if link.locked {
            return Err(Error::Gone(
                "this link is locked after too many wrong codes".into(),
            ));
        }
        if link.expires_at < self.now() {
            return Err(Error::Gone("this link has expired".into()));
        }
        Ok((hash, link))
    }

    /// The evaluation a link's stage belongs to, while that stage waits.
    async fn waiting_evaluation(&self, link: &Link) -> Result<Evaluation> {
        let ev = self
            .store
            .evaluation(&link.tenant, &link.evaluation_id)
            .await?
            .ok_or(Error::NotFound)?;
        if ev.status != Status::Pending || ev.current_stage != Some(link.stage) {
            return Err(Error::Gone("this stage has already been decided".into()));
        }
        Ok(ev)
    }

    /// What a link shows its approver; opening it is audited (`approval.viewed`).
    pub async fn open_link(&self, token: &str) -> Result<LinkView> {
        let (_, link) = self.usable_link(token).await?;
        let ev = self.waiting_evaluation(&link).await?;
        self.store
            .append_audit(
                &link.tenant,
                &[NewAuditEvent {
                    kind: EventKind::ApprovalViewed,
                    actor: Actor::Member(link.approver.clone()),
                    evaluation_id: Some(ev.id.clone()),
                    data: json!({"stage": link.stage, "approver": link.approver}),
                    occurred_at: self.now(),
                }],
            )
            .await?;
        Ok(LinkView {
            currency: self.currency(&link.tenant).await?,
            needs_code: needs_code(&ev),
            approver: link.approver,
            stage: link.stage,
            evaluation: ev,
        })
    }

    /// Records an approver's decision through their secure link. On a critical tier the
    /// first call e-mails a code and the decision counts only when sent again with it.
    pub async fn decide(&self, token: &str, input: DecisionInput) -> Result<Decision> {
        let vote = match input.decision.as_str() {
            "approve" => Vote::Approve,
            "reject" => Vote::Reject,
            _ => return Err(Error::field("decision", "must be approve or reject")),
        };
        if input
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > 2000)
        {
            return Err(Error::field("comment", "must be at most 2000 characters"));
        }
        if input
            .otp
            .as_ref()
            .is_some_and(|o| o.len() != 6 || !o.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::field("otp", "must be the 6-digit code we e-mailed"));
        }
        let comment = input
            .comment
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        let (hash, link) = self.usable_link(token).await?;
        let now = self.now();
        let ev = self.waiting_evaluation(&link).await?;
        let critical = needs_code(&ev);
        let given = input.otp.as_deref().map(|c| code_hash(&hash, c));
        if critical && given.is_none() {
            let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
            let message =
                self.code_message(&link.tenant, &link.approver, &code, &link.evaluation_id)?;
            let sent = self
                .store
                .start_otp(
                    &link,
                    &hash,
                    &code_hash(&hash, &code),
                    now + CODE_LIFETIME,
                    &message,
                    now,
                )
                .await?;
            if sent == CodeSent::Locked {
                return Err(Error::Gone(
                    "too many codes asked for: this link is locked".into(),
                ));
            }
            return Ok(Decision::CodeSent {
                evaluation_id: link.evaluation_id,
                stage: link.stage,
            });
        }
        // Links for the next stage, used only if this decision passes the current one.
        let next_notices = match vote {
            Vote::Approve => {
                self.next_stage_notices(&link.tenant, &ev, link.stage, now)
                    .await?
            }
            Vote::Reject => Vec::new(),
        };
        let outcome = self
            .store
            .decide(Decide {
                tenant: &link.tenant,
                token_hash: &hash,
                otp_hash: given.as_deref().filter(|_| critical),
                vote,
                comment: comment.as_deref(),
                next_notices,
                now,
            })
            .await?;
        match outcome {
            DecideOutcome::Recorded(d) => Ok(Decision::Recorded {
                evaluation_id: d.evaluation_id,
                status: d.status,
                stage: d.stage,
            }),
            DecideOutcome::WrongCode { locked: true } => Err(Error::Gone(
                "too many wrong codes: this link is locked".into(),
            )),
            DecideOutcome::WrongCode { locked: false } => Err(Error::field(
                "otp",
                "the code is wrong or has expired; send the decision without otp for a new one",
            )),
        }
    }

    /// Where an evaluation stands, found by its id alone, for the sign-in page a chat post
    /// leads to: no proposal, only whether and which stage waits. Everyone in the channel can
    /// open it, so it grants nothing.
    pub async fn waiting_stage(&self, id: &EvaluationId) -> Result<WaitingStage> {
        self.limits.check_link(id.as_str())?;
        self.store
            .waiting_stage(id.as_str())
            .await?
            .ok_or(Error::NotFound)
    }

    /// Sends an approver of the waiting stage a fresh link of their own, by e-mail. Anyone
    /// else gets the same answer and nothing is sent, so the page tells no one who approves.
    pub async fn request_link(&self, id: &EvaluationId, email: &str) -> Result<Email> {
        self.limits.check_link(id.as_str())?;
        let email = Email::parse(email)?;
        let waiting = self
            .store
            .waiting_stage(id.as_str())
            .await?
            .ok_or(Error::NotFound)?;
        let Some(stage) = waiting.stage else {
            return Err(Error::Gone("this evaluation has been decided".into()));
        };
        let ev = self
            .store
            .evaluation(&waiting.tenant, id.as_str())
            .await?
            .ok_or(Error::NotFound)?;
        let record = ev
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or(Error::NotFound)?;
        let people = self.resolve(&waiting.tenant, &record.approvers).await?;
        if people.iter().any(|p| p == email.as_str()) {
            self.issue_link(&waiting.tenant, &ev, stage, email.as_str())
                .await?;
        }
        Ok(email)
    }

    async fn issue_link(
        &self,
        tenant: &Tenant,
        ev: &Evaluation,
        stage: i64,
        to: &str,
    ) -> Result<()> {
        let record = ev
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or(Error::NotFound)?;
        let now = self.now();
        let notice = self.personal_notice(
            tenant,
            to,
            &Subject::of(ev, &record.name),
            record.expires_at,
            record.expires_at.unwrap_or(now + LINK_WITHOUT_DEADLINE),
        )?;
        self.store
            .issue_link(tenant, &ev.id, stage, &notice, now)
            .await?;
        Ok(())
    }
}
