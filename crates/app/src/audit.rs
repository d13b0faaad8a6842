//! The audit trail (SPEC §7): a workspace's events in order, one evaluation's timeline, and
//! verification of the hash chain (one at a time per workspace: it reads the whole chain).

use agentnexus_store::{AuditEvent, ChainCheck, Verification};

use crate::error::{Error, Result};
use crate::types::EvaluationId;
use crate::{App, Reader, Reads};

/// A page of the audit log.
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Where the next page starts; none when this one is the last.
    pub next_after_seq: Option<i64>,
}

impl App {
    /// Events after `after_seq` (default 0), oldest first, `limit` (1-1000, default 100) at a
    /// time.
    pub async fn audit_page(
        &self,
        reader: &Reader,
        after_seq: Option<i64>,
        limit: Option<u32>,
    ) -> Result<AuditPage> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::field("limit", "must be 1 to 1000"));
        }
        let after = after_seq.unwrap_or(0);
        if after < 0 {
            return Err(Error::field("after_seq", "must not be negative"));
        }
        let events = self.store.audit_page(reader.tenant(), after, limit).await?;
        let next_after_seq = (events.len() == limit as usize)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(AuditPage {
            events,
            next_after_seq,
        })
    }

    /// Recomputes the workspace's hash chain; the result is kept for pages to show.
    pub async fn verify_audit(&self, reader: &Reader) -> Result<Verification> {
        let tenant = reader.tenant();
        let _one_at_a_time = self.limits.begin_verification(tenant.workspace_id())?;
        let verification = self.store.verify_audit(tenant).await?;
        self.store
            .record_chain_check(tenant, &verification, self.now())
            .await?;
        Ok(verification)
    }

    /// The chain's last verification (if any) and its length and head now.
    pub async fn chain_status(
        &self,
        reader: &Reader,
    ) -> Result<(Option<ChainCheck>, (i64, String))> {
        let tenant = reader.tenant();
        Ok((
            self.store.chain_check(tenant).await?,
            self.store.chain_head(tenant).await?,
        ))
    }

    /// Every audit event of one evaluation, oldest first.
    pub async fn timeline(&self, who: &impl Reads, id: &EvaluationId) -> Result<Vec<AuditEvent>> {
        let events = self.store.timeline(who.tenant(), id.as_str()).await?;
        if events.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(events)
    }
}
