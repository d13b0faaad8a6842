//! Evaluations: recorded through the group-commit writer, read back with their stages.

use agentnexus_engine::Effect;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::Row;

use crate::audit::{Chain, EVENT_COLUMNS, event_from_row};
use crate::exec::{Arg, Exec};
use crate::listing::{CREATED_SEQ, Indexed, Tracker};
use crate::rows::{EVALUATION_COLUMNS, evaluation_from_row, event_columns, stage_from_row};
use crate::{
    AuditEvent, Evaluation, NewEvaluation, Recorded, Result, StageRecord, StageStatus, Status,
    Store, Tenant, micros,
};

/// How long an idempotency key returns the first evaluation (SPEC §4).
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

/// What a batch writes after its per-evaluation checks: pending evaluations many rows per
/// statement, then their stages and links. (Costs are added up from the chain when the list
/// index catches up: see `audit::Chain::catch_up`.)
#[derive(Default)]
pub(crate) struct Pending<'a> {
    evaluations: Vec<&'a NewEvaluation>,
    links: Vec<(&'a NewEvaluation, &'a crate::NewLink)>,
}

/// Evaluations per INSERT: 24 parameters each.
const EVALUATIONS_PER_INSERT: usize = 32;

impl<'a> Pending<'a> {
    pub(crate) async fn flush(&mut self, conn: &mut impl Exec) -> Result<()> {
        let mut args = Vec::new();
        for rows in self.evaluations.chunks(EVALUATIONS_PER_INSERT) {
            let values = crate::values_list(conn.is_sqlite(), 24, rows.len());
            let sql = format!(
                "INSERT INTO evaluations (id, workspace_id, key_id, agent_id, action, resource, \
                 amount_cents, cost_cents, params, context, trace, idempotency_key, webhook_url, \
                 decision, status, reason, matched_rules, errors, approval, current_stage, \
                 policy_versions, proposal_hash, created_at, updated_at) VALUES {values}"
            );
            args.clear();
            for ev in rows {
                let p = &ev.proposal;
                args.extend([
                    Arg::from(&ev.id),
                    ev.tenant.workspace_id().into(),
                    ev.key_id.as_deref().into(),
                    (&p.agent_id).into(),
                    (&p.action).into(),
                    p.resource.as_deref().into(),
                    p.amount_cents.into(),
                    p.cost_cents.into(),
                    p.params.to_string().into(),
                    p.context.to_string().into(),
                    ev.trace.as_ref().map(Value::to_string).into(),
                    ev.idempotency_key.as_deref().into(),
                    ev.webhook_url.as_deref().into(),
                    ev.decision.as_str().into(),
                    Status::initial(ev.decision).as_str().into(),
                    (&ev.reason).into(),
                    serde_json::to_string(&ev.matched_rules)?.into(),
                    serde_json::to_string(&ev.errors)?.into(),
                    ev.approval
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()?
                        .into(),
                    (!ev.stages.is_empty()).then_some(0i64).into(),
                    serde_json::to_string(&ev.policy_versions)?.into(),
                    (&ev.proposal_hash).into(),
                    micros(ev.created_at).into(),
                    // updated_at starts as created_at.
                    micros(ev.created_at).into(),
                ]);
            }
            conn.execute(&sql, &args).await?;
        }
        for ev in self.evaluations.iter().filter(|e| !e.stages.is_empty()) {
            for stage in ev.stage_records() {
                conn.execute(
                    "INSERT INTO evaluation_stages (evaluation_id, idx, workspace_id, name, \
                     approvers, required, channels, timeout_secs, on_timeout, status, started_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    &[
                        (&ev.id).into(),
                        stage.index.into(),
                        ev.tenant.workspace_id().into(),
                        (&stage.name).into(),
                        serde_json::to_string(&stage.approvers)?.into(),
                        stage.required.into(),
                        serde_json::to_string(&stage.channels)?.into(),
                        stage.timeout_secs.into(),
                        stage.on_timeout.as_str().into(),
                        stage.status.as_str().into(),
                        stage.started_at.map(micros).into(),
                        stage.expires_at.map(micros).into(),
                    ],
                )
                .await?;
            }
        }
        for (ev, link) in &self.links {
            crate::approvals::insert_link(
                &mut *conn,
                ev.tenant.workspace_id(),
                &ev.id,
                0,
                link,
                ev.created_at,
            )
            .await?;
        }
        drop(args);
        self.evaluations.clear();
        self.links.clear();
        Ok(())
    }
}

