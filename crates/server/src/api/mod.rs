//! The REST API (`/api/v1`).

pub mod agents;
pub mod analytics;
pub mod approvals;
pub mod audit;
pub mod compliance;
pub mod cron;
pub mod evaluations;
pub mod keys;
pub mod members;
pub mod policies;
pub mod settings;
pub mod sources;
pub mod sso;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use agentnexus_app::App;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/evaluate", post(evaluations::evaluate))
        .route("/v1/evaluate", post(evaluations::evaluate))
        .route("/api/v1/evaluations", get(evaluations::list_evaluations))
        .route("/api/v1/evaluations/{id}", get(evaluations::get_evaluation))
        .route("/api/v1/evaluations/{id}/timeline", get(audit::timeline))
        .route(
            "/api/v1/evaluations/{id}/receipt",
            post(evaluations::report_receipt),
        )
        .route(
            "/api/v1/evaluations/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/api/v1/deliveries/{id}", get(webhooks::delivery))
        .route("/api/v1/deliveries/{id}/retry", post(webhooks::retry))
        .route("/api/v1/webhooks/test", post(webhooks::test))
        .route("/api/v1/webhooks/secret", get(webhooks::secret))
        .route("/api/v1/webhooks/secret/rotate", post(webhooks::rotate))
        .route("/api/v1/keys", get(keys::list).post(keys::create))
        .route("/api/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/api/v1/approvals/{token}", post(approvals::decide))
        .route("/api/cron/approval-timeouts", post(cron::approval_timeouts))
        .route("/api/v1/members", get(members::list).post(members::add))
        .route(
            "/api/v1/members/{id}",
            axum::routing::patch(members::change).delete(members::remove),
        )
        .route("/api/v1/policies", get(policies::list))
        .route("/api/v1/policies/validate", post(policies::validate))
        .route("/api/v1/policies/simulate", post(policies::simulate))
        .route("/api/v1/policies/replay", post(policies::replay))
        .route(
            "/api/v1/policies/{name}/versions/{a}/diff/{b}",
            get(policies::diff),
        )
        .route(
            "/api/v1/policies/{name}",
            get(policies::get)
                .put(policies::put)
                .delete(policies::delete),
        )
        .route("/api/v1/policies/{name}/versions", get(policies::versions))
        .route(
            "/api/v1/policies/{name}/versions/{version}",
            get(policies::version),
        )
        .route("/api/v1/policies/{name}/rollback", post(policies::rollback))
        .route(
            "/api/v1/policies/{name}/source",
            get(sources::get).put(sources::bind).delete(sources::unbind),
        )
        .route("/api/v1/policies/{name}/sync", post(sources::sync))
        .route("/api/v1/integrations/github", get(sources::integration))
        .route(
            "/api/v1/integrations/github/webhook/{workspace_id}",
            post(sources::webhook),
        )
        .route("/api/v1/analytics/costs", get(analytics::costs))
        .route("/api/v1/analytics/governance", get(analytics::governance))
        .route("/api/v1/compliance/evidence.zip", get(compliance::evidence))
        .route("/api/v1/agents", get(agents::list))
        .route(
            "/api/v1/agents/{agent_id}",
            get(agents::get).put(agents::put),
        )
        .route("/api/v1/agents/{agent_id}/suspend", post(agents::suspend))
        .route("/api/v1/agents/{agent_id}/resume", post(agents::resume))
        .route(
            "/api/v1/kill-switch",
            get(agents::kill_switch).put(agents::put_kill_switch),
        )
        .route("/api/v1/audit", get(audit::page))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/api/v1/audit/signing-key", get(audit::signing_key))
        .route(
            "/api/v1/settings/workspace",
            get(settings::workspace).put(settings::put_workspace),
        )
        .route("/api/v1/settings/channels", get(settings::channels))
        .route(
            "/api/v1/settings/channels/slack",
            axum::routing::put(settings::put_slack).delete(settings::delete_slack),
        )
        .route(
            "/api/v1/settings/channels/teams",
            axum::routing::put(settings::put_teams).delete(settings::delete_teams),
        )
        .route(
            "/api/v1/settings/sso",
            get(sso::get).put(sso::put).delete(sso::delete),
        )
}
