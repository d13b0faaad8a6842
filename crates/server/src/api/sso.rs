//! The workspace's SSO connection (SPEC §11): OpenID Connect or SAML 2.0, the e-mail domains
//! it routes, whether it is required and whether it makes members on first sign-in. The OIDC
//! client secret is never answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::sso::{OidcInput, SamlInput, SsoInput, SsoView};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::Json;

/// One role name or several.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RoleNames {
    One(String),
    Many(Vec<String>),
}

impl RoleNames {
    fn into_vec(self) -> Vec<String> {
        match self {
            RoleNames::One(r) => vec![r],
            RoleNames::Many(r) => r,
        }
    }
}

fn role_map(map: BTreeMap<String, RoleNames>) -> BTreeMap<String, Vec<String>> {
    map.into_iter().map(|(k, v)| (k, v.into_vec())).collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer (`https://example.okta.com`); its discovery document is read at
    /// once.
    #[schema(max_length = 2048)]
    pub issuer: String,
    #[schema(max_length = 255)]
    pub client_id: String,
    /// Required the first time; left out, the stored one is kept (same issuer and client).
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 1024)]
    pub client_secret: Option<String>,
    /// Default `["openid", "email", "profile"]`; `openid` is always asked for.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The ID token claim whose values the role map reads (`groups`).
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 64)]
    pub role_claim: Option<String>,
    /// A claim value → the role or roles it gives (never `owner`).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub role_map: BTreeMap<String, RoleNames>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamlSettings {
    /// The provider's metadata document (one of this and `idp_metadata_url`).
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String)]
    pub idp_metadata_xml: Option<String>,
    /// Where to read the provider's metadata, now.
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 2048)]
    pub idp_metadata_url: Option<String>,
    /// The attribute whose values the role map reads.
    #[serde(default, deserialize_with = "crate::extract::not_null")]
    #[schema(value_type = String, max_length = 256)]
    pub role_attribute: Option<String>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub role_map: BTreeMap<String, RoleNames>,
    /// Accept responses the provider sends unasked (IdP-initiated sign-in, with the
    /// workspace's name as RelayState). Off by default.
    #[serde(default)]
    pub allow_idp_initiated: bool,
}

/// The connection to set: `oidc` or `saml`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
    #[serde(default)]
    pub saml: Option<SamlSettings>,
    /// E-mail domains whose sign-ins go to this provider; when set, the provider may sign in
    /// only addresses at these domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Password sign-in off for members; owners keep it (break-glass, audited).
    #[serde(default)]
    pub required: bool,
    /// Make members on first sign-in, with the mapped roles (`viewer` when none map).
    #[serde(default)]
    pub jit: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OidcSettingsView {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub role_claim: Option<String>,
    pub role_map: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SamlSettingsView {
    pub idp_entity_id: String,
    pub idp_sso_url: String,
    pub idp_metadata_url: Option<String>,
    pub role_attribute: Option<String>,
    pub role_map: BTreeMap<String, Vec<String>>,
    pub allow_idp_initiated: bool,
}

/// What to register at the provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceProviderView {
    /// OIDC: the redirect URI.
    pub redirect_uri: String,
    /// SAML: the entity ID (audience), the ACS URL and this server's metadata.
    pub entity_id: String,
    pub acs_url: String,
    pub metadata_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SsoSettingsView {
    pub oidc: Option<OidcSettingsView>,
    pub saml: Option<SamlSettingsView>,
    pub domains: Vec<String>,
    pub required: bool,
    pub jit: bool,
    pub updated_at: DateTime<Utc>,
    pub service_provider: ServiceProviderView,
}

impl From<SsoView> for SsoSettingsView {
    fn from(v: SsoView) -> Self {
        SsoSettingsView {
            oidc: v.oidc.map(|o| OidcSettingsView {
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret_set: o.client_secret_set,
                scopes: o.scopes,
                role_claim: o.role_claim,
                role_map: o.role_map,
            }),
            saml: v.saml.map(|s| SamlSettingsView {
                idp_entity_id: s.idp_entity_id,
                idp_sso_url: s.idp_sso_url,
                idp_metadata_url: s.idp_metadata_url,
                role_attribute: s.role_attribute,
                role_map: s.role_map,
                allow_idp_initiated: s.allow_idp_initiated,
            }),
            domains: v.domains,
            required: v.required,
            jit: v.jit,
            updated_at: v.updated_at,
            service_provider: ServiceProviderView {
                redirect_uri: v.service.oidc_redirect_uri,
                entity_id: v.service.saml_entity_id,
                acs_url: v.service.saml_acs_url,
                metadata_url: v.service.saml_metadata_url,
            },
        }
    }
}

impl From<SsoSettings> for SsoInput {
    fn from(s: SsoSettings) -> Self {
        SsoInput {
            oidc: s.oidc.map(|o| OidcInput {
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret: o.client_secret,
                scopes: o.scopes,
                role_claim: o.role_claim,
                role_map: role_map(o.role_map),
            }),
            saml: s.saml.map(|s| SamlInput {
                idp_metadata_xml: s.idp_metadata_xml,
                idp_metadata_url: s.idp_metadata_url,
                role_attribute: s.role_attribute,
                role_map: role_map(s.role_map),
                allow_idp_initiated: s.allow_idp_initiated,
            }),
            domains: s.domains,
            required: s.required,
            jit: s.jit,
        }
    }
}

/// The workspace's SSO connection (404 when there is none).
#[utoipa::path(get, path = "/api/v1/settings/sso", tag = "settings", operation_id = "get_sso_settings",
    responses((status = 200, body = SsoSettingsView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<SsoSettingsView>> {
    let view = app
        .sso_settings(&admin.reader())
        .await?
        .ok_or(agentnexus_app::Error::NotFound)?;
    Ok(axum::Json(view.into()))
}

/// Connect the workspace to its identity provider, or change the connection.
#[utoipa::path(put, path = "/api/v1/settings/sso", tag = "settings", operation_id = "put_sso_settings", request_body = SsoSettings,
    responses((status = 200, body = SsoSettingsView),
        (status = 409, description = "A domain is routed to another workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<SsoSettings>,
) -> ApiResult<axum::Json<SsoSettingsView>> {
    Ok(axum::Json(app.put_sso(&admin, req.into()).await?.into()))
}

/// Disconnect the workspace from its identity provider.
#[utoipa::path(delete, path = "/api/v1/settings/sso", tag = "settings", operation_id = "delete_sso_settings",
    responses((status = 204), (status = 404, description = "Not connected", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete(State(app): State<Arc<App>>, Admin(admin): Admin) -> ApiResult<StatusCode> {
    app.delete_sso(&admin).await?;
    Ok(StatusCode::NO_CONTENT)
}
