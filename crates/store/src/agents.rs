//! The agent inventory and the kill switch (SPEC §8). The inventory is `agents`, added up by
//! the evaluation list's catch-up, and the chain's tail it has not caught up with; the
//! descriptive fields are people's. Halts (an agent suspended, the workspace's kill switch
//! engaged) are kept here and bump the workspace's policy generation, so every server's policy
//! cache, which evaluate reads them from, picks them up within its refresh interval.

use std::collections::{BTreeMap, HashMap};

use agentnexus_engine::Spend;
use chrono::{DateTime, Datelike, Utc};
use serde_json::json;
use sqlx::Row;

use crate::rows::{Field, event_field};
use crate::{
    Actor, EventKind, NewAuditEvent, Result, Store, StoreError, Tenant, from_micros, micros,
};

/// What people say about an agent; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentProfile {
    pub owner: Option<String>,
    pub purpose: Option<String>,
    pub model: Option<String>,
    pub tools: Vec<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub risk_tier: Option<String>,
}

/// Why and by whom something was halted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    pub at: DateTime<Utc>,
    /// The person or key, as audited (`member:…`, `key:…`).
    pub by: String,
    pub reason: String,
}

/// One agent of the inventory.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub agent_id: String,
    /// None for an agent described before it was first seen.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub evaluations: i64,
    /// Attributed cost today and this month (UTC).
    pub spend: Spend,
    pub profile: AgentProfile,
    /// Its own suspension; the workspace's kill switch is in [`Halts`].
    pub suspended: Option<Halt>,
}

/// What is halted in a workspace: what evaluate denies whatever the policies say.
#[derive(Debug, Clone, Default)]
pub struct Halts {
    /// The kill switch, when engaged: every agent.
    pub workspace: Option<Halt>,
    /// Suspended agents and why.
    pub agents: HashMap<String, Halt>,
}

impl Halts {
    /// Why this agent may not act now, if it may not: the reason evaluate answers.
    pub fn reason(&self, agent_id: &str) -> Option<String> {
        halt_reason(
            self.workspace.as_ref().map(|h| h.reason.as_str()),
            self.agents.get(agent_id).map(|h| h.reason.as_str()),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.workspace.is_none() && self.agents.is_empty()
    }
}

/// The reason evaluate answers, and pending evaluations end with, under the workspace's kill
/// switch (its reason) or an agent's suspension (its reason): SPEC §8's `agent suspended`.
pub(crate) fn halt_reason(workspace: Option<&str>, agent: Option<&str>) -> Option<String> {
    match (workspace, agent) {
        (Some(why), _) => Some(format!("agent suspended: kill switch engaged: {why}")),
        (None, Some(why)) => Some(format!("agent suspended: {why}")),
        (None, None) => None,
    }
}

/// What is halted: one agent, or every agent of the workspace.
#[derive(Debug, Clone, Copy)]
pub enum HaltScope<'a> {
    Agent(&'a str),
    Workspace,
}

const AGENT_COLUMNS: &str = "agent_id, first_seen, last_seen, evaluations, owner, purpose, \
     model, tools, risk_tier, suspended_at, suspended_by, suspended_reason";

/// A halt from its three columns (`PREFIX_at`, `PREFIX_by`, `PREFIX_reason`); none while the
/// time is null.
pub(crate) fn halt_from_row(r: &sqlx::any::AnyRow, prefix: &str) -> Result<Option<Halt>> {
    let Some(at) = r.try_get::<Option<i64>, _>(format!("{prefix}_at").as_str())? else {
        return Ok(None);
    };
    let text = |column: &str| -> Result<String> {
        Ok(
            r.try_get::<Option<String>, _>(format!("{prefix}_{column}").as_str())?
                .unwrap_or_default(),
        )
    };
    Ok(Some(Halt {
        at: from_micros(at),
        by: text("by")?,
        reason: text("reason")?,
    }))
}

fn agent_from_row(r: &sqlx::any::AnyRow) -> Result<AgentRecord> {
    let tools: Option<String> = r.try_get("tools")?;
    let tools = match tools {
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("agent tools: {e}")))?,
        None => Vec::new(),
    };
    let suspended = halt_from_row(r, "suspended")?;
    Ok(AgentRecord {
        agent_id: r.try_get("agent_id")?,
        first_seen: r.try_get::<Option<i64>, _>("first_seen")?.map(from_micros),
        last_seen: r.try_get::<Option<i64>, _>("last_seen")?.map(from_micros),
        evaluations: r.try_get("evaluations")?,
        spend: Spend::default(),
        profile: AgentProfile {
            owner: r.try_get("owner")?,
            purpose: r.try_get("purpose")?,
            model: r.try_get("model")?,
            tools,
            risk_tier: r.try_get("risk_tier")?,
        },
        suspended,
    })
}

