//! The agent inventory and the kill switch (SPEC §8), over HTTP on both stores: every agent
//! seen is listed with its counts and spend, people describe agents, and suspending one agent
//! or the whole workspace denies its proposals at once (REST and MCP), ends what it had
//! pending (with `terminal_outcome` to the integrator), reaches other servers within seconds
//! and is audited.

mod common;

use std::time::Duration;

use agentnexus_testkit::both_backends;
use agentnexus_testkit::webhooks::Receiver;
use common::{PAYMENTS, TestApp};
use serde_json::{Value, json};

fn refund(agent: &str, cents: i64) -> Value {
    json!({"agent_id": agent, "action": "stripe.refund", "amount_cents": cents})
}

// Every agent evaluate has seen is in the inventory, with how often and when, and its spend
// as `spend` in policies counts it: also once the list's bulk catch-up (every 128 events) has
// taken the evaluations from the chain's tail into the table. Descriptions are set, replaced
// and checked; other workspaces' agents are not there.
both_backends!(the_inventory_lists_every_agent_seen, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
    let agent = app.key("agent").await;
    let admin = app.admin_key.clone();
    let mut created = Vec::new();
    for body in [
        json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1200, "cost_cents": 7}),
        json!({"agent_id": "ops-bot", "action": "db.delete", "context": {"environment": "production"}, "cost_cents": 3}),
    ] {
        let r = app.evaluate(&agent, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        created.push(r.body["created_at"].clone());
    }
    app.clock.advance(chrono::Duration::seconds(5));
    let r = app
        .evaluate(&agent, json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 100, "cost_cents": 5}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let last = r.body["created_at"].clone();

    let list = app.get("/api/v1/agents", &admin).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let agents = list.body["agents"].as_array().unwrap();
    let ids: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["billing-bot", "ops-bot"], "most recently seen first");
    let billing = &agents[0];
    assert_eq!(billing["status"], "active");
    assert_eq!(billing["evaluations"], 2);
    assert_eq!(
        billing["spend"],
        json!({"today_cents": 12, "month_cents": 12})
    );
    assert_eq!(billing["first_seen"], created[0]);
    assert_eq!(billing["last_seen"], last);
    assert_eq!(billing["suspension"], Value::Null);
    assert_eq!(billing["tools"], json!([]));
    assert_eq!(agents[1]["evaluations"], 1);

    // Described: every field set, then replaced (what is absent is cleared), and audited.
    let described = app
        .put(
            "/api/v1/agents/billing-bot",
            &admin,
            &json!({"owner": "finance-eng@example.com", "purpose": "Refunds under policy",
                "model": "gpt-5", "tools": ["stripe.refund", "crm.lookup"], "risk_tier": "high"}),
        )
        .await;
    assert_eq!(described.status, 200, "{}", described.body);
    assert_eq!(described.body["risk_tier"], "high");
    assert_eq!(
        described.body["tools"],
        json!(["stripe.refund", "crm.lookup"])
    );
    assert_eq!(described.body["evaluations"], 2, "counts are kept");
    let one = app.get("/api/v1/agents/billing-bot", &agent).await;
    assert_eq!(one.status, 403, "an agent key does not read the inventory");
    let one = app.get("/api/v1/agents/billing-bot", &admin).await;
    assert_eq!(one.body["owner"], "finance-eng@example.com");
    assert_eq!(one.body["model"], "gpt-5");
    let replaced = app
        .put(
            "/api/v1/agents/billing-bot",
            &admin,
            &json!({"owner": "ops@example.com"}),
        )
        .await;
    assert_eq!(replaced.body["owner"], "ops@example.com");
    assert_eq!(replaced.body["model"], Value::Null);
    assert_eq!(replaced.body["tools"], json!([]));
    for (body, field) in [
        (json!({"risk_tier": "extreme"}), "risk_tier"),
        (json!({"risk_tier": ""}), "risk_tier"),
        (json!({"risk_tier": " high"}), "risk_tier"),
        (json!({"owner": "a\u{7}b"}), "owner"),
        (json!({"tools": ["x\ny"]}), "tools"),
        (json!({"purpose": "p".repeat(2001)}), "purpose"),
    ] {
        let r = app.put("/api/v1/agents/billing-bot", &admin, &body).await;
        assert_eq!(
            r.problem(422)["errors"][0]["field"],
            field,
            "{body}: {}",
            r.body
        );
    }
    let unknown_field = app
        .put(
            "/api/v1/agents/billing-bot",
            &admin,
            &json!({"colour": "red"}),
        )
        .await;
    assert_eq!(unknown_field.status, 422, "{}", unknown_field.body);
    let one = app.get("/api/v1/agents/billing-bot", &admin).await;
    assert_eq!(
        one.body["owner"], "ops@example.com",
        "refused changes change nothing"
    );
    let updates: Vec<Value> = app.get("/api/v1/audit?limit=500", &admin).await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "agent.updated")
        .cloned()
        .collect();
    assert_eq!(updates.len(), 2);
    assert!(
        updates[0]["actor"].as_str().unwrap().starts_with("key:"),
        "{}",
        updates[0]
    );

    // An agent described before it is seen is listed, never seen; an unknown one is 404.
    let early = app
        .put(
            "/api/v1/agents/new-bot",
            &admin,
            &json!({"purpose": "Not deployed yet"}),
        )
        .await;
    assert_eq!(early.body["first_seen"], Value::Null);
    assert_eq!(early.body["evaluations"], 0);
    app.get("/api/v1/agents/never-seen", &admin)
        .await
        .problem(404);

    // Another workspace sees its own agents only.
    let other = app.other_workspace("other").await;
    assert_eq!(
        app.get("/api/v1/agents", &other).await.body["agents"],
        json!([])
    );
    app.get("/api/v1/agents/billing-bot", &other)
        .await
        .problem(404);

    // Past the list's bulk catch-up, the counts and spend come from the table and the tail
    // together: still exact.
    for i in 0..140 {
        let body = json!({"agent_id": format!("bulk-{}", i % 2), "action": "stripe.refund",
                          "amount_cents": 10, "cost_cents": 1});
        assert_eq!(app.evaluate(&agent, body).await.status, 200);
    }
    assert!(
        app.store.catch_up_lists().await.is_ok(),
        "the maintenance step runs"
    );
    let list = app.get("/api/v1/agents", &admin).await.body;
    let counts: Vec<(String, i64, i64)> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap().to_owned(),
                a["evaluations"].as_i64().unwrap(),
                a["spend"]["today_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("bulk-0".to_owned(), 70, 70),
        ("bulk-1".to_owned(), 70, 70),
        ("billing-bot".to_owned(), 2, 12),
        ("ops-bot".to_owned(), 1, 3),
        ("new-bot".to_owned(), 0, 0),
    ] {
        assert!(counts.contains(&expected), "{expected:?} in {counts:?}");
    }
    assert_eq!(counts.last().unwrap().0, "new-bot", "never seen: last");
    let one = app.get("/api/v1/agents/bulk-1", &admin).await;
    assert_eq!(one.body["evaluations"], 70);
    app.stop().await;
});

