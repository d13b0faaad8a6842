//! The limits of SPEC §3.1: no document can crash the process, and no expression can hold a
//! request thread past its cost budget. Every compile and decision here runs on a thread with
//! a small stack, to show that none of it needs the caller's stack to be large.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentnexus_engine::{
    BUDGET_SPENT, Decision, Effect, Format, Invalid, MAX_EXPRESSION_DEPTH, PolicySet, Proposal,
    Spend, compile_policy,
};
use serde_json::{Value, json};

/// Runs `f` on a thread with 256 KiB of stack: a tenth of a tokio worker's.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn policy(when: &str, effect: &str) -> String {
    format!(
        "name: p\nrules:\n  - id: r\n    when: '{}'\n    effect: {effect}\n",
        when.replace('\'', "''")
    )
}

fn compile(when: &str, effect: &str) -> Result<PolicySet, Invalid> {
    let text = policy(when, effect);
    on_small_stack(move || compile_policy(&text, Format::Yaml))
        .map(|p| PolicySet::new([Arc::new(p)]))
}

fn refusal(when: &str) -> String {
    match compile(when, "deny") {
        Ok(_) => panic!("accepted: {}", &when[..when.len().min(80)]),
        Err(e) => {
            assert_eq!(e.0[0].rule.as_deref(), Some("r"), "{e}");
            e.to_string()
        }
    }
}

fn decide(set: PolicySet, params: Value) -> Decision {
    let proposal = Proposal::new(
        serde_json::from_value(json!({"agent_id": "a", "action": "x", "params": params})).unwrap(),
    )
    .unwrap();
    on_small_stack(move || set.decide(&proposal, Spend::default()))
}

fn chain(terms: usize) -> String {
    format!("{} == 0", vec!["1"; terms].join("+"))
}

#[test]
fn chains_of_thousands_of_terms_are_refused_not_run() {
    // The two expressions of the report: 6 KiB and 60 KiB, both past the size limit.
    for terms in [3_000, 30_000] {
        let why = refusal(&chain(terms));
        assert!(why.contains("at most 4096 are allowed"), "{why}");
    }
    // Within the size limit, the depth limit refuses a chain it could not run safely.
    let why = refusal(&chain(2_000));
    assert!(why.contains("too complex"), "{why}");
    assert!(
        why.contains(&format!("at most {MAX_EXPRESSION_DEPTH} levels")),
        "{why}"
    );
    // Other shapes that nest one level per term.
    for deep in [
        format!("params{} == 1", ".a".repeat(1_000)),
        format!("{}true{}", "(".repeat(1_000), ")".repeat(1_000)),
        format!("{}0{} == 0", "[".repeat(1_000), "]".repeat(1_000)),
        format!("{}0{}", "true ? ".repeat(500), " : 1".repeat(500)) + " == 0",
        format!(
            "{}params.a{} == 1",
            "params.l[".repeat(300),
            "]".repeat(300)
        ),
    ] {
        let why = refusal(&deep);
        assert!(!why.is_empty());
    }
}

#[test]
fn expressions_at_the_limits_run_on_a_small_stack() {
    let shapes = [
        format!("{} == 62", vec!["params.n"; 62].join(" + ")),
        format!("{}true{}", "(".repeat(60), ")".repeat(60)),
        format!("params{} == 1", ".a".repeat(58)),
        format!(
            "params.l.all(a, {}a > 0{})",
            "params.l.all(b, ".repeat(10),
            ")".repeat(10)
        ),
    ];
    let mut nested = json!(1);
    for _ in 0..58 {
        nested = json!({ "a": nested });
    }
    // One item in `l`: the eleven nested loops are at the depth limit, but run eleven
    // iterations, not 2,048, so how long they take (a debug build on a loaded machine) cannot
    // bring in the wall-clock deadline this test is not about.
    let params = json!({"n": 1, "l": [1], "a": nested["a"]});
    for when in shapes {
        let set = compile(&when, "allow").unwrap_or_else(|e| panic!("{e}: {when}"));
        let d = decide(set, params.clone());
        assert_eq!(d.effect, Effect::Allow, "{:?}: {when}", d.errors);
    }
}

#[test]
fn documents_and_timeouts_past_their_limits_are_refused() {
    let big = format!(
        "name: p\ndescription: {}\nrules:\n  - {{id: r, effect: allow}}\n",
        "x".repeat(256 * 1024)
    );
    let e = compile_policy(&big, Format::Yaml).unwrap_err();
    assert!(e.to_string().contains("at most 262144"), "{e}");

    let with_timeout = |t: &str| {
        format!(
            "name: p\nrules:\n  - id: r\n    effect: require_approval\n    approval:\n      stages:\n        - {{name: s, approvers: [a@example.com], timeout: {t}}}\n"
        )
    };
    assert!(compile_policy(&with_timeout("365d"), Format::Yaml).is_ok());
    for t in ["366d", "999999999d", "99999999999999999999999999s"] {
        let e = compile_policy(&with_timeout(t), Format::Yaml).unwrap_err();
        assert!(e.to_string().contains("too long: at most 365d"), "{t}: {e}");
    }
}

