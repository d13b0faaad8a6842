//! Workspaces, members and API keys.

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::Chain;
use crate::{
    Actor, ApiKey, EventKind, KeyIdentity, Member, NewAuditEvent, NewKey, Result, Scope, Store,
    StoreError, Tenant, Workspace, from_micros, micros, new_id,
};

/// Length of the random part of a key: 40 base62 characters, about 238 bits.
const KEY_RANDOM_CHARS: usize = 40;

/// The stored form of an API key. Keys are long random strings, so one SHA-256 is enough;
/// a slow password hash would only slow every request down.
pub fn key_hash(secret: &str) -> String {
    agentnexus_engine::canonical::sha256_hex(secret.as_bytes())
}

fn generate_key() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("anx_{random}")
}

/// The owner a new workspace starts with.
#[derive(Debug, Clone)]
pub struct NewOwner {
    pub email: String,
    pub name: Option<String>,
    /// An argon2id PHC string (the store never sees a password): the owner's account's, when
    /// the e-mail address has no account yet; an existing account keeps its own.
    pub password_hash: String,
}

/// A member from `id, email, name, roles, created_at`.
pub(crate) fn member_from_row(row: &AnyRow) -> Result<Member> {
    let roles: String = row.try_get("roles")?;
    Ok(Member {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        roles: serde_json::from_str(&roles)?,
        created_at: from_micros(row.try_get("created_at")?),
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey> {
    let scope: String = row.try_get("scope")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: Scope::parse(&scope).ok_or_else(|| StoreError::Corrupt(format!("scope {scope}")))?,
        prefix: row.try_get("prefix")?,
        created_at: from_micros(row.try_get("created_at")?),
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(from_micros),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_micros),
    })
}

const KEY_COLUMNS: &str = "id, name, scope, prefix, created_at, last_used_at, revoked_at";

