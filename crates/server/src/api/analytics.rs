//! Analytics (SPEC §8): cost reports.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::analytics::CostsInput;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};

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
