//! Evaluate over HTTP, as an agent would call it, on both stores.

mod common;

use agentnexus_testkit::both_backends;
use chrono::Duration;
use common::{PAYMENTS, TestApp};
use serde_json::{Value, json};

both_backends!(
    decides_allow_deny_and_require_approval,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
        let agent = app.key("agent").await;

        let r = app
            .evaluate(
                &agent,
                json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1200}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            (r.body["decision"].as_str(), r.body["status"].as_str()),
            (Some("allow"), Some("allowed"))
        );
        assert_eq!(
            r.body["matched_rules"],
            json!([{"policy": "payments", "rule": "refunds-ok", "effect": "allow"}])
        );
        assert_eq!(r.body["policy_versions"], json!({"payments": 1}));
        assert!(r.body.get("approval").is_none());

        let r = app
        .evaluate(&agent, json!({"agent_id": "ops-bot", "action": "db.delete", "context": {"environment": "production"}}))
        .await;
        assert_eq!(
            (r.body["decision"].as_str(), r.body["status"].as_str()),
            (Some("deny"), Some("denied"))
        );
        assert_eq!(
            r.body["reason"],
            "Production data is never deleted by agents"
        );

        let body = json!({
            "agent_id": "billing-bot", "action": "stripe.refund", "resource": "customer/cus_123",
            "amount_cents": 75000, "cost_cents": 4, "params": {"charge": "ch_1"},
            "context": {"environment": "production"},
            "trace": {"trace_id": "t-1", "span_id": "s-1", "session_id": "sess-9"},
        });
        let r = app.evaluate(&agent, body).await;
        assert_eq!(
            (r.body["decision"].as_str(), r.body["status"].as_str()),
            (Some("require_approval"), Some("pending"))
        );
        assert_eq!(r.body["reason"], "Refunds over $500 need finance sign-off");
        assert_eq!(r.body["approval"]["tier"], "critical");
        assert_eq!(r.body["approval"]["stage"]["index"], 0);
        assert_eq!(r.body["approval"]["stage"]["name"], "finance");
        let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("ev_"));
        let hash = r.body["proposal_hash"].as_str().unwrap().to_owned();
        assert_eq!(hash.len(), 64);

        // Read back: the same answer, plus the proposal and the stages.
        let got = app.get(&format!("/api/v1/evaluations/{id}"), &agent).await;
        assert_eq!(got.status, 200);
        for field in [
            "decision",
            "status",
            "reason",
            "approval",
            "policy_versions",
            "proposal_hash",
            "created_at",
            "matched_rules",
        ] {
            assert_eq!(got.body[field], r.body[field], "{field}");
        }
        assert_eq!(got.body["params"], json!({"charge": "ch_1"}));
        assert_eq!(got.body["trace"]["session_id"], "sess-9");
        let stages = got.body["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(
            (stages[0]["status"].as_str(), stages[1]["status"].as_str()),
            (Some("waiting"), Some("queued"))
        );
        assert_eq!(
            stages[0]["approvers"],
            json!(["role:finance", "alice@example.com"])
        );
        assert_eq!(got.body["decisions"], json!([]));

        // The timeline holds the evaluation's audit event, chained.
        let t = app
            .get(&format!("/api/v1/evaluations/{id}/timeline"), &agent)
            .await;
        let events = t.body["events"].as_array().unwrap();
        assert_eq!(events[0]["type"], "evaluation.created");
        // Then only the first stage's messages being tried, as they are (no SMTP server in this
        // test; Slack not connected), on the stage's channels.
        assert!(
            events[1..]
                .iter()
                .all(|e| e["type"] == "email.attempted" || e["type"] == "slack.attempted"),
            "{}",
            t.body
        );
        assert_eq!(events[0]["data"]["proposal_hash"], hash.as_str());
        assert_eq!(events[0]["data"]["trace"]["trace_id"], "t-1");
        let v = app.get("/api/v1/audit/verify", &app.admin_key).await;
        assert_eq!(v.body["ok"], true, "{}", v.body);

        // The alias path answers the same way.
        let r = app
            .post(
                "/v1/evaluate",
                &agent,
                &json!({"agent_id": "a", "action": "stripe.refund"}),
            )
            .await;
        assert_eq!(r.body["decision"], "allow");
        app.stop().await;
    }
);

