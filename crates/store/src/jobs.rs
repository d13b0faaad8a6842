//! The durable job queue (a transactional outbox). A job is written in the same transaction
//! as the state change that causes it; workers claim due jobs under a lease (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, the database write lock on SQLite), so several servers never work
//! on one job at once, and a crashed worker's jobs are taken again when their lease expires.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::Chain;
use crate::{
    Actor, Backend, EventKind, JobKind, Message, NewAuditEvent, NewEvaluation, Result, Status,
    Store, StoreError, Tenant, WebhookEvent, from_micros, micros, new_id, timestamp_text,
};

/// A claimed job, held under a lease by one worker.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub tenant: Tenant,
    pub kind: JobKind,
    pub evaluation_id: Option<String>,
    pub message: Message,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    /// Where the retry schedule counts from: when the job was queued, or when it was last
    /// retried by hand after it was given up.
    pub scheduled_from: DateTime<Utc>,
    /// Attempts made before that retry (none when it never was).
    pub attempts_before_retry: i64,
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: i64,
    pub attempted_at: String,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// At most 1 KiB of what the receiver answered.
    pub response_body: Option<String>,
}

/// Where a job goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    RetryAt(DateTime<Utc>),
    /// Given up: the retry horizon passed, or retrying cannot help.
    Dead,
}

/// A job as an integrator sees it: what it carries and every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub message: Message,
    /// `queued`, `running`, `done` or `dead`.
    pub status: String,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub attempts: Vec<Attempt>,
}

/// One performed attempt, ready to record.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: Job,
    pub attempt: Attempt,
    pub next: Next,
    /// The audit event's data: what was attempted, where.
    pub summary: Value,
    pub at: DateTime<Utc>,
}

async fn finish(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    worker: &str,
    f: &Finished,
) -> Result<()> {
    let (job, attempt) = (&f.job, &f.attempt);
    let ws = job.tenant.workspace_id();
    let (status, next_at) = match f.next {
        Next::Done => ("done", None),
        Next::RetryAt(at) => ("queued", Some(at)),
        Next::Dead => ("dead", None),
    };
    // Only the lease holder moves the job on; a worker that lost its lease (it stalled past
    // it) still records what it did, but another worker now owns the job.
    sqlx::query(
        "UPDATE jobs SET status = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
         lease_until = NULL, locked_by = NULL, last_error = $5, updated_at = $6 \
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(&job.id)
    .bind(worker)
    .bind(status)
    .bind(next_at.map(micros))
    .bind(attempt.error.as_deref())
    .bind(micros(f.at))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO delivery_attempts (job_id, attempt, workspace_id, attempted_at, \
         status_code, latency_ms, error, response_body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(&job.id)
    .bind(job.attempts)
    .bind(ws)
    .bind(micros(f.at))
    .bind(attempt.status_code.map(i64::from))
    .bind(attempt.latency_ms)
    .bind(attempt.error.as_deref())
    .bind(attempt.response_body.as_deref())
    .execute(&mut *conn)
    .await?;
    let mut data = f.summary.clone();
    if let Some(d) = data.as_object_mut() {
        d.insert("job_id".into(), json!(job.id));
        d.insert("attempt".into(), json!(job.attempts));
        d.insert("status_code".into(), json!(attempt.status_code));
        d.insert("latency_ms".into(), json!(attempt.latency_ms));
        d.insert("error".into(), json!(attempt.error));
        d.insert("outcome".into(), json!(status));
        d.insert("next_attempt_at".into(), json!(next_at.map(timestamp_text)));
    }
    chain.append(&NewAuditEvent {
        kind: job.kind.attempted_event(),
        actor: Actor::System,
        evaluation_id: job.evaluation_id.clone(),
        data,
        occurred_at: f.at,
    });
    Ok(())
}

/// Writes a job in the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut impl crate::exec::Exec,
    workspace_id: &str,
    evaluation_id: Option<&str>,
    message: &Message,
    now: DateTime<Utc>,
) -> Result<String> {
    let id = new_id("msg");
    conn.execute(
        "INSERT INTO jobs (id, workspace_id, kind, evaluation_id, payload, status, attempts, \
         next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6, $6)",
        &[
            (&id).into(),
            workspace_id.into(),
            message.kind().as_str().into(),
            evaluation_id.into(),
            serde_json::to_string(message)?.into(),
            micros(now).into(),
        ],
    )
    .await?;
    Ok(id)
}

/// The webhook a new evaluation sends, if it names a `webhook_url`: `approval_required` when
/// a human stage starts waiting, else `terminal_outcome` (an immediate allow or deny).
pub(crate) fn first_webhook(ev: &NewEvaluation) -> Option<Message> {
    let url = ev.webhook_url.as_ref()?;
    let status = Status::initial(ev.decision);
    let event = match (status, ev.stage_records().into_iter().next()) {
        (Status::Pending, Some(stage)) => WebhookEvent::approval_required(
            &ev.id,
            stage.index,
            &stage.name,
            stage.expires_at,
            ev.created_at,
        ),
        _ => WebhookEvent::TerminalOutcome {
            evaluation_id: ev.id.clone(),
            status,
            reason: ev.reason.clone(),
            decisions: Vec::new(),
            occurred_at: ev.created_at,
        },
    };
    Some(Message::Webhook {
        url: url.clone(),
        event,
    })
}

const JOB_COLUMNS: &str = "id, workspace_id, kind, evaluation_id, payload, attempts, created_at, \
     COALESCE(retried_at, created_at) AS scheduled_from, attempts_before_retry";

fn job_kind(row: &AnyRow) -> Result<JobKind> {
    let kind: String = row.try_get("kind")?;
    JobKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("job kind {kind}")))
}

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let kind = job_kind(row)?;
    let payload: String = row.try_get("payload")?;
    Ok(Job {
        id: row.try_get("id")?,
        tenant: Tenant::new(row.try_get("workspace_id")?),
        kind,
        evaluation_id: row.try_get("evaluation_id")?,
        message: Message::from_stored(kind, &payload)?,
        attempts: row.try_get("attempts")?,
        created_at: from_micros(row.try_get("created_at")?),
        scheduled_from: from_micros(row.try_get("scheduled_from")?),
        attempts_before_retry: row.try_get("attempts_before_retry")?,
    })
}

