//! What the people who answer for the agents rely on (SPEC §8), over HTTP on both stores:
//! execution receipts.

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
