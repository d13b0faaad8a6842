//! The audit trail (SPEC §7): a per-workspace hash chain with gap-free sequence numbers.
//!
//! Appending locks the workspace's head row first (`UPDATE … RETURNING`, a row lock on
//! PostgreSQL and the database write lock on SQLite), so concurrent writers, in this process
//! or another, queue behind each other instead of forking the chain.

use agentnexus_engine::canonical::{self, AuditFields, GENESIS_HASH};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;

use crate::exec::{Arg, Exec};
use crate::{AuditEvent, NewAuditEvent, Result, Store, StoreError, Tenant};

mod verify;

/// How `occurred_at` is written in the hashed form and in the API.
pub fn timestamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A workspace's chain head, locked for the rest of the transaction.
pub(crate) struct Chain {
    workspace_id: String,
    seq: i64,
    hash: String,
    /// The seq up to which this workspace's evaluations are in `evaluation_index`.
    indexed: i64,
    /// Events hashed but not yet written: `save` writes them with the head, many rows per
    /// statement.
    pending: Vec<Pending>,
    /// Every evaluation created past `indexed`, when this chain knows them all (see
    /// [`Memory`]); `None` sends the next catch-up to read them back from the chain.
    known: Option<Vec<Indexed>>,
}

/// What the list index and cost attribution need of one evaluation.
pub(crate) struct Indexed {
    pub(crate) id: String,
    /// Its `evaluation.created` event's.
    pub(crate) seq: i64,
    pub(crate) agent: String,
    pub(crate) status: String,
    pub(crate) cost: i64,
    pub(crate) occurred_at: i64,
}

/// What the group-commit writer remembers of each workspace's chain between its transactions:
/// the evaluations it created past `indexed_seq`, so that catching up writes them from memory
/// instead of reading them back from the chain (which cost more than writing them). It holds
/// only while the chain has grown by this writer alone: the head must still be where the
/// writer left it (`seq`, `indexed`), else the chain is read back. Emptied whenever a
/// transaction fails.
#[derive(Default)]
pub(crate) struct Memory(std::collections::HashMap<String, Remembered>);

struct Remembered {
    seq: i64,
    indexed: i64,
    evaluations: Vec<Indexed>,
}

