//! Human decisions on pending evaluations (SPEC §5): secure links, one-time codes, stages.
//!
//! Every decision runs in one transaction that first locks the workspace's audit head, so two
//! approvers clicking at once (on one server or several) are decided one after the other,
//! and a stage is never decided twice.

use agentnexus_engine::approval::{
    self, Ballot, CodeCheck, CodeRequest, Outcome, StageState, Transition, Vote,
};
use agentnexus_engine::{OnTimeout, Tier};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use crate::agents::{halt_from_row, halt_reason};
use crate::audit::Chain;
use crate::jobs::enqueue;
use crate::{
    Actor, ApprovalRule, EventKind, HumanDecision, Message, NewAuditEvent, NewLink, Notice, Result,
    StageStatus, Status, Store, StoreError, Tenant, WebhookEvent, from_micros, micros,
};

pub use agentnexus_engine::approval::{CODES_PER_LINK, WRONG_CODES_PER_LINK};

pub(crate) async fn insert_link(
    conn: &mut impl crate::exec::Exec,
    workspace_id: &str,
    evaluation_id: &str,
    stage: i64,
    link: &NewLink,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO approval_links (token_hash, workspace_id, evaluation_id, stage_idx, approver, \
         expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            (&link.token_hash).into(),
            workspace_id.into(),
            evaluation_id.into(),
            stage.into(),
            (&link.approver).into(),
            micros(link.expires_at).into(),
            micros(now).into(),
        ],
    )
    .await?;
    Ok(())
}

/// Stores the notices' links and queues their messages.
async fn queue_notices(
    conn: &mut AnyConnection,
    workspace_id: &str,
    evaluation_id: &str,
    stage: i64,
    notices: &[Notice],
    now: DateTime<Utc>,
) -> Result<()> {
    for notice in notices {
        if let Some(link) = &notice.link {
            insert_link(conn, workspace_id, evaluation_id, stage, link, now).await?;
        }
        for message in &notice.messages {
            enqueue(conn, workspace_id, Some(evaluation_id), message, now).await?;
        }
    }
    Ok(())
}

/// What the evaluation a stage change happens in is, for the rows and events it writes.
pub(crate) struct Flow<'a> {
    pub workspace_id: &'a str,
    pub evaluation_id: &'a str,
    pub webhook_url: Option<&'a str>,
    pub actor: Actor,
    pub now: DateTime<Utc>,
}

impl Flow<'_> {
    /// Queues an event for the evaluation's `webhook_url`, when it has one.
    async fn queue_webhook(&self, conn: &mut AnyConnection, event: WebhookEvent) -> Result<()> {
        if let Some(url) = self.webhook_url {
            let message = Message::Webhook {
                url: url.to_owned(),
                event,
            };
            let id = Some(self.evaluation_id);
            enqueue(conn, self.workspace_id, id, &message, self.now).await?;
        }
        Ok(())
    }
}

/// Starts stage `idx`: waiting with its deadline running, its people's links and e-mails,
/// `stage.started`, and `approval_required` to the integrator.
async fn start_stage(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    f: &Flow<'_>,
    idx: i64,
    notices: &[Notice],
    data: Value,
) -> Result<()> {
    let stage = sqlx::query(
        "SELECT name, timeout_secs FROM evaluation_stages WHERE evaluation_id = $1 AND idx = $2",
    )
    .bind(f.evaluation_id)
    .bind(idx)
    .fetch_one(&mut *conn)
    .await?;
    let name: String = stage.try_get("name")?;
    let timeout: Option<i64> = stage.try_get("timeout_secs")?;
    let expires = timeout.map(|t| deadline(f.now, t)).transpose()?;
    sqlx::query(
        "UPDATE evaluation_stages SET status = 'waiting', started_at = $3, expires_at = $4 \
         WHERE evaluation_id = $1 AND idx = $2",
    )
    .bind(f.evaluation_id)
    .bind(idx)
    .bind(micros(f.now))
    .bind(expires.map(micros))
    .execute(&mut *conn)
    .await?;
    queue_notices(conn, f.workspace_id, f.evaluation_id, idx, notices, f.now).await?;
    let mut data = data;
    data["stage"] = json!(idx);
    data["name"] = json!(name);
    chain.append(&NewAuditEvent {
        kind: EventKind::StageStarted,
        actor: f.actor.clone(),
        evaluation_id: Some(f.evaluation_id.to_owned()),
        data,
        occurred_at: f.now,
    });
    if f.webhook_url.is_some() {
        let event = WebhookEvent::approval_required(f.evaluation_id, idx, &name, expires, f.now);
        f.queue_webhook(conn, event).await?;
    }
    Ok(())
}

