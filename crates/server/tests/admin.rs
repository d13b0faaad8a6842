//! Policies, keys, tenancy, audit and operations over HTTP, on both stores.

mod common;

use std::time::Duration as StdDuration;

use agentnexus_store::{Actor, PolicyChange, PolicySource};
use agentnexus_testkit::both_backends;
use common::{PAYMENTS, TestApp};
use serde_json::{Value, json};

both_backends!(invalid_policies_are_refused_whole, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let before = app.audit_len().await;
    let broken = "name: payments\nrules:\n  - id: ok\n    effect: allow\n  - id: large-refund\n    when: action == \"stripe.refund\" && amount_cents >\n    effect: deny\n";
    let r = app.put_policy("payments", broken).await;
    let p = r.problem(422);
    assert_eq!(p["errors"][0]["rule"], "large-refund");
    assert_eq!(p["errors"][0]["position"]["line"], 6, "{p}");
    let r = app
        .put_policy(
            "payments",
            "name: payments\nrules:\n  - id: r\n    effect: require_approval\n",
        )
        .await;
    assert_eq!(r.problem(422)["errors"][0]["field"], "approval");
    app.put_policy("payments", "name: payments\nrules: [")
        .await
        .problem(422);
    app.put_policy("other", PAYMENTS).await.problem(422);
    let r = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/policies/payments",
            Some(&app.admin_key),
            Some(PAYMENTS.into()),
            Some("application/xml"),
        )
        .await;
    r.problem(415);
    app.get("/api/v1/policies/payments", &app.admin_key)
        .await
        .problem(404);
    assert_eq!(app.audit_len().await, before);
    app.stop().await;
});

both_backends!(versions_disable_and_rollback, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let allow = "name: gate\nrules:\n  - id: r\n    effect: allow\n";
    let deny = "{\"name\": \"gate\", \"rules\": [{\"id\": \"r\", \"effect\": \"deny\", \"reason\": \"closed\"}]}";
    assert_eq!(app.put_policy("gate", allow).await.body["version"], 1);
    let r = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/policies/gate",
            Some(&key),
            Some(deny.into()),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["format"].as_str()),
        (Some(2), Some("json"))
    );
    let decide = || app.evaluate(&key, json!({"agent_id": "a", "action": "x"}));
    // A change through the API is in force for the next request.
    assert_eq!(decide().await.body["reason"], "closed");
    let r = app
        .post(
            "/api/v1/policies/gate/rollback",
            &key,
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(r.body["version"], 3);
    let d = decide().await;
    assert_eq!(
        (
            d.body["decision"].as_str(),
            d.body["policy_versions"]["gate"].as_i64()
        ),
        (Some("allow"), Some(3))
    );
    let r = app.delete("/api/v1/policies/gate", &key).await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["enabled"].as_bool()),
        (Some(4), Some(false))
    );
    assert_eq!(decide().await.body["reason"], "no matching rule");
    let versions = app.get("/api/v1/policies/gate/versions", &key).await;
    let list: Vec<i64> = versions.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(list, vec![4, 3, 2, 1]);
    assert!(
        versions.body["versions"][3]["author"]
            .as_str()
            .unwrap()
            .starts_with("key:")
    );
    assert_eq!(versions.body["versions"][3]["source"], "api");
    let v2 = app.get("/api/v1/policies/gate/versions/2", &key).await;
    assert_eq!(v2.body["document"], deny);
    let listed = app.get("/api/v1/policies", &key).await;
    assert_eq!(listed.body["policies"][0]["enabled"], false);
    app.post(
        "/api/v1/policies/gate/rollback",
        &key,
        &json!({"version": 42}),
    )
    .await
    .problem(404);
    app.post(
        "/api/v1/policies/gate/rollback",
        &key,
        &json!({"version": "x"}),
    )
    .await
    .problem(422);
    app.delete("/api/v1/policies/none", &key).await.problem(404);
    app.get("/api/v1/policies/none/versions", &key)
        .await
        .problem(404);
    // Every change is audited.
    let audit = app.get("/api/v1/audit?limit=1000", &key).await;
    let kinds: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in ["policy.changed", "policy.rolled_back", "policy.disabled"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    app.stop().await;
});