/// Four `all`s nested over 80 items would be 80^4 = 40,960,000 iterations.
const NESTED_ALL: &str =
    "params.l.all(a, params.l.all(b, params.l.all(c, params.l.all(d, a + b + c + d >= 0))))";

#[test]
fn an_expression_past_the_budget_fails_closed_within_milliseconds() {
    let items: Vec<i64> = (0..80).collect();
    for effect in ["allow", "deny"] {
        let set = compile(NESTED_ALL, effect).unwrap();
        let started = Instant::now();
        let d = decide(set, json!({ "l": items }));
        // Milliseconds in a release build; generous here for unoptimised, loaded test runs.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(d.errors.len(), 1);
        assert!(d.errors[0].message.contains(BUDGET_SPENT), "{:?}", d.errors);
        // Fail closed: an erroring allow rule does not match, an erroring deny rule does.
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.matched_rules.len(), usize::from(effect == "deny"));
    }
}

#[test]
fn the_budget_is_deterministic_and_ordinary_loops_stay_well_inside_it() {
    let items: Vec<i64> = (0..1_000).collect();
    let set = || {
        compile(
            "params.items.all(i, i >= 0 && i < 5000) && params.items.exists(i, i == 999)",
            "allow",
        )
        .unwrap()
    };
    let d = decide(set(), json!({ "items": items }));
    assert_eq!(
        (d.effect, d.errors.len()),
        (Effect::Allow, 0),
        "{:?}",
        d.errors
    );

    // Where the budget ends does not depend on timing: the same proposal fails the same way,
    // on units. (Each iteration pays for 60 KB of text, so the units run out within a few
    // dozen iterations, microseconds, far from the wall-clock deadline even on a loaded
    // machine; a loop of cheap iterations spends its units in about the deadline's time in a
    // debug build, which made this flaky.)
    let big: Vec<i64> = (0..20_000).collect();
    let s = "x".repeat(30_000);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let set = compile("params.items.all(i, params.s + params.s != '')", "allow").unwrap();
            decide(set, json!({ "items": big, "s": s })).errors
        })
        .collect();
    assert!(runs[0][0].message.contains(BUDGET_SPENT), "{:?}", runs[0]);
    assert!(
        runs[0][0].message.contains("too much work"),
        "{:?}",
        runs[0]
    );
    assert!(runs.iter().all(|r| *r == runs[0]));
}

#[test]
fn values_used_whole_are_paid_for_by_size() {
    let s = "x".repeat(30_000);
    let items: Vec<i64> = (0..5_000).collect();
    // Concatenating 60 KB on each of 5,000 iterations is 300 MB of copying: cut off early.
    let set = compile("params.l.all(i, params.s + params.s != '')", "allow").unwrap();
    let d = decide(set, json!({"l": items, "s": s}));
    assert!(d.errors[0].message.contains(BUDGET_SPENT), "{:?}", d.errors);
    // `in` over a computed list is linear in it: 20,000 × 20,000 comparisons is cut off.
    let items: Vec<i64> = (0..20_000).collect();
    let set = compile("params.l.all(i, i in params.l)", "allow").unwrap();
    let d = decide(set, json!({ "l": items }));
    assert!(d.errors[0].message.contains(BUDGET_SPENT), "{:?}", d.errors);
    // Equality of two literals or against one costs nothing extra and works as before.
    let set = compile(
        "params.s == params.t && 'a' == 'a' && params.s != 'b'",
        "allow",
    )
    .unwrap();
    let d = decide(set, json!({"s": "a", "t": "a"}));
    assert_eq!(
        (d.effect, d.errors.len()),
        (Effect::Allow, 0),
        "{:?}",
        d.errors
    );
}

#[test]
fn patterns_are_compiled_with_a_size_limit() {
    let set = compile("params.s.matches(params.p)", "allow").unwrap();
    let d = decide(set, json!({"s": "aaa", "p": "(\\w{100}){100}"}));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.errors[0].message.contains("too large"), "{:?}", d.errors);
    // Both forms of `matches` still work.
    let set = compile(
        "matches(params.s, '^a+$') && params.s.matches('a')",
        "allow",
    )
    .unwrap();
    let d = decide(set, json!({"s": "aaa"}));
    assert_eq!(
        (d.effect, d.errors.len()),
        (Effect::Allow, 0),
        "{:?}",
        d.errors
    );
    let set = compile("params.s.matches('(')", "deny").unwrap();
    let d = decide(set, json!({"s": "aaa"}));
    assert!(d.errors[0].message.contains("matches"), "{:?}", d.errors);
}

#[test]
fn run_time_errors_are_reported_briefly() {
    // The interpreter's message quotes the value it failed on, which comes from the request.
    let set = compile("params.m + 1 == 2", "deny").unwrap();
    let keys: serde_json::Map<String, Value> =
        (0..2_000).map(|i| (format!("key{i}"), json!(i))).collect();
    let d = decide(set, json!({ "m": keys }));
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.errors[0].message.chars().count() <= 301,
        "{}",
        d.errors[0].message.len()
    );
}
