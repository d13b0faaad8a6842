//! Members and roles, and approval stages that must reach somebody, on both stores.

mod common;

use agentnexus_testkit::both_backends;
use common::TestApp;
use serde_json::json;

const ROLE_ONLY: &str = "name: payouts\nrules:\n  - id: big-payout\n    when: amount_cents > 100\n    effect: require_approval\n    approval:\n      stages:\n        - name: treasury\n          approvers: [\"role:treasury\"]\n        - name: cfo\n          approvers: [\"cfo@example.com\"]\n  - id: rest\n    effect: allow\n";

both_backends!(members_are_managed_and_audited, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let listed = app.get("/api/v1/members", &key).await;
    assert_eq!(
        listed.body["members"][0]["roles"],
        json!(["owner"]),
        "the bootstrap owner"
    );
    let owner_id = listed.body["members"][0]["id"].as_str().unwrap().to_owned();

    let added = app.post("/api/v1/members", &key, &json!({"email": " Alice@Example.com ", "name": "Alice", "roles": ["finance", "approver", "finance"]})).await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["email"], "alice@example.com");
    assert_eq!(added.body["roles"], json!(["finance", "approver"]));
    let alice = added.body["id"].as_str().unwrap().to_owned();
    let default_role = app
        .post(
            "/api/v1/members",
            &key,
            &json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(default_role.body["roles"], json!(["approver"]));

    app.post(
        "/api/v1/members",
        &key,
        &json!({"email": "alice@example.com"}),
    )
    .await
    .problem(409);
    app.post("/api/v1/members", &key, &json!({"email": "not-an-email"}))
        .await
        .problem(422);
    app.post(
        "/api/v1/members",
        &key,
        &json!({"email": "c@example.com", "roles": ["Fin Ance"]}),
    )
    .await
    .problem(422);
    app.post(
        "/api/v1/members",
        &key,
        &json!({"email": "c@example.com", "team": "x"}),
    )
    .await
    .problem(422);

    let patch = |id: String, body: serde_json::Value| {
        let (app, key) = (&app, key.clone());
        async move {
            app.request(
                reqwest::Method::PATCH,
                &format!("/api/v1/members/{id}"),
                Some(&key),
                Some(body.to_string().into()),
                Some("application/json"),
            )
            .await
        }
    };
    let changed = patch(alice.clone(), json!({"roles": ["treasury"], "name": null})).await;
    assert_eq!(
        (changed.body["roles"].clone(), changed.body["name"].clone()),
        (json!(["treasury"]), serde_json::Value::Null)
    );
    // The last owner stays an owner and stays a member.
    patch(owner_id.clone(), json!({"roles": ["admin"]}))
        .await
        .problem(409);
    app.delete(&format!("/api/v1/members/{owner_id}"), &key)
        .await
        .problem(409);
    patch("usr_nope".into(), json!({"roles": []}))
        .await
        .problem(404);

    let removed = app.delete(&format!("/api/v1/members/{alice}"), &key).await;
    assert_eq!(removed.body["email"], "alice@example.com");
    app.delete(&format!("/api/v1/members/{alice}"), &key)
        .await
        .problem(404);

    // Another workspace sees none of them; agent keys administer nothing.
    let rival = agentnexus_app::accounts::create_workspace(
        &app.store,
        "rival",
        "r@rival.example",
        None,
        agentnexus_store::Actor::Cli,
    )
    .await
    .unwrap()
    .admin_key;
    assert_eq!(
        app.get("/api/v1/members", &rival).await.body["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bob = default_role.body["id"].as_str().unwrap();
    app.delete(&format!("/api/v1/members/{bob}"), &rival)
        .await
        .problem(404);
    let agent = app.key("agent").await;
    app.get("/api/v1/members", &agent).await.problem(403);

    let audit = app.get("/api/v1/audit?limit=1000", &key).await;
    let kinds: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in ["member.created", "member.updated", "member.removed"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(app.get("/api/v1/audit/verify", &key).await.body["ok"], true);
    app.stop().await;
});

both_backends!(stages_must_reach_somebody, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    // Nobody holds `treasury` yet: the policy would wait for no one.
    let r = app.put_policy("payouts", ROLE_ONLY).await;
    let p = r.problem(422);
    assert_eq!(p["errors"][0]["rule"], "big-payout");
    assert_eq!(p["errors"][0]["field"], "approval.stages[0]");
    assert_eq!(p["errors"][0]["position"]["line"], 3);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("treasury")
    );
    assert_eq!(
        p["errors"].as_array().unwrap().len(),
        1,
        "the e-mail stage reaches its approver"
    );
    app.post(
        "/api/v1/members",
        &key,
        &json!({"email": "tess@example.com", "roles": ["treasury"]}),
    )
    .await;
    assert_eq!(app.put_policy("payouts", ROLE_ONLY).await.status, 200);
    app.stop().await;
});
