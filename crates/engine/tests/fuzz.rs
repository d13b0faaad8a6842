//! The bounded fuzz run of `cargo test` (CI runs it on every submission): the targets of
//! `fuzz/targets.rs` over the checked-in seed corpus, then over inputs from seeded generators
//! that write what hostile workspaces write (deep and long expressions, every macro and
//! operator, odd documents and requests, byte mutations of the corpus). The long runs use
//! cargo-fuzz on the same targets: `fuzz/README.md`.

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generated inputs per target; raise with FUZZ_CASES for a longer local run.
fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// A few random byte edits: flips, insertions, deletions, duplicated runs.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..4) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.random_range(0..8),
            1 => {
                let bytes = b"{}[]():,\"'\\ \n-!+.*|&a1";
                out.insert(at, bytes[rng.random_range(0..bytes.len())]);
            }
            2 if !out.is_empty() => {
                out.remove(at);
            }
            _ if !out.is_empty() => {
                let end = (at + rng.random_range(1..16)).min(out.len());
                let run = out[at..end].to_vec();
                for _ in 0..rng.random_range(1..50) {
                    out.splice(at..at, run.iter().copied());
                }
            }
            _ => {}
        }
    }
    out
}

const ATOMS: [&str; 24] = [
    "action",
    "agent_id",
    "resource",
    "amount_cents",
    "cost_cents",
    "params",
    "params.l",
    "params.items",
    "params.s",
    "params.m.a.b.c",
    "params.f",
    "params.z",
    "context",
    "context.environment",
    "context.tags",
    "context.depth.k",
    "spend.today_cents",
    "'production'",
    "\"x\"",
    "1",
    "2.5",
    "true",
    "null",
    "[1, 'a', [2]]",
];

/// One of `choices`, the first `good` of them (valid ones) nine times in ten.
fn pick<'a>(rng: &mut StdRng, good: usize, choices: &[&'a str]) -> &'a str {
    if rng.random_ratio(9, 10) {
        choices[rng.random_range(0..good)]
    } else {
        choices[rng.random_range(0..choices.len())]
    }
}

/// A CEL expression from a small grammar; deep and long ones on purpose.
fn expression(rng: &mut StdRng, depth: u32) -> String {
    if depth == 0 || rng.random_ratio(1, 4) {
        return ATOMS[rng.random_range(0..ATOMS.len())].to_owned();
    }
    let sub = |rng: &mut StdRng| expression(rng, depth - 1);
    match rng.random_range(0..16) {
        0 => format!("!{}", sub(rng)),
        1 => format!("-{}", sub(rng)),
        2 => {
            let op = [
                "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
            ][rng.random_range(0..14)];
            format!("{} {op} {}", sub(rng), sub(rng))
        }
        3 => format!("{} ? {} : {}", sub(rng), sub(rng), sub(rng)),
        4 => {
            let m = ["all", "exists", "exists_one", "map", "filter"][rng.random_range(0..5)];
            format!("{}.{m}(v, {})", sub(rng), sub(rng).replace("params", "v"))
        }
        5 => format!("size({})", sub(rng)),
        6 => {
            let f = ["contains", "startsWith", "endsWith", "matches"][rng.random_range(0..4)];
            format!("{}.{f}({})", sub(rng), sub(rng))
        }
        7 => format!("{}[{}]", sub(rng), sub(rng)),
        8 => format!("({})", sub(rng)),
        9 => format!(
            "has({}.x)",
            ["params", "context", "params.m"][rng.random_range(0..3)]
        ),
        10 => format!("int({})", sub(rng)),
        11 => format!("string({})", sub(rng)),
        12 => format!("[{}, {}]", sub(rng), sub(rng)),
        13 => format!("{{'k': {}}}", sub(rng)),
        // Long chains and deep nesting, now and then around and past the limits.
        14 => {
            let n = if rng.random_ratio(1, 10) {
                rng.random_range(1..2_500)
            } else {
                rng.random_range(1..8)
            };
            let op = ["+", "&&", "||", "*"][rng.random_range(0..4)];
            vec![sub(rng); n].join(&format!(" {op} "))
        }
        _ => {
            let n = if rng.random_ratio(1, 10) {
                rng.random_range(1..150)
            } else {
                rng.random_range(1..4)
            };
            format!("{}{}{}", "(".repeat(n), sub(rng), ")".repeat(n))
        }
    }
}

/// A policy document (YAML) around generated expressions, with odd values where they can go.
fn document(rng: &mut StdRng) -> String {
    let name = pick(rng, 2, &["p", "p.v2_x-y", "Bad Name", "validate"]);
    let mut doc = format!("name: {name}\nrules:\n");
    for i in 0..rng.random_range(1..5) {
        let depth = rng.random_range(1..6);
        let when = expression(rng, depth).replace('\'', "\"");
        let effect = pick(rng, 3, &["allow", "deny", "require_approval", "maybe"]);
        doc.push_str(&format!(
            "  - id: r{i}\n    when: '{}'\n    effect: {effect}\n",
            when.replace('\'', "''")
        ));
        if effect == "require_approval" {
            let timeout = pick(
                rng,
                4,
                &[
                    "30m",
                    "365d",
                    "2h",
                    "45s",
                    "0s",
                    "366d",
                    "9999999999999999999999d",
                    "1x",
                ],
            );
            let on_timeout = pick(rng, 2, &["escalate", "reject", "later"]);
            let tier = pick(rng, 4, &["low", "medium", "high", "critical", "extreme"]);
            let approver = pick(
                rng,
                2,
                &["a@example.com", "role:finance", "role:", "nobody"],
            );
            let required = pick(rng, 2, &["1", "2", "0"]);
            doc.push_str(&format!(
                "    tier: {tier}\n    approval:\n      stages:\n        - {{name: s, approvers: [{approver}], required: {required}, timeout: {timeout}, on_timeout: {on_timeout}}}\n",
            ));
        }
    }
    doc
}