/// When a stage started `now` with a timeout of `secs` ends. Timeouts are at most 365 days
/// (the engine refuses longer ones), but a stored row is checked all the same: arithmetic
/// that could overflow is an error for this stage, never a panic for the whole sweep.
fn deadline(now: DateTime<Utc>, secs: i64) -> Result<DateTime<Utc>> {
    approval::deadline(now, secs)
        .ok_or_else(|| StoreError::Corrupt(format!("a stage timeout of {secs} s is out of range")))
}

/// The evaluation is final: its audit event and `terminal_outcome` with the decisions.
async fn conclude(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    f: &Flow<'_>,
    outcome: Outcome,
    reason: &str,
) -> Result<()> {
    let (kind, status) = match outcome {
        Outcome::Approved => (EventKind::EvaluationApproved, Status::Approved),
        Outcome::Rejected => (EventKind::EvaluationRejected, Status::Rejected),
        Outcome::Expired => (EventKind::EvaluationExpired, Status::Expired),
    };
    chain.append(&NewAuditEvent {
        kind,
        actor: f.actor.clone(),
        evaluation_id: Some(f.evaluation_id.to_owned()),
        data: json!({"status": status, "reason": reason}),
        occurred_at: f.now,
    });
    sqlx::query(
        "UPDATE evaluations SET status = $2, reason = $3, current_stage = NULL, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(f.evaluation_id)
    .bind(status.as_str())
    .bind(reason)
    .bind(micros(f.now))
    .execute(&mut *conn)
    .await?;
    if f.webhook_url.is_some() {
        let event = WebhookEvent::TerminalOutcome {
            evaluation_id: f.evaluation_id.to_owned(),
            status,
            reason: reason.to_owned(),
            decisions: decisions(&mut *conn, f.evaluation_id).await?,
            occurred_at: f.now,
        };
        f.queue_webhook(conn, event).await?;
    }
    Ok(())
}

/// Ends a stage as the state machine said.
async fn end_stage(
    conn: &mut AnyConnection,
    evaluation_id: &str,
    stage: i64,
    status: StageStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE evaluation_stages SET status = $3, decided_at = $4 \
         WHERE evaluation_id = $1 AND idx = $2",
    )
    .bind(evaluation_id)
    .bind(stage)
    .bind(status.as_str())
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A waiting stage as the state machine sees it: its quorum, its approvals so far, its
/// timeout and whether a stage follows.
async fn stage_state(
    conn: &mut AnyConnection,
    evaluation_id: &str,
    stage: i64,
) -> Result<StageState> {
    let row = sqlx::query(
        "SELECT required, on_timeout, \
         (SELECT COUNT(*) FROM approval_decisions WHERE evaluation_id = $1 AND stage_idx = $2 \
         AND decision = 'approve') AS approvals, \
         (SELECT COUNT(*) FROM evaluation_stages WHERE evaluation_id = $1 AND idx = $2 + 1) \
         AS later FROM evaluation_stages WHERE evaluation_id = $1 AND idx = $2",
    )
    .bind(evaluation_id)
    .bind(stage)
    .fetch_one(&mut *conn)
    .await?;
    Ok(StageState {
        index: stage,
        required: row.try_get("required")?,
        approvals: row.try_get("approvals")?,
        on_timeout: on_timeout(&row.try_get::<String, _>("on_timeout")?),
        has_next: row.try_get::<i64, _>("later")? > 0,
    })
}

/// A stored `on_timeout`: `escalate`, or `reject` (the default).
fn on_timeout(stored: &str) -> OnTimeout {
    match stored {
        "escalate" => OnTimeout::Escalate,
        _ => OnTimeout::Reject,
    }
}

/// The human decisions on an evaluation, oldest first.
pub(crate) async fn decisions<'e, E>(executor: E, evaluation_id: &str) -> Result<Vec<HumanDecision>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT stage_idx, approver, decision, comment, decided_at FROM approval_decisions \
         WHERE evaluation_id = $1 ORDER BY decided_at, stage_idx, approver",
    )
    .bind(evaluation_id)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HumanDecision {
                stage: r.try_get("stage_idx")?,
                approver: r.try_get("approver")?,
                decision: r.try_get("decision")?,
                comment: r.try_get("comment")?,
                decided_at: from_micros(r.try_get("decided_at")?),
            })
        })
        .collect()
}

