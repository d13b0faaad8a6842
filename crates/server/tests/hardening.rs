//! What a hostile workspace admin or agent tried (issue: hardening), each on both stores:
//! none of it may crash the server, outlast a limit, hold up another workspace or fool an
//! approver.

mod common;

use std::time::{Duration, Instant};

use agentnexus_testkit::both_backends;
use agentnexus_testkit::{Receiver, Reply, SmtpSink};
use common::TestApp;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn chain(terms: usize) -> String {
    format!(
        "name: chained\nrules:\n  - id: chain\n    when: {} == 0\n    effect: allow\n",
        vec!["1"; terms].join("+")
    )
}

/// Four `all`s nested over the proposal's list: 80^4 iterations for 80 items.
const NESTED: &str = r#"name: nested
rules:
  - id: every
    when: params.l.all(a, params.l.all(b, params.l.all(c, params.l.all(d, a + b + c + d >= 0))))
    effect: allow
"#;

both_backends!(
    no_policy_crashes_or_stalls_the_server,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.admin_key.clone();
        // The report's two expressions: refused at save, naming the rule, nothing stored.
        for terms in [3_000, 30_000] {
            let r = app.put_policy("chained", &chain(terms)).await;
            let p = r.problem(422);
            assert_eq!(p["errors"][0]["rule"], "chain", "{p}");
            assert!(
                p["detail"].as_str().unwrap().contains("4096"),
                "{}",
                p["detail"]
            );
            let v = app
                .request(
                    reqwest::Method::POST,
                    "/api/v1/policies/validate",
                    Some(&key),
                    Some(chain(terms).into()),
                    Some("application/yaml"),
                )
                .await;
            assert_eq!(v.body["valid"], false, "{}", v.body);
        }
        app.get("/api/v1/policies/chained", &key).await.problem(404);
        // Too deep within the size limit: refused the same way.
        let r = app.put_policy("chained", &chain(1_500)).await;
        assert!(
            r.problem(422)["detail"]
                .as_str()
                .unwrap()
                .contains("too complex")
        );
        // Documents up to 256 KiB are taken whole; past it, 413.
        let big = format!(
            "name: big\ndescription: {}\nrules:\n  - {{id: r, effect: allow}}\n",
            "x".repeat(200 * 1024)
        );
        assert_eq!(app.put_policy("big", &big).await.status, 200);
        let huge = big.replace(&"x".repeat(200 * 1024), &"x".repeat(300 * 1024));
        app.put_policy("big", &huge).await.problem(413);
        assert_eq!(app.get("/healthz", &key).await.status, 200);
        // (It allows everything; the rest of the test wants only its own policy.)
        assert_eq!(app.delete("/api/v1/policies/big", &key).await.status, 200);

        // An expression past its budget fails closed, quickly, while another workspace's
        // evaluations go on undisturbed.
        let rival = app.other_workspace("rival").await;
        assert_eq!(app.put_policy("nested", NESTED).await.status, 200);
        let items: Vec<i64> = (0..80).collect();
        let hostile = {
            let (client, url, key, items) =
                (app.client.clone(), app.url.clone(), key.clone(), items);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..20 {
                    let r: Value = client
                        .post(format!("{url}/api/v1/evaluate"))
                        .bearer_auth(&key)
                        .json(&json!({"agent_id": "a", "action": "x", "params": {"l": items}}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    answers.push(r);
                }
                answers
            })
        };
        let mut slowest = Duration::ZERO;
        while !hostile.is_finished() {
            let started = Instant::now();
            let r = app
                .evaluate(&rival, json!({"agent_id": "b", "action": "y"}))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            slowest = slowest.max(started.elapsed());
        }
        for answer in hostile.await.unwrap() {
            assert_eq!(answer["decision"], "deny", "{answer}");
            let error = answer["errors"][0]["message"].as_str().unwrap();
            assert!(error.contains(agentnexus_engine::BUDGET_SPENT), "{answer}");
        }
        // Generous for an unoptimised build on a loaded machine: the point is that it never waits
        // for seconds (it waited 9.2 s before the budget).
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
        // Simulating the same draft answers the same way.
        let sim = app
        .post(
            "/api/v1/policies/simulate",
            &key,
            &json!({"proposal": {"agent_id": "a", "action": "x", "params": {"l": (0..80).collect::<Vec<i64>>()}},
                    "policies": [NESTED]}),
        )
        .await;
        assert_eq!(sim.body["decision"], "deny", "{}", sim.body);
        assert_eq!(app.get("/healthz", &key).await.status, 200);
        app.stop().await;
    }
);

