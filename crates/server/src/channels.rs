//! Chat channels for approvals (SPEC §5): what a workspace connects (a Slack bot token or
//! incoming webhook, a Microsoft Teams incoming webhook) and the messages sent there.
//!
//! A Slack bot reaches each approver privately (`users.lookupByEmail`, then
//! `chat.postMessage` to that user), so its message carries the approver's own secure link,
//! as the e-mail does. A channel webhook (Slack or Teams) reaches everyone in the channel, so
//! its message carries no credential: it links to the evaluation's approval page, where an
//! approver signs in with their e-mail address and receives their own link.

use agentnexus_store::Tenant;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::state::AppState;

/// Slack as a workspace connected it. Either or both: a bot token sends direct messages, a
/// webhook posts to one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// Teams as a workspace connected it: a channel's incoming webhook (a Workflows webhook or a
/// classic connector URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teams {
    pub webhook_url: String,
}

/// The chat channels of one workspace, opened with the server key.
#[derive(Debug, Clone, Default)]
pub struct Connected {
    pub slack: Option<Slack>,
    pub teams: Option<Teams>,
}

/// Reads and opens a workspace's channel settings.
pub async fn connected(state: &AppState, tenant: &Tenant) -> ApiResult<Connected> {
    let mut out = Connected::default();
    for s in state.store.channel_settings(tenant).await? {
        let purpose = crate::crypto::Purpose::ChannelSettings {
            workspace_id: tenant.workspace_id(),
            channel: &s.channel,
        };
        let open = state
            .cipher
            .open(&s.sealed, purpose)
            .map_err(|e| crate::error::ApiError::Internal(format!("channel settings: {e}")))?;
        let corrupt = |e: serde_json::Error| {
            crate::error::ApiError::Internal(format!("channel settings: {e}"))
        };
        match s.channel.as_str() {
            "slack" => out.slack = Some(serde_json::from_str(&open).map_err(corrupt)?),
            "teams" => out.teams = Some(serde_json::from_str(&open).map_err(corrupt)?),
            _ => {}
        }
    }
    Ok(out)
}

/// The page a shared channel's message links to: where an approver signs in.
pub fn sign_in_url(state: &AppState, evaluation_id: &str) -> String {
    format!(
        "{}/approvals/evaluations/{evaluation_id}",
        state.public_url()
    )
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// Slack's `mrkdwn` treats `&`, `<` and `>` as markup (`<https://…|text>` is a link); with them
/// escaped, everything else is shown as sent.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Keeps a text within a Block Kit limit (counted in characters).
fn within(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn str_of<'a>(about: &'a Value, k: &str) -> &'a str {
    about[k].as_str().unwrap_or_default()
}

/// One line on what is proposed: "billing-bot proposes stripe.refund on cus_1 for $750.00".
fn proposal_line(about: &Value, agent: fn(&str) -> String, code: fn(&str) -> String) -> String {
    let mut line = format!(
        "{} proposes {}",
        agent(str_of(about, "agent_id")),
        code(str_of(about, "action"))
    );
    if let Some(r) = about["resource"].as_str() {
        line.push_str(&format!(" on {}", code(r)));
    }
    if let Some(c) = about["amount_cents"].as_i64().filter(|c| *c > 0) {
        line.push_str(&format!(" for {}", money(c)));
    }
    line
}

/// The facts both chat messages list.
fn facts(about: &Value, personal: bool) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Stage", str_of(about, "stage").to_owned())];
    if let Some(t) = about["tier"].as_str() {
        facts.push(("Tier", t.to_owned()));
    }
    facts.push((
        "Deadline",
        about["expires_at"]
            .as_str()
            .map_or("none".to_owned(), |t| format!("{t} (UTC)")),
    ));
    if !personal && let Some(people) = about["approvers"].as_array() {
        let names: Vec<&str> = people.iter().filter_map(Value::as_str).collect();
        facts.push(("Approvers", names.join(", ")));
    }
    facts.push(("Evaluation", str_of(about, "evaluation_id").to_owned()));
    facts
}

