//! What happened and what waits: the overview, the approvals inbox, evaluations with their
//! timelines, and the audit trail.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::evaluations::ListInput;
use agentnexus_app::inbox::InboxItem;
use agentnexus_app::render::money;
use agentnexus_app::types::{Currency, EvaluationId};
use agentnexus_store::{AuditEvent, Evaluation, Verification};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::reports::DaysQuery;
use super::{Empty, Nav, Posted, Session, error_page, render, see, when};
use crate::extract::Path;

/// An evaluation as a row of a list.
pub struct Row {
    pub id: String,
    pub created: String,
    pub agent: String,
    pub action: String,
    pub resource: String,
    pub amount: String,
    pub status: &'static str,
}

impl Row {
    fn of(e: &Evaluation, currency: &Currency) -> Row {
        Row {
            id: e.id.clone(),
            created: when(&e.created_at),
            agent: e.agent_id.clone(),
            action: e.action.clone(),
            resource: e.resource.clone().unwrap_or_default(),
            amount: if e.amount_cents == 0 {
                String::new()
            } else {
                money(e.amount_cents, currency)
            },
            status: e.status.as_str(),
        }
    }
}

/// An inbox entry: the proposal as a whole, for deciding from the page.
pub struct Waiting {
    pub row: Row,
    pub stage: String,
    pub deadline: String,
    pub reason: String,
    pub tier: String,
    pub params: String,
    pub context: String,
    pub rules: String,
    pub decisions: Vec<String>,
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

impl Waiting {
    fn of(item: InboxItem, currency: &Currency) -> Waiting {
        let e = &item.evaluation;
        Waiting {
            row: Row::of(e, currency),
            stage: item.stage_name.clone(),
            deadline: item
                .expires_at
                .map(|t| when(&t))
                .unwrap_or_else(|| "none".to_owned()),
            reason: e.reason.clone(),
            tier: e
                .approval
                .as_ref()
                .map(|a| a.tier.as_str().to_owned())
                .unwrap_or_default(),
            params: pretty(&e.params),
            context: pretty(&e.context),
            rules: pretty(&e.matched_rules),
            decisions: e
                .decisions
                .iter()
                .map(|d| {
                    format!(
                        "stage {}: {} by {}{}",
                        d.stage + 1,
                        d.decision,
                        d.approver,
                        d.comment
                            .as_ref()
                            .map(|c| format!(" — “{c}”"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    title: &'static str,
    nav: Option<Nav>,
    waiting_for_me: usize,
    decided: Vec<(&'static str, &'static str, i64)>,
    spend: String,
    head_seq: i64,
    chain: Option<(bool, String, String)>,
}

pub async fn overview(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    let nav = Nav::of(&signed, "/");
    let o = match app.overview(&signed).await {
        Ok(o) => o,
        Err(e) => return error_page(Some(nav), e),
    };
    let chain = o.chain.map(|c| {
        let text = match &c.verification {
            Verification::Ok { events, .. } => format!("{events} events verified"),
            Verification::Broken {
                broken_at_seq,
                reason,
                ..
            } => format!("broken at event {broken_at_seq}: {reason}"),
        };
        (
            matches!(c.verification, Verification::Ok { .. }),
            text,
            when(&c.checked_at),
        )
    });
    render(
        StatusCode::OK,
        &OverviewPage {
            title: "Overview",
            nav: Some(nav),
            waiting_for_me: o.waiting_for_me,
            decided: o
                .decided_today
                .into_iter()
                .map(|(decision, n)| match decision.as_str() {
                    "allow" => ("allowed", "allowed", n),
                    "deny" => ("denied", "denied", n),
                    _ => ("pending", "sent for approval", n),
                })
                .collect(),
            spend: money(o.spend_today_cents, &o.currency),
            head_seq: o.head.0,
            chain,
        },
    )
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    title: &'static str,
    nav: Option<Nav>,
    items: Vec<Waiting>,
    /// How many wait in all (the page shows the first `INBOX_PAGE`).
    total: usize,
}

pub async fn inbox(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    let nav = Nav::of(&signed, "/inbox");
    match tokio::try_join!(app.inbox(&signed), app.currency(signed.tenant())) {
        Ok(((items, total), currency)) => render(
            StatusCode::OK,
            &InboxPage {
                title: "Approvals inbox",
                nav: Some(nav),
                items: items
                    .into_iter()
                    .map(|i| Waiting::of(i, &currency))
                    .collect(),
                total,
            },
        ),
        Err(e) => error_page(Some(nav), e),
    }
}

/// Opens the approval page for the signed-in approver: the same page, codes and checks as an
/// e-mailed link.
pub async fn open_decision(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Posted(signed, Empty {}): Posted<Empty>,
) -> Response {
    match app.review(&signed, &EvaluationId::from(id)).await {
        Ok(token) => see(&format!("/approvals/{token}")),
        Err(e) => error_page(Some(Nav::of(&signed, "/inbox")), e),
    }
}

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    cursor: String,
    /// `datetime-local` values, taken as UTC.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// A `datetime-local` field's value (`2026-12-04T09:30`, taken as UTC) as RFC 3339.
fn utc(field: &str) -> Option<String> {
    let v = field.trim();
    if v.is_empty() {
        return None;
    }
    Some(match v.len() {
        16 => format!("{v}:00Z"),
        19 => format!("{v}Z"),
        _ => v.to_owned(),
    })
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[derive(Template)]
#[template(path = "evaluations.html")]
struct EvaluationsPage {
    title: &'static str,
    nav: Option<Nav>,
    rows: Vec<Row>,
    status: String,
    agent_id: String,
    action: String,
    policy: String,
    /// The workspace's policies, offered for `policy` (any name may be typed: evaluations
    /// keep the names of policies since deleted).
    policies: Vec<String>,
    from: String,
    to: String,
    statuses: [&'static str; 6],
    next: Option<String>,
}

pub async fn evaluations(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let nav = Nav::of(&signed, "/evaluations");
    let Query(f) = filters.unwrap_or_default();
    let input = ListInput {
        status: given(&f.status),
        agent_id: given(&f.agent_id),
        action: given(&f.action),
        policy: given(&f.policy),
        limit: Some(50),
        cursor: given(&f.cursor),
        from: utc(&f.from),
        to: utc(&f.to),
    };
    let reader = signed.reader();
    match tokio::try_join!(
        app.evaluations(&reader, input),
        app.currency(signed.tenant()),
        app.policies(&reader)
    ) {
        Ok((page, currency, policies)) => {
            let next = page.next_cursor.map(|c| {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("status", f.status.trim())
                    .append_pair("agent_id", f.agent_id.trim())
                    .append_pair("action", f.action.trim())
                    .append_pair("policy", f.policy.trim())
                    .append_pair("from", f.from.trim())
                    .append_pair("to", f.to.trim())
                    .append_pair("cursor", &c);
                format!("/evaluations?{}", q.finish())
            });
            render(
                StatusCode::OK,
                &EvaluationsPage {
                    title: "Evaluations",
                    nav: Some(nav),
                    rows: page
                        .evaluations
                        .iter()
                        .map(|e| Row::of(e, &currency))
                        .collect(),
                    status: f.status,
                    agent_id: f.agent_id,
                    action: f.action,
                    policy: f.policy,
                    policies: policies.into_iter().map(|p| p.name).collect(),
                    from: f.from,
                    to: f.to,
                    statuses: [
                        "allowed", "denied", "pending", "approved", "rejected", "expired",
                    ],
                    next,
                },
            )
        }
        Err(e) => error_page(Some(nav), e),
    }
}

/// One line of a timeline.
pub struct Line {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub data: String,
}

impl Line {
    fn of(e: &AuditEvent) -> Line {
        Line {
            at: e.occurred_at.clone(),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            data: e.data.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "evaluation.html")]
struct EvaluationPage {
    title: &'static str,
    nav: Option<Nav>,
    e: Waiting,
    decision: &'static str,
    proposal_hash: String,
    /// Each policy that decided: name, version, and the commit it came from (source git).
    policy_versions: Vec<(String, i64, Option<String>)>,
    waiting: bool,
    /// What the executing system reported, in words; none until it has.
    receipt: Option<(String, bool)>,
    timeline: Vec<Line>,
}

pub async fn evaluation(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    Path(id): Path<String>,
) -> Response {
    let nav = Nav::of(&signed, "/evaluations");
    let id = EvaluationId::from(id);
    let reader = signed.reader();
    let (ev, timeline, currency) = match tokio::try_join!(
        app.read_evaluation(&reader, &id),
        app.timeline(&reader, &id),
        app.currency(signed.tenant())
    ) {
        Ok(both) => both,
        Err(e) => return error_page(Some(nav), e),
    };
    let stage = ev
        .current_stage
        .and_then(|i| ev.stages.iter().find(|s| s.index == i));
    let waiting = stage.is_some() && ev.status == agentnexus_store::Status::Pending;
    let item = InboxItem {
        stage: ev.current_stage.unwrap_or_default(),
        stage_name: stage.map(|s| s.name.clone()).unwrap_or_default(),
        expires_at: stage.and_then(|s| s.expires_at),
        evaluation: ev,
    };
    let decision = item.evaluation.decision.as_str();
    let proposal_hash = item.evaluation.proposal_hash.clone();
    let mut policy_versions = Vec::new();
    if let Some(used) = item.evaluation.policy_versions.as_object() {
        for (name, version) in used {
            let Some(version) = version.as_i64() else {
                continue;
            };
            let commit = match app.policy_version(&reader, name, version).await {
                Ok(v) => v.source.strip_prefix("git:").map(str::to_owned),
                Err(_) => None,
            };
            policy_versions.push((name.clone(), version, commit));
        }
    }
    let receipt = item.evaluation.receipt.as_ref().map(|r| {
        let verdict = if r.conforms {
            "conforms to what was decided".to_owned()
        } else {
            format!("does not conform: {}", r.problems.join("; "))
        };
        (
            format!("{} {} by {}, {verdict}", r.outcome, when(&r.at), r.actor),
            r.conforms,
        )
    });
    render(
        StatusCode::OK,
        &EvaluationPage {
            title: "Evaluation",
            nav: Some(nav),
            e: Waiting::of(item, &currency),
            decision,
            proposal_hash,
            policy_versions,
            waiting,
            receipt,
            timeline: timeline.iter().map(Line::of).collect(),
        },
    )
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    after_seq: Option<i64>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    title: &'static str,
    nav: Option<Nav>,
    events: Vec<(i64, Line, String)>,
    next: Option<i64>,
    head_seq: i64,
    head_hash: String,
    chain: Option<(bool, String, String)>,
}

async fn audit_page(app: &App, signed: &agentnexus_app::Signed, after: Option<i64>) -> Response {
    let nav = Nav::of(signed, "/audit");
    let reader = signed.reader();
    let page = match app.audit_page(&reader, after, Some(100)).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(nav), e),
    };
    let (chain, head) = match app.chain_status(&reader).await {
        Ok(status) => status,
        Err(e) => return error_page(Some(nav), e),
    };
    let chain = chain.map(|c| {
        let ok = matches!(c.verification, Verification::Ok { .. });
        let text = match c.verification {
            Verification::Ok {
                events, head_hash, ..
            } => {
                format!("{events} events, head {head_hash}")
            }
            Verification::Broken {
                broken_at_seq,
                reason,
                ..
            } => format!("broken at event {broken_at_seq}: {reason}"),
        };
        (ok, text, when(&c.checked_at))
    });
    render(
        StatusCode::OK,
        &AuditPage {
            title: "Audit trail",
            nav: Some(nav),
            events: page
                .events
                .iter()
                .map(|e| {
                    (
                        e.seq,
                        Line::of(e),
                        e.evaluation_id.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            next: page.next_after_seq,
            head_seq: head.0,
            head_hash: head.1,
            chain,
        },
    )
}

pub async fn audit(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = q.unwrap_or_default();
    audit_page(&app, &signed, q.after_seq).await
}

/// The compliance evidence bundle of the days the form names (`to` included), or the last
/// 30 days.
pub async fn evidence(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    q: Result<Query<DaysQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = q.unwrap_or_default();
    let (from, to) = match q.period() {
        Ok(p) => p,
        Err(e) => return error_page(Some(Nav::of(&signed, "/audit")), e),
    };
    match app
        .evidence(&signed.reader(), from.as_deref(), to.as_deref())
        .await
    {
        Ok(chunks) => crate::wire::evidence_zip(chunks),
        Err(e) => error_page(Some(Nav::of(&signed, "/audit")), e),
    }
}

pub async fn verify(
    State(app): State<Arc<App>>,
    Posted(signed, Empty {}): Posted<Empty>,
) -> Response {
    match app.verify_audit(&signed.reader()).await {
        Ok(_) => see("/audit"),
        Err(e) => error_page(Some(Nav::of(&signed, "/audit")), e),
    }
}