both_backends!(timeouts_past_a_year_are_refused, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let policy = |t: &str| {
        format!(
            "name: slow\nrules:\n  - id: r\n    effect: require_approval\n    approval:\n      stages:\n        - {{name: s, approvers: [a@example.com], timeout: {t}}}\n"
        )
    };
    for t in ["999999999d", "366d", "99999999999999999999h"] {
        let r = app.put_policy("slow", &policy(t)).await;
        let detail = r.problem(422)["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("at most 365d"), "{detail}");
    }
    assert_eq!(app.put_policy("slow", &policy("365d")).await.status, 200);
    let r = app
        .evaluate(&app.admin_key, json!({"agent_id": "a", "action": "x"}))
        .await;
    assert_eq!(r.body["status"], "pending", "{}", r.body);
    app.stop().await;
});

async fn cron(app: &TestApp) -> common::Response {
    app.request(
        reqwest::Method::POST,
        "/api/cron/approval-timeouts",
        Some("cron-secret-for-tests"),
        None,
        None,
    )
    .await
}

const ESCALATING: &str = r#"name: escalating
rules:
  - id: r
    effect: require_approval
    approval:
      stages:
        - {name: first, approvers: [a@example.com], timeout: 1s, on_timeout: escalate}
        - {name: second, approvers: [b@example.com], timeout: 1h}
"#;

const SHORT: &str = r#"name: short
rules:
  - id: r
    effect: require_approval
    approval:
      stages:
        - {name: only, approvers: [c@example.com], timeout: 2s, on_timeout: reject}
"#;

/// An evaluation whose first stage (1 s) escalates into a stage whose stored timeout no
/// deadline can hold: data written before timeouts were limited.
async fn broken_escalation(app: &TestApp) -> String {
    assert_eq!(app.put_policy("escalating", ESCALATING).await.status, 200);
    let bad = app
        .evaluate(&app.admin_key, json!({"agent_id": "a", "action": "x"}))
        .await;
    let bad = bad.body["evaluation_id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE evaluation_stages SET timeout_secs = $1 WHERE evaluation_id = $2 AND idx = 1",
    )
    .bind(i64::MAX)
    .bind(&bad)
    .execute(app.store.pool())
    .await
    .unwrap();
    bad
}

both_backends!(a_broken_stage_never_stops_the_sweep, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let bad = broken_escalation(&app).await;
    // Another workspace's 2 s stage.
    let rival = app.other_workspace("rival").await;
    let r = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/policies/short",
            Some(&rival),
            Some(SHORT.into()),
            Some("application/yaml"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let good = app
        .evaluate(&rival, json!({"agent_id": "b", "action": "y"}))
        .await;
    let good = good.body["evaluation_id"].as_str().unwrap().to_owned();

    app.clock.advance(chrono::Duration::seconds(3));
    let swept = cron(&app).await;
    assert_eq!(swept.status, 200, "{}", swept.body);
    assert_eq!(swept.body["processed"], 1, "{}", swept.body);
    let r = app
        .get(&format!("/api/v1/evaluations/{good}"), &rival)
        .await;
    assert_eq!(r.body["status"], "expired", "{}", r.body);
    // The bad one is untouched, put off, and its workspace's trail says why.
    let r = app
        .get(&format!("/api/v1/evaluations/{bad}"), &app.admin_key)
        .await;
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["approval"]["stage"]["index"].as_i64()
        ),
        (Some("pending"), Some(0)),
        "{}",
        r.body
    );
    let failed = app
        .timeline_events(&app.admin_key, &bad, "stage.expiry_failed")
        .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("out of range")
    );
    // Put off: the next sweep leaves it alone rather than failing on it again at once. (The
    // workspace's whole trail is not compared: with no SMTP server here the e-mail to the
    // first stage's approver is retried, and each attempt is audited whenever it runs.)
    let before = app.timeline(&app.admin_key, &bad, not_a_delivery).await;
    let again = cron(&app).await;
    assert_eq!(again.body["processed"], 0, "{}", again.body);
    assert_eq!(
        app.timeline(&app.admin_key, &bad, not_a_delivery).await,
        before
    );
    app.stop().await;
});