impl Memory {
    pub(crate) fn forget(&mut self) {
        self.0.clear();
    }
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
async fn insert_rows(
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

/// How far the chain may run ahead of `evaluation_index` before `save` catches the index up.
/// Every commit used to write an index leaf per distinct agent and status; caught up in bulk,
/// a leaf takes many entries at once. Lists read at most this many tail events besides.
pub(crate) const INDEX_EVERY: i64 = 128;

impl Chain {
    pub(crate) fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    fn at(workspace_id: &str, seq: i64, hash: String, indexed: i64) -> Chain {
        Chain {
            workspace_id: workspace_id.to_owned(),
            seq,
            hash,
            indexed,
            pending: Vec::new(),
            known: (seq == indexed).then(Vec::new),
        }
    }

    /// [`Chain::lock`], taking up what `memory` holds of this workspace if it still holds.
    pub(crate) async fn lock_remembering(
        conn: &mut impl Exec,
        workspace_id: &str,
        memory: &mut Memory,
    ) -> Result<Chain> {
        let mut chain = if conn.write_locked() {
            // Nobody else can write: reading the head is enough (no row to lock, no page to
            // dirty before `save` does).
            let row = conn
                .fetch_optional(
                    "SELECT seq, hash, indexed_seq FROM audit_heads WHERE workspace_id = $1",
                    &[workspace_id.into()],
                )
                .await?
                .ok_or(StoreError::NotFound)?;
            Chain::at(workspace_id, row.int(0)?, row.text(1)?, row.int(2)?)
        } else {
            Chain::lock(conn, workspace_id).await?
        };
        if let Some(r) = memory.0.remove(workspace_id)
            && (r.seq, r.indexed) == (chain.seq, chain.indexed)
        {
            chain.known = Some(r.evaluations);
        }
        Ok(chain)
    }

    /// Hands what this chain knows back to `memory`, after `save`; the caller keeps `memory`
    /// only if the transaction then commits.
    pub(crate) fn remember(self, memory: &mut Memory) {
        if let Some(evaluations) = self.known {
            let r = Remembered {
                seq: self.seq,
                indexed: self.indexed,
                evaluations,
            };
            memory.0.insert(self.workspace_id, r);
        }
    }

    /// Notes an evaluation just appended, for the next catch-up. A pending one's status will
    /// change: the catch-up then reads the chain back, with each row's status as it stands.
    pub(crate) fn created(&mut self, evaluation: Indexed) {
        if evaluation.status == crate::Status::Pending.as_str() {
            self.known = None;
        }
        if let Some(known) = &mut self.known {
            known.push(evaluation);
        }
    }

    pub(crate) async fn lock(conn: &mut impl Exec, workspace_id: &str) -> Result<Chain> {
        let row = conn
            .fetch_optional(
                "UPDATE audit_heads SET seq = seq WHERE workspace_id = $1 \
                 RETURNING seq, hash, indexed_seq",
                &[workspace_id.into()],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Chain::at(
            workspace_id,
            row.int(0)?,
            row.text(1)?,
            row.int(2)?,
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
        self.append_canonical(event.kind, &actor, id, data, event.occurred_at)
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

    /// Writes the pending events and the new head; call once before commit.
    pub(crate) async fn save(&mut self, conn: &mut impl Exec) -> Result<()> {
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
        if self.seq - self.indexed >= INDEX_EVERY {
            self.catch_up(conn).await?;
            self.indexed = self.seq;
        }
        conn.execute(
            "UPDATE audit_heads SET seq = $2, hash = $3, indexed_seq = $4 WHERE workspace_id = $1",
            &[
                (&self.workspace_id).into(),
                self.seq.into(),
                (&self.hash).into(),
                self.indexed.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

impl Chain {
    /// Adds the evaluations created since `indexed` to `evaluation_index`, the id range of
    /// each agent's and each status's among them to `evaluation_facets`, and their costs to
    /// `agent_costs` (a row per agent and day per catch-up, where it was one per commit). A pending evaluation's
    /// row is written by now (the writer writes rows before events) and its status may have
    /// moved on; one final at once has only its event.
    async fn catch_up(&mut self, conn: &mut impl Exec) -> Result<()> {
        let rows = match self.known.take() {
            Some(known) => known,
            None => self.read_back(conn).await?,
        };
        self.known = Some(Vec::new());
        let mut costs = std::collections::BTreeMap::<(&str, String), (i64, i64)>::new();
        let mut facets = std::collections::BTreeMap::<String, (&str, &str)>::new();
        for e in &rows {
            let day = crate::evaluations::day(crate::from_micros(e.occurred_at));
            let cost = costs.entry((&e.agent, day)).or_default();
            cost.0 += e.cost;
            cost.1 += 1;
            for facet in [format!("agent:{}", e.agent), format!("status:{}", e.status)] {
                let (lo, hi) = facets.entry(facet).or_insert((&e.id, &e.id));
                *lo = (*lo).min(e.id.as_str());
                *hi = (*hi).max(e.id.as_str());
            }
        }
        let ws = &self.workspace_id;
        let mut args = Vec::with_capacity(rows.len() * 5);
        for e in &rows {
            args.extend([
                Arg::from(ws),
                (&e.id).into(),
                (&e.agent).into(),
                (&e.status).into(),
                e.seq.into(),
            ]);
        }
        let head = "INSERT INTO evaluation_index (workspace_id, id, agent_id, status, seq)";
        insert_rows(conn, head, " ON CONFLICT DO NOTHING", 5, &args).await?;
        args.clear();
        for (facet, (lo, hi)) in &facets {
            args.extend([Arg::from(ws), facet.into(), (*lo).into(), (*hi).into()]);
        }
        // A range already ending at the same id (a status change's range of one) widens.
        let head = "INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)";
        let tail = " ON CONFLICT (workspace_id, facet, hi_id) DO UPDATE SET \
                    lo_id = CASE WHEN excluded.lo_id < evaluation_facets.lo_id \
                    THEN excluded.lo_id ELSE evaluation_facets.lo_id END";
        insert_rows(conn, head, tail, 4, &args).await?;
        // Every evaluation's cost counts for its agent on its UTC day, whatever its decision.
        args.clear();
        for ((agent, day), (cents, n)) in &costs {
            args.extend([
                Arg::from(ws),
                (*agent).into(),
                day.into(),
                (*cents).into(),
                (*n).into(),
            ]);
        }
        let head = "INSERT INTO agent_costs (workspace_id, agent_id, day, cents, evaluations)";
        let tail = " ON CONFLICT (workspace_id, agent_id, day) DO UPDATE SET \
                    cents = agent_costs.cents + excluded.cents, \
                    evaluations = agent_costs.evaluations + excluded.evaluations";
        insert_rows(conn, head, tail, 5, &args).await?;
        Ok(())
    }

    /// Every evaluation created past `indexed`, read back from the chain.
    async fn read_back(&self, conn: &mut impl Exec) -> Result<Vec<Indexed>> {
        use crate::evaluations::{Field, event_field};
        let sqlite = conn.is_sqlite();
        let agent = event_field(sqlite, Field::Text, "agent_id");
        let status = event_field(sqlite, Field::Text, "status");
        let cost = event_field(sqlite, Field::Int, "cost_cents");
        let rows = conn
            .fetch_all(
                &format!(
                    "SELECT a.evaluation_id, COALESCE(e.agent_id, {agent}), \
                     COALESCE(e.status, {status}), {cost}, a.occurred_at, a.seq \
                     FROM audit_events a LEFT JOIN evaluations e ON e.id = a.evaluation_id \
                     WHERE a.workspace_id = $1 AND a.seq > $2 AND a.type = 'evaluation.created'"
                ),
                &[(&self.workspace_id).into(), self.indexed.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Indexed {
                    id: r.text(0)?,
                    seq: r.int(5)?,
                    agent: r.text(1)?,
                    status: r.text(2)?,
                    cost: r.int(3)?,
                    occurred_at: r.int(4)?,
                })
            })
            .collect()
    }
}

/// The seq of evaluation `$1`'s `evaluation.created` event in workspace `$2`: kept with the
/// evaluation in `evaluation_index`, or found in the chain's tail (at most a catch-up's worth of
/// events) when the index has not caught up with it. `audit_events_by_evaluation` leaves
/// creations out.
pub(crate) const CREATED_SEQ: &str = "SELECT seq FROM evaluation_index \
    WHERE workspace_id = $2 AND id = $1 \
    UNION ALL SELECT seq FROM audit_events WHERE workspace_id = $2 \
    AND seq > (SELECT indexed_seq FROM audit_heads WHERE workspace_id = $2) \
    AND type = 'evaluation.created' AND evaluation_id = $1";

const EVENT_COLUMNS: &str =
    "seq, occurred_at, type, actor, evaluation_id, data, prev_hash, hash, workspace_id";

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEvent> {
    let data: String = row.try_get(5)?;
    Ok(AuditEvent {
        workspace_id: row.try_get(8)?,
        seq: row.try_get(0)?,
        occurred_at: timestamp_text(crate::from_micros(row.try_get(1)?)),
        kind: row.try_get(2)?,
        actor: row.try_get(3)?,
        evaluation_id: row.try_get(4)?,
        data: serde_json::from_str(&data)?,
        prev_hash: row.try_get(6)?,
        hash: row.try_get(7)?,
    })
}

impl Store {
    /// Appends events in their own transaction (for changes that have no other writes).
    ///
    /// They go through the group-commit writer, so they share its transactions and fsyncs.
    pub async fn append_audit(&self, tenant: &Tenant, events: &[NewAuditEvent]) -> Result<()> {
        self.writer.append(tenant.clone(), events.to_vec()).await
    }

    /// Events after `after_seq`, oldest first.
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

    /// Every event of one evaluation, oldest first: its creation found by seq, the rest by
    /// `audit_events_by_evaluation`.
    pub async fn timeline(&self, tenant: &Tenant, evaluation_id: &str) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE evaluation_id = $1 \
             AND workspace_id = $2 AND type <> 'evaluation.created' \
             UNION ALL SELECT {EVENT_COLUMNS} FROM audit_events WHERE workspace_id = $2 \
             AND seq IN ({CREATED_SEQ}) AND evaluation_id = $1 AND type = 'evaluation.created'"
        ))
        .bind(evaluation_id)
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        // Sorted here: asked to order by seq, SQLite walks the workspace's whole chain in seq
        // order rather than use the index on evaluation_id.
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        events.sort_unstable_by_key(|e| e.seq);
        Ok(events)
    }
}
