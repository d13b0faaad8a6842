//! Analytics (SPEC §8) over HTTP on both stores: the cost report is exact to the cent and to
//! the millisecond at the period's ends, whether the evaluations are still in the chain's tail,
//! in the hourly sums the list's catch-up keeps, or at a period's partial first or last hour;
//! the governance report counts what was decided and what people did, as it happened.

mod common;

use agentnexus_testkit::SmtpSink;
use agentnexus_testkit::both_backends;
use chrono::{DateTime, Duration, DurationRound, Utc};
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
    // No refresh loop meanwhile: this test sums when it means to.
    let app = TestApp::spawn_with(backend, |c| c.refresh_secs = 3600).await;
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
    assert!(app.store.sum_hours().await.unwrap() >= 128);
    assert_eq!(app.store.sum_hours().await.unwrap(), 0, "summed once");
    // And one not summed yet.
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

const OPS: &str = r#"name: ops
rules:
  - id: review
    when: action == "deploy"
    effect: require_approval
    reason: Deploys need a look
    approval:
      stages:
        - name: ops
          approvers: ["dan@example.com"]
          timeout: 2h
  - id: no-drop
    when: action == "db.drop"
    effect: deny
    reason: Never drop a database
  - id: reads
    when: action == "read"
    effect: allow
"#;

