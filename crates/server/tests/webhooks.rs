//! Integrator webhooks against a real receiver on loopback, on both stores.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentnexus_testkit::both_backends;
use agentnexus_testkit::{Receiver, Reply, verify};
use common::{PAYMENTS, TestApp, settled};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

async fn secret(app: &TestApp) -> String {
    let r = app.get("/api/v1/webhooks/secret", &app.admin_key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["signing_secret"].as_str().unwrap().to_owned()
}

both_backends!(outcomes_are_delivered_signed_once, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let receiver = Receiver::start().await;
    let key = app.admin_key.clone();
    let allowed = app
        .evaluate(&key, json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 10, "webhook_url": receiver.url}))
        .await;
    let denied = app
        .evaluate(&key, json!({"agent_id": "a", "action": "db.delete", "context": {"environment": "production"}, "webhook_url": receiver.url}))
        .await;
    let pending = app
        .evaluate(&key, json!({"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000, "webhook_url": receiver.url}))
        .await;
    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3);
    let secret = secret(&app).await;
    assert!(secret.starts_with("whsec_"));
    let by_evaluation: HashMap<String, &agentnexus_testkit::Received> = got
        .iter()
        .map(|r| (r.body["evaluation_id"].as_str().unwrap().to_owned(), r))
        .collect();

    let a = by_evaluation[allowed.body["evaluation_id"].as_str().unwrap()];
    assert!(
        verify(&secret, a),
        "signature verifies with the workspace secret"
    );
    assert!(a.id.starts_with("msg_"));
    let age = chrono::Utc::now().timestamp() - a.timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "webhook-timestamp is now");
    assert_eq!(a.body["event"], "terminal_outcome");
    assert_eq!(a.body["status"], "allowed");
    assert_eq!(a.body["decisions"], json!([]));
    assert!(a.body["occurred_at"].is_string() && a.body["reason"].is_string());

    let d = by_evaluation[denied.body["evaluation_id"].as_str().unwrap()];
    assert_eq!(
        (d.body["event"].as_str(), d.body["status"].as_str()),
        (Some("terminal_outcome"), Some("denied"))
    );
    assert_eq!(
        d.body["reason"],
        "Production data is never deleted by agents"
    );

    let p = by_evaluation[pending.body["evaluation_id"].as_str().unwrap()];
    assert_eq!(p.body["event"], "approval_required");
    assert_eq!(p.body["status"], "pending");
    assert_eq!(p.body["stage"]["index"], 0);
    assert_eq!(p.body["stage"]["name"], "finance");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        time(&p.body["stage"]["expires_at"]),
        time(&pending.body["approval"]["stage"]["expires_at"])
    );

    // Each attempt is readable and in the audit trail.
    let id = allowed.body["evaluation_id"].as_str().unwrap();
    let body = app.deliveries_until(id, settled).await;
    let delivery = &body["deliveries"][0];
    assert_eq!(
        (delivery["status"].as_str(), delivery["event"].as_str()),
        (Some("done"), Some("terminal_outcome"))
    );
    assert_eq!(delivery["id"].as_str(), Some(a.id.as_str()));
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivery["attempts"][0]["status_code"], 204);
    let timeline = app
        .get(&format!("/api/v1/evaluations/{id}/timeline"), &key)
        .await;
    let kinds: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["evaluation.created", "webhook.attempted"]);
    assert_eq!(timeline.body["events"][1]["data"]["outcome"], "done");

    // Exactly one terminal_outcome per evaluation, even after waiting.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 3);
    // No webhook_url, no job.
    let quiet = app
        .evaluate(&key, json!({"agent_id": "a", "action": "stripe.refund"}))
        .await;
    let none = app
        .get(
            &format!(
                "/api/v1/evaluations/{}/deliveries",
                quiet.body["evaluation_id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(none.body["deliveries"], json!([]));
    app.get("/api/v1/evaluations/ev_nope/deliveries", &key)
        .await
        .problem(404);
    assert_eq!(app.get("/api/v1/audit/verify", &key).await.body["ok"], true);
    app.stop().await;
});

both_backends!(failures_are_retried_with_backoff, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.script([
        Reply {
            body: "x".repeat(5000),
            ..Reply::status(500)
        },
        Reply {
            retry_after: Some(1),
            ..Reply::status(429)
        },
    ]);
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "x", "webhook_url": receiver.url}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let body = app.deliveries_until(&id, settled).await;
    let got = receiver.received();
    assert_eq!(got.len(), 3, "500, then 429, then delivered");
    assert!(
        got.iter().all(|g| g.id == got[0].id),
        "one webhook-id across retries"
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    let attempts = body["deliveries"][0]["attempts"].as_array().unwrap();
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 429, 204]);
    assert_eq!(body["deliveries"][0]["status"], "done");
    assert_eq!(
        attempts[0]["response_body"].as_str().unwrap().len(),
        1024,
        "bodies are kept to 1 KiB"
    );
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    let timeline = app
        .get(
            &format!("/api/v1/evaluations/{id}/timeline"),
            &app.admin_key,
        )
        .await;
    let outcomes: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|e| e["data"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["queued", "queued", "done"]);
    app.stop().await;
});

