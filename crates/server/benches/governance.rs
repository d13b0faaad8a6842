//! Governance data at scale: seeds a workspace with `GOVERNANCE_EVALUATIONS` evaluations
//! (default 1,000,000) through the evaluate use case, each with a cost, from 20 agents, lets the
//! maintenance steps a server runs catch the lists and hourly sums up, then times the
//! governance report and the cost report over the default 30 days (three runs each), and makes
//! the evidence bundle of the same period once, printing its time, its size and the process's
//! peak memory while it was made (the peak is reset first through `/proc/self/clear_refs`).
//!
//! `cargo bench -p agentnexus-server --bench governance` (SQLite in a temporary directory);
//! `AGENTNEXUS_BENCH_DATABASE_URL=postgres://…/db` for PostgreSQL (an empty database).

use std::sync::Arc;
use std::time::Instant;

use agentnexus_app::analytics::CostsInput;
use agentnexus_app::evaluations::EvaluateInput;
use agentnexus_app::policies::PolicyText;
use agentnexus_app::{App, Config, accounts};
use agentnexus_store::{Store, StoreConfig};
use serde_json::json;

const POLICY: &str = "name: refunds
rules:
  - id: small
    when: action == \"refund\" && amount_cents <= 5000
    effect: allow
  - id: large
    when: action == \"refund\" && amount_cents > 5000
    effect: deny
    reason: too large
";

/// A size in KiB from `/proc/self/status`: `VmHWM` (the peak resident memory) or `VmRSS`.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("GOVERNANCE_EVALUATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("anx-governance-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = std::env::var("AGENTNEXUS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
    let store = Store::open(StoreConfig::new(&url)).await.expect("store");
    let created = accounts::bootstrap(&store, "owner@example.com", None)
        .await
        .expect("bootstrap")
        .expect("an empty store");
    let config = Config {
        rate_limit_per_second: 10_000_000,
        admin_rate_limit_per_second: 10_000_000,
        ..Config::for_tests()
    };
    // The seeded history spans the 29 days before now, as a month of traffic would: the
    // clock moves forward with every evaluation, and is now again for the reports.
    let start = chrono::Utc::now() - chrono::Duration::days(29);
    let step_us = (29 * 86_400_000_000i64) / n.max(1) as i64;
    let seeded = Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let clock = {
        let seeded = seeded.clone();
        Arc::new(
            move || match seeded.load(std::sync::atomic::Ordering::Relaxed) {
                -1 => chrono::Utc::now(),
                i => start + chrono::Duration::microseconds(i * step_us),
            },
        )
    };
    let app = Arc::new(App::new(store.clone(), config, clock).unwrap());
    let admin = app
        .operator("default")
        .await
        .expect("the default workspace");
    app.put_policy(&admin, "refunds", PolicyText::sniff(POLICY.into()))
        .await
        .expect("policy");

    // Amounts 0 … 9,990 cents in steps of 10: half allowed; costs 1 … 7 cents.
    let caller = app.authenticate(&created.admin_key).await.unwrap();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (app, caller, next, seeded) =
            (app.clone(), caller.clone(), next.clone(), seeded.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                seeded.fetch_max(i as i64, std::sync::atomic::Ordering::Relaxed);
                let proposal = serde_json::from_value(json!({
                    "agent_id": format!("agent-{}", i % 20),
                    "action": "refund",
                    "amount_cents": ((i % 1000) * 10) as i64,
                    "cost_cents": (i % 7 + 1) as i64,
                }))
                .unwrap();
                let input = EvaluateInput {
                    proposal,
                    ..Default::default()
                };
                app.evaluate(&caller, input).await.expect("evaluate");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    seeded.store(-1, std::sync::atomic::Ordering::Relaxed);
    println!(
        "seeded {n} evaluations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // What a server's refresh loop does between requests.
    let started = Instant::now();
    store.catch_up_lists().await.unwrap();
    while store.sum_hours().await.unwrap() > 0 {}
    println!(
        "lists and hourly sums caught up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if url.starts_with("postgres") {
        sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    }
    let expected_cents: i64 = (0..n).map(|i| (i % 7 + 1) as i64).sum();
    let reader = admin.reader();

    for run in 1..=3 {
        let started = Instant::now();
        let r = app
            .governance(&reader, None, None, Some("day"))
            .await
            .expect("governance");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(r.decisions.total(), n as i64);
        println!("governance report {run}: {n} evaluations in {secs:.3} s");
    }
    for run in 1..=3 {
        let started = Instant::now();
        let costs = app
            .costs(
                &reader,
                CostsInput {
                    group_by: Some("agent_id".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("costs");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(costs.total_cents, expected_cents);
        assert_eq!(costs.groups.len(), 20);
        println!(
            "cost report {run}: {} cents in {secs:.3} s",
            costs.total_cents
        );
    }

    let before = status_kib("VmRSS");
    // Resets VmHWM to the current resident size (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let mut chunks = app.evidence(&reader, None, None).await.expect("evidence");
    let mut bytes = 0usize;
    while let Some(chunk) = chunks.recv().await {
        bytes += chunk.expect("a chunk").len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "evidence bundle: {:.1} MB in {secs:.1} s; resident {} MiB before, peak {} MiB while made",
        bytes as f64 / 1e6,
        before / 1024,
        status_kib("VmHWM") / 1024
    );
    app.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
