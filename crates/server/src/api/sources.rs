//! Policy-as-code (SPEC §9): binding a policy to a file on GitHub, syncing it, and the push
//! webhook GitHub posts to.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::sources::{BindInput, Binding, PushOutcome, Synced};
use agentnexus_store::SyncRecord;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, body_bytes};

/// Most bytes of a push delivery read (GitHub caps payloads at 25 MB; a push listing 20
/// commits is far smaller).
const MAX_PUSH_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitHubBinding {
    /// `owner/name`.
    #[schema(pattern = r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")]
    pub repo: String,
    #[schema(min_length = 1, max_length = 255)]
    pub branch: String,
    /// The document's path in the repository (`.yaml`, `.yml` or `.json`).
    #[schema(min_length = 1, max_length = 1024)]
    pub path: String,
    /// A token that may read the repository's contents (fine-grained: Contents read-only).
    /// Stored encrypted; never answered back.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    pub github: GitHubBinding,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GitHubFileView {
    pub repo: String,
    pub branch: String,
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastSync {
    pub at: DateTime<Utc>,
    pub commit: Option<String>,
    /// `updated`, `unchanged` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

impl From<SyncRecord> for LastSync {
    fn from(r: SyncRecord) -> LastSync {
        LastSync {
            at: r.at,
            commit: r.commit,
            status: r.status,
            error: r.error,
        }
    }
}

/// Where a bound policy comes from, and what its last sync found.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindingView {
    pub github: GitHubFileView,
    /// `null` until the first sync.
    pub last_sync: Option<LastSync>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Binding> for BindingView {
    fn from(b: Binding) -> BindingView {
        BindingView {
            github: GitHubFileView {
                repo: b.file.repo,
                branch: b.file.branch,
                path: b.file.path,
            },
            last_sync: b.last_sync.map(Into::into),
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    /// `updated` (a new version is in force), `unchanged` or `failed` (the active version
    /// stays; `error` says why).
    pub status: String,
    /// The active version afterwards (`null` when the policy does not exist yet).
    pub version: Option<i64>,
    pub commit: Option<String>,
    pub error: Option<String>,
}

impl From<Synced> for SyncView {
    fn from(s: Synced) -> SyncView {
        SyncView {
            status: s.status.as_str().to_owned(),
            version: s.version,
            commit: s.commit,
            error: s.error,
        }
    }
}

/// Bind a policy to a file in a GitHub repository (the policy need not exist yet: its first
/// sync creates it). Replaces an earlier binding. Audited as `policy.source_bound`, without
/// the token. The schedule's first look comes within seconds; `POST …/sync` syncs now.
#[utoipa::path(put, path = "/api/v1/policies/{name}/source", tag = "policy-as-code",
    params(("name" = String, Path)), request_body = BindRequest,
    responses((status = 200, body = BindingView),
        (status = 422, description = "A field is not as GitHub or git allow", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn bind(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    Json(req): Json<BindRequest>,
) -> ApiResult<axum::Json<BindingView>> {
    let g = req.github;
    let input = BindInput {
        repo: g.repo,
        branch: g.branch,
        path: g.path,
        token: g.token,
    };
    Ok(axum::Json(
        app.bind_policy(&admin, &name, input).await?.into(),
    ))
}

/// A policy's binding and its last sync.
#[utoipa::path(get, path = "/api/v1/policies/{name}/source", tag = "policy-as-code", operation_id = "get_policy_source",
    params(("name" = String, Path)),
    responses((status = 200, body = BindingView),
        (status = 404, description = "The policy is not bound", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<BindingView>> {
    let binding = app.policy_binding(&admin.reader(), &name).await?;
    Ok(axum::Json(binding.ok_or(ApiError::NotFound)?.into()))
}

/// Unbind a policy; the policy and its versions stay. Audited as `policy.source_unbound`.
#[utoipa::path(delete, path = "/api/v1/policies/{name}/source", tag = "policy-as-code",
    params(("name" = String, Path)),
    responses((status = 204, description = "Unbound"),
        (status = 404, description = "The policy is not bound", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn unbind(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.unbind_policy(&admin, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sync a bound policy now: read the branch's head, the file and the `*_test.yaml` files
/// beside it; a valid document whose tests pass becomes the active version (source `git`).
/// A failure leaves the active version in place and says why.
#[utoipa::path(post, path = "/api/v1/policies/{name}/sync", tag = "policy-as-code",
    params(("name" = String, Path)),
    responses((status = 200, body = SyncView),
        (status = 404, description = "The policy is not bound", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn sync(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<SyncView>> {
    Ok(axum::Json(app.sync_policy(&admin, &name).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GitHubIntegrationView {
    /// The payload URL to give GitHub (content type `application/json`, the `push` event).
    pub webhook_url: String,
    /// The secret to give GitHub, which signs each delivery with it.
    pub webhook_secret: String,
}

/// The workspace's GitHub push webhook: where GitHub posts, and its secret (made on first
/// ask, audited as `integration.github_secret_created`).
#[utoipa::path(get, path = "/api/v1/integrations/github", tag = "policy-as-code",
    responses((status = 200, body = GitHubIntegrationView)),
    security(("api_key" = [])))]
pub async fn integration(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<GitHubIntegrationView>> {
    let i = app.github_integration(&admin).await?;
    Ok(axum::Json(GitHubIntegrationView {
        webhook_url: i.webhook_url,
        webhook_secret: i.webhook_secret,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncedPolicy {
    pub policy: String,
    #[serde(flatten)]
    pub sync: SyncView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushAnswer {
    /// The delivery's `X-GitHub-Event`.
    pub event: String,
    /// Each bound policy the push touched, synced (none for other branches, paths or events).
    pub synced: Vec<SyncedPolicy>,
}

/// GitHub's webhook for a workspace. The body must be signed with the workspace's secret
/// (`X-Hub-Signature-256`, checked in constant time); a `push` to a bound repository and
/// branch that changes a bound file or the tests beside it syncs that policy before the
/// answer. Other events, branches and paths answer 200 and do nothing.
#[utoipa::path(post, path = "/api/v1/integrations/github/webhook/{workspace_id}", tag = "policy-as-code",
    params(("workspace_id" = String, Path),
        ("X-GitHub-Event" = Option<String>, Header, description = "`push` or `ping`"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "`sha256=` and the HMAC-SHA256 of the body, hex")),
    request_body(content = Object, description = "GitHub's event payload", content_type = "application/json"),
    responses((status = 200, body = PushAnswer),
        (status = 401, description = "Missing or wrong signature (or no webhook for that workspace)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A signed push that is not JSON", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn webhook(
    State(app): State<Arc<App>>,
    Path(workspace_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<axum::Json<PushAnswer>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let event = header("x-github-event").unwrap_or("").to_owned();
    let signature = header("x-hub-signature-256");
    let body = body_bytes(req, MAX_PUSH_BYTES).await?;
    let outcome = app
        .github_push(&workspace_id, &event, signature, &body)
        .await
        .map_err(|e| match e {
            agentnexus_app::Error::Unauthorized => ApiError::BadSignature,
            other => other.into(),
        })?;
    let synced = match outcome {
        PushOutcome::Pong => Vec::new(),
        PushOutcome::Synced(list) => list
            .into_iter()
            .map(|(policy, s)| SyncedPolicy {
                policy,
                sync: s.into(),
            })
            .collect(),
    };
    Ok(axum::Json(PushAnswer { event, synced }))
}