both_backends!(deliveries_give_up_after_the_horizon, |backend| async move {
    let app = TestApp::spawn_with(backend, |c| c.retry_horizon_secs = 1).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Reply::status(503));
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "x", "webhook_url": receiver.url}),
        )
        .await;
    let id = r.body["evaluation_id"].as_str().unwrap();
    let body = app.deliveries_until(id, settled).await;
    assert_eq!(body["deliveries"][0]["status"], "dead", "{body}");
    let attempts = body["deliveries"][0]["attempts"].as_array().unwrap().len();
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    assert_eq!(receiver.received().len(), attempts);
    app.stop().await;
});

both_backends!(
    private_addresses_are_refused_unless_allowed,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.webhook_allow_private = false).await;
        let receiver = Receiver::start().await;
        let by_ip = receiver.url.clone();
        let by_name = receiver.url.replace("127.0.0.1", "localhost");
        for url in [by_ip, by_name] {
            let r = app
                .evaluate(
                    &app.admin_key,
                    json!({"agent_id": "a", "action": "x", "webhook_url": url}),
                )
                .await;
            let body = app
                .deliveries_until(r.body["evaluation_id"].as_str().unwrap(), |b| {
                    b["deliveries"][0]["attempts"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                })
                .await;
            let error = body["deliveries"][0]["attempts"][0]["error"]
                .as_str()
                .unwrap()
                .to_owned();
            let settled = app
                .deliveries_until(r.body["evaluation_id"].as_str().unwrap(), settled)
                .await;
            assert_eq!(
                settled["deliveries"][0]["status"], "dead",
                "{url}: not retried"
            );
            assert_eq!(
                settled["deliveries"][0]["attempts"]
                    .as_array()
                    .unwrap()
                    .len(),
                1
            );
            assert!(
                error.contains("private") || error.contains("loopback"),
                "{url}: {error}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            receiver.received().is_empty(),
            "nothing reached the private address"
        );
        app.stop().await;
    }
);

both_backends!(
    rotated_secrets_sign_beside_the_new_one,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let receiver = Receiver::start().await;
        let old = secret(&app).await;
        assert_eq!(
            secret(&app).await,
            old,
            "the secret is stable until rotated"
        );
        let rotated = app
            .post("/api/v1/webhooks/secret/rotate", &app.admin_key, &json!({}))
            .await;
        let new = rotated.body["signing_secret"].as_str().unwrap().to_owned();
        assert_ne!(new, old);
        assert!(rotated.body["previous_expires_at"].is_string());
        assert_eq!(secret(&app).await, new);
        app.evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "x", "webhook_url": receiver.url}),
        )
        .await;
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got[0].signature.split(' ').count(), 2);
        assert!(
            verify(&new, &got[0]) && verify(&old, &got[0]),
            "both secrets verify during the grace period"
        );
        // 24 hours later only the new one signs.
        app.clock.advance(chrono::Duration::hours(25));
        app.evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "y", "webhook_url": receiver.url}),
        )
        .await;
        let got = receiver.wait_for(2, WAIT).await;
        assert_eq!(got[1].signature.split(' ').count(), 1);
        assert!(verify(&new, &got[1]) && !verify(&old, &got[1]));
        // Secrets are stored encrypted.
        let rows: Vec<(String,)> = sqlx::query_as("SELECT secret FROM webhook_secrets")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
        assert!(rows.iter().all(|(s,)| !s.contains("whsec_")));
        let agent = app.key("agent").await;
        app.get("/api/v1/webhooks/secret", &agent)
            .await
            .problem(403);
        let audit = app.get("/api/v1/audit?limit=1000", &app.admin_key).await;
        assert!(
            audit.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "webhook.secret_rotated")
        );
        app.stop().await;
    }
);

