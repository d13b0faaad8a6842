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

/// Ends every stage whose deadline has passed; answers how many this call ended.
pub async fn sweep(state: &AppState) -> ApiResult<usize> {
    let now = state.now();
    let mut processed = 0;
    loop {
        let due = state.store.due_stages(now, BATCH).await?;
        let mut progressed = false;
        for d in &due {
            let next_notices = match state.store.evaluation(&d.tenant, &d.evaluation_id).await? {
                Some(ev) if d.on_timeout == "escalate" => {
                    next_stage_notices(state, &d.tenant, &ev, d.stage, now).await?
                }
                _ => Vec::new(),
            };
            if state.store.expire_stage(d, next_notices, now).await? {
                processed += 1;
                progressed = true;
            }
        }
        if due.len() < BATCH as usize || !progressed {
            return Ok(processed);
        }
    }
}

/// The in-server sweeper: sleeps until the next deadline (at most the sweep interval).
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let every = state.config.timeout_sweep_secs;
    if every == 0 {
        return;
    }
    let every = Duration::from_secs(every);
    loop {
        match sweep(&state).await {
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