/// Checks one evaluation inside the writer's transaction and queues its rows; see `writer`.
/// Its audit event is appended to the chain now (hashing fixes its place), and its rows are
/// written by [`Pending::flush`] before the chain is saved.
pub(crate) async fn insert<'a>(
    conn: &mut impl Exec,
    chain: &mut Chain,
    tracker: &mut Tracker,
    ev: &'a NewEvaluation,
    data: &str,
    pending: &mut Pending<'a>,
) -> Result<Recorded> {
    let ws = ev.tenant.workspace_id();
    let now = micros(ev.created_at);
    if let Some(key) = &ev.idempotency_key {
        let existing = conn
            .fetch_optional(
                "SELECT evaluation_id, created_at FROM idempotency_keys \
                 WHERE workspace_id = $1 AND key = $2",
                &[ws.into(), key.into()],
            )
            .await?;
        let args = [ws.into(), key.into(), (&ev.id).into(), now.into()];
        match existing {
            Some(row) if row.int("created_at")? > micros(ev.created_at - IDEMPOTENCY_WINDOW) => {
                return Ok(Recorded::Existing(row.text("evaluation_id")?));
            }
            Some(_) => {
                conn.execute(
                    "UPDATE idempotency_keys SET evaluation_id = $3, created_at = $4 \
                     WHERE workspace_id = $1 AND key = $2",
                    &args,
                )
                .await?;
            }
            None => {
                conn.execute(
                    "INSERT INTO idempotency_keys (workspace_id, key, evaluation_id, created_at) \
                     VALUES ($1, $2, $3, $4)",
                    &args,
                )
                .await?;
            }
        }
    }

    let status = Status::initial(ev.decision);
    let p = &ev.proposal;
    // An evaluation final at once (allowed, denied) never changes: its audit event, which holds
    // all of it, is its record, and it gets no row of its own (`evaluation` and `evaluations`
    // read it from the chain). Written on every commit, that row and its id index were a
    // quarter of the writer's pages. A pending one changes as humans decide: it gets its row.
    if status == Status::Pending {
        pending.evaluations.push(ev);
    }
    for notice in &ev.notices {
        if let Some(link) = &notice.link {
            pending.links.push((ev, link));
        }
        for message in &notice.messages {
            crate::jobs::enqueue(conn, ws, Some(&ev.id), message, ev.created_at).await?;
        }
    }

    let actor = match &ev.key_id {
        Some(k) => crate::Actor::Key(k.clone()),
        None => crate::Actor::System,
    };
    let seq = chain.append_canonical(
        crate::model::EVALUATION_CREATED,
        &actor.label(),
        Some(&ev.id),
        data,
        ev.created_at,
    );
    tracker.created(Indexed {
        id: ev.id.clone(),
        seq,
        agent: p.agent_id.clone(),
        action: p.action.clone(),
        policies: crate::listing::set(ev.matched_rules.iter().map(|m| m.policy.as_str())),
        status: status.as_str().to_owned(),
        decision: ev.decision.as_str().to_owned(),
        cost: p.cost_cents,
        occurred_at: micros(ev.created_at),
    });
    if let Some(message) = crate::jobs::first_webhook(ev) {
        crate::jobs::enqueue(conn, ws, Some(&ev.id), &message, ev.created_at).await?;
    }
    Ok(Recorded::Created)
}

