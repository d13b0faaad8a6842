//! What the store keeps, in the product's words.

mod messages;

pub use messages::{About, JobKind, Message, StageRef, WebhookEvent};

use std::collections::BTreeMap;

use agentnexus_engine::{
    Channel, Effect, MatchedRule, OnTimeout, Proposal, RuleError, Stage, Tier,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Evaluate, read its workspace's evaluations, MCP.
    Agent,
    /// Everything in the workspace's REST API.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "agent" => Some(Scope::Agent),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// An API key as listed: never its secret, which exists only in the response that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the only time its secret is seen.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: ApiKey,
    pub secret: String,
}

/// What authenticating with a key yields.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub tenant: crate::Tenant,
    pub key_id: String,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Who did something, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key(String),
    Member(String),
    Cli,
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Key(id) => format!("key:{id}"),
            Actor::Member(email) => format!("member:{email}"),
            Actor::Cli => "cli".into(),
            Actor::System => "system".into(),
        }
    }
}

/// Where a policy version came from (SPEC §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Api,
    Dashboard,
    Cli,
    Git(String),
}

impl PolicySource {
    pub fn label(&self) -> String {
        match self {
            PolicySource::Api => "api".into(),
            PolicySource::Dashboard => "dashboard".into(),
            PolicySource::Cli => "cli".into(),
            PolicySource::Git(sha) => format!("git:{sha}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    pub document: String,
    pub format: String,
    pub author: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

impl PolicyVersion {
    /// The format its document was written in (`format` as stored).
    pub fn document_format(&self) -> agentnexus_engine::Format {
        if self.format == "json" {
            agentnexus_engine::Format::Json
        } else {
            agentnexus_engine::Format::Yaml
        }
    }
}

/// A policy as listed: its active version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Allowed,
    Denied,
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Allowed => "allowed",
            Status::Denied => "denied",
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Allowed,
            Status::Denied,
            Status::Pending,
            Status::Approved,
            Status::Rejected,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// The status an evaluation starts in for a decision.
    pub fn initial(effect: Effect) -> Status {
        match effect {
            Effect::Allow => Status::Allowed,
            Effect::Deny => Status::Denied,
            Effect::RequireApproval => Status::Pending,
        }
    }
}

/// An evaluation about to be recorded: the decision and everything it was made from.
#[derive(Debug, Clone)]
pub struct NewEvaluation {
    pub id: String,
    pub tenant: crate::Tenant,
    pub key_id: Option<String>,
    pub proposal: Proposal,
    pub proposal_hash: String,
    pub trace: Option<Value>,
    pub idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    pub decision: Effect,
    pub reason: String,
    pub matched_rules: Vec<MatchedRule>,
    pub errors: Vec<RuleError>,
    /// The rule that asked for approval.
    pub approval: Option<ApprovalRule>,
    pub stages: Vec<Stage>,
    /// Secure links (and their e-mails) for the first stage's approvers.
    pub notices: Vec<Notice>,
    pub policy_versions: BTreeMap<String, i64>,
    pub created_at: DateTime<Utc>,
}

/// What a stage's start sends: to one approver, a personal secure link and the messages that
/// carry it (an e-mail, a Slack direct message); to a stage's chat channel, an announcement
/// with no link. Each message is a job.
#[derive(Debug, Clone)]
pub struct Notice {
    pub link: Option<NewLink>,
    /// The jobs to queue.
    pub messages: Vec<crate::Message>,
}

/// The rule that asked for an evaluation's approval, and its tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApprovalRule {
    pub tier: Tier,
    pub policy: String,
    pub rule: String,
}

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    /// Not started: an earlier stage waits (or ended the evaluation).
    Queued,
    /// The current stage, its deadline running.
    Waiting,
    Passed,
    Rejected,
    Expired,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Queued => "queued",
            StageStatus::Waiting => "waiting",
            StageStatus::Passed => "passed",
            StageStatus::Rejected => "rejected",
            StageStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<StageStatus> {
        [
            StageStatus::Queued,
            StageStatus::Waiting,
            StageStatus::Passed,
            StageStatus::Rejected,
            StageStatus::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl From<agentnexus_engine::approval::StageEnd> for StageStatus {
    fn from(end: agentnexus_engine::approval::StageEnd) -> Self {
        use agentnexus_engine::approval::StageEnd;
        match end {
            StageEnd::Passed => StageStatus::Passed,
            StageEnd::Rejected => StageStatus::Rejected,
            StageEnd::Expired => StageStatus::Expired,
        }
    }
}

impl Serialize for StageStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A secure link for one approver of one stage. Only the token's hash is stored; the
/// messages hold the token sealed with the server key.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub approver: String,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
}

/// A person's decision on a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HumanDecision {
    pub stage: i64,
    pub approver: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// What recording an evaluation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Written, with its audit event, durably.
    Created,
    /// The idempotency key was used within 24 hours: this is the first evaluation's id.
    Existing(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRecord {
    pub index: i64,
    pub name: String,
    pub approvers: Vec<String>,
    pub required: i64,
    pub channels: Vec<Channel>,
    pub timeout_secs: Option<i64>,
    pub on_timeout: OnTimeout,
    pub status: StageStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub id: String,
    pub agent_id: String,
    pub action: String,
    pub resource: Option<String>,
    pub amount_cents: i64,
    pub cost_cents: i64,
    pub params: Value,
    pub context: Value,
    pub trace: Option<Value>,
    pub idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    pub decision: Effect,
    pub status: Status,
    pub reason: String,
    pub matched_rules: Value,
    pub errors: Value,
    pub approval: Option<ApprovalRule>,
    pub current_stage: Option<i64>,
    pub policy_versions: Value,
    pub proposal_hash: String,
    pub key_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub stages: Vec<StageRecord>,
    pub decisions: Vec<HumanDecision>,
    /// What the executing system reported, once it has.
    pub receipt: Option<Receipt>,
}

/// An execution receipt (SPEC §8): what the executing system reported after acting on an
/// evaluation, and whether that conforms to what was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    /// `executed`, `failed` or `skipped`.
    pub outcome: String,
    /// The proposal hash the executing system reported, if it did.
    pub proposal_hash: Option<String>,
    pub detail: Value,
    pub conforms: bool,
    /// Why it does not conform; empty when it does.
    pub problems: Vec<String>,
    /// Who reported it (`key:ID`).
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct EvaluationFilter {
    pub status: Option<Status>,
    pub agent_id: Option<String>,
    pub action: Option<String>,
    /// Only evaluations a rule of this policy matched.
    pub policy: Option<String>,
    /// Only evaluations older than this id (the previous page's last, or an end of a period).
    pub before: Option<String>,
    /// Only evaluations this id or newer (the start of a period).
    pub since: Option<String>,
    pub limit: u32,
}

/// A page of evaluations, newest first.
#[derive(Debug, Clone, Default)]
pub struct EvaluationPage {
    pub evaluations: Vec<Evaluation>,
    /// When a filtered page searched only part of the history: the id it searched down to.
    /// Every evaluation that passes the filter with this id or a newer one is on the page (it
    /// may hold fewer than the limit, or none); older ones are for the next page, `before` it.
    pub searched_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub workspace_id: String,
    pub seq: i64,
    /// Exactly as hashed: RFC 3339, UTC, six fractional digits.
    pub occurred_at: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub actor: String,
    pub evaluation_id: Option<String>,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What an audit event records. `evaluation.created` is not among them: only the group-commit
/// writer writes it, with the evaluation itself, so nothing else can forge one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    WorkspaceCreated,
    KeyCreated,
    KeyRevoked,
    MemberCreated,
    MemberUpdated,
    MemberRemoved,
    PolicyChanged,
    PolicyDisabled,
    PolicyRolledBack,
    SettingsChannelUpdated,
    SettingsChannelRemoved,
    WebhookSecretRotated,
    StageStarted,
    StagePassed,
    StageRejected,
    StageExpired,
    StageExpiryFailed,
    ApprovalViewed,
    ApprovalLinkRequested,
    ApprovalOtpSent,
    ApprovalOtpFailed,
    ApprovalLocked,
    ApprovalDecided,
    EvaluationApproved,
    EvaluationRejected,
    EvaluationExpired,
    WebhookAttempted,
    EmailAttempted,
    SlackAttempted,
    TeamsAttempted,
    SessionSignedIn,
    SessionSignInFailed,
    SessionSignedOut,
    AccountPasswordChanged,
    MemberInvited,
    InvitationAccepted,
    ChannelTestQueued,
    DeliveryRetried,
    SettingsWorkspaceUpdated,
    ReceiptRecorded,
    AgentUpdated,
    AgentSuspended,
    AgentResumed,
    KillSwitchEngaged,
    KillSwitchReleased,
    PolicySourceBound,
    PolicySourceUnbound,
    PolicySyncFailed,
    GitHubWebhookSecretCreated,
    SettingsSsoUpdated,
    SettingsSsoRemoved,
    SsoSignInFailed,
    SessionBreakGlass,
}

impl EventKind {
    /// The event's `type` as recorded and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::WorkspaceCreated => "workspace.created",
            EventKind::KeyCreated => "key.created",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::MemberCreated => "member.created",
            EventKind::MemberUpdated => "member.updated",
            EventKind::MemberRemoved => "member.removed",
            EventKind::PolicyChanged => "policy.changed",
            EventKind::PolicyDisabled => "policy.disabled",
            EventKind::PolicyRolledBack => "policy.rolled_back",
            EventKind::SettingsChannelUpdated => "settings.channel_updated",
            EventKind::SettingsChannelRemoved => "settings.channel_removed",
            EventKind::WebhookSecretRotated => "webhook.secret_rotated",
            EventKind::StageStarted => "stage.started",
            EventKind::StagePassed => "stage.passed",
            EventKind::StageRejected => "stage.rejected",
            EventKind::StageExpired => "stage.expired",
            EventKind::StageExpiryFailed => "stage.expiry_failed",
            EventKind::ApprovalViewed => "approval.viewed",
            EventKind::ApprovalLinkRequested => "approval.link_requested",
            EventKind::ApprovalOtpSent => "approval.otp_sent",
            EventKind::ApprovalOtpFailed => "approval.otp_failed",
            EventKind::ApprovalLocked => "approval.locked",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::EvaluationApproved => "evaluation.approved",
            EventKind::EvaluationRejected => "evaluation.rejected",
            EventKind::EvaluationExpired => "evaluation.expired",
            EventKind::WebhookAttempted => "webhook.attempted",
            EventKind::EmailAttempted => "email.attempted",
            EventKind::SlackAttempted => "slack.attempted",
            EventKind::TeamsAttempted => "teams.attempted",
            EventKind::SessionSignedIn => "session.signed_in",
            EventKind::SessionSignInFailed => "session.sign_in_failed",
            EventKind::SessionSignedOut => "session.signed_out",
            EventKind::AccountPasswordChanged => "account.password_changed",
            EventKind::MemberInvited => "member.invited",
            EventKind::InvitationAccepted => "invitation.accepted",
            EventKind::ChannelTestQueued => "channel.test_queued",
            EventKind::DeliveryRetried => "delivery.retried",
            EventKind::SettingsWorkspaceUpdated => "settings.workspace_updated",
            EventKind::ReceiptRecorded => "receipt.recorded",
            EventKind::AgentUpdated => "agent.updated",
            EventKind::AgentSuspended => "agent.suspended",
            EventKind::AgentResumed => "agent.resumed",
            EventKind::KillSwitchEngaged => "kill_switch.engaged",
            EventKind::KillSwitchReleased => "kill_switch.released",
            EventKind::PolicySourceBound => "policy.source_bound",
            EventKind::PolicySourceUnbound => "policy.source_unbound",
            EventKind::PolicySyncFailed => "policy.sync_failed",
            EventKind::SettingsSsoUpdated => "settings.sso_updated",
            EventKind::SettingsSsoRemoved => "settings.sso_removed",
            EventKind::SsoSignInFailed => "sso.sign_in_failed",
            EventKind::SessionBreakGlass => "session.break_glass",
            EventKind::GitHubWebhookSecretCreated => "integration.github_secret_created",
        }
    }
}

/// The `type` of the event the writer records with each evaluation.
pub(crate) const EVALUATION_CREATED: &str = "evaluation.created";

/// An audit event to append; the store gives it its seq and hashes.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub kind: EventKind,
    pub actor: Actor,
    pub evaluation_id: Option<String>,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Verification {
    Ok {
        ok: bool,
        events: i64,
        head_hash: String,
    },
    Broken {
        ok: bool,
        broken_at_seq: i64,
        events_checked: i64,
        reason: String,
    },
}

impl Verification {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verification::Ok { .. })
    }
}
