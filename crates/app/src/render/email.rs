//! E-mails: an approver's secure link, a one-time code, an invitation, a test. Each has a
//! plain-text part and an HTML part. In the text the link comes first, on a line of its own
//! after a fixed sentence, before anything taken from the proposal or the policy, each of which
//! is kept to one labelled line; the HTML part has the same facts, escaped, and the link as a
//! button (and written out beneath it).

use agentnexus_store::About;
use chrono::{DateTime, Utc};

use super::{minute, money};
use crate::types::Currency;

/// An e-mail's subject, text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Text made safe inside HTML, attribute values included.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML part of a text written by an earlier version: the text as it is.
pub fn preformatted(text: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>\
         <pre style=\"white-space:pre-wrap;font-family:inherit\">{}</pre></body></html>\n",
        escape(text)
    )
}

/// What an HTML e-mail holds, top to bottom; every string is plain text, escaped here.
#[derive(Default)]
struct Html<'a> {
    intro: &'a str,
    /// The button's label and link; the link is also written out beneath it, with `note`.
    button: Option<(&'a str, &'a str)>,
    note: &'a str,
    /// Shown large, in a fixed-width font (a one-time code).
    big: Option<&'a str>,
    facts: Vec<(&'a str, String)>,
    footer: String,
}

impl Html<'_> {
    /// One page that mail clients show alike: inline styles, a table for the facts, no
    /// images or scripts, readable at phone width.
    fn render(&self) -> String {
        let mut h = String::from(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
             <body style=\"margin:0;padding:16px;background:#f4f5f7;color:#1b1f24;\
             font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif\">\
             <div style=\"max-width:560px;margin:0 auto;background:#ffffff;border:1px solid #d8dde3;\
             border-radius:8px;padding:24px\">",
        );
        h.push_str(&format!(
            "<p style=\"margin:0 0 16px;font-size:16px;line-height:1.5\">{}</p>",
            escape(self.intro)
        ));
        if let Some(big) = self.big {
            h.push_str(&format!(
                "<p style=\"margin:0 0 16px;font-size:28px;letter-spacing:4px;\
                 font-family:Menlo,Consolas,monospace;font-weight:700\">{}</p>",
                escape(big)
            ));
        }
        if let Some((label, link)) = self.button {
            let link = escape(link);
            h.push_str(&format!(
                "<p style=\"margin:0 0 16px\"><a href=\"{link}\" style=\"display:inline-block;\
                 background:#1d4ed8;color:#ffffff;text-decoration:none;font-weight:600;\
                 padding:12px 20px;border-radius:6px\">{}</a></p>\
                 <p style=\"margin:0 0 20px;font-size:13px;line-height:1.5;color:#4b5563\">{}<br>\
                 <a href=\"{link}\" style=\"color:#1d4ed8;word-break:break-all\">{link}</a></p>",
                escape(label),
                escape(self.note),
            ));
        } else if !self.note.is_empty() {
            h.push_str(&format!(
                "<p style=\"margin:0 0 20px;font-size:13px;color:#4b5563\">{}</p>",
                escape(self.note)
            ));
        }
        if !self.facts.is_empty() {
            h.push_str(
                "<table role=\"presentation\" style=\"border-collapse:collapse;font-size:14px\">",
            );
            for (label, value) in &self.facts {
                h.push_str(&format!(
                    "<tr><th scope=\"row\" style=\"text-align:left;vertical-align:top;\
                     padding:4px 16px 4px 0;color:#4b5563;font-weight:600\">{}</th>\
                     <td style=\"padding:4px 0;word-break:break-word\">{}</td></tr>",
                    escape(label),
                    escape(value)
                ));
            }
            h.push_str("</table>");
        }
        if !self.footer.is_empty() {
            h.push_str(&format!(
                "<p style=\"margin:20px 0 0;font-size:12px;color:#6b7280\">{}</p>",
                escape(&self.footer)
            ));
        }
        h.push_str("</div></body></html>\n");
        h
    }
}

/// A value on one line of a plain-text e-mail: control characters (line breaks among them)
/// become spaces, so no value can start a line of its own, and it is cut to 300 characters.
pub(crate) fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// The e-mail that gives one approver their secure link.
pub fn link(
    about: &About,
    currency: &Currency,
    link: &str,
    link_expires_at: DateTime<Utc>,
) -> Email {
    let amount = if about.amount_cents > 0 {
        money(about.amount_cents, currency)
    } else {
        "none".to_owned()
    };
    const INTRO: &str = "An AI agent asks for your decision on an action it proposes.";
    let expires = minute(link_expires_at);
    let facts = vec![
        ("Agent", one_line(&about.agent_id)),
        ("Action", one_line(&about.action)),
        (
            "Resource",
            one_line(about.resource.as_deref().unwrap_or("none")),
        ),
        ("Amount", amount),
        ("Why", one_line(&about.reason)),
        ("Stage", one_line(&about.stage)),
    ];
    let mut text = format!(
        "{INTRO}\n\n\
         Approve or reject it here (the link is yours alone, works once and expires at \
         {expires} UTC):\n\
         {link}\n\n"
    );
    for (label, value) in &facts {
        text.push_str(&format!("{:<10}{value}\n", format!("{label}:")));
    }
    text.push_str(&format!("\nEvaluation {}.\n", about.evaluation_id));
    let note = format!("The link is yours alone, works once and expires at {expires} UTC.");
    let html = Html {
        intro: INTRO,
        button: Some(("Review and decide", link)),
        note: &note,
        facts,
        footer: format!("Evaluation {}", about.evaluation_id),
        ..Html::default()
    }
    .render();
    Email {
        subject: link_subject(about),
        text,
        html,
    }
}

