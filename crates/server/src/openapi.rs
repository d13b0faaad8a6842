//! The OpenAPI 3.1 document, generated from the handlers. `docs/openapi.json` is a copy
//! that a test keeps in step.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    agents, analytics, approvals, audit, compliance, cron, evaluations, keys, members, policies,
    settings, sources, sso, webhooks,
};
use crate::{error, ops};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AgentNexus",
        description = "Governance runtime for AI agents: propose an action, get allow, deny or require_approval, with a verifiable audit trail.",
        license(name = "Apache-2.0")
    ),
    paths(
        evaluations::evaluate,
        evaluations::get_evaluation,
        evaluations::report_receipt,
        evaluations::list_evaluations,
        audit::timeline,
        audit::page,
        audit::verify,
        audit::checkpoint,
        audit::signing_key,
        agents::list,
        analytics::costs,
        analytics::governance,
        compliance::evidence,
        agents::get,
        agents::put,
        agents::suspend,
        agents::resume,
        agents::kill_switch,
        agents::put_kill_switch,
        keys::list,
        keys::create,
        keys::revoke,
        approvals::decide,
        cron::approval_timeouts,
        members::list,
        members::add,
        members::change,
        members::remove,
        policies::list,
        policies::get,
        policies::put,
        policies::delete,
        policies::versions,
        policies::version,
        policies::rollback,
        policies::validate,
        policies::simulate,
        policies::replay,
        policies::diff,
        sources::bind,
        sources::get,
        sources::unbind,
        sources::sync,
        sources::integration,
        sources::webhook,
        webhooks::secret,
        webhooks::rotate,
        webhooks::deliveries,
        webhooks::delivery,
        webhooks::retry,
        webhooks::test,
        settings::channels,
        settings::workspace,
        settings::put_workspace,
        settings::put_slack,
        settings::delete_slack,
        settings::put_teams,
        settings::delete_teams,
        sso::get,
        sso::put,
        sso::delete,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(error::Problem)),
    modifiers(&BearerKey, &StandardResponses, &Fixups),
    tags(
        (name = "evaluate", description = "Proposals and their decisions"),
        (name = "policies", description = "Policy documents and versions"),
        (name = "policy-as-code", description = "Policies bound to files on GitHub: sync, schedule and push webhook"),
        (name = "keys", description = "API keys"),
        (name = "agents", description = "The agent inventory and the kill switch"),
        (name = "analytics", description = "Reports over a period: governance and cost"),
        (name = "approvals", description = "Human decisions through secure links"),
        (name = "members", description = "Members and roles: the people approval stages reach"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "webhooks", description = "Signed event deliveries to integrators"),
        (name = "settings", description = "Workspace settings: the chat channels approvals use"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("anx_…")
                    .description(Some(
                        "An API key of the workspace: `Authorization: Bearer anx_…`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cron_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's CRON_SECRET: `Authorization: Bearer …`"))
                    .build(),
            ),
        );
    }
}

/// The operations an agent key may call; every other keyed operation needs an admin key.
const AGENT_OPERATIONS: [(&str, &str); 4] = [
    ("post", "/api/v1/evaluate"),
    ("get", "/api/v1/evaluations/{id}"),
    ("get", "/api/v1/evaluations/{id}/timeline"),
    ("get", "/api/v1/evaluations/{id}/deliveries"),
];

/// The answers every operation can give besides its own, documented on each (SPEC §13) from
/// what the operation takes: a key (401, 429, and 403 for admin-only ones), a body (400, 413,
/// 422), path parameters (404), query parameters (422); and 500 and 503 for all.
struct StandardResponses;

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let keyed =
                    serde_json::to_string(&op.security).is_ok_and(|s| s.contains("\"api_key\""));
                let params = op.parameters.as_deref().unwrap_or_default();
                let in_path = params
                    .iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path));
                let in_query = params
                    .iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Query));
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(status, description).into());
                };
                if keyed {
                    add("401", "Missing, unknown or revoked API key");
                    add("429", "Over a rate limit or another limit; see Retry-After");
                    if !AGENT_OPERATIONS.contains(&(method, path.as_str())) {
                        add("403", "Not an admin key");
                    }
                }
                if op.request_body.is_some() {
                    add("400", "The body is not valid JSON");
                    add("413", "The body is too large");
                    add("422", "Invalid fields");
                }
                if in_path {
                    add("404", "No such resource in this workspace");
                }
                if in_query {
                    add("422", "Invalid query parameters");
                }
                if path.starts_with("/api/") {
                    add("500", "Internal error; nothing was changed");
                    add(
                        "503",
                        "The server is shutting down or a stored policy cannot be used",
                    );
                }
            }
        }
    }
}

/// What the derive cannot say: Slack settings need at least one of their fields (utoipa 5.5
/// writes `min_properties` as `maxProperties`), and simulated policies are documents given
/// as text or as JSON objects.
struct Fixups;

impl Modify for Fixups {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{Schema, Type};
        use utoipa::openapi::{ObjectBuilder, OneOfBuilder, RefOr};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(slack))) = components.schemas.get_mut("SlackSettings") {
            slack.min_properties = Some(1);
        }
        // One pattern, the one the server checks with, for every outbound URL it takes.
        for (schema, field) in [
            ("EvaluateRequest", "webhook_url"),
            ("SlackSettings", "webhook_url"),
            ("TeamsSettings", "webhook_url"),
            ("TestWebhook", "url"),
        ] {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(url))) = o.properties.get_mut(field)
            {
                url.pattern = Some(agentnexus_app::types::WEBHOOK_URL_PATTERN.to_owned());
            }
        }
        if let Some(RefOr::T(Schema::Object(sim))) = components.schemas.get_mut("SimulateRequest")
            && let Some(RefOr::T(Schema::Array(policies))) = sim.properties.get_mut("policies")
        {
            policies.items = utoipa::openapi::schema::ArrayItems::RefOrSchema(Box::new(
                OneOfBuilder::new()
                    .item(ObjectBuilder::new().schema_type(Type::String))
                    .item(ObjectBuilder::new().schema_type(Type::Object))
                    .into(),
            ));
        }
    }
}

/// A problem+json answer; 429 also documents its `Retry-After`.
fn problem(status: &str, description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder};
    let mut response = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    );
    if status == "429" {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    response.build()
}

/// The document as served at `/api/openapi.json` and committed as `docs/openapi.json`.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
