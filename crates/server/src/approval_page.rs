//! The approval page (SPEC §5): `GET /approvals/{token}` shows the proposal and takes the
//! decision as a plain HTML form, posted back to the same address. No JavaScript, no cookies:
//! the secure link is the credential.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::approvals::{Decision, DecisionInput};
use agentnexus_app::types::EvaluationId;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::Path;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The approval pages' headers: no script at all, styles inline, forms posted only back here.
pub async fn security_headers(response: Response) -> Response {
    crate::html::headers(
        response,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · AgentNexus</title><style>\
         :root{{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--panel:#f4f5f7;--ok:#1f7a3d;--bad:#b3261e}}\
         @media (prefers-color-scheme:dark){{:root{{--bg:#0d1117;--fg:#e6edf3;--panel:#161b22;--ok:#238636;--bad:#da3633}}}}\
         *{{box-sizing:border-box}}\
         body{{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;background:var(--bg);color:var(--fg);line-height:1.45}}\
         a{{color:#4493f8}}dt{{font-weight:600;margin-top:.6rem}}dd,small{{margin-left:1.2rem;overflow-wrap:anywhere}}small{{margin:0}}\
         pre{{background:var(--panel);padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}}\
         button{{font-size:1rem;padding:.6rem 1.2rem;margin:0 .6rem .6rem 0;border-radius:6px}}\
         textarea,input{{width:100%;font-size:1rem;padding:.4rem;background:var(--bg);color:var(--fg);border:1px solid #8b949e;border-radius:6px}}\
         .approve{{background:var(--ok);color:#fff;border:0}}.reject{{background:var(--bad);color:#fff;border:0}}\
         </style></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    (status, Html(html)).into_response()
}

fn error_page(e: ApiError) -> Response {
    match e {
        ApiError::NotFound => page(
            StatusCode::NOT_FOUND,
            "Unknown link",
            "<p>This approval link is not valid. Check that you opened the whole link from the e-mail.</p>",
        ),
        ApiError::Gone(why) => page(
            StatusCode::GONE,
            "This link can no longer be used",
            &format!("<p>{}.</p>", esc(&why)),
        ),
        ApiError::Refused(why) => page(
            StatusCode::FORBIDDEN,
            "You cannot decide this one",
            &format!("<p>{}.</p>", esc(&why)),
        ),
        ApiError::Invalid { detail, .. } => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please check your answer",
            &format!("<p>{}</p>", esc(&detail)),
        ),
        ApiError::RateLimited { retry_after_secs } => {
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &format!(
                    "<p>This link has been used too often just now. Try again in \
                     {retry_after_secs} seconds.</p>"
                ),
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
            response
        }
        other => {
            let status = match other {
                ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::error!(error = %other, "the approval page failed");
            page(
                status,
                "Something went wrong",
                "<p>Nothing was recorded. Please try again in a moment.</p>",
            )
        }
    }
}

fn form(token: &str, critical: bool, with_code: bool, comment: &str) -> String {
    let code = if with_code {
        "<p><label>The 6-digit code we e-mailed you<br><input name=\"otp\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" required></label></p>"
    } else if critical {
        "<p>This is a critical approval: when you decide, we e-mail you a one-time code to \
         confirm it.</p>"
    } else {
        ""
    };
    format!(
        "<form method=\"post\" action=\"/approvals/{t}\">\
         <p><label>Comment (optional)<br><textarea name=\"comment\" rows=\"3\">{c}</textarea></label></p>\
         {code}\
         <button class=\"approve\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"reject\" name=\"decision\" value=\"reject\">Reject</button></form>",
        t = esc(token),
        c = esc(comment),
    )
}

fn json_block(v: &Value) -> String {
    format!(
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(v).unwrap_or_default())
    )
}

/// `GET /approvals/{token}`
pub async fn show(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let view = match app.open_link(&token).await {
        Ok(view) => view,
        Err(e) => return error_page(e.into()),
    };
    let ev = &view.evaluation;
    let stage = ev.stages.iter().find(|s| s.index == view.stage);
    let earlier = if ev.decisions.is_empty() {
        "<p>None yet.</p>".to_owned()
    } else {
        let items: Vec<String> = ev
            .decisions
            .iter()
            .map(|d| {
                format!(
                    "<li>Stage {}: {} — {}{}</li>",
                    d.stage + 1,
                    esc(&d.approver),
                    esc(&d.decision),
                    d.comment
                        .as_deref()
                        .map(|c| format!(" (“{}”)", esc(c)))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!("<ul>{}</ul>", items.join(""))
    };
    let body = format!(
        "<p>{agent} proposes <strong>{action}</strong>. It needs your decision as \
         <strong>{approver}</strong>, stage “{stage}”{deadline}.</p>\
         <dl><dt>Why</dt><dd>{reason}</dd><dt>Agent</dt><dd>{agent}</dd>\
         <dt>Action</dt><dd>{action}</dd><dt>Resource</dt><dd>{resource}</dd>\
         <dt>Amount</dt><dd>{amount}</dd><dt>Parameters</dt><dd>{params}</dd>\
         <dt>Context</dt><dd>{context}</dd><dt>Matched rules</dt><dd>{rules}</dd>\
         <dt>Earlier decisions</dt><dd>{earlier}</dd></dl>{form}\
         <p><small>Evaluation {id} · proposal hash {hash}</small></p>",
        agent = esc(&ev.agent_id),
        action = esc(&ev.action),
        approver = esc(&view.approver),
        stage = esc(stage.map_or("", |s| s.name.as_str())),
        deadline = stage
            .and_then(|s| s.expires_at)
            .map(|t| format!(", before {} UTC", t.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default(),
        reason = esc(&ev.reason),
        resource = esc(ev.resource.as_deref().unwrap_or("—")),
        amount = esc(&agentnexus_app::render::money(
            ev.amount_cents,
            &view.currency
        )),
        params = json_block(&ev.params),
        context = json_block(&ev.context),
        rules = json_block(&ev.matched_rules),
        form = form(&token, view.needs_code, false, ""),
        id = esc(&ev.id),
        hash = esc(&ev.proposal_hash),
    );
    page(StatusCode::OK, "Approval needed", &body)
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    /// Optional here so a form without it gets the page's own answer, not a bare rejection.
    #[serde(default)]
    decision: String,
    comment: Option<String>,
    otp: Option<String>,
}

/// `POST /approvals/{token}` (the page's form).
pub async fn submit(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    f: Result<Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(ApiError::field("decision", "the form could not be read"));
    };
    let decision = f.decision.clone();
    let comment = f.comment.clone();
    let input = DecisionInput {
        decision: f.decision,
        comment: comment.clone(),
        otp: f.otp.map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()),
    };
    match app.decide(&token, input).await {
        Ok(Decision::CodeSent { .. }) => page(
            StatusCode::OK,
            "Check your e-mail",
            &format!(
                "<p>We e-mailed you a 6-digit code. Enter it to {} (it works for 10 minutes).</p>{}",
                if decision == "approve" {
                    "approve"
                } else {
                    "reject"
                },
                form(&token, true, true, comment.as_deref().unwrap_or(""))
            ),
        ),
        Ok(Decision::Recorded { status, .. }) => page(
            StatusCode::OK,
            "Thank you",
            &format!(
                "<p>Your decision ({}) was recorded. The evaluation is now <strong>{}</strong>.</p>",
                esc(&decision),
                esc(status.as_str())
            ),
        ),
        // A wrong code: the form again, comment kept, in words for a person.
        Err(agentnexus_app::Error::Invalid { problems, .. })
            if problems.iter().any(|p| p.field.as_deref() == Some("otp")) =>
        {
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "That code did not work",
                &format!(
                    "<p>The code is wrong or has expired. Enter the code from the latest \
                     e-mail, or decide again without a code to have a new one sent.</p>{}",
                    form(&token, true, true, comment.as_deref().unwrap_or(""))
                ),
            )
        }
        Err(agentnexus_app::Error::Invalid { detail, .. }) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please check your answer",
            &format!(
                "<p>{}</p><p><a href=\"/approvals/{}\">Try again</a></p>",
                esc(&detail),
                esc(&token)
            ),
        ),
        Err(e) => error_page(e.into()),
    }
}

/// `GET /approvals/evaluations/{id}`: where a Slack or Teams channel post leads. Everyone in
/// the channel can open it, so it shows no proposal and grants nothing: an approver of the
/// waiting stage signs in with their e-mail address and gets their own secure link there.
pub async fn sign_in(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let waiting = match app.waiting_stage(&EvaluationId::from(id.as_str())).await {
        Ok(w) => w,
        Err(agentnexus_app::Error::NotFound) => {
            return page(
                StatusCode::NOT_FOUND,
                "Unknown evaluation",
                "<p>No evaluation has this address. Check that you opened the whole link.</p>",
            );
        }
        Err(e) => return error_page(e.into()),
    };
    let Some(stage) = waiting.stage_name else {
        return page(
            StatusCode::GONE,
            "Nothing to decide",
            &format!(
                "<p>This evaluation is {}: no stage is waiting for a decision.</p>",
                esc(waiting.status.as_str())
            ),
        );
    };
    // Someone signed in to the dashboard decides from there, as themselves.
    let signed = match crate::html::session_cookie(&headers) {
        Some(token) => app.signed(token).await.ok(),
        None => None,
    };
    let dashboard = signed
        .map(|s| {
            format!(
                "<form method=\"post\" action=\"/inbox/{id}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <p>You are signed in to the dashboard as {email}.</p>\
                 <button class=\"approve\">Review and decide as {email}</button></form>\
                 <p>Or have a link sent by e-mail:</p>",
                id = esc(&id),
                csrf = esc(s.csrf_token()),
                email = esc(s.email()),
            )
        })
        .unwrap_or_default();
    page(
        StatusCode::OK,
        "Approval needed",
        &format!(
            "<p>Evaluation {id} is waiting for its stage “{stage}”.</p>{dashboard}\
             <p>If you are one of its approvers, sign in with your e-mail address: we send you \
             your own link to review the proposal and decide.</p>\
             <form method=\"post\" action=\"/approvals/evaluations/{id}\">\
             <p><label>Your e-mail address<br><input type=\"email\" name=\"email\" \
             autocomplete=\"email\" required></label></p>\
             <button class=\"approve\">Send my link</button></form>",
            id = esc(&id),
            stage = esc(&stage),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
}

/// `POST /approvals/evaluations/{id}`: an approver of the waiting stage gets a fresh link by
/// e-mail. The answer is the same for anyone else, so the page tells no one who approves.
pub async fn request_link(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    f: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(ApiError::field("email", "the form could not be read"));
    };
    match app
        .request_link(&EvaluationId::from(id), f.email.trim())
        .await
    {
        Ok(email) => page(
            StatusCode::OK,
            "Check your e-mail",
            &format!(
                "<p>If {} may decide this stage, a link of their own is on its way to that \
                 address. It works once, until the stage's deadline.</p>",
                esc(email.as_str())
            ),
        ),
        Err(e) => error_page(e.into()),
    }
}
