//! Human approval through e-mailed secure links, on both stores: a real SMTP server receives
//! the mail and the test reads the link and codes out of it, as an approver would.

mod common;

use std::time::Duration;

use agentnexus_testkit::both_backends;
use agentnexus_testkit::{Receiver, SmtpSink};
use common::TestApp;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

const POLICY: &str = r#"name: refunds
rules:
  - id: big
    when: action == "stripe.refund" && amount_cents > 50000
    effect: require_approval
    tier: high
    reason: Big refunds need finance and the CFO
    approval:
      stages:
        - name: finance
          approvers: ["role:finance"]
          required: 2
          timeout: 30m
        - name: cfo
          approvers: ["cfo@example.com"]
          timeout: 2h
  - id: quick
    when: action == "stripe.refund" && amount_cents > 1000
    effect: require_approval
    tier: medium
    approval:
      stages:
        - name: anyone-in-finance
          approvers: ["role:finance"]
  - id: twice
    when: action == "vendor.pay"
    effect: require_approval
    approval:
      stages:
        - name: first
          approvers: ["dan@example.com"]
        - name: second
          approvers: ["dan@example.com"]
  - id: wire
    when: action == "wire.transfer"
    effect: require_approval
    tier: critical
    approval:
      stages:
        - name: treasury
          approvers: ["treasurer@example.com"]
  - id: rest
    effect: allow
"#;