both_backends!(
    the_server_sweep_outlives_a_broken_stage,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.timeout_sweep_secs = 1).await;
        broken_escalation(&app).await;
        app.clock.advance(chrono::Duration::seconds(2));
        // Let the sweeper meet the broken stage first, then give it a good one to expire.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(app.put_policy("short", SHORT).await.status, 200);
        app.put_policy(
            "escalating",
            &ESCALATING.replace("name: escalating\n", "name: escalating\nenabled: false\n"),
        )
        .await;
        let good = app
            .evaluate(&app.admin_key, json!({"agent_id": "b", "action": "y"}))
            .await;
        let good = good.body["evaluation_id"].as_str().unwrap().to_owned();
        app.clock.advance(chrono::Duration::seconds(3));
        let started = Instant::now();
        loop {
            let r = app
                .get(&format!("/api/v1/evaluations/{good}"), &app.admin_key)
                .await;
            if r.body["status"] == "expired" {
                break;
            }
            assert!(started.elapsed() < WAIT, "the sweeper stopped: {}", r.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app.stop().await;
    }
);

both_backends!(
    an_idempotency_key_names_one_proposal,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.put_policy("payments", common::PAYMENTS).await;
        let key = app.admin_key.clone();
        let body = |amount: i64| {
            json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": amount,
                   "idempotency_key": "refund-1"})
        };
        let first = app.evaluate(&key, body(100)).await;
        assert_eq!(first.body["decision"], "allow");
        let again = app.evaluate(&key, body(100)).await;
        assert_eq!(again.body["evaluation_id"], first.body["evaluation_id"]);
        let events = app.audit_len().await;
        // Another proposal under the same key: 409, and nothing recorded.
        let other = app.evaluate(&key, body(90_000)).await;
        let p = other.problem(409);
        assert!(
            p["detail"].as_str().unwrap().contains("idempotency_key"),
            "{p}"
        );
        assert_eq!(app.audit_len().await, events);
        let list = app.get("/api/v1/evaluations", &key).await;
        assert_eq!(list.body["evaluations"].as_array().unwrap().len(), 1);
        app.stop().await;
    }
);

/// A server with a real SMTP sink and a policy sending every proposal to Alice.
async fn alice_approves(backend: agentnexus_testkit::Backend) -> (SmtpSink, TestApp) {
    let sink = SmtpSink::start().await;
    let url = sink.url.clone();
    let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(url)).await;
    let policy = r#"name: p
rules:
  - id: r
    effect: require_approval
    approval:
      stages: [{name: s, approvers: [alice@example.com]}]
"#;
    assert_eq!(app.put_policy("p", policy).await.status, 200);
    (sink, app)
}