both_backends!(
    the_governance_report_counts_what_happened,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let smtp = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
        let admin = app.admin_key.clone();
        let r = app
            .post(
                "/api/v1/members",
                &admin,
                &json!({"email": "dan@example.com", "roles": ["approver"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(app.put_policy("ops", OPS).await.status, 200);
        // A second policy matching deploys too: they count for both.
        let watch = "name: watch\nrules:\n  - id: deploys\n    when: action == \"deploy\"\n    effect: allow\n";
        assert_eq!(app.put_policy("watch", watch).await.status, 200);
        let agent = app.key("agent").await;
        let ev = async |agent_id: &str, action: &str| {
            let r = app
                .evaluate(&agent, json!({"agent_id": agent_id, "action": action}))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        };
        let first = ev("bot-a", "read").await;
        let mut reads = vec![first.clone()];
        for _ in 0..2 {
            reads.push(ev("bot-a", "read").await);
        }
        let dropped = ev("bot-b", "db.drop").await;
        let mut deploys = Vec::new();
        for _ in 0..3 {
            deploys.push(ev("bot-a", "deploy").await);
        }
        // Enough for the list's catch-up; and summed, so that whole hours come from the sums.
        for _ in 0..130 {
            ev("bot-c", "read").await;
        }
        app.store.catch_up_lists().await.unwrap();
        app.store.sum_hours().await.unwrap();
        app.store.sum_hours().await.unwrap();

        // Dan approves the first after 10 minutes and rejects the second after 30; the third waits.
        let start = std::time::Instant::now();
        let links = loop {
            let links: Vec<String> = sink.mails().iter().filter_map(|m| m.link_token()).collect();
            if links.len() >= 3 {
                break links;
            }
            assert!(start.elapsed().as_secs() < 15, "links: {:?}", sink.mails());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let link_of = |ev: &Value| -> String {
            let id = ev["evaluation_id"].as_str().unwrap();
            sink.mails()
                .iter()
                .find(|m| m.text().contains(id))
                .and_then(|m| m.link_token())
                .unwrap_or_else(|| panic!("no link for {id} in {links:?}"))
        };
        app.clock.advance(Duration::minutes(10));
        let r = app
            .decide_link(&link_of(&deploys[0]), json!({"decision": "approve"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        app.clock.advance(Duration::minutes(20));
        let r = app
            .decide_link(
                &link_of(&deploys[1]),
                json!({"decision": "reject", "comment": "not on a Friday"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);

        // Receipts: one conforming, one for the denied drop that ran anyway.
        let receipt = async |ev: &Value, body: Value| {
            let id = ev["evaluation_id"].as_str().unwrap();
            let r = app
                .post(&format!("/api/v1/evaluations/{id}/receipt"), &agent, &body)
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        };
        receipt(
            &reads[0],
            json!({"outcome": "executed", "proposal_hash": reads[0]["proposal_hash"]}),
        )
        .await;
        receipt(
            &dropped,
            json!({"outcome": "executed", "proposal_hash": dropped["proposal_hash"]}),
        )
        .await;

        let from = at(&first) - Duration::hours(1);
        let to = app.clock.now() + Duration::hours(1);
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("from", &rfc(from))
            .append_pair("to", &rfc(to))
            .append_pair("bucket", "hour");
        let r = app
            .get(
                &format!("/api/v1/analytics/governance?{}", s.finish()),
                &admin,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let g = r.body;
        assert_eq!(g["totals"]["evaluations"], 137);
        assert_eq!(
            g["totals"]["by_decision"],
            json!({"allow": 133, "deny": 1, "require_approval": 3})
        );
        assert_eq!(
            g["totals"]["by_status"],
            json!({"allowed": 133, "denied": 1, "pending": 1, "approved": 1, "rejected": 1, "expired": 0})
        );
        assert_eq!(g["approval_rate"], 0.5);
        let latency = &g["decision_latency_seconds"];
        let near = |v: &Value, secs: f64| (v.as_f64().unwrap() - secs).abs() < 10.0;
        assert!(near(&latency["p50"], 600.0), "{latency}");
        assert!(near(&latency["p90"], 1800.0), "{latency}");
        assert!(near(&latency["max"], 1800.0), "{latency}");
        assert_eq!(g["top_rejection_reasons"].as_array().unwrap().len(), 1);
        assert_eq!(g["top_rejection_reasons"][0]["count"], 1);
        assert_eq!(
            g["by_agent"],
            json!([
                {"agent_id": "bot-c", "evaluations": 130, "allow": 130, "deny": 0, "require_approval": 0},
                {"agent_id": "bot-a", "evaluations": 6, "allow": 3, "deny": 0, "require_approval": 3},
                {"agent_id": "bot-b", "evaluations": 1, "allow": 0, "deny": 1, "require_approval": 0},
            ])
        );
        assert_eq!(
            g["by_policy"],
            json!([
                {"policy": "ops", "evaluations": 137, "allow": 133, "deny": 1, "require_approval": 3},
                {"policy": "watch", "evaluations": 3, "allow": 0, "deny": 0, "require_approval": 3},
            ])
        );
        // Every hour of the period, empty ones too; the evaluations in theirs.
        let series = g["series"].as_array().unwrap();
        let mut hours = 0;
        let mut hour = from.duration_trunc(Duration::hours(1)).unwrap();
        while hour < to {
            (hours, hour) = (hours + 1, hour + Duration::hours(1));
        }
        assert_eq!(series.len(), hours);
        let total: i64 = series
            .iter()
            .map(|b| b["evaluations"].as_i64().unwrap())
            .sum();
        assert_eq!(total, 137);
        let hour_of_first = at(&first).format("%Y-%m-%dT%H:00:00").to_string();
        let busiest = series
            .iter()
            .max_by_key(|b| b["evaluations"].as_i64().unwrap())
            .unwrap();
        assert!(
            busiest["start"]
                .as_str()
                .unwrap()
                .starts_with(&hour_of_first),
            "{busiest}"
        );
        assert_eq!(
            g["receipts"],
            // Allowed (133) and approved (1), less the one with a receipt.
            json!({"conforming": 1, "nonconforming": 1, "missing": 133})
        );

        // A period after all of it: nothing; bad parameters: 422 naming them.
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("from", &rfc(app.clock.now() - Duration::minutes(1)));
        let empty = app
            .get(
                &format!("/api/v1/analytics/governance?{}", s.finish()),
                &admin,
            )
            .await;
        assert_eq!(empty.status, 200, "{}", empty.body);
        assert_eq!(empty.body["totals"]["evaluations"], 0);
        assert_eq!(empty.body["approval_rate"], Value::Null);
        assert_eq!(empty.body["decision_latency_seconds"]["p50"], Value::Null);
        let mut long = url::form_urlencoded::Serializer::new(String::new());
        long.append_pair("from", &rfc(to - Duration::days(40)))
            .append_pair("to", &rfc(to))
            .append_pair("bucket", "hour");
        for (query, field) in [
            ("bucket=week".to_owned(), "bucket"),
            (long.finish(), "bucket"),
            ("to=soon".to_owned(), "to"),
        ] {
            let r = app
                .get(&format!("/api/v1/analytics/governance?{query}"), &admin)
                .await;
            assert_eq!(r.problem(422)["errors"][0]["field"], field, "{query}");
        }
        app.stop().await;
    }
);