async fn setup(backend: agentnexus_testkit::Backend, sink: &SmtpSink) -> TestApp {
    let url = sink.url.clone();
    let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(url)).await;
    for email in ["bob@example.com", "carol@example.com"] {
        let r = app
            .post(
                "/api/v1/members",
                &app.admin_key,
                &json!({"email": email, "roles": ["finance"]}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    assert_eq!(app.put_policy("refunds", POLICY).await.status, 200);
    app
}

/// The link tokens of the mails sent to `to`, newest last.
fn links_for(sink: &SmtpSink, to: &str) -> Vec<String> {
    sink.mails()
        .iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .filter_map(|m| m.link_token())
        .collect()
}

async fn wait_link(sink: &SmtpSink, to: &str, n: usize) -> String {
    let start = std::time::Instant::now();
    loop {
        let links = links_for(sink, to);
        if links.len() >= n {
            return links[n - 1].clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "no link for {to}: {:?}",
            sink.mails()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends!(
    two_stages_with_a_quorum_end_approved,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = setup(backend, &sink).await;
        let receiver = Receiver::start().await;
        let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "billing-bot", "action": "stripe.refund",
            "amount_cents": 75000, "resource": "customer/cus_1", "webhook_url": receiver.url}),
            )
            .await;
        assert_eq!(r.body["status"], "pending");
        let id = r.body["evaluation_id"].as_str().unwrap().to_owned();

        // Both finance members get their own link by e-mail.
        let bob = wait_link(&sink, "bob@example.com", 1).await;
        let carol = wait_link(&sink, "carol@example.com", 1).await;
        assert_ne!(bob, carol);
        let mail = sink
            .mails()
            .into_iter()
            .find(|m| m.to == ["bob@example.com"])
            .unwrap();
        assert_eq!(
            mail.header("subject").unwrap(),
            "Approval needed: stripe.refund by billing-bot"
        );
        assert!(
            mail.text().contains("Big refunds need finance and the CFO"),
            "{}",
            mail.text()
        );
        assert!(mail.text().contains("750.00"));
        // Only the hash of a link is stored, and the queued e-mail holds it sealed.
        let (links, jobs): (Vec<(String,)>, Vec<(String,)>) = (
            sqlx::query_as("SELECT token_hash FROM approval_links")
                .fetch_all(app.store.pool())
                .await
                .unwrap(),
            sqlx::query_as("SELECT payload FROM jobs WHERE kind = 'email'")
                .fetch_all(app.store.pool())
                .await
                .unwrap(),
        );
        assert!(links.iter().all(|(h,)| *h != bob && *h != carol));
        assert!(
            jobs.iter()
                .all(|(p,)| !p.contains(&bob) && !p.contains(&carol))
        );

        let first = app
            .decide_link(&bob, json!({"decision": "approve", "comment": "fine"}))
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(
            (
                first.body["status"].as_str(),
                first.body["evaluation_status"].as_str()
            ),
            (Some("recorded"), Some("pending"))
        );
        app.decide_link(&bob, json!({"decision": "approve"}))
            .await
            .problem(410);
        let second = app
            .decide_link(&carol, json!({"decision": "approve"}))
            .await;
        assert_eq!(
            second.body["evaluation_status"], "pending",
            "the CFO stage is next"
        );

        let cfo = wait_link(&sink, "cfo@example.com", 1).await;
        let last = app
            .decide_link(&cfo, json!({"decision": "approve", "comment": "ok by me"}))
            .await;
        assert_eq!(last.body["evaluation_status"], "approved");

        let ev = app
            .get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
            .await;
        assert_eq!(ev.body["status"], "approved");
        let decisions = ev.body["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 3);
        assert_eq!(decisions[0]["comment"], "fine");
        let statuses: Vec<&str> = ev.body["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, vec!["passed", "passed"]);

        // The integrator heard of both stages and of the outcome, once.
        let got = receiver.wait_for(3, WAIT).await;
        let events: Vec<(String, i64)> = got
            .iter()
            .map(|r| {
                (
                    r.body["event"].as_str().unwrap().to_owned(),
                    r.body["stage"]["index"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("approval_required".into(), 0),
                ("approval_required".into(), 1),
                ("terminal_outcome".into(), -1)
            ]
        );
        assert_eq!(got[2].body["status"], "approved");
        assert_eq!(got[2].body["decisions"].as_array().unwrap().len(), 3);

        let timeline = app
            .get(
                &format!("/api/v1/evaluations/{id}/timeline"),
                &app.admin_key,
            )
            .await;
        let kinds: Vec<&str> = timeline.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        for kind in [
            "approval.decided",
            "stage.passed",
            "stage.started",
            "evaluation.approved",
            "email.attempted",
        ] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
        assert_eq!(
            kinds.iter().filter(|k| **k == "approval.decided").count(),
            3
        );
        assert_eq!(
            app.get("/api/v1/audit/verify", &app.admin_key).await.body["ok"],
            true
        );
        app.stop().await;
    }
);

both_backends!(rejections_duties_and_races, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    let key = app.admin_key.clone();
    // A rejection rejects; the other approver's link is then spent.
    let r = app
        .evaluate(
            &key,
            json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let bob = wait_link(&sink, "bob@example.com", 1).await;
    let carol = wait_link(&sink, "carol@example.com", 1).await;
    let no = app
        .decide_link(
            &bob,
            json!({"decision": "reject", "comment": "not this customer"}),
        )
        .await;
    assert_eq!(no.body["evaluation_status"], "rejected");
    app.decide_link(&carol, json!({"decision": "approve"}))
        .await
        .problem(410);
    let ev = app.get(&format!("/api/v1/evaluations/{id}"), &key).await;
    assert_eq!(
        (ev.body["status"].as_str(), ev.body["reason"].as_str()),
        (Some("rejected"), Some("rejected by bob@example.com"))
    );

    // Two approvers at once on a stage that needs one: decided exactly once.
    app.evaluate(
        &key,
        json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 2000}),
    )
    .await;
    let bob = wait_link(&sink, "bob@example.com", 2).await;
    let carol = wait_link(&sink, "carol@example.com", 2).await;
    let (x, y) = tokio::join!(
        app.decide_link(&bob, json!({"decision": "approve"})),
        app.decide_link(&carol, json!({"decision": "approve"}))
    );
    let mut codes = vec![x.status.as_u16(), y.status.as_u16()];
    codes.sort();
    assert_eq!(codes, vec![200, 410], "{} / {}", x.body, y.body);

    // The same person cannot approve two stages.
    app.evaluate(&key, json!({"agent_id": "a", "action": "vendor.pay"}))
        .await;
    let first = wait_link(&sink, "dan@example.com", 1).await;
    assert_eq!(
        app.decide_link(&first, json!({"decision": "approve"}))
            .await
            .status,
        200
    );
    let second = wait_link(&sink, "dan@example.com", 2).await;
    app.decide_link(&second, json!({"decision": "approve"}))
        .await
        .problem(403);

    // Nor decide on a proposal made on their behalf.
    app.evaluate(
        &key,
        json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 2000,
        "context": {"on_behalf_of": "bob@example.com"}}),
    )
    .await;
    let own = wait_link(&sink, "bob@example.com", 3).await;
    app.decide_link(&own, json!({"decision": "approve"}))
        .await
        .problem(403);

    // Unknown and malformed input.
    app.decide_link("apr_nothing", json!({"decision": "approve"}))
        .await
        .problem(404);
    app.decide_link(&own, json!({"decision": "maybe"}))
        .await
        .problem(422);
    app.decide_link(&own, json!({"decision": "approve", "extra": 1}))
        .await
        .problem(422);

    // After its stage's deadline, a link has expired.
    app.evaluate(
        &key,
        json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 80000}),
    )
    .await;
    let late = wait_link(&sink, "carol@example.com", 4).await;
    app.clock.advance(chrono::Duration::minutes(31));
    app.decide_link(&late, json!({"decision": "approve"}))
        .await
        .problem(410);
    assert_eq!(app.get("/api/v1/audit/verify", &key).await.body["ok"], true);
    app.stop().await;
});

