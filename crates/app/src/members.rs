//! Members and roles (SPEC §5, §11): the people approval stages reach, by e-mail or by a role
//! they hold. A workspace always keeps an owner.

use agentnexus_store::{Member, NewMember};

use crate::error::{Error, Result};
use crate::types::{Email, MemberId, Role};
use crate::{Admin, App, Reader};

/// A member to add, as sent.
#[derive(Debug, Clone, Default)]
pub struct NewMemberInput {
    pub email: String,
    pub name: Option<String>,
    /// `approver` when absent.
    pub roles: Option<Vec<String>>,
}

/// A change to a member, as sent: `name: Some(None)` clears the name.
#[derive(Debug, Clone, Default)]
pub struct MemberChange {
    pub name: Option<Option<String>>,
    pub roles: Option<Vec<String>>,
}

/// A member's name: at most 200 characters, no control characters; empty is none.
fn parse_name(name: Option<String>) -> Result<Option<String>> {
    match name {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => Err(Error::field(
            "name",
            "must be at most 200 characters, no control characters",
        )),
        Some(n) if n.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn roles(roles: Vec<String>) -> Result<Vec<String>> {
    Ok(Role::parse_all(roles)?
        .into_iter()
        .map(Role::into_string)
        .collect())
}

impl App {
    pub async fn members(&self, reader: &Reader) -> Result<Vec<Member>> {
        Ok(self.store.members(reader.tenant()).await?)
    }

    /// Adds a member; an e-mail already a member is a conflict.
    pub async fn add_member(&self, admin: &Admin, input: NewMemberInput) -> Result<Member> {
        let new = NewMember {
            email: Email::parse(&input.email)?.into_string(),
            name: parse_name(input.name)?,
            roles: roles(input.roles.unwrap_or_else(|| vec!["approver".into()]))?,
        };
        Ok(self
            .store
            .add_member(admin.tenant(), new, admin.actor(), self.now())
            .await?)
    }

    /// Changes a member's name or roles; taking the last owner's role is a conflict.
    pub async fn change_member(
        &self,
        admin: &Admin,
        id: &MemberId,
        change: MemberChange,
    ) -> Result<Member> {
        let roles = change.roles.map(roles).transpose()?;
        let name = change.name.map(parse_name).transpose()?;
        Ok(self
            .store
            .update_member(
                admin.tenant(),
                id.as_str(),
                name,
                roles,
                admin.actor(),
                self.now(),
            )
            .await?)
    }

    /// Removes a member; the last owner cannot be removed.
    pub async fn remove_member(&self, admin: &Admin, id: &MemberId) -> Result<Member> {
        Ok(self
            .store
            .remove_member(admin.tenant(), id.as_str(), admin.actor(), self.now())
            .await?)
    }
}
