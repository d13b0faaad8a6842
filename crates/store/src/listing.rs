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

use crate::{Evaluation, EvaluationFilter, EvaluationPage, Result, Status, Store, Tenant, micros};

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
    pub(crate) action: String,
    /// The policies whose rules matched it, as a [`set`].
    pub(crate) policies: String,
    pub(crate) status: String,
    /// `allow`, `deny` or `require_approval`: how it was decided when proposed.
    pub(crate) decision: String,
    pub(crate) cost: i64,
    pub(crate) occurred_at: i64,
}

/// Names as `evaluation_index.policies` and `evaluation_batches` keep them: each once, in order,
/// between newlines (`\na\nb\n`; empty for none). No agent id, action or policy name holds a
/// newline (evaluate refuses control characters), so [`member`] of a name is found in a set
/// only where the name is one of its own.
pub(crate) fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
    let mut set = String::new();
    for name in names {
        set.push('\n');
        set.push_str(name);
    }
    if !set.is_empty() {
        set.push('\n');
    }
    set
}

/// What a [`set`] holding `name` contains.
fn member(name: &str) -> String {
    format!("\n{name}\n")
}

/// The names of a [`set`].
fn names(set: &str) -> impl Iterator<Item = &str> {
    set.split('\n').filter(|n| !n.is_empty())
}