both_backends!(critical_tier_needs_a_one_time_code, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    let key = app.admin_key.clone();
    let codes = common::codes;
    // Five wrong codes lock the link.
    app.evaluate(&key, json!({"agent_id": "a", "action": "wire.transfer"}))
        .await;
    let link = wait_link(&sink, "treasurer@example.com", 1).await;
    let first = app.decide_link(&link, json!({"decision": "approve"})).await;
    assert_eq!(first.body["status"], "otp_required", "{}", first.body);
    let start = std::time::Instant::now();
    while codes(&sink).is_empty() {
        assert!(start.elapsed() < WAIT, "no code e-mailed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let real = codes(&sink)[0].clone();
    let wrong = if real == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        app.decide_link(&link, json!({"decision": "approve", "otp": wrong}))
            .await
            .problem(422);
    }
    app.decide_link(&link, json!({"decision": "approve", "otp": wrong}))
        .await
        .problem(410);
    app.decide_link(&link, json!({"decision": "approve", "otp": real}))
        .await
        .problem(410);

    // The right code decides.
    let r = app
        .evaluate(&key, json!({"agent_id": "a", "action": "wire.transfer"}))
        .await;
    let link = wait_link(&sink, "treasurer@example.com", 2).await;
    app.decide_link(&link, json!({"decision": "approve"})).await;
    let start = std::time::Instant::now();
    while codes(&sink).len() < 2 {
        assert!(start.elapsed() < WAIT, "no second code");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = codes(&sink)[1].clone();
    let ok = app
        .decide_link(&link, json!({"decision": "approve", "otp": code}))
        .await;
    assert_eq!(ok.body["evaluation_status"], "approved", "{}", ok.body);
    let id = r.body["evaluation_id"].as_str().unwrap();
    let timeline = app
        .get(&format!("/api/v1/evaluations/{id}/timeline"), &key)
        .await;
    let kinds: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"approval.otp_sent"));
    let audit = app.get("/api/v1/audit?limit=1000", &key).await;
    let all: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(all.contains(&"approval.otp_failed") && all.contains(&"approval.locked"));
    app.stop().await;
});

const DEADLINES: &str = r#"name: deadlines
rules:
  - id: strict
    when: action == "deploy.prod"
    effect: require_approval
    approval:
      stages:
        - name: oncall
          approvers: ["oncall@example.com"]
          timeout: 30m
          on_timeout: reject
  - id: escalating
    when: action == "db.migrate"
    effect: require_approval
    approval:
      stages:
        - name: team
          approvers: ["lead@example.com"]
          timeout: 10m
          on_timeout: escalate
        - name: director
          approvers: ["director@example.com"]
          timeout: 1h
          on_timeout: escalate
"#;

