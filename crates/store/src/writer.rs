//! Group commit for evaluations: one task takes every evaluation waiting to be recorded,
//! writes the lot in one transaction (evaluation, stages, idempotency key, cost, audit event
//! for each) and answers each request only after that transaction has committed. Many
//! evaluations share one fsync; none is acknowledged before its audit event is durable.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::audit::Chain;
use crate::{NewEvaluation, Recorded, Result, StoreError};

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

struct Job {
    evaluation: NewEvaluation,
    reply: oneshot::Sender<Result<Recorded>>,
}

#[derive(Clone)]
pub(crate) struct Handle {
    jobs: mpsc::Sender<Job>,
    shutdown: watch::Sender<bool>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Handle {
    pub(crate) fn spawn(pool: AnyPool, config: WriterConfig, jobs_ready: Arc<Notify>) -> Handle {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let max_batch = config.max_batch.max(1);
        let task = tokio::spawn(run(pool, rx, shutdown_rx, max_batch, jobs_ready));
        Handle {
            jobs,
            shutdown,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    pub(crate) async fn record(&self, evaluation: NewEvaluation) -> Result<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { evaluation, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops taking new evaluations, writes every queued one, and waits for the task.
    pub(crate) async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(
    pool: AnyPool,
    mut rx: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
    max_batch: usize,
    jobs_ready: Arc<Notify>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    // One connection for every batch while it works: SQLite keeps a connection's page cache
    // only while no other connection writes, so a warm one spares re-reading the pages every
    // commit touches (index leaves, the tables' last pages).
    let mut conn: Option<PoolConnection<Any>> = None;
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => job,
            _ = shutdown.wait_for(|stop| *stop) => {
                // Refuse new work; what is queued is still taken, then `recv` ends the loop.
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One lock order for every writer, so concurrent batches on PostgreSQL cannot deadlock.
        batch.sort_by(|a, b| {
            a.evaluation
                .tenant
                .workspace_id()
                .cmp(b.evaluation.tenant.workspace_id())
        });
        metrics::histogram!("agentnexus_store_commit_batch_size").record(batch.len() as f64);
        let evaluations: Vec<&NewEvaluation> = batch.iter().map(|j| &j.evaluation).collect();
        let queues_jobs = evaluations
            .iter()
            .any(|e| e.webhook_url.is_some() || !e.notices.is_empty());
        match write(&pool, &mut conn, &evaluations).await {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            Err(e) => {
                // One bad evaluation must not fail the others: retry each on its own.
                tracing::warn!(error = %e, size = batch.len(), "batch write failed; retrying singly");
                for job in batch.drain(..) {
                    let result = write(&pool, &mut conn, &[&job.evaluation])
                        .await
                        .map(|mut r| r.remove(0));
                    let _ = job.reply.send(result);
                }
            }
        }
        // Wake this process's delivery worker for the jobs just committed.
        if queues_jobs {
            jobs_ready.notify_one();
        }
    }
}

/// Writes a batch on the held connection (acquired when there is none); a connection whose
/// write failed is let go, in case the failure was the connection's.
async fn write(
    pool: &AnyPool,
    held: &mut Option<PoolConnection<Any>>,
    evaluations: &[&NewEvaluation],
) -> Result<Vec<Recorded>> {
    let conn = match held {
        Some(c) => c,
        None => held.insert(pool.acquire().await?),
    };
    let result = write_on(conn, evaluations).await;
    if result.is_err() {
        *held = None;
    }
    result
}

async fn write_on(
    conn: &mut PoolConnection<Any>,
    evaluations: &[&NewEvaluation],
) -> Result<Vec<Recorded>> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    let mut chains: Vec<Chain> = Vec::new();
    let mut pending = crate::evaluations::Pending::default();
    let mut results = Vec::with_capacity(evaluations.len());
    for ev in evaluations {
        let ws = ev.tenant.workspace_id();
        // Evaluations come sorted by workspace: lock each workspace's head once, in order.
        if chains.last().is_none_or(|c| c.workspace_id() != ws) {
            chains.push(Chain::lock(&mut tx, ws).await?);
        }
        let chain = chains.last_mut().expect("locked above");
        results.push(crate::evaluations::insert(&mut tx, chain, ev, &mut pending).await?);
    }
    // Evaluations first: their audit events, stages and jobs refer to them.
    pending.flush(&mut tx).await?;
    for chain in &mut chains {
        chain.save(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(results)
}