/// SQL true where text `column` contains parameter `$n` (`instr`/`strpos`, not `LIKE`, whose
/// `_` would match any character of a name).
fn contains(sqlite: bool, column: &str, n: usize) -> String {
    match sqlite {
        true => format!("instr({column}, ${n}) > 0"),
        false => format!("strpos({column}, ${n}) > 0"),
    }
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
/// each agent's and each status's among them to `evaluation_facets`, their range with the
/// agents, actions and policies in it to `evaluation_batches`, and their costs to
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
    let mut args = Vec::with_capacity(rows.len() * 7);
    for e in &rows {
        args.extend([
            Arg::from(ws),
            (&e.id).into(),
            (&e.agent).into(),
            (&e.status).into(),
            e.seq.into(),
            (&e.action).into(),
            (&e.policies).into(),
        ]);
    }
    let head =
        "INSERT INTO evaluation_index (workspace_id, id, agent_id, status, seq, action, policies)";
    insert_rows(conn, head, " ON CONFLICT DO NOTHING", 7, &args).await?;
    args.clear();
    let ids = rows.iter().map(|e| e.id.as_str());
    if let (Some(lo), Some(hi)) = (ids.clone().min(), ids.max()) {
        // One row for the whole catch-up. Ranges never share a newest id; were one to, its sets
        // would join rather than one replace the other.
        conn.execute(
            "INSERT INTO evaluation_batches (workspace_id, hi_id, lo_id, agents, actions, policies) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, hi_id) DO UPDATE SET \
             lo_id = CASE WHEN excluded.lo_id < evaluation_batches.lo_id \
             THEN excluded.lo_id ELSE evaluation_batches.lo_id END, \
             agents = evaluation_batches.agents || excluded.agents, \
             actions = evaluation_batches.actions || excluded.actions, \
             policies = evaluation_batches.policies || excluded.policies",
            &[
                ws.into(),
                hi.into(),
                lo.into(),
                set(rows.iter().map(|e| e.agent.as_str())).into(),
                set(rows.iter().map(|e| e.action.as_str())).into(),
                set(rows.iter().flat_map(|e| names(&e.policies))).into(),
            ],
        )
        .await?;
    }
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
    let action = event_field(sqlite, Field::Text, "action");
    let matched = event_field(sqlite, Field::Json, "matched_rules");
    let status = event_field(sqlite, Field::Text, "status");
    let cost = event_field(sqlite, Field::Int, "cost_cents");
    let decision = event_field(sqlite, Field::Text, "decision");
    let rows = conn
        .fetch_all(
            &format!(
                "SELECT a.evaluation_id, COALESCE(e.agent_id, {agent}) AS agent_id, \
                 COALESCE(e.status, {status}) AS status, {cost} AS cost_cents, a.occurred_at, \
                 a.seq, {decision} AS decision, {action} AS action, {matched} AS matched_rules \
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
                action: r.text("action")?,
                policies: set(crate::rows::matched_policies(
                    r.opt_text("matched_rules")?.as_deref(),
                )
                .iter()
                .map(String::as_str)),
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

/// The most id ranges one page of a filtered list reads (of up to a catch-up's worth of index
/// rows each, [`INDEX_EVERY`] events), six rounds: at a million evaluations, an agent with an
/// action it never took, in every catch-up, would read 1,000 ranges (180 ms on a two-core
/// machine).
pub(crate) const RANGES_PER_PAGE: usize = 63;

/// Where a filtered list finds its evaluations: id ranges, newest first, each holding every
/// indexed evaluation that passes the filter within it (with others, which reading the range
/// leaves out).
enum Walk {
    /// An agent's or a status's ranges (`evaluation_facets`).
    Facet(String),
    /// The catch-ups whose sets name the filter's action, policy and agent
    /// (`evaluation_batches`): (column, [`member`]).
    Batches(Vec<(&'static str, String)>),
}

impl Walk {
    /// The walks that could serve a filter, none when it names no agent, status, action or
    /// policy. An action or a policy is found through the batches (with the agent, which
    /// they name too); a status through its facet; an agent alone through its facet. Facets
    /// come first, to be taken on a tie: a facet's range spans only its own evaluations of a
    /// catch-up, a batch's all of them.
    fn candidates(filter: &EvaluationFilter) -> Vec<Walk> {
        let mut walks = Vec::new();
        if let Some(status) = filter.status {
            walks.push(Walk::Facet(format!("status:{}", status.as_str())));
        }
        let mut sets = Vec::new();
        if let Some(action) = &filter.action {
            sets.push(("actions", member(action)));
        }
        if let Some(policy) = &filter.policy {
            sets.push(("policies", member(policy)));
        }
        match &filter.agent_id {
            Some(agent) if !sets.is_empty() => sets.push(("agents", member(agent))),
            Some(agent) => walks.push(Walk::Facet(format!("agent:{agent}"))),
            None => {}
        }
        if !sets.is_empty() {
            walks.push(Walk::Batches(sets));
        }
        walks
    }

    /// `FROM … WHERE …` of its ranges, `$1` the workspace, its own parameters from `$2`, which
    /// it answers.
    fn source(&self, sqlite: bool) -> (String, Vec<&str>) {
        match self {
            Walk::Facet(facet) => (
                "FROM evaluation_facets WHERE workspace_id = $1 AND facet = $2".to_owned(),
                vec![facet.as_str()],
            ),
            Walk::Batches(sets) => {
                let mut sql = "FROM evaluation_batches WHERE workspace_id = $1".to_owned();
                for (i, (column, _)) in sets.iter().enumerate() {
                    sql.push_str(" AND ");
                    sql.push_str(&contains(sqlite, column, i + 2));
                }
                (sql, sets.iter().map(|(_, m)| m.as_str()).collect())
            }
        }
    }

    /// The one of `walks` with the fewest ranges to read, counting each when there is a
    /// choice (an index range of a facet; a scan of the batches, one row per catch-up).
    async fn fewest(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        ws: &str,
        sqlite: bool,
        walks: Vec<Walk>,
    ) -> Result<Option<Walk>> {
        if walks.len() < 2 {
            return Ok(walks.into_iter().next());
        }
        let mut best: Option<(i64, Walk)> = None;
        for walk in walks {
            let (source, binds) = walk.source(sqlite);
            let sql = format!("SELECT COUNT(*) {source}");
            let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(ws);
            for b in binds {
                q = q.bind(b);
            }
            let n = q.fetch_one(&mut **tx).await?;
            if best.as_ref().is_none_or(|(least, _)| n < *least) {
                best = Some((n, walk));
            }
        }
        Ok(best.map(|(_, walk)| walk))
    }
}

/// The newest `limit` indexed evaluations that pass the filter, by id: the id ranges of
/// `walk`, newest first, each read from `evaluation_index` by its primary key. Ranges come in
/// order of their newest id, so the walk ends at the first range whose newest id is older than
/// the `limit`-th found. Ranges are read a round at a time in one statement, one range in the
/// first round and twice as many in each next: a common agent's page is found in its first few
/// ranges, a rare one's after many, in few statements.
///
/// A page reads at most [`RANGES_PER_PAGE`] ranges, so no filter makes a page read the whole
/// history (an agent and an action it never took would). Cut short, it answers how far it
/// searched, with what it found there: every evaluation that passes the filter at or past that
/// id is among them, and the next page starts below it.
async fn walk_page(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ws: &str,
    sqlite: bool,
    walk: &Walk,
    filter: &EvaluationFilter,
    limit: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let (source, own) = walk.source(sqlite);
    let policy = filter.policy.as_deref().map(member);
    let mut found: Vec<String> = Vec::new();
    let mut older_than: Option<String> = None;
    let (mut round, mut read) = (1, 0);
    loop {
        // The round's ranges, then the index's rows within each (a range with none still
        // gives a row, so that the walk knows where it is): one statement.
        let mut args: Vec<&str> = own.clone();
        // `$1` is the workspace: the argument just added is `$` its count and one.
        let arg = |args: &[&str], column: &str, op: &str| {
            format!(" AND {column} {op} ${}", args.len() + 1)
        };
        let mut ranges = String::new();
        // Ranges wholly before the period's start end the walk too.
        for (column, op, value) in [
            ("hi_id", "<", older_than.as_deref()),
            ("lo_id", "<", filter.before.as_deref()),
            ("hi_id", ">=", filter.since.as_deref()),
        ] {
            if let Some(v) = value {
                args.push(v);
                ranges.push_str(&arg(&args, column, op));
            }
        }
        let mut within = String::new();
        for (column, op, value) in [
            ("id", "<", filter.before.as_deref()),
            ("id", ">=", filter.since.as_deref()),
            ("agent_id", "=", filter.agent_id.as_deref()),
            ("status", "=", filter.status.map(Status::as_str)),
            ("action", "=", filter.action.as_deref()),
        ] {
            if let Some(v) = value {
                args.push(v);
                within.push_str(&arg(&args, column, op));
            }
        }
        if let Some(policy) = &policy {
            args.push(policy);
            within.push_str(" AND ");
            within.push_str(&contains(sqlite, "policies", args.len() + 1));
        }
        let ranges = format!(
            "(SELECT lo_id, hi_id {source}{ranges} ORDER BY hi_id DESC LIMIT {round}) AS r"
        );
        // SQLite reads a join's right side per row of its left. PostgreSQL is told to: the
        // lateral subquery is kept whole by `OFFSET 0` (flattened, it was planned as a scan of
        // every evaluation with the action, 130 ms at a million).
        let sql = match sqlite {
            true => format!(
                "SELECT r.hi_id, i.id FROM {ranges} LEFT JOIN evaluation_index AS i \
                 ON i.workspace_id = $1 AND i.id >= r.lo_id AND i.id <= r.hi_id{within}"
            ),
            false => format!(
                "SELECT r.hi_id, i.id FROM {ranges} LEFT JOIN LATERAL (SELECT id \
                 FROM evaluation_index WHERE workspace_id = $1 AND id >= r.lo_id \
                 AND id <= r.hi_id{within} OFFSET 0) AS i ON TRUE"
            ),
        };
        let mut query = sqlx::query(&sql).bind(ws);
        for a in &args {
            query = query.bind(*a);
        }
        let mut his = std::collections::BTreeSet::new();
        for row in query.fetch_all(&mut **tx).await? {
            his.insert(row.try_get::<String, _>("hi_id")?);
            if let Some(id) = row.try_get::<Option<String>, _>("id")? {
                found.push(id);
            }
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        found.truncate(limit);
        read += his.len();
        // Every range whose newest id is `last` or newer is read.
        let Some(last) = his.pop_first() else {
            return Ok((found, None));
        };
        // Ranges not read are all older than `last`: none holds one of the newest `limit`.
        if his.len() + 1 < round || (found.len() >= limit && last <= found[limit - 1]) {
            return Ok((found, None));
        }
        if read >= RANGES_PER_PAGE {
            // What passes at or past `last` is all found; older ones found may have peers in
            // ranges not read.
            found.retain(|id| *id >= last);
            return Ok((found, Some(last)));
        }
        older_than = Some(last);
        round = (round * 2).min(RANGES_PER_PAGE - read);
    }
}

/// Whether a rule of `policy` matched the evaluation.
fn matched(e: &Evaluation, policy: &str) -> bool {
    e.matched_rules
        .as_array()
        .is_some_and(|rules| rules.iter().any(|r| r["policy"] == policy))
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
    /// both give the same answer. Every statement reads one snapshot. A page filtered by
    /// agent, status, action or policy searches at most [`RANGES_PER_PAGE`] ranges of the index
    /// and may come back short, saying how far it searched.
    pub async fn evaluations(
        &self,
        tenant: &Tenant,
        filter: &EvaluationFilter,
    ) -> Result<EvaluationPage> {
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
        if let Some(a) = &filter.action {
            clause("action", "=", a);
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
            // A walk's join is estimated (not knowing its ranges) at far more than it reads,
            // enough for PostgreSQL to compile it first: 140 ms for a 5 ms statement.
            sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        }
        let ws = tenant.workspace_id();
        let sqlite = self.backend == crate::Backend::Sqlite;
        // The index's page: by its primary key, or found through facets or batches when
        // filtered.
        let (found, searched_to);
        let walk = Walk::fewest(&mut tx, ws, sqlite, Walk::candidates(filter)).await?;
        let page = if let Some(walk) = walk {
            (found, searched_to) =
                walk_page(&mut tx, ws, sqlite, &walk, filter, limit as usize).await?;
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
            searched_to = None;
            format!(
                "SELECT id, seq FROM (SELECT id, seq FROM evaluation_index \
                 WHERE workspace_id = $1{filters} ORDER BY id DESC LIMIT {limit}) AS page"
            )
        };
        let events = event_columns(sqlite);
        // The statement's text differs with every page anyway: the tail's start goes in as
        // text (an integer read from the store).
        let tail: i64 =
            sqlx::query_scalar("SELECT indexed_seq FROM audit_heads WHERE workspace_id = $1")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        // The candidates (the index's page and the chain's tail), then each read from its row
        // or, final at once, from its event; the filters again on what was read (the policy
        // once read: the tail's candidates are all kept until then, at most a catch-up's
        // worth besides the page).
        let cap = match filter.policy {
            None => format!(" LIMIT {limit}"),
            Some(_) => String::new(),
        };
        let sql = format!(
            "WITH listed AS ({page} \
             UNION ALL SELECT evaluation_id, seq FROM audit_events WHERE workspace_id = $1 \
             AND type = 'evaluation.created' AND seq > {tail}) \
             SELECT * FROM (SELECT {EVALUATION_COLUMNS} FROM evaluations \
             WHERE workspace_id = $1 AND id IN (SELECT id FROM listed) \
             UNION ALL SELECT {events} FROM audit_events a WHERE a.workspace_id = $1 \
             AND a.type = 'evaluation.created' AND a.seq IN (SELECT seq FROM listed) \
             AND NOT EXISTS (SELECT 1 FROM evaluations e WHERE e.id = a.evaluation_id)) AS ev \
             WHERE 1 = 1{filters} ORDER BY id DESC{cap}"
        );
        let mut q = sqlx::query(&sql).bind(ws);
        for b in &binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut page = Vec::with_capacity(rows.len().min(limit as usize));
        for row in &rows {
            let e = evaluation_from_row(row)?;
            if filter.policy.as_ref().is_none_or(|p| matched(&e, p)) {
                page.push(e);
            }
        }
        page.truncate(limit as usize);
        Ok(EvaluationPage {
            evaluations: page,
            searched_to,
        })
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