both_backends!(validate_and_simulate_record_nothing, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    app.put_policy("payments", PAYMENTS).await;
    let before = app.audit_len().await;
    let raw = |path: &'static str, body: &'static str| {
        app.request(
            reqwest::Method::POST,
            path,
            Some(&key),
            Some(body.into()),
            Some("application/yaml"),
        )
    };
    let ok = raw(
        "/api/v1/policies/validate",
        "name: x\nrules:\n  - id: r\n    effect: allow\n",
    )
    .await;
    assert_eq!(
        ok.body,
        json!({"valid": true, "name": "x", "rules": 1, "errors": []})
    );
    let bad = raw(
        "/api/v1/policies/validate",
        "name: x\nrules:\n  - id: r\n    when: nope(\n    effect: allow\n",
    )
    .await;
    assert_eq!(bad.body["valid"], false);
    assert_eq!(bad.body["errors"][0]["rule"], "r");

    let proposal = json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000});
    let stored = app
        .post(
            "/api/v1/policies/simulate",
            &key,
            &json!({"proposal": proposal}),
        )
        .await;
    assert_eq!(
        stored.body["decision"], "require_approval",
        "{}",
        stored.body
    );
    assert_eq!(stored.body["approval"]["stages"][1]["name"], "cfo");
    assert_eq!(stored.body["policy_versions"], json!({"payments": 1}));
    let given = app
        .post("/api/v1/policies/simulate", &key, &json!({"proposal": proposal, "policies": ["name: strict\nrules:\n  - id: no\n    effect: deny\n"]}))
        .await;
    assert_eq!(given.body["decision"], "deny");
    let spend = app
        .post("/api/v1/policies/simulate", &key, &json!({"proposal": proposal, "spend": {"today_cents": 5},
            "policies": [{"name": "cap", "rules": [{"id": "cap", "when": "spend.today_cents > 1", "effect": "deny"}]}]}))
        .await;
    assert_eq!(spend.body["decision"], "deny", "{}", spend.body);
    app.post(
        "/api/v1/policies/simulate",
        &key,
        &json!({"proposal": {"action": "x"}}),
    )
    .await
    .problem(422);
    app.post(
        "/api/v1/policies/simulate",
        &key,
        &json!({"proposal": proposal, "policies": ["name: x\nrules: 5"]}),
    )
    .await
    .problem(422);
    assert_eq!(app.audit_len().await, before, "nothing recorded");
    let evaluations = app.get("/api/v1/evaluations", &key).await;
    assert_eq!(evaluations.body["evaluations"], json!([]));
    app.stop().await;
});

