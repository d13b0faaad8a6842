//! Policies: documents, versions, rollback, validation and simulation (SPEC §3).

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::policies::{PolicyText, SimulateInput};
use agentnexus_engine::{Format, Spend};
use agentnexus_store::{PolicySummary, PolicyVersion};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Json, Path, body_bytes};

/// A policy document as sent: its format from the content type, or sniffed when absent.
async fn document(req: Request) -> ApiResult<PolicyText> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let bytes = body_bytes(req, agentnexus_engine::MAX_DOCUMENT_BYTES).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::Malformed("the document is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::field(
            "document",
            "the body is empty: send the policy document (YAML or JSON)",
        ));
    }
    let format = match content_type.as_deref() {
        Some("application/json") => Format::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            Format::Yaml
        }
        // curl -d sends form encoding; YAML reads JSON too, so sniffing is safe.
        None | Some("text/plain" | "application/x-www-form-urlencoded") => {
            return Ok(PolicyText::sniff(text));
        }
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the document as application/yaml or application/json, not {other}"
            )));
        }
    };
    Ok(PolicyText { text, format })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    pub description: Option<String>,
    /// The document as written.
    pub document: String,
    /// `yaml` or `json`.
    pub format: String,
    /// Who wrote it: the key or member, or a commit's author (`Name <email>`).
    pub author: String,
    /// Where this version came from: `api`, `dashboard`, `cli` or `git`. On `GET
    /// /api/v1/policies/{name}` of a policy bound to GitHub, the binding instead: `{"github":
    /// {"repo", "branch", "path"}, "last_sync": {"at", "commit", "status", "error"}}`.
    pub source: SourceView,
    /// The commit this version was read from (source `git`), else `null`.
    pub commit: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A version's origin, or (for a bound policy) its binding.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SourceView {
    Origin(String),
    Bound(crate::api::sources::BindingView),
}

