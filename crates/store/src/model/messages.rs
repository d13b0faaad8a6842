//! What a job carries (`jobs.payload`): an event for an integrator's webhook, or a message to
//! people about an approval. Messages keep facts, not text: each is written when it is sent,
//! by one formatter per medium, so every e-mail, Slack and Teams message reads the same way
//! and a message queued before an upgrade is written by the new formatter.
//!
//! Stored as JSON tagged by `message`. Payloads queued by versions before the tag (an e-mail
//! with its text already written, a chat message's `about`, a webhook's `url` and `body`) are
//! read by their job's kind, so nothing queued is lost on an upgrade.

use agentnexus_engine::Tier;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{EventKind, HumanDecision, Result, Status, StoreError};

/// What a job does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// POST an event to an integrator's `webhook_url` (SPEC §6).
    Webhook,
    /// Send an e-mail (secure links and one-time codes) over SMTP (SPEC §5).
    Email,
    /// Post an approval request to Slack: a direct message, or a channel's webhook.
    Slack,
    /// Post an approval request to a Microsoft Teams channel's webhook.
    Teams,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Webhook => "webhook",
            JobKind::Email => "email",
            JobKind::Slack => "slack",
            JobKind::Teams => "teams",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<JobKind> {
        match s {
            "webhook" => Some(JobKind::Webhook),
            "email" => Some(JobKind::Email),
            "slack" => Some(JobKind::Slack),
            "teams" => Some(JobKind::Teams),
            _ => None,
        }
    }

    /// The audit event every attempt writes.
    pub(crate) fn attempted_event(self) -> EventKind {
        match self {
            JobKind::Webhook => EventKind::WebhookAttempted,
            JobKind::Email => EventKind::EmailAttempted,
            JobKind::Slack => EventKind::SlackAttempted,
            JobKind::Teams => EventKind::TeamsAttempted,
        }
    }
}

