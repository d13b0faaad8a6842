//! Slack and Teams for approvals, on both stores: channel settings over REST (credentials
//! sealed, never answered), Slack direct messages carrying each approver's own link, channel
//! posts on Slack and Teams leading to the sign-in page, and what happens when something is
//! missing. Slack and Teams are stood in for by local servers that answer as their published
//! APIs do and refuse malformed Block Kit and Adaptive Cards.

mod common;

use std::time::Duration;

use agentnexus_testkit::SmtpSink;
use agentnexus_testkit::both_backends;
use agentnexus_testkit::chat::{FakeSlack, FakeTeams};
use common::TestApp;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

const POLICY: &str = r#"name: chat
rules:
  - id: refund
    when: action == "stripe.refund"
    effect: require_approval
    tier: high
    reason: Refunds need finance
    approval:
      stages:
        - name: finance
          approvers: ["role:finance"]
          channels: [slack]
          timeout: 1h
  - id: deploy
    when: action == "deploy"
    effect: require_approval
    reason: Deploys need the on-call
    approval:
      stages:
        - name: on-call
          approvers: ["dave@example.com"]
          channels: [slack, teams]
  - id: teams-only
    when: action == "teams.only"
    effect: require_approval
    approval:
      stages:
        - name: ops
          approvers: ["dave@example.com"]
          channels: [teams]
"#;

async fn put(app: &TestApp, path: &str, key: &str, body: &Value) -> common::Response {
    app.request(
        reqwest::Method::PUT,
        path,
        Some(key),
        Some(body.to_string().into()),
        Some("application/json"),
    )
    .await
}

