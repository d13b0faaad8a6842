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

/// The address a request came from, for the sign-in limit per address: the connection's, or,
/// when that is a trusted proxy (`AGENTNEXUS_TRUSTED_PROXIES`), the nearest address in
/// `X-Forwarded-For` that is not one (the ones further left could be made up by the client).
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Arc<App>> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddr(client_address(
            peer,
            &parts.headers,
            &app.config.trusted_proxies,
        )))
    }
}

fn client_address(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut nearest = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => nearest = ip,
            Ok(ip) => return ip,
            // Not an address: nothing further left can be believed.
            Err(_) => return nearest,
        }
    }
    nearest
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(super) struct SignInPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub email: String,
    pub error: Option<String>,
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

/// Whether a browser says this request was sent from another site: `Sec-Fetch-Site` other
/// than `same-origin` or `none`, or (without it) an `Origin` that is neither the request's
/// `Host` nor the public URL's. Requests with neither header are no browser's cross-site
/// submission and pass. The sign-in form has no session to bind a CSRF token to, so this is
/// what keeps another site from signing a visitor in as someone else (login CSRF), as Go's
/// `http.CrossOriginProtection` does.
pub(super) fn cross_site(headers: &axum::http::HeaderMap, public_url: &str) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let public = public_url.split_once("://").map_or(public_url, |(_, h)| h);
    text("host") != Some(host) && public != host
}

pub async fn sign_in(
    State(app): State<Arc<App>>,
    ClientAddr(address): ClientAddr,
    headers: axum::http::HeaderMap,
    form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if cross_site(&headers, &app.public_url()) {
        return error_page(
            None,
            Error::Refused(
                "this sign-in was sent from another site: open the sign-in page here and sign \
                 in from it"
                    .into(),
            ),
        );
    }
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
