//! What the dashboard shows a signed-in person first (SPEC §11): the approvals waiting for
//! them, today's decisions, spend and the chain's state, and the way from the inbox to a
//! decision. Deciding from the dashboard goes through the same secure-link path as the
//! e-mail (a link of the person's own, nothing sent), so codes, quorum, separation of duties
//! and escalation hold alike.

use agentnexus_store::{ChainCheck, Evaluation, NewLink, Notice, Status, WaitingApproval};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::notify::{LINK_WITHOUT_DEADLINE, new_token, token_hash};
use crate::types::EvaluationId;
use crate::{App, Signed};

/// How many waiting stages the inbox looks through, nearest deadline first.
pub const INBOX_SCAN: i64 = 500;

/// How many of the stages waiting for a person the inbox shows in full.
pub const INBOX_PAGE: usize = 20;

/// A stage the signed-in person may decide.
#[derive(Debug, Clone)]
pub struct InboxItem {
    pub evaluation: Evaluation,
    pub stage: i64,
    pub stage_name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The overview's figures.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Stages waiting for the person.
    pub waiting_for_me: usize,
    /// Today's (UTC) evaluations by how they were decided when proposed: `allow`, `deny`,
    /// `require_approval`.
    pub decided_today: Vec<(String, i64)>,
    pub spend_today_cents: i64,
    /// The chain's last verification, if any.
    pub chain: Option<ChainCheck>,
    /// The chain's length and head now.
    pub head: (i64, String),
    /// The currency `spend_today_cents` is in.
    pub currency: crate::types::Currency,
}

/// Whether a stage's approvers (e-mail addresses and `role:` groups) include the person.
fn approves(approvers: &[String], signed: &Signed) -> bool {
    approvers.iter().any(|a| match a.strip_prefix("role:") {
        Some(role) => signed.roles.iter().any(|r| r == role),
        None => agentnexus_store::normalize_email(a) == signed.email,
    })
}

impl App {
    /// The stages waiting for the signed-in person's decision, nearest deadline first, found
    /// without reading the evaluations.
    async fn waiting_for(&self, signed: &Signed) -> Result<Vec<WaitingApproval>> {
        let mut waiting = self
            .store
            .waiting_approvals(&signed.tenant, INBOX_SCAN)
            .await?;
        waiting.retain(|w| !w.decided_by.contains(&signed.email) && approves(&w.approvers, signed));
        Ok(waiting)
    }

    /// The first [`INBOX_PAGE`] stages waiting for the signed-in person's decision, nearest
    /// deadline first, each with its whole evaluation; and how many wait in all.
    pub async fn inbox(&self, signed: &Signed) -> Result<(Vec<InboxItem>, usize)> {
        let waiting = self.waiting_for(signed).await?;
        let total = waiting.len();
        // The page's evaluations, a few at a time: one after another, their round trips were
        // most of the page's time on PostgreSQL; all at once, one page would take most of the
        // store's connections.
        const AT_ONCE: usize = 4;
        let shown: Vec<_> = waiting.into_iter().take(INBOX_PAGE).collect();
        let mut read = Vec::with_capacity(shown.len());
        for some in shown.chunks(AT_ONCE) {
            let mut reads = tokio::task::JoinSet::new();
            for (i, w) in some.iter().enumerate() {
                let (store, tenant) = (self.store.clone(), signed.tenant.clone());
                let id = w.evaluation_id.clone();
                reads.spawn(async move { (i, store.evaluation(&tenant, &id).await) });
            }
            let mut chunk = reads.join_all().await;
            chunk.sort_by_key(|(i, _)| *i);
            for (_, evaluation) in chunk {
                read.push(evaluation?);
            }
        }
        let mut items = Vec::new();
        for (w, evaluation) in shown.into_iter().zip(read) {
            let Some(evaluation) = evaluation else {
                continue;
            };
            let stage_name = evaluation
                .stages
                .iter()
                .find(|s| s.index == w.stage)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            items.push(InboxItem {
                evaluation,
                stage: w.stage,
                stage_name,
                expires_at: w.expires_at,
            });
        }
        Ok((items, total))
    }

    /// Opens the decision of an evaluation's waiting stage for the signed-in person, if they
    /// are one of its approvers: answers a secure link of their own (nothing is e-mailed),
    /// for the approval page.
    pub async fn review(&self, signed: &Signed, id: &EvaluationId) -> Result<String> {
        let ev = self.read_evaluation(&signed.reader(), id).await?;
        let stage = match (ev.status, ev.current_stage) {
            (Status::Pending, Some(stage)) => stage,
            _ => return Err(Error::Gone("this evaluation has been decided".into())),
        };
        let record = ev
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or(Error::NotFound)?;
        if !approves(&record.approvers, signed) {
            return Err(Error::Refused(
                "you are not an approver of the stage that waits".into(),
            ));
        }
        let now = self.now();
        let token = new_token();
        let notice = Notice {
            link: Some(NewLink {
                approver: signed.email.clone(),
                token_hash: token_hash(&token),
                expires_at: record.expires_at.unwrap_or(now + LINK_WITHOUT_DEADLINE),
            }),
            messages: Vec::new(),
        };
        if !self
            .store
            .issue_link(&signed.tenant, &ev.id, stage, &notice, now)
            .await?
        {
            return Err(Error::Refused(
                "you have decided this stage already, or hold too many links for it".into(),
            ));
        }
        Ok(token)
    }

    /// The overview's figures for the signed-in person.
    pub async fn overview(&self, signed: &Signed) -> Result<Overview> {
        let now = self.now();
        let (chain, head) = self.chain_status(&signed.reader()).await?;
        Ok(Overview {
            waiting_for_me: self.waiting_for(signed).await?.len(),
            decided_today: self.store.decisions_today(&signed.tenant, now).await?,
            spend_today_cents: self.store.spend_today(&signed.tenant, now).await?,
            chain,
            head,
            currency: self.currency(&signed.tenant).await?,
        })
    }
}