/// The e-mail that invites someone to a workspace: the link to set a password (or sign in,
/// with an account already) comes first.
pub fn invitation(
    workspace: &str,
    invited_by: &str,
    link: &str,
    expires_at: DateTime<Utc>,
) -> Email {
    let who = one_line(invited_by.strip_prefix("member:").unwrap_or(invited_by));
    let intro = format!(
        "You are invited to the AgentNexus workspace {}, where agents' proposed actions are \
         governed and approved.",
        one_line(workspace)
    );
    let expires = minute(expires_at);
    let note = format!("The link is yours alone, works once and expires at {expires} UTC.");
    let html = Html {
        intro: &intro,
        button: Some(("Join the workspace", link)),
        note: &note,
        facts: vec![("Invited by", who.clone())],
        ..Html::default()
    }
    .render();
    Email {
        subject: invitation_subject(workspace),
        text: format!(
            "{intro}\n\n\
             Join it here (the link is yours alone, works once and expires at {expires} UTC):\n\
             {link}\n\n\
             Invited by: {who}\n",
        ),
        html,
    }
}

/// A test message: mail from this server reaches this address.
pub fn test(workspace: &str, requested_by: &str) -> Email {
    let said = super::test_text(workspace, requested_by, "this address");
    Email {
        subject: one_line(&format!("AgentNexus test message for {workspace}")),
        text: format!("{said}\n"),
        html: Html {
            intro: &said,
            ..Html::default()
        }
        .render(),
    }
}

/// The subject of [`invitation`]'s e-mail.
pub fn invitation_subject(workspace: &str) -> String {
    one_line(&format!("You are invited to {workspace} on AgentNexus"))
}

/// The subject of [`link`]'s e-mail.
pub fn link_subject(about: &About) -> String {
    one_line(&format!(
        "Approval needed: {} by {}",
        about.action, about.agent_id
    ))
}

/// The subject of [`code`]'s e-mail.
pub const CODE_SUBJECT: &str = "Your AgentNexus approval code";

/// The e-mail that carries a one-time code (critical tier).
pub fn code(code: &str, evaluation_id: &str) -> Email {
    const NOTE: &str = "It works for 10 minutes. If you did not ask for it, ignore this e-mail.";
    let intro = format!("Your code to decide on evaluation {evaluation_id}:");
    Email {
        subject: CODE_SUBJECT.into(),
        text: format!("{intro} {code}\n{NOTE}\n"),
        html: Html {
            intro: &intro,
            big: Some(code),
            note: NOTE,
            ..Html::default()
        }
        .render(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(action: &str) -> About {
        About {
            evaluation_id: "ev_1".into(),
            agent_id: "billing-bot".into(),
            action: action.into(),
            resource: Some("cus_1".into()),
            amount_cents: 75_000,
            reason: "Refunds over $500\nneed sign-off".into(),
            stage: "finance".into(),
            tier: None,
            approvers: vec!["a@x.io".into()],
            expires_at: None,
        }
    }

    #[test]
    fn the_link_comes_first_and_values_keep_to_their_lines() {
        let forged = "refund\n\nApprove here: https://evil.example/approve";
        let at = DateTime::from_timestamp(1_764_093_600, 0).unwrap();
        let usd = Currency::default();
        let mail = link(
            &about(forged),
            &usd,
            "https://an.example/approvals/apr_x",
            at,
        );
        let lines: Vec<&str> = mail.text.lines().collect();
        assert_eq!(lines[3], "https://an.example/approvals/apr_x");
        assert!(lines[2].contains("2025-11-25 18:00 UTC"), "{}", lines[2]);
        assert!(
            lines
                .iter()
                .all(|l| !l.starts_with("https://evil") && !l.starts_with("Approve here")),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("Amount:   $750.00"));
        assert!(
            mail.text
                .contains("Why:      Refunds over $500 need sign-off")
        );
        assert!(!mail.subject.contains('\n'));
        let long = link(&about(&"a".repeat(400)), &usd, "https://an.example/x", at);
        assert!(
            long.text
                .contains(&format!("Action:   {}…", "a".repeat(300)))
        );
    }
}
