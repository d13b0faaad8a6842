//! What more than one door speaks: the JSON shapes of evaluations (REST and MCP), the evaluate
//! request and the answers about an evaluation, rendered from the use cases' types; and the
//! evidence bundle as a download (REST and the dashboard).

use agentnexus_app::evaluations::{ApprovalSummary, EvaluateInput, Summary};
use agentnexus_engine::ProposalFields;
use agentnexus_store::{Evaluation, StageRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A proposed action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The agent proposing the action (1-256 characters, no control characters).
    #[schema(value_type = String, required = true, min_length = 1,
        max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub agent_id: Option<String>,
    /// What it wants to do (1-256 characters, no control characters).
    #[schema(value_type = String, required = true, min_length = 1,
        max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub action: Option<String>,
    /// What it acts on (at most 1024 characters, no control characters).
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub resource: Option<String>,
    /// Money the action moves, in cents; 0 when absent.
    #[serde(default, deserialize_with = "agentnexus_engine::whole_number")]
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    pub amount_cents: Option<i64>,
    /// What the agent spent to get here, in cents, attributed to `agent_id`.
    #[serde(default, deserialize_with = "agentnexus_engine::whole_number")]
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    pub cost_cents: Option<i64>,
    /// The action's own parameters, as the agent would pass them.
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    /// What surrounds the action (environment, ticket, …). `on_behalf_of`, when present, is
    /// the e-mail of the person the agent acts for: that person cannot approve it.
    #[schema(value_type = Option<ContextSchema>)]
    pub context: Option<Value>,
    /// Trace metadata (`trace_id`, `span_id`, `session_id`, …), stored with the evaluation.
    #[schema(value_type = Option<Object>)]
    pub trace: Option<Value>,
    /// The same key within 24 hours returns the first evaluation (1-256 characters).
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Where to POST `approval_required` and `terminal_outcome` events: an http(s) URL with a
    /// host name or an IP address, at most 2048 characters (the pattern is exact; private
    /// addresses are refused at delivery unless the server allows them).
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
}

/// The documented shape of `context`: any object; `on_behalf_of`, when present, a string.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ContextSchema {
    #[schema(value_type = String, required = false)]
    on_behalf_of: Option<String>,
}

impl From<EvaluateRequest> for EvaluateInput {
    fn from(r: EvaluateRequest) -> Self {
        EvaluateInput {
            proposal: ProposalFields {
                agent_id: r.agent_id,
                action: r.action,
                resource: r.resource,
                amount_cents: r.amount_cents,
                cost_cents: r.cost_cents,
                params: r.params,
                context: r.context,
            },
            trace: r.trace,
            idempotency_key: r.idempotency_key,
            webhook_url: r.webhook_url,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageView {
    pub index: i64,
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    /// `low`, `medium`, `high` or `critical`.
    pub tier: String,
    pub policy: String,
    pub rule: String,
    /// The stage waiting now; absent once the evaluation is final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageView>,
}

/// The answer to an evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationResponse {
    #[schema(example = "ev_01jq5v6m1x7r0c1t2a3b4c5d6e")]
    pub evaluation_id: String,
    /// `allow`, `deny` or `require_approval`.
    pub decision: &'static str,
    /// `allowed`, `denied`, `pending`, `approved`, `rejected` or `expired`.
    pub status: &'static str,
    pub reason: String,
    /// `[{"policy", "rule", "effect"}]`
    #[schema(value_type = Vec<Object>)]
    pub matched_rules: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
    /// Policy name to the version that decided.
    #[schema(value_type = Object)]
    pub policy_versions: Value,
    /// SHA-256 of the canonical proposal (RFC 8785).
    pub proposal_hash: String,
    /// Rules whose expression failed at run time: `[{"policy", "rule", "message"}]`.
    #[serde(skip_serializing_if = "is_empty_list")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
    pub created_at: DateTime<Utc>,
}

fn is_empty_list(v: &Value) -> bool {
    v.as_array().is_none_or(Vec::is_empty)
}

/// An evaluation with its proposal, stages and human decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationDetail {
    #[serde(flatten)]
    pub summary: EvaluationResponse,
    pub agent_id: String,
    pub action: String,
    pub resource: Option<String>,
    pub amount_cents: i64,
    pub cost_cents: i64,
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(value_type = Object)]
    pub context: Value,
    #[schema(value_type = Option<Object>)]
    pub trace: Option<Value>,
    pub idempotency_key: Option<String>,
    pub stages: Vec<StageDetail>,
    /// Human decisions so far, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
    pub updated_at: DateTime<Utc>,
    /// What the executing system reported after acting on it; null until it has
    /// (`POST /api/v1/evaluations/{id}/receipt`).
    pub receipt: Option<ReceiptView>,
}

