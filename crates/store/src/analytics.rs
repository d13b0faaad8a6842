//! Analytics over a period (SPEC §8), exact and without reading the period evaluation by
//! evaluation: whole UTC hours come from `evaluation_hours`, the period's partial first and last
//! hours from `evaluation_index` by id (an id's time is its evaluation's creation, see
//! [`crate::new_evaluation_id`]), and what is not summed yet from the chain. All three are read
//! in one snapshot, split by `analytics_heads.seq`: the hourly sums hold every evaluation up to
//! it, and nothing past it; they never run ahead of the evaluation list's catch-up.
//!
//! The sums are kept by [`Store::sum_hours`], which each server's refresh loop runs: behind the
//! chain, in transactions of their own, so that evaluate's writer never pays for them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::audit::insert_rows;
use crate::exec::Arg;
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

/// Evaluations of a period as the report reads them: a whole hour's sum (`hour` set, the
/// columns not summed by empty), or one evaluation (`n` 1, `at` its creation).
#[derive(Debug, Clone, Default)]
pub struct Lot {
    /// Microseconds: the hour's start, or the evaluation's creation.
    pub at: i64,
    pub agent: String,
    pub action: String,
    pub decision: String,
    pub n: i64,
    pub cents: i64,
    /// For one evaluation: the policies whose rules matched it, each once.
    pub policies: Vec<String>,
}

/// A report's evaluations: for each grouping asked for, the whole hours summed by those columns
/// (of `hour`, `agent_id`, `action`, `decision`); and, once, the evaluations of the partial
/// hours and the chain's tail one by one, which each grouping adds up itself.
#[derive(Default)]
pub struct Lots {
    pub summed: Vec<Vec<Lot>>,
    pub single: Vec<Lot>,
}

/// The whole UTC hours inside a period, `[first, end)` in microseconds; empty when it falls
/// within one hour.
fn whole_hours(from: DateTime<Utc>, to: DateTime<Utc>) -> (i64, i64) {
    let (from, to) = bounds(from, to);
    let first = hour_of(from + HOUR - 1);
    (first, hour_of(to).max(first))
}

/// The period `[from, to)` in microseconds, cut to the millisecond as ids are.
fn bounds(from: DateTime<Utc>, to: DateTime<Utc>) -> (i64, i64) {
    (from.timestamp_millis() * 1000, to.timestamp_millis() * 1000)
}

