use std::sync::Arc;

use agentnexus_engine::{
    Effect, Format, PolicySet, Proposal, ProposalFields, Spend, Tier, compile_policy,
};
use serde_json::json;

const PAYMENTS: &str = r#"
name: payments
rules:
  - id: no-prod-deletes
    when: action == "db.delete" && context.environment == "production"
    effect: deny
    reason: Production data is never deleted by agents
  - id: large-refund
    when: action == "stripe.refund" && amount_cents > 50000
    effect: require_approval
    tier: critical
    reason: Refunds over $500 need finance sign-off
    approval:
      stages:
        - name: finance
          approvers: ["role:finance"]
          timeout: 30m
          on_timeout: escalate
        - name: cfo
          approvers: ["cfo@example.com"]
  - id: medium-refund
    when: action == "stripe.refund" && amount_cents > 10000
    effect: require_approval
    tier: low
    approval:
      stages:
        - name: lead
          approvers: ["lead@example.com"]
  - id: refunds-ok
    when: action == "stripe.refund"
    effect: allow
  - id: budget
    when: spend.today_cents + cost_cents > 1000
    effect: deny
    reason: daily budget spent
"#;

fn set(docs: &[&str]) -> PolicySet {
    PolicySet::new(
        docs.iter()
            .map(|d| Arc::new(compile_policy(d, Format::Yaml).unwrap())),
    )
}

fn proposal(v: serde_json::Value) -> Proposal {
    Proposal::new(serde_json::from_value::<ProposalFields>(v).unwrap()).unwrap()
}

#[test]
fn most_restrictive_effect_wins() {
    let s = set(&[PAYMENTS]);
    let d = s.decide(
        &proposal(json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 500})),
        Spend::default(),
    );
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.matched_rules.len(), 1);

    let d = s.decide(
        &proposal(json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 75000})),
        Spend::default(),
    );
    assert_eq!(d.effect, Effect::RequireApproval);
    let a = d.approval.unwrap();
    assert_eq!(
        (a.tier, a.rule.as_str()),
        (Tier::Critical, "large-refund"),
        "highest tier wins"
    );
    assert_eq!(a.approval.stages.len(), 2);
    assert_eq!(d.reason, "Refunds over $500 need finance sign-off");
    assert_eq!(d.matched_rules.len(), 3);

    let d = s.decide(&proposal(json!({"agent_id": "a", "action": "db.delete", "context": {"environment": "production"}})), Spend::default());
    assert_eq!(
        (d.effect, d.reason.as_str()),
        (Effect::Deny, "Production data is never deleted by agents")
    );
}

#[test]
fn nothing_matching_is_denied() {
    let s = set(&[PAYMENTS]);
    let d = s.decide(
        &proposal(
            json!({"agent_id": "a", "action": "db.delete", "context": {"environment": "staging"}}),
        ),
        Spend::default(),
    );
    assert_eq!(
        (d.effect, d.reason.as_str()),
        (Effect::Deny, "no matching rule")
    );
    let empty = PolicySet::new([]);
    assert_eq!(
        empty
            .decide(
                &proposal(json!({"agent_id": "a", "action": "x"})),
                Spend::default()
            )
            .effect,
        Effect::Deny
    );
}

#[test]
fn spend_and_cost_mix_as_ints() {
    let s = set(&[PAYMENTS]);
    assert!(s.uses_spend());
    let p = proposal(json!({"agent_id": "a", "action": "stripe.refund", "cost_cents": 5}));
    let d = s.decide(
        &p,
        Spend {
            today_cents: 996,
            month_cents: 2000,
        },
    );
    assert_eq!(
        (d.effect, d.reason.as_str()),
        (Effect::Deny, "daily budget spent")
    );
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let d = s.decide(
        &p,
        Spend {
            today_cents: 10,
            month_cents: 2000,
        },
    );
    assert_eq!(d.effect, Effect::Allow);
}

