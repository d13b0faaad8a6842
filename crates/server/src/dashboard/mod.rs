//! The dashboard (SPEC §11): server-rendered pages for the people who answer for the agents.
//! Every page is a door like the REST handlers: it reads the session ([`Session`]), calls one
//! use case with the session's rights (`Signed::reader`, `App::manager`), and renders the
//! answer with a template (askama, compiled in). Every form that changes something carries
//! the session's CSRF token ([`Posted`]); without it the answer is 403 and nothing changes.
//! Pages work without script; htmx (vendored, served from the binary) only validates the
//! policy editor as one types.

mod account;
mod govern;
mod reports;
mod review;
mod sso;

use std::sync::Arc;

use agentnexus_app::{App, Error, Signed};
use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Every dashboard route, with the headers its pages send.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(review::overview))
        .route(
            "/sign-in",
            get(account::sign_in_page).post(account::sign_in),
        )
        .route("/sign-out", post(account::sign_out))
        .route("/sso/start", get(sso::start_link).post(sso::start_form))
        .route("/sso/oidc/callback", get(sso::oidc_callback))
        .route("/sso/saml/acs", post(sso::saml_acs))
        .route("/sso/saml/metadata", get(sso::saml_metadata))
        .route("/account", get(account::page))
        .route("/account/password", post(account::change_password))
        .route("/account/workspace", post(account::switch_workspace))
        .route(
            "/invitations/{token}",
            get(account::invitation).post(account::accept_invitation),
        )
        .route("/inbox", get(review::inbox))
        .route("/inbox/{id}", post(review::open_decision))
        .route("/evaluations", get(review::evaluations))
        .route("/evaluations/{id}", get(review::evaluation))
        .route("/audit", get(review::audit))
        .route("/audit/verify", post(review::verify))
        .route("/audit/evidence.zip", get(review::evidence))
        .route(
            "/policies",
            get(govern::policies).post(govern::create_policy),
        )
        .route("/policies/validate", post(govern::validate))
        .route(
            "/policies/simulate",
            get(govern::simulate_page).post(govern::simulate),
        )
        .route(
            "/policies/{name}",
            get(govern::policy).post(govern::save_policy),
        )
        .route("/policies/{name}/diff", get(govern::diff))
        .route("/policies/{name}/rollback", post(govern::rollback))
        .route("/policies/{name}/enabled", post(govern::set_enabled))
        .route("/policies/{name}/sync", post(govern::sync_policy))
        .route("/settings/github-secret", post(govern::github_secret))
        .route("/policies/{name}/replay", post(govern::replay_policy))
        .route("/reports", get(reports::reports))
        .route("/agents", get(govern::agents))
        .route("/agents/suspend", post(govern::suspend_agent))
        .route("/agents/resume", post(govern::resume_agent))
        .route("/kill-switch", post(govern::kill_switch))
        .route("/keys", get(govern::keys).post(govern::create_key))
        .route("/keys/{id}/revoke", post(govern::revoke_key))
        .route("/members", get(govern::members).post(govern::invite))
        .route("/members/{id}", post(govern::change_member))
        .route("/members/{id}/remove", post(govern::remove_member))
        .route("/settings", get(govern::settings))
        .route("/settings/webhook-secret", post(govern::webhook_secret))
        .route("/settings/test", post(govern::test_message))
        .route("/settings/workspace", post(govern::workspace))
        .route("/settings/sso", post(sso::save_settings))
        .route("/settings/sso/remove", post(sso::remove_settings))
        .layer(axum::middleware::map_response(security_headers))
        .route(
            "/assets/app.css",
            get(asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(asset(JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/htmx.min.js",
            get(asset(HTMX, "text/javascript; charset=utf-8")),
        )
}

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");
/// htmx 2.0.11 (BSD Zero-Clause, `assets/htmx-LICENSE`), from the npm registry's `htmx.org`.
const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");

fn asset(
    body: &'static str,
    content_type: &'static str,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + 'static {
    move || {
        std::future::ready(
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                body,
            )
                .into_response(),
        )
    }
}

/// The headers every dashboard page sends (SPEC §11): scripts and styles only from here, no
/// framing, no referrer, nothing cached.
async fn security_headers(response: Response) -> Response {
    crate::html::headers(
        response,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
}

/// What every signed-in page's header shows.
pub struct Nav {
    pub email: String,
    pub workspace: String,
    pub csrf: String,
    pub manages: bool,
    pub current: &'static str,
}

impl Nav {
    pub fn of(signed: &Signed, current: &'static str) -> Nav {
        Nav {
            email: signed.email().to_owned(),
            workspace: signed.workspace().to_owned(),
            csrf: signed.csrf_token().to_owned(),
            manages: signed.manages(),
            current,
        }
    }

    pub fn is_current(&self, href: &str) -> bool {
        self.current == href
    }

    pub fn links(&self) -> [(&'static str, &'static str); 10] {
        [
            ("/", "Overview"),
            ("/inbox", "Inbox"),
            ("/policies", "Policies"),
            ("/evaluations", "Evaluations"),
            ("/reports", "Reports"),
            ("/agents", "Agents"),
            ("/audit", "Audit"),
            ("/keys", "API keys"),
            ("/members", "Members"),
            ("/settings", "Settings"),
        ]
    }
}

/// Renders a page, or says plainly that it could not be.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message<'a> {
    pub title: &'a str,
    pub text: String,
    pub nav: Option<Nav>,
}

/// A use case's refusal as a page. Without a session (expired meanwhile), to the sign-in page.
pub fn error_page(nav: Option<Nav>, e: Error) -> Response {
    let (status, title, text) = match e {
        Error::Unauthorized => return Redirect::to("/sign-in").into_response(),
        Error::Invalid { detail, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please check what you entered",
            detail,
        ),
        Error::Forbidden => (
            StatusCode::FORBIDDEN,
            "Your role does not allow this",
            "Only an owner or an admin of this workspace can change it.".to_owned(),
        ),
        Error::NotFound => (
            StatusCode::NOT_FOUND,
            "Not found",
            "Nothing in this workspace has this address.".to_owned(),
        ),
        Error::Conflict(why) => (StatusCode::CONFLICT, "That cannot be done now", why),
        Error::Gone(why) => (StatusCode::GONE, "No longer possible", why),
        Error::Refused(why) => (StatusCode::FORBIDDEN, "Not allowed", why),
        Error::RateLimited { retry_after_secs } => {
            let mut response = render(
                StatusCode::TOO_MANY_REQUESTS,
                &Message {
                    title: "Too many attempts",
                    text: format!("Try again in {retry_after_secs} seconds."),
                    nav,
                },
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        Error::TooMany { detail, .. } => (StatusCode::TOO_MANY_REQUESTS, "Busy", detail),
        other => {
            tracing::error!(error = %other, "a dashboard page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Nothing was changed. Please try again in a moment.".to_owned(),
            )
        }
    };
    render(
        status,
        &Message {
            title,
            text: sentence(&text),
            nav,
        },
    )
}

/// A use case's message as a sentence on a page: capitalised, with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut s: String = first.to_uppercase().chain(chars).collect();
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

/// The signed-in person of a page request; without a good session, to the sign-in page.
pub struct Session(pub Signed);

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(token) = crate::html::session_cookie(&parts.headers) else {
            return Err(Redirect::to("/sign-in").into_response());
        };
        match app.signed(token).await {
            Ok(signed) => Ok(Session(signed)),
            Err(e) => Err(error_page(None, e)),
        }
    }
}

/// A form posted by a signed-in person, with the session's CSRF token checked first.
pub struct Posted<T>(pub Signed, pub T);

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<App>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Session(signed) = Session::from_request_parts(&mut parts, app).await?;
        let nav = || Some(Nav::of(&signed, ""));
        let req = Request::from_parts(parts, body);
        let form = match axum::Form::<WithCsrf<T>>::from_request(req, app).await {
            Ok(axum::Form(f)) => f,
            Err(e) => {
                return Err(error_page(
                    nav(),
                    Error::Invalid {
                        detail: format!("the form could not be read: {}", e.body_text()),
                        problems: Vec::new(),
                    },
                ));
            }
        };
        if !app.csrf_ok(&signed, &form.csrf) {
            return Err(render(
                StatusCode::FORBIDDEN,
                &Message {
                    title: "This form is out of date",
                    text: "It was not sent from this session's page, so nothing was changed. \
                           Open the page again and resend."
                        .to_owned(),
                    nav: nav(),
                },
            ));
        }
        Ok(Posted(signed, form.form))
    }
}

/// A form posted by an owner or admin (CSRF checked, then the role): the person's rights to
/// manage the workspace. Anyone else gets 403 and nothing changes.
pub struct Managed<T>(pub Signed, pub agentnexus_app::Admin, pub T);

impl<T: DeserializeOwned + Send> FromRequest<Arc<App>> for Managed<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        let Posted(signed, form) = Posted::<T>::from_request(req, app).await?;
        match app.manager(&signed) {
            Ok(admin) => Ok(Managed(signed, admin, form)),
            Err(e) => Err(error_page(Some(Nav::of(&signed, "")), e)),
        }
    }
}

/// A form with nothing in it but the CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

/// The cookie that carries a session: only over HTTP (no script reads it), sent on top-level
/// navigation from elsewhere but not on cross-site posts, and only over TLS when the public
/// URL is https.
pub fn session_cookie_header(app: &App, token: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if app.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{cookie}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
        cookie = crate::html::COOKIE
    ))
    .unwrap_or(HeaderValue::from_static("anx_session=; Path=/; Max-Age=0"))
}

/// Where to go after a form: 303, so a reload does not post again.
pub fn see(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