impl From<PolicyVersion> for PolicyView {
    fn from(v: PolicyVersion) -> Self {
        let description = agentnexus_app::policies::description(&v);
        let (source, commit) = match v.source.strip_prefix("git:") {
            Some(sha) => ("git".to_owned(), Some(sha.to_owned())),
            None => (v.source, None),
        };
        PolicyView {
            name: v.name,
            version: v.version,
            enabled: v.enabled,
            description,
            document: v.document,
            format: v.format,
            author: v.author,
            source: SourceView::Origin(source),
            commit,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySummaryView {
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PolicySummary> for PolicySummaryView {
    fn from(p: PolicySummary) -> Self {
        PolicySummaryView {
            name: p.name,
            version: p.version,
            enabled: p.enabled,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicySummaryView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<PolicyView>,
}

/// The policies of the workspace.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", operation_id = "list_policies",
    responses((status = 200, body = PolicyList)), security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<PolicyList>> {
    let policies = app.policies(&admin.reader()).await?;
    Ok(axum::Json(PolicyList {
        policies: policies.into_iter().map(Into::into).collect(),
    }))
}

/// The active version of a policy; for a policy bound to GitHub, `source` is its binding with
/// the last sync.
#[utoipa::path(get, path = "/api/v1/policies/{name}", tag = "policies", operation_id = "get_policy",
    params(("name" = String, Path)),
    responses((status = 200, body = PolicyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<PolicyView>> {
    let reader = admin.reader();
    let mut view: PolicyView = app.policy(&reader, &name).await?.into();
    if let Some(binding) = app.policy_binding(&reader, &name).await? {
        view.source = SourceView::Bound(binding.into());
    }
    Ok(axum::Json(view))
}

/// Create or replace a policy; the document is compiled first and refused whole if invalid.
/// Sending the active document again changes nothing and answers its version.
#[utoipa::path(put, path = "/api/v1/policies/{name}", tag = "policies", operation_id = "put_policy",
    params(("name" = String, Path)),
    request_body(content = Object, description = "The policy document (YAML, or JSON with `Content-Type: application/json`)", content_type = "application/yaml"),
    responses(
        (status = 200, description = "The new active version", body = PolicyView),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid document; `errors` name rule and position", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<axum::Json<PolicyView>> {
    let doc = document(req).await?;
    let one_line = on_one_line(&doc);
    match app.put_policy(&admin, &name, doc).await {
        Ok(v) => Ok(axum::Json(v.into())),
        Err(agentnexus_app::Error::Invalid {
            detail,
            mut problems,
        }) if one_line => {
            problems.push(one_line_problem());
            Err(agentnexus_app::Error::Invalid {
                detail: format!("{detail} ({ONE_LINE})"),
                problems,
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Said when a YAML document that came on one line is refused.
const ONE_LINE: &str = "the document arrived on one line: `curl -d @FILE` removes a file's \
                        newlines; send it with `--data-binary @FILE`";

fn one_line_problem() -> agentnexus_engine::Problem {
    agentnexus_engine::Problem {
        rule: None,
        field: None,
        position: None,
        message: ONE_LINE.into(),
    }
}

/// A YAML document on one line: what `curl -d @policy.yaml` sends.
fn on_one_line(doc: &PolicyText) -> bool {
    let text = doc.text.trim();
    doc.format == Format::Yaml && !text.contains('\n') && !text.starts_with('{')
}

/// Disable a policy (a new version; history stays).
#[utoipa::path(delete, path = "/api/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path)),
    responses((status = 200, body = PolicyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<PolicyView>> {
    Ok(axum::Json(app.disable_policy(&admin, &name).await?.into()))
}

/// Every version of a policy, newest first.
#[utoipa::path(get, path = "/api/v1/policies/{name}/versions", tag = "policies",
    params(("name" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn versions(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<VersionList>> {
    let versions = app.policy_versions(&admin.reader(), &name).await?;
    Ok(axum::Json(VersionList {
        versions: versions.into_iter().map(Into::into).collect(),
    }))
}

/// One version of a policy.
#[utoipa::path(get, path = "/api/v1/policies/{name}/versions/{version}", tag = "policies",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, body = PolicyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn version(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path((name, version)): Path<(String, i64)>,
) -> ApiResult<axum::Json<PolicyView>> {
    Ok(axum::Json(
        app.policy_version(&admin.reader(), &name, version)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make active again (as a new version).
    #[serde(deserialize_with = "whole_version")]
    #[schema(minimum = 1)]
    pub version: i64,
}

fn whole_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    agentnexus_engine::whole_number(d)?
        .ok_or_else(|| serde::de::Error::custom("version is required"))
}

/// Re-activate an older version as a new version.
#[utoipa::path(post, path = "/api/v1/policies/{name}/rollback", tag = "policies",
    params(("name" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, description = "The new active version", body = PolicyView),
        (status = 404, description = "No such policy or version", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rollback(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    Json(req): Json<RollbackRequest>,
) -> ApiResult<axum::Json<PolicyView>> {
    let v = app.rollback_policy(&admin, &name, req.version).await?;
    Ok(axum::Json(v.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<usize>,
    /// `[{"rule", "field", "position": {"line", "column"}, "message"}]`
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
}

/// Check a document without saving it.
#[utoipa::path(post, path = "/api/v1/policies/validate", tag = "policies",
    request_body(content = Value, description = "Any text: the answer says whether it is a valid policy document, and why not", content_type = "application/yaml"),
    responses((status = 200, description = "Whether the document is valid, and why not", body = Validation)),
    security(("api_key" = [])))]
pub async fn validate(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    req: Request,
) -> ApiResult<axum::Json<Validation>> {
    let doc = document(req).await?;
    let mut v = app.validate_policy(&admin.reader(), &doc);
    if v.valid.is_none() && on_one_line(&doc) {
        v.problems.push(one_line_problem());
    }
    Ok(axum::Json(Validation {
        valid: v.valid.is_some(),
        rules: v.valid.as_ref().map(|(_, rules)| *rules),
        name: v.valid.map(|(name, _)| name),
        errors: serde_json::to_value(&v.problems).unwrap_or_default(),
    }))
}

/// A simulation: `proposal` as for evaluate (an evaluate request's other fields are taken and
/// ignored, so one can be pasted as it is), optional draft `policies` and an assumed `spend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    // The proposal, as for evaluate (an evaluate request's other fields are taken and ignored,
    // so one can be pasted as it is). Inline and without a doc comment: schemathesis 4.32's
    // coverage phase mistakes a `$ref`'d (or one-branch `oneOf`) request for one missing its
    // required properties.
    #[schema(inline)]
    pub proposal: crate::wire::EvaluateRequest,
    /// Policy documents (YAML or JSON text, or JSON objects) to decide with instead of the
    /// stored ones.
    #[schema(value_type = Option<Vec<Object>>)]
    pub policies: Option<Vec<Value>>,
    /// The agent's spend to assume; its real spend when absent.
    pub spend: Option<SpendInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendInput {
    #[serde(default, deserialize_with = "agentnexus_engine::whole_number")]
    #[schema(value_type = i64)]
    pub today_cents: Option<i64>,
    #[serde(default, deserialize_with = "agentnexus_engine::whole_number")]
    #[schema(value_type = i64)]
    pub month_cents: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Simulation {
    pub decision: &'static str,
    pub reason: String,
    #[schema(value_type = Vec<Object>)]
    pub matched_rules: Value,
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
    /// `{"tier", "policy", "rule", "stages"}` when approval would be required.
    #[schema(value_type = Option<Object>)]
    pub approval: Option<Value>,
    #[schema(value_type = Object)]
    pub policy_versions: Value,
    pub proposal_hash: String,
}

/// Decide a proposal against given or stored policies, recording nothing.
#[utoipa::path(post, path = "/api/v1/policies/simulate", tag = "policies",
    request_body = SimulateRequest,
    responses((status = 200, body = Simulation),
        (status = 422, description = "Invalid proposal or policy", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn simulate(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<SimulateRequest>,
) -> ApiResult<axum::Json<Simulation>> {
    let input = SimulateInput {
        proposal: req.proposal.into(),
        policies: req.policies.map(|docs| {
            docs.into_iter()
                .map(|doc| match doc {
                    Value::String(text) => PolicyText::sniff(text),
                    other => PolicyText {
                        text: other.to_string(),
                        format: Format::Json,
                    },
                })
                .collect()
        }),
        spend: req.spend.map(|s| Spend {
            today_cents: s.today_cents.unwrap_or_default(),
            month_cents: s.month_cents.unwrap_or_default(),
        }),
    };
    let s = app.simulate(&admin.reader(), input).await?;
    let d = s.decision;
    Ok(axum::Json(Simulation {
        decision: d.effect.as_str(),
        reason: d.reason,
        matched_rules: serde_json::to_value(&d.matched_rules).unwrap_or_default(),
        errors: serde_json::to_value(&d.errors).unwrap_or_default(),
        approval: d.approval.map(|a| {
            json!({"tier": a.tier, "policy": a.policy, "rule": a.rule, "stages": a.approval.stages})
        }),
        policy_versions: serde_json::to_value(&d.policy_versions).unwrap_or_default(),
        proposal_hash: s.proposal_hash,
    }))
}

/// A replay: a draft policy decided against a period's recorded evaluations.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The draft (YAML or JSON text, or a JSON object): it replaces the stored policy of its
    /// name, or joins the stored ones.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// RFC 3339; default 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339; default now.
    pub to: Option<String>,
    /// At most this many evaluations, newest first (1-100,000, default 10,000).
    #[schema(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// Evaluations decided again.
    pub evaluated: u64,
    /// Of those, how many the draft decides otherwise than was recorded.
    pub changed: u64,
    /// `{"allow->deny": N, …}`.
    #[schema(value_type = Object)]
    pub transitions: std::collections::BTreeMap<String, u64>,
    /// The newest changed evaluations (at most 20).
    #[schema(value_type = Vec<Object>)]
    pub examples: Vec<Value>,
}

/// Decide a period's recorded evaluations again with a draft policy and count what would
/// change. Records nothing.
#[utoipa::path(post, path = "/api/v1/policies/replay", tag = "policies",
    request_body = ReplayRequest,
    responses((status = 200, body = ReplayView),
        (status = 422, description = "Invalid draft, period or limit", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A replay in this workspace is already running", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn replay(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<ReplayRequest>,
) -> ApiResult<axum::Json<ReplayView>> {
    let policy = match req.policy {
        Value::String(text) => PolicyText::sniff(text),
        other => PolicyText {
            text: other.to_string(),
            format: Format::Json,
        },
    };
    let input = agentnexus_app::replay::ReplayInput {
        policy,
        from: req.from,
        to: req.to,
        limit: req.limit,
    };
    let r = app.replay(&admin.reader(), input).await?;
    Ok(axum::Json(ReplayView {
        evaluated: r.evaluated,
        changed: r.changed,
        transitions: r.transitions,
        examples: r
            .examples
            .into_iter()
            .map(|e| {
                json!({
                    "evaluation_id": e.evaluation_id,
                    "before": {"decision": e.before.as_str()},
                    "after": {"decision": e.after.as_str(), "matched_rules": e.matched_rules},
                })
            })
            .collect(),
    }))
}

/// The unified diff between two versions' documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffView {
    pub name: String,
    pub from: i64,
    pub to: i64,
    /// A unified diff (`--- NAME vA`, `+++ NAME vB`, three lines of context); empty when the
    /// documents are the same.
    pub diff: String,
}

/// What changed in the document from version `a` to version `b`.
#[utoipa::path(get, path = "/api/v1/policies/{name}/versions/{a}/diff/{b}", tag = "policies",
    params(("name" = String, Path), ("a" = i64, Path), ("b" = i64, Path)),
    responses((status = 200, body = DiffView),
        (status = 404, description = "No such policy or version", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn diff(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path((name, a, b)): Path<(String, i64, i64)>,
) -> ApiResult<axum::Json<DiffView>> {
    let diff = app.policy_diff(&admin.reader(), &name, a, b).await?;
    Ok(axum::Json(DiffView {
        name,
        from: a,
        to: b,
        diff,
    }))
}
