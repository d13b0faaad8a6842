//! Every message AgentNexus sends people, written when it is sent from the facts its job
//! keeps: one formatter per medium ([`email`], [`slack`], [`teams`]), sharing how money and
//! untrusted text are shown.

pub mod email;
pub mod slack;
pub mod teams;

use crate::types::Currency;

/// What a test message says, on any medium: sent by whom, for which workspace, and what its
/// arrival at `place` proves.
pub(crate) fn test_text(workspace: &str, requested_by: &str, place: &str) -> String {
    let who = requested_by.strip_prefix("member:").unwrap_or(requested_by);
    format!(
        "This is a test message from AgentNexus for the workspace {workspace}, sent at the \
         request of {who} from the dashboard's settings. It arrived, so approval messages can \
         reach {place} too.",
        workspace = email::one_line(workspace),
        who = email::one_line(who),
    )
}

pub fn money(cents: i64, currency: &Currency) -> String {
    currency.format(cents)
}

/// Keeps a text within `max` characters, marking a cut with `…`.
pub(crate) fn within(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One line on what is proposed: "billing-bot proposes stripe.refund on cus_1 for $750.00",
/// each value shown through `agent` or `code` (how the medium marks it up).
pub(crate) fn proposal_line(
    about: &agentnexus_store::About,
    currency: &Currency,
    agent: fn(&str) -> String,
    code: fn(&str) -> String,
) -> String {
    let mut line = format!(
        "{} proposes {}",
        agent(&about.agent_id),
        code(&about.action)
    );
    if let Some(r) = &about.resource {
        line.push_str(&format!(" on {}", code(r)));
    }
    if about.amount_cents > 0 {
        line.push_str(&format!(" for {}", money(about.amount_cents, currency)));
    }
    line
}

/// The facts chat messages list: the stage, its tier, deadline, who approves (in a channel
/// post) and the evaluation.
pub(crate) fn facts(
    about: &agentnexus_store::About,
    personal: bool,
) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Stage", about.stage.clone())];
    if let Some(t) = about.tier {
        facts.push(("Tier", t.as_str().to_owned()));
    }
    facts.push((
        "Deadline",
        about
            .expires_at
            .map_or("none".to_owned(), |t| format!("{} (UTC)", minute(t))),
    ));
    if !personal {
        facts.push(("Approvers", about.approvers.join(", ")));
    }
    facts.push(("Evaluation", about.evaluation_id.clone()));
    facts
}

/// The UTC minute a deadline is shown to: `2026-11-25 18:00`.
pub(crate) fn minute(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_is_dollars_and_cents_by_default() {
        let usd = crate::types::Currency::default();
        assert_eq!(super::money(75_000, &usd), "$750.00");
        assert_eq!(super::money(0, &usd), "$0.00");
    }

    #[test]
    fn within_cuts_by_characters() {
        assert_eq!(super::within("héllo", 5), "héllo");
        assert_eq!(super::within("héllo!", 5), "héll…");
    }
}
