//! Slack messages in Block Kit: `{text, blocks}`, for `chat.postMessage` (a direct message
//! carrying the approver's own link) or a channel's incoming webhook (linking to the sign-in
//! page). Proposal text is escaped for `mrkdwn`, so it can neither link nor format.

use agentnexus_store::About;
use serde_json::{Value, json};

use super::{facts, proposal_line, within};
use crate::types::Currency;

/// Slack's `mrkdwn` treats `&`, `<` and `>` as markup (`<https://…|text>` is a link); with them
/// escaped, everything else is shown as sent.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A test message from the dashboard's settings.
pub fn test(workspace: &str, requested_by: &str) -> Value {
    let text = mrkdwn(&super::test_text(workspace, requested_by, "this channel"));
    json!({
        "text": format!("AgentNexus test message: {text}"),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": within(&text, 3000)}}],
    })
}

/// The message about a stage. `link` is the approver's own link in a direct message
/// (`personal`), the sign-in page in a channel.
pub fn message(about: &About, currency: &Currency, link: &str, personal: bool) -> Value {
    let title = format!("Approval needed: {}", about.action);
    // A backtick in the proposal's text would end the code span early; an asterisk would
    // end the bold one.
    let mut summary = proposal_line(
        about,
        currency,
        |s| format!("*{}*", mrkdwn(&s.replace('*', "\u{2217}"))),
        |s| format!("`{}`", mrkdwn(&s.replace('`', "\u{02CB}"))),
    );
    if !about.reason.is_empty() {
        summary.push_str(&format!("\n>{}", mrkdwn(&about.reason)));
    }
    let fields: Vec<Value> = facts(about, personal)
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": within(&format!("*{k}*\n{}", mrkdwn(&v)), 2000)}))
        .collect();
    let note = if personal {
        "This link is yours alone, works once and expires with the stage."
    } else {
        "Approvers sign in on the page to decide."
    };
    json!({
        "text": within(&format!("{title} by {}", about.agent_id), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": within(&title, 150), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": within(&summary, 3000)}},
            {"type": "section", "fields": fields},
            {"type": "actions", "elements": [{
                "type": "button",
                "action_id": "agentnexus_open_approval",
                "text": {"type": "plain_text", "text": "Review and decide", "emoji": false},
                "url": link,
                "style": "primary",
            }]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]},
        ],
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use agentnexus_engine::Tier;
    use agentnexus_testkit::chat::check_slack_message;

    pub(crate) fn about(long: usize) -> About {
        About {
            evaluation_id: "ev_01".into(),
            agent_id: "billing-bot".into(),
            action: "a".repeat(long.min(256)),
            resource: Some("customer/<cus_1>".into()),
            amount_cents: 75_000,
            reason: "r&d ".repeat(long),
            stage: "finance".into(),
            tier: Some(Tier::High),
            approvers: (0..40).map(|i| format!("person{i}@example.com")).collect(),
            expires_at: chrono::DateTime::from_timestamp(1_764_093_600, 0),
        }
    }

    #[test]
    fn messages_keep_to_the_published_format_whatever_their_length() {
        for long in [1, 2000] {
            for personal in [true, false] {
                let m = message(
                    &about(long),
                    &Currency::default(),
                    "https://an.example/approvals/apr_x",
                    personal,
                );
                check_slack_message(&m).unwrap();
            }
        }
        let m = message(
            &about(1),
            &Currency::default(),
            "https://an.example/a",
            true,
        );
        let summary = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(summary.contains("`customer/&lt;cus_1&gt;`"), "{summary}");
        assert!(
            summary.contains("$750.00") && summary.contains(">r&amp;d"),
            "{summary}"
        );
    }

    #[test]
    fn text_from_a_proposal_cannot_make_links_or_markup() {
        let mut about = about(1);
        about.action = "[Approve here](https://evil.example/approve)".into();
        about.resource = Some("<https://evil.example|Approve> `code` *bold*".into());
        let m = message(&about, &Currency::default(), "https://an.example/a", false);
        check_slack_message(&m).unwrap();
        let summary = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(!summary.contains("<https"), "{summary}");
        assert!(
            summary.contains("&lt;https://evil.example|Approve&gt;"),
            "{summary}"
        );
        assert_eq!(summary.matches('`').count(), 4, "{summary}");
    }

    #[test]
    fn the_stand_in_refuses_what_slack_refuses() {
        let good = message(
            &about(1),
            &Currency::default(),
            "https://an.example/a",
            true,
        );
        let mut broken = good.clone();
        broken["blocks"][0]["text"]["text"] = json!("h".repeat(151));
        assert!(check_slack_message(&broken).is_err());
        let mut broken = good.clone();
        broken["blocks"][0]["text"]["type"] = json!("mrkdwn");
        assert!(check_slack_message(&broken).is_err());
        let mut broken = good.clone();
        broken["blocks"][3]["elements"][0]["style"] = json!("green");
        assert!(check_slack_message(&broken).is_err());
        let mut broken = good;
        broken["blocks"][2]["colour"] = json!("red");
        assert!(check_slack_message(&broken).is_err());
    }
}