impl Store {
    /// Creates a workspace with its owner and a first admin key, all audited, in one
    /// transaction. A taken name is a conflict.
    pub async fn create_workspace(
        &self,
        name: &str,
        owner: NewOwner,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(Workspace, Tenant, NewKey)> {
        let workspace = Workspace {
            id: new_id("ws"),
            name: name.to_owned(),
            created_at: now,
        };
        let tenant = Tenant::new(workspace.id.clone());
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&workspace.id)
            .bind(name)
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if StoreError::is_unique_violation(&e) {
                    StoreError::Conflict(format!("workspace `{name}` already exists"))
                } else {
                    e.into()
                }
            })?;
        let mut chain = Chain::create(&mut tx, &workspace.id).await?;
        let member_id = new_id("usr");
        sqlx::query(
            "INSERT INTO members (id, workspace_id, email, name, roles, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&member_id)
        .bind(&workspace.id)
        .bind(&owner.email)
        .bind(owner.name.as_deref())
        .bind(json!(["owner"]).to_string())
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO accounts (email, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (email) DO NOTHING",
        )
        .bind(&owner.email)
        .bind(&owner.password_hash)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        let key = insert_key(&mut tx, &tenant, "bootstrap admin", Scope::Admin, now).await?;
        let event = |kind, data| NewAuditEvent {
            kind,
            actor: actor.clone(),
            evaluation_id: None,
            data,
            occurred_at: now,
        };
        for e in [
            event(
                EventKind::WorkspaceCreated,
                json!({"id": workspace.id, "name": name}),
            ),
            event(
                EventKind::MemberCreated,
                json!({"id": member_id, "email": owner.email, "roles": ["owner"]}),
            ),
            event(EventKind::KeyCreated, key_event(&key.key)),
        ] {
            chain.append(&e);
        }
        chain.save(&mut tx).await?;
        tx.commit().await?;
        Ok((workspace, tenant, key))
    }

    pub async fn workspace_by_name(&self, name: &str) -> Result<Option<(Workspace, Tenant)>> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let ws = Workspace {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: from_micros(row.try_get("created_at")?),
            };
            let tenant = Tenant::new(ws.id.clone());
            Ok((ws, tenant))
        })
        .transpose()
    }

    /// Every workspace, for maintenance tasks that visit them all.
    /// The currency (ISO 4217 code) the workspace's amounts are in.
    pub async fn currency(&self, tenant: &Tenant) -> Result<String> {
        let code: Option<String> =
            sqlx::query_scalar("SELECT currency FROM workspaces WHERE id = $1")
                .bind(tenant.workspace_id())
                .fetch_optional(&self.pool)
                .await?;
        code.ok_or(StoreError::NotFound)
    }

    /// Sets the workspace's currency; audited (`settings.workspace_updated`) when it changes.
    pub async fn set_currency(
        &self,
        tenant: &Tenant,
        code: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let before: String =
                sqlx::query_scalar("SELECT currency FROM workspaces WHERE id = $1")
                    .bind(ws)
                    .fetch_one(&mut *tx)
                    .await?;
            if before == code {
                return Ok(());
            }
            sqlx::query("UPDATE workspaces SET currency = $2 WHERE id = $1")
                .bind(ws)
                .bind(code)
                .execute(&mut *tx)
                .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::SettingsWorkspaceUpdated,
                actor: actor.clone(),
                evaluation_id: None,
                data: serde_json::json!({"currency": {"from": before, "to": code}}),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }

    /// The workspace's name.
    pub async fn workspace_name(&self, tenant: &Tenant) -> Result<String> {
        Ok(
            sqlx::query_scalar("SELECT name FROM workspaces WHERE id = $1")
                .bind(tenant.workspace_id())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn workspaces(&self) -> Result<Vec<(Workspace, Tenant)>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let ws = Workspace {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    created_at: from_micros(row.try_get("created_at")?),
                };
                let tenant = Tenant::new(ws.id.clone());
                Ok((ws, tenant))
            })
            .collect()
    }

    pub async fn members(&self, tenant: &Tenant) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT id, email, name, roles, created_at FROM members WHERE workspace_id = $1 \
             ORDER BY email",
        )
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    pub async fn create_key(
        &self,
        tenant: &Tenant,
        name: &str,
        scope: Scope,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<NewKey> {
        self.audited(tenant, async |tx, chain| {
            let key = insert_key(tx, tenant, name, scope, now).await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::KeyCreated,
                actor,
                evaluation_id: None,
                data: key_event(&key.key),
                occurred_at: now,
            });
            Ok(key)
        })
        .await
    }

    pub async fn keys(&self, tenant: &Tenant) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key of this workspace; revoking twice keeps the first time.
    pub async fn revoke_key(
        &self,
        tenant: &Tenant,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        self.audited(tenant, async |tx, chain| {
            let changed = sqlx::query(
                "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND workspace_id = $2 \
                 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(tenant.workspace_id())
            .bind(micros(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row = sqlx::query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND workspace_id = $2"
            ))
            .bind(id)
            .bind(tenant.workspace_id())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            let key = key_from_row(&row)?;
            if changed > 0 {
                chain.append(&NewAuditEvent {
                    kind: EventKind::KeyRevoked,
                    actor,
                    evaluation_id: None,
                    data: key_event(&key),
                    occurred_at: now,
                });
            }
            Ok(key)
        })
        .await
    }

    /// The identity behind a key secret, if the key exists and is not revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<KeyIdentity>> {
        let row = sqlx::query(
            "SELECT id, workspace_id, scope FROM api_keys WHERE key_hash = $1 \
             AND revoked_at IS NULL",
        )
        .bind(key_hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let scope: String = row.try_get("scope")?;
            Ok(KeyIdentity {
                key_id: row.try_get("id")?,
                tenant: Tenant::new(row.try_get("workspace_id")?),
                scope: Scope::parse(&scope)
                    .ok_or_else(|| StoreError::Corrupt(format!("scope {scope}")))?,
            })
        })
        .transpose()
    }

    /// Which of these keys are revoked. Servers ask this about the keys they have cached,
    /// so a revocation made anywhere (another replica, the CLI) is seen whatever its clock.
    pub async fn revoked_among(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut revoked = Vec::new();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.pool).await? {
                revoked.push(row.try_get("id")?);
            }
        }
        Ok(revoked)
    }

    /// Records when keys were last used; the server batches these off the request path.
    pub async fn touch_keys(&self, uses: &[(String, DateTime<Utc>)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(micros(*at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_key(
    conn: &mut sqlx::AnyConnection,
    tenant: &Tenant,
    name: &str,
    scope: Scope,
    now: DateTime<Utc>,
) -> Result<NewKey> {
    let secret = generate_key();
    let key = ApiKey {
        id: new_id("key"),
        name: name.to_owned(),
        scope,
        prefix: secret[..12].to_owned(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, workspace_id, name, scope, prefix, key_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(tenant.workspace_id())
    .bind(name)
    .bind(scope.as_str())
    .bind(&key.prefix)
    .bind(key_hash(&secret))
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(NewKey { key, secret })
}

fn key_event(key: &ApiKey) -> serde_json::Value {
    json!({"id": key.id, "name": key.name, "scope": key.scope, "prefix": key.prefix})
}
