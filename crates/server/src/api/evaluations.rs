//! Evaluate (SPEC §4) and reading evaluations back.

use std::sync::{Arc, LazyLock};

use agentnexus_engine::{Effect, Proposal, ProposalFields, Spend};
use agentnexus_store::{
    Evaluation, EvaluationFilter, NewEvaluation, Recorded, StageRecord, Status,
};
use axum::extract::State;
use chrono::{DateTime, Utc};
use metrics::Counter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

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

/// Parses everything around the proposal itself.
pub(crate) struct Extras {
    trace: Option<Value>,
    idempotency_key: Option<String>,
    webhook_url: Option<String>,
}

pub(crate) fn parse(req: EvaluateRequest) -> ApiResult<(Proposal, Extras)> {
    let proposal = Proposal::new(ProposalFields {
        agent_id: req.agent_id,
        action: req.action,
        resource: req.resource,
        amount_cents: req.amount_cents,
        cost_cents: req.cost_cents,
        params: req.params,
        context: req.context,
    })
    .map_err(|e| ApiError::field(e.field, e.message))?;
    // Separation of duties compares it with approvers' e-mails: it must be one.
    if let Some(v) = proposal.context.get("on_behalf_of")
        && !v.is_string()
    {
        return Err(ApiError::field(
            "context.on_behalf_of",
            "must be a string: the e-mail of the person the agent acts for",
        ));
    }
    let trace = match req.trace {
        None | Some(Value::Null) => None,
        Some(t @ Value::Object(_)) => Some(t),
        Some(_) => return Err(ApiError::field("trace", "must be an object")),
    };
    if let Some(k) = &req.idempotency_key
        && (k.is_empty() || k.chars().count() > 256)
    {
        return Err(ApiError::field(
            "idempotency_key",
            "must be 1 to 256 characters",
        ));
    }
    if let Some(url) = &req.webhook_url
        && !crate::extract::is_webhook_url(url)
    {
        return Err(ApiError::field(
            "webhook_url",
            "must be an http(s) URL with a host, at most 2048 characters",
        ));
    }
    Ok((
        proposal,
        Extras {
            trace,
            idempotency_key: req.idempotency_key,
            webhook_url: req.webhook_url,
        },
    ))
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
    /// `waiting`, `queued`, `passed`, `rejected`, `expired` or `skipped`.
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<StageRecord> for StageDetail {
    fn from(s: StageRecord) -> Self {
        StageDetail {
            index: s.index,
            name: s.name,
            approvers: s.approvers,
            required: s.required,
            channels: s.channels,
            timeout_secs: s.timeout_secs,
            on_timeout: s.on_timeout,
            status: s.status,
            started_at: s.started_at,
            expires_at: s.expires_at,
            decided_at: s.decided_at,
        }
    }
}

fn summary(ev: &Evaluation) -> EvaluationResponse {
    let stage = ev
        .current_stage
        .filter(|_| ev.status == Status::Pending)
        .and_then(|i| ev.stages.iter().find(|s| s.index == i));
    EvaluationResponse {
        evaluation_id: ev.id.clone(),
        decision: ev.decision.as_str(),
        status: ev.status.as_str(),
        reason: ev.reason.clone(),
        matched_rules: ev.matched_rules.clone(),
        approval: approval_view(ev.approval.as_ref(), stage),
        policy_versions: ev.policy_versions.clone(),
        proposal_hash: ev.proposal_hash.clone(),
        errors: ev.errors.clone(),
        created_at: ev.created_at,
    }
}

/// The answer for an evaluation about to be recorded, as [`summary`] will read it back, without
/// first copying all of it (params, context, stages) into an [`Evaluation`].
fn fresh_summary(new: &NewEvaluation) -> EvaluationResponse {
    let status = Status::initial(new.decision);
    let stage = match status {
        Status::Pending => new.stage_records().into_iter().next(),
        _ => None,
    };
    let json = |v: Result<Value, _>| v.unwrap_or_default();
    EvaluationResponse {
        evaluation_id: new.id.clone(),
        decision: new.decision.as_str(),
        status: status.as_str(),
        reason: new.reason.clone(),
        matched_rules: json(serde_json::to_value(&new.matched_rules)),
        approval: approval_view(new.approval.as_ref(), stage.as_ref()),
        policy_versions: json(serde_json::to_value(&new.policy_versions)),
        proposal_hash: new.proposal_hash.clone(),
        errors: json(serde_json::to_value(&new.errors)),
        created_at: new.created_at,
    }
}

/// The approval an evaluation waits for, with the stage it is at while pending.
fn approval_view(approval: Option<&Value>, stage: Option<&StageRecord>) -> Option<ApprovalView> {
    let a = approval?;
    let text = |k: &str| {
        a.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(ApprovalView {
        tier: text("tier"),
        policy: text("policy"),
        rule: text("rule"),
        stage: stage.map(|s| StageView {
            index: s.index,
            name: s.name.clone(),
            expires_at: s.expires_at,
        }),
    })
}

/// `agentnexus_decisions_total` by effect; its handles kept (see `ops::RequestMetrics`).
fn count_decision(effect: Effect) {
    static COUNTERS: LazyLock<[(Effect, Counter); 3]> = LazyLock::new(|| {
        [Effect::Allow, Effect::RequireApproval, Effect::Deny].map(|e| {
            let counter = metrics::counter!("agentnexus_decisions_total", "effect" => e.as_str());
            (e, counter)
        })
    });
    if let Some((_, counter)) = COUNTERS.iter().find(|(e, _)| *e == effect) {
        counter.increment(1);
    }
}

pub fn detail(ev: Evaluation) -> EvaluationDetail {
    EvaluationDetail {
        summary: summary(&ev),
        agent_id: ev.agent_id,
        action: ev.action,
        resource: ev.resource,
        amount_cents: ev.amount_cents,
        cost_cents: ev.cost_cents,
        params: ev.params,
        context: ev.context,
        trace: ev.trace,
        idempotency_key: ev.idempotency_key,
        stages: ev.stages.into_iter().map(StageDetail::from).collect(),
        decisions: ev
            .decisions
            .into_iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect(),
        updated_at: ev.updated_at,
    }
}

/// Decide a proposed action.
#[utoipa::path(
    post, path = "/api/v1/evaluate", tag = "evaluate",
    request_body = EvaluateRequest,
    responses(
        (status = 200, description = "The decision, recorded with its audit event", body = EvaluationResponse),
        (status = 409, description = "The idempotency key was used for another proposal in the last 24 hours; nothing was recorded", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn evaluate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<EvaluateRequest>,
) -> ApiResult<axum::Json<EvaluationResponse>> {
    decide(&state, &caller, req).await.map(axum::Json)
}

/// Decides a proposal and records it: the use case behind REST evaluate and the MCP tool.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    req: EvaluateRequest,
) -> ApiResult<EvaluationResponse> {
    let (proposal, extras) = parse(req)?;
    let tenant = &caller.tenant;
    if extras.webhook_url.is_some() && state.limits.queue_full(tenant.workspace_id()) {
        return Err(ApiError::TooMany {
            detail: format!(
                "this workspace has {} or more deliveries waiting \
                 (AGENTNEXUS_QUEUE_LIMIT_PER_WORKSPACE): no more webhooks are queued until \
                 some are delivered or given up",
                state.config.queue_limit_per_workspace
            ),
            retry_after_secs: 5,
        });
    }
    let now = state.now();
    let proposal_hash = proposal.hash();
    if let Some(key) = &extras.idempotency_key
        && let Some(id) = state.store.idempotent_evaluation(tenant, key, now).await?
    {
        return existing(state, caller, &id, &proposal_hash).await;
    }
    let policies = state.policy_set(tenant).await?;
    let spend = if policies.set.uses_spend() {
        state.store.spend(tenant, &proposal.agent_id, now).await?
    } else {
        Spend::default()
    };
    let decision = policies.set.decide(&proposal, spend);
    let (approval, stages) = match decision.approval {
        Some(a) => (
            Some(serde_json::json!({"tier": a.tier, "policy": a.policy, "rule": a.rule})),
            a.approval.stages,
        ),
        None => (None, Vec::new()),
    };
    let id = agentnexus_store::new_evaluation_id();
    // The first stage's approvers get their secure links with the evaluation itself.
    let notices = match stages.first() {
        Some(stage) => {
            let about = crate::approvals::About {
                evaluation_id: &id,
                agent_id: &proposal.agent_id,
                action: &proposal.action,
                resource: proposal.resource.as_deref(),
                amount_cents: proposal.amount_cents,
                reason: &decision.reason,
                stage_name: &stage.name,
                tier: approval.as_ref().and_then(|a| a["tier"].as_str()),
            };
            let channels: Vec<String> = serde_json::to_value(&stage.channels)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let reach = crate::approvals::Reach {
                approvers: &stage.approvers,
                channels: &channels,
                timeout_secs: stage.timeout.map(|t| t.0),
            };
            crate::approvals::notices(state, tenant, reach, &about, now).await?
        }
        None => Vec::new(),
    };
    let new = NewEvaluation {
        id,
        tenant: tenant.clone(),
        key_id: Some(caller.key_id.clone()),
        proposal_hash,
        proposal,
        trace: extras.trace,
        idempotency_key: extras.idempotency_key,
        webhook_url: extras.webhook_url,
        decision: decision.effect,
        reason: decision.reason,
        matched_rules: decision.matched_rules,
        errors: decision.errors,
        approval,
        stages,
        notices,
        policy_versions: decision.policy_versions,
        created_at: now,
    };
    let (answer, effect) = (fresh_summary(&new), new.decision);
    match state.store.record_evaluation(new).await? {
        Recorded::Created => {
            count_decision(effect);
            Ok(answer)
        }
        Recorded::Existing(id) => existing(state, caller, &id, &answer.proposal_hash).await,
    }
}

/// The evaluation an idempotency key already names, if it was made for the same proposal;
/// another proposal under the same key is a conflict (SPEC §4), recorded nowhere.
async fn existing(
    state: &AppState,
    caller: &Caller,
    id: &str,
    proposal_hash: &str,
) -> ApiResult<EvaluationResponse> {
    let ev = state
        .store
        .evaluation(&caller.tenant, id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("idempotency key names missing {id}")))?;
    if ev.proposal_hash != proposal_hash {
        return Err(ApiError::Conflict(format!(
            "idempotency_key was used in the last 24 hours for another proposal (evaluation \
             {id}); use a new key for a new proposal"
        )));
    }
    Ok(summary(&ev))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Hold the request until the status changes or this many seconds pass (at most 60).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
}

/// One evaluation with its current status, stages and decisions.
#[utoipa::path(
    get, path = "/api/v1/evaluations/{id}", tag = "evaluate",
    params(("id" = String, Path, description = "Evaluation id"), WaitParams),
    responses(
        (status = 200, body = EvaluationDetail),
        (status = 404, description = "No such evaluation in this workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get_evaluation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
) -> ApiResult<axum::Json<EvaluationDetail>> {
    let wait = params.wait.unwrap_or(0);
    if wait > 60 {
        return Err(ApiError::field("wait", "must be 0 to 60 seconds"));
    }
    let ev = state
        .wait_for_change(
            &caller.tenant,
            &caller.key_id,
            &id,
            std::time::Duration::from_secs(wait),
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(detail(ev)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status.
    #[param(pattern = "^(allowed|denied|pending|approved|rejected|expired)$")]
    pub status: Option<String>,
    /// Only this agent.
    #[param(min_length = 1, max_length = 256)]
    pub agent_id: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 64)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationList {
    pub evaluations: Vec<EvaluationDetail>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Evaluations of the workspace, newest first.
#[utoipa::path(
    get, path = "/api/v1/evaluations", tag = "evaluate", params(ListParams),
    responses(
        (status = 200, body = EvaluationList),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_evaluations(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<EvaluationList>> {
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be allowed, denied, pending, approved, rejected or expired",
            )
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 500"));
    }
    if params
        .agent_id
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.chars().count() > 256)
    {
        return Err(ApiError::field("agent_id", "must be 1 to 256 characters"));
    }
    if params
        .cursor
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > 64)
    {
        return Err(ApiError::field(
            "cursor",
            "must be the next_cursor of a previous page",
        ));
    }
    let filter = EvaluationFilter {
        status,
        agent_id: params.agent_id,
        before: params.cursor,
        limit,
    };
    let page = state.store.evaluations(&caller.tenant, &filter).await?;
    let next_cursor = (page.len() == limit as usize)
        .then(|| page.last().map(|e| e.id.clone()))
        .flatten();
    Ok(axum::Json(EvaluationList {
        evaluations: page.into_iter().map(detail).collect(),
        next_cursor,
    }))
}
