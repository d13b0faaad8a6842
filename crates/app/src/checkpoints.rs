//! Signed checkpoints of the audit chains (SPEC §7). A hash chain kept in the database does
//! not survive someone who can write the database: deleting the tail and rolling the head back
//! leaves a chain that verifies. A checkpoint, the chain's length and head hash signed with the
//! server's Ed25519 key and kept outside the database (`AGENTNEXUS_CHECKPOINT_DIR`, or wherever
//! whoever fetched it keeps it), makes that visible: the chain must still hold the signed head
//! at the signed length. The keys and signatures are [`crate::notary`]'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::notary::{Checkpoint, Notary, PublicKey};
use crate::{App, Reader};

/// What checking a checkpoint against a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointCheck {
    /// The chain still holds the signed head at the signed length.
    Holds,
    /// The problem, in words.
    Fails(String),
}

impl App {
    /// The server's signing key; fails on a command line without one.
    pub fn notary(&self) -> Result<&Notary> {
        self.notary.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "this needs the signing key (AGENTNEXUS_SIGNING_KEY or its file)".into(),
            )
        })
    }

    /// The workspace's chain head, signed now.
    pub async fn checkpoint(&self, reader: &Reader) -> Result<Checkpoint> {
        let tenant = reader.tenant();
        let name = self.store.workspace_name(tenant).await?;
        let (seq, head) = self.store.chain_head(tenant).await?;
        Ok(self
            .notary()?
            .sign(&name, seq, &head, timestamp(self.now())))
    }

    /// Checks `checkpoint` against the workspace's chain: signed by `key`, and the chain
    /// still as long as the checkpoint says, with the signed hash at that `seq`. (Whether the
    /// chain itself verifies is [`App::verify_audit`]'s.)
    pub async fn check_checkpoint(
        &self,
        reader: &Reader,
        checkpoint: &Checkpoint,
        key: &PublicKey,
    ) -> Result<CheckpointCheck> {
        let tenant = reader.tenant();
        let name = self.store.workspace_name(tenant).await?;
        if checkpoint.workspace != name {
            return Ok(CheckpointCheck::Fails(format!(
                "the checkpoint is of workspace `{}`, not `{name}`",
                checkpoint.workspace
            )));
        }
        if let Err(problem) = key.check(checkpoint) {
            return Ok(CheckpointCheck::Fails(problem));
        }
        let (seq, _) = self.store.chain_head(tenant).await?;
        if seq < checkpoint.seq {
            return Ok(CheckpointCheck::Fails(format!(
                "the chain has {seq} events, fewer than the {} the checkpoint signed: events \
                 were deleted",
                checkpoint.seq
            )));
        }
        let at = self.store.audit_hash_at(tenant, checkpoint.seq).await?;
        if at.as_deref() != Some(checkpoint.head_hash.as_str()) {
            return Ok(CheckpointCheck::Fails(format!(
                "the event at seq {} is not the one the checkpoint signed: the chain was \
                 rewritten",
                checkpoint.seq
            )));
        }
        Ok(CheckpointCheck::Holds)
    }

    /// Signs every workspace's chain that grew since `signed` (seq by workspace id) and
    /// writes each checkpoint to `AGENTNEXUS_CHECKPOINT_DIR` when set. Answers how many.
    pub async fn write_checkpoints(&self, signed: &mut HashMap<String, i64>) -> Result<usize> {
        let notary = self.notary()?;
        let mut made = 0;
        for (workspace, tenant) in self.store.workspaces().await? {
            let (seq, head) = self.store.chain_head(&tenant).await?;
            if signed.get(tenant.workspace_id()).is_some_and(|s| *s >= seq) {
                continue;
            }
            let checkpoint = notary.sign(&workspace.name, seq, &head, timestamp(self.now()));
            if let Some(dir) = &self.config.checkpoint_dir {
                write_checkpoint(dir, &checkpoint).map_err(|e| {
                    Error::Internal(format!("writing a checkpoint to {}: {e}", dir.display()))
                })?;
            }
            signed.insert(tenant.workspace_id().to_owned(), seq);
            made += 1;
        }
        Ok(made)
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `DIR/WORKSPACE-SEQ.json`, written whole (a temporary file renamed into place).
fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        "{}-{:012}.json",
        checkpoint.workspace, checkpoint.seq
    ));
    let partial = dir.join(format!(".{}.partial", ulid::Ulid::new()));
    let text = serde_json::to_string_pretty(checkpoint).expect("a checkpoint serializes");
    std::fs::write(&partial, text + "\n")?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The in-server checkpointer: every `AGENTNEXUS_CHECKPOINT_SECS`, signs the chains that grew.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = app.config.checkpoint_secs;
    if every == 0 || app.notary.is_none() {
        return;
    }
    let mut signed = HashMap::new();
    loop {
        match app.write_checkpoints(&mut signed).await {
            Ok(n) if n > 0 => tracing::debug!(checkpoints = n, "audit chains signed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "signing the audit chains failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