/// A secure link as stored, found by its token's hash.
#[derive(Debug, Clone)]
pub struct Link {
    pub tenant: Tenant,
    pub evaluation_id: String,
    pub stage: i64,
    pub approver: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
    pub locked: bool,
    pub otp_hash: Option<String>,
    pub otp_expires_at: Option<DateTime<Utc>>,
    pub otp_attempts: i64,
}

/// A decision to record.
#[derive(Debug, Clone)]
pub struct Decide<'a> {
    pub tenant: &'a Tenant,
    pub token_hash: &'a str,
    /// The hash of the one-time code the approver gave (critical tier).
    pub otp_hash: Option<&'a str>,
    pub vote: Vote,
    pub comment: Option<&'a str>,
    /// Links and e-mails for the next stage's approvers, used only if this decision opens it.
    pub next_notices: Vec<Notice>,
    pub now: DateTime<Utc>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub evaluation_id: String,
    /// The evaluation's status after it.
    pub status: Status,
    /// The stage decided on, and whether this decision completed it.
    pub stage: i64,
    pub stage_passed: bool,
    /// The stage that started waiting, if any.
    pub next_stage: Option<i64>,
}

/// What asking for a one-time code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSent {
    Sent,
    /// The link had been sent [`CODES_PER_LINK`] codes: it is locked now.
    Locked,
}

/// What a decision through a link came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    Recorded(Decided),
    /// The one-time code was wrong or expired: counted, nothing decided.
    WrongCode {
        locked: bool,
    },
}

fn gone(why: &str) -> StoreError {
    StoreError::Gone(why.to_owned())
}

/// Refuses a link row (`used_at`, `locked_at`, `expires_at`) that was used, is locked or has
/// expired.
fn usable(row: &sqlx::any::AnyRow, now: i64) -> Result<()> {
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        return Err(gone("this link has been used"));
    }
    if row.try_get::<Option<i64>, _>("locked_at")?.is_some() {
        return Err(gone(
            "this link is locked after too many wrong or requested codes",
        ));
    }
    if row.try_get::<i64, _>("expires_at")? < now {
        return Err(gone("this link has expired"));
    }
    Ok(())
}