/// An execution receipt.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    /// `executed`, `failed` or `skipped`.
    pub outcome: String,
    pub at: DateTime<Utc>,
    /// False when `executed` was reported for an evaluation that was not `allowed` or
    /// `approved`, or with a proposal hash other than the evaluation's.
    pub conforms: bool,
    /// Why it does not conform; empty when it does.
    pub problems: Vec<String>,
    /// The proposal hash reported.
    pub proposal_hash: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    /// Who reported it (`key:ID`).
    pub reported_by: String,
}

impl From<agentnexus_store::Receipt> for ReceiptView {
    fn from(r: agentnexus_store::Receipt) -> Self {
        ReceiptView {
            outcome: r.outcome,
            at: r.at,
            conforms: r.conforms,
            problems: r.problems,
            proposal_hash: r.proposal_hash,
            detail: r.detail,
            reported_by: r.actor,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageDetail {
    pub index: i64,
    pub name: String,
    pub approvers: Vec<String>,
    pub required: i64,
    pub channels: Vec<String>,
    pub timeout_secs: Option<i64>,
    pub on_timeout: String,
    /// `waiting` (the current stage), `queued` (not reached), `passed`, `rejected` or
    /// `expired`.
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<&StageRecord> for StageDetail {
    fn from(s: &StageRecord) -> Self {
        StageDetail {
            index: s.index,
            name: s.name.clone(),
            approvers: s.approvers.clone(),
            required: s.required,
            channels: s.channels.iter().map(|c| c.as_str().to_owned()).collect(),
            timeout_secs: s.timeout_secs,
            on_timeout: s.on_timeout.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            started_at: s.started_at,
            expires_at: s.expires_at,
            decided_at: s.decided_at,
        }
    }
}

fn approval_view(a: ApprovalSummary) -> ApprovalView {
    ApprovalView {
        tier: a.tier.as_str().to_owned(),
        policy: a.policy,
        rule: a.rule,
        stage: a.stage.map(|s| StageView {
            index: s.index,
            name: s.name,
            expires_at: s.expires_at,
        }),
    }
}

impl From<Summary> for EvaluationResponse {
    fn from(s: Summary) -> Self {
        EvaluationResponse {
            evaluation_id: s.evaluation_id,
            decision: s.decision.as_str(),
            status: s.status.as_str(),
            reason: s.reason,
            matched_rules: s.matched_rules,
            approval: s.approval.map(approval_view),
            policy_versions: s.policy_versions,
            proposal_hash: s.proposal_hash,
            errors: s.errors,
            created_at: s.created_at,
        }
    }
}

impl From<Evaluation> for EvaluationDetail {
    fn from(ev: Evaluation) -> Self {
        EvaluationDetail {
            summary: Summary::of(&ev).into(),
            stages: ev.stages.iter().map(StageDetail::from).collect(),
            agent_id: ev.agent_id,
            action: ev.action,
            resource: ev.resource,
            amount_cents: ev.amount_cents,
            cost_cents: ev.cost_cents,
            params: ev.params,
            context: ev.context,
            trace: ev.trace,
            idempotency_key: ev.idempotency_key,
            decisions: ev
                .decisions
                .into_iter()
                .map(|d| serde_json::to_value(d).unwrap_or_default())
                .collect(),
            updated_at: ev.updated_at,
            receipt: ev.receipt.map(Into::into),
        }
    }
}

/// The evidence bundle as a download, streamed as it is made.
pub fn evidence_zip(chunks: agentnexus_app::evidence::Chunks) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    (
        [
            (header::CONTENT_TYPE, "application/zip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"agentnexus-evidence.zip\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