both_backends!(nothing_matching_is_denied, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "anything"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.body["decision"].as_str(), r.body["reason"].as_str()),
        (Some("deny"), Some("no matching rule"))
    );
    assert_eq!(r.body["matched_rules"], json!([]));
    app.stop().await;
});

both_backends!(
    bad_input_is_refused_and_changes_nothing,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.admin_key.clone();
        let before = app.audit_len().await;
        let raw = |body: &'static str| {
            app.request(
                reqwest::Method::POST,
                "/api/v1/evaluate",
                Some(&key),
                Some(body.into()),
                Some("application/json"),
            )
        };
        raw("{\"agent_id\": ").await.problem(400);
        raw("not json").await.problem(400);
        let p = app.evaluate(&key, json!({"action": "x"})).await;
        assert!(
            p.problem(422)["detail"]
                .as_str()
                .unwrap()
                .contains("agent_id")
        );
        let p = app
            .evaluate(&key, json!({"agent_id": "a", "action": ""}))
            .await;
        assert_eq!(p.problem(422)["errors"][0]["field"], "action");
        let p = app
            .evaluate(&key, json!({"agent_id": "a".repeat(257), "action": "x"}))
            .await;
        assert_eq!(p.problem(422)["errors"][0]["field"], "agent_id");
        app.evaluate(
            &key,
            json!({"agent_id": "a", "action": "x", "amount_cents": "12"}),
        )
        .await
        .problem(422);
        app.evaluate(
            &key,
            json!({"agent_id": "a", "action": "x", "amount_cents": -5}),
        )
        .await
        .problem(422);
        // Past 2^53 - 1 a JSON number is not exact: refused rather than rounded.
        let p = app
            .evaluate(
                &key,
                json!({"agent_id": "a", "action": "x", "cost_cents": 9_007_199_254_740_992i64}),
            )
            .await;
        assert_eq!(p.problem(422)["errors"][0]["field"], "cost_cents");
        app.evaluate(
            &key,
            json!({"agent_id": "a", "action": "x", "params": [1, 2]}),
        )
        .await
        .problem(422);
        app.evaluate(&key, json!({"agent_id": "a", "action": "x", "trace": "t"}))
            .await
            .problem(422);
        app.evaluate(
            &key,
            json!({"agent_id": "a", "action": "x", "webhook_url": "ftp://x"}),
        )
        .await
        .problem(422);
        // A misspelt field would silently default to 0 and slip past thresholds: refused.
        let p = app
            .evaluate(
                &key,
                json!({"agent_id": "a", "action": "x", "ammount_cents": 90000}),
            )
            .await;
        assert!(
            p.problem(422)["detail"]
                .as_str()
                .unwrap()
                .contains("ammount_cents")
        );
        let big =
            json!({"agent_id": "a", "action": "x", "params": {"blob": "x".repeat(70 * 1024)}});
        app.evaluate(&key, big).await.problem(413);
        // Unknown, missing, malformed and revoked keys.
        app.evaluate(
            "anx_unknownunknownunknownunknownunknown",
            json!({"agent_id": "a", "action": "x"}),
        )
        .await
        .problem(401);
        let r = app
            .request(
                reqwest::Method::POST,
                "/api/v1/evaluate",
                None,
                Some("{}".into()),
                None,
            )
            .await;
        r.problem(401);
        assert!(r.headers.get("www-authenticate").is_some());
        app.evaluate("Basic abc", json!({})).await.problem(401);
        assert_eq!(app.audit_len().await, before, "bad requests wrote nothing");
        app.get("/api/v1/evaluations/ev_nope", &key)
            .await
            .problem(404);
        app.get("/api/v1/nothing-here", &key).await.problem(404);
        app.stop().await;
    }
);

