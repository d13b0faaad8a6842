//! Group commit for evaluations and audit events: one writer takes every evaluation waiting to
//! be recorded (and every list of audit events to append), writes the lot in one transaction
//! (evaluation, stages, idempotency key, cost, audit event for each) and answers each request
//! only after that transaction is durable. Many evaluations share one fsync; none is
//! acknowledged before its audit event is durable.
//!
//! On PostgreSQL the writer is a task on a pooled sqlx connection, and the commit syncs.
//!
//! On a SQLite file the writer is a thread of its own holding a rusqlite connection (see
//! `exec` for why not sqlx there), and the fsync is moved off the write lock: the connection
//! commits with `synchronous = NORMAL` (SQLite then writes the transaction to the WAL without
//! syncing it), and a second thread calls `fdatasync` on the WAL before answering the batch. The
//! next batch is written while the last one syncs, and one sync covers every batch written
//! before it. This is what `synchronous = FULL` does at commit, minus the waiting: in WAL mode
//! the two settings differ only in that sync (checkpoints sync the WAL and the database file
//! under both), and an answer still waits for a sync that began after its transaction was in the
//! WAL. Other connections can read a batch in the moment between its commit and its sync; any of
//! them that then commits syncs the same WAL, so nothing they write can outlive it.
//!
//! Checkpoints (copying the WAL into the database file) are mostly made off the writer too: a
//! third thread runs a PASSIVE checkpoint every `CHECKPOINT_EVERY` commits, beside the writer,
//! and when the WAL reaches `WAL_AUTOCHECKPOINT` frames the writer's own checkpoint finds most
//! of it copied already, copies the rest and lets the WAL start over. Made by the writer alone,
//! each checkpoint held up every request behind it (docs/performance.md).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::audit::Chain;
use crate::exec::Exec;
use crate::listing::{Memory, Tracker};
use crate::{NewAuditEvent, NewEvaluation, Recorded, Result, StoreError, Tenant};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most evaluations written in one transaction.
    pub max_batch: usize,
    /// Evaluations that may wait for the writer before callers wait to enqueue.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 256,
            queue: 4096,
        }
    }
}

/// What one caller asked the writer to write. Moved once, into the queue: not boxed.
#[allow(clippy::large_enum_variant)]
enum Entry {
    /// With its `evaluation.created` event's data, in canonical JSON.
    Evaluation(NewEvaluation, String),
    /// Events appended on their own (changes that write nothing else).
    Audit(Tenant, Vec<NewAuditEvent>),
}

impl Entry {
    fn tenant(&self) -> &Tenant {
        match self {
            Entry::Evaluation(ev, _) => &ev.tenant,
            Entry::Audit(tenant, _) => tenant,
        }
    }
}

enum Reply {
    Evaluation(oneshot::Sender<Result<Recorded>>),
    Audit(oneshot::Sender<Result<()>>),
}

struct Job {
    entry: Entry,
    reply: Reply,
}

#[allow(clippy::large_enum_variant)]
enum Msg {
    Job(Job),
    /// Take nothing new; write what is queued, then end.
    Stop,
}

