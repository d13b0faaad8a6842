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