impl Store {
    /// The evaluations created in `[from, to)` (to the millisecond): see [`Lots`].
    async fn lots(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant: &Tenant,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        groupings: &[&[&str]],
    ) -> Result<Lots> {
        let ws = tenant.workspace_id();
        let (first_whole, end_whole) = whole_hours(from, to);
        let (from, to) = bounds(from, to);
        let sqlite = self.backend == crate::Backend::Sqlite;
        let (agent, action, cost, decision) = (
            event_field(sqlite, Field::Text, "agent_id"),
            event_field(sqlite, Field::Text, "action"),
            event_field(sqlite, Field::Int, "cost_cents"),
            event_field(sqlite, Field::Text, "decision"),
        );
        let mut summed = Vec::with_capacity(groupings.len());
        for columns in groupings {
            let by = columns.join(", ");
            let rows = sqlx::query(&format!(
                "SELECT {by}, CAST(SUM(cost_cents) AS BIGINT) AS cents, \
                 CAST(SUM(evaluations) AS BIGINT) AS n FROM evaluation_hours \
                 WHERE workspace_id = $1 AND hour >= $2 AND hour < $3 GROUP BY {by}"
            ))
            .bind(ws)
            .bind(first_whole)
            .bind(end_whole)
            .fetch_all(&mut **tx)
            .await?;
            let text = |r: &sqlx::any::AnyRow, c: &str| -> Result<String> {
                Ok(match columns.contains(&c) {
                    true => r.try_get(c)?,
                    false => String::new(),
                })
            };
            summed.push(
                rows.iter()
                    .map(|r| {
                        Ok(Lot {
                            at: match columns.contains(&"hour") {
                                true => r.try_get("hour")?,
                                false => 0,
                            },
                            agent: text(r, "agent_id")?,
                            action: text(r, "action")?,
                            decision: text(r, "decision")?,
                            n: r.try_get("n")?,
                            cents: r.try_get("cents")?,
                            policies: Vec::new(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let single_lot = |r: &sqlx::any::AnyRow| -> Result<Lot> {
            Ok(Lot {
                at: r.try_get("occurred_at")?,
                agent: r.try_get("agent_id")?,
                action: r.try_get("action")?,
                decision: r.try_get("decision")?,
                n: 1,
                cents: r.try_get("cost_cents")?,
                policies: crate::rows::matched_policies(
                    r.try_get::<Option<String>, _>("matched_rules")?.as_deref(),
                ),
            })
        };
        let matched = event_field(sqlite, Field::Json, "matched_rules");
        let columns = format!(
            "{agent} AS agent_id, {action} AS action, {cost} AS cost_cents, \
             {decision} AS decision, {matched} AS matched_rules, a.occurred_at"
        );
        let mut single = Vec::new();
        let summed_to = summed_seq(tx, ws).await?;
        // The partial hours at either end, evaluation by evaluation, as the index has them.
        let edges = if first_whole < end_whole {
            vec![(from, first_whole), (end_whole, to)]
        } else {
            vec![(from, to)]
        };
        for (lo, hi) in edges.into_iter().filter(|(lo, hi)| lo < hi) {
            let rows = sqlx::query(&format!(
                "SELECT {columns} FROM evaluation_index i JOIN audit_events a \
                 ON a.workspace_id = i.workspace_id AND a.seq = i.seq \
                 WHERE i.workspace_id = $1 AND i.id >= $2 AND i.id < $3 AND i.seq <= {summed_to}"
            ))
            .bind(ws)
            .bind(id_at(lo))
            .bind(id_at(hi))
            .fetch_all(&mut **tx)
            .await?;
            for r in &rows {
                single.push(single_lot(r)?);
            }
        }
        // What is not summed yet, by creation time.
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq > {summed_to} \
             AND a.occurred_at >= $2 AND a.occurred_at < $3"
        ))
        .bind(ws)
        .bind(from)
        .bind(to)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            single.push(single_lot(r)?);
        }
        Ok(Lots { summed, single })
    }

    /// A read-only transaction whose statements see one snapshot.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'_, sqlx::Any>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == crate::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// What the workspace's evaluations created in `[from, to)` (to the millisecond) cost,
    /// grouped; every group with at least one evaluation, in no particular order.
    pub async fn costs(
        &self,
        tenant: &Tenant,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group: CostGroup,
    ) -> Result<Vec<CostLine>> {
        let by: &[&str] = match group {
            CostGroup::Agent => &["agent_id"],
            CostGroup::Action => &["action"],
            CostGroup::Day { .. } => &["hour"],
        };
        let mut tx = self.snapshot().await?;
        let lots = self.lots(&mut tx, tenant, from, to, &[by]).await?;
        tx.commit().await?;
        let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for l in lots.summed.iter().flatten().chain(&lots.single) {
            let s = sums
                .entry(group.key(l.at, &l.agent, &l.action))
                .or_default();
            (s.0, s.1) = (s.0 + l.cents, s.1 + l.n);
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

    /// What people did with the evaluations created in `[from, to)` (to the millisecond) that
    /// asked for approval, and the evaluations themselves: see [`Governance`].
    pub async fn governance(
        &self,
        tenant: &Tenant,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Governance> {
        let ws = tenant.workspace_id();
        let (lo, hi) = bounds(from, to);
        let (lo, hi) = (id_at(lo), id_at(hi));
        let mut tx = self.snapshot().await?;
        let lots = self
            .lots(
                &mut tx,
                tenant,
                from,
                to,
                &[&["agent_id", "decision"], &["hour", "decision"]],
            )
            .await?;
        // Per policy whose rules matched: whole hours summed, the rest from the lots.
        let (first_whole, end_whole) = whole_hours(from, to);
        let by_policy = sqlx::query(
            "SELECT policy, decision, CAST(SUM(evaluations) AS BIGINT) AS n FROM policy_hours \
             WHERE workspace_id = $1 AND hour >= $2 AND hour < $3 GROUP BY policy, decision",
        )
        .bind(ws)
        .bind(first_whole)
        .bind(end_whole)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("policy")?,
                r.try_get("decision")?,
                r.try_get("n")?,
            ))
        })
        .collect::<Result<Vec<(String, String, i64)>>>()?;
        // Evaluations that asked for approval have a row, with their status as it is now.
        let statuses = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM evaluations \
             WHERE workspace_id = $1 AND id >= $2 AND id < $3 GROUP BY status",
        )
        .bind(ws)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
        let reasons = sqlx::query(
            "SELECT reason, COUNT(*) AS n FROM evaluations \
             WHERE workspace_id = $1 AND id >= $2 AND id < $3 AND status = 'rejected' \
             GROUP BY reason ORDER BY n DESC, reason LIMIT 10",
        )
        .bind(ws)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("reason")?, r.try_get("n")?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
        // Each human decision, from its stage's start.
        let latencies = sqlx::query(
            "SELECT d.decided_at - s.started_at AS waited FROM approval_decisions d \
             JOIN evaluation_stages s ON s.evaluation_id = d.evaluation_id AND s.idx = d.stage_idx \
             WHERE d.workspace_id = $1 AND d.evaluation_id >= $2 AND d.evaluation_id < $3 \
             AND s.started_at IS NOT NULL",
        )
        .bind(ws)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>("waited"))
        .collect::<std::result::Result<Vec<i64>, _>>()?;
        // Receipts, and whether each evaluation they are for was decided (allowed or
        // approved): from its row, the index, or the chain's tail.
        let tail = tail_seq(&mut tx, ws).await?;
        let sqlite = self.backend == crate::Backend::Sqlite;
        let decision = event_field(sqlite, Field::Text, "decision");
        let receipts = sqlx::query(&format!(
            "SELECT r.conforms, COALESCE(e.status, i.status, t.status) AS status FROM receipts r \
             LEFT JOIN evaluations e ON e.id = r.evaluation_id \
             LEFT JOIN evaluation_index i ON i.workspace_id = r.workspace_id \
             AND i.id = r.evaluation_id \
             LEFT JOIN (SELECT a.evaluation_id, CASE {decision} WHEN 'allow' THEN 'allowed' \
             ELSE 'denied' END AS status FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq > {tail}) t \
             ON t.evaluation_id = r.evaluation_id \
             WHERE r.workspace_id = $1 AND r.evaluation_id >= $2 AND r.evaluation_id < $3"
        ))
        .bind(ws)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut g = Governance {
            lots,
            policies: by_policy,
            statuses,
            rejection_reasons: reasons,
            latencies_micros: latencies,
            ..Default::default()
        };
        for r in &receipts {
            match r.try_get::<i64, _>("conforms")? != 0 {
                true => g.receipts_conforming += 1,
                false => g.receipts_nonconforming += 1,
            }
            let status: Option<String> = r.try_get("status")?;
            if matches!(status.as_deref(), Some("allowed" | "approved")) {
                g.receipts_for_decided += 1;
            }
        }
        Ok(g)
    }
}

/// What [`Store::governance`] reads of a period.
#[derive(Default)]
pub struct Governance {
    /// Grouped by agent and decision, then by hour and decision.
    pub lots: Lots,
    /// Whole hours per policy whose rules matched: `(policy, decision, evaluations)`; the
    /// single lots say their own policies.
    pub policies: Vec<(String, String, i64)>,
    /// The statuses now of the evaluations that asked for approval, with how many.
    pub statuses: Vec<(String, i64)>,
    /// The ten commonest reasons of rejected evaluations, with how many.
    pub rejection_reasons: Vec<(String, i64)>,
    /// From a stage's start to each human decision on it.
    pub latencies_micros: Vec<i64>,
    pub receipts_conforming: i64,
    pub receipts_nonconforming: i64,
    /// Receipts for evaluations that are allowed or approved.
    pub receipts_for_decided: i64,
}

/// Where the workspace's chain tail starts (what the list has caught up to), in a transaction.
async fn tail_seq(tx: &mut sqlx::Transaction<'_, sqlx::Any>, ws: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
            .bind(ws)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or(0),
    )
}