both_backends!(
    idempotency_key_returns_the_first_evaluation,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.put_policy("payments", PAYMENTS).await;
        let key = app.admin_key.clone();
        let body = json!({"agent_id": "bot", "action": "stripe.refund", "amount_cents": 100, "idempotency_key": "refund-ch_1"});
        let before = app.audit_len().await;
        let first = app.evaluate(&key, body.clone()).await;
        // Concurrent retries too: all get the first one.
        let retries = futures_like_join(&app, &key, &body, 8).await;
        for r in &retries {
            assert_eq!(r["evaluation_id"], first.body["evaluation_id"]);
            assert_eq!(r["created_at"], first.body["created_at"]);
        }
        assert_eq!(
            app.audit_len().await,
            before + 1,
            "one audit record for all of them"
        );
        // 24 hours later the key starts a new evaluation.
        app.clock
            .advance(Duration::hours(24) + Duration::minutes(1));
        let later = app.evaluate(&key, body).await;
        assert_ne!(later.body["evaluation_id"], first.body["evaluation_id"]);
        app.stop().await;
    }
);

async fn futures_like_join(app: &TestApp, key: &str, body: &Value, n: usize) -> Vec<Value> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url, key, body) = (
            app.client.clone(),
            app.url.clone(),
            key.to_owned(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{url}/api/v1/evaluate"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

both_backends!(spend_and_cost_mix_as_integers, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let policy = "name: budget\nrules:\n  - id: daily-cap\n    when: spend.today_cents + cost_cents > 10\n    effect: deny\n    reason: daily budget spent\n  - id: otherwise\n    when: params.n * 2 + amount_cents >= 0\n    effect: allow\n";
    let r = app.put_policy("budget", policy).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key = app.admin_key.clone();
    let ask = |cost: i64| {
        app.evaluate(&key, json!({"agent_id": "spender", "action": "llm.call", "cost_cents": cost, "params": {"n": 1}}))
    };
    for _ in 0..2 {
        let r = ask(4).await;
        assert_eq!(r.body["decision"], "allow", "{}", r.body);
        assert!(r.body.get("errors").is_none(), "{}", r.body);
    }
    // 8 spent today; 8 + 4 > 10.
    let r = ask(4).await;
    assert_eq!(
        (r.body["decision"].as_str(), r.body["reason"].as_str()),
        (Some("deny"), Some("daily budget spent"))
    );
    // Another agent has its own budget.
    let r = app.evaluate(&key, json!({"agent_id": "frugal", "action": "llm.call", "cost_cents": 4, "params": {"n": 1}})).await;
    assert_eq!(r.body["decision"], "allow");
    app.stop().await;
});

both_backends!(
    runtime_errors_fail_closed_and_are_reported,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let policy = "name: p\nrules:\n  - id: deny-risky\n    when: context.risk > 5\n    effect: deny\n  - id: all\n    effect: allow\n";
        app.put_policy("p", policy).await;
        let r = app
            .evaluate(&app.admin_key, json!({"agent_id": "a", "action": "x"}))
            .await;
        assert_eq!(
            r.body["decision"], "deny",
            "a missing field in a deny rule holds the agent back"
        );
        assert_eq!(r.body["errors"][0]["rule"], "deny-risky");
        let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "x", "context": {"risk": 1}}),
            )
            .await;
        assert_eq!(r.body["decision"], "allow");
        app.stop().await;
    }
);

