//! The queue loop: claims due jobs from the store (fairly between workspaces), performs up to
//! `AGENTNEXUS_DELIVERY_CONCURRENCY` at once, and records what each came to. Finished
//! attempts are recorded together, one transaction for all that ended meanwhile.

use std::sync::Arc;
use std::time::Duration;

use agentnexus_store::Finished;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::App;

/// Runs until `stop`: claims what is due, up to `concurrency` at a time, and waits for a
/// delivery to end, a new job in this process, the next due time or the next poll.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let worker = format!("wrk_{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = app.config.delivery();
    let mut inflight: JoinSet<Finished> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let capacity = config.concurrency.saturating_sub(inflight.len());
        if capacity > 0 {
            match app
                .store
                .claim_jobs(
                    &worker,
                    app.now(),
                    config.lease,
                    capacity as u32,
                    config.per_workspace,
                )
                .await
            {
                Ok(jobs) => {
                    let claimed = !jobs.is_empty();
                    for job in jobs {
                        let app = app.clone();
                        inflight.spawn(async move { super::perform(&app, job).await });
                    }
                    if claimed {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming jobs failed"),
            }
        }
        // With every slot busy, only a finished delivery (or stop) is worth waking for.
        let wait = if inflight.len() >= config.concurrency {
            config.poll
        } else {
            match app.store.next_job_at().await {
                Ok(Some(at)) => (at - app.now()).to_std().unwrap_or_default(),
                _ => config.poll,
            }
            .clamp(Duration::from_millis(5), config.poll)
        };
        let finished = tokio::select! {
            Some(done) = inflight.join_next(), if !inflight.is_empty() => Some(done),
            _ = app.store.jobs_ready().notified() => None,
            _ = tokio::time::sleep(wait) => None,
            _ = stop.wait_for(|s| *s) => break,
        };
        if let Some(done) = finished {
            record(&app, &worker, done, &mut inflight).await;
        }
    }
    // Every delivery under way ends within its 15 s timeout; let them, and record them.
    while let Some(done) = inflight.join_next().await {
        record(&app, &worker, done, &mut inflight).await;
    }
}

/// Records one finished delivery and every other that has finished by now.
async fn record(
    app: &App,
    worker: &str,
    first: Result<Finished, tokio::task::JoinError>,
    inflight: &mut JoinSet<Finished>,
) {
    let mut finished = Vec::new();
    let mut next = Some(first);
    while let Some(result) = next {
        match result {
            Ok(f) => finished.push(f),
            // A panicked delivery is not recorded; its lease runs out and it is tried again.
            Err(e) => tracing::error!(error = %e, "a delivery task failed"),
        }
        next = inflight.try_join_next();
    }
    if finished.is_empty() {
        return;
    }
    if let Err(e) = app.store.finish_jobs(worker, &finished).await {
        // The leases run out and the jobs are attempted again: late, never lost.
        tracing::error!(error = %e, count = finished.len(), "recording delivery attempts failed");
    }
}
