//! The reports page: how governance performed over a period and what the agents cost, from
//! the same use cases as `GET /api/v1/analytics/*`, with the daily series drawn as SVG on
//! the server (no script needed).

use std::sync::Arc;

use agentnexus_app::App;
use agentnexus_app::analytics::{CostsInput, GovernanceReport};
use agentnexus_app::render::money;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Nav, Session, error_page, render};

/// The chart's drawing area, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;

#[derive(Deserialize, Default)]
pub struct DaysQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl DaysQuery {
    /// The period the form names as RFC 3339 times: from the first day's start to the end of
    /// the last (UTC); an empty day is the use case's default.
    pub(super) fn period(&self) -> agentnexus_app::Result<(Option<String>, Option<String>)> {
        Ok((day("from", &self.from, 0)?, day("to", &self.to, 1)?))
    }
}

fn day(field: &str, text: &str, after: i64) -> agentnexus_app::Result<Option<String>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| agentnexus_app::Error::field(field, "must be a day, e.g. 2026-12-01"))?;
    Ok(Some(format!(
        "{}T00:00:00Z",
        d + chrono::Duration::days(after)
    )))
}

/// One day's bar: its segments from the bottom, and what it says to a screen reader.
struct Bar {
    x: f64,
    width: f64,
    segments: Vec<(&'static str, f64, f64)>,
    title: String,
}

struct Row {
    name: String,
    evaluations: i64,
    allow: i64,
    deny: i64,
    approval: i64,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    title: &'static str,
    nav: Option<Nav>,
    from_day: String,
    to_day: String,
    evaluations: i64,
    approval_rate: String,
    latency: String,
    statuses: Vec<(&'static str, i64)>,
    receipts: (i64, i64, i64),
    bars: Vec<Bar>,
    chart_max: i64,
    reasons: Vec<(String, i64)>,
    agents: Vec<Row>,
    policies: Vec<Row>,
    total_cost: String,
    costs: Vec<(String, String, i64)>,
}

fn rows(list: &[(String, agentnexus_app::analytics::Decisions)]) -> Vec<Row> {
    list.iter()
        .map(|(name, d)| Row {
            name: name.clone(),
            evaluations: d.total(),
            allow: d.allow,
            deny: d.deny,
            approval: d.require_approval,
        })
        .collect()
}

/// The daily series as stacked bars scaled to the busiest day.
fn bars(report: &GovernanceReport) -> (Vec<Bar>, i64) {
    let max = report
        .series
        .iter()
        .map(|b| b.decisions.total())
        .max()
        .unwrap_or(0);
    let n = report.series.len().max(1) as f64;
    let width = WIDTH / n;
    let scale = if max > 0 { HEIGHT / max as f64 } else { 0.0 };
    let bars = report
        .series
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let d = &b.decisions;
            let mut y = HEIGHT;
            let mut segments = Vec::new();
            for (class, n) in [
                ("allow", d.allow),
                ("deny", d.deny),
                ("approval", d.require_approval),
            ] {
                let h = n as f64 * scale;
                if n > 0 {
                    y -= h;
                    segments.push((class, y, h));
                }
            }
            Bar {
                x: i as f64 * width,
                width: (width - 1.0).max(0.5),
                segments,
                title: format!(
                    "{}: {} allowed, {} denied, {} for approval",
                    b.start.format("%Y-%m-%d"),
                    d.allow,
                    d.deny,
                    d.require_approval
                ),
            }
        })
        .collect();
    (bars, max)
}

pub async fn reports(
    State(app): State<Arc<App>>,
    Session(signed): Session,
    q: Result<Query<DaysQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = q.unwrap_or_default();
    let nav = Nav::of(&signed, "/reports");
    let reader = signed.reader();
    let (from, to) = match q.period() {
        Ok(p) => p,
        Err(e) => return error_page(Some(nav), e),
    };
    let costs = CostsInput {
        from: from.clone(),
        to: to.clone(),
        group_by: Some("agent_id".into()),
        tz: None,
    };
    let loaded = tokio::try_join!(
        app.governance(&reader, from.as_deref(), to.as_deref(), Some("day")),
        app.costs(&reader, costs),
        app.currency(signed.tenant())
    );
    let (report, costs, currency) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(Some(nav), e),
    };
    let seconds = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0} s"));
    let s = &report.statuses;
    let (bars, chart_max) = bars(&report);
    render(
        StatusCode::OK,
        &ReportsPage {
            title: "Reports",
            nav: Some(nav),
            from_day: report.from.format("%Y-%m-%d").to_string(),
            to_day: (report.to - chrono::Duration::microseconds(1))
                .format("%Y-%m-%d")
                .to_string(),
            evaluations: report.decisions.total(),
            approval_rate: report
                .approval_rate
                .map_or("—".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            latency: format!(
                "p50 {} · p90 {} · max {}",
                seconds(report.latency.p50),
                seconds(report.latency.p90),
                seconds(report.latency.max)
            ),
            statuses: vec![
                ("allowed", s.allowed),
                ("denied", s.denied),
                ("pending", s.pending),
                ("approved", s.approved),
                ("rejected", s.rejected),
                ("expired", s.expired),
            ],
            receipts: (
                report.receipts_conforming,
                report.receipts_nonconforming,
                report.receipts_missing,
            ),
            bars,
            chart_max,
            reasons: report.top_rejection_reasons.clone(),
            agents: rows(&report.by_agent),
            policies: rows(&report.by_policy),
            total_cost: money(costs.total_cents, &currency),
            costs: costs
                .groups
                .iter()
                .map(|g| (g.key.clone(), money(g.cost_cents, &currency), g.evaluations))
                .collect(),
        },
    )
}