async fn lock_link(conn: &mut AnyConnection, token_hash: &str, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE approval_links SET locked_at = $2 WHERE token_hash = $1")
        .bind(token_hash)
        .bind(micros(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An e-mail address as people are compared: without surrounding whitespace or invisible
/// characters (zero-width spaces and joiners, word joiners, byte-order marks) anywhere, and
/// ASCII lower-cased, so that `" Alice@Example.com"` and `alice@example.com` are one person.
pub fn normalize_email(email: &str) -> String {
    let invisible = |c: char| matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}');
    email
        .chars()
        .filter(|c| !invisible(*c))
        .collect::<String>()
        .trim()
        .to_ascii_lowercase()
}

impl Store {
    pub async fn approval_link(&self, token_hash: &str) -> Result<Option<Link>> {
        let row = sqlx::query(
            "SELECT workspace_id, evaluation_id, stage_idx, approver, expires_at, used_at, \
             locked_at, otp_hash, otp_expires_at, otp_attempts FROM approval_links \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Link {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                evaluation_id: r.try_get("evaluation_id")?,
                stage: r.try_get("stage_idx")?,
                approver: r.try_get("approver")?,
                expires_at: from_micros(r.try_get("expires_at")?),
                used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
                locked: r.try_get::<Option<i64>, _>("locked_at")?.is_some(),
                otp_hash: r.try_get("otp_hash")?,
                otp_expires_at: r
                    .try_get::<Option<i64>, _>("otp_expires_at")?
                    .map(from_micros),
                otp_attempts: r.try_get("otp_attempts")?,
            })
        })
        .transpose()
    }

    /// Sends a one-time code for a link: its hash kept with the link, the code e-mailed. The
    /// count of wrong codes carries over from earlier codes; the [`CODES_PER_LINK`]-th request
    /// past the limit locks the link instead. All of it under the audit head lock, so
    /// concurrent requests are counted one after the other.
    pub async fn start_otp(
        &self,
        link: &Link,
        token_hash: &str,
        otp_hash: &str,
        expires_at: DateTime<Utc>,
        email: &Message,
        now: DateTime<Utc>,
    ) -> Result<CodeSent> {
        let ws = link.tenant.workspace_id();
        self.audited(&link.tenant, async |tx, chain| {
            let row = sqlx::query(
                "SELECT used_at, locked_at, expires_at, otp_sent, otp_attempts FROM approval_links \
                 WHERE token_hash = $1 AND workspace_id = $2",
            )
            .bind(token_hash)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            usable(&row, micros(now))?;
            let sent: i64 = row.try_get("otp_sent")?;
            let attempts: i64 = row.try_get("otp_attempts")?;
            let audit = |kind: EventKind, data: Value| NewAuditEvent {
                kind,
                actor: Actor::System,
                evaluation_id: Some(link.evaluation_id.clone()),
                data,
                occurred_at: now,
            };
            let outcome = if approval::request_code(sent) == CodeRequest::Lock {
                lock_link(tx, token_hash, now).await?;
                chain.append(&audit(
                    EventKind::ApprovalLocked,
                    json!({"approver": link.approver, "stage": link.stage, "codes_sent": sent,
                           "attempts": attempts, "why": "too many codes asked for"}),
                ));
                CodeSent::Locked
            } else {
                sqlx::query(
                    "UPDATE approval_links SET otp_hash = $2, otp_expires_at = $3, \
                     otp_sent = otp_sent + 1 WHERE token_hash = $1",
                )
                .bind(token_hash)
                .bind(otp_hash)
                .bind(micros(expires_at))
                .execute(&mut *tx)
                .await?;
                enqueue(tx, ws, Some(&link.evaluation_id), email, now).await?;
                chain.append(&audit(
                    EventKind::ApprovalOtpSent,
                    json!({"approver": link.approver, "stage": link.stage, "codes_sent": sent + 1}),
                ));
                CodeSent::Sent
            };
            Ok(outcome)
        })
        .await
        .inspect(|outcome| {
            if *outcome == CodeSent::Sent {
                self.jobs_ready.notify_one();
            }
        })
    }

    /// Records a person's decision and moves the evaluation on: a rejection rejects it; the
    /// last approval a stage needs passes it and starts the next stage or approves the
    /// evaluation. Webhooks and e-mails that follow are queued in the same transaction.
    ///
    /// On a critical-tier evaluation the decision counts only with the link's current
    /// one-time code (`d.otp_hash`), checked here under the audit head lock: a wrong or
    /// expired code is counted (and locks the link at [`WRONG_CODES_PER_LINK`]) and answered
    /// as [`DecideOutcome::WrongCode`], with nothing decided.
    pub async fn decide(&self, d: Decide<'_>) -> Result<DecideOutcome> {
        let ws = d.tenant.workspace_id();
        let now = micros(d.now);
        self.audited(d.tenant, async |tx, chain| {
            let link = sqlx::query(
                "SELECT used_at, locked_at, expires_at, evaluation_id, stage_idx, approver, \
                 otp_hash, otp_expires_at, otp_attempts FROM approval_links \
                 WHERE token_hash = $1 AND workspace_id = $2",
            )
            .bind(d.token_hash)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            usable(&link, now)?;
            let evaluation_id: String = link.try_get("evaluation_id")?;
            let stage: i64 = link.try_get("stage_idx")?;
            let approver: String = link.try_get("approver")?;
            let ev = sqlx::query(
                "SELECT status, current_stage, webhook_url, context, approval FROM evaluations \
                 WHERE id = $1",
            )
            .bind(&evaluation_id)
            .fetch_one(&mut *tx)
            .await?;
            let status: String = ev.try_get("status")?;
            let current: Option<i64> = ev.try_get("current_stage")?;
            if status != Status::Pending.as_str() || current != Some(stage) {
                return Err(gone("this stage has already been decided"));
            }
            let approval: Option<String> = ev.try_get("approval")?;
            let tier = approval
                .as_deref()
                .map(serde_json::from_str::<ApprovalRule>)
                .transpose()?
                .map(|a| a.tier);
            if tier.is_some_and(Tier::needs_code) {
                let Some(given) = d.otp_hash else {
                    return Err(StoreError::Refused(
                        "a one-time code is required for a critical approval".into(),
                    ));
                };
                let current: Option<String> = link.try_get("otp_hash")?;
                let fresh = link
                    .try_get::<Option<i64>, _>("otp_expires_at")?
                    .is_some_and(|t| t > now);
                let attempts = link.try_get("otp_attempts")?;
                if let CodeCheck::Wrong { attempts, locked } =
                    approval::check_code(current.as_deref(), fresh, given, attempts)
                {
                    sqlx::query(
                        "UPDATE approval_links SET otp_attempts = $2 WHERE token_hash = $1",
                    )
                    .bind(d.token_hash)
                    .bind(attempts)
                    .execute(&mut *tx)
                    .await?;
                    if locked {
                        lock_link(tx, d.token_hash, d.now).await?;
                    }
                    chain.append(&NewAuditEvent {
                        kind: if locked {
                            EventKind::ApprovalLocked
                        } else {
                            EventKind::ApprovalOtpFailed
                        },
                        actor: Actor::System,
                        evaluation_id: Some(evaluation_id.clone()),
                        data: json!({"approver": approver, "stage": stage, "attempts": attempts}),
                        occurred_at: d.now,
                    });
                    return Ok(DecideOutcome::WrongCode { locked });
                }
            }
            let context: String = ev.try_get("context")?;
            let on_behalf_of = serde_json::from_str::<Value>(&context)?["on_behalf_of"]
                .as_str()
                .map(normalize_email);
            let approved_another_stage = d.vote == Vote::Approve
                && sqlx::query(
                    "SELECT COUNT(*) AS n FROM approval_decisions WHERE evaluation_id = $1 \
                     AND approver = $2 AND decision = 'approve' AND stage_idx <> $3",
                )
                .bind(&evaluation_id)
                .bind(&approver)
                .bind(stage)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>("n")?
                    > 0;
            let state = stage_state(tx, &evaluation_id, stage).await?;
            let ballot = Ballot {
                approver: &approver,
                vote: d.vote,
                on_behalf_of: on_behalf_of.as_deref(),
                approved_another_stage,
            };
            let transition = approval::decide(&state, &ballot)
                .map_err(|refusal| StoreError::Refused(refusal.message().into()))?;
            sqlx::query(
                "INSERT INTO approval_decisions (evaluation_id, stage_idx, approver, workspace_id, \
                 decision, comment, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&evaluation_id)
            .bind(stage)
            .bind(&approver)
            .bind(ws)
            .bind(d.vote.as_str())
            .bind(d.comment)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if StoreError::is_unique_violation(&e) {
                    gone("you have already decided this stage")
                } else {
                    e.into()
                }
            })?;
            sqlx::query("UPDATE approval_links SET used_at = $2 WHERE token_hash = $1")
                .bind(d.token_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::ApprovalDecided,
                actor: Actor::Member(approver.clone()),
                evaluation_id: Some(evaluation_id.clone()),
                data: json!({"stage": stage, "approver": approver, "decision": d.vote.as_str(),
                             "comment": d.comment}),
                occurred_at: d.now,
            });
            let webhook_url: Option<String> = ev.try_get("webhook_url")?;
            let flow = Flow {
                workspace_id: ws,
                evaluation_id: &evaluation_id,
                webhook_url: webhook_url.as_deref(),
                actor: Actor::Member(approver.clone()),
                now: d.now,
            };
            let after = apply(
                tx,
                chain,
                &flow,
                &state,
                &transition,
                &d.next_notices,
                json!({}),
            )
            .await?;
            Ok(DecideOutcome::Recorded(Decided {
                evaluation_id: evaluation_id.clone(),
                status: after,
                stage,
                stage_passed: matches!(
                    transition,
                    Transition::Advance {
                        ended: approval::StageEnd::Passed,
                        ..
                    } | Transition::Conclude {
                        ended: approval::StageEnd::Passed,
                        ..
                    }
                ),
                next_stage: match transition {
                    Transition::Advance { next, .. } => Some(next),
                    _ => None,
                },
            }))
        })
        .await
        .inspect(|outcome| {
            if matches!(outcome, DecideOutcome::Recorded(_)) {
                self.jobs_ready.notify_one();
            }
        })
    }
}