#[derive(Clone)]
pub(crate) struct Handle {
    jobs: mpsc::Sender<Msg>,
    /// Fires when the writer has ended, everything queued written and answered.
    ended: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Handle {
    /// `sqlite_file`: the SQLite database file, which gets the writer thread described above;
    /// `None` for PostgreSQL (and SQLite in memory), which get the task.
    pub(crate) fn spawn(
        pool: AnyPool,
        config: WriterConfig,
        sqlite_file: Option<&Path>,
        jobs_ready: Arc<Notify>,
    ) -> Result<Handle> {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        let (ended_tx, ended) = oneshot::channel();
        let max_batch = config.max_batch.max(1);
        match sqlite_file {
            Some(file) => {
                let writer = SqliteWriter::open(file)?;
                let file = file.to_path_buf();
                std::thread::Builder::new()
                    .name("anx-writer".into())
                    .spawn(move || {
                        sqlite_loop(writer, rx, max_batch, &file, jobs_ready);
                        let _ = ended_tx.send(());
                    })
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            None => {
                tokio::spawn(async move {
                    let writer = SqlxWriter {
                        pool,
                        held: None,
                        memory: Memory::default(),
                    };
                    task_loop(writer, rx, max_batch, jobs_ready).await;
                    let _ = ended_tx.send(());
                });
            }
        }
        Ok(Handle {
            jobs,
            ended: Arc::new(Mutex::new(Some(ended))),
        })
    }

    pub(crate) async fn record(&self, evaluation: NewEvaluation) -> Result<Recorded> {
        let (reply, answer) = oneshot::channel();
        let data = evaluation.event_data();
        let entry = Entry::Evaluation(evaluation, data);
        self.send(entry, Reply::Evaluation(reply)).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn append(&self, tenant: Tenant, events: Vec<NewAuditEvent>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Entry::Audit(tenant, events), Reply::Audit(reply))
            .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn send(&self, entry: Entry, reply: Reply) -> Result<()> {
        self.jobs
            .send(Msg::Job(Job { entry, reply }))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Stops taking new evaluations, writes every queued one, and waits for the writer.
    pub(crate) async fn shutdown(&self) {
        let _ = self.jobs.send(Msg::Stop).await;
        if let Some(ended) = self.ended.lock().await.take() {
            let _ = ended.await;
        }
    }
}

/// Adds `first` and whatever else is queued, up to `max`, to the batch; a `Stop` closes the
/// queue (what is already in it is still taken, then the receiver reports the end).
fn fill(rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Job>, first: Msg, max: usize) {
    let mut next = Some(first);
    while let Some(msg) = next {
        match msg {
            Msg::Job(job) => batch.push(job),
            Msg::Stop => rx.close(),
        }
        if batch.len() >= max {
            break;
        }
        next = rx.try_recv().ok();
    }
    // One lock order for every writer, so concurrent batches on PostgreSQL cannot deadlock.
    batch.sort_by(|a, b| {
        let (a, b) = (a.entry.tenant(), b.entry.tenant());
        a.workspace_id().cmp(b.workspace_id())
    });
}

/// A caller waiting, and what to tell it once the batch is durable.
type Answer = (Reply, Result<Recorded>);

/// Writes one batch in one transaction.
trait Writer {
    fn write(&mut self, entries: &[&Entry]) -> impl Future<Output = Result<Vec<Recorded>>>;
}

/// Writes the batch, or, when that fails, each evaluation on its own, so one bad evaluation
/// does not fail the others. Returns what to answer; the batch is left empty.
async fn write_batch(writer: &mut impl Writer, batch: &mut Vec<Job>) -> (Vec<Answer>, bool) {
    metrics::histogram!("agentnexus_store_commit_batch_size").record(batch.len() as f64);
    let queues_jobs = batch.iter().any(|j| match &j.entry {
        Entry::Evaluation(ev, _) => ev.webhook_url.is_some() || !ev.notices.is_empty(),
        Entry::Audit(..) => false,
    });
    let entries: Vec<&Entry> = batch.iter().map(|j| &j.entry).collect();
    let written = writer.write(&entries).await;
    drop(entries);
    let answers = match written {
        Ok(results) => batch
            .drain(..)
            .zip(results)
            .map(|(job, result)| (job.reply, Ok(result)))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "batch write failed; retrying singly");
            let mut answers = Vec::with_capacity(batch.len());
            for job in batch.drain(..) {
                let result = writer.write(&[&job.entry]).await.map(|mut r| r.remove(0));
                answers.push((job.reply, result));
            }
            answers
        }
    };
    (answers, queues_jobs)
}

fn answer(answers: Vec<Answer>, queues_jobs: bool, jobs_ready: &Notify) {
    for (reply, result) in answers {
        // A caller that went away (its request was dropped) needs no answer.
        match reply {
            Reply::Evaluation(reply) => drop(reply.send(result)),
            Reply::Audit(reply) => drop(reply.send(result.map(|_| ()))),
        }
    }
    // Wake this process's delivery worker for the jobs just committed.
    if queues_jobs {
        jobs_ready.notify_one();
    }
}

/// What a batch writes, on either driver, inside a transaction the caller opened. An entry of
/// audit events only is answered `Created` once written.
/// `memory` is what the writer knows of each workspace's chain (see [`Memory`]): taken up as
/// each head is locked, handed back after it is saved; the caller forgets it all if the
/// transaction then fails.
async fn write_rows(
    conn: &mut impl Exec,
    entries: &[&Entry],
    memory: &mut Memory,
) -> Result<Vec<Recorded>> {
    let mut chains: Vec<(Chain, Tracker)> = Vec::new();
    let mut pending = crate::evaluations::Pending::default();
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let ws = entry.tenant().workspace_id();
        // Entries come sorted by workspace: lock each workspace's head once, in order.
        if chains.last().is_none_or(|(c, _)| c.workspace_id() != ws) {
            let chain = Chain::lock_for_writer(conn, ws).await?;
            let tracker = Tracker::for_chain(&chain, memory);
            chains.push((chain, tracker));
        }
        let (chain, tracker) = chains.last_mut().expect("locked above");
        results.push(match entry {
            Entry::Evaluation(ev, data) => {
                crate::evaluations::insert(conn, chain, tracker, ev, data, &mut pending).await?
            }
            Entry::Audit(_, events) => {
                for event in events {
                    chain.append(event);
                }
                Recorded::Created
            }
        });
    }
    // Evaluations first: their audit events, stages and jobs refer to them.
    pending.flush(conn).await?;
    for (chain, tracker) in &mut chains {
        chain.save(conn).await?;
        crate::listing::catch_up_if_due(conn, chain, tracker).await?;
    }
    for (chain, tracker) in chains {
        tracker.remember(&chain, memory);
    }
    Ok(results)
}

// --- PostgreSQL (and SQLite in memory): a task, sqlx, a commit that syncs ---

struct SqlxWriter {
    pool: AnyPool,
    /// One connection for every batch while it works; let go when a write fails, in case the
    /// failure was the connection's.
    held: Option<PoolConnection<Any>>,
    memory: Memory,
}

impl Writer for SqlxWriter {
    async fn write(&mut self, entries: &[&Entry]) -> Result<Vec<Recorded>> {
        let conn = match &mut self.held {
            Some(c) => c,
            None => self.held.insert(self.pool.acquire().await?),
        };
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut **conn).await?;
            let results = write_rows(&mut *tx, entries, &mut self.memory).await?;
            tx.commit().await?;
            Ok(results)
        }
        .await;
        if result.is_err() {
            self.held = None;
            self.memory.forget();
        }
        result
    }
}

