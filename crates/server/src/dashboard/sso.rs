//! Enterprise sign-in's doors (SPEC §11): starting a sign-in at the workspace's identity
//! provider (by the e-mail's routed domain, or by workspace name), the OIDC redirect URI, the
//! SAML assertion consumer service, and this server's SAML metadata.

use std::sync::Arc;

use agentnexus_app::sessions::SESSION_LIFETIME;
use agentnexus_app::sso::{
    OidcInput, REQUEST_LIFETIME, RoleMap, SamlInput, SsoInput, SsoRedirect, SsoRefused, SsoStart,
    SsoView,
};
use agentnexus_app::{App, Error};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::account::{ClientAddr, SignInPage, cross_site};
use super::{Empty, Managed, Message, Nav, error_page, render, see, session_cookie_header};

/// The cookie that ties an OIDC sign-in to the browser that started it.
const STATE_COOKIE: &str = "anx_sso_state";

#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    workspace: String,
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    email: String,
}

#[derive(Template)]
#[template(path = "sso_continue.html")]
struct ContinuePage {
    title: &'static str,
    nav: Option<Nav>,
    url: String,
}

fn state_cookie(app: &App, state: &str, max_age: i64) -> HeaderValue {
    let secure = if app.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={state}; Path=/sso/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or(HeaderValue::from_static(
        "anx_sso_state=; Path=/sso/; Max-Age=0",
    ))
}

/// Sends the browser to the workspace's provider: a 303 for a link (`GET`), a page that moves
/// on by itself for the sign-in form (a form's redirect elsewhere is what the pages' `form-action
/// 'self'` policy refuses).
fn go(app: &App, redirect: SsoRedirect, from_form: bool) -> Response {
    let mut response = if from_form {
        render(
            StatusCode::OK,
            &ContinuePage {
                title: "Continue to your identity provider",
                nav: None,
                url: redirect.url,
            },
        )
    } else {
        see(&redirect.url)
    };
    if let Some(state) = redirect.state {
        response.headers_mut().append(
            header::SET_COOKIE,
            state_cookie(app, &state, REQUEST_LIFETIME.num_seconds()),
        );
    }
    response
}

/// `GET /sso/start?workspace=NAME`: a link to a workspace's single sign-on.
pub async fn start_link(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    Query(q): Query<StartQuery>,
) -> Response {
    let workspace = q.workspace.trim();
    match app.sso_begin(SsoStart::Workspace(workspace), address).await {
        Ok(redirect) => go(&app, redirect, false),
        Err(Error::NotFound) => error_page(
            None,
            Error::Refused(format!(
                "{workspace} has no single sign-on; sign in with your password"
            )),
        ),
        Err(e) => error_page(None, e),
    }
}

/// `POST /sso/start` from the sign-in page: the e-mail's domain names the workspace.
pub async fn start_form(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: Result<axum::Form<StartForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if cross_site(&headers, &app.public_url()) {
        return error_page(
            None,
            Error::Refused(
                "this sign-in was sent from another site: open the sign-in page here".into(),
            ),
        );
    }
    let Ok(axum::Form(form)) = form else {
        return error_page(None, Error::field("email", "the form could not be read"));
    };
    match app
        .sso_begin(SsoStart::Email(form.email.trim()), address)
        .await
    {
        Ok(redirect) => go(&app, redirect, true),
        Err(Error::NotFound) => render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SignInPage {
                title: "Sign in",
                nav: None,
                email: form.email,
                error: Some(
                    "No single sign-on is set up for this e-mail address's domain. Sign in with \
                     your password."
                        .into(),
                ),
            },
        ),
        Err(e) => error_page(None, e),
    }
}

fn signed_in(app: &App, token: &str) -> Response {
    let mut response = see("/");
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        session_cookie_header(app, token, SESSION_LIFETIME.num_seconds()),
    );
    h.append(header::SET_COOKIE, state_cookie(app, "", 0));
    response
}

fn refused_page(why: SsoRefused) -> Response {
    render(
        StatusCode::FORBIDDEN,
        &Message {
            title: "Single sign-on refused",
            text: super::sentence(&why.reason),
            nav: None,
        },
    )
}

#[derive(Deserialize)]
pub struct Callback {
    #[serde(default)]
    state: String,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn browser_state(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(STATE_COOKIE)?.strip_prefix('='))
        .filter(|s| !s.is_empty())
}

/// `GET /sso/oidc/callback`: the provider sends the person back with a code.
pub async fn oidc_callback(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let provider_error = q.error.map(|e| match q.error_description {
        Some(d) => format!("{e} ({d})"),
        None => e,
    });
    match app
        .oidc_callback(
            &q.state,
            q.code.as_deref(),
            provider_error.as_deref(),
            browser_state(&headers),
            address,
        )
        .await
    {
        Ok((token, _)) => signed_in(&app, &token),
        Err(why) => refused_page(why),
    }
}

#[derive(Deserialize)]
pub struct AcsForm {
    #[serde(default, rename = "SAMLResponse")]
    saml_response: String,
    #[serde(default, rename = "RelayState")]
    relay_state: Option<String>,
}

/// `POST /sso/saml/acs`: the provider posts its response (HTTP-POST binding). It comes from
/// the provider's page, so it carries no CSRF token: the signed, single-use response is what
/// is trusted.
pub async fn saml_acs(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    form: Result<axum::Form<AcsForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return refused_page(SsoRefused {
            reason: "the identity provider's response could not be read".into(),
            internal: None,
        });
    };
    let relay = form.relay_state.as_deref().filter(|r| !r.is_empty());
    match app.saml_acs(&form.saml_response, relay, address).await {
        Ok((token, _)) => signed_in(&app, &token),
        Err(why) => refused_page(why),
    }
}