async fn cron(app: &TestApp, secret: Option<&str>) -> common::Response {
    app.request(
        reqwest::Method::POST,
        "/api/cron/approval-timeouts",
        secret,
        None,
        None,
    )
    .await
}

both_backends!(deadlines_expire_or_escalate, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    assert_eq!(app.put_policy("deadlines", DEADLINES).await.status, 200);
    let receiver = Receiver::start().await;
    let key = app.admin_key.clone();
    let strict = app
        .evaluate(
            &key,
            json!({"agent_id": "a", "action": "deploy.prod", "webhook_url": receiver.url}),
        )
        .await;
    let escalating = app
        .evaluate(&key, json!({"agent_id": "a", "action": "db.migrate"}))
        .await;
    let status = |r: &common::Response| r.body["evaluation_id"].as_str().unwrap().to_owned();
    let (strict, escalating) = (status(&strict), status(&escalating));

    // Delivered, and recorded as delivered, before the clock jumps: a job still running when
    // the clock passes its lease looks like a crashed worker's and is delivered again.
    receiver.wait_for(1, WAIT).await;
    let body = app.deliveries_until(&strict, common::settled).await;
    assert!(common::settled(&body), "{body}");
    let all_ended = |b: &Value| {
        b["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(common::ended))
    };
    let body = app.deliveries_until(&escalating, all_ended).await;
    assert!(all_ended(&body), "{body}");
    cron(&app, None).await.problem(401);
    cron(&app, Some("wrong")).await.problem(401);
    assert_eq!(
        cron(&app, Some("cron-secret-for-tests")).await.body["processed"],
        0,
        "nothing is due yet"
    );

    app.clock.advance(chrono::Duration::minutes(11));
    let r = cron(&app, Some("cron-secret-for-tests")).await;
    assert_eq!(r.body["processed"], 1, "the 10-minute stage escalates");
    let ev = app
        .get(&format!("/api/v1/evaluations/{escalating}"), &key)
        .await;
    assert_eq!(ev.body["status"], "pending");
    assert_eq!(ev.body["approval"]["stage"]["name"], "director");
    let stages: Vec<&str> = ev.body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(stages, vec!["expired", "waiting"]);
    wait_link(&sink, "director@example.com", 1).await;

    app.clock.advance(chrono::Duration::minutes(20));
    assert_eq!(
        cron(&app, Some("cron-secret-for-tests")).await.body["processed"],
        1
    );
    let ev = app
        .get(&format!("/api/v1/evaluations/{strict}"), &key)
        .await;
    assert_eq!(
        (ev.body["status"].as_str(), ev.body["reason"].as_str()),
        (Some("expired"), Some("timeout"))
    );
    let got = receiver.wait_for(2, WAIT).await;
    let bodies: Vec<&Value> = got.iter().map(|r| &r.body).collect();
    assert_eq!(got[1].body["event"], "terminal_outcome", "{bodies:?}");
    assert_eq!(
        (
            got[1].body["status"].as_str(),
            got[1].body["reason"].as_str()
        ),
        (Some("expired"), Some("timeout"))
    );
    // The last stage escalates to nobody: the evaluation expires.
    app.clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        cron(&app, Some("cron-secret-for-tests")).await.body["processed"],
        1
    );
    let ev = app
        .get(&format!("/api/v1/evaluations/{escalating}"), &key)
        .await;
    assert_eq!(ev.body["status"], "expired");
    assert_eq!(
        cron(&app, Some("cron-secret-for-tests")).await.body["processed"],
        0
    );
    assert_eq!(app.get("/api/v1/audit/verify", &key).await.body["ok"], true);
    app.stop().await;
});

