//! What the people who answer for the agents rely on (SPEC §8), over HTTP on both stores:
//! execution receipts, and (SPEC §9) replaying a draft against history and comparing versions.

mod common;

use agentnexus_testkit::both_backends;
use common::{PAYMENTS, TestApp};
use serde_json::json;

// The executing system reports what it did. A receipt for what was decided, with its hash,
// conforms; executing what was not decided, or something else than what was, does not, and
// says why; the evaluation carries the receipt from then on; a second receipt is refused and
// changes nothing; each is audited; bad reports and other workspaces' evaluations change
// nothing.
both_backends!(
    receipts_say_whether_what_ran_is_what_was_decided,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
        let agent = app.key("agent").await;
        let decide = |body| app.evaluate(&agent, body);
        let allowed = decide(
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1200}),
        )
        .await
        .body;
        let denied = decide(json!({"agent_id": "ops-bot", "action": "db.delete", "context": {"environment": "production"}})).await.body;
        let pending = decide(
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 75000}),
        )
        .await
        .body;
        assert_eq!(
            (
                allowed["status"].as_str(),
                denied["status"].as_str(),
                pending["status"].as_str()
            ),
            (Some("allowed"), Some("denied"), Some("pending"))
        );
        let receipt = |ev: &serde_json::Value| {
            format!(
                "/api/v1/evaluations/{}/receipt",
                ev["evaluation_id"].as_str().unwrap()
            )
        };

        // What was decided, as decided.
        let r = app
        .post(&receipt(&allowed), &agent, &json!({"outcome": "executed", "proposal_hash": allowed["proposal_hash"], "detail": {"refund_id": "re_1"}}))
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["evaluation_id"], allowed["evaluation_id"]);
        assert_eq!(r.body["receipt"]["outcome"], "executed");
        assert_eq!(r.body["receipt"]["conforms"], true, "{}", r.body);
        assert_eq!(r.body["receipt"]["problems"], json!([]));
        assert_eq!(r.body["receipt"]["detail"], json!({"refund_id": "re_1"}));
        assert!(
            r.body["receipt"]["reported_by"]
                .as_str()
                .unwrap()
                .starts_with("key:")
        );
        let read = app
            .get(
                &format!(
                    "/api/v1/evaluations/{}",
                    allowed["evaluation_id"].as_str().unwrap()
                ),
                &agent,
            )
            .await;
        assert_eq!(read.body["receipt"], r.body["receipt"]);

        // One receipt per evaluation: a second is refused and the first stays.
        let again = app
            .post(&receipt(&allowed), &agent, &json!({"outcome": "failed"}))
            .await;
        again.problem(409);
        let read = app
            .get(
                &format!(
                    "/api/v1/evaluations/{}",
                    allowed["evaluation_id"].as_str().unwrap()
                ),
                &agent,
            )
            .await;
        assert_eq!(read.body["receipt"]["outcome"], "executed");

        // Executed though denied, with another proposal's hash: both problems named.
        let r = app
            .post(
                &receipt(&denied),
                &app.admin_key,
                &json!({"outcome": "executed", "proposal_hash": allowed["proposal_hash"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["receipt"]["conforms"], false);
        assert_eq!(
            r.body["receipt"]["problems"],
            json!([
                "executed while the evaluation is denied",
                "the proposal hash differs from the evaluation's: what ran is not what was decided"
            ])
        );

        // Executed while still waiting for a human, without a hash; skipped is fine.
        let r = app
            .post(&receipt(&pending), &agent, &json!({"outcome": "executed"}))
            .await;
        assert_eq!(
            r.body["receipt"]["problems"],
            json!([
                "executed while the evaluation is pending",
                "executed without a proposal hash to compare"
            ])
        );

        // Each receipt is in the evaluation's timeline.
        let events = app
            .timeline_events(
                &agent,
                denied["evaluation_id"].as_str().unwrap(),
                "receipt.recorded",
            )
            .await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["conforms"], false);
        assert_eq!(events[0]["data"]["outcome"], "executed");

        // Bad reports: 422 naming the field, nothing recorded.
        let fresh = decide(
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 100}),
        )
        .await
        .body;
        for (body, field) in [
            (json!({"outcome": "done"}), "outcome"),
            (
                json!({"outcome": "executed", "proposal_hash": "abc"}),
                "proposal_hash",
            ),
            (json!({"outcome": "executed", "detail": [1]}), "detail"),
            (
                json!({"outcome": "executed", "detail": {"x": "y".repeat(17 * 1024)}}),
                "detail",
            ),
            (json!({"outcome": "executed", "extra": 1}), "extra"),
            (json!({}), "outcome"),
        ] {
            let r = app.post(&receipt(&fresh), &agent, &body).await;
            let problem = r.problem(422);
            assert!(problem.to_string().contains(field), "{field}: {problem}");
        }
        let read = app
            .get(
                &format!(
                    "/api/v1/evaluations/{}",
                    fresh["evaluation_id"].as_str().unwrap()
                ),
                &agent,
            )
            .await;
        assert_eq!(read.body["receipt"], serde_json::Value::Null);

        // Another workspace's evaluation, and an unknown one: 404, nothing recorded.
        let other = app.other_workspace("acme").await;
        app.post(&receipt(&fresh), &other, &json!({"outcome": "skipped"}))
            .await
            .problem(404);
        app.post(
            "/api/v1/evaluations/ev_nosuchevaluation/receipt",
            &agent,
            &json!({"outcome": "skipped"}),
        )
        .await
        .problem(404);
        let read = app
            .get(
                &format!(
                    "/api/v1/evaluations/{}",
                    fresh["evaluation_id"].as_str().unwrap()
                ),
                &agent,
            )
            .await;
        assert_eq!(read.body["receipt"], serde_json::Value::Null);
        app.stop().await;
    }
);