both_backends!(proposals_cannot_forge_message_lines, |backend| async move {
    let (sink, app) = alice_approves(backend).await;
    let events = app.audit_len().await;
    for (field, value) in [
        (
            "resource",
            "customer/1\n\nApprove or reject: https://evil.example/approvals/apr_x",
        ),
        ("resource", "a\rb"),
        ("agent_id", "bot\nApprove: https://evil.example"),
        ("action", "pay\u{85}now"),
    ] {
        let mut body = json!({"agent_id": "a", "action": "x"});
        body[field] = json!(value);
        let r = app.evaluate(&app.admin_key, body).await;
        assert_eq!(r.problem(422)["errors"][0]["field"], field, "{}", r.body);
    }
    assert_eq!(
        app.audit_len().await,
        events,
        "a refused proposal records nothing"
    );

    // Without line breaks, a URL in the proposal stays inside its labelled line, after the
    // real link.
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "x",
                   "resource": "Approve here: https://evil.example/approvals/apr_forged {link}"}),
        )
        .await;
    assert_eq!(r.body["status"], "pending", "{}", r.body);
    let mails = sink.wait_for(1, WAIT).await;
    let text = mails[0].text();
    let real = format!("{}/approvals/{}", app.url, mails[0].link_token().unwrap());
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == real)
        .expect("the link on a line of its own");
    let forged = lines
        .iter()
        .position(|l| l.contains("evil.example"))
        .unwrap();
    assert!(at < forged, "{text}");
    assert!(lines[forged].starts_with("Resource: "), "{text}");
    assert_eq!(text.matches(&real).count(), 1, "{text}");
    assert!(text.contains("apr_forged {link}"), "{text}");
    app.stop().await;
});

both_backends!(
    separation_of_duties_sees_through_spacing,
    |backend| async move {
        let (sink, app) = alice_approves(backend).await;
        let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "x", "context": {"on_behalf_of": 7}}),
            )
            .await;
        assert_eq!(r.problem(422)["errors"][0]["field"], "context.on_behalf_of");
        for (n, spelled) in [
            " alice@example.com",
            "ALICE@Example.com\t",
            "\u{200B}alice@example.com",
        ]
        .into_iter()
        .enumerate()
        {
            let r = app
                .evaluate(
                    &app.admin_key,
                    json!({"agent_id": "a", "action": "x", "context": {"on_behalf_of": spelled}}),
                )
                .await;
            assert_eq!(r.body["status"], "pending", "{}", r.body);
            let mails = sink.wait_for(n + 1, WAIT).await;
            let token = mails[n].link_token().unwrap();
            let decided = app
                .decide_link(&token, json!({"decision": "approve"}))
                .await;
            let p = decided.problem(403);
            assert!(
                p["detail"].as_str().unwrap().contains("on their behalf"),
                "{spelled:?}: {p}"
            );
        }
        app.stop().await;
    }
);

const CRITICAL: &str = r#"name: wires
rules:
  - id: wire
    effect: require_approval
    tier: critical
    approval:
      stages: [{name: treasury, approvers: [treasurer@example.com]}]
"#;

