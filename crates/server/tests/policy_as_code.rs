//! Policy-as-code (SPEC §9) against a stand-in for GitHub's REST API on loopback, on both
//! stores: binding, manual sync, the push webhook, the schedule, and every way a sync can
//! fail leaving the active version in force with the error on the policy and in the audit
//! trail.

mod common;

use std::time::{Duration, Instant};

use agentnexus_testkit::both_backends;
use agentnexus_testkit::github::{FakeGitHub, signature};
use common::TestApp;
use serde_json::{Value, json};

const REPO: &str = "acme/policies";
const TOKEN: &str = "ghp_readsThePolicyRepo0123456789";
const FILE: &str = "policies/payments.yaml";
const TESTS: &str = "policies/payments_test.yaml";

/// Refunds up to `limit` cents are allowed, anything else denied.
fn payments(limit: u32) -> String {
    format!(
        "name: payments\nrules:\n  - id: small-refunds\n    effect: allow\n    when: \
         action == \"stripe.refund\" && amount_cents <= {limit}\n"
    )
}

/// The tests beside the policy: a small refund passes, a large one is denied.
const PAYMENTS_TESTS: &str = "tests:\n  - name: small refunds pass\n    proposal: {agent_id: \
    bot, action: stripe.refund, amount_cents: 50}\n    expect: {decision: allow}\n  - name: \
    huge refunds are denied\n    proposal: {agent_id: bot, action: stripe.refund, \
    amount_cents: 9000000}\n    expect: {decision: deny}\n";

/// A change to the repository that makes the next sync fail.
type Breaks = Box<dyn Fn(&FakeGitHub)>;

async fn spawn(backend: agentnexus_testkit::Backend, gh: &FakeGitHub) -> TestApp {
    let api = gh.api_url.clone();
    TestApp::spawn_with(backend, move |c| c.github_api_url = api).await
}

fn binding(branch: &str) -> Value {
    json!({"github": {"repo": REPO, "branch": branch, "path": FILE, "token": TOKEN}})
}

