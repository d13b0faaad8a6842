//! Analytics (SPEC §8): what the workspace's agents cost over a period, grouped by agent,
//! action or day. Exact to the cent and to the millisecond at the period's ends, and as fast
//! for a year as for a day: see `agentnexus_store::Store::costs`.

use agentnexus_store::{CostGroup, CostLine};
use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};
use crate::{App, Reader};

/// The longest period one report covers.
pub const MAX_PERIOD_DAYS: i64 = 400;

/// A cost report's request, as sent.
#[derive(Debug, Clone, Default)]
pub struct CostsInput {
    /// RFC 3339; default 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339, excluded; default now.
    pub to: Option<String>,
    /// `agent_id` (default), `action` or `day`.
    pub group_by: Option<String>,
    /// For `day`: `UTC` (default) or an offset of whole hours, `+02:00`, `-05:00`.
    pub tz: Option<String>,
}

/// A cost report.
#[derive(Debug, Clone)]
pub struct Costs {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: &'static str,
    pub total_cents: i64,
    /// Days in order; agents and actions by cost, highest first.
    pub groups: Vec<CostLine>,
}

/// A report's period: `from` and `to` (RFC 3339), by default the 30 days before now.
pub(crate) fn period(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let parse = |field: &str, t: &str| {
        DateTime::parse_from_rfc3339(t.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| Error::field(field, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))
    };
    let to = to.map(|t| parse("to", t)).transpose()?.unwrap_or(now);
    let from = match from {
        Some(f) => parse("from", f)?,
        None => to - Duration::days(30),
    };
    if from >= to {
        return Err(Error::field("from", "must be before `to`"));
    }
    if to - from > Duration::days(MAX_PERIOD_DAYS) {
        return Err(Error::field(
            "from",
            format!("the period may be at most {MAX_PERIOD_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// `UTC`, `Z` or `±HH:00` (whole hours, -12 to +14) as seconds east of UTC.
fn offset(tz: Option<&str>) -> Result<i64> {
    let tz = tz.map(str::trim).unwrap_or("UTC");
    if matches!(tz, "UTC" | "utc" | "Z" | "") {
        return Ok(0);
    }
    let bad = || {
        Error::field(
            "tz",
            "must be UTC or an offset of whole hours from it, e.g. +02:00 or -05:00",
        )
    };
    let (sign, rest) = match tz.as_bytes().first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    if m != "00" || h > 14 || (sign < 0 && h > 12) {
        return Err(bad());
    }
    Ok(sign * h * 3600)
}

impl App {
    /// What the workspace's agents cost over a period, grouped.
    pub async fn costs(&self, reader: &Reader, input: CostsInput) -> Result<Costs> {
        let (from, to) = period(input.from.as_deref(), input.to.as_deref(), self.now())?;
        let (group, group_by) = match input.group_by.as_deref().unwrap_or("agent_id") {
            "agent_id" => (CostGroup::Agent, "agent_id"),
            "action" => (CostGroup::Action, "action"),
            "day" => (
                CostGroup::Day {
                    offset_secs: offset(input.tz.as_deref())?,
                },
                "day",
            ),
            _ => {
                return Err(Error::field("group_by", "must be agent_id, action or day"));
            }
        };
        if input.tz.is_some() && group_by != "day" {
            return Err(Error::field("tz", "applies to group_by=day only"));
        }
        let mut groups = self.store.costs(reader.tenant(), from, to, group).await?;
        if group_by != "day" {
            groups.sort_by(|a, b| b.cost_cents.cmp(&a.cost_cents).then(a.key.cmp(&b.key)));
        }
        Ok(Costs {
            from,
            to,
            group_by,
            total_cents: groups.iter().map(|g| g.cost_cents).sum(),
            groups,
        })
    }
}

/// How many evaluations were decided how when proposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decisions {
    pub allow: i64,
    pub deny: i64,
    pub require_approval: i64,
}

impl Decisions {
    fn add(&mut self, decision: &str, n: i64) {
        match decision {
            "allow" => self.allow += n,
            "deny" => self.deny += n,
            _ => self.require_approval += n,
        }
    }

    pub fn total(&self) -> i64 {
        self.allow + self.deny + self.require_approval
    }
}

/// Evaluations by status as they stand now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statuses {
    pub allowed: i64,
    pub denied: i64,
    pub pending: i64,
    pub approved: i64,
    pub rejected: i64,
    pub expired: i64,
}

/// From a stage's start to a human decision, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

/// One bucket of the series.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub decisions: Decisions,
}

/// The governance report (SPEC §8).
#[derive(Debug, Clone)]
pub struct GovernanceReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: &'static str,
    pub decisions: Decisions,
    pub statuses: Statuses,
    /// approved / (approved + rejected + expired); none before any of those.
    pub approval_rate: Option<f64>,
    pub latency: Latency,
    pub top_rejection_reasons: Vec<(String, i64)>,
    /// Most evaluations first.
    pub by_agent: Vec<(String, Decisions)>,
    /// Per policy whose rules matched (an evaluation counts for each), most first.
    pub by_policy: Vec<(String, Decisions)>,
    pub series: Vec<Bucket>,
    pub receipts_conforming: i64,
    pub receipts_nonconforming: i64,
    /// Allowed or approved evaluations without a receipt.
    pub receipts_missing: i64,
}

/// The longest period an hourly series covers.
pub const MAX_HOURLY_DAYS: i64 = 31;

/// The `q`-quantile of sorted values, nearest rank.
fn quantile(sorted: &[i64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1] as f64 / 1e6)
}

