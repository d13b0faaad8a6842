//! Approval deadlines (SPEC §5): stages past their timeout expire the evaluation or escalate
//! to the next stage. Run by the in-server sweeper (every AGENTNEXUS_TIMEOUT_SWEEP_SECS, or
//! sooner when a deadline is nearer) and by schedulers outside the server through
//! `POST /api/cron/approval-timeouts`. Each stage is ended in a transaction that re-checks it
//! under the audit head lock, so sweeps, cron calls and people clicking at once never decide a
//! stage twice.

use std::sync::Arc;
use std::time::Duration;

use agentnexus_engine::OnTimeout;
use agentnexus_store::DueStage;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::App;
use crate::error::{Error, Result};

/// Stages looked at per query.
const BATCH: u32 = 100;

/// How a workspace's deadlines stand, for the settings page.
#[derive(Debug, Clone)]
pub struct DeadlineStatus {
    /// Seconds between this server's sweeps; 0 when it does not sweep (a scheduler calls
    /// `POST /api/cron/approval-timeouts` instead).
    pub sweep_every_secs: u64,
    /// Waiting stages whose deadline has passed (among the 500 nearest): more than a few for
    /// long means nothing sweeps.
    pub overdue: usize,
    /// The nearest deadline still ahead.
    pub next: Option<DateTime<Utc>>,
}

impl App {
    /// How the workspace's deadlines stand.
    pub async fn deadline_status(&self, reader: &crate::Reader) -> Result<DeadlineStatus> {
        let now = self.now();
        let waiting = self
            .store
            .waiting_approvals(reader.tenant(), crate::inbox::INBOX_SCAN)
            .await?;
        let deadlines = waiting.iter().filter_map(|w| w.expires_at);
        Ok(DeadlineStatus {
            sweep_every_secs: self.config.timeout_sweep_secs,
            overdue: deadlines.clone().filter(|d| *d <= now).count(),
            next: deadlines.filter(|d| *d > now).min(),
        })
    }

    /// Ends every stage whose deadline has passed; answers how many this call ended. A stage
    /// that fails to end (its next stage cannot start, the store refuses a write) is logged,
    /// put off with a growing delay and audited in its workspace (`stage.expiry_failed`); the
    /// sweep goes on with the others, so no workspace's stage can hold up another's.
    pub async fn sweep_deadlines(&self) -> Result<usize> {
        let now = self.now();
        let mut processed = 0;
        loop {
            let due = self.store.due_stages(now, BATCH).await?;
            for d in &due {
                match self.end_stage(d, now).await {
                    Ok(true) => processed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, evaluation = %d.evaluation_id, stage = d.stage,
                            "a stage past its deadline could not be ended; it is put off");
                        if let Err(e) = self.store.postpone_stage(d, &e.to_string(), now).await {
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
    async fn end_stage(&self, d: &DueStage, now: DateTime<Utc>) -> Result<bool> {
        let next_notices = match self.store.evaluation(&d.tenant, &d.evaluation_id).await? {
            Some(ev) if d.on_timeout == OnTimeout::Escalate => {
                self.next_stage_notices(&d.tenant, &ev, d.stage, now)
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(self.store.expire_stage(d, next_notices, now).await?)
    }

    /// The sweep a scheduler outside the server asks for with the cron secret
    /// (`CRON_SECRET`); refused while none is configured.
    pub async fn sweep_deadlines_for(self: &Arc<App>, secret: &str) -> Result<usize> {
        let expected = self
            .config
            .cron_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(Error::Unauthorized)?;
        if !crate::crypto::constant_time_eq(secret.trim().as_bytes(), expected.as_bytes()) {
            return Err(Error::Unauthorized);
        }
        sweep_guarded(self.clone()).await
    }
}

/// Runs a sweep as a task of its own, so that even a panic ends only that sweep.
async fn sweep_guarded(app: Arc<App>) -> Result<usize> {
    match tokio::spawn(async move { app.sweep_deadlines().await }).await {
        Ok(result) => result,
        Err(e) => Err(Error::Internal(format!("the deadline sweep failed: {e}"))),
    }
}

/// The in-server sweeper: sleeps until the next deadline (at most the sweep interval). It
/// outlives any sweep's failure.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = app.config.timeout_sweep_secs;
    if every == 0 {
        return;
    }
    let every = Duration::from_secs(every);
    loop {
        match sweep_guarded(app.clone()).await {
            Ok(n) if n > 0 => tracing::info!(ended = n, "approval deadlines passed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the deadline sweep failed"),
        }
        let wait = match app.store.next_deadline().await {
            Ok(Some(at)) => (at - app.now()).to_std().unwrap_or_default().min(every),
            _ => every,
        }
        .max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