async fn task_loop(
    mut writer: SqlxWriter,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    jobs_ready: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        fill(&mut rx, &mut batch, first, max_batch);
        if batch.is_empty() {
            continue;
        }
        let (answers, queues_jobs) = write_batch(&mut writer, &mut batch).await;
        answer(answers, queues_jobs, &jobs_ready);
    }
}

// --- A SQLite file: a thread, rusqlite, and the WAL synced beside it ---

struct SqliteWriter {
    conn: rusqlite::Connection,
    memory: Memory,
}

impl SqliteWriter {
    fn open(file: &Path) -> Result<SqliteWriter> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As the pool's connections (see `Store::open`), except `synchronous`: the syncing
        // thread does what FULL would do at commit.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = {};",
            crate::WAL_AUTOCHECKPOINT
        ))?;
        // Multi-row INSERTs come in a shape per batch size: keep them all prepared.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(SqliteWriter {
            conn,
            memory: Memory::default(),
        })
    }
}

impl Writer for SqliteWriter {
    async fn write(&mut self, entries: &[&Entry]) -> Result<Vec<Recorded>> {
        // IMMEDIATE: take the write lock now (waiting out other writers under busy_timeout),
        // not at the first write, where a stale read snapshot would fail without waiting.
        // Prepared once (`execute_batch` parsed them for every commit).
        let run = |conn: &rusqlite::Connection, sql| conn.prepare_cached(sql)?.execute([]);
        run(&self.conn, "BEGIN IMMEDIATE")?;
        let result = match write_rows(&mut self.conn, entries, &mut self.memory).await {
            Ok(results) => run(&self.conn, "COMMIT")
                .map(|_| results)
                .map_err(StoreError::from),
            Err(e) => Err(e),
        };
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if result.is_err() {
            self.memory.forget();
        }
        result
    }
}