async fn setup(
    backend: agentnexus_testkit::Backend,
    slack: &FakeSlack,
    sink: &SmtpSink,
) -> TestApp {
    let (api, smtp) = (slack.api_url.clone(), sink.url.clone());
    let app = TestApp::spawn_with(backend, move |c| {
        c.slack_api_url = api;
        c.smtp_url = Some(smtp);
    })
    .await;
    for email in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        let r = app
            .post(
                "/api/v1/members",
                &app.admin_key,
                &json!({"email": email, "roles": ["finance"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(app.put_policy("chat", POLICY).await.status, 200);
    app
}

/// Waits until at least `n` of the evaluation's jobs of `kind` exist and all of them ended.
async fn settled(app: &TestApp, id: &str, kind: &str, n: usize) -> Vec<Value> {
    let of_kind = |body: &Value| -> Vec<Value> {
        let jobs = body["deliveries"].as_array().into_iter().flatten();
        jobs.filter(|d| d["kind"] == kind).cloned().collect()
    };
    let done = |jobs: &[Value]| jobs.len() >= n && jobs.iter().all(common::ended);
    let body = app.deliveries_until(id, |b| done(&of_kind(b))).await;
    let jobs = of_kind(&body);
    assert!(done(&jobs), "{kind} jobs never settled: {jobs:?}");
    jobs
}

both_backends!(channel_settings_keep_their_secrets, |backend| async move {
    let slack = FakeSlack::start(&[]).await;
    let sink = SmtpSink::start().await;
    let app = setup(backend, &slack, &sink).await;
    let path = "/api/v1/settings/channels";
    let r = app.get(path, &app.admin_key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"slack": null, "teams": null}));

    // Bad settings change nothing.
    let agent = app.key("agent").await;
    let before = app.audit_len().await;
    let slack_path = "/api/v1/settings/channels/slack";
    for bad in [
        json!({}),
        json!({"bot_token": "not-a-token"}),
        json!({"bot_token": "xoxp-user-token"}),
        json!({"webhook_url": "ftp://hooks.example.com/x"}),
        json!({"webhook_url": "no url"}),
        json!({"bot_token": slack.token, "channel": "#ops"}),
    ] {
        put(&app, slack_path, &app.admin_key, &bad)
            .await
            .problem(422);
    }
    put(
        &app,
        "/api/v1/settings/channels/teams",
        &app.admin_key,
        &json!({}),
    )
    .await
    .problem(422);
    put(&app, slack_path, &agent, &json!({"bot_token": slack.token}))
        .await
        .problem(403);
    app.get(path, &agent).await.problem(403);
    app.delete("/api/v1/settings/channels/teams", &app.admin_key)
        .await
        .problem(404);
    assert_eq!(app.audit_len().await, before);

    // Connected: what is set is told, never the secrets themselves.
    let r = put(
        &app,
        slack_path,
        &app.admin_key,
        &json!({"bot_token": slack.token, "webhook_url": slack.webhook_url}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["slack"]["bot_token_set"], true);
    assert_eq!(r.body["slack"]["webhook_url_set"], true);
    let teams_url = "https://example.webhook.office.com/workflows/abc?sig=s3cr3t";
    let r = put(
        &app,
        "/api/v1/settings/channels/teams",
        &app.admin_key,
        &json!({"webhook_url": teams_url}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["teams"]["webhook_url_set"], true);
    let shown = app.get(path, &app.admin_key).await.body.to_string();
    let audit = app
        .get("/api/v1/audit?limit=100", &app.admin_key)
        .await
        .body
        .to_string();
    let stored = app.store.channel_settings(&app.tenant).await.unwrap();
    assert_eq!(stored.len(), 2);
    for secret in [slack.token.as_str(), "secretpart", "s3cr3t"] {
        assert!(!shown.contains(secret), "GET shows {secret}");
        assert!(!audit.contains(secret), "the audit trail holds {secret}");
        for s in &stored {
            assert!(!s.sealed.contains(secret), "stored in the clear: {secret}");
        }
    }
    assert!(audit.contains("settings.channel_updated"));

    // Disconnected.
    let r = app
        .delete("/api/v1/settings/channels/teams", &app.admin_key)
        .await;
    assert_eq!(r.status, 204);
    let r = app.get(path, &app.admin_key).await;
    assert_eq!(r.body["teams"], Value::Null);
    assert_eq!(r.body["slack"]["bot_token_set"], true);
    app.stop().await;
});

both_backends!(
    slack_direct_messages_carry_each_approvers_link,
    |backend| async move {
        // Carol has no Slack account.
        let slack = FakeSlack::start(&[
            ("alice@example.com", "U0ALICE"),
            ("bob@example.com", "U0BOB"),
        ])
        .await;
        let sink = SmtpSink::start().await;
        let app = setup(backend, &slack, &sink).await;
        let r = put(
            &app,
            "/api/v1/settings/channels/slack",
            &app.admin_key,
            &json!({"bot_token": slack.token}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Slack asks the first message to wait a second; it is sent again after.
        slack.rate_limit(1);
        let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "billing-bot", "action": "stripe.refund",
                   "amount_cents": 75000, "resource": "customer/cus_1"}),
            )
            .await;
        assert_eq!(r.body["status"], "pending", "{}", r.body);
        let id = r.body["evaluation_id"].as_str().unwrap().to_owned();

        let jobs = settled(&app, &id, "slack", 3).await;
        let posts = slack.posts();
        assert!(slack.refused().is_empty(), "{:?}", slack.refused());
        let mut channels: Vec<&str> = posts.iter().map(|p| p.channel.as_str()).collect();
        channels.sort();
        assert_eq!(channels, ["U0ALICE", "U0BOB"]);
        let to_alice = posts.iter().find(|p| p.channel == "U0ALICE").unwrap();
        assert_eq!(
            to_alice.body["text"],
            "Approval needed: stripe.refund by billing-bot"
        );
        let summary = to_alice.body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            summary.contains("`stripe.refund`") && summary.contains("$750.00"),
            "{summary}"
        );
        let link_a = to_alice.button_url().unwrap();
        let link_b = posts
            .iter()
            .find(|p| p.channel == "U0BOB")
            .unwrap()
            .button_url()
            .unwrap();
        assert_ne!(link_a, link_b, "each approver has their own link");
        assert!(
            link_a.starts_with(&format!("{}/approvals/apr_", app.url)),
            "{link_a}"
        );
        // No e-mail: the stage names only Slack.
        assert!(sink.mails().is_empty());

        // Carol's message cannot be delivered, and says why; the rate-limited one was retried.
        let dead: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "dead").collect();
        assert_eq!(dead.len(), 1, "{jobs:?}");
        let last = dead[0]["attempts"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert!(
            last["error"].as_str().unwrap().contains("users_not_found"),
            "{last}"
        );
        let retried = jobs
            .iter()
            .any(|j| j["status"] == "done" && j["attempts"].as_array().unwrap().len() == 2);
        assert!(retried, "{jobs:?}");
        let timeline = app
            .get(
                &format!("/api/v1/evaluations/{id}/timeline"),
                &app.admin_key,
            )
            .await;
        let attempted = timeline.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "slack.attempted")
            .count();
        assert_eq!(attempted, 4, "one audit event per attempt");

        // Alice's link decides, as an e-mailed one would.
        let token = link_a.rsplit('/').next().unwrap();
        let r = app
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/approvals/{token}"),
                None,
                Some(json!({"decision": "approve"}).to_string().into()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ev = app
            .get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
            .await;
        assert_eq!(ev.body["status"], "approved");
        app.stop().await;
    }
);

async fn form(app: &TestApp, path: &str, body: &str) -> common::Response {
    app.request(
        reqwest::Method::POST,
        path,
        None,
        Some(body.to_owned().into()),
        Some("application/x-www-form-urlencoded"),
    )
    .await
}

both_backends!(channel_posts_lead_to_a_sign_in, |backend| async move {
    let slack = FakeSlack::start(&[]).await;
    let teams = FakeTeams::start().await;
    let sink = SmtpSink::start().await;
    let app = setup(backend, &slack, &sink).await;
    let slack_path = "/api/v1/settings/channels/slack";
    let r = put(
        &app,
        slack_path,
        &app.admin_key,
        &json!({"webhook_url": slack.webhook_url}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put(
        &app,
        "/api/v1/settings/channels/teams",
        &app.admin_key,
        &json!({"webhook_url": teams.webhook_url}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "release-bot", "action": "deploy", "resource": "svc/api"}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let page = format!("{}/approvals/evaluations/{id}", app.url);

    let posts = slack.wait_for(1, WAIT).await;
    assert!(slack.refused().is_empty(), "{:?}", slack.refused());
    assert_eq!(posts[0].channel, "webhook");
    assert_eq!(posts[0].button_url().as_deref(), Some(page.as_str()));
    let fields = posts[0].body["blocks"][2]["fields"].to_string();
    assert!(fields.contains("dave@example.com"), "{fields}");
    let cards = teams.wait_for(1, WAIT).await;
    assert!(teams.refused().is_empty(), "{:?}", teams.refused());
    let card = &cards[0]["attachments"][0]["content"];
    assert_eq!(card["actions"][0]["url"], page.as_str());
    assert_eq!(
        card["body"][0]["inlines"][0]["text"],
        "Approval needed: deploy"
    );

    // The page shows where the evaluation stands, nothing of the proposal.
    let path = format!("/approvals/evaluations/{id}");
    let shown = app
        .request(reqwest::Method::GET, &path, None, None, None)
        .await;
    assert_eq!(shown.status, 200);
    let html = shown.body.as_str().unwrap();
    assert!(
        html.contains("on-call") && html.contains("name=\"email\""),
        "{html}"
    );
    assert!(
        !html.contains("release-bot") && !html.contains("svc/api"),
        "{html}"
    );

    // Someone who is not an approver is told the same, and nothing is sent.
    let r = form(&app, &path, "email=mallory%40example.com").await;
    assert_eq!(r.status, 200);
    assert!(r.body.as_str().unwrap().contains("Check your e-mail"));
    form(&app, &path, "email=not-an-address").await;
    // Dave asks six times: five links, then no more.
    for _ in 0..6 {
        let r = form(&app, &path, "email=Dave%40example.com").await;
        assert_eq!(r.status, 200);
    }
    let mails = sink.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails_now = sink.mails();
    assert_eq!(mails_now.len(), 5, "{mails:?}");
    assert!(mails_now.iter().all(|m| m.to == ["dave@example.com"]));
    let token = mails_now[4].link_token().unwrap();
    let r = form(&app, &format!("/approvals/{token}"), "decision=approve").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = app
        .get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
        .await;
    assert_eq!(ev.body["status"], "approved");
    let timeline = app
        .get(
            &format!("/api/v1/evaluations/{id}/timeline"),
            &app.admin_key,
        )
        .await
        .body
        .to_string();
    assert_eq!(timeline.matches("approval.link_requested").count(), 5);
    // Decided: the page says so.
    let gone = app
        .request(reqwest::Method::GET, &path, None, None, None)
        .await;
    assert_eq!(gone.status, 410);
    let unknown = app
        .request(
            reqwest::Method::GET,
            "/approvals/evaluations/ev_nope",
            None,
            None,
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
    app.stop().await;
});

both_backends!(a_channel_not_connected_says_so, |backend| async move {
    let slack = FakeSlack::start(&[]).await;
    let sink = SmtpSink::start().await;
    let app = setup(backend, &slack, &sink).await;
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "teams.only"}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let jobs = settled(&app, &id, "teams", 1).await;
    assert_eq!(jobs[0]["status"], "dead");
    let error = jobs[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("Teams is not connected"), "{error}");
    app.stop().await;
});