// Suspending an agent: what it had pending ends `rejected` with the reason (audited, and
// `terminal_outcome` to its webhook); every proposal of it is denied whatever the policies say,
// over REST and MCP, while other agents go on; resuming lets it act again. The workspace's
// kill switch does the same for every agent, and other workspaces are untouched.
both_backends!(suspending_stops_an_agent_at_once, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
    let receiver = Receiver::start().await;
    let agent = app.key("agent").await;
    let admin = app.admin_key.clone();
    let mut pending = refund("billing-bot", 90_000);
    pending["webhook_url"] = json!(receiver.url);
    let waiting = app.evaluate(&agent, pending).await.body;
    assert_eq!(waiting["status"], "pending");
    let id = waiting["evaluation_id"].as_str().unwrap().to_owned();
    let other_pending = app.evaluate(&agent, refund("ops-bot", 90_000)).await.body;

    // A reason is required, on one line.
    for body in [json!({}), json!({"reason": ""}), json!({"reason": "a\nb"})] {
        let r = app
            .post("/api/v1/agents/billing-bot/suspend", &admin, &body)
            .await;
        assert_eq!(r.problem(422)["errors"][0]["field"], "reason", "{body}");
    }
    assert_eq!(
        app.evaluate(&agent, refund("billing-bot", 100)).await.body["status"],
        "allowed",
        "refused suspensions change nothing"
    );

    let r = app
        .post(
            "/api/v1/agents/billing-bot/suspend",
            &admin,
            &json!({"reason": "refund loop in production"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(r.body["ended_evaluations"], 1);
    assert_eq!(r.body["suspension"]["reason"], "refund loop in production");
    assert_eq!(r.body["suspension"]["kill_switch"], false);

    // Its pending evaluation ended, with the reason, and the integrator was told.
    let ended = app
        .get(&format!("/api/v1/evaluations/{id}"), &agent)
        .await
        .body;
    assert_eq!(ended["status"], "rejected");
    assert_eq!(
        ended["reason"],
        "agent suspended: refund loop in production"
    );
    let deliveries = app
        .deliveries_until(&id, |d| {
            d["deliveries"].as_array().is_some_and(|ds| {
                ds.iter()
                    .any(|d| d["event"] == "terminal_outcome" && d["status"] == "done")
            })
        })
        .await;
    let done = |d: &&Value| d["event"] == "terminal_outcome" && d["status"] == "done";
    assert!(
        deliveries["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| done(&d)),
        "{deliveries}"
    );
    let outcome = receiver
        .received()
        .into_iter()
        .find(|r| r.body["event"] == "terminal_outcome")
        .expect("terminal_outcome delivered");
    assert_eq!(outcome.body["status"], "rejected");
    assert_eq!(
        outcome.body["reason"],
        "agent suspended: refund loop in production"
    );
    let rejected = app
        .timeline_events(&admin, &id, "evaluation.rejected")
        .await;
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["actor"].as_str().unwrap().starts_with("key:"));
    // Another agent's pending evaluation waits on.
    let other = app
        .get(
            &format!(
                "/api/v1/evaluations/{}",
                other_pending["evaluation_id"].as_str().unwrap()
            ),
            &agent,
        )
        .await;
    assert_eq!(other.body["status"], "pending");

    // Every proposal of it is denied, whatever the policies say; others go on.
    let denied = app.evaluate(&agent, refund("billing-bot", 100)).await.body;
    assert_eq!(
        (denied["decision"].as_str(), denied["status"].as_str()),
        (Some("deny"), Some("denied"))
    );
    assert_eq!(
        denied["reason"],
        "agent suspended: refund loop in production"
    );
    assert_eq!(denied["matched_rules"], json!([]));
    assert_eq!(
        app.evaluate(&agent, refund("ops-bot", 100)).await.body["status"],
        "allowed"
    );
    // Over MCP too.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "evaluate", "arguments": refund("billing-bot", 100)}});
    let mcp: Value = app
        .client
        .post(format!("{}/api/mcp", app.url))
        .bearer_auth(&agent)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&call)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let structured = &mcp["result"]["structuredContent"];
    assert_eq!(structured["decision"], "deny", "{mcp}");
    assert!(
        structured["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent suspended")
    );

    let suspended = app.get("/api/v1/audit?limit=500", &admin).await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "agent.suspended")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0]["data"]["agent_id"], "billing-bot");
    assert_eq!(suspended[0]["data"]["reason"], "refund loop in production");

    // Resumed: it acts again; resuming again changes nothing and audits nothing more.
    let r = app
        .post(
            "/api/v1/agents/billing-bot/resume",
            &admin,
            &json!({"reason": "fixed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    assert_eq!(
        app.evaluate(&agent, refund("billing-bot", 100)).await.body["status"],
        "allowed"
    );
    app.post("/api/v1/agents/billing-bot/resume", &admin, &json!({}))
        .await;
    let resumed = app.get("/api/v1/audit?limit=500", &admin).await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "agent.resumed")
        .count();
    assert_eq!(resumed, 1);
    app.post("/api/v1/agents/nobody/resume", &admin, &json!({}))
        .await
        .problem(404);

    // An agent not seen yet can be stopped before its first proposal.
    let r = app
        .post(
            "/api/v1/agents/rogue-bot/suspend",
            &admin,
            &json!({"reason": "not approved for production"}),
        )
        .await;
    assert_eq!(r.body["first_seen"], Value::Null);
    assert_eq!(
        app.evaluate(&agent, refund("rogue-bot", 100)).await.body["status"],
        "denied"
    );

    // The kill switch: every agent of the workspace, pending ones ended; not another
    // workspace's.
    let other_ws = app.other_workspace("elsewhere").await;
    let other_agent = app
        .post(
            "/api/v1/keys",
            &other_ws,
            &json!({"name": "agent", "scope": "agent"}),
        )
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .put("/api/v1/kill-switch", &admin, &json!({"engaged": true}))
        .await;
    assert_eq!(r.problem(422)["errors"][0]["field"], "reason");
    let r = app
        .put(
            "/api/v1/kill-switch",
            &admin,
            &json!({"engaged": true, "reason": "incident 42"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["engaged"], true);
    assert_eq!(r.body["reason"], "incident 42");
    assert_eq!(
        r.body["ended_evaluations"], 1,
        "ops-bot's pending evaluation"
    );
    assert!(r.body["engaged_by"].as_str().unwrap().starts_with("key:"));
    for who in ["ops-bot", "billing-bot", "brand-new"] {
        let d = app.evaluate(&agent, refund(who, 100)).await.body;
        assert_eq!(d["status"], "denied", "{who}");
        assert_eq!(
            d["reason"],
            "agent suspended: kill switch engaged: incident 42"
        );
    }
    let listed = app.get("/api/v1/agents/ops-bot", &admin).await.body;
    assert_eq!(listed["status"], "suspended");
    assert_eq!(listed["suspension"]["kill_switch"], true);
    // Another workspace goes on: its own policies decide (it has none: denied by default).
    let elsewhere = app
        .evaluate(&other_agent, refund("ops-bot", 100))
        .await
        .body;
    assert_eq!(elsewhere["status"], "denied");
    assert!(
        !elsewhere["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent suspended"),
        "{elsewhere}"
    );
    assert_eq!(
        app.get("/api/v1/kill-switch", &admin).await.body["engaged"],
        true
    );
    // A reason given says something, releasing too; a refused release changes nothing.
    let r = app
        .put(
            "/api/v1/kill-switch",
            &admin,
            &json!({"engaged": false, "reason": " "}),
        )
        .await;
    assert_eq!(r.problem(422)["errors"][0]["field"], "reason");
    assert_eq!(
        app.get("/api/v1/kill-switch", &admin).await.body["engaged"],
        true
    );
    let r = app
        .put("/api/v1/kill-switch", &admin, &json!({"engaged": false}))
        .await;
    assert_eq!(r.body["engaged"], false);
    assert_eq!(
        app.evaluate(&agent, refund("ops-bot", 100)).await.body["status"],
        "allowed"
    );
    assert_eq!(
        app.evaluate(&agent, refund("rogue-bot", 100)).await.body["status"],
        "denied",
        "its own suspension outlives the kill switch"
    );
    let kinds: Vec<String> = app.get("/api/v1/audit?limit=500", &admin).await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("kill_switch."))
        .collect();
    assert_eq!(kinds, ["kill_switch.engaged", "kill_switch.released"]);
    app.stop().await;
});

