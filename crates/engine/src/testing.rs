//! Policy test files (`*_test.yaml`, SPEC §3.4): proposals and the decisions they must get.
//!
//! ```yaml
//! tests:
//!   - name: large refunds need finance
//!     proposal: {agent_id: billing-bot, action: stripe.refund, amount_cents: 75000}
//!     spend: {today_cents: 1200}      # optional
//!     expect:
//!       decision: require_approval    # allow | deny | require_approval
//!       rule: large-refund            # optional: the rule that decided
//!       tier: critical                # optional
//!       reason: Refunds over $500 need finance sign-off   # optional
//!       errors: [rule-id]             # optional: rules expected to fail at run time
//! ```
//!
//! A rule failing at run time fails the case unless `errors` lists exactly the failing rules,
//! so a fail-closed outcome can be tested on purpose and never passes by accident.

use serde::Deserialize;

use crate::{Effect, PolicySet, Proposal, ProposalFields, Spend, Tier};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub proposal: ProposalFields,
    #[serde(default)]
    pub spend: Spend,
    pub expect: Expectation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub decision: Effect,
    pub rule: Option<String>,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub errors: Option<Vec<String>>,
}

impl TestFile {
    pub fn parse(text: &str) -> Result<TestFile, String> {
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }
}

/// Runs one case; `Err` says what differed.
pub fn run_case(set: &PolicySet, case: &TestCase) -> Result<(), String> {
    let proposal =
        Proposal::new(case.proposal.clone()).map_err(|e| format!("bad proposal: {e}"))?;
    let d = set.decide(&proposal, case.spend);
    let mut diffs = Vec::new();
    if d.effect != case.expect.decision {
        diffs.push(format!(
            "decision: expected {}, got {} ({})",
            case.expect.decision.as_str(),
            d.effect.as_str(),
            d.reason
        ));
    }
    if let Some(rule) = &case.expect.rule {
        let decided_by = d.approval.as_ref().map(|a| a.rule.clone()).or_else(|| {
            d.matched_rules
                .iter()
                .find(|m| m.effect == d.effect)
                .map(|m| m.rule.clone())
        });
        if decided_by.as_ref() != Some(rule) {
            diffs.push(format!(
                "rule: expected {rule}, got {}",
                decided_by.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(tier) = case.expect.tier {
        let got = d.approval.as_ref().map(|a| a.tier);
        if got != Some(tier) {
            diffs.push(format!(
                "tier: expected {}, got {}",
                tier.as_str(),
                got.map_or("none", Tier::as_str)
            ));
        }
    }
    if let Some(reason) = &case.expect.reason
        && &d.reason != reason
    {
        diffs.push(format!("reason: expected {reason:?}, got {:?}", d.reason));
    }
    let mut failing: Vec<&str> = d.errors.iter().map(|e| e.rule.as_str()).collect();
    if let Some(expected) = &case.expect.errors {
        let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        failing.sort_unstable();
        expected.sort_unstable();
        if failing != expected {
            diffs.push(format!(
                "errors: expected {expected:?}, got {failing:?} ({})",
                d.errors
                    .iter()
                    .map(|e| format!("{}: {}", e.rule, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    for e in d.errors.iter().filter(|_| case.expect.errors.is_none()) {
        diffs.push(format!(
            "runtime error in {}/{}: {}",
            e.policy, e.rule, e.message
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}