both_backends!(
    two_servers_deliver_every_webhook_once,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let replica = app.replica(|_| {}).await;
        let receiver = Receiver::start().await;
        // A little latency so overlapping deliveries would be seen.
        receiver.answer_by_default(Reply {
            delay: Duration::from_millis(20),
            ..Reply::status(200)
        });
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (client, url, key, hook) = (
                app.client.clone(),
                if i % 2 == 0 {
                    app.url.clone()
                } else {
                    replica.url.clone()
                },
                app.admin_key.clone(),
                receiver.url.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{url}/api/v1/evaluate"))
                    .bearer_auth(key)
                    .json(
                        &json!({"agent_id": "a", "action": format!("act{i}"), "webhook_url": hook}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()["evaluation_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        eprintln!(
            "evaluations answered after {:?}, {} delivered so far",
            start.elapsed(),
            receiver.received().len()
        );
        let got = receiver.wait_for(200, Duration::from_secs(60)).await;
        let elapsed = start.elapsed();
        eprintln!(
            "200 evaluations with webhooks, two servers: delivered in {elapsed:?} ({:.0} jobs/s)",
            200.0 / elapsed.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got_after = receiver.received();
        assert_eq!(got_after.len(), got.len(), "nothing more arrived");
        let mut per_evaluation: HashMap<String, usize> = HashMap::new();
        for r in &got_after {
            assert_eq!(r.body["event"], "terminal_outcome");
            *per_evaluation
                .entry(r.body["evaluation_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(
            per_evaluation.len(),
            200,
            "every evaluation's webhook arrived"
        );
        assert!(per_evaluation.values().all(|n| *n == 1), "none twice");
        assert!(ids.iter().all(|id| per_evaluation.contains_key(id)));
        assert_eq!(
            receiver.overlaps(),
            0,
            "never the same message twice at once"
        );
        let counts = app.store.job_counts().await.unwrap();
        assert_eq!(counts, vec![("done".to_owned(), 200)]);
        let (attempts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM delivery_attempts")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(attempts, 200, "no attempt failed on either server");
        replica.stop().await;
        app.stop().await;
    }
);

both_backends!(
    shutdown_finishes_deliveries_under_way,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let receiver = Receiver::start().await;
        receiver.answer_by_default(Reply {
            delay: Duration::from_millis(700),
            ..Reply::status(200)
        });
        let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "x", "webhook_url": receiver.url}),
            )
            .await;
        assert_eq!(r.status, 200);
        // Stop while the receiver is still answering.
        receiver.wait_for(1, WAIT).await;
        let db = app.stop_keeping_database().await;
        let store = agentnexus_store::Store::open(agentnexus_store::StoreConfig::new(&db.url))
            .await
            .unwrap();
        assert_eq!(
            store.job_counts().await.unwrap(),
            vec![("done".to_owned(), 1)],
            "the delivery under way finished and was recorded before the server stopped"
        );
        store.close().await;
        db.drop_database().await;
    }
);

// An integrator checks a receiver before wiring it to evaluations: the test event is signed
// like any other, its delivery can be followed, and it is audited.
both_backends!(
    a_test_event_reaches_a_receiver_signed,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let receiver = Receiver::start().await;
        let r = app
            .post(
                "/api/v1/webhooks/test",
                &app.admin_key,
                &json!({"url": receiver.url}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(
            (r.body["kind"].as_str(), r.body["event"].as_str()),
            (Some("webhook"), Some("test"))
        );
        let id = r.body["id"].as_str().unwrap().to_owned();
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got[0].body["event"], "test", "{}", got[0].body);
        assert_eq!(got[0].id, id, "the delivery id is the webhook-id");
        assert!(
            verify(&secret(&app).await, &got[0]),
            "signed with the workspace's secret"
        );
        let done = app
            .get_until(&format!("/api/v1/deliveries/{id}"), |d| {
                d["status"] == "done"
            })
            .await;
        assert_eq!(done["attempts"][0]["status_code"], 204, "{done}");
        let audit = app.get("/api/v1/audit?limit=500", &app.admin_key).await;
        let queued: Vec<&Value> = audit.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "channel.test_queued")
            .collect();
        assert_eq!(queued.len(), 1, "{}", audit.body);
        assert_eq!(queued[0]["data"]["url"], receiver.url.as_str());
        assert_eq!(queued[0]["data"]["job_id"], id.as_str());

        // Not a URL: refused, nothing queued. Another workspace cannot read the delivery.
        let before = app.audit_len().await;
        for url in [json!("ftp://example.com/x"), json!("not a url"), json!(5)] {
            let r = app
                .post(
                    "/api/v1/webhooks/test",
                    &app.admin_key,
                    &json!({"url": url}),
                )
                .await;
            assert_eq!(r.status, 422, "{url}: {}", r.body);
        }
        assert_eq!(app.audit_len().await, before);
        let other = app.other_workspace("rival").await;
        let r = app.get(&format!("/api/v1/deliveries/{id}"), &other).await;
        assert_eq!(r.status, 404, "{}", r.body);
        app.stop().await;
    }
);

// A delivery given up while its receiver was down is tried again by hand once it is back:
// same webhook-id, a fresh schedule, attempts numbered on, audited; only a dead one can be.
both_backends!(a_dead_delivery_can_be_retried, |backend| async move {
    let app = TestApp::spawn_with(backend, |c| c.retry_horizon_secs = 1).await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Reply::status(503));
    let r = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "x", "webhook_url": receiver.url}),
        )
        .await;
    let ev = r.body["evaluation_id"].as_str().unwrap().to_owned();
    let body = app.deliveries_until(&ev, settled).await;
    let dead = &body["deliveries"][0];
    assert_eq!(dead["status"], "dead", "{body}");
    let id = dead["id"].as_str().unwrap().to_owned();
    let tried = dead["attempts"].as_array().unwrap().len();

    let other = app.other_workspace("rival").await;
    let r = app
        .post(
            &format!("/api/v1/deliveries/{id}/retry"),
            &other,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "another workspace's delivery: {}", r.body);

    receiver.answer_by_default(Reply::status(200));
    let r = app
        .post(
            &format!("/api/v1/deliveries/{id}/retry"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["status"] == "queued" || r.body["status"] == "running" || r.body["status"] == "done",
        "{}",
        r.body
    );
    let done = app
        .get_until(&format!("/api/v1/deliveries/{id}"), |d| {
            d["status"] == "done"
        })
        .await;
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), tried + 1, "{done}");
    assert_eq!(attempts[tried]["attempt"], tried as i64 + 1);
    assert_eq!(attempts[tried]["status_code"], 200);
    let got = receiver.received();
    assert!(got.iter().all(|g| g.id == id), "one webhook-id throughout");

    // Done now: not retried again.
    let r = app
        .post(
            &format!("/api/v1/deliveries/{id}/retry"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("is done"),
        "{}",
        r.body
    );
    let r = app
        .post(
            "/api/v1/deliveries/msg_nope/retry",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let retried = app
        .timeline_events(&app.admin_key, &ev, "delivery.retried")
        .await;
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0]["data"]["job_id"], id.as_str());
    assert_eq!(retried[0]["data"]["attempts_before"], tried as i64);
    app.stop().await;
});
