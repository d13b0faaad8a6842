//! What operators change: policies (edit with validation, versions, diffs, rollback,
//! enable/disable, simulate), API keys, members and roles, the agents and their kill switch,
//! and the settings they read.
//! Changing takes an owner or admin (`App::manager`); everyone signed in reads.

use std::sync::Arc;

use agentnexus_app::members::{MemberChange, NewMemberInput};
use agentnexus_app::policies::{PolicyText, SimulateInput};
use agentnexus_app::render::money;
use agentnexus_app::types::{AgentId, Channel, KeyId, MemberId};
use agentnexus_app::{App, Error, Signed};
use agentnexus_engine::{Problem, ProposalFields};
use agentnexus_store::{ApiKey, Member, PolicySummary, PolicyVersion};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Empty, Managed, Nav, Posted, Session, error_page, render, see, when};
use crate::extract::Path;

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    title: &'static str,
    nav: Option<Nav>,
    policies: Vec<(PolicySummary, String)>,
    draft: Draft,
}

/// The editor's state: the text as typed and what the validator found in it.
#[derive(Default)]
pub struct Draft {
    pub name: String,
    pub text: String,
    pub problems: Vec<String>,
    pub valid: Option<String>,
}

fn problems(list: &[Problem]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

pub async fn policies(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    policies_page(&app, &signed, Draft::default(), StatusCode::OK).await
}

async fn policies_page(app: &App, signed: &Signed, draft: Draft, status: StatusCode) -> Response {
    let nav = Nav::of(signed, "/policies");
    match app.policies(&signed.reader()).await {
        Ok(list) => render(
            status,
            &PoliciesPage {
                title: "Policies",
                nav: Some(nav),
                policies: list
                    .into_iter()
                    .map(|p| {
                        let updated = when(&p.updated_at);
                        (p, updated)
                    })
                    .collect(),
                draft,
            },
        ),
        Err(e) => error_page(Some(nav), e),
    }
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    document: String,
}

/// A refused document back in its editor, with the validator's problems at their lines.
fn refused(e: Error, draft: &mut Draft) -> Result<(), Error> {
    match e {
        Error::Invalid {
            detail,
            problems: p,
        } => {
            draft.problems = if p.is_empty() {
                vec![detail]
            } else {
                problems(&p)
            };
            Ok(())
        }
        other => Err(other),
    }
}

pub async fn create_policy(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<PolicyForm>,
) -> Response {
    let name = form.name.trim().to_owned();
    match app
        .put_policy(&admin, &name, PolicyText::sniff(form.document.clone()))
        .await
    {
        Ok(v) => see(&format!("/policies/{}", v.name)),
        Err(e) => {
            let mut draft = Draft {
                name,
                text: form.document,
                ..Draft::default()
            };
            match refused(e, &mut draft) {
                Ok(()) => {
                    policies_page(&app, &signed, draft, StatusCode::UNPROCESSABLE_ENTITY).await
                }
                Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    title: &'static str,
    nav: Option<Nav>,
    name: String,
    active: PolicyVersion,
    versions: Vec<(PolicyVersion, String, String)>,
    draft: Draft,
    saved: bool,
    binding: Option<BindingRow>,
    replay: Option<ReplayRow>,
}

/// Where a bound policy comes from, as the page shows it.
struct BindingRow {
    repo: String,
    branch: String,
    path: String,
    /// When, status, commit (short), error.
    last: Option<(String, String, Option<String>, Option<String>)>,
}

/// What replaying the draft found, as the page shows it.
struct ReplayRow {
    evaluated: u64,
    changed: u64,
    transitions: Vec<(String, u64)>,
    /// Evaluation id, before, after, the rules that matched after.
    examples: Vec<(String, String, String, String)>,
}

/// A version's origin for people: `git abc1234` for a commit.
fn origin(source: &str) -> String {
    match source.strip_prefix("git:") {
        Some(sha) => format!("git {}", &sha[..sha.len().min(7)]),
        None => source.to_owned(),
    }
}

#[derive(Deserialize, Default)]
pub struct PolicyQuery {
    #[serde(default)]
    saved: Option<String>,
}

async fn policy_page(
    app: &App,
    signed: &Signed,
    name: &str,
    draft: Option<Draft>,
    saved: bool,
    replay: Option<ReplayRow>,
) -> Response {
    let nav = Nav::of(signed, "/policies");
    let reader = signed.reader();
    let (active, versions, binding) = match tokio::try_join!(
        app.policy(&reader, name),
        app.policy_versions(&reader, name),
        app.policy_binding(&reader, name),
    ) {
        Ok(all) => all,
        Err(e) => return error_page(Some(nav), e),
    };
    let binding = binding.map(|b| BindingRow {
        repo: b.file.repo,
        branch: b.file.branch,
        path: b.file.path,
        last: b.last_sync.map(|s| {
            let commit = s.commit.map(|c| c.chars().take(7).collect());
            (when(&s.at), s.status, commit, s.error)
        }),
    });
    let status = match &draft {
        Some(d) if !d.problems.is_empty() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let draft = draft.unwrap_or_else(|| Draft {
        name: name.to_owned(),
        text: active.document.clone(),
        ..Draft::default()
    });
    render(
        status,
        &PolicyPage {
            title: "Policy",
            nav: Some(nav),
            name: name.to_owned(),
            active,
            versions: versions
                .into_iter()
                .map(|v| {
                    let at = when(&v.created_at);
                    let origin = origin(&v.source);
                    (v, at, origin)
                })
                .collect(),
            draft,
            saved,
            binding,
            replay,
        },
    )
}

pub async fn policy(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    Path(name): Path<String>,
    q: Result<Query<PolicyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let saved = q.is_ok_and(|Query(q)| q.saved.is_some());
    policy_page(&app, &signed, &name, None, saved, None).await
}

/// Syncs a bound policy from GitHub now, then shows the page with what the sync found.
pub async fn sync_policy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Managed(signed, admin, _): Managed<Empty>,
) -> Response {
    match app.sync_policy(&admin, &name).await {
        Ok(_) => see(&format!("/policies/{name}")),
        Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
    }
}

/// Replays the editor's draft over the last 30 days (at most 10,000 evaluations): the page
/// again, the draft kept, with what would have changed. With htmx only that part is swapped.
pub async fn replay_policy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Managed(signed, _admin, form): Managed<PolicyForm>,
) -> Response {
    let input = agentnexus_app::replay::ReplayInput {
        policy: PolicyText::sniff(form.document.clone()),
        from: None,
        to: None,
        limit: None,
    };
    let mut draft = Draft {
        name: name.clone(),
        text: form.document,
        ..Draft::default()
    };
    match app.replay(&signed.reader(), input).await {
        Ok(r) => {
            let row = ReplayRow {
                evaluated: r.evaluated,
                changed: r.changed,
                transitions: r.transitions.into_iter().collect(),
                examples: r
                    .examples
                    .into_iter()
                    .map(|e| {
                        let rules = e
                            .matched_rules
                            .iter()
                            .map(|m| format!("{}/{}", m.policy, m.rule))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let (before, after) = (e.before.as_str(), e.after.as_str());
                        (e.evaluation_id, before.to_owned(), after.to_owned(), rules)
                    })
                    .collect(),
            };
            policy_page(&app, &signed, &name, Some(draft), false, Some(row)).await
        }
        Err(e) => match refused(e, &mut draft) {
            Ok(()) => policy_page(&app, &signed, &name, Some(draft), false, None).await,
            Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
        },
    }
}

pub async fn save_policy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Managed(signed, admin, form): Managed<PolicyForm>,
) -> Response {
    match app
        .put_policy(&admin, &name, PolicyText::sniff(form.document.clone()))
        .await
    {
        Ok(_) => see(&format!("/policies/{name}?saved=1")),
        Err(e) => {
            let mut draft = Draft {
                name: name.clone(),
                text: form.document,
                ..Draft::default()
            };
            match refused(e, &mut draft) {
                Ok(()) => policy_page(&app, &signed, &name, Some(draft), false, None).await,
                Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "validation.html")]
struct ValidationFragment {
    draft: Draft,
}

/// The editor's live check (htmx posts the form here as one types): the same validator as
/// `POST /api/v1/policies/validate`, answering a fragment.
pub async fn validate(
    State(app): State<Arc<App>>,
    Posted(signed, form): Posted<PolicyForm>,
) -> Response {
    let v = app.validate_policy(&signed.reader(), &PolicyText::sniff(form.document));
    let draft = Draft {
        valid: v
            .valid
            .map(|(name, rules)| format!("Valid: policy `{name}` with {rules} rule(s).")),
        problems: problems(&v.problems),
        ..Draft::default()
    };
    render(StatusCode::OK, &ValidationFragment { draft })
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
}

#[derive(Template)]
#[template(path = "diff.html")]
struct DiffPage {
    title: &'static str,
    nav: Option<Nav>,
    name: String,
    from: i64,
    to: i64,
    lines: Vec<(&'static str, String)>,
}

pub async fn diff(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    Path(name): Path<String>,
    q: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let nav = Nav::of(&signed, "/policies");
    let Ok(Query(q)) = q else {
        return error_page(
            Some(nav),
            Error::field("from", "give two version numbers, from and to"),
        );
    };
    match app.policy_diff(&signed.reader(), &name, q.from, q.to).await {
        Ok(text) => render(
            StatusCode::OK,
            &DiffPage {
                title: "Policy diff",
                nav: Some(nav),
                name,
                from: q.from,
                to: q.to,
                lines: text
                    .lines()
                    .map(|l| {
                        let class = match l.as_bytes().first() {
                            Some(b'+') if !l.starts_with("+++") => "add",
                            Some(b'-') if !l.starts_with("---") => "del",
                            _ => "",
                        };
                        (class, l.to_owned())
                    })
                    .collect(),
            },
        ),
        Err(e) => error_page(Some(nav), e),
    }
}

#[derive(Deserialize)]
pub struct RollbackForm {
    /// Form fields arrive as text (the CSRF wrapper reads them flattened).
    version: String,
}

pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Managed(signed, admin, form): Managed<RollbackForm>,
) -> Response {
    let Ok(version) = form.version.trim().parse::<i64>() else {
        return error_page(
            Some(Nav::of(&signed, "/policies")),
            Error::field("version", "must be a version number"),
        );
    };
    match app.rollback_policy(&admin, &name, version).await {
        Ok(_) => see(&format!("/policies/{name}?saved=1")),
        Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
    }
}

#[derive(Deserialize)]
pub struct EnabledForm {
    enabled: String,
}

/// Disables or enables a policy (each a new version).
pub async fn set_enabled(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Managed(signed, admin, form): Managed<EnabledForm>,
) -> Response {
    let result = if form.enabled == "true" {
        app.enable_policy(&admin, &name).await
    } else {
        app.disable_policy(&admin, &name).await
    };
    match result {
        Ok(_) => see(&format!("/policies/{name}?saved=1")),
        Err(e) => error_page(Some(Nav::of(&signed, "/policies")), e),
    }
}

#[derive(Template)]
#[template(path = "simulate.html")]
struct SimulatePage {
    title: &'static str,
    nav: Option<Nav>,
    proposal: String,
    result: Option<Simulated>,
    error: Option<String>,
}

struct Simulated {
    effect: &'static str,
    reason: String,
    rules: String,
    approval: String,
    proposal_hash: String,
}

const EXAMPLE: &str = r#"{
  "agent_id": "billing-agent",
  "action": "refund",
  "resource": "order/1042",
  "amount_cents": 75000
}"#;

pub async fn simulate_page(Session(signed): Session) -> Response {
    render(
        StatusCode::OK,
        &SimulatePage {
            title: "Simulate",
            nav: Some(Nav::of(&signed, "/policies")),
            proposal: EXAMPLE.to_owned(),
            result: None,
            error: None,
        },
    )
}

#[derive(Deserialize)]
pub struct SimulateForm {
    #[serde(default)]
    proposal: String,
}

/// Decides a proposal against the workspace's policies as they stand, recording nothing.
pub async fn simulate(
    State(app): State<Arc<App>>,
    Posted(signed, form): Posted<SimulateForm>,
) -> Response {
    let nav = Nav::of(&signed, "/policies");
    let page = |result, error| SimulatePage {
        title: "Simulate",
        nav: Some(Nav::of(&signed, "/policies")),
        proposal: form.proposal.clone(),
        result,
        error,
    };
    let fields: ProposalFields = match serde_json::from_str(&form.proposal) {
        Ok(f) => f,
        Err(e) => {
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(
                    None,
                    Some(format!("The proposal is not a proposal's JSON: {e}")),
                ),
            );
        }
    };
    let input = SimulateInput {
        proposal: agentnexus_app::evaluations::EvaluateInput {
            proposal: fields,
            ..Default::default()
        },
        policies: None,
        spend: None,
    };
    match app.simulate(&signed.reader(), input).await {
        Ok(s) => {
            let d = s.decision;
            let result = Simulated {
                effect: d.effect.as_str(),
                reason: d.reason,
                rules: serde_json::to_string_pretty(&d.matched_rules).unwrap_or_default(),
                approval: d
                    .approval
                    .map(|a| {
                        serde_json::to_string_pretty(&serde_json::json!({
                            "tier": a.tier, "policy": a.policy, "rule": a.rule,
                            "stages": a.approval.stages,
                        }))
                        .unwrap_or_default()
                    })
                    .unwrap_or_default(),
                proposal_hash: s.proposal_hash,
            };
            render(StatusCode::OK, &page(Some(result), None))
        }
        Err(Error::Invalid { detail, .. }) => {
            render(StatusCode::UNPROCESSABLE_ENTITY, &page(None, Some(detail)))
        }
        Err(e) => error_page(Some(nav), e),
    }
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    title: &'static str,
    nav: Option<Nav>,
    keys: Vec<(ApiKey, String, String)>,
    created: Option<(String, String)>,
}

async fn keys_page(app: &App, signed: &Signed, created: Option<(String, String)>) -> Response {
    let nav = Nav::of(signed, "/keys");
    match app.keys(&signed.reader()).await {
        Ok(keys) => render(
            StatusCode::OK,
            &KeysPage {
                title: "API keys",
                nav: Some(nav),
                keys: keys
                    .into_iter()
                    .map(|k| {
                        let used = k.last_used_at.map(|t| when(&t)).unwrap_or_default();
                        let created = when(&k.created_at);
                        (k, created, used)
                    })
                    .collect(),
                created,
            },
        ),
        Err(e) => error_page(Some(nav), e),
    }
}

pub async fn keys(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    keys_page(&app, &signed, None).await
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

/// Creates a key and shows its secret this once.
pub async fn create_key(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<KeyForm>,
) -> Response {
    match app.create_key(&admin, form.name.trim(), &form.scope).await {
        Ok(new) => keys_page(&app, &signed, Some((new.key.name, new.secret))).await,
        Err(e) => error_page(Some(Nav::of(&signed, "/keys")), e),
    }
}

pub async fn revoke_key(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Managed(signed, admin, Empty {}): Managed<Empty>,
) -> Response {
    match app.revoke_key(&admin, &KeyId::from(id.as_str())).await {
        Ok(_) => see("/keys"),
        Err(e) => error_page(Some(Nav::of(&signed, "/keys")), e),
    }
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    title: &'static str,
    nav: Option<Nav>,
    members: Vec<(Member, String)>,
    invited: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct MembersQuery {
    invited: Option<String>,
}

pub async fn members(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    q: Result<Query<MembersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let nav = Nav::of(&signed, "/members");
    let invited = q.ok().and_then(|Query(q)| q.invited);
    match app.members(&signed.reader()).await {
        Ok(list) => render(
            StatusCode::OK,
            &MembersPage {
                title: "Members",
                nav: Some(nav),
                members: list
                    .into_iter()
                    .map(|m| {
                        let roles = m.roles.join(", ");
                        (m, roles)
                    })
                    .collect(),
                invited,
            },
        ),
        Err(e) => error_page(Some(nav), e),
    }
}

/// Roles as typed in a form: separated by commas or spaces.
fn roles(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: String,
}

pub async fn invite(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<InviteForm>,
) -> Response {
    let input = NewMemberInput {
        email: form.email.trim().to_owned(),
        name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
        roles: Some(roles(&form.roles)).filter(|r| !r.is_empty()),
    };
    match app.invite(&admin, input).await {
        Ok(m) => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("invited", &m.email);
            see(&format!("/members?{}", q.finish()))
        }
        Err(e) => error_page(Some(Nav::of(&signed, "/members")), e),
    }
}

#[derive(Deserialize)]
pub struct RolesForm {
    #[serde(default)]
    roles: String,
}

pub async fn change_member(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Managed(signed, admin, form): Managed<RolesForm>,
) -> Response {
    let change = MemberChange {
        name: None,
        roles: Some(roles(&form.roles)),
    };
    match app
        .change_member(&admin, &MemberId::from(id.as_str()), change)
        .await
    {
        Ok(_) => see("/members"),
        Err(e) => error_page(Some(Nav::of(&signed, "/members")), e),
    }
}

pub async fn remove_member(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Managed(signed, admin, Empty {}): Managed<Empty>,
) -> Response {
    match app
        .remove_member(&admin, &MemberId::from(id.as_str()))
        .await
    {
        Ok(_) => see("/members"),
        Err(e) => error_page(Some(Nav::of(&signed, "/members")), e),
    }
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    title: &'static str,
    nav: Option<Nav>,
    slack: Option<String>,
    teams: Option<String>,
    public_url: String,
    sweep_every_secs: u64,
    overdue: usize,
    next_deadline: Option<String>,
    /// A signing secret to show this once, and what to say about it.
    secret: Option<(String, String)>,
    /// What was just done: a test message sent, a setting saved.
    tested: Option<String>,
    /// The ISO 4217 code amounts are shown in.
    currency: String,
    /// Policies bound to GitHub: name, `repo@branch:path`, last sync's status and when.
    bindings: Vec<(String, String, String)>,
    github_webhook_url: String,
    /// The GitHub webhook secret, when a manager asked to see it.
    github_secret: Option<String>,
    sso: super::sso::SsoSection,
}

async fn settings_page(
    app: &App,
    signed: &Signed,
    secret: Option<(String, String)>,
    tested: Option<String>,
) -> Response {
    settings_page_with(app, signed, secret, tested, None).await
}

async fn settings_page_with(
    app: &App,
    signed: &Signed,
    secret: Option<(String, String)>,
    tested: Option<String>,
    github_secret: Option<String>,
) -> Response {
    let nav = Nav::of(signed, "/settings");
    let reader = signed.reader();
    let (channels, deadlines, workspace, bindings, sso) = match tokio::try_join!(
        app.channels(&reader),
        app.deadline_status(&reader),
        app.workspace_settings(&reader),
        app.policy_bindings(&reader),
        app.sso_settings(&reader),
    ) {
        Ok(all) => all,
        Err(e) => return error_page(Some(nav), e),
    };
    render(
        StatusCode::OK,
        &SettingsPage {
            title: "Settings",
            nav: Some(nav),
            slack: channels.slack.map(|s| {
                let with: Vec<&str> = [
                    (s.bot_token_set, "bot token"),
                    (s.webhook_url_set, "incoming webhook"),
                ]
                .into_iter()
                .filter_map(|(set, what)| set.then_some(what))
                .collect();
                format!(
                    "connected ({}) since {}",
                    with.join(", "),
                    when(&s.updated_at)
                )
            }),
            teams: channels
                .teams
                .map(|t| format!("connected since {}", when(&t))),
            public_url: app.public_url(),
            sweep_every_secs: deadlines.sweep_every_secs,
            overdue: deadlines.overdue,
            next_deadline: deadlines.next.map(|t| when(&t)),
            secret,
            tested,
            currency: workspace.currency.as_str().to_owned(),
            bindings: bindings
                .into_iter()
                .map(|b| {
                    let f = &b.file;
                    let file = format!("{}@{}:{}", f.repo, f.branch, f.path);
                    let last = match &b.last_sync {
                        Some(s) => format!("{} {}", s.status, when(&s.at)),
                        None => "not synced yet".to_owned(),
                    };
                    (b.name, file, last)
                })
                .collect(),
            github_webhook_url: app.github_webhook_url(&reader),
            github_secret,
            sso: super::sso::SsoSection::new(app, sso),
        },
    )
}

/// Shows the workspace's GitHub webhook secret (made on first ask), to paste into GitHub.
pub async fn github_secret(
    State(app): State<Arc<App>>,
    Managed(signed, admin, _): Managed<Empty>,
) -> Response {
    match app.github_integration(&admin).await {
        Ok(i) => settings_page_with(&app, &signed, None, None, Some(i.webhook_secret)).await,
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}

#[derive(Deserialize)]
pub struct WorkspaceForm {
    #[serde(default)]
    currency: String,
}

/// Changes the workspace's currency (an ISO 4217 code); a bad code is a page saying why.
pub async fn workspace(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<WorkspaceForm>,
) -> Response {
    match app.set_currency(&admin, &form.currency).await {
        Ok(s) => {
            let said = format!("Amounts are now shown in {}.", s.currency.as_str());
            settings_page(&app, &signed, None, Some(said)).await
        }
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}

pub async fn settings(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    settings_page(&app, &signed, None, None).await
}

#[derive(Deserialize)]
pub struct TestForm {
    #[serde(default)]
    channel: String,
}

/// Sends a test message: an e-mail to the signed-in manager, or a post to the workspace's
/// Slack or Teams channel.
pub async fn test_message(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<TestForm>,
) -> Response {
    let (channel, sent) = match form.channel.as_str() {
        "slack" => (
            Channel::Slack,
            "A test post is on its way to the Slack channel.".to_owned(),
        ),
        "teams" => (
            Channel::Teams,
            "A test post is on its way to the Teams channel.".to_owned(),
        ),
        _ => (
            Channel::Email,
            format!("A test e-mail is on its way to {}.", signed.email()),
        ),
    };
    let sent = format!(
        "{sent} Its delivery is retried like any approval message; the server's log says why \
         one fails."
    );
    match app.send_test_message(&admin, &signed, channel).await {
        Ok(()) => settings_page(&app, &signed, None, Some(sent)).await,
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}

#[derive(Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    action: String,
}

/// Shows the workspace's webhook signing secret, or rotates it (the previous one keeps
/// signing for 24 hours); either way the secret is shown this once.
pub async fn webhook_secret(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<SecretForm>,
) -> Response {
    let shown = if form.action == "rotate" {
        app.rotate_signing_secret(&admin)
            .await
            .map(|(secret, until)| {
                let note = format!(
                    "A new secret. The previous one keeps signing beside it until {}.",
                    when(&until)
                );
                (secret, note)
            })
    } else {
        app.signing_secret(&admin)
            .await
            .map(|secret| (secret, "The current secret.".to_owned()))
    };
    match shown {
        Ok(shown) => settings_page(&app, &signed, Some(shown), None).await,
        Err(e) => error_page(Some(Nav::of(&signed, "/settings")), e),
    }
}

/// One row of the agents page, formatted.
struct AgentRow {
    id: String,
    /// `agent_id=…`, URL-encoded (so safe in an attribute as it is) for the evaluations link.
    query: String,
    purpose: Option<String>,
    /// Why it may not act: its own suspension's or the kill switch's reason.
    suspended: Option<String>,
    own_suspension: bool,
    last_seen: String,
    evaluations: i64,
    today: String,
    month: String,
    owner: String,
    risk: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    title: &'static str,
    nav: Option<Nav>,
    /// Reason, when, by whom.
    kill_switch: Option<(String, String, String)>,
    agents: Vec<AgentRow>,
}

/// The agent inventory and the kill switch.
pub async fn agents(State(app): State<Arc<App>>, Session(signed): Session) -> Response {
    let nav = Nav::of(&signed, "/agents");
    let reader = signed.reader();
    let loaded = tokio::try_join!(
        app.agents(&reader),
        app.kill_switch(&reader),
        app.currency(signed.tenant())
    );
    let (agents, kill_switch, currency) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(Some(nav), e),
    };
    let rows = agents
        .into_iter()
        .map(|a| {
            let r = a.record;
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            AgentRow {
                query: q.append_pair("agent_id", &r.agent_id).finish(),
                id: r.agent_id,
                purpose: r.profile.purpose,
                suspended: a.halted.as_ref().map(|s| match s.kill_switch {
                    true => format!("kill switch: {}", s.halt.reason),
                    false => s.halt.reason.clone(),
                }),
                own_suspension: r.suspended.is_some(),
                last_seen: r.last_seen.map(|t| when(&t)).unwrap_or_default(),
                evaluations: r.evaluations,
                today: money(r.spend.today_cents, &currency),
                month: money(r.spend.month_cents, &currency),
                owner: r.profile.owner.unwrap_or_default(),
                risk: r.profile.risk_tier.unwrap_or_default(),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &AgentsPage {
            title: "Agents",
            nav: Some(nav),
            kill_switch: kill_switch.engaged.map(|h| (h.reason, when(&h.at), h.by)),
            agents: rows,
        },
    )
}

#[derive(Deserialize)]
pub struct AgentForm {
    #[serde(default)]
    agent_id: String,
    reason: Option<String>,
}

/// A form's text field as the use cases take it: left empty, it was not given.
fn given(field: Option<String>) -> Option<String> {
    field.filter(|f| !f.trim().is_empty())
}

pub async fn suspend_agent(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<AgentForm>,
) -> Response {
    let done = match AgentId::parse("agent_id", form.agent_id) {
        Ok(id) => app
            .suspend_agent(&admin, &id, given(form.reason))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => see("/agents"),
        Err(e) => error_page(Some(Nav::of(&signed, "/agents")), e),
    }
}

pub async fn resume_agent(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<AgentForm>,
) -> Response {
    let done = match AgentId::parse("agent_id", form.agent_id) {
        Ok(id) => app
            .resume_agent(&admin, &id, given(form.reason))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => see("/agents"),
        Err(e) => error_page(Some(Nav::of(&signed, "/agents")), e),
    }
}

#[derive(Deserialize)]
pub struct KillSwitchForm {
    #[serde(default)]
    engaged: String,
    reason: Option<String>,
}

pub async fn kill_switch(
    State(app): State<Arc<App>>,
    Managed(signed, admin, form): Managed<KillSwitchForm>,
) -> Response {
    let engaged = form.engaged == "true";
    match app
        .set_kill_switch(&admin, engaged, given(form.reason))
        .await
    {
        Ok(_) => see("/agents"),
        Err(e) => error_page(Some(Nav::of(&signed, "/agents")), e),
    }
}