// Another server learns of a suspension within its refresh interval, and what a server let
// through before it knew (a pending evaluation made from its stale cache) is ended by the
// refresh loop.
both_backends!(a_suspension_reaches_every_server, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("payments", PAYMENTS).await.status, 200);
    let agent = app.key("agent").await;
    // One that refreshes every second, one that never does within this test.
    let quick = app.replica(|c| c.refresh_secs = 1).await;
    let stale = app.replica(|c| c.refresh_secs = 3600).await;
    for server in [&quick, &stale] {
        assert_eq!(
            server
                .evaluate(&agent, refund("billing-bot", 100))
                .await
                .body["status"],
            "allowed"
        );
    }
    let r = app
        .post(
            "/api/v1/agents/billing-bot/suspend",
            &app.admin_key,
            &json!({"reason": "stop"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let start = std::time::Instant::now();
    loop {
        let d = quick
            .evaluate(&agent, refund("billing-bot", 100))
            .await
            .body;
        if d["status"] == "denied" {
            assert_eq!(d["reason"], "agent suspended: stop");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {d} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stale server lets a proposal through into pending; a refresh loop ends it.
    let late = stale
        .evaluate(&agent, refund("billing-bot", 90_000))
        .await
        .body;
    assert_eq!(late["status"], "pending");
    let id = late["evaluation_id"].as_str().unwrap();
    let ended = app
        .get_until(&format!("/api/v1/evaluations/{id}"), |e| {
            e["status"] == "rejected"
        })
        .await;
    assert_eq!(ended["reason"], "agent suspended: stop");
    quick.stop().await;
    stale.stop().await;
    app.stop().await;
});
