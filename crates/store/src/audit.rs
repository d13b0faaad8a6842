//! The audit trail (SPEC §7): a per-workspace hash chain with gap-free sequence numbers.
//!
//! Appending locks the workspace's head row first (`UPDATE … RETURNING`, a row lock on
//! PostgreSQL and the database write lock on SQLite), so concurrent writers, in this process
//! or another, queue behind each other instead of forking the chain.

use agentnexus_engine::canonical::{self, AuditFields, GENESIS_HASH};
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::exec::{Arg, Exec};
use crate::{
    AuditEvent, EventKind, NewAuditEvent, Result, Store, StoreError, Tenant, micros, timestamp_text,
};

mod verify;

/// Locks a workspace's chain head: a row lock on PostgreSQL, the database write lock on SQLite.
const LOCK: &str =
    "UPDATE audit_heads SET seq = seq WHERE workspace_id = $1 RETURNING seq, hash, indexed_seq";

/// A workspace's chain head, locked for the rest of the transaction.
pub(crate) struct Chain {
    workspace_id: String,
    seq: i64,
    hash: String,
    /// The seq up to which this workspace's evaluations are in the list (`listing`).
    indexed: i64,
    /// Events hashed but not yet written: `save` writes them with the head, many rows per
    /// statement.
    pending: Vec<Pending>,
}

struct Pending {
    seq: i64,
    occurred_at: i64,
    kind: &'static str,
    actor: String,
    evaluation_id: Option<String>,
    data: String,
    prev_hash: String,
    hash: String,
}

/// Rows per INSERT (events: 9 parameters each; index rows, ranges and costs fewer), far below
/// both backends' limits, and few enough distinct statements for the prepared-statement cache.
const ROWS_PER_INSERT: usize = 64;