/// A job's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum Message {
    /// An event POSTed to the evaluation's `webhook_url` (SPEC §6).
    Webhook { url: String, event: WebhookEvent },
    /// One approver's secure link, by e-mail.
    LinkEmail {
        to: String,
        /// The link's token, sealed with the server key for its workspace: the job table
        /// never holds a usable link.
        token: String,
        /// When the link stops working (the stage's deadline, or a week without one).
        #[serde(with = "timestamp")]
        link_expires_at: DateTime<Utc>,
        about: About,
    },
    /// A one-time code by e-mail (critical tier), sealed like a token.
    CodeEmail {
        to: String,
        code: String,
        evaluation_id: String,
    },
    /// One approver's secure link, by Slack direct message.
    SlackDirect {
        to: String,
        token: String,
        about: About,
    },
    /// A stage announced in the workspace's Slack channel: no credential, a link to the
    /// sign-in page.
    SlackChannel { about: About },
    /// A stage announced in the workspace's Teams channel, the same way.
    TeamsChannel { about: About },
    /// An invitation to set a password and sign in to a workspace, its token sealed.
    InviteEmail {
        to: String,
        token: String,
        /// The workspace's name.
        workspace: String,
        /// Who invited them (an audit actor: `member:EMAIL`, `key:ID`, `cli`).
        invited_by: String,
        #[serde(with = "timestamp")]
        expires_at: DateTime<Utc>,
    },
    /// A test e-mail from the dashboard's settings: does mail from this server arrive?
    TestEmail {
        to: String,
        workspace: String,
        /// Who asked for it (an audit actor).
        requested_by: String,
    },
    /// A test post to the workspace's Slack channel (its incoming webhook).
    SlackTest {
        workspace: String,
        requested_by: String,
    },
    /// A test post to the workspace's Teams channel.
    TeamsTest {
        workspace: String,
        requested_by: String,
    },
    /// An e-mail queued by an earlier version, its text written then (`{link}` or `{code}`
    /// stands for the sealed secret).
    WrittenEmail {
        to: String,
        subject: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

impl Message {
    /// The kind of job that carries it.
    pub fn kind(&self) -> JobKind {
        match self {
            Message::Webhook { .. } => JobKind::Webhook,
            Message::LinkEmail { .. }
            | Message::CodeEmail { .. }
            | Message::InviteEmail { .. }
            | Message::TestEmail { .. }
            | Message::WrittenEmail { .. } => JobKind::Email,
            Message::SlackDirect { .. }
            | Message::SlackChannel { .. }
            | Message::SlackTest { .. } => JobKind::Slack,
            Message::TeamsChannel { .. } | Message::TeamsTest { .. } => JobKind::Teams,
        }
    }

    /// The person it is for, if one: an e-mail address.
    pub fn recipient(&self) -> Option<&str> {
        match self {
            Message::LinkEmail { to, .. }
            | Message::CodeEmail { to, .. }
            | Message::InviteEmail { to, .. }
            | Message::TestEmail { to, .. }
            | Message::SlackDirect { to, .. }
            | Message::WrittenEmail { to, .. } => Some(to),
            Message::Webhook { .. }
            | Message::SlackChannel { .. }
            | Message::TeamsChannel { .. }
            | Message::SlackTest { .. }
            | Message::TeamsTest { .. } => None,
        }
    }

    /// A payload as stored: tagged, or in the shape its kind had before the tag.
    pub(crate) fn from_stored(kind: JobKind, payload: &str) -> Result<Message> {
        let value: Value = serde_json::from_str(payload)?;
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("a {} job: {e}", kind.as_str()));
        if value.get("message").is_some() {
            return serde_json::from_value(value).map_err(corrupt);
        }
        let mut value = value;
        let mut take = |k: &str| value.get_mut(k).map(Value::take).unwrap_or_default();
        Ok(match kind {
            JobKind::Webhook => Message::Webhook {
                url: serde_json::from_value(take("url")).map_err(corrupt)?,
                event: serde_json::from_value(take("body")).map_err(corrupt)?,
            },
            JobKind::Email => Message::WrittenEmail {
                to: serde_json::from_value(take("to")).map_err(corrupt)?,
                subject: serde_json::from_value(take("subject")).map_err(corrupt)?,
                text: serde_json::from_value(take("text")).map_err(corrupt)?,
                token: serde_json::from_value(take("token")).map_err(corrupt)?,
                code: serde_json::from_value(take("code")).map_err(corrupt)?,
            },
            JobKind::Slack | JobKind::Teams => {
                let about = serde_json::from_value(take("about")).map_err(corrupt)?;
                let to: Option<String> = serde_json::from_value(take("to")).map_err(corrupt)?;
                match (kind, to) {
                    (JobKind::Slack, Some(to)) => Message::SlackDirect {
                        to,
                        token: serde_json::from_value(take("token")).map_err(corrupt)?,
                        about,
                    },
                    (JobKind::Slack, None) => Message::SlackChannel { about },
                    _ => Message::TeamsChannel { about },
                }
            }
        })
    }
}

/// What a message about a stage says of the proposal and the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct About {
    pub evaluation_id: String,
    pub agent_id: String,
    pub action: String,
    pub resource: Option<String>,
    pub amount_cents: i64,
    pub reason: String,
    /// The stage's name.
    pub stage: String,
    pub tier: Option<Tier>,
    /// Everyone the stage reaches (a channel post lists them).
    pub approvers: Vec<String>,
    /// The stage's deadline; none when it has no timeout.
    #[serde(default, with = "timestamp::optional")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An event for an integrator (SPEC §6), as it was when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A human stage started waiting.
    ApprovalRequired {
        evaluation_id: String,
        status: Status,
        stage: StageRef,
        #[serde(with = "timestamp")]
        occurred_at: DateTime<Utc>,
    },
    /// The evaluation is final.
    TerminalOutcome {
        evaluation_id: String,
        status: Status,
        reason: String,
        decisions: Vec<HumanDecision>,
        #[serde(with = "timestamp")]
        occurred_at: DateTime<Utc>,
    },
    /// Sent on request (`POST /api/v1/webhooks/test`) to check a receiver and its signature
    /// check; about no evaluation.
    Test {
        message: String,
        #[serde(with = "timestamp")]
        occurred_at: DateTime<Utc>,
    },
}

