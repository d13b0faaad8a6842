//! Analytics (SPEC §8): the governance report and the cost report.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::analytics::CostsInput;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::Query;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostsParams {
    /// The period's start (RFC 3339, included; to the millisecond); default 30 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// The period's end (RFC 3339, excluded); default now. At most 400 days after `from`.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `agent_id` (default), `action` or `day`.
    #[param(pattern = "^(agent_id|action|day)$")]
    pub group_by: Option<String>,
    /// With `group_by=day`: the days' time zone, `UTC` (default) or a whole-hour offset such
    /// as `+02:00`.
    pub tz: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostGroupView {
    /// The agent, the action, or the day (`YYYY-MM-DD`).
    pub key: String,
    pub cost_cents: i64,
    pub evaluations: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostReport {
    pub total_cents: i64,
    /// Days in order; agents and actions by cost, highest first. Only groups with evaluations.
    pub groups: Vec<CostGroupView>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: &'static str,
    /// The workspace's currency, which `cost_cents` are hundredths of.
    pub currency: String,
}

/// What the workspace's agents cost over a period (the `cost_cents` evaluate was given), by
/// agent, action or day: every evaluation created in the period, whatever its decision.
#[utoipa::path(get, path = "/api/v1/analytics/costs", tag = "analytics", params(CostsParams),
    responses((status = 200, body = CostReport),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad period or grouping", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn costs(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Query(params): Query<CostsParams>,
) -> ApiResult<axum::Json<CostReport>> {
    let reader = admin.reader();
    let input = CostsInput {
        from: params.from,
        to: params.to,
        group_by: params.group_by,
        tz: params.tz,
    };
    let (report, currency) =
        tokio::try_join!(app.costs(&reader, input), app.currency(reader.tenant()))?;
    Ok(axum::Json(CostReport {
        total_cents: report.total_cents,
        groups: report
            .groups
            .into_iter()
            .map(|g| CostGroupView {
                key: g.key,
                cost_cents: g.cost_cents,
                evaluations: g.evaluations,
            })
            .collect(),
        from: report.from,
        to: report.to,
        group_by: report.group_by,
        currency: currency.as_str().to_owned(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GovernanceParams {
    /// The period's start (RFC 3339, included; to the millisecond); default 30 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// The period's end (RFC 3339, excluded); default now. At most 400 days after `from`.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The series' buckets (UTC): `day` (default) or `hour` (periods of at most 31 days).
    #[param(pattern = "^(day|hour)$")]
    pub bucket: Option<String>,
}

/// Evaluations by how they were decided when proposed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ByDecision {
    pub allow: i64,
    pub deny: i64,
    pub require_approval: i64,
}

impl From<agentnexus_app::analytics::Decisions> for ByDecision {
    fn from(d: agentnexus_app::analytics::Decisions) -> Self {
        ByDecision {
            allow: d.allow,
            deny: d.deny,
            require_approval: d.require_approval,
        }
    }
}

/// Evaluations by status as it stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ByStatus {
    pub allowed: i64,
    pub denied: i64,
    pub pending: i64,
    pub approved: i64,
    pub rejected: i64,
    pub expired: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub evaluations: i64,
    pub by_decision: ByDecision,
    pub by_status: ByStatus,
}

/// Seconds from a stage's start to each human decision on it; null without decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyView {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCounts {
    pub agent_id: String,
    pub evaluations: i64,
    #[serde(flatten)]
    pub by_decision: ByDecision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyCounts {
    pub policy: String,
    /// Evaluations one of its rules matched.
    pub evaluations: i64,
    /// How those evaluations were decided (by all the policies together).
    #[serde(flatten)]
    pub by_decision: ByDecision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesBucket {
    /// The bucket's start (UTC).
    pub start: DateTime<Utc>,
    pub evaluations: i64,
    #[serde(flatten)]
    pub by_decision: ByDecision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptCounts {
    pub conforming: i64,
    pub nonconforming: i64,
    /// Allowed or approved evaluations of the period with no receipt.
    pub missing: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GovernanceView {
    pub totals: Totals,
    /// approved / (approved + rejected + expired); null before any of those.
    pub approval_rate: Option<f64>,
    pub decision_latency_seconds: LatencyView,
    /// The ten commonest reasons of rejected evaluations.
    pub top_rejection_reasons: Vec<ReasonCount>,
    /// Most evaluations first.
    pub by_agent: Vec<AgentCounts>,
    /// Per policy whose rules matched (an evaluation counts for each), most first.
    pub by_policy: Vec<PolicyCounts>,
    /// Every bucket of the period, empty ones too.
    pub series: Vec<SeriesBucket>,
    pub receipts: ReceiptCounts,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: &'static str,
}

/// How governance performed over a period: every evaluation created in it by decision and by
/// status now, the approval rate, how long people took, the commonest rejection reasons, per
/// agent, a series over time, and the execution receipts.
#[utoipa::path(get, path = "/api/v1/analytics/governance", tag = "analytics",
    params(GovernanceParams),
    responses((status = 200, body = GovernanceView),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad period or bucket", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn governance(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Query(params): Query<GovernanceParams>,
) -> ApiResult<axum::Json<GovernanceView>> {
    let r = app
        .governance(
            &admin.reader(),
            params.from.as_deref(),
            params.to.as_deref(),
            params.bucket.as_deref(),
        )
        .await?;
    let s = r.statuses;
    Ok(axum::Json(GovernanceView {
        totals: Totals {
            evaluations: r.decisions.total(),
            by_decision: r.decisions.into(),
            by_status: ByStatus {
                allowed: s.allowed,
                denied: s.denied,
                pending: s.pending,
                approved: s.approved,
                rejected: s.rejected,
                expired: s.expired,
            },
        },
        approval_rate: r.approval_rate,
        decision_latency_seconds: LatencyView {
            p50: r.latency.p50,
            p90: r.latency.p90,
            max: r.latency.max,
        },
        top_rejection_reasons: r
            .top_rejection_reasons
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
        by_agent: r
            .by_agent
            .into_iter()
            .map(|(agent_id, d)| AgentCounts {
                agent_id,
                evaluations: d.total(),
                by_decision: d.into(),
            })
            .collect(),
        by_policy: r
            .by_policy
            .into_iter()
            .map(|(policy, d)| PolicyCounts {
                policy,
                evaluations: d.total(),
                by_decision: d.into(),
            })
            .collect(),
        series: r
            .series
            .into_iter()
            .map(|b| SeriesBucket {
                start: b.start,
                evaluations: b.decisions.total(),
                by_decision: b.decisions.into(),
            })
            .collect(),
        receipts: ReceiptCounts {
            conforming: r.receipts_conforming,
            nonconforming: r.receipts_nonconforming,
            missing: r.receipts_missing,
        },
        from: r.from,
        to: r.to,
        bucket: r.bucket,
    }))
}