/// A Slack message in Block Kit: `{text, blocks}`, for `chat.postMessage` (with a `channel`
/// added) or an incoming webhook. `link` is the approver's own link in a direct message, the
/// sign-in page in a channel.
pub fn slack_message(about: &Value, link: &str, personal: bool) -> Value {
    let title = format!("Approval needed: {}", str_of(about, "action"));
    // A backtick in the proposal's text would end the code span early.
    let mut summary = proposal_line(
        about,
        |s| format!("*{}*", mrkdwn(&s.replace('*', "\u{2217}"))),
        |s| format!("`{}`", mrkdwn(&s.replace('`', "\u{02CB}"))),
    );
    if let Some(reason) = about["reason"].as_str().filter(|r| !r.is_empty()) {
        summary.push_str(&format!("\n>{}", mrkdwn(reason)));
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
        "text": within(&format!("{title} by {}", str_of(about, "agent_id")), 3000),
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

/// A run of text Teams shows as it is: a `TextRun` is the one text element of an Adaptive
/// Card that takes no Markdown, so a proposal's own text can neither make a link nor format
/// itself (a `TextBlock` or a `Fact` would render `[Approve](https://…)` as a link).
fn text_run(text: &str) -> Value {
    json!({"type": "TextRun", "text": text})
}

/// A `RichTextBlock` of runs: `(text, bold)`.
fn rich_text(runs: &[(&str, bool)], extra: Value) -> Value {
    let inlines: Vec<Value> = runs
        .iter()
        .map(|(text, bold)| {
            let mut run = text_run(text);
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

/// A Teams incoming-webhook message carrying one Adaptive Card (version 1.4, which Teams
/// renders in channels), linking to the sign-in page. Every text that comes from a proposal
/// or a policy is a `TextRun` (see [`text_run`]).
pub fn teams_message(about: &Value, link: &str) -> Value {
    let title = format!("Approval needed: {}", str_of(about, "action"));
    let mut body = vec![
        rich_text(&[(&title, true)], json!({"size": "Medium"})),
        rich_text(
            &[(&proposal_line(about, str::to_owned, str::to_owned), false)],
            json!({}),
        ),
    ];
    if let Some(reason) = about["reason"].as_str().filter(|r| !r.is_empty()) {
        body.push(rich_text(&[(reason, false)], json!({"isSubtle": true})));
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
                "actions": [{"type": "Action.OpenUrl", "title": "Review and decide", "url": link}],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentnexus_testkit::chat::{check_slack_message, check_teams_message};

    fn about(long: usize) -> Value {
        json!({
            "evaluation_id": "ev_01",
            "agent_id": "billing-bot",
            "action": "a".repeat(long.min(256)),
            "resource": "customer/<cus_1>",
            "amount_cents": 75_000,
            "reason": "r&d ".repeat(long),
            "stage": "finance",
            "tier": "high",
            "approvers": (0..40).map(|i| format!("person{i}@example.com")).collect::<Vec<_>>(),
            "expires_at": "2026-11-25 18:00",
        })
    }

    #[test]
    fn messages_keep_to_the_published_formats_whatever_their_length() {
        for long in [1, 2000] {
            let about = about(long);
            for personal in [true, false] {
                let m = slack_message(&about, "https://an.example/approvals/apr_x", personal);
                check_slack_message(&m).unwrap();
            }
            check_teams_message(&teams_message(&about, "https://an.example/x")).unwrap();
        }
        let m = slack_message(&about(1), "https://an.example/a", true);
        let summary = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(summary.contains("`customer/&lt;cus_1&gt;`"), "{summary}");
        assert!(
            summary.contains("$750.00") && summary.contains(">r&amp;d"),
            "{summary}"
        );
    }

    #[test]
    fn text_from_a_proposal_cannot_make_links_or_markup() {
        let forged = "[Approve here](https://evil.example/approve)";
        let mut about = about(1);
        about["action"] = json!(forged);
        about["resource"] = json!("<https://evil.example|Approve> `code` *bold*");
        let card = teams_message(&about, "https://an.example/x");
        check_teams_message(&card).unwrap();
        // Every text of the card outside the fixed note is a TextRun, shown verbatim.
        let body = card["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        for block in &body[..body.len() - 1] {
            assert_eq!(block["type"], "RichTextBlock", "{block}");
        }
        assert!(card.to_string().contains(forged));
        let m = slack_message(&about, "https://an.example/a", false);
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
    fn the_stand_ins_refuse_what_slack_and_teams_refuse() {
        let good = slack_message(&about(1), "https://an.example/a", true);
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

        let good = teams_message(&about(1), "https://an.example/x");
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