/// How far the workspace's chain is summed into `evaluation_hours`, in a transaction.
async fn summed_seq(tx: &mut sqlx::Transaction<'_, sqlx::Any>, ws: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT seq FROM analytics_heads WHERE workspace_id = $1")
            .bind(ws)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or(0),
    )
}

/// Events summed per transaction by [`Store::sum_hours`].
const SUM_BATCH: i64 = 5000;

impl Store {
    /// Sums what every workspace's chain gained since the last time into `evaluation_hours`,
    /// as far as the evaluation list has caught up (so that a report finds every evaluation
    /// summed in the index too), and answers how many events it read. Several servers may run it at once: each batch
    /// moves its workspace's `analytics_heads.seq` from where it read it, or is undone.
    pub async fn sum_hours(&self) -> Result<i64> {
        let behind: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
            "SELECT h.workspace_id, s.seq, h.indexed_seq FROM audit_heads h \
             LEFT JOIN analytics_heads s ON s.workspace_id = h.workspace_id \
             WHERE s.seq IS NULL OR s.seq < h.indexed_seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let sqlite = self.backend == crate::Backend::Sqlite;
        let (agent, action, cost, decision) = (
            event_field(sqlite, Field::Text, "agent_id"),
            event_field(sqlite, Field::Text, "action"),
            event_field(sqlite, Field::Int, "cost_cents"),
            event_field(sqlite, Field::Text, "decision"),
        );
        let matched = event_field(sqlite, Field::Json, "matched_rules");
        let mut read = 0;
        for (ws, summed, head) in behind {
            if summed.is_none() {
                sqlx::query(
                    "INSERT INTO analytics_heads (workspace_id, seq) VALUES ($1, 0) \
                     ON CONFLICT (workspace_id) DO NOTHING",
                )
                .bind(&ws)
                .execute(&self.pool)
                .await?;
            }
            let mut from = summed.unwrap_or(0);
            while from < head {
                let to = head.min(from + SUM_BATCH);
                // Read outside the write transaction, so that the store's write lock (all of
                // SQLite) is held only for the sums' few rows.
                let rows = sqlx::query(&format!(
                    "SELECT {agent} AS agent_id, {action} AS action, {decision} AS decision, \
                     {cost} AS cost_cents, {matched} AS matched_rules, a.occurred_at \
                     FROM audit_events a \
                     WHERE a.workspace_id = $1 AND a.seq > $2 AND a.seq <= $3 \
                     AND a.type = 'evaluation.created'"
                ))
                .bind(&ws)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
                let mut hours = BTreeMap::<(i64, String, String, String), (i64, i64)>::new();
                let mut policies = BTreeMap::<(i64, String, String), i64>::new();
                for r in &rows {
                    let (hour, decision): (i64, String) =
                        (hour_of(r.try_get("occurred_at")?), r.try_get("decision")?);
                    let matched: Option<String> = r.try_get("matched_rules")?;
                    for policy in crate::rows::matched_policies(matched.as_deref()) {
                        *policies
                            .entry((hour, policy, decision.clone()))
                            .or_default() += 1;
                    }
                    let key = (hour, r.try_get("agent_id")?, r.try_get("action")?, decision);
                    let sums = hours.entry(key).or_default();
                    (sums.0, sums.1) = (sums.0 + 1, sums.1 + r.try_get::<i64, _>("cost_cents")?);
                }
                let mut args = Vec::with_capacity(hours.len() * 7);
                for ((hour, agent, action, decision), (n, cents)) in &hours {
                    args.extend([
                        Arg::from(ws.as_str()),
                        (*hour).into(),
                        agent.into(),
                        action.into(),
                        decision.into(),
                        (*n).into(),
                        (*cents).into(),
                    ]);
                }
                // A write first: it takes the lock (SQLite: waiting its turn, never on a stale
                // snapshot), and moves the head only from where it was read.
                let mut tx = self.pool.begin().await?;
                let moved = sqlx::query(
                    "UPDATE analytics_heads SET seq = $3 WHERE workspace_id = $1 AND seq = $2",
                )
                .bind(&ws)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 0 {
                    // Another server summed these first.
                    tx.rollback().await?;
                    break;
                }
                let head_sql = "INSERT INTO evaluation_hours (workspace_id, hour, agent_id, \
                                action, decision, evaluations, cost_cents)";
                let tail_sql = " ON CONFLICT (workspace_id, hour, agent_id, action, decision) \
                                DO UPDATE SET \
                                evaluations = evaluation_hours.evaluations + excluded.evaluations, \
                                cost_cents = evaluation_hours.cost_cents + excluded.cost_cents";
                insert_rows(&mut *tx, head_sql, tail_sql, 7, &args).await?;
                args.clear();
                for ((hour, policy, decision), n) in &policies {
                    args.extend([
                        Arg::from(ws.as_str()),
                        (*hour).into(),
                        policy.into(),
                        decision.into(),
                        (*n).into(),
                    ]);
                }
                let head_sql = "INSERT INTO policy_hours (workspace_id, hour, policy, decision, \
                                evaluations)";
                let tail_sql = " ON CONFLICT (workspace_id, hour, policy, decision) DO UPDATE \
                                SET evaluations = policy_hours.evaluations + excluded.evaluations";
                insert_rows(&mut *tx, head_sql, tail_sql, 5, &args).await?;
                tx.commit().await?;
                read += to - from;
                from = to;
            }
        }
        Ok(read)
    }
}