both_backends!(
    keys_are_shown_once_scoped_and_revocable,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin_key.clone();
        let created = app
            .post(
                "/api/v1/keys",
                &admin,
                &json!({"name": "billing bot", "scope": "agent"}),
            )
            .await;
        assert_eq!(created.status, 201);
        let secret = created.body["key"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("anx_") && secret.len() >= 36);
        assert!(secret[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        let id = created.body["id"].as_str().unwrap().to_owned();
        let listed = app.get("/api/v1/keys", &admin).await;
        let text = listed.body.to_string();
        assert!(!text.contains(&secret), "secrets are never listed");
        let mine = listed.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            (mine["scope"].as_str(), mine["name"].as_str()),
            (Some("agent"), Some("billing bot"))
        );
        assert!(secret.starts_with(mine["prefix"].as_str().unwrap()));
        // Only its hash is stored.
        let row: (String,) = sqlx::query_as("SELECT key_hash FROM api_keys WHERE id = $1")
            .bind(&id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(row.0, agentnexus_store::key_hash(&secret));

        // An agent key evaluates and reads, but administers nothing.
        assert_eq!(
            app.evaluate(&secret, json!({"agent_id": "a", "action": "x"}))
                .await
                .status,
            200
        );
        app.get("/api/v1/keys", &secret).await.problem(403);
        app.put_policy("p", "name: p\nrules:\n  - {id: r, effect: allow}\n")
            .await;
        app.request(
            reqwest::Method::PUT,
            "/api/v1/policies/p",
            Some(&secret),
            Some("x".into()),
            None,
        )
        .await
        .problem(403);
        app.get("/api/v1/audit", &secret).await.problem(403);

        app.post(
            "/api/v1/keys",
            &admin,
            &json!({"name": "x", "scope": "root"}),
        )
        .await
        .problem(422);
        app.post(
            "/api/v1/keys",
            &admin,
            &json!({"name": "", "scope": "agent"}),
        )
        .await
        .problem(422);

        // last_used_at is recorded off the request path, within the refresh interval.
        let mut seen = Value::Null;
        for _ in 0..40 {
            let keys = app.get("/api/v1/keys", &admin).await;
            seen = keys.body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == id.as_str())
                .unwrap()["last_used_at"]
                .clone();
            if !seen.is_null() {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert!(seen.is_string(), "last_used_at recorded");

        // Revoked: fails at once.
        let r = app.delete(&format!("/api/v1/keys/{id}"), &admin).await;
        assert!(r.body["revoked_at"].is_string());
        app.evaluate(&secret, json!({"agent_id": "a", "action": "x"}))
            .await
            .problem(401);
        app.delete("/api/v1/keys/key_nope", &admin)
            .await
            .problem(404);

        // A key used just before it is revoked keeps its last use.
        let quick = app
            .post(
                "/api/v1/keys",
                &admin,
                &json!({"name": "quick", "scope": "agent"}),
            )
            .await;
        let quick_key = quick.body["key"].as_str().unwrap();
        let quick_id = quick.body["id"].as_str().unwrap();
        app.evaluate(quick_key, json!({"agent_id": "a", "action": "x"}))
            .await;
        let revoked = app
            .delete(&format!("/api/v1/keys/{quick_id}"), &admin)
            .await;
        assert!(revoked.body["last_used_at"].is_string(), "{}", revoked.body);
        app.stop().await;
    }
);

both_backends!(another_workspace_is_invisible, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let created = agentnexus_app::accounts::create_workspace(
        &app.store,
        "rival",
        "r@rival.example",
        None,
        Actor::Cli,
    )
    .await
    .unwrap();
    let rival = created.admin_key;
    app.put_policy("payments", PAYMENTS).await;
    let mine = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "stripe.refund"}),
        )
        .await;
    let id = mine.body["evaluation_id"].as_str().unwrap();
    app.get(&format!("/api/v1/evaluations/{id}"), &rival)
        .await
        .problem(404);
    app.get(&format!("/api/v1/evaluations/{id}/timeline"), &rival)
        .await
        .problem(404);
    app.get("/api/v1/policies/payments", &rival)
        .await
        .problem(404);
    let my_keys = app.get("/api/v1/keys", &app.admin_key).await;
    let my_key_id = my_keys.body["keys"][0]["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/api/v1/keys/{my_key_id}"), &rival)
        .await
        .problem(404);
    assert_eq!(
        app.get("/api/v1/keys", &rival).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The rival's evaluation is decided by its own (absent) policies.
    let theirs = app
        .evaluate(&rival, json!({"agent_id": "a", "action": "stripe.refund"}))
        .await;
    assert_eq!(theirs.body["decision"], "deny");
    // The key still works for its own workspace.
    assert_eq!(
        app.get(&format!("/api/v1/evaluations/{id}"), &app.admin_key)
            .await
            .status,
        200
    );
    app.stop().await;
});

both_backends!(audit_pages_and_verifies, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    for i in 0..7 {
        app.evaluate(&key, json!({"agent_id": "a", "action": format!("x{i}")}))
            .await;
    }
    let total = app.audit_len().await;
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = app
            .get(&format!("/api/v1/audit?after_seq={after}&limit=3"), &key)
            .await;
        let events = page.body["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", page.body));
        seen.extend(events.iter().map(|e| e["seq"].as_i64().unwrap()));
        match page.body["next_after_seq"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    let first = app.get("/api/v1/audit?limit=2", &key).await;
    assert_eq!(first.body["events"][0]["type"], "workspace.created");
    assert_eq!(
        first.body["events"][1]["prev_hash"],
        first.body["events"][0]["hash"]
    );
    app.get("/api/v1/audit?limit=5000", &key).await.problem(422);
    app.get("/api/v1/audit?after_seq=abc", &key)
        .await
        .problem(422);
    app.stop().await;
});