impl NewEvaluation {
    /// The `data` of its `evaluation.created` event, in canonical JSON: all of the evaluation
    /// as created (an allowed or denied one has no other record). Written straight into one
    /// buffer, keys in RFC 8785 order, not through a `serde_json::Value`; the caller's thread
    /// does it, before the evaluation joins the writer's queue, off the writer's time. The
    /// tests hold it to the `Value` it replaced, byte for byte.
    pub(crate) fn event_data(&self) -> String {
        use agentnexus_engine::canonical::{write, write_i64, write_i64_map, write_str};
        let p = &self.proposal;
        let mut out = Vec::with_capacity(512);
        let key = |out: &mut Vec<u8>, key: &str| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            write_str(out, key);
            out.push(b':');
        };
        // An object of three text fields, given in key order.
        let object = |out: &mut Vec<u8>, fields: [(&str, &str); 3]| {
            for (j, (name, value)) in fields.into_iter().enumerate() {
                out.push(if j == 0 { b'{' } else { b',' });
                write_str(out, name);
                out.push(b':');
                write_str(out, value);
            }
            out.push(b'}');
        };
        let rules = |out: &mut Vec<u8>, rules: &mut dyn Iterator<Item = [(&str, &str); 3]>| {
            out.push(b'[');
            for (i, fields) in rules.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                object(out, fields);
            }
            out.push(b']');
        };
        key(&mut out, "action");
        write_str(&mut out, &p.action);
        key(&mut out, "agent_id");
        write_str(&mut out, &p.agent_id);
        key(&mut out, "amount_cents");
        write_i64(&mut out, p.amount_cents);
        if let Some(a) = &self.approval {
            key(&mut out, "approval");
            let fields = [
                ("policy", a.policy.as_str()),
                ("rule", a.rule.as_str()),
                ("tier", a.tier.as_str()),
            ];
            object(&mut out, fields);
        }
        key(&mut out, "context");
        write(&mut out, &p.context);
        key(&mut out, "cost_cents");
        write_i64(&mut out, p.cost_cents);
        key(&mut out, "decision");
        write_str(&mut out, self.decision.as_str());
        if !self.errors.is_empty() {
            key(&mut out, "errors");
            let mut errors = self.errors.iter().map(|e| {
                [
                    ("message", e.message.as_str()),
                    ("policy", e.policy.as_str()),
                    ("rule", e.rule.as_str()),
                ]
            });
            rules(&mut out, &mut errors);
        }
        if let Some(k) = &self.idempotency_key {
            key(&mut out, "idempotency_key");
            write_str(&mut out, k);
        }
        key(&mut out, "matched_rules");
        let mut matched = self.matched_rules.iter().map(|r| {
            [
                ("effect", r.effect.as_str()),
                ("policy", r.policy.as_str()),
                ("rule", r.rule.as_str()),
            ]
        });
        rules(&mut out, &mut matched);
        key(&mut out, "params");
        write(&mut out, &p.params);
        key(&mut out, "policy_versions");
        write_i64_map(&mut out, &self.policy_versions);
        key(&mut out, "proposal_hash");
        write_str(&mut out, &self.proposal_hash);
        key(&mut out, "reason");
        write_str(&mut out, &self.reason);
        key(&mut out, "resource");
        match &p.resource {
            Some(r) => write_str(&mut out, r),
            None => out.extend_from_slice(b"null"),
        }
        key(&mut out, "status");
        write_str(&mut out, Status::initial(self.decision).as_str());
        if let Some(t) = &self.trace {
            key(&mut out, "trace");
            write(&mut out, t);
        }
        if let Some(u) = &self.webhook_url {
            key(&mut out, "webhook_url");
            write_str(&mut out, u);
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// The stages as they stand when the evaluation is created: the first waiting with its
    /// deadline running, the rest queued.
    pub fn stage_records(&self) -> Vec<StageRecord> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let first = i == 0;
                let timeout = stage.timeout.map(|t| t.0 as i64);
                StageRecord {
                    index: i as i64,
                    name: stage.name.clone(),
                    approvers: stage.approvers.clone(),
                    required: i64::from(stage.required),
                    channels: stage.channels.clone(),
                    timeout_secs: timeout,
                    on_timeout: stage.on_timeout,
                    status: if first {
                        StageStatus::Waiting
                    } else {
                        StageStatus::Queued
                    },
                    started_at: first.then_some(self.created_at),
                    expires_at: timeout
                        .filter(|_| first)
                        .and_then(|t| agentnexus_engine::approval::deadline(self.created_at, t)),
                    decided_at: None,
                }
            })
            .collect()
    }

    /// The evaluation as it will read back once recorded.
    pub fn to_evaluation(&self) -> Evaluation {
        let p = &self.proposal;
        Evaluation {
            id: self.id.clone(),
            agent_id: p.agent_id.clone(),
            action: p.action.clone(),
            resource: p.resource.clone(),
            amount_cents: p.amount_cents,
            cost_cents: p.cost_cents,
            params: p.params.clone(),
            context: p.context.clone(),
            trace: self.trace.clone(),
            idempotency_key: self.idempotency_key.clone(),
            webhook_url: self.webhook_url.clone(),
            decision: self.decision,
            status: Status::initial(self.decision),
            reason: self.reason.clone(),
            matched_rules: serde_json::to_value(&self.matched_rules).unwrap_or_default(),
            errors: serde_json::to_value(&self.errors).unwrap_or_default(),
            approval: self.approval.clone(),
            current_stage: (!self.stages.is_empty()).then_some(0),
            policy_versions: serde_json::to_value(&self.policy_versions).unwrap_or_default(),
            proposal_hash: self.proposal_hash.clone(),
            key_id: self.key_id.clone(),
            created_at: self.created_at,
            updated_at: self.created_at,
            stages: self.stage_records(),
            decisions: Vec::new(),
            receipt: None,
        }
    }
}