/// Writes what a transition did to a stage: nothing more while it waits; otherwise the
/// stage's end and its audit event, then the next stage's start (its `stage.started` event
/// carrying `started`) or the evaluation's end. Answers the evaluation's status after it.
async fn apply(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    f: &Flow<'_>,
    stage: &StageState,
    transition: &Transition,
    next_notices: &[Notice],
    started: Value,
) -> Result<Status> {
    let ended = match transition {
        Transition::Waiting { .. } => {
            sqlx::query("UPDATE evaluations SET updated_at = $2 WHERE id = $1")
                .bind(f.evaluation_id)
                .bind(micros(f.now))
                .execute(&mut *conn)
                .await?;
            return Ok(Status::Pending);
        }
        Transition::Advance {
            ended, approvals, ..
        }
        | Transition::Conclude {
            ended, approvals, ..
        } => (*ended, *approvals),
    };
    let (end, approvals) = ended;
    end_stage(conn, f.evaluation_id, stage.index, end.into(), f.now).await?;
    let (kind, data) = match end {
        approval::StageEnd::Passed => (
            EventKind::StagePassed,
            json!({"stage": stage.index, "approvals": approvals, "required": stage.required}),
        ),
        approval::StageEnd::Rejected => (
            EventKind::StageRejected,
            json!({"stage": stage.index, "approvals": approvals, "required": stage.required}),
        ),
        approval::StageEnd::Expired => (
            EventKind::StageExpired,
            json!({"stage": stage.index, "on_timeout": stage.on_timeout.as_str()}),
        ),
    };
    chain.append(&NewAuditEvent {
        kind,
        actor: f.actor.clone(),
        evaluation_id: Some(f.evaluation_id.to_owned()),
        data,
        occurred_at: f.now,
    });
    match transition {
        Transition::Advance { next, .. } => {
            sqlx::query("UPDATE evaluations SET current_stage = $2, updated_at = $3 WHERE id = $1")
                .bind(f.evaluation_id)
                .bind(*next)
                .bind(micros(f.now))
                .execute(&mut *conn)
                .await?;
            start_stage(conn, chain, f, *next, next_notices, started).await?;
            Ok(Status::Pending)
        }
        Transition::Conclude {
            outcome, reason, ..
        } => {
            conclude(conn, chain, f, *outcome, reason).await?;
            Ok(match outcome {
                Outcome::Approved => Status::Approved,
                Outcome::Rejected => Status::Rejected,
                Outcome::Expired => Status::Expired,
            })
        }
        Transition::Waiting { .. } => unreachable!("answered above"),
    }
}

