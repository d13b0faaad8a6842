//! Approval deadlines (SPEC §5): stages past their timeout expire the evaluation or escalate
//! to the next stage. Run by the in-server sweeper (every AGENTNEXUS_TIMEOUT_SWEEP_SECS, or
//! sooner when a deadline is nearer) and by `POST /api/cron/approval-timeouts`. Each stage is
//! ended in a transaction that re-checks it under the audit head lock, so sweeps, cron calls
//! and people clicking at once never decide a stage twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::approvals::next_stage_notices;
use crate::error::ApiResult;
use crate::state::AppState;

/// Stages looked at per query.
const BATCH: u32 = 100;

/// Ends every stage whose deadline has passed; answers how many this call ended. A stage that
/// fails to end (its next stage cannot start, the store refuses a write) is logged, put off
/// with a growing delay and audited in its workspace (`stage.expiry_failed`); the sweep goes
/// on with the others, so no workspace's stage can hold up another's.
pub async fn sweep(state: &AppState) -> ApiResult<usize> {
    let now = state.now();
    let mut processed = 0;
    loop {
        let due = state.store.due_stages(now, BATCH).await?;
        for d in &due {
            match end_stage(state, d, now).await {
                Ok(true) => processed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, evaluation = %d.evaluation_id, stage = d.stage,
                        "a stage past its deadline could not be ended; it is put off");
                    if let Err(e) = state.store.postpone_stage(d, &e.to_string(), now).await {
                        // Not even put off: stop here rather than meet it again at once.
                        tracing::error!(error = %e, evaluation = %d.evaluation_id,
                            "putting off a failing stage failed");
                        return Ok(processed);
                    }
                }
            }
        }
        if due.len() < BATCH as usize {
            return Ok(processed);
        }
    }
}

/// Expires or escalates one due stage; false when someone else ended it first.
async fn end_stage(
    state: &AppState,
    d: &agentnexus_store::DueStage,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<bool> {
    let next_notices = match state.store.evaluation(&d.tenant, &d.evaluation_id).await? {
        Some(ev) if d.on_timeout == "escalate" => {
            next_stage_notices(state, &d.tenant, &ev, d.stage, now).await?
        }
        _ => Vec::new(),
    };
    Ok(state.store.expire_stage(d, next_notices, now).await?)
}

/// Runs a sweep as a task of its own, so that even a panic ends only that sweep.
pub async fn sweep_guarded(state: Arc<AppState>) -> ApiResult<usize> {
    match tokio::spawn(async move { sweep(&state).await }).await {
        Ok(result) => result,
        Err(e) => Err(crate::error::ApiError::Internal(format!(
            "the deadline sweep failed: {e}"
        ))),
    }
}

/// The in-server sweeper: sleeps until the next deadline (at most the sweep interval). It
/// outlives any sweep's failure.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let every = state.config.timeout_sweep_secs;
    if every == 0 {
        return;
    }
    let every = Duration::from_secs(every);
    loop {
        match sweep_guarded(state.clone()).await {
            Ok(n) if n > 0 => tracing::info!(ended = n, "approval deadlines passed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the deadline sweep failed"),
        }
        let wait = match state.store.next_deadline().await {
            Ok(Some(at)) => (at - state.now()).to_std().unwrap_or_default().min(every),
            _ => every,
        }
        .max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
