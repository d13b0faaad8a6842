//! Enterprise sign-in's doors (SPEC §11): starting a sign-in at the workspace's identity
//! provider (by the e-mail's routed domain, or by workspace name), the OIDC redirect URI, the
//! SAML assertion consumer service, and this server's SAML metadata.

use std::net::IpAddr;
use std::sync::Arc;

use agentnexus_app::sessions::SESSION_LIFETIME;
use agentnexus_app::sso::{REQUEST_LIFETIME, SsoRefused};
use agentnexus_app::{App, Error};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::account::{ClientAddr, SignInPage, cross_site};
use super::{Message, Nav, error_page, render, see, session_cookie_header};

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
async fn go(app: &App, workspace: &str, address: IpAddr, from_form: bool) -> Response {
    let redirect = match app.sso_begin(workspace, address).await {
        Ok(r) => r,
        Err(Error::NotFound) => {
            return error_page(
                None,
                Error::Refused(format!(
                    "{workspace} has no single sign-on; sign in with your password"
                )),
            );
        }
        Err(e) => return error_page(None, e),
    };
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
    go(&app, q.workspace.trim(), address, false).await
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
    match app.sso_route(form.email.trim()).await {
        Ok(Some(workspace)) => go(&app, &workspace, address, true).await,
        Ok(None) => render(
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