/// A stage whose deadline has passed, waiting to be expired or escalated.
#[derive(Debug, Clone)]
pub struct DueStage {
    pub tenant: Tenant,
    pub evaluation_id: String,
    pub stage: i64,
    pub on_timeout: OnTimeout,
}

impl Store {
    /// Stages still waiting past their deadline, oldest deadline first.
    pub async fn due_stages(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueStage>> {
        let rows = sqlx::query(
            "SELECT workspace_id, evaluation_id, idx, on_timeout FROM evaluation_stages \
             WHERE status = 'waiting' AND expires_at <= $1 \
             AND (sweep_after IS NULL OR sweep_after <= $1) ORDER BY expires_at LIMIT $2",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueStage {
                    tenant: Tenant::new(r.try_get("workspace_id")?),
                    evaluation_id: r.try_get("evaluation_id")?,
                    stage: r.try_get("idx")?,
                    on_timeout: on_timeout(&r.try_get::<String, _>("on_timeout")?),
                })
            })
            .collect()
    }

    /// The next deadline of any waiting stage, for a sweeper to sleep until (a stage put off
    /// after failing counts from when it may be tried again).
    pub async fn next_deadline(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN sweep_after > expires_at THEN sweep_after ELSE expires_at END) \
             AS next_at FROM evaluation_stages WHERE status = 'waiting'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("next_at")?.map(from_micros))
    }

    /// Puts off a due stage that failed to end: the sweep skips it until one minute after
    /// `now`, doubling with each failure up to a day, and the failure is in the workspace's
    /// audit trail. Answers when it will be tried again.
    pub async fn postpone_stage(
        &self,
        due: &DueStage,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let ws = due.tenant.workspace_id();
        self.audited(&due.tenant, async |tx, chain| {
            let failures: i64 = sqlx::query(
                "UPDATE evaluation_stages SET sweep_failures = sweep_failures + 1 \
                 WHERE evaluation_id = $1 AND idx = $2 AND workspace_id = $3 RETURNING sweep_failures",
            )
            .bind(&due.evaluation_id)
            .bind(due.stage)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("sweep_failures"))
            .transpose()?
            .ok_or(StoreError::NotFound)?;
            let wait = Duration::minutes(1) * 2i32.pow(failures.clamp(1, 11) as u32 - 1);
            let retry_at = now + wait.min(Duration::days(1));
            sqlx::query(
                "UPDATE evaluation_stages SET sweep_after = $3 WHERE evaluation_id = $1 AND idx = $2",
            )
            .bind(&due.evaluation_id)
            .bind(due.stage)
            .bind(micros(retry_at))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::StageExpiryFailed,
                actor: Actor::System,
                evaluation_id: Some(due.evaluation_id.clone()),
                data: json!({"stage": due.stage, "error": error, "failures": failures,
                             "retry_at": crate::timestamp_text(retry_at)}),
                occurred_at: now,
            });
            Ok(retry_at)
        })
        .await
    }

    /// Ends a stage whose deadline passed: `escalate` starts the next stage (with these
    /// notices), otherwise — or with no next stage — the evaluation expires. Answers false
    /// when someone else (a person, another sweep) decided the stage first.
    pub async fn expire_stage(
        &self,
        due: &DueStage,
        next_notices: Vec<Notice>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let ws = due.tenant.workspace_id();
        self.audited(&due.tenant, async |tx, chain| {
            let still_due = sqlx::query(
                "SELECT e.webhook_url FROM evaluations e JOIN evaluation_stages s \
                 ON s.evaluation_id = e.id WHERE e.id = $1 AND e.status = 'pending' \
                 AND e.current_stage = $2 AND s.idx = $2 AND s.status = 'waiting' \
                 AND s.expires_at <= $3",
            )
            .bind(&due.evaluation_id)
            .bind(due.stage)
            .bind(micros(now))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = still_due else {
                return Ok(false);
            };
            let webhook_url: Option<String> = row.try_get("webhook_url")?;
            let state = stage_state(tx, &due.evaluation_id, due.stage).await?;
            let flow = Flow {
                workspace_id: ws,
                evaluation_id: &due.evaluation_id,
                webhook_url: webhook_url.as_deref(),
                actor: Actor::System,
                now,
            };
            let transition = approval::expire(&state);
            let started = json!({"escalated": true});
            apply(
                tx,
                chain,
                &flow,
                &state,
                &transition,
                &next_notices,
                started,
            )
            .await?;
            Ok(true)
        })
        .await
        .inspect(|ended| {
            if *ended {
                self.jobs_ready.notify_one();
            }
        })
    }
}