async fn sync(app: &TestApp) -> Value {
    let r = app
        .post("/api/v1/policies/payments/sync", &app.admin_key, &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The decision on a refund of `cents` by `key` at `app`.
async fn refund(app: &TestApp, key: &str, cents: u64) -> String {
    let r = app
        .evaluate(
            key,
            json!({"agent_id": "bot", "action": "stripe.refund", "amount_cents": cents}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["decision"].as_str().unwrap().to_owned()
}

// A policy bound to a file syncs on demand: the version records source git, the commit and
// its author, and is in force at once; a branch with nothing new costs one conditional request
// answered 304. Each way a sync can fail (invalid YAML, a failing test, a document of another
// name, a deleted file, a renamed branch, a rejected token, GitHub's rate limit) answers
// `failed` with the reason, keeps the active version in force, shows the error in `last_sync`
// on the policy, and is audited once. The token is never answered, nor audited. Another
// workspace sees none of it.
both_backends!(bound_policies_sync_and_fail_safely, |backend| async move {
    let gh = FakeGitHub::start(REPO, TOKEN).await;
    let app = spawn(backend, &gh).await;
    let agent = app.key("agent").await;
    let first = gh.commit(
        "main",
        "Alice Doe",
        "alice@acme.test",
        "payments policy",
        &[(FILE, Some(&payments(100))), (TESTS, Some(PAYMENTS_TESTS))],
    );

    // Refused bindings change nothing.
    for (bad, field) in [
        (
            json!({"github": {"repo": "acme", "branch": "main", "path": FILE, "token": TOKEN}}),
            "github.repo",
        ),
        (
            json!({"github": {"repo": REPO, "branch": "a..b", "path": FILE, "token": TOKEN}}),
            "github.branch",
        ),
        (
            json!({"github": {"repo": REPO, "branch": "main", "path": "../etc/x.yaml", "token": TOKEN}}),
            "github.path",
        ),
        (
            json!({"github": {"repo": REPO, "branch": "main", "path": FILE, "token": ""}}),
            "github.token",
        ),
    ] {
        let r = app
            .put("/api/v1/policies/payments/source", &app.admin_key, &bad)
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap().contains(field),
            "{}",
            r.body
        );
    }
    let r = app
        .put(
            "/api/v1/policies/payments/source",
            &app.admin_key,
            &json!({"github": {"repo": REPO, "branch": "main", "path": FILE}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app
        .get("/api/v1/policies/payments/source", &app.admin_key)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let r = app
        .put(
            "/api/v1/policies/payments/source",
            &app.admin_key,
            &binding("main"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["github"],
        json!({"repo": REPO, "branch": "main", "path": FILE})
    );
    assert!(r.body["last_sync"].is_null(), "{}", r.body);
    assert!(!r.body.to_string().contains(TOKEN));
    assert!(
        gh.requests().is_empty(),
        "binding reads nothing from GitHub"
    );

    // The first sync creates the policy from the commit.
    let s = sync(&app).await;
    assert_eq!(
        s,
        json!({"status": "updated", "version": 1, "commit": first, "error": null})
    );
    let p = app
        .get("/api/v1/policies/payments", &app.admin_key)
        .await
        .body;
    assert_eq!(p["version"], 1);
    assert_eq!(p["commit"], first.as_str());
    assert_eq!(p["author"], "Alice Doe <alice@acme.test>");
    assert_eq!(p["source"]["github"]["path"], FILE);
    assert_eq!(p["source"]["last_sync"]["status"], "updated");
    assert_eq!(p["source"]["last_sync"]["commit"], first.as_str());
    let versions = app
        .get("/api/v1/policies/payments/versions", &app.admin_key)
        .await
        .body;
    assert_eq!(versions["versions"][0]["source"], "git");
    assert_eq!(versions["versions"][0]["commit"], first.as_str());
    assert_eq!(refund(&app, &agent, 100).await, "allow");
    assert_eq!(refund(&app, &agent, 101).await, "deny");
    let changed = app.audited("policy.changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["data"]["commit"], first.as_str());
    assert_eq!(changed[0]["data"]["source"], format!("git:{first}"));

    // Nothing pushed since: one request, answered 304 from its ETag.
    let before = gh.requests().len();
    let s = sync(&app).await;
    assert_eq!(
        s,
        json!({"status": "unchanged", "version": 1, "commit": first, "error": null})
    );
    let asked = gh.requests()[before..].to_vec();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].status, 304, "{asked:?}");
    assert!(asked[0].if_none_match.is_some());
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );

    // Each failure: the reason, version 1 still in force, shown on the policy, audited once.
    let failures: Vec<(&str, Breaks)> = vec![
        (
            "payments.yaml` at",
            Box::new(|gh: &FakeGitHub| {
                gh.commit(
                    "main",
                    "Bob",
                    "bob@acme.test",
                    "broken",
                    &[(FILE, Some("name: payments\nrules: [\n"))],
                );
            }),
        ),
        (
            "1 of 2 policy tests failed",
            Box::new(|gh: &FakeGitHub| {
                // Allows everything: the huge refund's test fails.
                gh.commit(
                    "main",
                    "Bob",
                    "bob@acme.test",
                    "loose",
                    &[(FILE, Some(&payments(100_000_000)))],
                );
            }),
        ),
        (
            "is named `refunds`, not `payments`",
            Box::new(|gh: &FakeGitHub| {
                gh.commit(
                    "main",
                    "Bob",
                    "bob@acme.test",
                    "renamed",
                    &[(
                        FILE,
                        Some(&payments(100).replace("name: payments", "name: refunds")),
                    )],
                );
            }),
        ),
        (
            "not found at commit",
            Box::new(|gh: &FakeGitHub| {
                gh.commit("main", "Bob", "bob@acme.test", "deleted", &[(FILE, None)]);
            }),
        ),
        (
            "branch `main` of `acme/policies` not found",
            Box::new(|gh: &FakeGitHub| {
                gh.commit(
                    "release/v2",
                    "Bob",
                    "bob@acme.test",
                    "moved",
                    &[(FILE, Some(&payments(100))), (TESTS, Some(PAYMENTS_TESTS))],
                );
                gh.delete_branch("main");
            }),
        ),
        (
            "rejected the token",
            Box::new(|gh: &FakeGitHub| gh.set_token("ghp_rotated")),
        ),
        (
            "rate limit",
            Box::new(|gh: &FakeGitHub| {
                gh.set_token(TOKEN);
                gh.rate_limit(1, 3600, None);
            }),
        ),
    ];
    for (i, (why, break_it)) in failures.iter().enumerate() {
        break_it(&gh);
        let s = sync(&app).await;
        assert_eq!(s["status"], "failed", "{why}: {s}");
        assert_eq!(s["version"], 1, "{why}: {s}");
        assert!(s["error"].as_str().unwrap().contains(why), "{why}: {s}");
        let p = app
            .get("/api/v1/policies/payments", &app.admin_key)
            .await
            .body;
        assert_eq!(p["version"], 1, "{why}");
        assert_eq!(p["source"]["last_sync"]["status"], "failed");
        assert_eq!(p["source"]["last_sync"]["error"], s["error"]);
        assert_eq!(
            refund(&app, &agent, 101).await,
            "deny",
            "{why}: still version 1"
        );
        let failed = app.audited("policy.sync_failed").await;
        assert_eq!(failed.len(), i + 1, "{why}: {failed:?}");
        assert_eq!(failed[i]["data"]["error"], s["error"]);
    }
    // The same failure again is not audited again.
    gh.set_token("ghp_rotated");
    assert_eq!(sync(&app).await["status"], "failed");
    assert_eq!(sync(&app).await["status"], "failed");
    assert_eq!(
        app.audited("policy.sync_failed").await.len(),
        failures.len() + 1
    );

    // Bound again to the new branch with the valid token, a fixed commit goes in force.
    let r = app
        .put(
            "/api/v1/policies/payments/source",
            &app.admin_key,
            &binding("release/v2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gh.set_token(TOKEN);
    let fixed = gh.commit(
        "release/v2",
        "Carol",
        "carol@acme.test",
        "raise",
        &[(FILE, Some(&payments(500)))],
    );
    let s = sync(&app).await;
    assert_eq!(
        s,
        json!({"status": "updated", "version": 2, "commit": fixed, "error": null})
    );
    assert_eq!(refund(&app, &agent, 500).await, "allow");
    assert_eq!(app.audited("policy.source_bound").await.len(), 2);

    // The token is nowhere: not in any answer, not in the audit trail.
    let trail = app
        .get("/api/v1/audit?limit=500", &app.admin_key)
        .await
        .body
        .to_string();
    assert!(!trail.contains(TOKEN) && !trail.contains("ghp_rotated"));
    let source = app
        .get("/api/v1/policies/payments/source", &app.admin_key)
        .await
        .body;
    assert!(!source.to_string().contains(TOKEN), "{source}");

    // Another workspace: none of it exists.
    let other = app.other_workspace("other").await;
    for path in ["/api/v1/policies/payments/source"] {
        assert_eq!(app.get(path, &other).await.status, 404);
    }
    let r = app
        .post("/api/v1/policies/payments/sync", &other, &json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        app.delete("/api/v1/policies/payments/source", &other)
            .await
            .status,
        404
    );
    // An agent key may not bind.
    let r = app
        .put("/api/v1/policies/payments/source", &agent, &binding("main"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Unbinding keeps the policy and its versions.
    assert_eq!(
        app.delete("/api/v1/policies/payments/source", &app.admin_key)
            .await
            .status,
        204
    );
    let p = app
        .get("/api/v1/policies/payments", &app.admin_key)
        .await
        .body;
    assert_eq!(
        (p["version"].clone(), p["source"].clone()),
        (json!(2), json!("git"))
    );
    assert_eq!(
        app.post("/api/v1/policies/payments/sync", &app.admin_key, &json!({}))
            .await
            .status,
        404
    );
    app.stop().await;
});

/// Posts a push delivery to `url` signed with `secret` (`None`: unsigned).
async fn deliver(url: &str, event: &str, body: &Value, secret: Option<&str>) -> (u16, Value) {
    let raw = body.to_string();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    if let Some(secret) = secret {
        req = req.header("x-hub-signature-256", signature(secret, raw.as_bytes()));
    }
    let resp = req.body(raw).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// GitHub's push webhook: signed deliveries to the bound branch that touch the file or its
// tests sync it before the answer; others answer 200 and read nothing from GitHub; unsigned,
// wrongly signed or re-signed-by-another-secret deliveries answer 401 and change nothing.
both_backends!(pushes_sync_what_they_touch, |backend| async move {
    let gh = FakeGitHub::start(REPO, TOKEN).await;
    let app = spawn(backend, &gh).await;
    let integration = app.get("/api/v1/integrations/github", &app.admin_key).await;
    assert_eq!(integration.status, 200, "{}", integration.body);
    let url = integration.body["webhook_url"].as_str().unwrap().to_owned();
    let secret = integration.body["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&app.url), "{url}");
    let again = app
        .get("/api/v1/integrations/github", &app.admin_key)
        .await
        .body;
    assert_eq!(
        again["webhook_secret"],
        secret.as_str(),
        "one secret per workspace"
    );
    assert_eq!(
        app.audited("integration.github_secret_created").await.len(),
        1
    );
    assert!(
        !app.audited("integration.github_secret_created").await[0]
            .to_string()
            .contains(&secret)
    );

    let r = app
        .put(
            "/api/v1/policies/payments/source",
            &app.admin_key,
            &binding("main"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gh.commit(
        "main",
        "Alice",
        "alice@acme.test",
        "first",
        &[(FILE, Some(&payments(100))), (TESTS, Some(PAYMENTS_TESTS))],
    );
    let push = gh.push_event("main");

    // GitHub's ping when the hook is made.
    let (status, body) = deliver(
        &url,
        "ping",
        &json!({"zen": "Keep it logically awesome."}),
        Some(&secret),
    )
    .await;
    assert_eq!((status, body["synced"].clone()), (200, json!([])), "{body}");

    // Unsigned, wrongly signed, signed with another secret, or for another workspace: 401.
    let (status, body) = deliver(&url, "push", &push, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "https://agentnexus.dev/problems/signature");
    assert_eq!(
        deliver(&url, "push", &push, Some("ghs_notTheSecret"))
            .await
            .0,
        401
    );
    let other = app.other_workspace("other").await;
    let other_url = app.get("/api/v1/integrations/github", &other).await.body["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        deliver(&other_url, "push", &push, Some(&secret)).await.0,
        401
    );
    let nowhere = format!(
        "{}/api/v1/integrations/github/webhook/ws_nonexistent",
        app.url
    );
    assert_eq!(deliver(&nowhere, "push", &push, Some(&secret)).await.0, 401);
    let tampered = reqwest::Client::new()
        .post(&url)
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            signature(&secret, push.to_string().as_bytes()),
        )
        .body(
            push.to_string()
                .replace("refs/heads/main", "refs/heads/mainx"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status().as_u16(), 401);
    assert!(gh.requests().is_empty(), "refused deliveries read nothing");
    assert_eq!(
        app.get("/api/v1/policies/payments", &app.admin_key)
            .await
            .status,
        404
    );

    // Another branch, another repository, or only other files: 200, nothing read.
    let mut elsewhere = push.clone();
    elsewhere["ref"] = json!("refs/heads/feature");
    assert_eq!(
        deliver(&url, "push", &elsewhere, Some(&secret)).await,
        (200, json!({"event": "push", "synced": []}))
    );
    let mut fork = push.clone();
    fork["repository"]["full_name"] = json!("mallory/policies");
    assert_eq!(
        deliver(&url, "push", &fork, Some(&secret)).await.1["synced"],
        json!([])
    );
    let head = gh.commit(
        "main",
        "Alice",
        "alice@acme.test",
        "docs",
        &[("README.md", Some("# policies\n"))],
    );
    let (status, body) = deliver(&url, "push", &gh.push_event("main"), Some(&secret)).await;
    assert_eq!((status, body["synced"].clone()), (200, json!([])), "{body}");
    assert!(gh.requests().is_empty(), "{:?}", gh.requests());

    // The push that changed the file: synced before the answer, at the branch's head.
    let (status, body) = deliver(&url, "push", &push, Some(&secret)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["synced"],
        json!([{"policy": "payments", "status": "updated", "version": 1, "commit": head, "error": null}])
    );
    // Delivered again (GitHub redelivers): the same commit is not a second version.
    let (_, body) = deliver(&url, "push", &push, Some(&secret)).await;
    assert_eq!(body["synced"][0]["version"], 1, "{body}");
    assert_eq!(body["synced"][0]["status"], "unchanged", "{body}");
    // A push that changed only the tests beside it syncs too.
    gh.commit(
        "main",
        "Alice",
        "alice@acme.test",
        "tests",
        &[(
            TESTS,
            Some(&PAYMENTS_TESTS.replace("decision: deny", "decision: allow")),
        )],
    );
    let (_, body) = deliver(&url, "push", &gh.push_event("main"), Some(&secret)).await;
    assert_eq!(body["synced"][0]["status"], "failed", "{body}");
    assert!(
        body["synced"][0]["error"]
            .as_str()
            .unwrap()
            .contains("huge refunds are denied"),
        "{body}"
    );
    app.stop().await;
});

// Two servers on one store receive the same push at once: one version of the commit between
// them. A push to one server is in force on the other within its refresh interval (measured).
both_backends!(
    two_servers_make_one_version_of_a_push,
    |backend| async move {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let a = spawn(backend, &gh).await;
        let api = gh.api_url.clone();
        let b = a.replica(move |c| c.github_api_url = api).await;
        let agent = a.key("agent").await;
        let secret = a
            .get("/api/v1/integrations/github", &a.admin_key)
            .await
            .body["webhook_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!(
            "/api/v1/integrations/github/webhook/{}",
            a.tenant.workspace_id()
        );
        assert_eq!(
            a.put(
                "/api/v1/policies/payments/source",
                &a.admin_key,
                &binding("main")
            )
            .await
            .status,
            200
        );

        for round in 1..=3u32 {
            let sha = gh.commit(
                "main",
                "Alice",
                "alice@acme.test",
                "limit",
                &[
                    (FILE, Some(&payments(100 * round))),
                    (TESTS, Some(PAYMENTS_TESTS)),
                ],
            );
            let push = gh.push_event("main");
            let (to_a, to_b) = (format!("{}{path}", a.url), format!("{}{path}", b.url));
            let (x, y) = tokio::join!(
                deliver(&to_a, "push", &push, Some(&secret)),
                deliver(&to_b, "push", &push, Some(&secret)),
            );
            assert_eq!((x.0, y.0), (200, 200), "{x:?} {y:?}");
            let statuses = [
                x.1["synced"][0]["status"].clone(),
                y.1["synced"][0]["status"].clone(),
            ];
            // One made the version; the other found it made (neither failed).
            let mut sorted = statuses.to_vec();
            sorted.sort_by_key(|s| s.to_string());
            assert_eq!(
                sorted,
                [json!("unchanged"), json!("updated")],
                "{x:?} {y:?}"
            );
            let versions = a
                .get("/api/v1/policies/payments/versions", &a.admin_key)
                .await
                .body;
            let of_commit: Vec<&Value> = versions["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["commit"] == sha.as_str())
                .collect();
            assert_eq!(of_commit.len(), 1, "round {round}: {versions}");
            assert_eq!(
                versions["versions"].as_array().unwrap().len(),
                round as usize
            );
        }

        // A push to the first server only: how long until the second decides with it.
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "raise",
            &[(FILE, Some(&payments(1_000)))],
        );
        assert_eq!(refund(&b, &agent, 1_000).await, "deny");
        let started = Instant::now();
        let (status, body) = deliver(
            &format!("{}{path}", a.url),
            "push",
            &gh.push_event("main"),
            Some(&secret),
        )
        .await;
        assert_eq!(
            (status, body["synced"][0]["commit"].clone()),
            (200, json!(sha)),
            "{body}"
        );
        let synced_in = started.elapsed();
        while refund(&b, &agent, 1_000).await != "allow" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the second server never saw the push"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "push to version in force: {} ms on the server that received it, {} ms on the other",
            synced_in.as_millis(),
            started.elapsed().as_millis()
        );
        b.stop().await;
        a.stop().await;
    }
);

// The schedule looks at each binding once per interval (across servers), with a conditional
// request, and after a rate limit waits until GitHub says it ends.
both_backends!(
    the_schedule_polls_cheaply_and_honours_rate_limits,
    |backend| async move {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let api = gh.api_url.clone();
        let app = TestApp::spawn_with(backend, move |c| {
            c.github_api_url = api;
            c.github_poll_secs = 1;
        })
        .await;
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "first",
            &[(FILE, Some(&payments(100))), (TESTS, Some(PAYMENTS_TESTS))],
        );
        assert_eq!(
            app.put(
                "/api/v1/policies/payments/source",
                &app.admin_key,
                &binding("main")
            )
            .await
            .status,
            200
        );
        let source = app
            .get_until("/api/v1/policies/payments/source", |b| {
                b["last_sync"]["status"] == "updated"
            })
            .await;
        assert_eq!(source["last_sync"]["commit"], sha.as_str(), "{source}");

        // Unchanged: conditional requests answered 304, about one a second.
        let before = gh.requests().len();
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let looks = gh.requests()[before..].to_vec();
        assert!((2..=5).contains(&looks.len()), "{looks:?}");
        assert!(
            looks
                .iter()
                .all(|r| r.status == 304 && r.path.ends_with("/commits/main")),
            "{looks:?}"
        );

        // Rate limited for an hour: no look until then.
        gh.rate_limit(1, 3600, None);
        let source = app
            .get_until("/api/v1/policies/payments/source", |b| {
                b["last_sync"]["status"] == "failed"
            })
            .await;
        assert!(
            source["last_sync"]["error"]
                .as_str()
                .unwrap()
                .contains("rate limit"),
            "{source}"
        );
        let before = gh.requests().len();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            gh.requests().len(),
            before,
            "{:?}",
            &gh.requests()[before..]
        );
        app.stop().await;
    }
);