impl WebhookEvent {
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::ApprovalRequired { .. } => "approval_required",
            WebhookEvent::TerminalOutcome { .. } => "terminal_outcome",
            WebhookEvent::Test { .. } => "test",
        }
    }

    /// `approval_required` for a stage that started waiting.
    pub fn approval_required(
        evaluation_id: &str,
        index: i64,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> WebhookEvent {
        WebhookEvent::ApprovalRequired {
            evaluation_id: evaluation_id.to_owned(),
            status: Status::Pending,
            stage: StageRef {
                index,
                name: name.to_owned(),
                expires_at,
            },
            occurred_at: at,
        }
    }
}

/// The stage an `approval_required` event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRef {
    pub index: i64,
    pub name: String,
    #[serde(with = "timestamp::optional")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Times as the API writes them (RFC 3339, UTC, six fractional digits). Read back from that
/// or from the `YYYY-MM-DD HH:MM` (UTC) that messages queued by earlier versions kept.
mod timestamp {
    use chrono::{DateTime, NaiveDateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timestamp_text(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").map(|t| t.and_utc()))
            .map_err(|e| format!("{s:?} is not a time: {e}"))
    }

    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn about_json() -> Value {
        json!({"evaluation_id": "ev_1", "agent_id": "bot", "action": "stripe.refund",
               "resource": null, "amount_cents": 75000, "reason": "big", "stage": "finance",
               "tier": "critical", "approvers": ["a@x.io"], "expires_at": "2026-11-25 18:00"})
    }

    #[test]
    fn payloads_queued_before_the_tag_still_read() {
        let email = json!({"to": "a@x.io", "subject": "s", "text": "go {link}", "token": "v2.x"});
        assert_eq!(
            Message::from_stored(JobKind::Email, &email.to_string()).unwrap(),
            Message::WrittenEmail {
                to: "a@x.io".into(),
                subject: "s".into(),
                text: "go {link}".into(),
                token: Some("v2.x".into()),
                code: None
            }
        );
        let direct = json!({"to": "a@x.io", "token": "v2.t", "about": about_json()});
        let Message::SlackDirect { to, token, about } =
            Message::from_stored(JobKind::Slack, &direct.to_string()).unwrap()
        else {
            panic!("a direct message")
        };
        assert_eq!((to.as_str(), token.as_str()), ("a@x.io", "v2.t"));
        assert_eq!(about.tier, Some(Tier::Critical));
        assert_eq!(
            about.expires_at.map(crate::timestamp_text).as_deref(),
            Some("2026-11-25T18:00:00.000000Z")
        );
        let channel = json!({"about": about_json()}).to_string();
        assert!(matches!(
            Message::from_stored(JobKind::Slack, &channel).unwrap(),
            Message::SlackChannel { .. }
        ));
        assert!(matches!(
            Message::from_stored(JobKind::Teams, &channel).unwrap(),
            Message::TeamsChannel { .. }
        ));
        let webhook = json!({"url": "https://h.example/x", "body": {
            "event": "approval_required", "evaluation_id": "ev_1", "status": "pending",
            "stage": {"index": 0, "name": "finance", "expires_at": null},
            "occurred_at": "2026-11-25T15:04:33.123456Z"}});
        let Message::Webhook { url, event } =
            Message::from_stored(JobKind::Webhook, &webhook.to_string()).unwrap()
        else {
            panic!("a webhook")
        };
        assert_eq!(url, "https://h.example/x");
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            webhook["body"],
            "the event reads back as sent"
        );
    }

    #[test]
    fn tagged_payloads_round_trip() {
        let about: About = serde_json::from_value(about_json()).unwrap();
        for m in [
            Message::LinkEmail {
                to: "a@x.io".into(),
                token: "v2.t".into(),
                link_expires_at: Utc::now(),
                about: about.clone(),
            },
            Message::CodeEmail {
                to: "a@x.io".into(),
                code: "v2.c".into(),
                evaluation_id: "ev_1".into(),
            },
            Message::TeamsChannel { about },
        ] {
            let stored = serde_json::to_string(&m).unwrap();
            let back = Message::from_stored(m.kind(), &stored).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&m).unwrap()
            );
        }
        assert!(Message::from_stored(JobKind::Email, "{\"message\": \"nonsense\"}").is_err());
        assert!(Message::from_stored(JobKind::Email, "{\"to\": 1}").is_err());
    }
}
