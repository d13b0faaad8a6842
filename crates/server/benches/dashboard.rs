//! How fast the dashboard's pages answer with a big history: seeds a workspace with
//! `DASHBOARD_EVALUATIONS` evaluations (default 1,000,000) through the evaluate use case
//! (99.8 % allowed, 0.1 % denied, 0.1 % waiting for an approver, 20 agents, two policies), serves it, signs
//! in, and times each page over loopback: 5 requests to warm, then 30, printing the median,
//! the 95th percentile and the slowest in milliseconds. A client's time over loopback is an
//! upper bound of the server's. On PostgreSQL the tables are analysed after seeding, as
//! autovacuum would soon after such a load.
//!
//! `cargo bench -p agentnexus-server --bench dashboard` (SQLite in a temporary directory);
//! `AGENTNEXUS_BENCH_DATABASE_URL=postgres://…/db` for PostgreSQL (an empty database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentnexus_app::evaluations::EvaluateInput;
use agentnexus_app::{App, Config, accounts};
use agentnexus_store::{Store, StoreConfig};
use serde_json::json;

const POLICY: &str = "name: mixed
rules:
  - id: deletes
    when: action == \"delete\"
    effect: deny
  - id: pays
    when: action == \"pay\"
    effect: require_approval
    approval:
      stages:
        - name: owners
          approvers: [\"owner@example.com\"]
          timeout: 7d
  - id: rest
    effect: allow
";

/// A second policy, whose rule only deletes match (one evaluation in 1,000).
const AUDITS: &str = "name: audits
rules:
  - id: deletes
    when: action == \"delete\"
    effect: deny
";

fn action(i: usize) -> &'static str {
    match i % 1000 {
        0 => "delete",
        1 => "pay",
        _ => "read",
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("DASHBOARD_EVALUATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("anx-dashboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = std::env::var("AGENTNEXUS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
    let store = Store::open(StoreConfig::new(&url)).await.expect("store");
    let created = accounts::bootstrap(&store, "owner@example.com", Some("bench-password".into()))
        .await
        .expect("bootstrap")
        .expect("an empty store");
    let config = Config {
        rate_limit_per_second: 10_000_000,
        admin_rate_limit_per_second: 10_000_000,
        queue_limit_per_workspace: 1_000_000,
        ..Config::for_tests()
    };
    let app = Arc::new(App::new(store.clone(), config, Arc::new(chrono::Utc::now)).unwrap());
    let admin = app
        .operator("default")
        .await
        .expect("the default workspace");
    app.put_policy(
        &admin,
        "mixed",
        agentnexus_app::policies::PolicyText::sniff(POLICY.into()),
    )
    .await
    .expect("policy");
    app.put_policy(
        &admin,
        "audits",
        agentnexus_app::policies::PolicyText::sniff(AUDITS.into()),
    )
    .await
    .expect("policy");

    // Seeding, 64 at a time through the group-commit writer.
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
                    "action": action(i),
                    "resource": format!("order/{i}"),
                    "amount_cents": (i % 10_000) as i64,
                    "cost_cents": 3,
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
        // What autovacuum does after a bulk load, sooner: without statistics the planner takes
        // the timeline's evaluation for one in 80 of the chain and reads the whole workspace.
        sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    }

    // Serving, signed in.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agentnexus_server::serve(listener, app.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed = http
        .post(format!("{base}/sign-in"))
        .form(&[
            ("email", "owner@example.com"),
            ("password", "bench-password"),
        ])
        .send()
        .await
        .unwrap();
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let some = app
        .evaluations(
            &admin.reader(),
            agentnexus_app::evaluations::ListInput {
                status: Some("pending".into()),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .evaluations[0]
        .id
        .clone();
    let head = app.chain_status(&admin.reader()).await.unwrap().1.0;
    let pages = [
        "/".to_owned(),
        "/inbox".to_owned(),
        "/evaluations".to_owned(),
        "/evaluations?status=pending".to_owned(),
        "/evaluations?status=denied".to_owned(),
        "/evaluations?agent_id=agent-7".to_owned(),
        "/evaluations?action=delete".to_owned(),
        "/evaluations?action=read".to_owned(),
        "/evaluations?policy=audits".to_owned(),
        "/evaluations?policy=mixed".to_owned(),
        "/evaluations?action=pay&status=pending".to_owned(),
        "/evaluations?agent_id=agent-0&policy=audits".to_owned(),
        "/evaluations?agent_id=agent-1&action=delete".to_owned(),
        "/evaluations?action=read&status=pending".to_owned(),
        format!("/evaluations/{some}"),
        "/audit".to_owned(),
        format!("/audit?after_seq={}", head - 100),
        "/policies".to_owned(),
        "/policies/mixed".to_owned(),
        "/policies/mixed/diff?from=1&to=1".to_owned(),
        "/policies/simulate".to_owned(),
        "/keys".to_owned(),
        "/members".to_owned(),
        "/settings".to_owned(),
        "/account".to_owned(),
    ];
    println!("{:<40} {:>8} {:>8} {:>8}", "page", "median", "p95", "max");
    for page in &pages {
        let mut times = Vec::new();
        for round in 0..35 {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{page}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{page}");
            r.bytes().await.unwrap();
            if round >= 5 {
                times.push(t.elapsed());
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{page:<40} {:>8.2} {:>8.2} {:>8.2}",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 95 / 100]),
            ms(times[times.len() - 1])
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
