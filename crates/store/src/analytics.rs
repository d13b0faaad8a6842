//! Analytics over a period (SPEC §8), exact and without reading the period evaluation by
//! evaluation: whole UTC hours come from `evaluation_hours` (added up by the list's catch-up),
//! the period's partial first and last hours from `evaluation_index` by id (an id's time is its
//! evaluation's creation, see [`crate::new_evaluation_id`]), and what the list has not caught
//! up with from the chain's tail. All three are read in one snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::listing::{HOUR, hour_of};
use crate::rows::{Field, event_field};
use crate::{Result, Store, Tenant};

/// What a cost report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    Agent,
    Action,
    /// Days of a time zone `offset_secs` east of UTC (whole hours).
    Day {
        offset_secs: i64,
    },
}

/// One group of a cost report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostLine {
    pub key: String,
    pub cost_cents: i64,
    pub evaluations: i64,
}

/// The smallest evaluation id of a time in microseconds (to the millisecond).
fn id_at(t: i64) -> String {
    let ms = u64::try_from(t.div_euclid(1000)).unwrap_or(0);
    format!(
        "ev_{}",
        ulid::Ulid::from_parts(ms, 0).to_string().to_lowercase()
    )
}

impl CostGroup {
    /// The group of an evaluation (or an hour's) at time `t` (microseconds).
    fn key(self, t: i64, agent: &str, action: &str) -> String {
        match self {
            CostGroup::Agent => agent.to_owned(),
            CostGroup::Action => action.to_owned(),
            CostGroup::Day { offset_secs } => {
                crate::listing::day(crate::from_micros(t + offset_secs * 1_000_000))
            }
        }
    }
}

impl Store {
    /// What the workspace's evaluations created in `[from, to)` (to the millisecond) cost,
    /// grouped; every group with at least one evaluation, in no particular order.
    pub async fn costs(
        &self,
        tenant: &Tenant,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group: CostGroup,
    ) -> Result<Vec<CostLine>> {
        let ws = tenant.workspace_id();
        // Millisecond precision, as ids have it.
        let (from, to) = (from.timestamp_millis() * 1000, to.timestamp_millis() * 1000);
        // The whole hours inside the period; none when it falls within one.
        let first_whole = hour_of(from + HOUR - 1);
        let end_whole = hour_of(to).max(first_whole);
        let sqlite = self.backend == crate::Backend::Sqlite;
        let (agent, action, cost) = (
            event_field(sqlite, Field::Text, "agent_id"),
            event_field(sqlite, Field::Text, "action"),
            event_field(sqlite, Field::Int, "cost_cents"),
        );
        let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut add = |key: String, cents: i64, n: i64| {
            let s = sums.entry(key).or_default();
            (s.0, s.1) = (s.0 + cents, s.1 + n);
        };

        let mut tx = self.pool.begin().await?;
        if !sqlite {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        // Whole hours, summed by the database as far as the grouping allows.
        let by = match group {
            CostGroup::Agent => "agent_id",
            CostGroup::Action => "action",
            CostGroup::Day { .. } => "hour",
        };
        let rows = sqlx::query(&format!(
            "SELECT {by} AS k, CAST(SUM(cost_cents) AS BIGINT) AS cents, \
             CAST(SUM(evaluations) AS BIGINT) AS n FROM evaluation_hours \
             WHERE workspace_id = $1 AND hour >= $2 AND hour < $3 GROUP BY {by}"
        ))
        .bind(ws)
        .bind(first_whole)
        .bind(end_whole)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            let (cents, n): (i64, i64) = (r.try_get("cents")?, r.try_get("n")?);
            let key = match group {
                CostGroup::Day { .. } => group.key(r.try_get("k")?, "", ""),
                _ => r.try_get("k")?,
            };
            add(key, cents, n);
        }
        // The partial hours at either end, evaluation by evaluation, as the index has them.
        let edges = if first_whole < end_whole {
            vec![(from, first_whole), (end_whole, to)]
        } else {
            vec![(from, to)]
        };
        for (lo, hi) in edges.into_iter().filter(|(lo, hi)| lo < hi) {
            let rows = sqlx::query(&format!(
                "SELECT {agent} AS agent_id, {action} AS action, {cost} AS cost_cents, \
                 a.occurred_at FROM evaluation_index i JOIN audit_events a \
                 ON a.workspace_id = i.workspace_id AND a.seq = i.seq \
                 WHERE i.workspace_id = $1 AND i.id >= $2 AND i.id < $3"
            ))
            .bind(ws)
            .bind(id_at(lo))
            .bind(id_at(hi))
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                let at: i64 = r.try_get("occurred_at")?;
                let (a, act): (String, String) = (r.try_get("agent_id")?, r.try_get("action")?);
                add(group.key(at, &a, &act), r.try_get("cost_cents")?, 1);
            }
        }
        // What the index has not caught up with, by creation time.
        let tail: i64 =
            sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        let rows = sqlx::query(&format!(
            "SELECT {agent} AS agent_id, {action} AS action, {cost} AS cost_cents, a.occurred_at \
             FROM audit_events a WHERE a.workspace_id = $1 AND a.type = 'evaluation.created' \
             AND a.seq > {tail} AND a.occurred_at >= $2 AND a.occurred_at < $3"
        ))
        .bind(ws)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for r in &rows {
            let at: i64 = r.try_get("occurred_at")?;
            let (a, act): (String, String) = (r.try_get("agent_id")?, r.try_get("action")?);
            add(group.key(at, &a, &act), r.try_get("cost_cents")?, 1);
        }
        Ok(sums
            .into_iter()
            .map(|(key, (cost_cents, evaluations))| CostLine {
                key,
                cost_cents,
                evaluations,
            })
            .collect())
    }
}