impl App {
    /// How governance performed over a period: decisions, statuses, approvals and how long
    /// people took, per agent and over time, and the execution receipts.
    pub async fn governance(
        &self,
        reader: &Reader,
        from: Option<&str>,
        to: Option<&str>,
        bucket: Option<&str>,
    ) -> Result<GovernanceReport> {
        let (from, to) = period(from, to, self.now())?;
        let (bucket, width) = match bucket.unwrap_or("day") {
            "day" => ("day", Duration::days(1)),
            "hour" => ("hour", Duration::hours(1)),
            _ => return Err(Error::field("bucket", "must be day or hour")),
        };
        if bucket == "hour" && to - from > Duration::days(MAX_HOURLY_DAYS) {
            return Err(Error::field(
                "bucket",
                format!("hour covers at most {MAX_HOURLY_DAYS} days: use day"),
            ));
        }
        let g = self.store.governance(reader.tenant(), from, to).await?;
        let mut decisions = Decisions::default();
        let mut by_agent = std::collections::BTreeMap::<String, Decisions>::new();
        for l in g.lots.summed[0].iter().chain(&g.lots.single) {
            decisions.add(&l.decision, l.n);
            by_agent
                .entry(l.agent.clone())
                .or_default()
                .add(&l.decision, l.n);
        }
        let mut by_policy = std::collections::BTreeMap::<String, Decisions>::new();
        for (policy, decision, n) in &g.policies {
            by_policy
                .entry(policy.clone())
                .or_default()
                .add(decision, *n);
        }
        for l in &g.lots.single {
            for policy in &l.policies {
                by_policy
                    .entry(policy.clone())
                    .or_default()
                    .add(&l.decision, l.n);
            }
        }
        // Buckets from the one holding `from` to the one holding the period's last instant.
        let start = |t: DateTime<Utc>| -> DateTime<Utc> {
            let us = t.timestamp_micros();
            let w = width.num_microseconds().expect("an hour or a day");
            DateTime::from_timestamp_micros(us.div_euclid(w) * w).unwrap_or(t)
        };
        let mut series = Vec::new();
        let mut at = start(from);
        while at < to {
            series.push(Bucket {
                start: at,
                decisions: Decisions::default(),
            });
            at += width;
        }
        for l in g.lots.summed[1].iter().chain(&g.lots.single) {
            let t = DateTime::from_timestamp_micros(l.at).unwrap_or(from);
            let i = ((start(t) - series[0].start).num_microseconds().unwrap_or(0)
                / width.num_microseconds().unwrap_or(1)) as usize;
            if let Some(b) = series.get_mut(i) {
                b.decisions.add(&l.decision, l.n);
            }
        }
        let mut statuses = Statuses {
            allowed: decisions.allow,
            denied: decisions.deny,
            ..Default::default()
        };
        for (status, n) in &g.statuses {
            match status.as_str() {
                "pending" => statuses.pending += n,
                "approved" => statuses.approved += n,
                "rejected" => statuses.rejected += n,
                "expired" => statuses.expired += n,
                _ => {}
            }
        }
        let concluded = statuses.approved + statuses.rejected + statuses.expired;
        let mut latencies = g.latencies_micros;
        latencies.sort_unstable();
        let most_first = |map: std::collections::BTreeMap<String, Decisions>| {
            let mut list: Vec<(String, Decisions)> = map.into_iter().collect();
            list.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
            list
        };
        Ok(GovernanceReport {
            from,
            to,
            bucket,
            decisions,
            statuses,
            approval_rate: (concluded > 0).then(|| statuses.approved as f64 / concluded as f64),
            latency: Latency {
                p50: quantile(&latencies, 0.5),
                p90: quantile(&latencies, 0.9),
                max: latencies.last().map(|m| *m as f64 / 1e6),
            },
            top_rejection_reasons: g.rejection_reasons,
            by_agent: most_first(by_agent),
            by_policy: most_first(by_policy),
            series,
            receipts_conforming: g.receipts_conforming,
            receipts_nonconforming: g.receipts_nonconforming,
            receipts_missing: (statuses.allowed + statuses.approved - g.receipts_for_decided)
                .max(0),
        })
    }
}