/// A new agent's row, for one described or suspended before it is seen.
async fn ensure_agent(conn: &mut sqlx::AnyConnection, ws: &str, agent_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO agents (workspace_id, agent_id, evaluations) VALUES ($1, $2, 0) \
         ON CONFLICT (workspace_id, agent_id) DO NOTHING",
    )
    .bind(ws)
    .bind(agent_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tells every server's policy cache (which holds the halts) that this workspace changed.
async fn bump_generation(conn: &mut sqlx::AnyConnection, ws: &str) -> Result<()> {
    sqlx::query("UPDATE workspaces SET policy_generation = policy_generation + 1 WHERE id = $1")
        .bind(ws)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Store {
    /// The workspace's agents, most recently seen first (those described but never seen
    /// last), at most `limit`; or only `only`.
    pub async fn agents(
        &self,
        tenant: &Tenant,
        only: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<AgentRecord>> {
        let ws = tenant.workspace_id();
        let sqlite = self.backend == crate::Backend::Sqlite;
        let mut tx = self.pool.begin().await?;
        if !sqlite {
            // The table and the tail from one snapshot: a catch-up landing between two reads
            // would count the tail twice.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let filter = if only.is_some() {
            " AND agent_id = $2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1{filter} \
             ORDER BY CASE WHEN last_seen IS NULL THEN 1 ELSE 0 END, last_seen DESC, agent_id \
             LIMIT {limit}"
        );
        let mut q = sqlx::query(&sql).bind(ws);
        if let Some(a) = only {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let mut agents: BTreeMap<String, AgentRecord> = BTreeMap::new();
        for r in &rows {
            let a = agent_from_row(r)?;
            agents.insert(a.agent_id.clone(), a);
        }
        let read: std::collections::HashSet<String> = agents.keys().cloned().collect();
        // What the chain's tail adds: evaluations the table has not caught up with.
        let tail: i64 =
            sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        let (agent, cost) = (
            event_field(sqlite, Field::Text, "agent_id"),
            event_field(sqlite, Field::Int, "cost_cents"),
        );
        let filter = if only.is_some() {
            format!(" AND {agent} = $2")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {agent} AS agent_id, {cost} AS cost_cents, a.occurred_at FROM audit_events a \
             WHERE a.workspace_id = $1 AND a.type = 'evaluation.created' AND a.seq > {tail}{filter}"
        );
        let mut q = sqlx::query(&sql).bind(ws);
        if let Some(a) = only {
            q = q.bind(a);
        }
        let today = crate::listing::day(now);
        let month_start = now.date_naive().with_day(1).unwrap_or(now.date_naive());
        let month = month_start.to_string();
        let mut tail_spend: HashMap<String, Spend> = HashMap::new();
        for r in q.fetch_all(&mut *tx).await? {
            let (id, cents, at): (String, i64, i64) = (
                r.try_get("agent_id")?,
                r.try_get("cost_cents")?,
                r.try_get("occurred_at")?,
            );
            let day = crate::listing::day(from_micros(at));
            let spend = tail_spend.entry(id.clone()).or_default();
            if day >= month {
                spend.month_cents += cents;
            }
            if day == today {
                spend.today_cents += cents;
            }
            let a = agents.entry(id.clone()).or_insert_with(|| AgentRecord {
                agent_id: id,
                first_seen: None,
                last_seen: None,
                evaluations: 0,
                spend: Spend::default(),
                profile: AgentProfile::default(),
                suspended: None,
            });
            let at = from_micros(at);
            a.evaluations += 1;
            a.first_seen = Some(a.first_seen.map_or(at, |f| f.min(at)));
            a.last_seen = Some(a.last_seen.map_or(at, |l| l.max(at)));
        }
        // A tail agent the page did not hold may still have a row (past the page's end).
        let unread: Vec<String> = agents
            .keys()
            .filter(|id| !read.contains(*id))
            .cloned()
            .collect();
        for chunk in unread.chunks(100) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 AND agent_id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(ws);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let stored = agent_from_row(&row)?;
                let a = agents.get_mut(&stored.agent_id).expect("asked for");
                a.evaluations += stored.evaluations;
                a.first_seen = min_opt(a.first_seen, stored.first_seen);
                a.last_seen = a.last_seen.max(stored.last_seen);
                a.profile = stored.profile;
                a.suspended = stored.suspended;
            }
        }
        // What the table has added up of this month's costs.
        let costs = sqlx::query(
            "SELECT agent_id, CAST(SUM(CASE WHEN day = $2 THEN cents ELSE 0 END) AS BIGINT) \
             AS today_cents, CAST(SUM(cents) AS BIGINT) AS month_cents FROM agent_costs \
             WHERE workspace_id = $1 AND day >= $3 GROUP BY agent_id",
        )
        .bind(ws)
        .bind(&today)
        .bind(&month)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for r in &costs {
            let id: String = r.try_get("agent_id")?;
            if let Some(a) = agents.get_mut(&id) {
                a.spend.today_cents += r.try_get::<i64, _>("today_cents")?;
                a.spend.month_cents += r.try_get::<i64, _>("month_cents")?;
            }
        }
        for (id, s) in tail_spend {
            if let Some(a) = agents.get_mut(&id) {
                a.spend.today_cents += s.today_cents;
                a.spend.month_cents += s.month_cents;
            }
        }
        let mut list: Vec<AgentRecord> = agents.into_values().collect();
        list.sort_by(|a, b| {
            (
                a.last_seen.is_none(),
                std::cmp::Reverse(a.last_seen),
                &a.agent_id,
            )
                .cmp(&(
                    b.last_seen.is_none(),
                    std::cmp::Reverse(b.last_seen),
                    &b.agent_id,
                ))
        });
        list.truncate(limit as usize);
        Ok(list)
    }

    /// Sets an agent's descriptive fields (all of them: what is absent is cleared), audited
    /// as `agent.updated`; an agent not seen yet is added to the inventory.
    pub async fn describe_agent(
        &self,
        tenant: &Tenant,
        agent_id: &str,
        profile: &AgentProfile,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            ensure_agent(tx, ws, agent_id).await?;
            let tools = serde_json::to_string(&profile.tools).expect("strings serialize");
            sqlx::query(
                "UPDATE agents SET owner = $3, purpose = $4, model = $5, tools = $6, \
                 risk_tier = $7, updated_at = $8 WHERE workspace_id = $1 AND agent_id = $2",
            )
            .bind(ws)
            .bind(agent_id)
            .bind(profile.owner.as_deref())
            .bind(profile.purpose.as_deref())
            .bind(profile.model.as_deref())
            .bind(&tools)
            .bind(profile.risk_tier.as_deref())
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            chain.append(&NewAuditEvent {
                kind: EventKind::AgentUpdated,
                actor,
                evaluation_id: None,
                data: json!({
                    "agent_id": agent_id,
                    "owner": profile.owner,
                    "purpose": profile.purpose,
                    "model": profile.model,
                    "tools": profile.tools,
                    "risk_tier": profile.risk_tier,
                }),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }

    /// What is halted in a workspace now.
    pub async fn halts(&self, tenant: &Tenant) -> Result<Halts> {
        let ws = tenant.workspace_id();
        let row = sqlx::query(
            "SELECT kill_switch_at, kill_switch_by, kill_switch_reason FROM workspaces \
             WHERE id = $1",
        )
        .bind(ws)
        .fetch_optional(&self.pool)
        .await?;
        let workspace = match &row {
            Some(r) => halt_from_row(r, "kill_switch")?,
            None => None,
        };
        let rows = sqlx::query(
            "SELECT agent_id, suspended_at, suspended_by, suspended_reason FROM agents \
             WHERE workspace_id = $1 AND suspended_at IS NOT NULL",
        )
        .bind(ws)
        .fetch_all(&self.pool)
        .await?;
        let mut agents = HashMap::with_capacity(rows.len());
        for r in &rows {
            if let Some(halt) = halt_from_row(r, "suspended")? {
                agents.insert(r.try_get("agent_id")?, halt);
            }
        }
        Ok(Halts { workspace, agents })
    }

    /// Halts an agent or the whole workspace (audited as `agent.suspended` or
    /// `kill_switch.engaged`); halting again replaces the reason. Its pending evaluations are
    /// ended by [`Store::end_halted`].
    pub async fn halt(
        &self,
        tenant: &Tenant,
        scope: HaltScope<'_>,
        reason: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let (kind, data) = match scope {
                HaltScope::Agent(agent_id) => {
                    ensure_agent(tx, ws, agent_id).await?;
                    sqlx::query(
                        "UPDATE agents SET suspended_at = $3, suspended_by = $4, \
                         suspended_reason = $5, updated_at = $3 \
                         WHERE workspace_id = $1 AND agent_id = $2",
                    )
                    .bind(ws)
                    .bind(agent_id)
                    .bind(micros(now))
                    .bind(actor.label())
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                    let data = json!({"agent_id": agent_id, "reason": reason});
                    (EventKind::AgentSuspended, data)
                }
                HaltScope::Workspace => {
                    sqlx::query(
                        "UPDATE workspaces SET kill_switch_at = $2, kill_switch_by = $3, \
                         kill_switch_reason = $4 WHERE id = $1",
                    )
                    .bind(ws)
                    .bind(micros(now))
                    .bind(actor.label())
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                    (EventKind::KillSwitchEngaged, json!({"reason": reason}))
                }
            };
            bump_generation(tx, ws).await?;
            chain.append(&NewAuditEvent {
                kind,
                actor,
                evaluation_id: None,
                data,
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }

    /// Lifts a halt (audited as `agent.resumed` or `kill_switch.released`); false, changing
    /// nothing, when there was none.
    pub async fn lift(
        &self,
        tenant: &Tenant,
        scope: HaltScope<'_>,
        reason: Option<&str>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let ws = tenant.workspace_id();
        self.audited(tenant, async |tx, chain| {
            let (lifted, kind, data) = match scope {
                HaltScope::Agent(agent_id) => {
                    let done = sqlx::query(
                        "UPDATE agents SET suspended_at = NULL, suspended_by = NULL, \
                         suspended_reason = NULL, updated_at = $3 \
                         WHERE workspace_id = $1 AND agent_id = $2 AND suspended_at IS NOT NULL",
                    )
                    .bind(ws)
                    .bind(agent_id)
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
                    let data = json!({"agent_id": agent_id, "reason": reason});
                    (done.rows_affected() > 0, EventKind::AgentResumed, data)
                }
                HaltScope::Workspace => {
                    let done = sqlx::query(
                        "UPDATE workspaces SET kill_switch_at = NULL, kill_switch_by = NULL, \
                         kill_switch_reason = NULL WHERE id = $1 AND kill_switch_at IS NOT NULL",
                    )
                    .bind(ws)
                    .execute(&mut *tx)
                    .await?;
                    let data = json!({"reason": reason});
                    (
                        done.rows_affected() > 0,
                        EventKind::KillSwitchReleased,
                        data,
                    )
                }
            };
            if lifted {
                bump_generation(tx, ws).await?;
                chain.append(&NewAuditEvent {
                    kind,
                    actor,
                    evaluation_id: None,
                    data,
                    occurred_at: now,
                });
            }
            Ok(lifted)
        })
        .await
    }

    /// The workspaces where something is halted: those whose pending evaluations the refresh
    /// loop ends (see [`Store::end_halted`]).
    pub async fn halted_workspaces(&self) -> Result<Vec<Tenant>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM workspaces WHERE kill_switch_at IS NOT NULL \
             UNION SELECT DISTINCT workspace_id FROM agents WHERE suspended_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(Tenant::new).collect())
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
