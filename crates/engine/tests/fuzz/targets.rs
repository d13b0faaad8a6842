//! The fuzz targets: what a workspace can hand the engine, from any bytes. Shared (by path) by
//! the bounded run in `cargo test` (`tests/fuzz.rs`) and by the cargo-fuzz project in `fuzz/`,
//! so both exercise exactly the same code. Each target must never panic, overflow a stack or
//! run unbounded, whatever its input; the invariants below are what else must hold.

use std::sync::Arc;

use agentnexus_engine::{Format, PolicySet, Proposal, ProposalFields, Spend, compile_policy};
use serde_json::{Value, json};

/// Proposals every compiled policy is asked to decide: empty and rich ones, with lists and
/// nested maps for comprehensions and selections to walk.
fn proposals() -> Vec<Proposal> {
    let items: Vec<Value> = (0..40)
        .map(|i| json!({"sku": format!("s{i}"), "n": i}))
        .collect();
    [
        json!({"agent_id": "a", "action": "x"}),
        json!({"agent_id": "billing-bot", "action": "stripe.refund", "resource": "customer/1",
               "amount_cents": 75_000, "cost_cents": 4,
               "params": {"l": (0..30).collect::<Vec<i64>>(), "items": items, "s": "x".repeat(300),
                          "m": {"a": {"b": {"c": 1}}}, "f": 1.5, "neg": -3, "t": true, "z": null},
               "context": {"environment": "production", "on_behalf_of": "a@b.c",
                           "tags": ["x", "y"], "depth": {"k": [1, [2, [3]]]}}}),
    ]
    .into_iter()
    .map(|v| Proposal::new(serde_json::from_value(v).expect("fields")).expect("a proposal"))
    .collect()
}

/// A policy document from any bytes, as YAML and as JSON: refused with problems, or compiled
/// and then able to decide any proposal within its budget. Answers whether it compiled.
pub fn policy(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut compiled_any = false;
    for format in [Format::Yaml, Format::Json] {
        match compile_policy(&text, format) {
            Err(invalid) => assert!(!invalid.0.is_empty(), "a refusal names its problems"),
            Ok(compiled) => {
                compiled_any = true;
                let set = PolicySet::new([Arc::new(compiled)]);
                for proposal in proposals() {
                    let spend = Spend {
                        today_cents: 10,
                        month_cents: 100,
                    };
                    let decision = set.decide(&proposal, spend);
                    for error in &decision.errors {
                        assert!(error.message.chars().count() <= 301, "{}", error.message);
                    }
                }
            }
        }
    }
    compiled_any
}

/// An evaluate request's proposal from any bytes: refused, or a proposal whose hash is stable
/// and is the hash of its canonical form read back. Answers whether it was a proposal.
pub fn evaluate_request(data: &[u8]) -> bool {
    let Ok(fields) = serde_json::from_slice::<ProposalFields>(data) else {
        return false;
    };
    let Ok(proposal) = Proposal::new(fields) else {
        return false;
    };
    let hash = proposal.hash();
    assert_eq!(hash.len(), 64);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // The proposal, written back as a request and read again, is the same proposal.
    let again = json!({
        "agent_id": proposal.agent_id, "action": proposal.action, "resource": proposal.resource,
        "amount_cents": proposal.amount_cents, "cost_cents": proposal.cost_cents,
        "params": proposal.params, "context": proposal.context,
    });
    let reread = Proposal::new(serde_json::from_value(again).expect("fields")).expect("valid");
    assert_eq!(reread.hash(), hash);
    true
}

/// JSON from any bytes: the project's canonical writer agrees byte for byte with the reference
/// implementation of RFC 8785, and canonicalising its output again changes nothing. Answers
/// whether it was JSON.
pub fn canonical(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let ours = agentnexus_engine::canonical::to_vec(&value);
    let reference = serde_json_canonicalizer::to_vec(&value).expect("the reference writes it");
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&reference)
    );
    let reread: Value = serde_json::from_slice(&ours).expect("canonical JSON is JSON");
    assert_eq!(agentnexus_engine::canonical::to_vec(&reread), ours);
    true
}
