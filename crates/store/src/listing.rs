//! The list of a workspace's evaluations, kept beside its audit chain: `evaluation_index`
//! (each evaluation's id, agent, status and creation seq), `evaluation_facets` (id ranges per
//! agent and per status, which filtered lists walk), `agent_costs` (cost per agent and UTC
//! day, which `spend` adds up) and `agents` (the inventory: when each agent was first and last
//! seen, and how often). It is caught up in bulk, [`INDEX_EVERY`] events at a time, and
//! only by the group-commit writer in its own transaction (from memory when it can) or by
//! [`Store::catch_up_lists`], the maintenance step servers run: no other transaction (an
//! approval, a delivery) ever pays for it. What the list has not caught up with is read from
//! the chain's tail.

use chrono::{DateTime, Datelike, Utc};
use sqlx::Row;

use crate::audit::{Chain, insert_rows};
use crate::exec::{Arg, Exec};
use crate::rows::{EVALUATION_COLUMNS, Field, evaluation_from_row, event_columns, event_field};
use agentnexus_engine::Spend;

use crate::{Evaluation, EvaluationFilter, Result, Status, Store, Tenant, micros};

/// How far the chain may run ahead of `evaluation_index` before the list catches up.
/// Every commit used to write an index leaf per distinct agent and status; caught up in bulk,
/// a leaf takes many entries at once. Lists read at most this many tail events besides.
pub(crate) const INDEX_EVERY: i64 = 128;

/// The UTC day an amount is attributed to.
pub(crate) fn day(t: DateTime<Utc>) -> String {
    // `%Y-%m-%d`, without parsing a format string for every evaluation a catch-up adds up.
    t.date_naive().to_string()
}

/// One hour in microseconds, the chain's unit of time.
pub(crate) const HOUR: i64 = 3_600_000_000;