both_backends!(
    changes_made_elsewhere_reach_every_replica,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let replica = app.replica(|_| {}).await;
        let key = app.admin_key.clone();
        let r = replica
            .evaluate(&key, json!({"agent_id": "a", "action": "x"}))
            .await;
        assert_eq!(r.body["reason"], "no matching rule");
        // A policy changed through one server (or the CLI) is in force on the other within 5 s.
        app.put_policy(
            "gate",
            "name: gate\nrules:\n  - {id: r, effect: deny, reason: closed}\n",
        )
        .await;
        let text = "name: gate\nrules:\n  - {id: r, effect: allow}\n";
        app.store
            .put_policy(
                &app.tenant,
                PolicyChange {
                    name: "gate",
                    document: text,
                    format: "yaml",
                    enabled: true,
                    actor: Actor::Cli,
                    source: PolicySource::Cli,
                    now: chrono::Utc::now(),
                },
            )
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let mut decision = Value::Null;
        while start.elapsed() < StdDuration::from_secs(5) {
            decision = replica
                .evaluate(&key, json!({"agent_id": "a", "action": "x"}))
                .await
                .body["decision"]
                .clone();
            if decision == "allow" {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(decision, "allow", "the replica picked up the change");
        // A key revoked on one replica fails on the other within the refresh interval.
        let agent = app.key("agent").await;
        assert_eq!(decide_with(&replica, &agent).await, 200);
        let id = app.get("/api/v1/keys", &key).await.body["keys"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.delete(&format!("/api/v1/keys/{id}"), &key).await;
        let start = std::time::Instant::now();
        let mut status = 200;
        while start.elapsed() < StdDuration::from_secs(5) {
            status = decide_with(&replica, &agent).await;
            if status == 401 {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(status, 401);
        replica.stop().await;
        app.stop().await;
    }
);

async fn decide_with(app: &TestApp, key: &str) -> u16 {
    app.evaluate(key, json!({"agent_id": "a", "action": "x"}))
        .await
        .status
        .as_u16()
}

both_backends!(
    rate_limits_answer_429_with_retry_after,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.rate_limit_per_second = 1;
            c.rate_limit_burst = Some(3);
        })
        .await;
        let key = app.admin_key.clone();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(
                app.evaluate(&key, json!({"agent_id": "a", "action": "x"}))
                    .await,
            );
        }
        assert!(statuses[..3].iter().all(|r| r.status == 200));
        let limited = statuses.last().unwrap();
        limited.problem(429);
        let retry: u64 = limited.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry));
        // Limits are per key: another key is not held back.
        let other = agentnexus_store::Store::create_key(
            &app.store,
            &app.tenant,
            "other",
            agentnexus_store::Scope::Agent,
            Actor::Cli,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .secret;
        assert_eq!(
            app.evaluate(&other, json!({"agent_id": "a", "action": "x"}))
                .await
                .status,
            200
        );
        app.stop().await;
    }
);

both_backends!(operations_endpoints, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let health = app
        .request(reqwest::Method::GET, "/healthz", None, None, None)
        .await;
    assert_eq!(health.status, 200);
    let ready = app
        .request(reqwest::Method::GET, "/readyz", None, None, None)
        .await;
    assert_eq!(ready.status, 200);
    app.put_policy("payments", PAYMENTS).await;
    app.evaluate(
        &app.admin_key,
        json!({"agent_id": "a", "action": "stripe.refund"}),
    )
    .await;
    let metrics = app
        .request(reqwest::Method::GET, "/metrics", None, None, None)
        .await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("agentnexus_decisions_total{effect=\"allow\"}"),
        "{text}"
    );
    assert!(text.contains("agentnexus_http_requests_total{method=\"POST\",route=\"/api/v1/evaluate\",status=\"200\"}"), "{text}");
    assert!(
        text.contains("agentnexus_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let spec = app
        .request(reqwest::Method::GET, "/api/openapi.json", None, None, None)
        .await;
    assert_eq!(spec.body["openapi"], "3.1.0");
    assert!(spec.body["paths"]["/api/v1/evaluate"]["post"].is_object());
    let wrong = app
        .request(
            reqwest::Method::GET,
            "/api/v1/evaluate",
            Some(&app.admin_key),
            None,
            None,
        )
        .await;
    wrong.problem(405);
    app.stop().await;
});
