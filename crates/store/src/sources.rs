//! Policy-as-code (SPEC §9): policies bound to a file in a GitHub repository, what their last
//! sync found, and each workspace's push-webhook secret. The store keeps the token and the
//! secret only as the ciphertext the server hands it.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{
    Actor, EventKind, NewAuditEvent, Result, Store, StoreError, Tenant, from_micros, micros,
};

/// What a binding says: where the policy's document lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubFile {
    /// `owner/name`.
    pub repo: String,
    pub branch: String,
    /// The document's path in the repository.
    pub path: String,
}

/// What one sync came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub at: DateTime<Utc>,
    /// The commit it read, when it got that far.
    pub commit: Option<String>,
    /// `updated`, `unchanged` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

/// A policy's binding as stored.
#[derive(Debug, Clone)]
pub struct PolicyBinding {
    pub name: String,
    pub file: GitHubFile,
    /// The token, sealed.
    pub token: String,
    pub etag: Option<String>,
    pub last_sync: Option<SyncRecord>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "name, repo, branch, path, token, etag, synced_at, synced_commit, \
                       sync_status, sync_error, created_at, updated_at";

fn source_from_row(row: &AnyRow) -> Result<PolicyBinding> {
    let synced_at: Option<i64> = row.try_get("synced_at")?;
    let last_sync = match synced_at {
        Some(at) => Some(SyncRecord {
            at: from_micros(at),
            commit: row.try_get("synced_commit")?,
            status: row.try_get("sync_status")?,
            error: row.try_get("sync_error")?,
        }),
        None => None,
    };
    Ok(PolicyBinding {
        name: row.try_get("name")?,
        file: GitHubFile {
            repo: row.try_get("repo")?,
            branch: row.try_get("branch")?,
            path: row.try_get("path")?,
        },
        token: row.try_get("token")?,
        etag: row.try_get("etag")?,
        last_sync,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

/// What to write after a sync.
#[derive(Debug, Clone)]
pub struct SyncResult {
    pub record: SyncRecord,
    /// The ETag to send next time (`None` forgets it, so the next look reads in full).
    pub etag: Option<String>,
    /// When the schedule may look again.
    pub next_poll_at: DateTime<Utc>,
    /// The failure to audit (a failure is audited when it is new, not on every look).
    pub audit: Option<NewAuditEvent>,
}

impl Store {
    /// Binds policy `name` to a file (replacing an earlier binding, whose sync state is
    /// forgotten), audited without the token.
    pub async fn bind_policy_source(
        &self,
        tenant: &Tenant,
        name: &str,
        file: &GitHubFile,
        sealed_token: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<PolicyBinding> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            sqlx::query(
                "INSERT INTO policy_sources (workspace_id, name, repo, branch, path, token, \
                 next_poll_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
                 ON CONFLICT (workspace_id, name) DO UPDATE SET repo = excluded.repo, \
                 branch = excluded.branch, path = excluded.path, token = excluded.token, \
                 etag = NULL, synced_at = NULL, synced_commit = NULL, sync_status = NULL, \
                 sync_error = NULL, next_poll_at = excluded.next_poll_at, \
                 updated_at = excluded.updated_at",
            )
            .bind(ws)
            .bind(name)
            .bind(&file.repo)
            .bind(&file.branch)
            .bind(&file.path)
            .bind(sealed_token)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::PolicySourceBound,
                actor,
                evaluation_id: None,
                data: json!({
                    "name": name,
                    "github": {"repo": file.repo, "branch": file.branch, "path": file.path},
                }),
                occurred_at: now,
            });
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM policy_sources WHERE workspace_id = $1 AND name = $2"
            ))
            .bind(ws)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            source_from_row(&row)
        })
        .await
    }

    /// Removes a policy's binding (the policy and its versions stay), audited.
    pub async fn unbind_policy_source(
        &self,
        tenant: &Tenant,
        name: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            let removed =
                sqlx::query("DELETE FROM policy_sources WHERE workspace_id = $1 AND name = $2")
                    .bind(tenant.workspace_id())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            if removed.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            chain.append(&NewAuditEvent {
                kind: EventKind::PolicySourceUnbound,
                actor,
                evaluation_id: None,
                data: json!({"name": name}),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }

    pub async fn policy_source(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<PolicyBinding>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policy_sources WHERE workspace_id = $1 AND name = $2"
        ))
        .bind(tenant.workspace_id())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(source_from_row).transpose()
    }

    /// Every binding of the workspace, by policy name.
    pub async fn policy_sources(&self, tenant: &Tenant) -> Result<Vec<PolicyBinding>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policy_sources WHERE workspace_id = $1 ORDER BY name"
        ))
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(source_from_row).collect()
    }

    /// Claims up to `limit` bindings whose time to look has come, moving each one's next look
    /// to `next`; a binding another server claimed first is not answered, so replicas polling
    /// together look once between them.
    pub async fn claim_due_policy_sources(
        &self,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(Tenant, String)>> {
        let due = sqlx::query(
            "SELECT workspace_id, name, next_poll_at FROM policy_sources \
             WHERE next_poll_at <= $1 ORDER BY next_poll_at LIMIT $2",
        )
        .bind(micros(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            let (ws, name, was): (String, String, i64) = (
                row.try_get("workspace_id")?,
                row.try_get("name")?,
                row.try_get("next_poll_at")?,
            );
            let won = sqlx::query(
                "UPDATE policy_sources SET next_poll_at = $1 WHERE workspace_id = $2 \
                 AND name = $3 AND next_poll_at = $4",
            )
            .bind(micros(next))
            .bind(&ws)
            .bind(&name)
            .bind(was)
            .execute(&self.pool)
            .await?;
            if won.rows_affected() == 1 {
                claimed.push((Tenant::new(ws), name));
            }
        }
        Ok(claimed)
    }

    /// Records what a sync came to on the binding (if it is still there), and audits its
    /// failure when asked.
    pub async fn record_sync(&self, tenant: &Tenant, name: &str, result: SyncResult) -> Result<()> {
        let ws = tenant.workspace_id();
        let r = &result.record;
        let update = sqlx::query(
            "UPDATE policy_sources SET etag = $1, synced_at = $2, synced_commit = $3, \
             sync_status = $4, sync_error = $5, next_poll_at = $6 \
             WHERE workspace_id = $7 AND name = $8",
        )
        .bind(&result.etag)
        .bind(micros(r.at))
        .bind(&r.commit)
        .bind(&r.status)
        .bind(&r.error)
        .bind(micros(result.next_poll_at))
        .bind(ws)
        .bind(name);
        match &result.audit {
            None => {
                update.execute(&self.pool).await?;
            }
            Some(event) => {
                self.audited(tenant, async |tx, chain| {
                    update.execute(&mut *tx).await?;
                    chain.append(event);
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The workspace's push-webhook secret, sealed, if it has one.
    pub async fn github_webhook_secret(&self, tenant: &Tenant) -> Result<Option<String>> {
        let found = self.github_integration_of(tenant.workspace_id()).await?;
        Ok(found.map(|(_, sealed)| sealed))
    }

    /// Gives the workspace `sealed` as its push-webhook secret unless it has one already, and
    /// answers the one it has (two servers creating it at once agree on one).
    pub async fn create_github_webhook_secret(
        &self,
        tenant: &Tenant,
        sealed: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let made = sqlx::query(
                "INSERT INTO github_integrations (workspace_id, webhook_secret, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO NOTHING",
            )
            .bind(ws)
            .bind(sealed)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            if made.rows_affected() == 1 {
                chain.append(&NewAuditEvent {
                    kind: EventKind::GitHubWebhookSecretCreated,
                    actor,
                    evaluation_id: None,
                    data: json!({}),
                    occurred_at: now,
                });
            }
            Ok(sqlx::query_scalar(
                "SELECT webhook_secret FROM github_integrations WHERE workspace_id = $1",
            )
            .bind(ws)
            .fetch_one(&mut *tx)
            .await?)
        })
        .await
    }
}

impl Store {
    /// The workspace with id `workspace_id` and its sealed push-webhook secret, if it has
    /// one: how a push, which carries no key, finds its workspace.
    pub async fn github_integration_of(
        &self,
        workspace_id: &str,
    ) -> Result<Option<(Tenant, String)>> {
        let secret: Option<String> = sqlx::query_scalar(
            "SELECT webhook_secret FROM github_integrations WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(secret.map(|s| (Tenant::new(workspace_id.to_owned()), s)))
    }
}
