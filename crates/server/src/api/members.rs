//! Members and roles (SPEC §5, §11): the people approval stages reach.

use std::sync::Arc;

use agentnexus_store::{Member, NewMember};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Json, Path};
use crate::state::AppState;

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

/// What an e-mail address may not contain: control characters and every kind of space
/// (the class the API's JSON Schema pattern for e-mails spells out, so both agree).
fn not_in_email(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202f}'
                    | '\u{205f}'
                    | '\u{3000}'
                    | '\u{feff}'
        )
}

/// `name@domain.tld`, trimmed and lower-cased: e-mail is how approvers are named. One `@`, no
/// spaces or control characters, a dot inside the domain, at most 254 characters as sent.
pub fn parse_email(sent: &str) -> ApiResult<String> {
    let email = sent.trim();
    let valid = sent.chars().count() <= 254
        && !email.contains(not_in_email)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email.to_ascii_lowercase())
    } else {
        Err(ApiError::field("email", "must be an e-mail address"))
    }
}

/// A member's name: at most 200 characters, no control characters; empty is none.
fn parse_name(name: Option<String>) -> ApiResult<Option<String>> {
    match name {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            Err(ApiError::field(
                "name",
                "must be at most 200 characters, no control characters",
            ))
        }
        Some(n) if n.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Role names: 1-64 of a-z 0-9 - _, no duplicates.
pub fn parse_roles(roles: Vec<String>) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let ok = (1..=64).contains(&role.len())
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
        if !ok {
            return Err(ApiError::field(
                "roles",
                format!("`{role}` is not a role name: use 1-64 of a-z 0-9 - _"),
            ));
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

/// The workspace's members.
#[utoipa::path(get, path = "/api/v1/members", tag = "members",
    responses((status = 200, body = MemberList), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> ApiResult<axum::Json<MemberList>> {
    let members = state.store.members(&caller.tenant).await?;
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
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, axum::Json<MemberView>)> {
    let new = NewMember {
        email: parse_email(&req.email)?,
        name: parse_name(req.name)?,
        roles: parse_roles(req.roles.unwrap_or_else(|| vec!["approver".into()]))?,
        password_hash: None,
    };
    let member = state
        .store
        .add_member(&caller.tenant, new, caller.actor(), state.now())
        .await?;
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
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Json(req): Json<ChangeMember>,
) -> ApiResult<axum::Json<MemberView>> {
    let roles = req.roles.map(parse_roles).transpose()?;
    let name = match req.name {
        Some(n) => Some(parse_name(n)?),
        None => None,
    };
    let member = state
        .store
        .update_member(
            &caller.tenant,
            &id,
            name,
            roles,
            caller.actor(),
            state.now(),
        )
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
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MemberView>> {
    let member = state
        .store
        .remove_member(&caller.tenant, &id, caller.actor(), state.now())
        .await?;
    Ok(axum::Json(member.into()))
}
