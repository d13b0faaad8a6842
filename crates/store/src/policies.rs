//! Policies and their immutable versions (SPEC §3.3).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::Chain;
use crate::{
    Actor, EventKind, NewAuditEvent, PolicySource, PolicySummary, PolicyVersion, Result, Store,
    StoreError, Tenant, from_micros, micros,
};

const VERSION_COLUMNS: &str =
    "v.name, v.version, v.enabled, v.document, v.format, v.author, v.source, v.created_at";

fn version_from_row(row: &AnyRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        document: row.try_get("document")?,
        format: row.try_get("format")?,
        author: row.try_get("author")?,
        source: row.try_get("source")?,
        created_at: from_micros(row.try_get("created_at")?),
    })
}

/// A new version to write; the document has been compiled by the caller.
#[derive(Debug, Clone)]
pub struct PolicyChange<'a> {
    pub name: &'a str,
    pub document: &'a str,
    pub format: &'a str,
    pub enabled: bool,
    pub actor: Actor,
    pub source: PolicySource,
    pub now: DateTime<Utc>,
}

impl Store {
    /// Writes a new version and makes it active, audited, in one transaction. A document
    /// identical to the active version (same text, same enabled flag) changes nothing and
    /// answers the active version with `false`.
    pub async fn put_policy(
        &self,
        tenant: &Tenant,
        change: PolicyChange<'_>,
    ) -> Result<(PolicyVersion, bool)> {
        let mut written = self.put_policies(tenant, vec![change]).await?;
        Ok(written.remove(0))
    }

    /// [`Store::put_policy`] for several documents at once: all are written or none.
    pub async fn put_policies(
        &self,
        tenant: &Tenant,
        changes: Vec<PolicyChange<'_>>,
    ) -> Result<Vec<(PolicyVersion, bool)>> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let mut results = Vec::with_capacity(changes.len());
            let mut any = false;
            for c in changes {
                match active_version(tx, ws, c.name).await? {
                    Some(a) if a.document == c.document && a.enabled == c.enabled => {
                        results.push((a, false));
                    }
                    _ => {
                        let kind = EventKind::PolicyChanged;
                        let v = write_version(tx, chain, ws, c, kind, json!({})).await?;
                        results.push((v, true));
                        any = true;
                    }
                }
            }
            if any {
                bump_generation(tx, ws).await?;
            }
            Ok(results)
        })
        .await
    }

    /// A document read from Git at `commit`, as a new active version with source `git:SHA`
    /// and the commit's author. A commit this policy already has a version of changes
    /// nothing (several servers syncing one push make one version between them), and neither
    /// does a document identical to the active one; both answer the active version and `false`.
    pub async fn put_git_policy(
        &self,
        tenant: &Tenant,
        change: PolicyChange<'_>,
        commit: &str,
        commit_author: &str,
    ) -> Result<(PolicyVersion, bool)> {
        let ws = tenant.workspace_id();
        let source = PolicySource::Git(commit.to_owned()).label();
        self.audited(tenant, async |tx, chain| {
            let active = active_version(tx, ws, change.name).await?;
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM policy_versions WHERE workspace_id = $1 AND name = $2 \
                 AND source = $3",
            )
            .bind(ws)
            .bind(change.name)
            .bind(&source)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(a) = active
                && (seen.is_some()
                    || (a.document == change.document && a.enabled == change.enabled))
            {
                return Ok((a, false));
            }
            let extra = json!({"commit": commit, "commit_author": commit_author});
            let author = commit_author.to_owned();
            let kind = EventKind::PolicyChanged;
            let v = write_version_by(tx, chain, ws, change, author, kind, extra).await?;
            bump_generation(tx, ws).await?;
            Ok((v, true))
        })
        .await
    }

    /// Disables a policy as a new version with the same document; history stays.
    pub async fn disable_policy(
        &self,
        tenant: &Tenant,
        name: &str,
        actor: Actor,
        source: PolicySource,
        now: DateTime<Utc>,
    ) -> Result<PolicyVersion> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let active = active_version(tx, ws, name)
                .await?
                .ok_or(StoreError::NotFound)?;
            let change = PolicyChange {
                name,
                document: &active.document,
                format: &active.format,
                enabled: false,
                actor,
                source,
                now,
            };
            let v =
                write_version(tx, chain, ws, change, EventKind::PolicyDisabled, json!({})).await?;
            bump_generation(tx, ws).await?;
            Ok(v)
        })
        .await
    }

    /// Re-activates an older version's document as a new version.
    pub async fn rollback_policy(
        &self,
        tenant: &Tenant,
        name: &str,
        version: i64,
        actor: Actor,
        source: PolicySource,
        now: DateTime<Utc>,
    ) -> Result<PolicyVersion> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let row = sqlx::query(&format!(
                "SELECT {VERSION_COLUMNS} FROM policy_versions v WHERE v.workspace_id = $1 \
                 AND v.name = $2 AND v.version = $3"
            ))
            .bind(ws)
            .bind(name)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            let old = version_from_row(&row)?;
            let change = PolicyChange {
                name,
                document: &old.document,
                format: &old.format,
                enabled: old.enabled,
                actor,
                source,
                now,
            };
            let extra = json!({"from_version": version});
            let v =
                write_version(tx, chain, ws, change, EventKind::PolicyRolledBack, extra).await?;
            bump_generation(tx, ws).await?;
            Ok(v)
        })
        .await
    }

    pub async fn policies(&self, tenant: &Tenant) -> Result<Vec<PolicySummary>> {
        let rows = sqlx::query(
            "SELECT name, version, enabled, created_at, updated_at FROM policies \
             WHERE workspace_id = $1 ORDER BY name",
        )
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PolicySummary {
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    created_at: from_micros(row.try_get("created_at")?),
                    updated_at: from_micros(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    /// The active version of a policy.
    pub async fn policy(&self, tenant: &Tenant, name: &str) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM policies p JOIN policy_versions v \
             ON v.workspace_id = p.workspace_id AND v.name = p.name AND v.version = p.version \
             WHERE p.workspace_id = $1 AND p.name = $2"
        ))
        .bind(tenant.workspace_id())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The active version of every policy, disabled ones included.
    pub async fn active_policies(&self, tenant: &Tenant) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM policies p JOIN policy_versions v \
             ON v.workspace_id = p.workspace_id AND v.name = p.name AND v.version = p.version \
             WHERE p.workspace_id = $1 ORDER BY p.name"
        ))
        .bind(tenant.workspace_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Every version of a policy, newest first.
    pub async fn policy_versions(&self, tenant: &Tenant, name: &str) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM policy_versions v WHERE v.workspace_id = $1 \
             AND v.name = $2 ORDER BY v.version DESC"
        ))
        .bind(tenant.workspace_id())
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub async fn policy_version(
        &self,
        tenant: &Tenant,
        name: &str,
        version: i64,
    ) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM policy_versions v WHERE v.workspace_id = $1 \
             AND v.name = $2 AND v.version = $3"
        ))
        .bind(tenant.workspace_id())
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// How many times a workspace's policies have changed; a cache compares it to reload.
    pub async fn policy_generation(&self, tenant: &Tenant) -> Result<i64> {
        let row = sqlx::query("SELECT policy_generation FROM workspaces WHERE id = $1")
            .bind(tenant.workspace_id())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("policy_generation")?)
    }
}

