//! Audit chain throughput: batched appends, and verifying a long chain.
//!
//! `cargo bench -p agentnexus-store --bench audit` (AUDIT_EVENTS=1000000 by default,
//! AUDIT_BATCH=64, AUDIT_BACKEND=sqlite or postgres; PostgreSQL as for the tests,
//! `AGENTNEXUS_TEST_POSTGRES_URL`). Prints events/s for appends and seconds for each of
//! AUDIT_VERIFY_RUNS verifications (1 by default). On PostgreSQL take a later run: the first
//! read of freshly written rows is several times slower (PostgreSQL sets hint bits on it).

use std::time::Instant;

use agentnexus_store::{Actor, EventKind, NewAuditEvent, NewOwner, Store, StoreConfig};
use agentnexus_testkit::Backend;
use agentnexus_testkit::TestDatabase;
use chrono::Utc;
use serde_json::json;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events: usize = std::env::var("AUDIT_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let batch: usize = std::env::var("AUDIT_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let backend = match std::env::var("AUDIT_BACKEND").as_deref() {
            Ok("postgres") => Backend::Postgres,
            Ok("sqlite") | Err(_) => Backend::Sqlite,
            Ok(other) => panic!("AUDIT_BACKEND={other}: sqlite or postgres"),
        };
        let db = TestDatabase::new(backend).await;
        let store = Store::open(StoreConfig::new(&db.url)).await.unwrap();
        let owner = NewOwner {
            email: "o@example.com".into(),
            name: None,
            password_hash: "-".into(),
        };
        let (_, tenant, _) = store
            .create_workspace("bench", owner, Actor::Cli, Utc::now())
            .await
            .unwrap();
        // Delivery attempts: the events written most besides evaluations (only the writer
        // records `evaluation.created`, with its evaluation).
        let event = |i: usize| NewAuditEvent {
            kind: EventKind::WebhookAttempted,
            actor: Actor::System,
            evaluation_id: Some(format!("ev_{i:026}")),
            data: json!({"job_id": format!("msg_{i:026}"), "attempt": 1, "event": "terminal_outcome",
                "url": "https://hooks.example.com/agentnexus", "status_code": 204,
                "latency_ms": 12, "error": null, "outcome": "done", "next_attempt_at": null}),
            occurred_at: Utc::now(),
        };
        let start = Instant::now();
        let mut written = 0;
        while written < events {
            let n = batch.min(events - written);
            let chunk: Vec<_> = (written..written + n).map(event).collect();
            store.append_audit(&tenant, &chunk).await.unwrap();
            written += n;
        }
        let append = start.elapsed();
        println!(
            "append ({backend:?}): {events} events in batches of {batch}: {:.2} s, {:.0} events/s",
            append.as_secs_f64(),
            events as f64 / append.as_secs_f64()
        );
        if std::env::var("AUDIT_SPLIT").is_ok() {
            use sqlx::Row;
            let start = Instant::now();
            let mut seq = 1i64;
            let mut bytes = 0usize;
            loop {
                let rows = sqlx::query("SELECT seq, occurred_at, type, actor, evaluation_id, data, prev_hash, hash FROM audit_events WHERE workspace_id = $1 AND seq >= $2 ORDER BY seq LIMIT 20000")
                    .bind(tenant.workspace_id()).bind(seq).fetch_all(store.pool()).await.unwrap();
                if rows.is_empty() { break; }
                for r in &rows {
                    let d: String = r.try_get(5).unwrap();
                    let h: String = r.try_get(7).unwrap();
                    bytes += d.len() + h.len();
                }
                seq += rows.len() as i64;
            }
            println!("fetch only: {:.2} s ({bytes} bytes)", start.elapsed().as_secs_f64());
        }
        let runs: usize = std::env::var("AUDIT_VERIFY_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for run in 1..=runs {
            let start = Instant::now();
            let verified = store.verify_audit(&tenant).await.unwrap();
            let verify = start.elapsed();
            assert!(verified.is_ok(), "{verified:?}");
            println!(
                "verify (run {run}): {} events in {:.2} s",
                events + 3,
                verify.as_secs_f64()
            );
        }
        store.close().await;
        db.drop_database().await;
    });
}
