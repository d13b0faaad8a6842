//! How fast a replay decides history again: seeds a workspace with `REPLAY_EVALUATIONS`
//! evaluations (default 1,000,000) through the evaluate use case, then replays a draft that
//! flips a known share of them over the newest `REPLAY_LIMIT` (default 100,000, the most one
//! replay takes), three times, printing evaluations per second and checking the counts.
//!
//! `cargo bench -p agentnexus-server --bench replay` (SQLite in a temporary directory);
//! `AGENTNEXUS_BENCH_DATABASE_URL=postgres://…/db` for PostgreSQL (an empty database).

use std::sync::Arc;
use std::time::Instant;

use agentnexus_app::evaluations::EvaluateInput;
use agentnexus_app::policies::PolicyText;
use agentnexus_app::replay::ReplayInput;
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
";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("REPLAY_EVALUATIONS", 1_000_000);
    let limit = env("REPLAY_LIMIT", 100_000) as u32;
    let dir = std::env::temp_dir().join(format!("anx-replay-bench-{}", std::process::id()));
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
    let app = Arc::new(App::new(store.clone(), config, Arc::new(chrono::Utc::now)).unwrap());
    let admin = app
        .operator("default")
        .await
        .expect("the default workspace");
    app.put_policy(&admin, "refunds", PolicyText::sniff(POLICY.into()))
        .await
        .expect("policy");

    // Amounts 0 … 9,990 cents in steps of 10, over and over: half allowed.
    let caller = app.authenticate(&created.admin_key).await.unwrap();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (app, caller, next) = (app.clone(), caller.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let proposal = serde_json::from_value(json!({
                    "agent_id": format!("agent-{}", i % 20),
                    "action": "refund",
                    "amount_cents": ((i % 1000) * 10) as i64,
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
    println!(
        "seeded {n} evaluations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.catch_up_lists().await.unwrap();
    if url.starts_with("postgres") {
        sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    }

    // The draft allows up to 3,000 cents only: amounts 3,010 … 5,000 (200 in 1,000) flip.
    let draft = POLICY
        .replace("<= 5000", "<= 3000")
        .replace("> 5000", "> 3000");
    for run in 1..=3 {
        let started = Instant::now();
        let r = app
            .replay(
                &admin.reader(),
                ReplayInput {
                    policy: PolicyText::sniff(draft.clone()),
                    from: None,
                    to: None,
                    limit: Some(limit),
                },
            )
            .await
            .expect("replay");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(r.evaluated, u64::from(limit).min(n as u64));
        let expected = r.evaluated / 5;
        assert!(
            r.changed.abs_diff(expected) <= 200,
            "{} changed, about {expected} expected",
            r.changed
        );
        println!(
            "replay {run}: {} evaluations in {secs:.2} s, {:.0} evaluations/s ({} changed)",
            r.evaluated,
            r.evaluated as f64 / secs,
            r.changed
        );
    }
    app.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
