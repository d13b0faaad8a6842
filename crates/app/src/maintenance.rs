//! What a server does besides answering: at start, seal again what earlier versions sealed;
//! while it runs, every `AGENTNEXUS_REFRESH_SECS`, pick up what changed elsewhere (policies,
//! revocations, halts, full job queues), end what halted agents left pending, catch up the
//! evaluation lists and the analytics' hourly sums, and record key use; and at the end, record
//! the last key uses and close the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::App;

/// The background tasks of one server: deliveries, deadlines, checkpoints, the policy-sync
/// schedule and the refresh loop.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts them; they stop when `stop` turns true.
    pub fn start(app: &Arc<App>, stop: watch::Receiver<bool>) -> Background {
        Background {
            tasks: vec![
                tokio::spawn(refresh(app.clone(), stop.clone())),
                tokio::spawn(crate::workers::run(app.clone(), stop.clone())),
                tokio::spawn(crate::deadlines::run(app.clone(), stop.clone())),
                tokio::spawn(crate::checkpoints::run(app.clone(), stop.clone())),
                tokio::spawn(crate::sources::run(app.clone(), stop)),
            ],
        }
    }

    /// Waits for them to stop. Deliveries under way finish (each within its timeout) and are
    /// recorded; queued jobs stay in the store for the next start.
    pub async fn finish(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl App {
    /// Before serving: secrets sealed by earlier versions are sealed again, bound to their
    /// workspace and use.
    pub async fn prepare(&self) {
        let Ok(cipher) = self.cipher() else {
            return;
        };
        match crate::crypto::reseal_legacy(&self.store, cipher).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                values = n,
                "stored secrets sealed again, bound to their workspace and use"
            ),
            Err(e) => tracing::warn!(error = %e, "sealing stored secrets again failed"),
        }
    }

    /// After serving: the last key uses are recorded and the store closed.
    pub async fn close(&self) {
        self.record_key_uses(&self.keys.take_uses()).await;
        self.store.close().await;
    }

    pub(crate) async fn record_key_uses(&self, uses: &[(String, DateTime<Utc>)]) {
        if !uses.is_empty()
            && let Err(e) = self.store.touch_keys(uses).await
        {
            tracing::warn!(error = %e, "recording key use failed");
        }
    }

    /// One round of the refresh loop.
    async fn refresh_once(&self) {
        self.limits.forget_idle();
        match self
            .store
            .workspaces_with_full_queues(self.config.queue_limit_per_workspace)
            .await
        {
            Ok(full) => self
                .limits
                .set_full_queues(full.iter().map(|t| t.workspace_id().to_owned()).collect()),
            Err(e) => tracing::warn!(error = %e, "counting queued jobs failed"),
        }
        if let Err(e) = self.store.catch_up_lists().await {
            tracing::warn!(error = %e, "catching up evaluation lists failed");
        }
        if let Err(e) = self.store.sum_hours().await {
            tracing::warn!(error = %e, "summing evaluations for analytics failed");
        }
        match self.store.policy_generations().await {
            Ok(generations) => {
                let cached: HashMap<_, _> = self.policies.generations().into_iter().collect();
                for (tenant, generation) in generations {
                    if cached
                        .get(tenant.workspace_id())
                        .is_some_and(|g| *g != generation)
                        && let Err(e) = self.reload_policies(&tenant).await
                    {
                        tracing::error!(error = %e, "reloading policies failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking policy changes failed"),
        }
        self.end_halted_everywhere().await;
        match self.store.revoked_among(&self.keys.key_ids()).await {
            Ok(revoked) => {
                let uses = self.keys.forget(&revoked);
                self.record_key_uses(&uses).await;
            }
            Err(e) => tracing::warn!(error = %e, "checking key revocations failed"),
        }
        self.record_key_uses(&self.keys.take_uses()).await;
    }
}

/// Picks up what changed elsewhere every `refresh_secs`, until `stop`.
async fn refresh(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_secs(app.config.refresh_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        app.refresh_once().await;
    }
}
