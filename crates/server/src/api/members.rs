//! Members and roles (SPEC §5, §11): the people approval stages reach.

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::members::{MemberChange, NewMemberInput};
use agentnexus_app::types::MemberId;
use agentnexus_store::Member;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiResult, Problem};
use crate::extract::{Json, Path};

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// Built-in `owner`, `admin`, `approver`, `viewer`, or custom groups such as `finance`.
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        MemberView {
            id: m.id,
            email: m.email,
            name: m.name,
            roles: m.roles,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// `name@domain.tld`: no spaces inside, one `@`, a dot inside the domain; kept trimmed and
    /// lower-cased.
    #[schema(
        max_length = 254,
        pattern = "^[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+@[^@.\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff][^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*\\.[^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*[^@.\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff][\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub email: String,
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// Roles to hold (1-64 of a-z 0-9 - _ each); `approver` when absent.
    #[schema(inline, value_type = Option<Vec<RoleName>>)]
    pub roles: Option<Vec<String>>,
}

/// A role name: 1-64 of a-z 0-9 - _.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[a-z0-9_-]{1,64}$")]
#[allow(dead_code)]
pub struct RoleName(String);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeMember {
    /// A new name (at most 200 characters, no control characters); null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<Option<String>>,
    /// The member's roles, replacing the current ones.
    #[schema(inline, value_type = Option<Vec<RoleName>>)]
    pub roles: Option<Vec<String>>,
}

/// Tells a field sent as null (`Some(None)`) from one not sent (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The workspace's members.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", operation_id = "list_members",
    responses((status = 200, body = MemberList), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
) -> ApiResult<axum::Json<MemberList>> {
    let members = app.members(&admin.reader()).await?;
    Ok(axum::Json(MemberList {
        members: members.into_iter().map(Into::into).collect(),
    }))
}

/// Add a member.
#[utoipa::path(post, path = "/api/v1/members", tag = "members", request_body = AddMember,
    responses((status = 201, body = MemberView),
        (status = 409, description = "Already a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn add(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, axum::Json<MemberView>)> {
    let input = NewMemberInput {
        email: req.email,
        name: req.name,
        roles: req.roles,
    };
    let member = app.add_member(&admin, input).await?;
    Ok((StatusCode::CREATED, axum::Json(member.into())))
}

/// Change a member's name or roles.
#[utoipa::path(patch, path = "/api/v1/members/{id}", tag = "members", request_body = ChangeMember,
    params(("id" = String, Path)),
    responses((status = 200, body = MemberView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no owner", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn change(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<ChangeMember>,
) -> ApiResult<axum::Json<MemberView>> {
    let change = MemberChange {
        name: req.name,
        roles: req.roles,
    };
    let member = app
        .change_member(&admin, &MemberId::from(id), change)
        .await?;
    Ok(axum::Json(member.into()))
}

/// Remove a member.
#[utoipa::path(delete, path = "/api/v1/members/{id}", tag = "members",
    params(("id" = String, Path)),
    responses((status = 200, description = "The removed member", body = MemberView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last owner", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MemberView>> {
    let member = app.remove_member(&admin, &MemberId::from(id)).await?;
    Ok(axum::Json(member.into()))
}