impl Store {
    /// Records an evaluation and its audit event durably (group commit), or finds the
    /// evaluation its idempotency key already names.
    pub async fn record_evaluation(&self, evaluation: NewEvaluation) -> Result<Recorded> {
        self.writer.record(evaluation).await
    }

    /// The evaluation an idempotency key names, if used within the last 24 hours.
    pub async fn idempotent_evaluation(
        &self,
        tenant: &Tenant,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT evaluation_id FROM idempotency_keys WHERE workspace_id = $1 AND key = $2 \
             AND created_at > $3",
        )
        .bind(tenant.workspace_id())
        .bind(key)
        .bind(micros(now - IDEMPOTENCY_WINDOW))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("evaluation_id")).transpose()?)
    }

    /// One evaluation of this workspace, with its stages.
    pub async fn evaluation(&self, tenant: &Tenant, id: &str) -> Result<Option<Evaluation>> {
        let events = event_columns(self.backend == crate::Backend::Sqlite);
        let row = sqlx::query(&format!(
            "SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE id = $1 AND workspace_id = $2 \
             UNION ALL SELECT {events} FROM audit_events a WHERE a.evaluation_id = $1 \
             AND a.workspace_id = $2 AND a.seq IN ({CREATED_SEQ}) \
             AND a.type = 'evaluation.created' \
             AND NOT EXISTS (SELECT 1 FROM evaluations WHERE id = $1)"
        ))
        .bind(id)
        .bind(tenant.workspace_id())
        .bind(self.tail_from(tenant).await?)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut ev = evaluation_from_row(&row)?;
        if ev.decision == Effect::RequireApproval {
            let rows = sqlx::query(
                "SELECT idx, name, approvers, required, channels, timeout_secs, on_timeout, \
                 status, started_at, expires_at, decided_at FROM evaluation_stages \
                 WHERE evaluation_id = $1 ORDER BY idx",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            ev.stages = rows.iter().map(stage_from_row).collect::<Result<_>>()?;
            ev.decisions = crate::approvals::decisions(&self.pool, id).await?;
        }
        ev.receipt = self.receipt(tenant, id).await?;
        Ok(Some(ev))
    }

    /// Every event of one evaluation, oldest first: its creation found by seq, the rest by
    /// `audit_events_by_evaluation`.
    pub async fn timeline(&self, tenant: &Tenant, evaluation_id: &str) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE evaluation_id = $1 \
             AND workspace_id = $2 AND type <> 'evaluation.created' \
             UNION ALL SELECT {EVENT_COLUMNS} FROM audit_events WHERE workspace_id = $2 \
             AND seq IN ({created}) AND evaluation_id = $1 AND type = 'evaluation.created'",
            created = CREATED_SEQ,
        ))
        .bind(evaluation_id)
        .bind(tenant.workspace_id())
        .bind(self.tail_from(tenant).await?)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agentnexus_engine::canonical;
    use agentnexus_engine::{MatchedRule, Proposal, ProposalFields, RuleError};
    use serde_json::json;

    use super::*;

    /// The event data as it was built before `event_data`: a `Value`, then canonical JSON.
    fn through_value(ev: &NewEvaluation) -> String {
        let p = &ev.proposal;
        let mut data = json!({
            "agent_id": p.agent_id, "action": p.action, "resource": p.resource,
            "amount_cents": p.amount_cents, "cost_cents": p.cost_cents,
            "params": p.params, "context": p.context,
            "decision": ev.decision, "status": Status::initial(ev.decision),
            "reason": ev.reason, "matched_rules": ev.matched_rules,
            "policy_versions": ev.policy_versions, "proposal_hash": ev.proposal_hash,
        });
        let extra = data.as_object_mut().unwrap();
        if !ev.errors.is_empty() {
            extra.insert("errors".into(), json!(ev.errors));
        }
        for (k, v) in [
            ("approval", ev.approval.as_ref().map(|a| json!(a))),
            ("trace", ev.trace.clone()),
            (
                "idempotency_key",
                ev.idempotency_key.clone().map(Value::from),
            ),
            ("webhook_url", ev.webhook_url.clone().map(Value::from)),
        ] {
            if let Some(v) = v {
                extra.insert(k.into(), v);
            }
        }
        canonical::to_string(&data)
    }

    fn evaluation(fields: ProposalFields) -> NewEvaluation {
        let proposal = Proposal::new(fields).unwrap();
        NewEvaluation {
            id: "ev_1".into(),
            tenant: Tenant::new("ws_1".into()),
            key_id: None,
            proposal_hash: proposal.hash(),
            proposal,
            trace: None,
            idempotency_key: None,
            webhook_url: None,
            decision: Effect::Allow,
            reason: "allowed by rule p/r".into(),
            matched_rules: vec![],
            errors: vec![],
            approval: None,
            stages: vec![],
            notices: vec![],
            policy_versions: BTreeMap::new(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn event_data_is_the_canonical_json_of_the_evaluation() {
        let plain = evaluation(ProposalFields {
            agent_id: Some("a".into()),
            action: Some("svc.read".into()),
            ..Default::default()
        });
        let mut full = evaluation(ProposalFields {
            agent_id: Some("bot \"é\" 😀".into()),
            action: Some("stripe.refund".into()),
            resource: Some("cus/\u{ff61}".into()),
            amount_cents: Some(9_007_199_254_740_991),
            cost_cents: Some(12),
            params: Some(json!({"z": [1, 2.5, null], "a": {"\u{e000}": 1, "😀": 2}})),
            context: Some(json!({"environment": "production", "n": -0.0})),
        });
        full.decision = Effect::RequireApproval;
        full.reason = "needs \\ a human\n".into();
        full.trace = Some(json!({"span": "s1", "b": [true]}));
        full.idempotency_key = Some("k-1".into());
        full.webhook_url = Some("https://example.com/hook?a=1&b=é".into());
        full.approval = Some(crate::ApprovalRule {
            tier: agentnexus_engine::Tier::Critical,
            policy: "p\"é".into(),
            rule: "r[0]".into(),
        });
        full.matched_rules = vec![
            MatchedRule {
                policy: "p".into(),
                rule: "r".into(),
                effect: Effect::RequireApproval,
            },
            MatchedRule {
                policy: "\u{ff61}".into(),
                rule: "😀".into(),
                effect: Effect::Allow,
            },
        ];
        full.errors = vec![RuleError {
            policy: "p".into(),
            rule: "broken".into(),
            message: "no such key: \"x\"".into(),
        }];
        full.policy_versions = [("p", 3), ("\u{ff61}", 1), ("😀", 2)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
        let mut denied = plain.clone();
        denied.decision = Effect::Deny;
        for ev in [&plain, &full, &denied] {
            assert_eq!(ev.event_data(), through_value(ev));
        }
    }
}