/// The start of the UTC hour of a time in microseconds.
pub(crate) fn hour_of(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

/// The first microsecond of a UTC day, as the chain stores times.
fn day_start(d: chrono::NaiveDate) -> i64 {
    micros(d.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// What the list index and cost attribution need of one evaluation.
pub(crate) struct Indexed {
    pub(crate) id: String,
    /// Its `evaluation.created` event's.
    pub(crate) seq: i64,
    pub(crate) agent: String,
    pub(crate) status: String,
    /// `allow`, `deny` or `require_approval`: how it was decided when proposed.
    pub(crate) decision: String,
    pub(crate) cost: i64,
    pub(crate) occurred_at: i64,
}

/// What the group-commit writer remembers of each workspace's chain between its transactions:
/// the evaluations it created past `indexed_seq`, so that catching up writes them from memory
/// instead of reading them back from the chain (which cost more than writing them). It holds
/// only while the chain has grown by this writer alone: the head must still be where the
/// writer left it (`seq`, `indexed`), else the chain is read back. Emptied whenever a
/// transaction fails.
#[derive(Default)]
pub(crate) struct Memory(std::collections::HashMap<String, Remembered>);

struct Remembered {
    seq: i64,
    indexed: i64,
    evaluations: Vec<Indexed>,
}

impl Memory {
    pub(crate) fn forget(&mut self) {
        self.0.clear();
    }
}

/// What a transaction knows of the evaluations created past a chain's `indexed_seq`: all of
/// them (from the writer's memory and what it created since), or `None`, when the next
/// catch-up must read them back from the chain.
pub(crate) struct Tracker {
    known: Option<Vec<Indexed>>,
}

impl Tracker {
    /// For a chain the writer just locked, taking up what `memory` holds of it if it still
    /// holds.
    pub(crate) fn for_chain(chain: &Chain, memory: &mut Memory) -> Tracker {
        let remembered = memory
            .0
            .remove(chain.workspace_id())
            .filter(|r| (r.seq, r.indexed) == (chain.seq(), chain.indexed()));
        Tracker {
            known: match remembered {
                Some(r) => Some(r.evaluations),
                None => (chain.seq() == chain.indexed()).then(Vec::new),
            },
        }
    }

    /// One that knows nothing: the catch-up reads the chain back.
    pub(crate) fn unknown() -> Tracker {
        Tracker { known: None }
    }

    /// Notes an evaluation just appended, for the next catch-up. A pending one's status will
    /// change: the catch-up then reads the chain back, with each row's status as it stands.
    pub(crate) fn created(&mut self, evaluation: Indexed) {
        if evaluation.status == crate::Status::Pending.as_str() {
            self.known = None;
        }
        if let Some(known) = &mut self.known {
            known.push(evaluation);
        }
    }

    /// Hands what it knows back to `memory`, after the chain is saved; the caller keeps
    /// `memory` only if the transaction then commits.
    pub(crate) fn remember(self, chain: &Chain, memory: &mut Memory) {
        if let Some(evaluations) = self.known {
            let r = Remembered {
                seq: chain.seq(),
                indexed: chain.indexed(),
                evaluations,
            };
            memory.0.insert(chain.workspace_id().to_owned(), r);
        }
    }
}

/// Catches the list up with the chain when it has run [`INDEX_EVERY`] events past it; call
/// after the chain is saved, in the same transaction.
pub(crate) async fn catch_up_if_due(
    conn: &mut impl Exec,
    chain: &mut Chain,
    tracker: &mut Tracker,
) -> Result<()> {
    if chain.seq() - chain.indexed() >= INDEX_EVERY {
        catch_up(conn, chain, tracker).await?;
        chain.caught_up();
    }
    Ok(())
}

/// Adds the evaluations created since the chain's `indexed` to `evaluation_index`, the id range of
/// each agent's and each status's among them to `evaluation_facets`, and their costs to
/// `agent_costs` (a row per agent and day per catch-up, where it was one per commit). A pending evaluation's
/// row is written by now (the writer writes rows before events) and its status may have
/// moved on; one final at once has only its event.
async fn catch_up(conn: &mut impl Exec, chain: &Chain, tracker: &mut Tracker) -> Result<()> {
    let rows = match tracker.known.take() {
        Some(known) => known,
        None => read_back(conn, chain.workspace_id(), chain.indexed()).await?,
    };
    tracker.known = Some(Vec::new());
    let mut costs = std::collections::BTreeMap::<(&str, String), (i64, i64)>::new();
    let mut facets = std::collections::BTreeMap::<String, (&str, &str)>::new();
    let mut decisions = std::collections::BTreeMap::<(String, &str), i64>::new();
    let mut agents = std::collections::BTreeMap::<&str, (i64, i64, i64)>::new();
    for e in &rows {
        let seen = agents
            .entry(&e.agent)
            .or_insert((e.occurred_at, e.occurred_at, 0));
        (seen.0, seen.1, seen.2) = (
            seen.0.min(e.occurred_at),
            seen.1.max(e.occurred_at),
            seen.2 + 1,
        );
        let day = day(crate::from_micros(e.occurred_at));
        *decisions.entry((day.clone(), &e.decision)).or_default() += 1;
        let cost = costs.entry((&e.agent, day)).or_default();
        cost.0 += e.cost;
        cost.1 += 1;
        for facet in [format!("agent:{}", e.agent), format!("status:{}", e.status)] {
            let (lo, hi) = facets.entry(facet).or_insert((&e.id, &e.id));
            *lo = (*lo).min(e.id.as_str());
            *hi = (*hi).max(e.id.as_str());
        }
    }
    let ws = chain.workspace_id();
    let mut args = Vec::with_capacity(rows.len() * 5);
    for e in &rows {
        args.extend([
            Arg::from(ws),
            (&e.id).into(),
            (&e.agent).into(),
            (&e.status).into(),
            e.seq.into(),
        ]);
    }
    let head = "INSERT INTO evaluation_index (workspace_id, id, agent_id, status, seq)";
    insert_rows(conn, head, " ON CONFLICT DO NOTHING", 5, &args).await?;
    args.clear();
    for (facet, (lo, hi)) in &facets {
        args.extend([Arg::from(ws), facet.into(), (*lo).into(), (*hi).into()]);
    }
    // A range already ending at the same id (a status change's range of one) widens.
    let head = "INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)";
    let tail = " ON CONFLICT (workspace_id, facet, hi_id) DO UPDATE SET \
                    lo_id = CASE WHEN excluded.lo_id < evaluation_facets.lo_id \
                    THEN excluded.lo_id ELSE evaluation_facets.lo_id END";
    insert_rows(conn, head, tail, 4, &args).await?;
    // Every evaluation's cost counts for its agent on its UTC day, whatever its decision.
    args.clear();
    for ((agent, day), (cents, n)) in &costs {
        args.extend([
            Arg::from(ws),
            (*agent).into(),
            day.into(),
            (*cents).into(),
            (*n).into(),
        ]);
    }
    let head = "INSERT INTO agent_costs (workspace_id, agent_id, day, cents, evaluations)";
    let tail = " ON CONFLICT (workspace_id, agent_id, day) DO UPDATE SET \
                    cents = agent_costs.cents + excluded.cents, \
                    evaluations = agent_costs.evaluations + excluded.evaluations";
    insert_rows(conn, head, tail, 5, &args).await?;
    args.clear();
    for ((day, decision), n) in &decisions {
        args.extend([Arg::from(ws), day.into(), (*decision).into(), (*n).into()]);
    }
    let head = "INSERT INTO decision_counts (workspace_id, day, decision, evaluations)";
    let tail = " ON CONFLICT (workspace_id, day, decision) DO UPDATE SET \
                    evaluations = decision_counts.evaluations + excluded.evaluations";
    insert_rows(conn, head, tail, 4, &args).await?;
    // The inventory: every agent seen, when first and last, and how often.
    args.clear();
    for (agent, (first, last, n)) in &agents {
        args.extend([
            Arg::from(ws),
            (*agent).into(),
            (*first).into(),
            (*last).into(),
            (*n).into(),
        ]);
    }
    let head = "INSERT INTO agents (workspace_id, agent_id, first_seen, last_seen, evaluations)";
    let tail = " ON CONFLICT (workspace_id, agent_id) DO UPDATE SET \
                    first_seen = CASE WHEN agents.first_seen IS NULL \
                    OR excluded.first_seen < agents.first_seen \
                    THEN excluded.first_seen ELSE agents.first_seen END, \
                    last_seen = CASE WHEN agents.last_seen IS NULL \
                    OR excluded.last_seen > agents.last_seen \
                    THEN excluded.last_seen ELSE agents.last_seen END, \
                    evaluations = agents.evaluations + excluded.evaluations";
    insert_rows(conn, head, tail, 5, &args).await?;
    conn.execute(
        "UPDATE audit_heads SET indexed_seq = $2 WHERE workspace_id = $1",
        &[ws.into(), chain.seq().into()],
    )
    .await?;
    Ok(())
}

/// Every evaluation created in a workspace past `indexed`, read back from the chain.
async fn read_back(conn: &mut impl Exec, workspace_id: &str, indexed: i64) -> Result<Vec<Indexed>> {
    let sqlite = conn.is_sqlite();
    let agent = event_field(sqlite, Field::Text, "agent_id");
    let status = event_field(sqlite, Field::Text, "status");
    let cost = event_field(sqlite, Field::Int, "cost_cents");
    let decision = event_field(sqlite, Field::Text, "decision");
    let rows = conn
        .fetch_all(
            &format!(
                "SELECT a.evaluation_id, COALESCE(e.agent_id, {agent}) AS agent_id, \
                 COALESCE(e.status, {status}) AS status, {cost} AS cost_cents, a.occurred_at, \
                 a.seq, {decision} AS decision \
                     FROM audit_events a LEFT JOIN evaluations e ON e.id = a.evaluation_id \
                     WHERE a.workspace_id = $1 AND a.seq > $2 AND a.type = 'evaluation.created'"
            ),
            &[workspace_id.into(), indexed.into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Indexed {
                id: r.text("evaluation_id")?,
                seq: r.int("seq")?,
                agent: r.text("agent_id")?,
                status: r.text("status")?,
                decision: r.text("decision")?,
                cost: r.int("cost_cents")?,
                occurred_at: r.int("occurred_at")?,
            })
        })
        .collect()
}

/// The seq of evaluation `$1`'s `evaluation.created` event in workspace `$2`: kept with the
/// evaluation in `evaluation_index`, or found in the chain's tail (at most a catch-up's worth of
/// events) when the index has not caught up with it; `$3` is [`Store::tail_from`].
/// `audit_events_by_evaluation` leaves creations out.
pub(crate) const CREATED_SEQ: &str = "SELECT seq FROM evaluation_index \
    WHERE workspace_id = $2 AND id = $1 \
    UNION ALL SELECT seq FROM audit_events WHERE workspace_id = $2 AND seq > $3 \
    AND seq > (SELECT indexed_seq FROM audit_heads WHERE workspace_id = $2) \
    AND type = 'evaluation.created' AND evaluation_id = $1";

/// The facet a filtered list walks: its agent's, else its status's; none unfiltered.
fn facet(filter: &EvaluationFilter) -> Option<String> {
    match (&filter.agent_id, filter.status) {
        (Some(agent), _) => Some(format!("agent:{agent}")),
        (None, Some(status)) => Some(format!("status:{}", status.as_str())),
        (None, None) => None,
    }
}

/// The newest `limit` indexed evaluations that pass the filter, by id: the id ranges of
/// `facet`, newest first, each read from `evaluation_index` by its primary key. Ranges come in
/// order of their newest id, so the walk ends at the first range whose newest id is older than
/// the `limit`-th found.
async fn facet_page(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ws: &str,
    facet: &str,
    filter: &EvaluationFilter,
    limit: usize,
) -> Result<Vec<String>> {
    const RANGES_PER_READ: i64 = 16;
    // What each range is read with: bounds, then the filters.
    let mut within = String::from(
        "SELECT id FROM evaluation_index WHERE workspace_id = $1 AND id >= $2 AND id <= $3",
    );
    let mut binds: Vec<&str> = Vec::new();
    for (column, op, value) in [
        ("id", "<", filter.before.as_deref()),
        ("id", ">=", filter.since.as_deref()),
        ("agent_id", "=", filter.agent_id.as_deref()),
        ("status", "=", filter.status.map(Status::as_str)),
    ] {
        if let Some(v) = value {
            binds.push(v);
            within.push_str(&format!(" AND {column} {op} ${}", binds.len() + 3));
        }
    }
    let mut found: Vec<String> = Vec::new();
    let mut older_than: Option<String> = None;
    loop {
        let mut q = String::from(
            "SELECT lo_id, hi_id FROM evaluation_facets WHERE workspace_id = $1 AND facet = $2",
        );
        let mut n = 2;
        // Ranges wholly before the period's start end the walk too.
        for (column, op, value) in [
            ("hi_id", "<", &older_than),
            ("lo_id", "<", &filter.before),
            ("hi_id", ">=", &filter.since),
        ] {
            if value.is_some() {
                n += 1;
                q.push_str(&format!(" AND {column} {op} ${n}"));
            }
        }
        q.push_str(&format!(" ORDER BY hi_id DESC LIMIT {RANGES_PER_READ}"));
        let mut query = sqlx::query(&q).bind(ws).bind(facet);
        for value in [&older_than, &filter.before, &filter.since]
            .into_iter()
            .flatten()
        {
            query = query.bind(value.as_str());
        }
        let ranges = query.fetch_all(&mut **tx).await?;
        for range in &ranges {
            let (lo, hi): (String, String) = (range.try_get("lo_id")?, range.try_get("hi_id")?);
            if found.len() >= limit && hi < found[limit - 1] {
                return Ok(found);
            }
            let mut query = sqlx::query(&within).bind(ws).bind(&lo).bind(&hi);
            for b in &binds {
                query = query.bind(*b);
            }
            for row in query.fetch_all(&mut **tx).await? {
                found.push(row.try_get("id")?);
            }
            found.sort_unstable_by(|a, b| b.cmp(a));
            found.dedup();
            found.truncate(limit);
            older_than = Some(hi);
        }
        if (ranges.len() as i64) < RANGES_PER_READ {
            return Ok(found);
        }
    }
}

impl Store {
    /// Where a workspace's chain tail starts, as last read: the seq its list has caught up
    /// to. Queries of the tail bind it besides reading it again themselves
    /// (`seq > $n AND seq > (SELECT indexed_seq …)`): PostgreSQL, not knowing a subquery's
    /// value, takes `seq > (SELECT …)` for a third of the chain and scans all of it once its
    /// statistics are in (hundreds of milliseconds at a million events), while a value it
    /// knows makes it the short range scan it is; the statement's own read keeps the answer
    /// exact when a catch-up lands in between.
    pub(crate) async fn tail_from(&self, tenant: &Tenant) -> Result<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
                .bind(tenant.workspace_id())
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Evaluations newest first, filtered; stages are not loaded.
    ///
    /// They are found in `evaluation_index` (through `evaluation_facets` when filtered) and,
    /// for the newest few that the index has not caught up with, in the tail of the
    /// workspace's audit chain; the filters are applied to the evaluations themselves too, so
    /// both give the same answer. Every statement reads one snapshot.
    pub async fn evaluations(
        &self,
        tenant: &Tenant,
        filter: &EvaluationFilter,
    ) -> Result<Vec<Evaluation>> {
        let mut filters = String::new();
        let mut binds: Vec<&str> = Vec::new();
        let mut clause = |column: &str, op: &str, value| {
            binds.push(value);
            filters.push_str(&format!(" AND {column} {op} ${}", binds.len() + 1));
        };
        if let Some(s) = filter.status {
            clause("status", "=", s.as_str());
        }
        if let Some(a) = &filter.agent_id {
            clause("agent_id", "=", a);
        }
        if let Some(b) = &filter.before {
            clause("id", "<", b);
        }
        if let Some(s) = &filter.since {
            clause("id", ">=", s);
        }
        let limit = filter.limit.clamp(1, 500);
        let mut tx = self.pool.begin().await?;
        if self.backend == crate::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let ws = tenant.workspace_id();
        // The index's page: by its primary key, or found through the facets when filtered.
        let found;
        let page = if let Some(facet) = facet(filter) {
            found = facet_page(&mut tx, ws, &facet, filter, limit as usize).await?;
            let first = binds.len() + 2;
            let ids: Vec<String> = (first..first + found.len())
                .map(|i| format!("${i}"))
                .collect();
            binds.extend(found.iter().map(String::as_str));
            // The filters again, so parameters appear in the order of their numbers.
            match ids.is_empty() {
                true => "SELECT id, seq FROM evaluation_index WHERE 1 = 0".to_owned(),
                false => format!(
                    "SELECT id, seq FROM evaluation_index WHERE workspace_id = $1{filters} \
                     AND id IN ({})",
                    ids.join(", ")
                ),
            }
        } else {
            format!(
                "SELECT id, seq FROM (SELECT id, seq FROM evaluation_index \
                 WHERE workspace_id = $1{filters} ORDER BY id DESC LIMIT {limit}) AS page"
            )
        };
        let events = event_columns(self.backend == crate::Backend::Sqlite);
        // The statement's text differs with every page anyway: the tail's start goes in as
        // text (an integer read from the store).
        let tail: i64 =
            sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        // The candidates (the index's page and the chain's tail), then each read from its row
        // or, final at once, from its event; the filters again on what was read.
        let sql = format!(
            "WITH listed AS ({page} \
             UNION ALL SELECT evaluation_id, seq FROM audit_events WHERE workspace_id = $1 \
             AND type = 'evaluation.created' AND seq > {tail}) \
             SELECT * FROM (SELECT {EVALUATION_COLUMNS} FROM evaluations \
             WHERE workspace_id = $1 AND id IN (SELECT id FROM listed) \
             UNION ALL SELECT {events} FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq IN (SELECT seq FROM listed) \
             AND NOT EXISTS (SELECT 1 FROM evaluations e WHERE e.id = a.evaluation_id)) AS ev \
             WHERE 1 = 1{filters} ORDER BY id DESC LIMIT {limit}"
        );
        let mut q = sqlx::query(&sql).bind(ws);
        for b in &binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(evaluation_from_row).collect()
    }

    /// An agent's attributed cost today and this month (UTC), before the current proposal.
    pub async fn spend(
        &self,
        tenant: &Tenant,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Spend> {
        let month_start = now.date_naive().with_day(1).unwrap_or(now.date_naive());
        let sqlite = self.backend == crate::Backend::Sqlite;
        let (agent, cost) = (
            event_field(sqlite, Field::Text, "agent_id"),
            event_field(sqlite, Field::Int, "cost_cents"),
        );
        // What the index has added up, and the chain's tail it has not, in one statement.
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN today THEN cents ELSE 0 END), 0) AS BIGINT) \
             AS today_cents, CAST(COALESCE(SUM(cents), 0) AS BIGINT) AS month_cents FROM ( \
             SELECT cents, day = $3 AS today FROM agent_costs \
             WHERE workspace_id = $1 AND agent_id = $2 AND day >= $4 \
             UNION ALL SELECT {cost}, a.occurred_at >= $5 FROM audit_events a \
             WHERE a.workspace_id = $1 AND a.type = 'evaluation.created' AND a.seq > $7 \
             AND a.seq > (SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1) \
             AND a.occurred_at >= $6 AND {agent} = $2) AS c"
        ))
        .bind(tenant.workspace_id())
        .bind(agent_id)
        .bind(day(now))
        .bind(month_start.format("%Y-%m-%d").to_string())
        .bind(day_start(now.date_naive()))
        .bind(day_start(month_start))
        .bind(self.tail_from(tenant).await?)
        .fetch_one(&self.pool)
        .await?;
        Ok(Spend {
            today_cents: row.try_get("today_cents")?,
            month_cents: row.try_get("month_cents")?,
        })
    }

    /// How the workspace's evaluations of the UTC day of `now` were decided when proposed:
    /// (`allow` | `deny` | `require_approval`, how many), from `decision_counts` and the
    /// chain's tail the list has not caught up with.
    pub async fn decisions_today(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        let sqlite = self.backend == crate::Backend::Sqlite;
        let decision = event_field(sqlite, Field::Text, "decision");
        let start = day_start(now.date_naive());
        let rows = sqlx::query(&format!(
            "SELECT decision, CAST(SUM(n) AS BIGINT) AS n FROM ( \
             SELECT decision, evaluations AS n FROM decision_counts \
             WHERE workspace_id = $1 AND day = $2 \
             UNION ALL SELECT {decision}, 1 FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq > $4 \
             AND a.seq > (SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1) \
             AND a.occurred_at >= $3) AS d GROUP BY decision ORDER BY decision"
        ))
        .bind(tenant.workspace_id())
        .bind(day(now))
        .bind(start)
        .bind(self.tail_from(tenant).await?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("decision")?, r.try_get("n")?)))
            .collect()
    }

    /// What the workspace's agents cost on the UTC day of `now`.
    pub async fn spend_today(&self, tenant: &Tenant, now: DateTime<Utc>) -> Result<i64> {
        let sqlite = self.backend == crate::Backend::Sqlite;
        let cost = event_field(sqlite, Field::Int, "cost_cents");
        let start = day_start(now.date_naive());
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(cents), 0) AS BIGINT) AS cents FROM ( \
             SELECT cents FROM agent_costs WHERE workspace_id = $1 AND day = $2 \
             UNION ALL SELECT {cost} FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq > $4 \
             AND a.seq > (SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1) \
             AND a.occurred_at >= $3) AS c"
        ))
        .bind(tenant.workspace_id())
        .bind(day(now))
        .bind(start)
        .bind(self.tail_from(tenant).await?)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("cents")?)
    }

    /// Catches up the list of every workspace whose chain has grown [`INDEX_EVERY`] events
    /// past it without the writer (approvals, deliveries and deadlines append too): the
    /// maintenance step a server runs every `AGENTNEXUS_REFRESH_SECS`. Answers how many lists
    /// it caught up.
    pub async fn catch_up_lists(&self) -> Result<usize> {
        let behind: Vec<String> = sqlx::query_scalar(
            "SELECT workspace_id FROM audit_heads WHERE seq - indexed_seq >= $1",
        )
        .bind(INDEX_EVERY)
        .fetch_all(&self.pool)
        .await?;
        for ws in &behind {
            let tenant = Tenant::new(ws.clone());
            self.audited(&tenant, async |tx, chain| {
                catch_up_if_due(tx, chain, &mut Tracker::unknown()).await
            })
            .await?;
        }
        Ok(behind.len())
    }
}
