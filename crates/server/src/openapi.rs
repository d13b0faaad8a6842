//! The OpenAPI 3.1 document, generated from the handlers. `docs/openapi.json` is a copy
//! that a test keeps in step.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    approvals, audit, cron, evaluations, keys, members, policies, settings, webhooks,
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
        evaluations::list_evaluations,
        audit::timeline,
        audit::page,
        audit::verify,
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
        webhooks::secret,
        webhooks::rotate,
        webhooks::deliveries,
        settings::channels,
        settings::put_slack,
        settings::delete_slack,
        settings::put_teams,
        settings::delete_teams,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(error::Problem)),
    modifiers(&BearerKey),
    tags(
        (name = "evaluate", description = "Proposals and their decisions"),
        (name = "policies", description = "Policy documents and versions"),
        (name = "keys", description = "API keys"),
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

/// The document as served at `/api/openapi.json` and committed as `docs/openapi.json`.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
