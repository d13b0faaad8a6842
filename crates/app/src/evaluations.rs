//! Evaluate (SPEC §4), the hot path: a proposal is decided against the workspace's cached
//! policies and recorded with its audit event by the store's group-commit writer; the first
//! approval stage's people get their links with it. And reading evaluations back: one (with
//! an optional long poll for its status to change) or a page of them.

use std::sync::LazyLock;
use std::time::Duration;

use agentnexus_engine::{Decision, Effect, Proposal, ProposalFields, Spend, Tier};
use agentnexus_store::{
    ApprovalRule, Evaluation, EvaluationFilter, NewEvaluation, Recorded, StageRecord, Status,
};
use chrono::{DateTime, Utc};
use metrics::Counter;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::notify::{Reach, Subject};
use crate::types::{AgentId, EvaluationId, WebhookUrl};
use crate::{App, Caller, Reader, Reads};

/// The longest a read waits for an evaluation's status to change.
pub const MAX_WAIT_SECS: u64 = 60;

/// What an agent sends to be evaluated.
#[derive(Debug, Clone, Default)]
pub struct EvaluateInput {
    pub proposal: ProposalFields,
    /// Trace metadata (`trace_id`, `span_id`, …): an object, stored with the evaluation.
    pub trace: Option<Value>,
    /// The same key within 24 hours answers the first evaluation (1-256 characters).
    pub idempotency_key: Option<String>,
    /// Where `approval_required` and `terminal_outcome` events go.
    pub webhook_url: Option<String>,
}

/// An evaluate request, checked.
pub struct Proposed {
    pub proposal: Proposal,
    trace: Option<Value>,
    idempotency_key: Option<String>,
    webhook_url: Option<WebhookUrl>,
}

impl Proposed {
    pub fn parse(input: EvaluateInput) -> Result<Proposed> {
        let proposal =
            Proposal::new(input.proposal).map_err(|e| Error::field(e.field, e.message))?;
        // Separation of duties compares it with approvers' e-mails: it must be one.
        if let Some(v) = proposal.context.get("on_behalf_of")
            && !v.is_string()
        {
            return Err(Error::field(
                "context.on_behalf_of",
                "must be a string: the e-mail of the person the agent acts for",
            ));
        }
        let trace = match input.trace {
            None | Some(Value::Null) => None,
            Some(t @ Value::Object(_)) => Some(t),
            Some(_) => return Err(Error::field("trace", "must be an object")),
        };
        if let Some(k) = &input.idempotency_key
            && (k.is_empty() || k.chars().count() > 256)
        {
            return Err(Error::field(
                "idempotency_key",
                "must be 1 to 256 characters",
            ));
        }
        Ok(Proposed {
            proposal,
            trace,
            idempotency_key: input.idempotency_key,
            webhook_url: input
                .webhook_url
                .map(|u| WebhookUrl::parse("webhook_url", u))
                .transpose()?,
        })
    }
}

/// The stage an evaluation waits for.
#[derive(Debug, Clone)]
pub struct WaitingFor {
    pub index: i64,
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The approval an evaluation asks for: the rule's tier, and the stage waiting now.
#[derive(Debug, Clone)]
pub struct ApprovalSummary {
    pub tier: Tier,
    pub policy: String,
    pub rule: String,
    /// Absent once the evaluation is final.
    pub stage: Option<WaitingFor>,
}

/// The answer to an evaluation (SPEC §4).
#[derive(Debug, Clone)]
pub struct Summary {
    pub evaluation_id: String,
    pub decision: Effect,
    pub status: Status,
    pub reason: String,
    /// `[{"policy", "rule", "effect"}]`
    pub matched_rules: Value,
    pub approval: Option<ApprovalSummary>,
    /// Policy name to the version that decided.
    pub policy_versions: Value,
    pub proposal_hash: String,
    /// Rules whose expression failed at run time.
    pub errors: Value,
    pub created_at: DateTime<Utc>,
}

impl Summary {
    /// An evaluation as stored.
    pub fn of(ev: &Evaluation) -> Summary {
        let stage = ev
            .current_stage
            .filter(|_| ev.status == Status::Pending)
            .and_then(|i| ev.stages.iter().find(|s| s.index == i));
        Summary {
            evaluation_id: ev.id.clone(),
            decision: ev.decision,
            status: ev.status,
            reason: ev.reason.clone(),
            matched_rules: ev.matched_rules.clone(),
            approval: approval_summary(ev.approval.as_ref(), stage),
            policy_versions: ev.policy_versions.clone(),
            proposal_hash: ev.proposal_hash.clone(),
            errors: ev.errors.clone(),
            created_at: ev.created_at,
        }
    }