#[test]
fn json_integers_are_cel_ints() {
    let s = set(&[
        "name: p\nrules:\n  - id: r\n    when: params.n + 1 == 3 && context.limit - amount_cents > 0\n    effect: allow\n",
    ]);
    let d = s.decide(&proposal(json!({"agent_id": "a", "action": "x", "params": {"n": 2}, "context": {"limit": 10}, "amount_cents": 5})), Spend::default());
    assert_eq!(d.effect, Effect::Allow, "{:?}", d.errors);
}

#[test]
fn runtime_errors_fail_closed() {
    let s = set(&[
        "name: p\nrules:\n  - id: allow-if-field\n    when: context.missing == 1\n    effect: allow\n  - id: all\n    effect: allow\n",
    ]);
    let d = s.decide(
        &proposal(json!({"agent_id": "a", "action": "x"})),
        Spend::default(),
    );
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(
        d.matched_rules.len(),
        1,
        "an erroring allow rule does not match"
    );
    assert_eq!(d.errors.len(), 1);

    let s = set(&[
        "name: p\nrules:\n  - id: deny-if-field\n    when: context.missing == 1\n    effect: deny\n  - id: all\n    effect: allow\n",
    ]);
    let d = s.decide(
        &proposal(json!({"agent_id": "a", "action": "x"})),
        Spend::default(),
    );
    assert_eq!(d.effect, Effect::Deny, "an erroring deny rule matches");
    assert_eq!(d.errors[0].rule, "deny-if-field");
}

#[test]
fn disabled_policies_do_not_count_and_versions_are_reported() {
    let s = set(&[
        PAYMENTS,
        "name: off\nenabled: false\nrules:\n  - id: all\n    effect: deny\n",
    ]);
    let d = s.decide(
        &proposal(json!({"agent_id": "a", "action": "stripe.refund"})),
        Spend::default(),
    );
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(
        d.policy_versions.keys().collect::<Vec<_>>(),
        vec!["payments"]
    );
}

#[test]
fn action_index_keeps_unpinned_rules() {
    // `in` lists, reversed equality and unpinned rules all still apply.
    let s = set(&[
        "name: p\nrules:\n  - id: list\n    when: action in [\"a\", \"b\"]\n    effect: allow\n  - id: reversed\n    when: '\"c\" == action'\n    effect: allow\n  - id: any\n    when: amount_cents > 100\n    effect: deny\n",
    ]);
    let dec = |v| s.decide(&proposal(v), Spend::default()).effect;
    assert_eq!(dec(json!({"agent_id": "x", "action": "b"})), Effect::Allow);
    assert_eq!(dec(json!({"agent_id": "x", "action": "c"})), Effect::Allow);
    assert_eq!(dec(json!({"agent_id": "x", "action": "d"})), Effect::Deny);
    assert_eq!(
        dec(json!({"agent_id": "x", "action": "a", "amount_cents": 101})),
        Effect::Deny
    );
}

#[test]
fn invalid_documents_name_rule_and_position() {
    let text = "name: p\nrules:\n  - id: ok\n    effect: allow\n  - id: broken\n    when: action == \n    effect: deny\n";
    let err = compile_policy(text, Format::Yaml).unwrap_err();
    let p = &err.0[0];
    assert_eq!(p.rule.as_deref(), Some("broken"));
    assert_eq!(p.position.unwrap().line, 6, "{p}");

    let err = compile_policy(
        "name: p\nrules:\n  - id: r\n    when: actor == \"x\"\n    effect: deny\n",
        Format::Yaml,
    )
    .unwrap_err();
    assert!(
        err.0[0].message.contains("unknown variable `actor`"),
        "{err}"
    );

    let err = compile_policy("{\"name\": \"p\", \"rules\": [}", Format::Json).unwrap_err();
    assert_eq!(err.0[0].position.unwrap().line, 1);
}

