//! E-mail deliveries over SMTP: the sealed link or code a message carries is opened, the
//! message written (`render::email`) and sent.

use std::time::{Duration, Instant};

use agentnexus_store::{Job, Message};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Outcome;
use crate::App;
use crate::crypto::Purpose;
use crate::render::email::{self, Email};
use crate::types::Currency;

/// The message's recipient and its e-mail, secrets opened; or why it cannot be written.
fn write(
    app: &App,
    job: &Job,
    message: &Message,
    currency: &Currency,
) -> Result<(String, Email), String> {
    let workspace_id = job.tenant.workspace_id();
    let cipher = app.cipher().map_err(|e| e.to_string())?;
    let open = |sealed: &str, purpose: Purpose<'_>| {
        cipher
            .open(sealed, purpose)
            .map_err(|e| format!("cannot open the e-mail's secret: {e}"))
    };
    let link = |token: &str| {
        open(token, Purpose::LinkToken { workspace_id })
            .map(|t| format!("{}/approvals/{t}", app.public_url()))
    };
    Ok(match message {
        Message::LinkEmail {
            to,
            token,
            link_expires_at,
            about,
        } => (
            to.clone(),
            email::link(about, currency, &link(token)?, *link_expires_at),
        ),
        Message::CodeEmail {
            to,
            code,
            evaluation_id,
        } => {
            let code = open(code, Purpose::OneTimeCode { workspace_id })?;
            (to.clone(), email::code(&code, evaluation_id))
        }
        Message::InviteEmail {
            to,
            token,
            workspace,
            invited_by,
            expires_at,
        } => {
            let token = open(token, Purpose::InvitationToken { workspace_id })?;
            let link = format!("{}/invitations/{token}", app.public_url());
            (
                to.clone(),
                email::invitation(workspace, invited_by, &link, *expires_at),
            )
        }
        Message::TestEmail {
            to,
            workspace,
            requested_by,
        } => (to.clone(), email::test(workspace, requested_by)),
        // Written by an earlier version: the secret goes where it put the placeholder, once,
        // so a `{link}` in a proposal's text stays text.
        Message::WrittenEmail {
            to,
            subject,
            text,
            token,
            code,
        } => {
            let mut text = text.clone();
            if let Some(token) = token {
                text = text.replacen("{link}", &link(token)?, 1);
            }
            if let Some(code) = code {
                text = text.replacen(
                    "{code}",
                    &open(code, Purpose::OneTimeCode { workspace_id })?,
                    1,
                );
            }
            (
                to.clone(),
                Email {
                    subject: subject.clone(),
                    html: email::preformatted(&text),
                    text,
                },
            )
        }
        other => {
            return Err(format!(
                "a {} job cannot be e-mailed",
                other.kind().as_str()
            ));
        }
    })
}

/// The text part, sent so that its lines reach the reader as written: as they are (7bit) when
/// the text is ASCII in lines SMTP carries whole (RFC 5322: at most 998 characters), else
/// base64. lettre would choose quoted-printable for any line over 76 characters, and a soft
/// break splits the link in a raw view (a reader copying the first half gets a 404), so the
/// 7bit body is passed to it as already encoded, after the checks lettre's own would make.
fn text_part(text: String) -> SinglePart {
    let sendable = text.is_ascii()
        && !text.contains('\0')
        && !text.contains('\r')
        && text.lines().all(|l| l.len() <= 998);
    let body = if sendable {
        Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    } else {
        match Body::new_with_encoding(text, ContentTransferEncoding::Base64) {
            Ok(body) => body,
            Err(text) => Body::new(text),
        }
    };
    SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(body)
}

pub(super) async fn send(app: &App, job: &Job, message: &Message) -> Outcome {
    let started = Instant::now();
    let outcome = |code: Option<u16>, error: Option<String>, retryable: bool| {
        Outcome::mailed(job, started, code, error, retryable)
    };
    let Some(url) = app.config.smtp_url.as_deref() else {
        let why = "no SMTP server configured (AGENTNEXUS_SMTP_URL)";
        return outcome(None, Some(why.into()), true);
    };
    let currency = match super::currency(app, job, started).await {
        Ok(c) => c,
        Err(failed) => return failed,
    };
    let (to, mail) = match write(app, job, message, &currency) {
        Ok(written) => written,
        Err(why) => return outcome(None, Some(why), true),
    };
    let message = (|| {
        lettre::Message::builder()
            .from(
                app.config
                    .smtp_from
                    .parse()
                    .map_err(|e| format!("AGENTNEXUS_SMTP_FROM: {e}"))?,
            )
            .to(to.parse().map_err(|e| format!("recipient {to}: {e}"))?)
            .subject(mail.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(text_part(mail.text))
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(mail.html),
                    ),
            )
            .map_err(|e| e.to_string())
    })();
    let message = match message {
        Ok(m) => m,
        Err(why) => return outcome(None, Some(why), false),
    };
    let mailer = match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
        Ok(b) => b.timeout(Some(Duration::from_secs(15))).build(),
        Err(e) => return outcome(None, Some(format!("AGENTNEXUS_SMTP_URL: {e}")), true),
    };
    match mailer.send(message).await {
        Ok(response) => outcome(response.code().to_string().parse().ok(), None, true),
        Err(e) => outcome(None, Some(format!("SMTP: {e}")), !e.is_permanent()),
    }
}
