//! The agent inventory and the kill switch (SPEC §8).

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::agents::{Agent, AgentInput, KillSwitch};
use agentnexus_app::types::AgentId;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path};

/// An agent's attributed cost (UTC days and months).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentSpend {
    pub today_cents: i64,
    pub month_cents: i64,
}

/// Why an agent may not act.
#[derive(Debug, Serialize, ToSchema)]
pub struct Suspension {
    pub reason: String,
    pub at: DateTime<Utc>,
    /// Who suspended it (`member:…`, `key:…`).
    pub by: String,
    /// True when it is the workspace's kill switch rather than the agent's own suspension.
    pub kill_switch: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    /// `suspended` while the agent or the whole workspace is halted: every evaluate is denied.
    #[schema(pattern = "^(active|suspended)$")]
    pub status: &'static str,
    /// Its first evaluation; null for an agent described or suspended before it was seen.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub evaluations: i64,
    pub spend: AgentSpend,
    pub owner: Option<String>,
    pub purpose: Option<String>,
    pub model: Option<String>,
    pub tools: Vec<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub risk_tier: Option<String>,
    /// What stops it; null while active.
    pub suspension: Option<Suspension>,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        let r = a.record;
        AgentView {
            agent_id: r.agent_id,
            status: if a.halted.is_some() {
                "suspended"
            } else {
                "active"
            },
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            evaluations: r.evaluations,
            spend: AgentSpend {
                today_cents: r.spend.today_cents,
                month_cents: r.spend.month_cents,
            },
            owner: r.profile.owner,
            purpose: r.profile.purpose,
            model: r.profile.model,
            tools: r.profile.tools,
            risk_tier: r.profile.risk_tier,
            suspension: a.halted.map(|s| Suspension {
                reason: s.halt.reason,
                at: s.halt.at,
                by: s.halt.by,
                kill_switch: s.kill_switch,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// What people say about an agent. PUT sets all of it: an absent field is cleared.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    /// Who answers for it (at most 200 characters, no control characters).
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub owner: Option<String>,
    /// What it is for (at most 2,000 characters; line breaks allowed, other control
    /// characters not).
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub purpose: Option<String>,
    /// The model it runs on (at most 200 characters, no control characters).
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub model: Option<String>,
    /// The tools it may call (at most 100 names of at most 200 characters).
    #[schema(max_items = 100)]
    pub tools: Option<Vec<String>>,
    #[schema(pattern = "^(low|medium|high|critical)$")]
    pub risk_tier: Option<String>,
}

/// Why an agent is suspended or resumed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltRequest {
    /// One line, 1-500 characters; required to suspend, optional to resume. Denials answer
    /// `agent suspended: REASON`.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspendedAgent {
    #[serde(flatten)]
    pub agent: AgentView,
    /// Its pending evaluations this ended `rejected`.
    pub ended_evaluations: usize,
}

fn agent_id(id: String) -> agentnexus_app::Result<AgentId> {
    AgentId::parse("agent_id", id)
}

/// Every agent seen (and those described before they were), most recently seen first; at most
/// 1,000.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", operation_id = "list_agents",
    responses((status = 200, body = AgentList),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<AgentList>> {
    let agents = app.agents(&admin.reader()).await?;
    Ok(axum::Json(AgentList {
        agents: agents.into_iter().map(Into::into).collect(),
    }))
}

/// One agent of the inventory.
#[utoipa::path(get, path = "/api/v1/agents/{agent_id}", tag = "agents", operation_id = "get_agent",
    params(("agent_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 256 characters, no control characters")),
    responses((status = 200, body = AgentView),
        (status = 404, description = "Never seen nor described in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an agent id", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<AgentView>> {
    let agent = app.agent(&admin.reader(), &agent_id(id)?).await?;
    Ok(axum::Json(agent.into()))
}

/// Describe an agent: owner, purpose, model, tools, risk tier. An agent not seen yet joins
/// the inventory. Audited as `agent.updated`.
#[utoipa::path(put, path = "/api/v1/agents/{agent_id}", tag = "agents", operation_id = "put_agent",
    params(("agent_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 256 characters, no control characters")), request_body = AgentRequest,
    responses((status = 200, body = AgentView),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<AgentRequest>,
) -> ApiResult<axum::Json<AgentView>> {
    let input = AgentInput {
        owner: req.owner,
        purpose: req.purpose,
        model: req.model,
        tools: req.tools,
        risk_tier: req.risk_tier,
    };
    let agent = app.describe_agent(&admin, &agent_id(id)?, input).await?;
    Ok(axum::Json(agent.into()))
}

/// Suspend an agent: from now on every evaluate of it answers `deny` (`agent suspended:
/// REASON`) whatever the policies say, on this server at once and on every other within
/// `AGENTNEXUS_REFRESH_SECS`; its pending evaluations end `rejected` (each with
/// `terminal_outcome` to its webhook). An agent not seen yet may be suspended. Audited as
/// `agent.suspended`.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/suspend", tag = "agents",
    params(("agent_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 256 characters, no control characters")), request_body = HaltRequest,
    responses((status = 200, body = SuspendedAgent),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn suspend(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<HaltRequest>,
) -> ApiResult<axum::Json<SuspendedAgent>> {
    let (agent, ended) = app
        .suspend_agent(&admin, &agent_id(id)?, req.reason)
        .await?;
    Ok(axum::Json(SuspendedAgent {
        agent: agent.into(),
        ended_evaluations: ended,
    }))
}

/// Let a suspended agent act again (while the workspace's kill switch is engaged it stays
/// stopped). Audited as `agent.resumed`; resuming an active agent changes nothing.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/resume", tag = "agents",
    params(("agent_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 256 characters, no control characters")), request_body = HaltRequest,
    responses((status = 200, body = AgentView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an agent id", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn resume(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<HaltRequest>,
) -> ApiResult<axum::Json<AgentView>> {
    let agent = app.resume_agent(&admin, &agent_id(id)?, req.reason).await?;
    Ok(axum::Json(agent.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchRequest {
    /// True stops every agent of the workspace; false lets them act again (those suspended on
    /// their own stay suspended).
    pub engaged: bool,
    /// One line, 1-500 characters; required to engage.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KillSwitchView {
    pub engaged: bool,
    pub reason: Option<String>,
    pub engaged_at: Option<DateTime<Utc>>,
    /// Who engaged it (`member:…`, `key:…`).
    pub engaged_by: Option<String>,
    /// Pending evaluations this request ended `rejected` (0 when read).
    pub ended_evaluations: usize,
}

fn kill_switch_view(k: KillSwitch, ended: usize) -> KillSwitchView {
    KillSwitchView {
        engaged: k.engaged.is_some(),
        reason: k.engaged.as_ref().map(|h| h.reason.clone()),
        engaged_at: k.engaged.as_ref().map(|h| h.at),
        engaged_by: k.engaged.map(|h| h.by),
        ended_evaluations: ended,
    }
}

/// The workspace's kill switch as it stands.
#[utoipa::path(get, path = "/api/v1/kill-switch", tag = "agents",
    responses((status = 200, body = KillSwitchView)),
    security(("api_key" = [])))]
pub async fn kill_switch(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<KillSwitchView>> {
    let k = app.kill_switch(&admin.reader()).await?;
    Ok(axum::Json(kill_switch_view(k, 0)))
}

/// Engage or release the workspace's kill switch: engaged, every evaluate of every agent
/// answers `deny` (`agent suspended: kill switch engaged: REASON`) and every pending
/// evaluation ends `rejected`, as suspending each agent would. Audited as
/// `kill_switch.engaged` / `kill_switch.released`.
#[utoipa::path(put, path = "/api/v1/kill-switch", tag = "agents",
    request_body = KillSwitchRequest,
    responses((status = 200, body = KillSwitchView),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_kill_switch(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<KillSwitchRequest>,
) -> ApiResult<axum::Json<KillSwitchView>> {
    let (k, ended) = app.set_kill_switch(&admin, req.engaged, req.reason).await?;
    Ok(axum::Json(kill_switch_view(k, ended)))
}