/// Runs a future that never waits (rusqlite's statements complete when called) to its end.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the SQLite writer's statements never wait"),
    }
}

/// Commits between background checkpoints: at the WAL frames a loaded batch writes, about a
/// quarter of `WAL_AUTOCHECKPOINT`. More often copies the pages every commit rewrites more
/// often; less often lets the writer's own checkpoints grow (docs/performance.md).
const CHECKPOINT_EVERY: u64 = 64;

fn sqlite_loop(
    mut writer: SqliteWriter,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    file: &Path,
    jobs_ready: Arc<Notify>,
) {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    // A few batches may wait for the sync; then the writer waits too.
    let (to_sync, synced) = std::sync::mpsc::sync_channel(4);
    let syncer = std::thread::Builder::new()
        .name("anx-wal-sync".into())
        .spawn(move || sync_loop(&wal, synced, &jobs_ready))
        .expect("starting the WAL syncing thread");
    // One checkpoint asked for at a time; a tick while one runs is dropped.
    let (tick, ticks) = std::sync::mpsc::sync_channel(1);
    let db = file.to_path_buf();
    let checkpointer = std::thread::Builder::new()
        .name("anx-checkpoint".into())
        .spawn(move || checkpoint_loop(&db, ticks))
        .expect("starting the checkpointing thread");
    let mut commits = 0u64;
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        fill(&mut rx, &mut batch, first, max_batch);
        if batch.is_empty() {
            continue;
        }
        let written = now(write_batch(&mut writer, &mut batch));
        if to_sync.send(written).is_err() {
            // The syncing thread is gone (it panicked): nothing more can be made durable.
            break;
        }
        commits += 1;
        if commits.is_multiple_of(CHECKPOINT_EVERY) {
            let _ = tick.try_send(());
        }
    }
    drop(to_sync);
    let _ = syncer.join();
    drop(tick);
    let _ = checkpointer.join();
}

/// Copies the WAL into the database file when ticked, beside the writer. PASSIVE takes no lock
/// the writer or a reader waits for: it copies the frames no reader still needs, syncing the
/// WAL before and the database file after, as every checkpoint does.
fn checkpoint_loop(file: &Path, ticks: std::sync::mpsc::Receiver<()>) {
    use rusqlite::OpenFlags;
    let conn = match rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => conn,
        Err(e) => {
            // The writer's own checkpoints still keep the WAL bounded.
            tracing::error!(error = %e, "opening the checkpointing connection failed");
            return;
        }
    };
    while ticks.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

/// Takes every batch committed since the last sync, syncs the WAL once, then answers them.
fn sync_loop(
    wal: &Path,
    batches: std::sync::mpsc::Receiver<(Vec<Answer>, bool)>,
    jobs_ready: &Notify,
) {
    let mut waiting = Vec::new();
    while let Ok(first) = batches.recv() {
        waiting.push(first);
        waiting.extend(batches.try_iter());
        // Opened for each sync, so it is always the file SQLite writes now.
        let synced = std::fs::File::open(wal).and_then(|f| f.sync_data());
        if let Err(e) = &synced {
            tracing::error!(error = %e, wal = %wal.display(), "syncing the WAL failed");
        }
        for (answers, queues_jobs) in waiting.drain(..) {
            let answers = answers
                .into_iter()
                .map(|(reply, result)| match &synced {
                    Ok(()) => (reply, result),
                    Err(e) => (reply, Err(StoreError::Sync(e.to_string()))),
                })
                .collect();
            answer(answers, queues_jobs, jobs_ready);
        }
    }
}
