//! API keys (SPEC §2).

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::types::KeyId;
use agentnexus_store::ApiKey;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path};

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `agent` or `admin`.
    pub scope: &'static str,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key was last used (recorded within a few seconds).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            scope: k.scope.as_str(),
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label (1-128 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// `agent` or `admin`.
    #[schema(pattern = "^(agent|admin)$")]
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key itself: shown only in this response, stored only as a hash.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

/// The workspace's API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", operation_id = "list_keys",
    responses((status = 200, body = KeyList), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<KeyList>> {
    let keys = app.keys(&admin.reader()).await?;
    Ok(axum::Json(KeyList {
        keys: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Create a key; its secret is in this response only.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let new = app.create_key(&admin, &req.name, &req.scope).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            key: new.secret,
            info: new.key.into(),
        }),
    ))
}

/// Revoke a key; it fails at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 200, description = "The revoked key", body = KeyView),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<KeyView>> {
    Ok(axum::Json(
        app.revoke_key(&admin, &KeyId::from(id)).await?.into(),
    ))
}