impl Store {
    /// Claims up to `limit` due jobs for `worker` until `now + lease`: queued jobs whose time
    /// has come, and running jobs whose worker's lease ran out (it crashed).
    ///
    /// Fair between workspaces: due jobs are taken round-robin (every workspace's first due
    /// job, then every second one, …), and none is taken for a workspace that already has
    /// `per_workspace` jobs running on any server. So a workspace queueing thousands of
    /// webhooks to a slow endpoint holds at most `per_workspace` delivery slots, and the next
    /// approval e-mail of another workspace is claimed as soon as any slot is free.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
        per_workspace: u32,
    ) -> Result<Vec<Job>> {
        let lock = match self.backend {
            // Rows are locked where the limit is taken, so a claimer skips the rows another
            // one holds and takes the next ones; the due conditions are repeated on the locked
            // table, which PostgreSQL checks again on a row another claimer changed meanwhile,
            // so no job is claimed twice.
            Backend::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            // SQLite runs one write at a time: the UPDATE below is atomic as it stands.
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', locked_by = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 WHERE id IN (SELECT j.id FROM jobs j \
             JOIN (SELECT id, workspace_id, ROW_NUMBER() OVER (PARTITION BY workspace_id \
             ORDER BY next_attempt_at, id) AS turn FROM jobs \
             WHERE (status = 'queued' AND next_attempt_at <= $3) \
             OR (status = 'running' AND lease_until < $3)) due ON due.id = j.id \
             LEFT JOIN (SELECT workspace_id, COUNT(*) AS n FROM jobs \
             WHERE status = 'running' AND lease_until >= $3 GROUP BY workspace_id) busy \
             ON busy.workspace_id = due.workspace_id \
             WHERE due.turn + COALESCE(busy.n, 0) <= $5 \
             AND ((j.status = 'queued' AND j.next_attempt_at <= $3) \
             OR (j.status = 'running' AND j.lease_until < $3)) \
             ORDER BY due.turn, j.next_attempt_at, j.id LIMIT $4{lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(micros(now + lease))
            .bind(micros(now))
            .bind(i64::from(limit))
            .bind(i64::from(per_workspace.max(1)))
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            match job_from_row(row) {
                Ok(job) => jobs.push(job),
                // One job that cannot be read must not hold up the queue: it is given up,
                // saying why, and the others run.
                Err(e) => {
                    let id: String = row.try_get("id")?;
                    tracing::error!(job = %id, error = %e, "a job cannot be read; it is given up");
                    sqlx::query(
                        "UPDATE jobs SET status = 'dead', lease_until = NULL, locked_by = NULL, \
                         last_error = $2 WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(format!("the job cannot be read: {e}"))
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(jobs)
    }

    /// The workspaces with at least `limit` jobs not yet ended (queued or running): those may
    /// queue no more webhooks until some end.
    pub async fn workspaces_with_full_queues(&self, limit: u32) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(
            "SELECT workspace_id FROM jobs WHERE status IN ('queued', 'running') \
             GROUP BY workspace_id HAVING COUNT(*) >= $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(Tenant::new(r.try_get("workspace_id")?)))
            .collect()
    }

    /// Records attempts (a row and an audit event each) and moves their jobs on, all in one
    /// transaction: a worker finishing many deliveries pays for one commit.
    pub async fn finish_jobs(&self, worker: &str, finished: &[Finished]) -> Result<()> {
        let mut order: Vec<&Finished> = finished.iter().collect();
        // One lock order for every writer, as in the evaluation writer.
        order.sort_by(|a, b| a.job.tenant.workspace_id().cmp(b.job.tenant.workspace_id()));
        let mut tx = self.pool.begin().await?;
        let mut chain: Option<Chain> = None;
        for f in order {
            let ws = f.job.tenant.workspace_id();
            if chain.as_ref().is_none_or(|c| c.workspace_id() != ws) {
                if let Some(mut done) = chain.take() {
                    done.save(&mut tx).await?;
                }
                chain = Some(Chain::lock(&mut tx, ws).await?);
            }
            let chain = chain.as_mut().expect("locked above");
            finish(&mut tx, chain, worker, f).await?;
        }
        if let Some(mut done) = chain {
            done.save(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the next job falls due (a queued job's time, or a running job's lease end).
    pub async fn next_job_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(t) AS next_at FROM (SELECT MIN(next_attempt_at) AS t FROM jobs \
             WHERE status = 'queued' UNION ALL SELECT MIN(lease_until) AS t FROM jobs \
             WHERE status = 'running') due",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("next_at")?.map(from_micros))
    }

    /// Every job of an evaluation with its attempts, oldest first.
    pub async fn deliveries(&self, tenant: &Tenant, evaluation_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, kind, payload, status, next_attempt_at, created_at FROM jobs \
             WHERE evaluation_id = $1 AND workspace_id = $2 ORDER BY created_at, id",
        )
        .bind(evaluation_id)
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        self.delivery_views(&rows).await
    }

    /// One job of the workspace with its attempts.
    pub async fn delivery(&self, tenant: &Tenant, id: &str) -> Result<Option<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, kind, payload, status, next_attempt_at, created_at FROM jobs \
             WHERE id = $1 AND workspace_id = $2",
        )
        .bind(id)
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        Ok(self.delivery_views(&rows).await?.pop())
    }

    /// Queues a delivery that was given up (dead) again, due now, with a fresh retry schedule;
    /// audited. No such delivery in the workspace is [`StoreError::NotFound`]; another status is
    /// a conflict: a delivery still queued or running is already being tried, one done was
    /// delivered.
    pub async fn retry_delivery(
        &self,
        tenant: &Tenant,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let row = sqlx::query(
                "SELECT kind, evaluation_id, status, attempts FROM jobs \
                 WHERE id = $1 AND workspace_id = $2",
            )
            .bind(id)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            let status: String = row.try_get("status")?;
            if status != "dead" {
                return Err(StoreError::Conflict(format!(
                    "the delivery is {status}: only one that was given up (dead) can be retried"
                )));
            }
            let attempts: i64 = row.try_get("attempts")?;
            sqlx::query(
                "UPDATE jobs SET status = 'queued', next_attempt_at = $3, retried_at = $3, \
                 attempts_before_retry = attempts, updated_at = $3 \
                 WHERE id = $1 AND workspace_id = $2 AND status = 'dead'",
            )
            .bind(id)
            .bind(ws)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::DeliveryRetried,
                actor: actor.clone(),
                evaluation_id: row.try_get("evaluation_id")?,
                data: json!({
                    "job_id": id,
                    "kind": row.try_get::<String, _>("kind")?,
                    "attempts_before": attempts,
                }),
                occurred_at: now,
            });
            Ok(())
        })
        .await
        .inspect(|()| self.jobs_ready.notify_one())
    }

    async fn delivery_views(&self, rows: &[AnyRow]) -> Result<Vec<Delivery>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let payload: String = row.try_get("payload")?;
            let status: String = row.try_get("status")?;
            let attempts = sqlx::query(
                "SELECT attempt, attempted_at, status_code, latency_ms, error, response_body \
                 FROM delivery_attempts WHERE job_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(Attempt {
                    attempt: a.try_get("attempt")?,
                    attempted_at: timestamp_text(from_micros(a.try_get("attempted_at")?)),
                    status_code: a
                        .try_get::<Option<i64>, _>("status_code")?
                        .and_then(|c| u16::try_from(c).ok()),
                    latency_ms: a.try_get("latency_ms")?,
                    error: a.try_get("error")?,
                    response_body: a.try_get("response_body")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            out.push(Delivery {
                message: Message::from_stored(job_kind(row)?, &payload)?,
                next_attempt_at: (status == "queued")
                    .then(|| {
                        row.try_get::<i64, _>("next_attempt_at")
                            .map(|t| timestamp_text(from_micros(t)))
                    })
                    .transpose()?,
                status,
                created_at: timestamp_text(from_micros(row.try_get("created_at")?)),
                id,
                attempts,
            });
        }
        Ok(out)
    }

    /// Counts of jobs by status, for tests and metrics.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

