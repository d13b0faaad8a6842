//! How an evaluation is read back: from its row, or — final at once, it has none — from its
//! `evaluation.created` event, whose data holds all of it; both read as the same columns.

use agentnexus_engine::Effect;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Evaluation, Result, StageRecord, StageStatus, Status, StoreError, from_micros};

pub(crate) const EVALUATION_COLUMNS: &str = "id, agent_id, action, resource, amount_cents, cost_cents, \
    params, context, trace, idempotency_key, webhook_url, decision, status, reason, \
    matched_rules, errors, approval, current_stage, policy_versions, proposal_hash, key_id, \
    created_at, updated_at";

/// A field of an `evaluation.created` event (aliased `a`) as SQL: text (`->>`), a number
/// (`->>`, as BIGINT) or JSON text (`->`); absent or JSON null, it is NULL (`->` gives `null`).
pub(crate) fn event_field(sqlite: bool, kind: Field, key: &str) -> String {
    match (sqlite, kind) {
        (true, Field::Text | Field::Int) => format!("a.data ->> '{key}'"),
        (true, Field::Json) => format!("a.data -> '{key}'"),
        (false, Field::Text) => format!("(a.data::json ->> '{key}')"),
        (false, Field::Int) => format!("(a.data::json ->> '{key}')::bigint"),
        (false, Field::Json) => format!("(a.data::json -> '{key}')::text"),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Field {
    Text,
    Int,
    Json,
}

/// `EVALUATION_COLUMNS` read from an evaluation's `evaluation.created` event (aliased `a`),
/// named as they are: how an evaluation final at once, which has no row (see `insert`), is
/// read.
pub(crate) fn event_columns(sqlite: bool) -> String {
    use Field::{Int, Json, Text};
    let f = |kind, key| event_field(sqlite, kind, key);
    let or = |kind, key, default| format!("COALESCE({}, '{default}')", f(kind, key));
    [
        ("a.evaluation_id".to_owned(), "id"),
        (f(Text, "agent_id"), "agent_id"),
        (f(Text, "action"), "action"),
        (f(Text, "resource"), "resource"),
        (f(Int, "amount_cents"), "amount_cents"),
        (f(Int, "cost_cents"), "cost_cents"),
        (or(Json, "params", "{}"), "params"),
        (or(Json, "context", "{}"), "context"),
        (f(Json, "trace"), "trace"),
        (f(Text, "idempotency_key"), "idempotency_key"),
        (f(Text, "webhook_url"), "webhook_url"),
        (f(Text, "decision"), "decision"),
        (f(Text, "status"), "status"),
        (f(Text, "reason"), "reason"),
        (f(Json, "matched_rules"), "matched_rules"),
        (or(Json, "errors", "[]"), "errors"),
        (f(Json, "approval"), "approval"),
        ("CAST(NULL AS BIGINT)".to_owned(), "current_stage"),
        (f(Json, "policy_versions"), "policy_versions"),
        (f(Text, "proposal_hash"), "proposal_hash"),
        (
            "CASE WHEN a.actor LIKE 'key:%' THEN substr(a.actor, 5) END".to_owned(),
            "key_id",
        ),
        ("a.occurred_at".to_owned(), "created_at"),
        ("a.occurred_at".to_owned(), "updated_at"),
    ]
    .map(|(expr, name)| format!("{expr} AS {name}"))
    .join(", ")
}

fn json_column(row: &AnyRow, name: &str) -> Result<Value> {
    let text: String = row.try_get(name)?;
    Ok(serde_json::from_str(&text)?)
}

fn optional_json<T: serde::de::DeserializeOwned>(row: &AnyRow, name: &str) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(name)?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

pub(crate) fn evaluation_from_row(row: &AnyRow) -> Result<Evaluation> {
    let decision: String = row.try_get("decision")?;
    let status: String = row.try_get("status")?;
    Ok(Evaluation {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        amount_cents: row.try_get("amount_cents")?,
        cost_cents: row.try_get("cost_cents")?,
        params: json_column(row, "params")?,
        context: json_column(row, "context")?,
        trace: optional_json(row, "trace")?,
        idempotency_key: row.try_get("idempotency_key")?,
        webhook_url: row.try_get("webhook_url")?,
        decision: serde_json::from_value::<Effect>(Value::String(decision))?,
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        reason: row.try_get("reason")?,
        matched_rules: json_column(row, "matched_rules")?,
        errors: json_column(row, "errors")?,
        approval: optional_json(row, "approval")?,
        current_stage: row.try_get("current_stage")?,
        policy_versions: json_column(row, "policy_versions")?,
        proposal_hash: row.try_get("proposal_hash")?,
        key_id: row.try_get("key_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
        stages: Vec::new(),
        decisions: Vec::new(),
        receipt: None,
    })
}

pub(crate) fn stage_from_row(row: &AnyRow) -> Result<StageRecord> {
    let approvers: String = row.try_get("approvers")?;
    let channels: String = row.try_get("channels")?;
    let on_timeout: String = row.try_get("on_timeout")?;
    let status: String = row.try_get("status")?;
    let time = |name| -> Result<Option<DateTime<Utc>>> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(from_micros))
    };
    Ok(StageRecord {
        index: row.try_get("idx")?,
        name: row.try_get("name")?,
        approvers: serde_json::from_str(&approvers)?,
        required: row.try_get("required")?,
        channels: serde_json::from_str(&channels)?,
        timeout_secs: row.try_get("timeout_secs")?,
        on_timeout: serde_json::from_value(Value::String(on_timeout))?,
        status: StageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("stage status {status}")))?,
        started_at: time("started_at")?,
        expires_at: time("expires_at")?,
        decided_at: time("decided_at")?,
    })
}

/// The policies of an evaluation's `matched_rules` (as its event holds them), each once.
pub(crate) fn matched_policies(matched_rules: Option<&str>) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Matched {
        policy: String,
    }
    let rules: Vec<Matched> = matched_rules
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let mut policies: Vec<String> = rules.into_iter().map(|m| m.policy).collect();
    policies.sort_unstable();
    policies.dedup();
    policies
}