    /// An evaluation about to be recorded, as [`Summary::of`] will read it back, without first
    /// copying all of it (params, context, stages) into an [`Evaluation`].
    fn fresh(new: &NewEvaluation) -> Summary {
        let status = Status::initial(new.decision);
        let stage = match status {
            Status::Pending => new.stage_records().into_iter().next(),
            _ => None,
        };
        let json = |v: Result<Value, _>| v.unwrap_or_default();
        Summary {
            evaluation_id: new.id.clone(),
            decision: new.decision,
            status,
            reason: new.reason.clone(),
            matched_rules: json(serde_json::to_value(&new.matched_rules)),
            approval: approval_summary(new.approval.as_ref(), stage.as_ref()),
            policy_versions: json(serde_json::to_value(&new.policy_versions)),
            proposal_hash: new.proposal_hash.clone(),
            errors: json(serde_json::to_value(&new.errors)),
            created_at: new.created_at,
        }
    }
}

fn approval_summary(
    approval: Option<&ApprovalRule>,
    stage: Option<&StageRecord>,
) -> Option<ApprovalSummary> {
    let a = approval?;
    Some(ApprovalSummary {
        tier: a.tier,
        policy: a.policy.clone(),
        rule: a.rule.clone(),
        stage: stage.map(|s| WaitingFor {
            index: s.index,
            name: s.name.clone(),
            expires_at: s.expires_at,
        }),
    })
}

/// `agentnexus_decisions_total` by effect; its handles kept, as a lookup per decision costs
/// more than the increment.
fn count_decision(effect: Effect) {
    static COUNTERS: LazyLock<[(Effect, Counter); 3]> = LazyLock::new(|| {
        [Effect::Allow, Effect::RequireApproval, Effect::Deny].map(|e| {
            let counter = metrics::counter!("agentnexus_decisions_total", "effect" => e.as_str());
            (e, counter)
        })
    });
    if let Some((_, counter)) = COUNTERS.iter().find(|(e, _)| *e == effect) {
        counter.increment(1);
    }
}

/// What a page of evaluations is filtered by, as sent.
#[derive(Debug, Clone, Default)]
pub struct ListInput {
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub action: Option<String>,
    /// Only evaluations a rule of this policy matched.
    pub policy: Option<String>,
    /// 1-500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only evaluations created at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Only evaluations created before this time (RFC 3339).
    pub to: Option<String>,
}

/// The smallest evaluation id of a time: ids are `ev_` and a ULID, which sorts by time.
pub(crate) fn id_at(field: &str, time: &str) -> Result<String> {
    let t = chrono::DateTime::parse_from_rfc3339(time.trim())
        .map_err(|_| Error::field(field, "must be an RFC 3339 time, e.g. 2026-12-04T00:00:00Z"))?;
    // Before the first possible id: every id is after it.
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    Ok(format!(
        "ev_{}",
        ulid::Ulid::from_parts(ms, 0).to_string().to_lowercase()
    ))
}

/// A page of evaluations, newest first.
pub struct Page {
    pub evaluations: Vec<Evaluation>,
    /// Where the next page starts; none on the last.
    pub next_cursor: Option<String>,
}

impl App {
    /// Decides a proposal and records it.
    pub async fn evaluate(&self, caller: &Caller, input: EvaluateInput) -> Result<Summary> {
        let proposed = Proposed::parse(input)?;
        let tenant = caller.tenant();
        if proposed.webhook_url.is_some() && self.limits.queue_full(tenant.workspace_id()) {
            return Err(Error::TooMany {
                detail: format!(
                    "this workspace has {} or more deliveries waiting \
                     (AGENTNEXUS_QUEUE_LIMIT_PER_WORKSPACE): no more webhooks are queued until \
                     some are delivered or given up",
                    self.config.queue_limit_per_workspace
                ),
                retry_after_secs: 5,
            });
        }
        let Proposed {
            proposal,
            trace,
            idempotency_key,
            webhook_url,
        } = proposed;
        let now = self.now();
        let proposal_hash = proposal.hash();
        if let Some(key) = &idempotency_key
            && let Some(id) = self.store.idempotent_evaluation(tenant, key, now).await?
        {
            return self.existing(caller, &id, &proposal_hash).await;
        }
        let policies = self.policy_set(tenant).await?;
        let decision = match policies.halts.reason(&proposal.agent_id) {
            // Suspended, or the kill switch engaged: denied whatever the policies say.
            Some(reason) => Decision {
                effect: Effect::Deny,
                reason,
                matched_rules: Vec::new(),
                errors: Vec::new(),
                approval: None,
                policy_versions: Default::default(),
            },
            None => {
                let spend = if policies.set.uses_spend() {
                    self.store.spend(tenant, &proposal.agent_id, now).await?
                } else {
                    Spend::default()
                };
                policies.set.decide(&proposal, spend)
            }
        };
        let (approval, stages) = match decision.approval {
            Some(a) => (
                Some(ApprovalRule {
                    tier: a.tier,
                    policy: a.policy,
                    rule: a.rule,
                }),
                a.approval.stages,
            ),
            None => (None, Vec::new()),
        };
        let id = agentnexus_store::new_evaluation_id(now);
        // The first stage's approvers get their secure links with the evaluation itself.
        let notices = match stages.first() {
            Some(stage) => {
                let subject = Subject {
                    evaluation_id: &id,
                    agent_id: &proposal.agent_id,
                    action: &proposal.action,
                    resource: proposal.resource.as_deref(),
                    amount_cents: proposal.amount_cents,
                    reason: &decision.reason,
                    stage_name: &stage.name,
                    tier: approval.as_ref().map(|a| a.tier),
                };
                let reach = Reach {
                    approvers: &stage.approvers,
                    channels: &stage.channels,
                    timeout_secs: stage.timeout.map(|t| t.0 as i64),
                };
                self.notices(tenant, reach, &subject, now).await?
            }
            None => Vec::new(),
        };
        let new = NewEvaluation {
            id,
            tenant: tenant.clone(),
            key_id: Some(caller.key_id().to_string()),
            proposal_hash,
            proposal,
            trace,
            idempotency_key,
            webhook_url: webhook_url.map(WebhookUrl::into_string),
            decision: decision.effect,
            reason: decision.reason,
            matched_rules: decision.matched_rules,
            errors: decision.errors,
            approval,
            stages,
            notices,
            policy_versions: decision.policy_versions,
            created_at: now,
        };
        let (answer, effect) = (Summary::fresh(&new), new.decision);
        match self.store.record_evaluation(new).await? {
            Recorded::Created => {
                count_decision(effect);
                Ok(answer)
            }
            Recorded::Existing(id) => self.existing(caller, &id, &answer.proposal_hash).await,
        }
    }