/// Most links one person may hold for one stage: the one the stage started with and those
/// asked for from the approval page, so a shared chat message cannot be used to flood anyone.
pub const LINKS_PER_APPROVER: i64 = 5;

/// A waiting stage as the approval page's sign-in shows it: no proposal, only where it is.
#[derive(Debug, Clone)]
pub struct WaitingStage {
    pub tenant: Tenant,
    pub evaluation_id: String,
    /// The evaluation's status; the stage fields are set only while it is `pending`.
    pub status: Status,
    pub stage: Option<i64>,
    pub stage_name: Option<String>,
}

impl Store {
    /// Where an evaluation stands, found by its id alone: for the page a shared chat message
    /// links to, where an approver signs in to get a personal link. It tells nothing more.
    pub async fn waiting_stage(&self, evaluation_id: &str) -> Result<Option<WaitingStage>> {
        let row = sqlx::query(
            "SELECT e.workspace_id, e.status, e.current_stage, s.name FROM evaluations e \
             LEFT JOIN evaluation_stages s ON s.evaluation_id = e.id AND s.idx = e.current_stage \
             WHERE e.id = $1",
        )
        .bind(evaluation_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let status: String = r.try_get("status")?;
            let status = Status::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("evaluation status {status}")))?;
            let pending = status == Status::Pending;
            Ok(WaitingStage {
                tenant: Tenant::new(r.try_get("workspace_id")?),
                evaluation_id: evaluation_id.to_owned(),
                status,
                stage: r
                    .try_get::<Option<i64>, _>("current_stage")?
                    .filter(|_| pending),
                stage_name: r.try_get::<Option<String>, _>("name")?.filter(|_| pending),
            })
        })
        .transpose()
    }

    /// Gives an approver of a waiting stage a fresh personal link (asked for from the
    /// approval page). Answers false, changing nothing, when the stage is no longer waiting,
    /// the person has decided it already, or holds [`LINKS_PER_APPROVER`] links for it.
    pub async fn issue_link(
        &self,
        tenant: &Tenant,
        evaluation_id: &str,
        stage: i64,
        notice: &Notice,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(link) = &notice.link else {
            return Ok(false);
        };
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM evaluations WHERE id = $1 AND workspace_id = $2 \
                 AND status = 'pending' AND current_stage = $3) AS waiting, \
                 (SELECT COUNT(*) FROM approval_decisions WHERE evaluation_id = $1 \
                 AND stage_idx = $3 AND approver = $4) AS decided, \
                 (SELECT COUNT(*) FROM approval_links WHERE evaluation_id = $1 \
                 AND stage_idx = $3 AND approver = $4) AS links",
            )
            .bind(evaluation_id)
            .bind(ws)
            .bind(stage)
            .bind(&link.approver)
            .fetch_one(&mut *tx)
            .await?;
            let (waiting, decided, links): (i64, i64, i64) = (
                row.try_get("waiting")?,
                row.try_get("decided")?,
                row.try_get("links")?,
            );
            if waiting == 0 || decided > 0 || links >= LINKS_PER_APPROVER {
                return Ok(false);
            }
            queue_notices(
                tx,
                ws,
                evaluation_id,
                stage,
                std::slice::from_ref(notice),
                now,
            )
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::ApprovalLinkRequested,
                actor: Actor::System,
                evaluation_id: Some(evaluation_id.to_owned()),
                data: json!({"stage": stage, "approver": link.approver}),
                occurred_at: now,
            });
            Ok(true)
        })
        .await
        .inspect(|issued| {
            if *issued {
                self.jobs_ready.notify_one();
            }
        })
    }
}