both_backends!(
    concurrent_sweeps_and_clicks_decide_once,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = setup(backend, &sink).await;
        assert_eq!(app.put_policy("deadlines", DEADLINES).await.status, 200);
        let replica = app.replica(|_| {}).await;
        let key = app.admin_key.clone();
        let mut ids = Vec::new();
        for _ in 0..10 {
            let r = app
                .evaluate(&key, json!({"agent_id": "a", "action": "deploy.prod"}))
                .await;
            ids.push(r.body["evaluation_id"].as_str().unwrap().to_owned());
        }
        let link = wait_link(&sink, "oncall@example.com", 1).await;
        app.clock.advance(chrono::Duration::minutes(31));
        replica.clock.advance(chrono::Duration::minutes(31));
        // Two servers' cron endpoints, several times each, and a late click, all at once.
        let mut calls = Vec::new();
        for i in 0..6 {
            let target = if i % 2 == 0 { &app } else { &replica };
            calls.push(cron(target, Some("cron-secret-for-tests")));
        }
        let click = app.decide_link(&link, json!({"decision": "approve"}));
        let (results, click) = tokio::join!(futures_join(calls), click);
        let processed: i64 = results
            .iter()
            .map(|r| r.body["processed"].as_i64().unwrap())
            .sum();
        assert_eq!(processed, 10, "each stage ended exactly once");
        assert_eq!(
            click.status.as_u16(),
            410,
            "the deadline had passed: {}",
            click.body
        );
        let audit = app.get("/api/v1/audit?limit=1000", &key).await;
        let expired = audit.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "evaluation.expired")
            .count();
        assert_eq!(expired, 10);
        for id in &ids {
            assert_eq!(
                app.get(&format!("/api/v1/evaluations/{id}"), &key)
                    .await
                    .body["status"],
                "expired"
            );
        }
        replica.stop().await;
        app.stop().await;
    }
);

