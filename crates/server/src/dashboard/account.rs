//! Signing in and out, one's account (password, workspace), and invitations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use agentnexus_app::sessions::{PASSWORD_LENGTH, SESSION_LIFETIME};
use agentnexus_app::{App, Error, Signed};
use agentnexus_store::Membership;
use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Empty, Nav, Posted, Session, error_page, render, see, session_cookie_header, when};
use crate::extract::Path;

/// The address a request came from, for the sign-in limit per address. Behind a proxy every
/// request comes from the proxy (docs/dashboard.md says so).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    title: &'static str,
    nav: Option<Nav>,
    email: String,
    error: Option<String>,
}

pub async fn sign_in_page(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    // Someone signed in already goes to the overview.
    if let Some(token) = crate::html::session_cookie(&headers)
        && app.signed(token).await.is_ok()
    {
        return see("/");
    }
    render(
        StatusCode::OK,
        &SignInPage {
            title: "Sign in",
            nav: None,
            email: String::new(),
            error: None,
        },
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn signed_in(app: &App, token: &str, to: &str) -> Response {
    let mut response = see(to);
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(app, token, SESSION_LIFETIME.num_seconds()),
    );
    response
}

pub async fn sign_in(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return error_page(None, Error::field("email", "the form could not be read"));
    };
    match app
        .sign_in(form.email.trim(), &form.password, address)
        .await
    {
        Ok((token, _)) => signed_in(&app, &token, "/"),
        Err(Error::Refused(why)) => render(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                title: "Sign in",
                nav: None,
                email: form.email,
                error: Some(super::sentence(&why)),
            },
        ),
        Err(e) => error_page(None, e),
    }
}

pub async fn sign_out(
    State(app): State<Arc<App>>,
    Posted(signed, Empty {}): Posted<Empty>,
) -> Response {
    if let Err(e) = app.sign_out(&signed).await {
        return error_page(None, e);
    }
    let mut response = see("/sign-in");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&app, "", 0));
    response
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    title: &'static str,
    nav: Option<Nav>,
    roles: String,
    workspaces: Vec<Membership>,
    current: String,
    done: Option<&'static str>,
    error: Option<String>,
    min_password: usize,
}

async fn account_page(
    app: &App,
    signed: &Signed,
    done: Option<&'static str>,
    error: Option<String>,
) -> Response {
    match app.workspaces_of(signed).await {
        Ok(workspaces) => render(
            if error.is_some() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            },
            &AccountPage {
                title: "Your account",
                nav: Some(Nav::of(signed, "/account")),
                roles: signed.roles().join(", "),
                workspaces,
                current: signed.workspace().to_owned(),
                done,
                error,
                min_password: *PASSWORD_LENGTH.start(),
            },
        ),
        Err(e) => error_page(Some(Nav::of(signed, "/account")), e),
    }
}

pub async fn page(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    account_page(&app, &signed, None, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    State(app): State<Arc<App>>,
    Posted(signed, form): Posted<PasswordForm>,
) -> Response {
    match app
        .change_password(&signed, &form.current_password, &form.new_password)
        .await
    {
        Ok(()) => account_page(&app, &signed, Some("Your password was changed."), None).await,
        Err(Error::Invalid { detail, .. }) => {
            account_page(&app, &signed, None, Some(super::sentence(&detail))).await
        }
        Err(e) => error_page(Some(Nav::of(&signed, "/account")), e),
    }
}

#[derive(Deserialize)]
pub struct WorkspaceForm {
    #[serde(default)]
    workspace: String,
}

pub async fn switch_workspace(
    State(app): State<Arc<App>>,
    Posted(signed, form): Posted<WorkspaceForm>,
) -> Response {
    match app.switch_workspace(&signed, &form.workspace).await {
        Ok(()) => see("/"),
        Err(e) => error_page(Some(Nav::of(&signed, "/account")), e),
    }
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    title: &'static str,
    nav: Option<Nav>,
    email: String,
    workspace: String,
    has_account: bool,
    expires: String,
    error: Option<String>,
    min_password: usize,
}

async fn invitation_page(app: &App, token: &str, error: Option<String>) -> Response {
    match app.invitation(token).await {
        Ok(view) => render(
            if error.is_some() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            },
            &InvitationPage {
                title: "Join a workspace",
                nav: None,
                email: view.email,
                workspace: view.workspace,
                has_account: view.has_account,
                expires: when(&view.expires_at),
                error,
                min_password: *PASSWORD_LENGTH.start(),
            },
        ),
        Err(Error::NotFound) => render(
            StatusCode::NOT_FOUND,
            &super::Message {
                title: "Unknown invitation",
                text: "This invitation link is not valid. Check that you opened the whole link \
                       from the e-mail."
                    .to_owned(),
                nav: None,
            },
        ),
        Err(e) => error_page(None, e),
    }
}

pub async fn invitation(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    invitation_page(&app, &token, None).await
}

#[derive(Deserialize)]
pub struct AcceptForm {
    password: Option<String>,
}

/// The invitation's token is the credential here (there is no session yet): the form needs no
/// CSRF token, and a cross-site post could only sign the visitor in as the invited person.
pub async fn accept_invitation(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    form: Result<axum::Form<AcceptForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let password = form.ok().and_then(|f| f.0.password);
    match app.accept_invitation(&token, password.as_deref()).await {
        Ok((session, _)) => signed_in(&app, &session, "/"),
        Err(Error::Invalid { detail, .. }) => {
            invitation_page(&app, &token, Some(super::sentence(&detail))).await
        }
        Err(e) => error_page(None, e).into_response(),
    }
}