/// `GET /sso/saml/metadata`: this server as a SAML service provider.
pub async fn saml_metadata(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
        app.saml_metadata(),
    )
        .into_response()
}

/// The settings page's single sign-on section: the connection as it is (never the client
/// secret), the values to register at the provider, and the form's fields filled in.
pub struct SsoSection {
    pub connected: bool,
    pub protocol: &'static str,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: String,
    pub role_claim: String,
    pub metadata_url: String,
    pub idp_entity_id: String,
    pub role_attribute: String,
    pub allow_idp_initiated: bool,
    /// One `value = role, role` per line.
    pub role_map: String,
    pub domains: String,
    pub required: bool,
    pub jit: bool,
    pub updated: String,
    pub redirect_uri: String,
    pub entity_id: String,
    pub acs_url: String,
}

fn role_map_lines(map: &RoleMap) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} = {}", v.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

impl SsoSection {
    pub fn new(app: &App, view: Option<SsoView>) -> SsoSection {
        let urls = app.service_urls();
        let mut section = SsoSection {
            connected: false,
            protocol: "oidc",
            issuer: String::new(),
            client_id: String::new(),
            client_secret_set: false,
            scopes: "openid email profile".into(),
            role_claim: String::new(),
            metadata_url: String::new(),
            idp_entity_id: String::new(),
            role_attribute: String::new(),
            allow_idp_initiated: false,
            role_map: String::new(),
            domains: String::new(),
            required: false,
            jit: false,
            updated: String::new(),
            redirect_uri: urls.oidc_redirect_uri,
            entity_id: urls.saml_entity_id,
            acs_url: urls.saml_acs_url,
        };
        let Some(v) = view else {
            return section;
        };
        section.connected = true;
        section.domains = v.domains.join(", ");
        section.required = v.required;
        section.jit = v.jit;
        section.updated = super::when(&v.updated_at);
        if let Some(o) = v.oidc {
            section.issuer = o.issuer;
            section.client_id = o.client_id;
            section.client_secret_set = o.client_secret_set;
            section.scopes = o.scopes.join(" ");
            section.role_claim = o.role_claim.unwrap_or_default();
            section.role_map = role_map_lines(&o.role_map);
        }
        if let Some(s) = v.saml {
            section.protocol = "saml";
            section.metadata_url = s.idp_metadata_url.unwrap_or_default();
            section.idp_entity_id = s.idp_entity_id;
            section.role_attribute = s.role_attribute.unwrap_or_default();
            section.allow_idp_initiated = s.allow_idp_initiated;
            section.role_map = role_map_lines(&s.role_map);
        }
        section
    }
}

/// The settings page's SSO form.
#[derive(Deserialize)]
pub struct SsoForm {
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    role_claim: String,
    #[serde(default)]
    metadata_url: String,
    #[serde(default)]
    metadata_xml: String,
    #[serde(default)]
    role_attribute: String,
    #[serde(default)]
    allow_idp_initiated: Option<String>,
    #[serde(default)]
    role_map: String,
    #[serde(default)]
    domains: String,
    #[serde(default)]
    required: Option<String>,
    #[serde(default)]
    jit: Option<String>,
}

fn filled(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Reads `value = role, role` lines.
fn parse_role_map(text: &str) -> Result<RoleMap, Error> {
    let mut map = RoleMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((value, roles)) = line.rsplit_once('=') else {
            return Err(Error::field(
                "role_map",
                format!("line {}: write `value = role, role`", n + 1),
            ));
        };
        let roles: Vec<String> = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        map.insert(value.trim().to_owned(), roles);
    }
    Ok(map)
}

impl SsoForm {
    fn input(self) -> Result<SsoInput, Error> {
        let role_map = parse_role_map(&self.role_map)?;
        let (oidc, saml) = if self.protocol == "saml" {
            (
                None,
                Some(SamlInput {
                    idp_metadata_url: filled(&self.metadata_url),
                    idp_metadata_xml: filled(&self.metadata_xml),
                    role_attribute: filled(&self.role_attribute),
                    role_map,
                    allow_idp_initiated: self.allow_idp_initiated.is_some(),
                }),
            )
        } else {
            (
                Some(OidcInput {
                    issuer: self.issuer.trim().to_owned(),
                    client_id: self.client_id.trim().to_owned(),
                    client_secret: filled(&self.client_secret),
                    scopes: filled(&self.scopes)
                        .map(|s| s.split_whitespace().map(str::to_owned).collect()),
                    role_claim: filled(&self.role_claim),
                    role_map,
                }),
                None,
            )
        };
        Ok(SsoInput {
            oidc,
            saml,
            domains: self
                .domains
                .split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            required: self.required.is_some(),
            jit: self.jit.is_some(),
        })
    }
}

/// `POST /settings/sso`: sets the workspace's connection (owners and admins).
pub async fn save_settings(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<SsoForm>,
) -> Response {
    let saved = match form.input() {
        Ok(input) => app.put_sso(&admin, input).await,
        Err(e) => Err(e),
    };
    match saved {
        // The section shows the connection as it now is.
        Ok(_) => see("/settings#sso"),
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}

/// `POST /settings/sso/remove`: removes the connection; passwords work again for everyone.
pub async fn remove_settings(
    State(app): State<Arc<App>>,
    Managed(signed, admin, _): Managed<Empty>,
) -> Response {
    match app.delete_sso(&admin).await {
        Ok(()) => see("/settings#sso"),
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}