/// The webhook signing secrets of a workspace, kept encrypted by the caller.
impl Store {
    /// The current secret's ciphertext, if the workspace has one.
    pub async fn current_webhook_secret(&self, tenant: &Tenant) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT secret FROM webhook_secrets WHERE workspace_id = $1 AND expires_at IS NULL",
        )
        .bind(tenant.workspace_id())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("secret")).transpose()?)
    }

    /// Every secret that signs now: the current one and those rotated less than their grace
    /// period ago, newest first.
    pub async fn signing_webhook_secrets(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT secret FROM webhook_secrets WHERE workspace_id = $1 \
             AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.workspace_id())
        .bind(micros(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("secret")?)).collect()
    }

    /// Stores a first secret unless one exists; answers the current one's ciphertext.
    pub async fn ensure_webhook_secret(
        &self,
        tenant: &Tenant,
        ciphertext: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let inserted = sqlx::query(
            "INSERT INTO webhook_secrets (id, workspace_id, secret, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id) WHERE expires_at IS NULL DO NOTHING",
        )
        .bind(new_id("whs"))
        .bind(tenant.workspace_id())
        .bind(ciphertext)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return self
                .current_webhook_secret(tenant)
                .await?
                .ok_or(StoreError::NotFound);
        }
        Ok(ciphertext.to_owned())
    }

    /// Makes `ciphertext` the current secret; the previous one keeps signing for `grace`.
    /// Answers when the previous one stops.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &Tenant,
        ciphertext: &str,
        grace: Duration,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let ws = tenant.workspace_id();
        let until = now + grace;
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "UPDATE webhook_secrets SET expires_at = $2 WHERE workspace_id = $1 AND expires_at IS NULL",
            )
            .bind(ws)
            .bind(micros(until))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO webhook_secrets (id, workspace_id, secret, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(new_id("whs"))
            .bind(ws)
            .bind(ciphertext)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::WebhookSecretRotated,
                actor,
                evaluation_id: None,
                data: json!({"previous_expires_at": timestamp_text(until)}),
                occurred_at: now,
            });
            Ok(until)
        })
        .await
    }
}
