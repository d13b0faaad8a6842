//! Members of a workspace: the people who approve, with their roles. Built-in roles are
//! `owner`, `admin`, `approver` and `viewer`; any other role (e.g. `finance`) is a group that
//! approval stages name as `role:finance`.

use agentnexus_engine::PolicyDocument;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use crate::{
    Actor, EventKind, Member, NewAuditEvent, Result, Store, StoreError, Tenant, micros, new_id,
};

/// A member to add.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub email: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
}

/// A stage whose approvers are nobody: only roles that no member holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyStage {
    pub rule: String,
    pub index: usize,
    pub name: String,
}

/// The audit event of a change to a member: who they are after it.
fn member_event(kind: EventKind, actor: Actor, m: &Member, now: DateTime<Utc>) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        actor,
        evaluation_id: None,
        data: json!({"id": m.id, "email": m.email, "name": m.name, "roles": m.roles}),
        occurred_at: now,
    }
}

impl Store {
    /// Adds a member; an e-mail already in the workspace is a conflict.
    pub async fn add_member(
        &self,
        tenant: &Tenant,
        new: NewMember,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Member> {
        let member = Member {
            id: new_id("usr"),
            email: new.email,
            name: new.name,
            roles: new.roles,
            created_at: now,
        };
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO members (id, workspace_id, email, name, roles, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&member.id)
            .bind(tenant.workspace_id())
            .bind(&member.email)
            .bind(member.name.as_deref())
            .bind(serde_json::to_string(&member.roles)?)
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if StoreError::is_unique_violation(&e) {
                    StoreError::Conflict(format!("{} is already a member", member.email))
                } else {
                    e.into()
                }
            })?;
            chain.append(&member_event(EventKind::MemberCreated, actor, &member, now));
            Ok(member)
        })
        .await
    }

    /// Changes a member's name or roles. Taking `owner` from the last owner is a conflict.
    pub async fn update_member(
        &self,
        tenant: &Tenant,
        id: &str,
        name: Option<Option<String>>,
        roles: Option<Vec<String>>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Member> {
        self.audited(tenant, async |tx, chain| {
            let mut member = member_in(tx, tenant, id).await?;
            if let Some(roles) = roles {
                if member.roles.iter().any(|r| r == "owner") && !roles.iter().any(|r| r == "owner")
                {
                    last_owner_guard(tx, tenant).await?;
                }
                member.roles = roles;
            }
            if let Some(name) = name {
                member.name = name;
            }
            sqlx::query(
                "UPDATE members SET name = $3, roles = $4 WHERE id = $1 AND workspace_id = $2",
            )
            .bind(id)
            .bind(tenant.workspace_id())
            .bind(member.name.as_deref())
            .bind(serde_json::to_string(&member.roles)?)
            .execute(&mut *tx)
            .await?;
            chain.append(&member_event(EventKind::MemberUpdated, actor, &member, now));
            Ok(member)
        })
        .await
    }

    /// Removes a member. Removing the last owner is a conflict.
    pub async fn remove_member(
        &self,
        tenant: &Tenant,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Member> {
        self.audited(tenant, async |tx, chain| {
            let member = member_in(tx, tenant, id).await?;
            if member.roles.iter().any(|r| r == "owner") {
                last_owner_guard(tx, tenant).await?;
            }
            sqlx::query("DELETE FROM members WHERE id = $1 AND workspace_id = $2")
                .bind(id)
                .bind(tenant.workspace_id())
                .execute(&mut *tx)
                .await?;
            chain.append(&member_event(EventKind::MemberRemoved, actor, &member, now));
            Ok(member)
        })
        .await
    }

    /// The stages of a document whose approvers resolve to nobody in this workspace: they
    /// name only roles no member holds. E-mail approvers always count.
    pub async fn empty_stages(
        &self,
        tenant: &Tenant,
        doc: &PolicyDocument,
    ) -> Result<Vec<EmptyStage>> {
        let mut held = std::collections::HashSet::new();
        let mut loaded = false;
        let mut empty = Vec::new();
        for rule in &doc.rules {
            let Some(approval) = &rule.approval else {
                continue;
            };
            for (index, stage) in approval.stages.iter().enumerate() {
                if stage.approvers.iter().any(|a| !a.starts_with("role:")) {
                    continue;
                }
                if !loaded {
                    for m in self.members(tenant).await? {
                        held.extend(m.roles);
                    }
                    loaded = true;
                }
                let resolves = stage
                    .approvers
                    .iter()
                    .filter_map(|a| a.strip_prefix("role:"))
                    .any(|role| held.contains(role));
                if !resolves {
                    empty.push(EmptyStage {
                        rule: rule.id.clone(),
                        index,
                        name: stage.name.clone(),
                    });
                }
            }
        }
        Ok(empty)
    }
}

async fn member_in(conn: &mut sqlx::AnyConnection, tenant: &Tenant, id: &str) -> Result<Member> {
    let row = sqlx::query(
        "SELECT id, email, name, roles, created_at FROM members WHERE id = $1 AND workspace_id = $2",
    )
    .bind(id)
    .bind(tenant.workspace_id())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    crate::workspaces::member_from_row(&row)
}

/// Refuses a change that would leave the workspace without an owner.
async fn last_owner_guard(conn: &mut sqlx::AnyConnection, tenant: &Tenant) -> Result<()> {
    let rows = sqlx::query("SELECT roles FROM members WHERE workspace_id = $1")
        .bind(tenant.workspace_id())
        .fetch_all(&mut *conn)
        .await?;
    let mut owners = 0;
    for row in &rows {
        let roles: String = row.try_get("roles")?;
        let roles: Vec<String> = serde_json::from_str(&roles)?;
        owners += usize::from(roles.iter().any(|r| r == "owner"));
    }
    if owners <= 1 {
        return Err(StoreError::Conflict(
            "a workspace keeps at least one owner".into(),
        ));
    }
    Ok(())
}
