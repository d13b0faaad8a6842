//! Analytics (SPEC §8) over HTTP on both stores: the cost report is exact to the cent and to
//! the millisecond at the period's ends, whether the evaluations are still in the chain's tail,
//! in the hourly sums the list's catch-up keeps, or at a period's partial first or last hour.

mod common;

use agentnexus_testkit::both_backends;
use chrono::{DateTime, Duration, Utc};
use common::{PAYMENTS, TestApp};
use serde_json::{Value, json};

fn at(v: &Value) -> DateTime<Utc> {
    v["created_at"].as_str().unwrap().parse().unwrap()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `(key, cost_cents, evaluations)` of each group, as answered.
fn groups(report: &Value) -> Vec<(String, i64, i64)> {
    report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["cost_cents"].as_i64().unwrap(),
                g["evaluations"].as_i64().unwrap(),
            )
        })
        .collect()
}

both_backends!(costs_are_exact_over_any_period, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
    let agent = app.key("agent").await;
    let admin = app.admin_key.clone();
    let ev = async |body: Value| {
        let r = app.evaluate(&agent, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let e1 = ev(json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1200, "cost_cents": 7})).await;
    let e2 = ev(json!({"agent_id": "ops-bot", "action": "db.delete", "context": {"environment": "production"}, "cost_cents": 3})).await;
    app.clock.advance(Duration::hours(2));
    let e3 = ev(json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 90000, "cost_cents": 11})).await;
    app.clock.advance(Duration::hours(2));
    // Enough for the list's catch-up: then most of it is in the hourly sums.
    let mut bulk = Vec::new();
    for _ in 0..130 {
        bulk.push(
            ev(json!({"agent_id": "bulk-bot", "action": "crm.lookup", "cost_cents": 1})).await,
        );
    }
    app.store.catch_up_lists().await.unwrap();
    // And one the catch-up has not reached.
    let late = ev(json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 100, "cost_cents": 100})).await;

    let report = async |query: &str| {
        let r = app
            .get(&format!("/api/v1/analytics/costs?{query}"), &admin)
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.body
    };
    let q = |from: DateTime<Utc>, to: DateTime<Utc>, rest: &str| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("from", &rfc(from))
            .append_pair("to", &rfc(to));
        format!("{}{rest}", s.finish())
    };
    let (start, end) = (at(&e1) - Duration::hours(1), at(&late) + Duration::hours(1));

    // Everything, by agent: highest cost first.
    let all = report(&q(start, end, "")).await;
    assert_eq!(all["total_cents"], 7 + 3 + 11 + 130 + 100);
    assert_eq!(all["group_by"], "agent_id");
    assert_eq!(all["currency"], "USD");
    assert_eq!(
        groups(&all),
        [
            ("bulk-bot".to_owned(), 130, 130),
            ("billing-bot".to_owned(), 118, 3),
            ("ops-bot".to_owned(), 3, 1)
        ]
    );
    // By action.
    let by_action = report(&q(start, end, "&group_by=action")).await;
    assert_eq!(
        groups(&by_action),
        [
            ("crm.lookup".to_owned(), 130, 130),
            ("stripe.refund".to_owned(), 118, 3),
            ("db.delete".to_owned(), 3, 1)
        ]
    );

    // Ends cut to the millisecond, `to` excluded: e1 out, e3 out.
    let cut = report(&q(at(&e1) + Duration::milliseconds(1), at(&e3), "")).await;
    assert_eq!(groups(&cut), [("ops-bot".to_owned(), 3, 1)]);
    let cut = report(&q(at(&e2), at(&e3) + Duration::milliseconds(1), "")).await;
    assert_eq!(cut["total_cents"], 3 + 11);
    // Cut inside the bulk's hour: its whole hours from the sums, the rest one by one, exact.
    let mid = at(&bulk[64]);
    let cut = report(&q(mid, end, "&group_by=action")).await;
    // To the millisecond: one made in the same millisecond as `mid` counts from `mid` on.
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let after: i64 = bulk.iter().filter(|b| ms(at(b)) >= ms(mid)).count() as i64;
    assert_eq!(
        groups(&cut),
        [
            ("stripe.refund".to_owned(), 100, 1),
            ("crm.lookup".to_owned(), after, after),
        ]
    );
    let cut = report(&q(start, mid, "&group_by=action")).await;
    assert_eq!(cut["total_cents"], 7 + 3 + 11 + (130 - after));

    // By day, in UTC and in a zone 14 hours east: each evaluation on its day there.
    for (tz, offset) in [("", 0), ("&tz=%2B14:00", 14), ("&tz=-10:00", -10)] {
        let days = report(&q(start, end, &format!("&group_by=day{tz}"))).await;
        let mut expected = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for (e, cents) in [(&e1, 7), (&e2, 3), (&e3, 11), (&late, 100)]
            .into_iter()
            .chain(bulk.iter().map(|b| (b, 1)))
        {
            let day = (at(e) + Duration::hours(offset)).date_naive().to_string();
            let d = expected.entry(day).or_default();
            (d.0, d.1) = (d.0 + cents, d.1 + 1);
        }
        let expected: Vec<(String, i64, i64)> =
            expected.into_iter().map(|(k, (c, n))| (k, c, n)).collect();
        assert_eq!(groups(&days), expected, "tz {tz}");
    }

    // What `spend` sees today is what the report says today.
    let today = app.clock.now().date_naive();
    let midnight = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let report_today = report(&q(midnight, app.clock.now() + Duration::hours(1), "")).await;
    let inventory = app.get("/api/v1/agents", &admin).await.body;
    let spend: i64 = inventory["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spend"]["today_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(report_today["total_cents"], spend);

    // Refused: 422 naming the parameter.
    for (query, field) in [
        ("group_by=week".to_owned(), "group_by"),
        (q(start, end, "&group_by=day&tz=%2B05:30"), "tz"),
        (q(start, end, "&tz=%2B02:00"), "tz"),
        (q(end, start, ""), "from"),
        (q(end - Duration::days(401), end, ""), "from"),
        ("from=yesterday".to_owned(), "from"),
    ] {
        let r = app
            .get(&format!("/api/v1/analytics/costs?{query}"), &admin)
            .await;
        assert_eq!(r.problem(422)["errors"][0]["field"], field, "{query}");
    }
    assert_eq!(app.get("/api/v1/analytics/costs", &agent).await.status, 403);
    // Another workspace's report is its own.
    let other = app.other_workspace("other").await;
    let theirs = app
        .get(
            &format!("/api/v1/analytics/costs?{}", q(start, end, "")),
            &other,
        )
        .await;
    assert_eq!(theirs.body["total_cents"], 0);
    assert_eq!(theirs.body["groups"], json!([]));
    app.stop().await;
});