#[test]
fn macros_bind_their_own_variables() {
    let s = set(&[
        "name: p\nrules:\n  - id: r\n    when: params.items.exists(i, i > 5) && params.items.all(x, x > 0) && params.items.map(m, m * 2).size() == 2\n    effect: allow\n",
    ]);
    let ok = s.decide(
        &proposal(json!({"agent_id": "a", "action": "x", "params": {"items": [1, 6]}})),
        Spend::default(),
    );
    assert_eq!(ok.effect, Effect::Allow, "{:?}", ok.errors);
    let no = s.decide(
        &proposal(json!({"agent_id": "a", "action": "x", "params": {"items": [1, 2]}})),
        Spend::default(),
    );
    assert_eq!(no.effect, Effect::Deny);
    // Outside a macro, an unknown name is still an error.
    assert!(compile_policy("name: p\nrules:\n  - id: r\n    when: params.items.exists(i, i > j)\n    effect: allow\n", Format::Yaml).is_err());
}

#[test]
fn every_variable_reaches_the_rules_that_read_it() {
    // A decision puts into the CEL context only what its candidate rules read; each variable
    // must still be there for the rule that reads it, alone or beside others.
    let policy = r#"
name: each
rules:
  - {id: agent, when: 'agent_id == "a"', effect: allow}
  - {id: resource, when: 'resource == "r/1"', effect: allow}
  - {id: amount, when: 'amount_cents == 5', effect: allow}
  - {id: cost, when: 'cost_cents == 6', effect: allow}
  - {id: params, when: 'params.x == 1', effect: allow}
  - {id: context, when: 'context.y == "z"', effect: allow}
  - {id: spend, when: 'spend.today_cents == 3 && spend.month_cents == 4', effect: allow}
  - {id: pinned, when: 'action == "act" && params.x == 1 && resource == "r/1"', effect: allow}
  - {id: macro, when: 'params.list.exists(i, i == agent_id)', effect: allow}
"#;
    let set = PolicySet::new([Arc::new(compile_policy(policy, Format::Yaml).unwrap())]);
    let fields: ProposalFields = serde_json::from_value(json!({
        "agent_id": "a", "action": "act", "resource": "r/1", "amount_cents": 5,
        "cost_cents": 6, "params": {"x": 1, "list": ["b", "a"]}, "context": {"y": "z"}
    }))
    .unwrap();
    let spend = Spend {
        today_cents: 3,
        month_cents: 4,
    };
    let d = set.decide(&Proposal::new(fields).unwrap(), spend);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let matched: Vec<&str> = d.matched_rules.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(
        matched,
        [
            "agent", "resource", "amount", "cost", "params", "context", "spend", "pinned", "macro"
        ]
    );
}

#[test]
fn json_values_keep_their_cel_types() {
    // Integers are ints (int arithmetic), fractions and integers past i64 doubles (double
    // arithmetic; mixing the two is an error in CEL), null is null, objects are maps with string keys,
    // arrays are lists; an absent resource is null.
    let policy = r#"
name: types
rules:
  - {id: int, when: 'params.n + 1 == 3 && params.n / 4 == 0', effect: allow}
  - {id: double, when: 'params.f + 0.25 == 1.75', effect: allow}
  - {id: big, when: 'params.big + 1.0 > 1e19', effect: allow}
  - {id: null, when: 'params.nothing == null && resource == null', effect: allow}
  - {id: bool, when: 'params.yes && !params.no', effect: allow}
  - {id: map, when: '"k" in params.m && params.m.k.size() == 2 && size(params.m) == 1', effect: allow}
  - {id: list, when: 'params.l[1] == "b" && params.l.size() == 3 && params.l[2].z == [1]', effect: allow}
  - {id: unicode, when: 'context["é"] == "😀"', effect: allow}
"#;
    let set = PolicySet::new([Arc::new(compile_policy(policy, Format::Yaml).unwrap())]);
    let fields: ProposalFields = serde_json::from_value(json!({
        "agent_id": "a", "action": "act",
        "params": {"n": 2, "f": 1.5, "big": 18446744073709551615u64, "nothing": null,
            "yes": true, "no": false, "m": {"k": "vv"}, "l": ["a", "b", {"z": [1]}]},
        "context": {"é": "😀"}
    }))
    .unwrap();
    let d = set.decide(&Proposal::new(fields).unwrap(), Spend::default());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let matched: Vec<&str> = d.matched_rules.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(
        matched,
        [
            "int", "double", "big", "null", "bool", "map", "list", "unicode"
        ]
    );
}