/// Pending evaluations ended per transaction when an agent or a workspace is halted.
const HALT_BATCH: usize = 200;

impl Store {
    /// Ends the workspace's pending evaluations that may no longer go ahead — every one while
    /// its kill switch is engaged, else its suspended agents' — `rejected` with the halt's
    /// reason: each audited (`evaluation.rejected` by `actor`) with `terminal_outcome` to its
    /// webhook. Answers how many it ended; none when nothing is halted.
    pub async fn end_halted(
        &self,
        tenant: &Tenant,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let ws = tenant.workspace_id();
        let mut ended = 0;
        loop {
            let n = self
                .audited(tenant, async |tx, chain| {
                    let rows = sqlx::query(&format!(
                        "SELECT e.id, e.webhook_url, e.current_stage, w.kill_switch_at, \
                         w.kill_switch_by, w.kill_switch_reason, g.suspended_at, g.suspended_by, \
                         g.suspended_reason FROM evaluations e \
                         JOIN workspaces w ON w.id = e.workspace_id \
                         LEFT JOIN agents g ON g.workspace_id = e.workspace_id \
                         AND g.agent_id = e.agent_id \
                         WHERE e.workspace_id = $1 AND e.status = 'pending' \
                         AND (w.kill_switch_at IS NOT NULL OR g.suspended_at IS NOT NULL) \
                         ORDER BY e.id LIMIT {HALT_BATCH}"
                    ))
                    .bind(ws)
                    .fetch_all(&mut *tx)
                    .await?;
                    for r in &rows {
                        let id: String = r.try_get("id")?;
                        let webhook_url: Option<String> = r.try_get("webhook_url")?;
                        let (all, one) = (
                            halt_from_row(r, "kill_switch")?,
                            halt_from_row(r, "suspended")?,
                        );
                        let reason = halt_reason(
                            all.as_ref().map(|h| h.reason.as_str()),
                            one.as_ref().map(|h| h.reason.as_str()),
                        )
                        .unwrap_or_else(|| "agent suspended".into());
                        if let Some(stage) = r.try_get::<Option<i64>, _>("current_stage")? {
                            end_stage(tx, &id, stage, StageStatus::Rejected, now).await?;
                        }
                        let flow = Flow {
                            workspace_id: ws,
                            evaluation_id: &id,
                            webhook_url: webhook_url.as_deref(),
                            actor: actor.clone(),
                            now,
                        };
                        conclude(tx, chain, &flow, Outcome::Rejected, &reason).await?;
                    }
                    Ok(rows.len())
                })
                .await?;
            ended += n;
            if n < HALT_BATCH {
                break;
            }
        }
        if ended > 0 {
            self.jobs_ready.notify_one();
        }
        Ok(ended)
    }
}