    /// The evaluation an idempotency key already names, if it was made for the same
    /// proposal; another proposal under the same key is a conflict (SPEC §4), recorded
    /// nowhere.
    async fn existing(&self, caller: &Caller, id: &str, proposal_hash: &str) -> Result<Summary> {
        let ev = self
            .store
            .evaluation(caller.tenant(), id)
            .await?
            .ok_or_else(|| Error::Internal(format!("idempotency key names missing {id}")))?;
        if ev.proposal_hash != proposal_hash {
            return Err(Error::Conflict(format!(
                "idempotency_key was used in the last 24 hours for another proposal (evaluation \
                 {id}); use a new key for a new proposal"
            )));
        }
        Ok(Summary::of(&ev))
    }

    /// One evaluation; with a `wait` (at most [`MAX_WAIT_SECS`]), once its status differs from
    /// what it was when asked, or when the wait has passed. Only a pending evaluation can
    /// change. It polls the store rather than holding a connection open while it waits, and a
    /// key holds at most `AGENTNEXUS_WAITS_PER_KEY` waits open at once; past that the wait is
    /// refused, not queued.
    pub async fn evaluation(
        &self,
        caller: &Caller,
        id: &EvaluationId,
        wait: Duration,
    ) -> Result<Evaluation> {
        if wait > Duration::from_secs(MAX_WAIT_SECS) {
            return Err(Error::field("wait", "must be 0 to 60 seconds"));
        }
        let tenant = caller.tenant();
        let first = self.read_evaluation(caller, id).await?;
        if wait.is_zero() || first.status != Status::Pending {
            return Ok(first);
        }
        let _open = self.limits.open_wait(caller.key_id().as_str())?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut stopping = self.stopping.subscribe();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let stop = tokio::select! {
                _ = tokio::time::sleep(left.min(Duration::from_millis(250))) => false,
                _ = stopping.wait_for(|s| *s) => true,
            };
            let now = self
                .store
                .evaluation(tenant, id.as_str())
                .await?
                .ok_or(Error::NotFound)?;
            if now.status != first.status || stop || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
        }
    }

