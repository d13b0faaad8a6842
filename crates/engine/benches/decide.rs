//! One decision, from the request's JSON to the answer, over 100 and 1,000 rules.
//!
//! `cargo bench -p agentnexus-engine`

use std::hint::black_box;
use std::sync::Arc;

use agentnexus_engine::{Format, PolicySet, Proposal, ProposalFields, Spend, compile_policy};
use criterion::{Criterion, criterion_group, criterion_main};

/// `n` rules in the shape of real policies: per-service reads allowed, production deletes
/// denied, refunds over a threshold sent for approval, plus a few rules on every action.
fn policy(n: usize) -> String {
    let mut doc = String::from("name: bench\nrules:\n");
    doc.push_str(
        "  - id: budget\n    when: spend.today_cents + cost_cents > 100000\n    effect: deny\n",
    );
    doc.push_str("  - id: kill-switch\n    when: context.frozen == true\n    effect: deny\n");
    let mut i = 0;
    while doc.matches("  - id:").count() < n {
        let rule = match i % 3 {
            0 => format!(
                "  - id: read-{i}\n    when: action == \"svc{i}.read\"\n    effect: allow\n"
            ),
            1 => format!(
                "  - id: delete-{i}\n    when: action == \"svc{i}.delete\" && context.environment == \"production\"\n    effect: deny\n"
            ),
            _ => format!(
                "  - id: refund-{i}\n    when: action in [\"svc{i}.refund\", \"svc{i}.payout\"] && amount_cents > 50000\n    effect: require_approval\n    approval:\n      stages:\n        - name: finance\n          approvers: [\"role:finance\"]\n"
            ),
        };
        doc.push_str(&rule);
        i += 1;
    }
    doc
}

fn bench(c: &mut Criterion) {
    let request = br#"{"agent_id":"billing-bot","action":"svc4.delete","resource":"db/main","amount_cents":0,"cost_cents":3,"params":{"table":"users"},"context":{"environment":"production","frozen":false}}"#;
    let mut group = c.benchmark_group("decide");
    for n in [100, 1000] {
        let set = PolicySet::new([Arc::new(compile_policy(&policy(n), Format::Yaml).unwrap())]);
        let check = set.decide(
            &Proposal::new(serde_json::from_slice(request).unwrap()).unwrap(),
            Spend::default(),
        );
        assert_eq!(check.effect.as_str(), "deny");
        group.bench_function(format!("{n}_rules_from_json"), |b| {
            b.iter(|| {
                let fields: ProposalFields = serde_json::from_slice(black_box(request)).unwrap();
                let proposal = Proposal::new(fields).unwrap();
                black_box(set.decide(
                    &proposal,
                    Spend {
                        today_cents: 10,
                        month_cents: 10,
                    },
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