const REFUNDS: &str = "name: refunds
rules:
  - id: small
    when: action == \"refund\" && amount_cents <= 5000
    effect: allow
  - id: large
    when: action == \"refund\" && amount_cents > 5000
    effect: deny
";

// SPEC §9's replay: the period's recorded evaluations decided again with a draft, across
// pages of history, with exact counts and the newest changed evaluations as examples; a draft
// beside the stored policies; the limit and the period respected; nothing recorded; bad
// drafts, periods and limits refused.
both_backends!(
    replay_counts_exactly_what_a_draft_would_change,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("refunds", REFUNDS).await.status, 200);
        let agent = app.key("agent").await;
        let start = chrono::Utc::now() - chrono::Duration::seconds(1);
        // 10,000 refunds of 0, 10, 20 … 99,990 cents (501 allowed, 9,499 denied), recorded by
        // four agents' calls at once.
        let record = async |range: std::ops::Range<i64>| {
            let mut ids = Vec::new();
            for i in range {
                let r = app
                    .evaluate(
                        &agent,
                        json!({"agent_id": "bot", "action": "refund", "amount_cents": i * 10}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                ids.push((i * 10, r.body["evaluation_id"].as_str().unwrap().to_owned()));
            }
            ids
        };
        let (a, b, c, d) = tokio::join!(
            record(0..2500),
            record(2500..5000),
            record(5000..7500),
            record(7500..10_000)
        );
        let ids: Vec<(i64, String)> = [a, b, c, d].concat();
        let audit = app.audit_len().await;
        let owned = app;
        let app = &owned;
        let replay = |body: serde_json::Value| async move {
            app.post("/api/v1/policies/replay", &app.admin_key, &body)
                .await
        };

        // Small refunds up to 3,000 cents only: the 200 between 3,010 and 5,000 flip to deny.
        let draft = REFUNDS
            .replace("<= 5000", "<= 3000")
            .replace("> 5000", "> 3000");
        let r = replay(json!({"policy": draft})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["evaluated"], 10_000);
        assert_eq!(r.body["changed"], 200);
        assert_eq!(r.body["transitions"], json!({"allow->deny": 200}));
        let mut flipped: Vec<&String> = ids
            .iter()
            .filter(|(amount, _)| (3010..=5000).contains(amount))
            .map(|(_, id)| id)
            .collect();
        flipped.sort_unstable_by(|a, b| b.cmp(a));
        let examples = r.body["examples"].as_array().unwrap();
        let shown: Vec<&str> = examples
            .iter()
            .map(|e| e["evaluation_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            shown,
            flipped[..20].iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(examples[0]["before"], json!({"decision": "allow"}));
        assert_eq!(
            examples[0]["after"],
            json!({"decision": "deny", "matched_rules": [{"policy": "refunds", "rule": "large", "effect": "deny"}]})
        );

        // The same policy again: nothing changes. A draft beside it denying refunds under 100
        // cents: the ten smallest flip.
        let r = replay(json!({"policy": REFUNDS})).await;
        assert_eq!(
            (r.body["evaluated"].as_i64(), r.body["changed"].as_i64()),
            (Some(10_000), Some(0))
        );
        let beside =
            "name: tiny\nrules:\n  - id: tiny\n    when: amount_cents < 100\n    effect: deny\n";
        let r = replay(json!({"policy": beside})).await;
        assert_eq!(
            r.body["transitions"],
            json!({"allow->deny": 10}),
            "{}",
            r.body
        );

        // The limit takes the newest; a period before them all holds none.
        let r = replay(json!({"policy": draft, "limit": 100})).await;
        assert_eq!(
            (r.body["evaluated"].as_i64(), r.body["changed"].as_i64()),
            (Some(100), Some(0))
        );
        let before = (start - chrono::Duration::days(1)).to_rfc3339();
        let r = replay(json!({"policy": draft, "to": start.to_rfc3339(), "from": before})).await;
        assert_eq!(r.body["evaluated"], 0, "{}", r.body);

        // Nothing recorded.
        assert_eq!(app.audit_len().await, audit);

        // Refused: an invalid draft, a bad period, a bad limit.
        for (body, names) in [
            (json!({"policy": "name: x\nrules: []\n"}), "policy"),
            (json!({"policy": REFUNDS, "from": "yesterday"}), "from"),
            (json!({"policy": REFUNDS, "limit": 0}), "limit"),
            (json!({"policy": REFUNDS, "limit": 100001}), "limit"),
        ] {
            let r = replay(body).await;
            let problem = r.problem(422);
            assert!(problem.to_string().contains(names), "{names}: {problem}");
        }
        // An agent key may not.
        assert_eq!(
            app.post(
                "/api/v1/policies/replay",
                &agent,
                &json!({"policy": REFUNDS})
            )
            .await
            .status,
            403
        );
        owned.stop().await;
    }
);

// Versions compared: the unified diff of two versions' documents.
both_backends!(versions_diff_as_unified_text, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("refunds", REFUNDS).await.status, 200);
    let changed = REFUNDS.replace("<= 5000", "<= 3000");
    assert_eq!(app.put_policy("refunds", &changed).await.status, 200);
    let r = app
        .get("/api/v1/policies/refunds/versions/1/diff/2", &app.admin_key)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["name"].as_str(),
            r.body["from"].as_i64(),
            r.body["to"].as_i64()
        ),
        (Some("refunds"), Some(1), Some(2))
    );
    let diff = r.body["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- refunds v1\n+++ refunds v2\n"),
        "{diff}"
    );
    assert!(
        diff.contains("\n-    when: action == \"refund\" && amount_cents <= 5000\n"),
        "{diff}"
    );
    assert!(
        diff.contains("\n+    when: action == \"refund\" && amount_cents <= 3000\n"),
        "{diff}"
    );
    let same = app
        .get("/api/v1/policies/refunds/versions/2/diff/2", &app.admin_key)
        .await;
    assert_eq!(same.body["diff"], "");
    app.get("/api/v1/policies/refunds/versions/1/diff/9", &app.admin_key)
        .await
        .problem(404);
    let other = app.other_workspace("acme").await;
    app.get("/api/v1/policies/refunds/versions/1/diff/2", &other)
        .await
        .problem(404);
    app.stop().await;
});
