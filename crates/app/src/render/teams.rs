//! Microsoft Teams messages: one Adaptive Card (version 1.4, which Teams renders in channels)
//! per incoming-webhook post, linking to the sign-in page. Every text that comes from a
//! proposal or a policy is a `TextRun`, the one text element of a card that takes no
//! Markdown, so it can neither make a link nor format itself (a `TextBlock` or a `Fact` would
//! render `[Approve](https://…)` as a link).

use agentnexus_store::About;
use serde_json::{Value, json};

use super::{facts, proposal_line};
use crate::types::Currency;

/// A `RichTextBlock` of runs: `(text, bold)`, each with `extra` properties.
fn rich_text(runs: &[(&str, bool)], extra: Value) -> Value {
    let inlines: Vec<Value> = runs
        .iter()
        .map(|(text, bold)| {
            let mut run = json!({"type": "TextRun", "text": text});
            if *bold {
                run["weight"] = json!("Bolder");
            }
            if let Some(o) = extra.as_object() {
                for (k, v) in o {
                    run[k] = v.clone();
                }
            }
            run
        })
        .collect();
    json!({"type": "RichTextBlock", "inlines": inlines})
}

/// One Adaptive Card as an incoming webhook takes it.
fn card(body: Vec<Value>, actions: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

/// A test message from the dashboard's settings.
pub fn test(workspace: &str, requested_by: &str) -> Value {
    let text = super::test_text(workspace, requested_by, "this channel");
    card(
        vec![
            rich_text(
                &[("AgentNexus test message", true)],
                json!({"size": "Medium"}),
            ),
            rich_text(&[(&text, false)], json!({})),
        ],
        json!([]),
    )
}

/// The message about a stage, linking to the sign-in page.
pub fn message(about: &About, currency: &Currency, link: &str) -> Value {
    let title = format!("Approval needed: {}", about.action);
    let mut body = vec![
        rich_text(&[(&title, true)], json!({"size": "Medium"})),
        rich_text(
            &[(
                &proposal_line(about, currency, str::to_owned, str::to_owned),
                false,
            )],
            json!({}),
        ),
    ];
    if !about.reason.is_empty() {
        body.push(rich_text(
            &[(&about.reason, false)],
            json!({"isSubtle": true}),
        ));
    }
    for (k, v) in facts(about, false) {
        body.push(rich_text(
            &[(&format!("{k}: "), true), (&v, false)],
            json!({}),
        ));
    }
    body.push(
        json!({"type": "TextBlock", "text": "Approvers sign in on the page to decide.",
                     "size": "Small", "isSubtle": true, "wrap": true}),
    );
    card(
        body,
        json!([{"type": "Action.OpenUrl", "title": "Review and decide", "url": link}]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::slack::tests::about;
    use agentnexus_testkit::chat::check_teams_message;

    #[test]
    fn cards_keep_to_the_published_format_whatever_their_length() {
        for long in [1, 2000] {
            check_teams_message(&message(
                &about(long),
                &Currency::default(),
                "https://an.example/x",
            ))
            .unwrap();
        }
    }

    #[test]
    fn text_from_a_proposal_is_shown_verbatim() {
        let forged = "[Approve here](https://evil.example/approve)";
        let mut about = about(1);
        about.action = forged.into();
        let card = message(&about, &Currency::default(), "https://an.example/x");
        check_teams_message(&card).unwrap();
        // Every text of the card outside the fixed note is a TextRun, shown verbatim.
        let body = card["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        for block in &body[..body.len() - 1] {
            assert_eq!(block["type"], "RichTextBlock", "{block}");
        }
        assert!(card.to_string().contains(forged));
    }

    #[test]
    fn the_stand_in_refuses_what_teams_refuses() {
        let good = message(&about(1), &Currency::default(), "https://an.example/x");
        let mut broken = good.clone();
        broken["attachments"][0]["contentType"] = json!("application/json");
        assert!(check_teams_message(&broken).is_err());
        let mut broken = good.clone();
        broken["attachments"][0]["content"]["actions"][0]["type"] = json!("Action.Submit");
        assert!(check_teams_message(&broken).is_err());
        let mut broken = good;
        broken["attachments"][0]["content"]["version"] = json!("2.0");
        assert!(check_teams_message(&broken).is_err());
    }
}