/// Runs `{head} VALUES (…), (…){tail}` over `args`, `cols` of them to a row, up to
/// `ROWS_PER_INSERT` rows per statement.
pub(crate) async fn insert_rows(
    conn: &mut impl Exec,
    head: &str,
    tail: &str,
    cols: usize,
    args: &[Arg<'_>],
) -> Result<()> {
    for chunk in args.chunks(cols * ROWS_PER_INSERT) {
        let values = crate::values_list(conn.is_sqlite(), cols, chunk.len() / cols);
        conn.execute(&format!("{head} VALUES {values}{tail}"), chunk)
            .await?;
    }
    Ok(())
}

impl Chain {
    pub(crate) fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    /// The seq of the last event appended.
    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    /// How far the list has caught up with this chain.
    pub(crate) fn indexed(&self) -> i64 {
        self.indexed
    }

    /// The list has caught up with every event appended so far (`listing`).
    pub(crate) fn caught_up(&mut self) {
        self.indexed = self.seq;
    }

    fn at(workspace_id: &str, seq: i64, hash: String, indexed: i64) -> Chain {
        Chain {
            workspace_id: workspace_id.to_owned(),
            seq,
            hash,
            indexed,
            pending: Vec::new(),
        }
    }

    /// [`Chain::lock`] for the group-commit writer: on SQLite its transaction already holds the
    /// database's write lock, so the head is read rather than locked.
    pub(crate) async fn lock_for_writer(conn: &mut impl Exec, workspace_id: &str) -> Result<Chain> {
        // Nobody else can write: reading the head is enough (no row to lock, no page to dirty
        // before `save` does).
        let sql = if conn.write_locked() {
            "SELECT seq, hash, indexed_seq FROM audit_heads WHERE workspace_id = $1"
        } else {
            LOCK
        };
        Chain::head(conn, workspace_id, sql).await
    }

    pub(crate) async fn lock(conn: &mut impl Exec, workspace_id: &str) -> Result<Chain> {
        Chain::head(conn, workspace_id, LOCK).await
    }

    /// The chain as its head row, read by `sql`, says.
    async fn head(conn: &mut impl Exec, workspace_id: &str, sql: &str) -> Result<Chain> {
        let row = conn
            .fetch_optional(sql, &[workspace_id.into()])
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Chain::at(
            workspace_id,
            row.int("seq")?,
            row.text("hash")?,
            row.int("indexed_seq")?,
        ))
    }

    /// The head row every workspace starts with.
    pub(crate) async fn create(conn: &mut impl Exec, workspace_id: &str) -> Result<Chain> {
        conn.execute(
            "INSERT INTO audit_heads (workspace_id, seq, hash) VALUES ($1, 0, $2)",
            &[workspace_id.into(), GENESIS_HASH.into()],
        )
        .await?;
        Ok(Chain::at(workspace_id, 0, GENESIS_HASH.to_owned(), 0))
    }

    /// Gives the event its seq and hashes; it is written by `save`, in the same transaction.
    pub(crate) fn append(&mut self, event: &NewAuditEvent) -> i64 {
        let data = canonical::to_string(&event.data);
        let actor = event.actor.label();
        let id = event.evaluation_id.as_deref();
        self.append_canonical(event.kind.as_str(), &actor, id, data, event.occurred_at)
    }

    /// [`Chain::append`] with the event's `data` already in canonical JSON.
    pub(crate) fn append_canonical(
        &mut self,
        kind: &'static str,
        actor: &str,
        evaluation_id: Option<&str>,
        data: impl Into<String>,
        occurred_at: DateTime<Utc>,
    ) -> i64 {
        let data = data.into();
        let seq = self.seq + 1;
        // Stored in microseconds: hashed as stored.
        let occurred_at = crate::micros(occurred_at);
        let fields = AuditFields {
            workspace_id: &self.workspace_id,
            seq,
            occurred_at: &timestamp_text(crate::from_micros(occurred_at)),
            kind,
            actor,
            evaluation_id,
            data: &data,
        };
        let hash = canonical::chain_hash(&self.hash, &fields.canonical());
        let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
        self.pending.push(Pending {
            seq,
            occurred_at,
            kind,
            actor: actor.to_owned(),
            evaluation_id: evaluation_id.map(str::to_owned),
            data,
            prev_hash,
            hash,
        });
        self.seq = seq;
        seq
    }

    /// Writes the pending events and the new head; call once before commit. Nothing appended,
    /// nothing written.
    pub(crate) async fn save(&mut self, conn: &mut impl Exec) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // On the SQLite writer a failure rolls the whole transaction back, which spares SQLite a
        // statement journal (a copy of every page the statement changes).
        let or = if conn.write_locked() {
            " OR ROLLBACK"
        } else {
            ""
        };
        let mut args = Vec::with_capacity(self.pending.len() * 9);
        for e in &self.pending {
            args.extend([
                Arg::from(&self.workspace_id),
                e.seq.into(),
                e.occurred_at.into(),
                e.kind.into(),
                (&e.actor).into(),
                e.evaluation_id.as_deref().into(),
                (&e.data).into(),
                (&e.prev_hash).into(),
                (&e.hash).into(),
            ]);
        }
        let head = format!(
            "INSERT{or} INTO audit_events (workspace_id, seq, occurred_at, type, actor, \
             evaluation_id, data, prev_hash, hash)"
        );
        insert_rows(conn, &head, "", 9, &args).await?;
        drop(args);
        self.pending.clear();
        conn.execute(
            "UPDATE audit_heads SET seq = $2, hash = $3 WHERE workspace_id = $1",
            &[
                (&self.workspace_id).into(),
                self.seq.into(),
                (&self.hash).into(),
            ],
        )
        .await?;
        Ok(())
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, occurred_at, type, actor, evaluation_id, data, prev_hash, hash, workspace_id";

pub(crate) fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEvent> {
    let data: String = row.try_get("data")?;
    Ok(AuditEvent {
        workspace_id: row.try_get("workspace_id")?,
        seq: row.try_get("seq")?,
        occurred_at: timestamp_text(crate::from_micros(row.try_get("occurred_at")?)),
        kind: row.try_get("type")?,
        actor: row.try_get("actor")?,
        evaluation_id: row.try_get("evaluation_id")?,
        data: serde_json::from_str(&data)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

impl Store {
    /// Runs `work` in one transaction that first locks the workspace's audit head (every write
    /// does, so writers in any number of processes queue instead of forking the chain), then
    /// writes the events `work` appended and commits. An error from `work` rolls all of it
    /// back.
    pub(crate) async fn audited<T>(
        &self,
        tenant: &Tenant,
        work: impl AsyncFnOnce(&mut sqlx::AnyConnection, &mut Chain) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self.pool.begin().await?;
        let mut chain = Chain::lock(&mut *tx, tenant.workspace_id()).await?;
        let out = work(&mut tx, &mut chain).await?;
        chain.save(&mut *tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Appends events in their own transaction (for changes that have no other writes).
    ///
    /// They go through the group-commit writer, so they share its transactions and fsyncs.
    pub async fn append_audit(&self, tenant: &Tenant, events: &[NewAuditEvent]) -> Result<()> {
        self.writer.append(tenant.clone(), events.to_vec()).await
    }

    /// Events after `after_seq`, oldest first.
    /// The hash of the workspace's event `seq`, if there is one.
    pub async fn audit_hash_at(&self, tenant: &Tenant, seq: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT hash FROM audit_events WHERE workspace_id = $1 AND seq = $2",
            )
            .bind(tenant.workspace_id())
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// The first seq of the workspace's chain at or after `t` (one past the head when none is):
    /// a binary search over the chain's times, which grow with seq, by its primary key.
    pub async fn audit_seq_at(&self, tenant: &Tenant, t: DateTime<Utc>) -> Result<i64> {
        let (head, _) = self.chain_head(tenant).await?;
        let t = micros(t);
        let (mut lo, mut hi) = (1, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT occurred_at FROM audit_events WHERE workspace_id = $1 AND seq = $2",
            )
            .bind(tenant.workspace_id())
            .bind(mid)
            .fetch_optional(&self.pool)
            .await?;
            // A missing event (a damaged chain) counts as later: the search still ends.
            if at.is_some_and(|at| at < t) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The workspace's events of one type with a seq after `after_seq` and at most `until`,
    /// oldest first, at most `limit`: the rest stay in the database.
    pub async fn audit_page_of(
        &self,
        tenant: &Tenant,
        kind: EventKind,
        after_seq: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 \
             AND seq <= $3 AND type = $4 ORDER BY seq LIMIT $5"
        ))
        .bind(tenant.workspace_id())
        .bind(after_seq)
        .bind(until)
        .bind(kind.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn audit_page(
        &self,
        tenant: &Tenant,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(tenant.workspace_id())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}