async fn futures_join<F: std::future::Future<Output = common::Response>>(
    calls: Vec<F>,
) -> Vec<common::Response> {
    let mut out = Vec::new();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = calls.into_iter().map(Box::pin).collect();
    // Poll them together: join_all without another dependency.
    let results = std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out.len() <= i {
                out.push(None);
            }
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => out[i] = Some(r),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(std::mem::take(&mut out))
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

both_backends!(the_server_sweeps_deadlines_itself, |backend| async move {
    let sink = SmtpSink::start().await;
    let url = sink.url.clone();
    let app = TestApp::spawn_with(backend, move |c| {
        c.smtp_url = Some(url);
        c.timeout_sweep_secs = 1;
    })
    .await;
    assert_eq!(app.put_policy("deadlines", DEADLINES).await.status, 200);
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "deploy.prod"}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    app.clock.advance(chrono::Duration::minutes(31));
    let start = std::time::Instant::now();
    loop {
        let ev = app
            .get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
            .await;
        if ev.body["status"] == "expired" {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the sweep did not expire it: {}",
            ev.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
});

async fn form(app: &TestApp, token: &str, body: &str) -> common::Response {
    app.request(
        reqwest::Method::POST,
        &format!("/approvals/{token}"),
        None,
        Some(body.to_owned().into()),
        Some("application/x-www-form-urlencoded"),
    )
    .await
}

both_backends!(the_approval_page_shows_and_decides, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    let key = app.admin_key.clone();
    let r = app
        .evaluate(
            &key,
            json!({"agent_id": "<script>bot</script>", "action": "stripe.refund",
            "amount_cents": 2500, "params": {"charge": "ch_9"}}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let bob = wait_link(&sink, "bob@example.com", 1).await;
    let page = app
        .request(
            reqwest::Method::GET,
            &format!("/approvals/{bob}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    let html = page.body.as_str().unwrap();
    for shown in [
        "stripe.refund",
        "25.00",
        "ch_9",
        "bob@example.com",
        "Approve",
        "Reject",
        "quick",
    ] {
        assert!(html.contains(shown), "{shown} on the page");
    }
    assert!(
        html.contains("&lt;script&gt;bot&lt;/script&gt;") && !html.contains("<script>bot"),
        "escaped"
    );
    let done = form(&app, &bob, "decision=approve&comment=looks+right").await;
    assert_eq!(done.status, 200);
    assert!(
        done.body.as_str().unwrap().contains("approved"),
        "{}",
        done.body
    );
    let again = app
        .request(
            reqwest::Method::GET,
            &format!("/approvals/{bob}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(again.status, 410);
    let unknown = app
        .request(
            reqwest::Method::GET,
            "/approvals/apr_nothing",
            None,
            None,
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
    let ev = app.get(&format!("/api/v1/evaluations/{id}"), &key).await;
    assert_eq!(ev.body["decisions"][0]["comment"], "looks right");
    let timeline = app
        .get(&format!("/api/v1/evaluations/{id}/timeline"), &key)
        .await;
    assert!(
        timeline.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "approval.viewed")
    );

    // Critical: the page asks for the e-mailed code, then decides.
    app.evaluate(&key, json!({"agent_id": "a", "action": "wire.transfer"}))
        .await;
    let link = wait_link(&sink, "treasurer@example.com", 1).await;
    let asked = form(&app, &link, "decision=approve").await;
    assert!(
        asked.body.as_str().unwrap().contains("name=\"otp\""),
        "{}",
        asked.body
    );
    let start = std::time::Instant::now();
    let code = loop {
        let found = sink
            .mails()
            .iter()
            .filter(|m| m.header("subject").is_some_and(|s| s.contains("code")))
            .find_map(|m| m.code());
        if let Some(c) = found {
            break c;
        }
        assert!(start.elapsed() < WAIT, "no code");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let done = form(&app, &link, &format!("decision=approve&otp={code}")).await;
    assert!(
        done.body.as_str().unwrap().contains("approved"),
        "{}",
        done.body
    );
    app.stop().await;
});

both_backends!(stages_use_only_their_channels, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    let policy = "name: chat\nrules:\n  - id: chat-only\n    when: action == \"chat.only\"\n    effect: require_approval\n    approval:\n      stages:\n        - {name: ops, approvers: [\"ops@example.com\"], channels: [slack]}\n  - id: mail\n    when: action == \"mail.too\"\n    effect: require_approval\n    approval:\n      stages:\n        - {name: ops, approvers: [\"ops@example.com\"], channels: [slack, email]}\n";
    assert_eq!(app.put_policy("chat", policy).await.status, 200);
    app.evaluate(
        &app.admin_key,
        json!({"agent_id": "a", "action": "chat.only"}),
    )
    .await;
    app.evaluate(
        &app.admin_key,
        json!({"agent_id": "a", "action": "mail.too"}),
    )
    .await;
    wait_link(&sink, "ops@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let subjects: Vec<String> = sink
        .mails()
        .iter()
        .filter_map(|m| m.header("subject"))
        .collect();
    assert_eq!(
        subjects,
        vec!["Approval needed: mail.too by a"],
        "no e-mail for a stage without the email channel"
    );
    app.stop().await;
});

both_backends!(approval_mail_latency, |backend| async move {
    // 200 approvals, 8 at a time: how long from evaluate to the e-mail accepted by SMTP.
    let sink = SmtpSink::start().await;
    let app = setup(backend, &sink).await;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, url, key, sent) = (
            app.client.clone(),
            app.url.clone(),
            app.admin_key.clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let start = std::time::Instant::now();
                let r: Value = client.post(format!("{url}/api/v1/evaluate")).bearer_auth(&key)
                    .json(&json!({"agent_id": format!("w{worker}"), "action": "vendor.pay", "params": {"i": i}}))
                    .send().await.unwrap().json().await.unwrap();
                sent.lock().unwrap().insert(r["evaluation_id"].as_str().unwrap().to_owned(), start);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mails = sink.wait_for(200, Duration::from_secs(60)).await;
    assert_eq!(mails.len(), 200, "every approver e-mail arrived");
    let sent = sent.lock().unwrap().clone();
    let mut ms: Vec<f64> = mails
        .iter()
        .map(|m| {
            let text = m.text();
            let id = text
                .split("Evaluation ")
                .nth(1)
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .trim()
                .to_owned();
            (m.at - sent[&id]).as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "evaluate → e-mail accepted over {} approvals: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100],
        ms[ms.len() - 1]
    );
    app.stop().await;
});

both_backends!(
    a_broken_form_gets_a_page_and_changes_nothing,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = setup(backend, &sink).await;
        app.evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 2500}),
        )
        .await;
        let bob = wait_link(&sink, "bob@example.com", 1).await;
        for body in ["comment=no+decision", "decision=maybe", "%%%"] {
            let r = form(&app, &bob, body).await;
            assert_eq!(r.status, 422, "{body}");
            assert!(r.content_type().starts_with("text/html"), "{body}");
        }
        // The link still works.
        let ok = form(&app, &bob, "decision=approve").await;
        assert!(
            ok.body.as_str().unwrap().contains("approved"),
            "{}",
            ok.body
        );
        app.stop().await;
    }
);

/// The newest mail to `to` with a link, once there are `n`.
async fn wait_mail(sink: &SmtpSink, to: &str, n: usize) -> agentnexus_testkit::Mail {
    wait_link(sink, to, n).await;
    sink.mails()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == to) && m.link_token().is_some())
        .nth(n - 1)
        .unwrap()
}

// The approval e-mail as a person meets it: a text part whose link is whole on a line of its
// own even in the raw message, an HTML part with a button to the same link, and the amount in
// the workspace's currency (a setting, USD until changed; audited; bad codes refused).
both_backends!(
    approval_mail_has_a_whole_link_a_button_and_a_currency,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = setup(backend, &sink).await;
        let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 75_000}),
        )
        .await;
        assert_eq!(r.body["status"], "pending", "{}", r.body);
        let mail = wait_mail(&sink, "bob@example.com", 1).await;
        let token = mail.link_token().unwrap();
        let link = format!("{}/approvals/{token}", app.url);
        assert!(
            mail.data.split("\r\n").any(|line| line == link),
            "the raw message has the link whole on its own line:\n{}",
            mail.data
        );
        assert!(mail.text().lines().any(|l| l == link), "{}", mail.text());
        assert!(mail.text().contains("Amount:   $750.00"), "{}", mail.text());
        let html = mail.html().expect("an HTML part");
        assert!(html.contains(&format!("<a href=\"{link}\"")), "{html}");
        assert!(html.contains("Review and decide"), "{html}");
        assert!(html.contains("$750.00"), "{html}");

        let r = app.get("/api/v1/settings/workspace", &app.admin_key).await;
        assert_eq!(r.body, json!({"currency": "USD"}));
        for bad in [json!("EURO"), json!("€"), json!(""), json!(978)] {
            let r = app
                .request(
                    reqwest::Method::PUT,
                    "/api/v1/settings/workspace",
                    Some(&app.admin_key),
                    Some(json!({"currency": bad}).to_string().into()),
                    Some("application/json"),
                )
                .await;
            assert_eq!(r.status, 422, "{bad}: {}", r.body);
        }
        // Refused codes change and audit nothing. (The workspace's whole trail is not
        // compared: the approval e-mails' attempts are audited whenever their worker runs.)
        let r = app.get("/api/v1/settings/workspace", &app.admin_key).await;
        assert_eq!(r.body, json!({"currency": "USD"}));
        let audit = app.get("/api/v1/audit?limit=500", &app.admin_key).await;
        assert!(
            !audit
                .body
                .to_string()
                .contains("settings.workspace_updated"),
            "{}",
            audit.body
        );
        let r = app
            .request(
                reqwest::Method::PUT,
                "/api/v1/settings/workspace",
                Some(&app.admin_key),
                Some(json!({"currency": "eur"}).to_string().into()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.body, json!({"currency": "EUR"}), "{}", r.body);
        let audit = app.get("/api/v1/audit?limit=500", &app.admin_key).await;
        let changed: Vec<&Value> = audit.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "settings.workspace_updated")
            .collect();
        assert_eq!(changed.len(), 1, "{}", audit.body);
        assert_eq!(
            changed[0]["data"]["currency"],
            json!({"from": "USD", "to": "EUR"})
        );

        let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 75_000}),
        )
        .await;
        assert_eq!(r.body["status"], "pending", "{}", r.body);
        let mail = wait_mail(&sink, "bob@example.com", 2).await;
        assert!(mail.text().contains("Amount:   €750.00"), "{}", mail.text());
        // Not ASCII now: the text part is base64, and still reads whole.
        let token = mail.link_token().unwrap();
        let page = reqwest::get(format!("{}/approvals/{token}", app.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("€750.00"), "{page}");
        app.stop().await;
    }
);