both_backends!(listing_filters_and_pages, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let key = app.admin_key.clone();
    for i in 0..5 {
        app.evaluate(&key, json!({"agent_id": format!("bot-{}", i % 2), "action": "stripe.refund", "amount_cents": if i == 4 { 90000 } else { 1 }})).await;
    }
    let page = app.get("/api/v1/evaluations?limit=2", &key).await;
    assert_eq!(page.body["evaluations"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get(
            &format!("/api/v1/evaluations?limit=2&cursor={cursor}"),
            &key,
        )
        .await;
    let ids = common::Response::evaluation_ids;
    assert!(ids(&next).iter().all(|id| !ids(&page).contains(id)));
    let pending = app.get("/api/v1/evaluations?status=pending", &key).await;
    assert_eq!(pending.body["evaluations"].as_array().unwrap().len(), 1);
    assert_eq!(pending.body["next_cursor"], Value::Null);
    let bot0 = app.get("/api/v1/evaluations?agent_id=bot-0", &key).await;
    assert_eq!(bot0.body["evaluations"].as_array().unwrap().len(), 3);
    app.get("/api/v1/evaluations?status=maybe", &key)
        .await
        .problem(422);
    app.get("/api/v1/evaluations?limit=0", &key)
        .await
        .problem(422);
    let agent = app.key("agent").await;
    app.get("/api/v1/evaluations", &agent).await.problem(403);
    app.stop().await;
});

both_backends!(reads_can_wait_for_a_change, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let key = app.admin_key.clone();
    let pending = app
        .evaluate(
            &key,
            json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000}),
        )
        .await;
    let id = pending.body["evaluation_id"].as_str().unwrap().to_owned();
    // Nothing decides it here, so the wait runs out and answers the evaluation as it is.
    let start = std::time::Instant::now();
    let r = app
        .get(&format!("/api/v1/evaluations/{id}?wait=1"), &key)
        .await;
    assert!(start.elapsed() >= std::time::Duration::from_millis(950));
    assert_eq!(r.body["status"], "pending");
    // A final evaluation cannot change: no waiting.
    let allowed = app
        .evaluate(&key, json!({"agent_id": "a", "action": "stripe.refund"}))
        .await;
    let start = std::time::Instant::now();
    let r = app
        .get(
            &format!(
                "/api/v1/evaluations/{}?wait=30",
                allowed.body["evaluation_id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(r.body["status"], "allowed");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    app.get(&format!("/api/v1/evaluations/{id}?wait=61"), &key)
        .await
        .problem(422);
    app.get(&format!("/api/v1/evaluations/{id}?wait=soon"), &key)
        .await
        .problem(422);
    app.stop().await;
});

both_backends!(long_polls_end_when_the_server_stops, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let key = app.admin_key.clone();
    let pending = app
        .evaluate(
            &key,
            json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000}),
        )
        .await;
    let id = pending.body["evaluation_id"].as_str().unwrap().to_owned();
    let (client, url) = (app.client.clone(), app.url.clone());
    let poll = tokio::spawn(async move {
        let r = client
            .get(format!("{url}/api/v1/evaluations/{id}?wait=30"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    app.stop().await;
    let (status, body) = poll.await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "answered, not cut off"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "shutdown did not wait for the poll"
    );
});

// A wrong value names its field and the JSON it should be, not a Rust type; a policy that
// came on one line (what `curl -d @file.yaml` sends) says how to send it; nothing is recorded.
both_backends!(errors_say_what_json_was_expected, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let before = app.audit_len().await;
    for (body, detail, field) in [
        (
            json!({"agent_id": "a", "action": "refund", "amount_cents": 12.5}),
            "amount_cents: expected a whole number, got 12.5",
            Some("amount_cents"),
        ),
        (
            json!({"agent_id": 7, "action": "refund"}),
            "agent_id: expected a string, got 7",
            Some("agent_id"),
        ),
        (
            json!({"agent_id": "a"}),
            "action: is required",
            Some("action"),
        ),
    ] {
        let r = app.evaluate(&app.admin_key, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.body["detail"], detail, "{body}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"].as_str(), field, "{}", r.body);
        assert!(!r.body.to_string().contains("i64"), "{}", r.body);
    }

    let r = app
        .post(
            "/api/v1/members",
            &app.admin_key,
            &json!({"email": "ann@example.com", "roles": "admin"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["detail"], "roles: expected an array, got the string \"admin\"",
        "{}",
        r.body
    );

    let flattened = "name: gate rules:   - id: r     effect: allow";
    for path in ["/api/v1/policies/gate", "/api/v1/policies/validate"] {
        let method = if path.ends_with("validate") {
            reqwest::Method::POST
        } else {
            reqwest::Method::PUT
        };
        let r = app
            .request(
                method,
                path,
                Some(&app.admin_key),
                Some(flattened.into()),
                Some("application/x-www-form-urlencoded"),
            )
            .await;
        assert!(
            r.body
                .to_string()
                .contains("send it with `--data-binary @FILE`"),
            "{path}: {}",
            r.body
        );
    }
    // A document that kept its lines is refused for what is wrong with it, without the hint.
    let r = app.put_policy("gate", "name: gate\nrules: 5\n").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(!r.body.to_string().contains("--data-binary"), "{}", r.body);
    assert_eq!(app.audit_len().await, before);
    app.stop().await;
});