    /// One evaluation, as it is now.
    pub async fn read_evaluation(&self, who: &impl Reads, id: &EvaluationId) -> Result<Evaluation> {
        self.store
            .evaluation(who.tenant(), id.as_str())
            .await?
            .ok_or(Error::NotFound)
    }

    /// The workspace's evaluations, newest first.
    pub async fn evaluations(&self, reader: &Reader, input: ListInput) -> Result<Page> {
        let status = match input.status.as_deref() {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                Error::field(
                    "status",
                    "must be allowed, denied, pending, approved, rejected or expired",
                )
            })?),
        };
        let limit = input.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::field("limit", "must be 1 to 500"));
        }
        let agent = input
            .agent_id
            .map(|a| AgentId::parse("agent_id", a))
            .transpose()?;
        // An action is named as an agent is: 1-256 characters, none of them control ones.
        let action = input
            .action
            .map(|a| AgentId::parse("action", a))
            .transpose()?;
        if let Some(p) = &input.policy
            && !agentnexus_engine::valid_policy_name(p)
        {
            return Err(Error::field(
                "policy",
                "must be a policy name: 1-64 of a-z, 0-9, `-`, `_`, `.`",
            ));
        }
        if input
            .cursor
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.chars().count() > 64)
        {
            return Err(Error::field(
                "cursor",
                "must be the next_cursor of a previous page",
            ));
        }
        let since = input
            .from
            .as_deref()
            .map(|t| id_at("from", t))
            .transpose()?;
        let until = input.to.as_deref().map(|t| id_at("to", t)).transpose()?;
        // The page's end: the cursor or the period's end, whichever is older.
        let before = match (input.cursor, until) {
            (Some(c), Some(u)) => Some(c.min(u)),
            (c, u) => c.or(u),
        };
        let filter = EvaluationFilter {
            status,
            agent_id: agent.map(|a| a.as_str().to_owned()),
            action: action.map(|a| a.as_str().to_owned()),
            policy: input.policy,
            before,
            since,
            limit,
        };
        let page = self.store.evaluations(reader.tenant(), &filter).await?;
        // A full page continues below its last; one that searched only part of the history,
        // below where it stopped.
        let next_cursor = match page.evaluations.last() {
            Some(last) if page.evaluations.len() == limit as usize => Some(last.id.clone()),
            _ => page.searched_to,
        };
        Ok(Page {
            evaluations: page.evaluations,
            next_cursor,
        })
    }
}