async fn wait_codes(sink: &SmtpSink, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let c = common::codes(sink);
        if c.len() >= n {
            return c;
        }
        assert!(started.elapsed() < WAIT, "{} codes of {n}", c.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends!(
    asking_for_new_codes_never_resets_the_count,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let url = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(url)).await;
        assert_eq!(app.put_policy("wires", CRITICAL).await.status, 200);

        // The report's attack: 4 wrong codes, a new code, and so on. The fifth wrong code in all
        // locks the link, whichever code it was meant for.
        app.evaluate(&app.admin_key, json!({"agent_id": "a", "action": "wire"}))
            .await;
        let link = sink.wait_for(1, WAIT).await[0].link_token().unwrap();
        let ask = app.decide_link(&link, json!({"decision": "approve"})).await;
        assert_eq!(ask.body["status"], "otp_required", "{}", ask.body);
        let real = wait_codes(&sink, 1).await[0].clone();
        let wrong = if real == "000000" { "111111" } else { "000000" };
        for _ in 0..4 {
            app.decide_link(&link, json!({"decision": "approve", "otp": wrong}))
                .await
                .problem(422);
        }
        let ask = app.decide_link(&link, json!({"decision": "approve"})).await;
        assert_eq!(ask.body["status"], "otp_required", "{}", ask.body);
        let real = wait_codes(&sink, 2).await[1].clone();
        let wrong = if real == "000000" { "111111" } else { "000000" };
        app.decide_link(&link, json!({"decision": "approve", "otp": wrong}))
            .await
            .problem(410);
        app.decide_link(&link, json!({"decision": "approve", "otp": real}))
            .await
            .problem(410);
        app.decide_link(&link, json!({"decision": "approve"}))
            .await
            .problem(410);
        assert_eq!(
            common::codes(&sink).len(),
            2,
            "a locked link gets no more codes"
        );

        // At most five codes per link: the sixth request locks it.
        let r = app
            .evaluate(&app.admin_key, json!({"agent_id": "a", "action": "wire"}))
            .await;
        let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
        let mails = sink.wait_for(4, WAIT).await;
        let link = mails
            .iter()
            .filter_map(|m| m.link_token())
            .find(|t| *t != link)
            .unwrap();
        for n in 1..=5 {
            let ask = app.decide_link(&link, json!({"decision": "approve"})).await;
            assert_eq!(ask.body["status"], "otp_required", "{n}: {}", ask.body);
        }
        app.decide_link(&link, json!({"decision": "approve"}))
            .await
            .problem(410);
        let last = wait_codes(&sink, 7).await[6].clone();
        app.decide_link(&link, json!({"decision": "approve", "otp": last}))
            .await
            .problem(410);
        let r = app
            .get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
            .await;
        assert_eq!(r.body["status"], "pending");
        let locked = app
            .timeline_events(&app.admin_key, &id, "approval.locked")
            .await;
        assert_eq!(locked.len(), 1, "{locked:?}");
        app.stop().await;
    }
);

both_backends!(approval_pages_are_guarded, |backend| async move {
    let sink = SmtpSink::start().await;
    let url = sink.url.clone();
    let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(url)).await;
    assert_eq!(app.put_policy("wires", CRITICAL).await.status, 200);
    let r = app
        .evaluate(&app.admin_key, json!({"agent_id": "a", "action": "wire"}))
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let link = sink.wait_for(1, WAIT).await[0].link_token().unwrap();
    let get = |path: String| {
        let app = &app;
        async move {
            app.request(reqwest::Method::GET, &path, None, None, None)
                .await
        }
    };
    for path in [
        format!("/approvals/{link}"),
        format!("/approvals/evaluations/{id}"),
        "/approvals/apr_unknown".to_owned(),
    ] {
        let page = get(path.clone()).await;
        let h = |name: &str| {
            page.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(
            h("content-security-policy").contains("default-src 'none'"),
            "{path}"
        );
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
    }
    // A link is rate limited: a person needs a few requests, not hundreds.
    let mut limited = None;
    for n in 0..40 {
        let page = get(format!("/approvals/{link}")).await;
        if page.status == 429 {
            limited = Some((n, page));
            break;
        }
        assert_eq!(page.status, 200);
    }
    let (n, page) = limited.expect("rate limited");
    assert!(n >= 20, "limited after {n}");
    assert!(page.headers.get("retry-after").is_some());
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let json = app.decide_link(&link, json!({"decision": "approve"})).await;
    json.problem(429);
    app.stop().await;
});

both_backends!(
    private_addresses_in_any_spelling_are_refused,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.webhook_allow_private = false).await;
        let receiver = Receiver::start().await;
        let port = receiver.port;
        let mut ids = Vec::new();
        for host in [
            "[::127.0.0.1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:0:127.0.0.1]",
            "127.0.0.1",
        ] {
            let r = app
                .evaluate(
                    &app.admin_key,
                    json!({"agent_id": "a", "action": "x",
                       "webhook_url": format!("http://{host}:{port}/hook")}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            ids.push((host, r.body["evaluation_id"].as_str().unwrap().to_owned()));
        }
        for (host, id) in ids {
            let body = app.deliveries_until(&id, common::settled).await;
            let job = &body["deliveries"][0];
            assert_eq!(job["status"], "dead", "{host}: {body}");
            let error = job["attempts"][0]["error"].as_str().unwrap_or_default();
            assert!(error.contains("private"), "{host}: {error}");
        }
        assert!(receiver.received().is_empty());
        app.stop().await;
    }
);

