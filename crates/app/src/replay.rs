//! Replay (SPEC §9): a period's recorded evaluations decided again with a draft policy, to see
//! what a change would do before it is in force. Read-only; the evaluations are read a page at
//! a time (newest first) and decided off the request threads, so memory stays bounded and a
//! long replay stalls nobody; decisions use the engine evaluate runs, with each decision's own
//! cost budget. One replay runs at a time in a workspace (a second answers 429).

use std::collections::BTreeMap;

use agentnexus_engine::{Effect, MatchedRule, PolicySet, Proposal, Spend, compile_policy};
use agentnexus_store::{Evaluation, EvaluationFilter};

use crate::error::{Error, Result};
use crate::evaluations::id_at;
use crate::policies::PolicyText;
use crate::{App, Reader};

/// The most evaluations one replay decides again.
pub const MAX_REPLAY: u32 = 100_000;
/// Examples answered at most.
pub const MAX_EXAMPLES: usize = 20;
const PAGE: u32 = 500;

pub struct ReplayInput {
    /// The draft: it replaces the stored policy of its name, or joins the stored ones.
    pub policy: PolicyText,
    /// RFC 3339; default 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339; default now.
    pub to: Option<String>,
    /// At most this many evaluations, newest first (1-100,000, default 10,000).
    pub limit: Option<u32>,
}

/// One evaluation whose decision the draft changes.
pub struct ReplayExample {
    pub evaluation_id: String,
    pub before: Effect,
    pub after: Effect,
    pub matched_rules: Vec<MatchedRule>,
}

pub struct Replay {
    pub evaluated: u64,
    pub changed: u64,
    /// `"allow->deny"` and so on: how many evaluations went from one decision to another.
    pub transitions: BTreeMap<String, u64>,
    /// The newest changed evaluations, at most [`MAX_EXAMPLES`].
    pub examples: Vec<ReplayExample>,
}

impl App {
    /// Decides the period's evaluations again with `input.policy` in place of (or beside) the
    /// stored policy of its name and the other stored policies as they are now, and compares
    /// with the decisions recorded. `spend` is taken as zero. Records nothing.
    pub async fn replay(&self, reader: &Reader, input: ReplayInput) -> Result<Replay> {
        let limit = input.limit.unwrap_or(10_000);
        if !(1..=MAX_REPLAY).contains(&limit) {
            return Err(Error::field("limit", "must be 1 to 100000"));
        }
        let draft = compile_policy(&input.policy.text, input.policy.format)
            .map_err(|e| Error::invalid(format!("policy is invalid: {e}"), e))?;
        let to = match &input.to {
            Some(t) => t.clone(),
            None => self.now().to_rfc3339(),
        };
        let from = match &input.from {
            Some(f) => f.clone(),
            None => {
                let end = chrono::DateTime::parse_from_rfc3339(to.trim()).map_err(|_| {
                    Error::field("to", "must be an RFC 3339 time, e.g. 2026-12-04T00:00:00Z")
                })?;
                (end - chrono::Duration::days(30)).to_rfc3339()
            }
        };
        let since = id_at("from", &from)?;
        let until = id_at("to", &to)?;

        let tenant = reader.tenant();
        let _alone = self.limits.begin_replay(tenant.workspace_id())?;
        let set = self.set_with(tenant, draft).await?;

        let mut replay = Replay {
            evaluated: 0,
            changed: 0,
            transitions: BTreeMap::new(),
            examples: Vec::new(),
        };
        let mut before = Some(until);
        while replay.evaluated < u64::from(limit) {
            let left = u64::from(limit) - replay.evaluated;
            let filter = EvaluationFilter {
                before: before.take(),
                since: Some(since.clone()),
                limit: PAGE.min(u32::try_from(left).unwrap_or(PAGE)),
                ..EvaluationFilter::default()
            };
            let page = self.store.evaluations(tenant, &filter).await?.evaluations;
            let Some(last) = page.last() else { break };
            before = Some(last.id.clone());
            let full = page.len() == filter.limit as usize;
            let set = set.clone();
            // The engine's work, off the request threads.
            let decided = tokio::task::spawn_blocking(move || decide_page(&set, page))
                .await
                .map_err(|e| Error::Internal(format!("replay: {e}")))?;
            for (evaluation_id, was, now, matched_rules) in decided {
                replay.evaluated += 1;
                if was == now {
                    continue;
                }
                replay.changed += 1;
                *replay
                    .transitions
                    .entry(format!("{}->{}", was.as_str(), now.as_str()))
                    .or_default() += 1;
                if replay.examples.len() < MAX_EXAMPLES {
                    replay.examples.push(ReplayExample {
                        evaluation_id,
                        before: was,
                        after: now,
                        matched_rules,
                    });
                }
            }
            if !full {
                break;
            }
        }
        Ok(replay)
    }
}

/// Each evaluation of a page decided again: (id, recorded, now, rules that matched now).
fn decide_page(
    set: &PolicySet,
    page: Vec<Evaluation>,
) -> Vec<(String, Effect, Effect, Vec<MatchedRule>)> {
    page.into_iter()
        .map(|ev| {
            let proposal = Proposal {
                agent_id: ev.agent_id,
                action: ev.action,
                resource: ev.resource,
                amount_cents: ev.amount_cents,
                cost_cents: ev.cost_cents,
                params: ev.params,
                context: ev.context,
            };
            let decision = set.decide(&proposal, Spend::default());
            (ev.id, ev.decision, decision.effect, decision.matched_rules)
        })
        .collect()
}