impl Store {
    /// Every workspace's policy generation, for caches that refresh what changed elsewhere.
    pub async fn policy_generations(&self) -> Result<Vec<(Tenant, i64)>> {
        let rows = sqlx::query("SELECT id, policy_generation FROM workspaces")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    Tenant::new(r.try_get("id")?),
                    r.try_get("policy_generation")?,
                ))
            })
            .collect()
    }
}

async fn active_version(
    conn: &mut AnyConnection,
    ws: &str,
    name: &str,
) -> Result<Option<PolicyVersion>> {
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM policies p JOIN policy_versions v \
         ON v.workspace_id = p.workspace_id AND v.name = p.name AND v.version = p.version \
         WHERE p.workspace_id = $1 AND p.name = $2"
    ))
    .bind(ws)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(version_from_row).transpose()
}

/// Tells every server's policy cache that this workspace changed.
async fn bump_generation(conn: &mut AnyConnection, ws: &str) -> Result<()> {
    sqlx::query("UPDATE workspaces SET policy_generation = policy_generation + 1 WHERE id = $1")
        .bind(ws)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends a version, makes it active and audits it; the caller holds the chain's lock.
async fn write_version(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    ws: &str,
    c: PolicyChange<'_>,
    kind: EventKind,
    extra: serde_json::Value,
) -> Result<PolicyVersion> {
    let author = c.actor.label();
    write_version_by(conn, chain, ws, c, author, kind, extra).await
}

/// [`write_version`] naming the document's author, when that is not the actor (a commit's
/// author).
async fn write_version_by(
    conn: &mut AnyConnection,
    chain: &mut Chain,
    ws: &str,
    c: PolicyChange<'_>,
    author: String,
    kind: EventKind,
    extra: serde_json::Value,
) -> Result<PolicyVersion> {
    let current: Option<i64> = sqlx::query(
        "SELECT MAX(version) AS latest FROM policy_versions WHERE workspace_id = $1 AND name = $2",
    )
    .bind(ws)
    .bind(c.name)
    .fetch_one(&mut *conn)
    .await?
    .try_get("latest")?;
    let version = current.unwrap_or(0) + 1;
    let source = c.source.label();
    let now = micros(c.now);
    sqlx::query(
        "INSERT INTO policy_versions (workspace_id, name, version, document, format, enabled, \
         author, source, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(ws)
    .bind(c.name)
    .bind(version)
    .bind(c.document)
    .bind(c.format)
    .bind(i64::from(c.enabled))
    .bind(&author)
    .bind(&source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO policies (workspace_id, name, version, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (workspace_id, name) DO UPDATE SET \
         version = excluded.version, enabled = excluded.enabled, updated_at = excluded.updated_at",
    )
    .bind(ws)
    .bind(c.name)
    .bind(version)
    .bind(i64::from(c.enabled))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut data = json!({
        "name": c.name,
        "version": version,
        "enabled": c.enabled,
        "source": source,
        "document_sha256": agentnexus_engine::canonical::sha256_hex(c.document.as_bytes()),
    });
    if let (Some(d), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    chain.append(&NewAuditEvent {
        kind,
        actor: c.actor.clone(),
        evaluation_id: None,
        data,
        occurred_at: c.now,
    });
    Ok(PolicyVersion {
        name: c.name.to_owned(),
        version,
        enabled: c.enabled,
        document: c.document.to_owned(),
        format: c.format.to_owned(),
        author,
        source,
        created_at: c.now,
    })
}