both_backends!(
    a_slow_receiver_does_not_hold_up_another_workspace,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let url = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| {
            c.smtp_url = Some(url);
            c.delivery_concurrency = 8;
            c.delivery_per_workspace = 4;
        })
        .await;
        // This workspace queues 40 webhooks to a receiver that takes 4 s per request: 20 s of
        // work for 8 slots, first come first served.
        let slow = Receiver::start().await;
        slow.answer_by_default(Reply {
            delay: Duration::from_secs(4),
            ..Reply::status(204)
        });
        let flood = app.other_workspace("flood").await;
        for i in 0..40 {
            let r = app
                .evaluate(
                    &flood,
                    json!({"agent_id": "a", "action": format!("x{i}"), "webhook_url": slow.url}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        slow.wait_for(1, WAIT).await;
        // Then this workspace's approval e-mail is sent at once, not after the backlog.
        let policy = r#"name: p
rules:
  - id: r
    effect: require_approval
    approval:
      stages: [{name: s, approvers: [alice@example.com]}]
"#;
        assert_eq!(app.put_policy("p", policy).await.status, 200);
        let started = Instant::now();
        app.evaluate(&app.admin_key, json!({"agent_id": "b", "action": "y"}))
            .await;
        sink.wait_for(1, WAIT).await;
        let waited = started.elapsed();
        let backlog = slow.received().len();
        assert!(
            backlog <= 8,
            "the flood took {backlog} attempts before the e-mail"
        );
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        app.stop().await;
    }
);

both_backends!(
    queues_and_waits_are_bounded_per_workspace_and_key,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.queue_limit_per_workspace = 5;
            c.waits_per_key = 2;
            c.retry_base_ms = 60_000;
        })
        .await;
        let key = app.admin_key.clone();
        // Webhooks to a port nobody listens on stay queued for their retries.
        let nowhere = "http://127.0.0.1:9/hook";
        for i in 0..5 {
            let r = app
                .evaluate(
                    &key,
                    json!({"agent_id": "a", "action": format!("x{i}"), "webhook_url": nowhere}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let started = Instant::now();
        let refused = loop {
            let r = app
                .evaluate(
                    &key,
                    json!({"agent_id": "a", "action": "more", "webhook_url": nowhere}),
                )
                .await;
            if r.status == 429 {
                break r;
            }
            assert!(started.elapsed() < WAIT, "never refused");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let p = refused.problem(429);
        assert!(
            p["detail"].as_str().unwrap().contains("deliveries waiting"),
            "{p}"
        );
        assert!(refused.headers.get("retry-after").is_some());
        // Evaluations without a webhook, and other workspaces, go on.
        let r = app
            .evaluate(&key, json!({"agent_id": "a", "action": "y"}))
            .await;
        assert_eq!(r.status, 200);
        let rival = app.other_workspace("rival").await;
        let r = app
            .evaluate(
                &rival,
                json!({"agent_id": "a", "action": "y", "webhook_url": nowhere}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);

        // Long polls: two at once per key, a third refused while they wait.
        let policy = r#"name: p
rules:
  - id: r
    effect: require_approval
    approval:
      stages: [{name: s, approvers: [alice@example.com]}]
"#;
        assert_eq!(app.put_policy("p", policy).await.status, 200);
        let r = app
            .evaluate(&key, json!({"agent_id": "a", "action": "z"}))
            .await;
        let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/evaluations/{id}?wait=3");
        let waits: Vec<_> = (0..2)
            .map(|_| {
                let (client, url, key, path) = (
                    app.client.clone(),
                    app.url.clone(),
                    key.clone(),
                    path.clone(),
                );
                tokio::spawn(async move {
                    client
                        .get(format!("{url}{path}"))
                        .bearer_auth(key)
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.get(&path, &key).await.problem(429);
        let agent = app.key("agent").await;
        let other_key = app
            .get(&format!("/api/v1/evaluations/{id}?wait=1"), &agent)
            .await;
        assert_eq!(other_key.status, 200, "another key has its own");
        for w in waits {
            assert_eq!(w.await.unwrap(), 200);
        }
        assert_eq!(
            app.get(&path.replace("wait=3", "wait=1"), &key)
                .await
                .status,
            200
        );
        app.stop().await;
    }
);

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(agentnexus_testkit::Backend::Sqlite).await;
    app.evaluate(&app.admin_key, json!({"agent_id": "a", "action": "x"}))
        .await;
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    for path in [file.clone(), format!("{file}-wal")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}: {mode:o}");
    }
    app.stop().await;
}

both_backends!(secrets_open_only_in_their_own_place, |backend| async move {
    use base64::Engine;
    use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
    let app = TestApp::spawn(backend).await;
    let rival = app.other_workspace("rival").await;
    let mine = app.get("/api/v1/webhooks/secret", &app.admin_key).await;
    let theirs = app.get("/api/v1/webhooks/secret", &rival).await;
    assert_eq!(theirs.status, 200);
    // Someone with write access to the database copies our sealed secret into their row: it
    // does not open there.
    let (_, rival_tenant) = app.store.workspace_by_name("rival").await.unwrap().unwrap();
    let ours: String = sqlx::query_scalar(
        "SELECT secret FROM webhook_secrets WHERE workspace_id = $1 AND expires_at IS NULL",
    )
    .bind(app.tenant.workspace_id())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(ours.starts_with("v2."));
    sqlx::query("UPDATE webhook_secrets SET secret = $1 WHERE workspace_id = $2")
        .bind(&ours)
        .bind(rival_tenant.workspace_id())
        .execute(app.store.pool())
        .await
        .unwrap();
    let moved = app.get("/api/v1/webhooks/secret", &rival).await;
    moved.problem(500);
    assert!(!moved.body.to_string().contains("whsec_"));

    // A secret sealed the old way (no associated data) is sealed again at the next start and
    // reads as before.
    let key = base64::engine::general_purpose::STANDARD
        .decode(app.config.secret_key.as_deref().unwrap())
        .unwrap();
    let cipher = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key).unwrap();
    let nonce = chacha20poly1305::ChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut raw = nonce.to_vec();
    raw.extend(cipher.encrypt(&nonce, b"whsec_legacy".as_slice()).unwrap());
    let legacy = format!(
        "v1.{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    sqlx::query("UPDATE webhook_secrets SET secret = $1 WHERE workspace_id = $2")
        .bind(&legacy)
        .bind(app.tenant.workspace_id())
        .execute(app.store.pool())
        .await
        .unwrap();
    let replica = app.replica(|_| {}).await;
    let r = replica.get("/api/v1/webhooks/secret", &app.admin_key).await;
    assert_eq!(r.body["signing_secret"], "whsec_legacy", "{}", r.body);
    let now: String = sqlx::query_scalar(
        "SELECT secret FROM webhook_secrets WHERE workspace_id = $1 AND expires_at IS NULL",
    )
    .bind(app.tenant.workspace_id())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(now.starts_with("v2."), "{now}");
    assert_ne!(mine.body["signing_secret"], "whsec_legacy");
    replica.stop().await;
    app.stop().await;
});

/// Audit events other than delivery attempts, which background workers append on their own time.
fn not_a_delivery(e: &Value) -> bool {
    !e["type"].as_str().unwrap().ends_with(".attempted")
}