/// A JSON value: nested, with every kind of number and string JSON allows.
fn json_value(rng: &mut StdRng, depth: u32) -> String {
    let leaf = |rng: &mut StdRng| -> String {
        match rng.random_range(0..10) {
            0 => "null".into(),
            1 => "true".into(),
            2 => rng.random::<i64>().to_string(),
            3 => rng.random::<u64>().to_string(),
            4 => format!(
                "{:e}",
                rng.random::<f64>() * 10f64.powi(rng.random_range(-320..308))
            ),
            5 => [
                "9007199254740993",
                "1e400",
                "-0",
                "0.1",
                "1E-7",
                "123456789012345678901234567890",
            ][rng.random_range(0..6)]
            .into(),
            6 => "\"\\u0000\\ud83d\\ude00\\u2028\\\"\\\\\"".into(),
            7 => format!(
                "\"{}\"",
                ["€", "\u{10000}", "\u{ff61}", "a\tb", "😀"][rng.random_range(0..5)]
            ),
            _ => format!("\"k{}\"", rng.random_range(0..100)),
        }
    };
    if depth == 0 || rng.random_ratio(1, 3) {
        return leaf(rng);
    }
    let n = rng.random_range(0..5);
    if rng.random() {
        let items: Vec<String> = (0..n).map(|_| json_value(rng, depth - 1)).collect();
        format!("[{}]", items.join(","))
    } else {
        let keys = [
            "a",
            "b",
            "\u{10000}",
            "\u{ff61}",
            "",
            "é",
            "A",
            "aa",
            "on_behalf_of",
        ];
        let members: Vec<String> = (0..n)
            .map(|_| {
                format!(
                    "\"{}\":{}",
                    keys[rng.random_range(0..keys.len())],
                    json_value(rng, depth - 1)
                )
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

/// An evaluate request's proposal fields, in shapes and types right and wrong.
fn request(rng: &mut StdRng) -> String {
    let text = |rng: &mut StdRng| -> String {
        let s = [
            "\"bot\"",
            "\"x\"",
            "\"é😀\"",
            "\"\"",
            "\"a\\nb\"",
            "\"\\u0085\"",
            "7",
            "null",
        ];
        pick(rng, 3, &s).to_owned()
    };
    let mut fields = vec![
        format!("\"agent_id\":{}", text(rng)),
        format!("\"action\":{}", text(rng)),
    ];
    if rng.random() {
        fields.push(format!("\"resource\":{}", text(rng)));
    }
    for name in ["amount_cents", "cost_cents"] {
        if rng.random() {
            let n = pick(
                rng,
                4,
                &[
                    "0",
                    "750.0",
                    "9007199254740991",
                    "42",
                    "-1",
                    "12.5",
                    "9007199254740992",
                    "1e300",
                ],
            );
            fields.push(format!("\"{name}\":{n}"));
        }
    }
    for name in ["params", "context"] {
        if rng.random() {
            // Mostly objects, as the proposal wants.
            let value = json_value(rng, 4);
            let value = if rng.random_ratio(4, 5) && !value.starts_with('{') {
                format!("{{\"v\":{value}}}")
            } else {
                value
            };
            fields.push(format!("\"{name}\":{value}"));
        }
    }
    if rng.random_ratio(1, 10) {
        fields.push("\"amount\":5".into());
    }
    format!("{{{}}}", fields.join(","))
}

/// Runs a target over the corpus and generated inputs. At least a tenth of them must get past
/// its parser, or the generator is only testing the first error it meets.
fn run(target: &str, check: fn(&[u8]) -> bool, generate: impl Fn(&mut StdRng) -> Vec<u8>) {
    let seeds = corpus(target);
    let mut accepted = seeds.iter().filter(|seed| check(seed)).count();
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + target.len() as u64);
    let cases = cases();
    for i in 0..cases {
        let input = if i % 3 == 0 {
            let seed = rng.random_range(0..seeds.len());
            mutate(&mut rng, &seeds[seed])
        } else {
            generate(&mut rng)
        };
        accepted += usize::from(check(&input));
    }
    let total = seeds.len() + cases;
    eprintln!("{target}: {accepted} of {total} inputs accepted by the parser");
    assert!(
        accepted * 10 >= total,
        "{target}: only {accepted} of {total} accepted"
    );
}

#[test]
fn policies() {
    run("policy", targets::policy, |rng| document(rng).into_bytes());
}

#[test]
fn evaluate_requests() {
    run("evaluate_request", targets::evaluate_request, |rng| {
        request(rng).into_bytes()
    });
}

#[test]
fn canonical_json() {
    run("canonical", targets::canonical, |rng| {
        json_value(rng, 6).into_bytes()
    });
}
