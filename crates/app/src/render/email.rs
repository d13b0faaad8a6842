//! Plain-text e-mails: an approver's secure link, and a one-time code. The link comes first,
//! on a line of its own after a fixed sentence, before anything taken from the proposal or the
//! policy, each of which is kept to one labelled line.

use agentnexus_store::About;
use chrono::{DateTime, Utc};

use super::{minute, money};

/// An e-mail's subject and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
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
pub fn link(about: &About, link: &str, link_expires_at: DateTime<Utc>) -> Email {
    let amount = if about.amount_cents > 0 {
        money(about.amount_cents)
    } else {
        "none".to_owned()
    };
    let text = format!(
        "An AI agent asks for your decision on an action it proposes.\n\n\
         Approve or reject it here (the link is yours alone, works once and expires at \
         {expires} UTC):\n\
         {link}\n\n\
         Agent:    {agent}\n\
         Action:   {action}\n\
         Resource: {resource}\n\
         Amount:   {amount}\n\
         Why:      {reason}\n\
         Stage:    {stage}\n\n\
         Evaluation {id}.\n",
        agent = one_line(&about.agent_id),
        action = one_line(&about.action),
        resource = one_line(about.resource.as_deref().unwrap_or("none")),
        reason = one_line(&about.reason),
        stage = one_line(&about.stage),
        expires = minute(link_expires_at),
        id = about.evaluation_id,
    );
    Email {
        subject: link_subject(about),
        text,
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
    let who = invited_by.strip_prefix("member:").unwrap_or(invited_by);
    Email {
        subject: invitation_subject(workspace),
        text: format!(
            "You are invited to the AgentNexus workspace {workspace}, where agents' proposed \
             actions are governed and approved.\n\n\
             Join it here (the link is yours alone, works once and expires at {expires} UTC):\n\
             {link}\n\n\
             Invited by: {who}\n",
            workspace = one_line(workspace),
            who = one_line(who),
            expires = minute(expires_at),
        ),
    }
}

/// A test message: mail from this server reaches this address.
pub fn test(workspace: &str, requested_by: &str) -> Email {
    Email {
        subject: one_line(&format!("AgentNexus test message for {workspace}")),
        text: format!(
            "{}\n",
            super::test_text(workspace, requested_by, "this address")
        ),
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
    Email {
        subject: CODE_SUBJECT.into(),
        text: format!(
            "Your code to decide on evaluation {evaluation_id}: {code}\n\
             It works for 10 minutes. If you did not ask for it, ignore this e-mail.\n"
        ),
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
        let mail = link(&about(forged), "https://an.example/approvals/apr_x", at);
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
        let long = link(&about(&"a".repeat(400)), "https://an.example/x", at);
        assert!(
            long.text
                .contains(&format!("Action:   {}…", "a".repeat(300)))
        );
    }
}
