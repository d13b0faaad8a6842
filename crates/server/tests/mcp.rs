//! The MCP gateway: the official Python SDK client in both protocol generations, and raw HTTP
//! for every error path.

mod common;

use std::process::Command;
use std::sync::Mutex;

use agentnexus_testkit::both_backends;
use common::{PAYMENTS, TestApp};
use serde_json::{Value, json};

/// A Python with the official `mcp` SDK: `AGENTNEXUS_MCP_PYTHON` (what `.ci/run` sets up), or
/// a virtual environment made once.
fn python() -> String {
    agentnexus_testkit::tools::python(
        "AGENTNEXUS_MCP_PYTHON",
        "agentnexus-mcp-venv-2.3.0",
        "import mcp",
        &["mcp==2.3.0"],
    )
}

both_backends!(official_client_in_both_generations, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let agent = app.key("agent").await;
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        // The client runs in its own process; this runtime keeps serving meanwhile.
        let r = tokio::task::spawn_blocking({
            let (url, key) = (app.url.clone(), agent.clone());
            move || {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");
                let out = Command::new(python())
                    .args([script, &format!("{url}/api/mcp"), &key, mode])
                    .output()
                    .expect("python runs");
                assert!(
                    out.status.success(),
                    "the MCP client failed ({mode}):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<Value>(&out.stdout).expect("one JSON object")
            }
        })
        .await
        .unwrap();
        assert_eq!(r["protocol_version"], version);
        let tools = r["tools"].as_object().unwrap();
        assert_eq!(
            tools.keys().collect::<Vec<_>>(),
            vec!["evaluate", "get_evaluation"]
        );
        assert_eq!(
            tools["evaluate"]["input"]["required"],
            json!(["agent_id", "action"])
        );
        assert!(tools["evaluate"]["output"]["properties"]["decision"].is_object());

        let allow = &r["allow"];
        assert_eq!(allow["is_error"], false);
        assert_eq!(
            (
                allow["structured"]["decision"].as_str(),
                allow["structured"]["status"].as_str()
            ),
            (Some("allow"), Some("allowed"))
        );
        assert!(
            allow["text"][0]
                .as_str()
                .unwrap()
                .contains("allow (allowed)"),
            "{allow}"
        );
        // A denied proposal is a successful call whose result says deny.
        let deny = &r["deny"];
        assert_eq!(
            (
                deny["is_error"].as_bool(),
                deny["structured"]["decision"].as_str()
            ),
            (Some(false), Some("deny"))
        );
        assert_eq!(
            deny["structured"]["reason"],
            "Production data is never deleted by agents"
        );
        let pending = &r["pending"]["structured"];
        assert_eq!(pending["status"], "pending");
        let id = pending["evaluation_id"].as_str().unwrap();
        assert_eq!(pending["follow"]["tool"], "get_evaluation");
        // For people: the approval page's sign-in.
        let page = format!("{}/approvals/evaluations/{id}", app.url);
        assert_eq!(pending["follow"]["url"], page.as_str());
        assert_eq!(r["get"]["structured"]["evaluation_id"], id);
        assert_eq!(r["get"]["structured"]["stages"][0]["name"], "finance");
        assert_eq!(r["bad_arguments"]["is_error"], true);
        assert!(
            r["bad_arguments"]["text"][0]
                .as_str()
                .unwrap()
                .contains("action"),
            "{}",
            r["bad_arguments"]
        );
        assert_eq!(r["unknown_evaluation"]["is_error"], true);
        assert_eq!(r["unknown_tool"]["code"], -32602, "{}", r["unknown_tool"]);

        // Trace metadata from params._meta is stored and in the timeline.
        let allow_id = allow["structured"]["evaluation_id"].as_str().unwrap();
        let ev = app
            .get(&format!("/api/v1/evaluations/{allow_id}"), &agent)
            .await;
        assert_eq!(ev.body["trace"]["session_id"], "sess-42");
        assert!(
            ev.body["trace"]["traceparent"]
                .as_str()
                .unwrap()
                .starts_with("00-0af7")
        );
        let timeline = app
            .get(&format!("/api/v1/evaluations/{allow_id}/timeline"), &agent)
            .await;
        assert_eq!(
            timeline.body["events"][0]["data"]["trace"]["session_id"],
            "sess-42"
        );

        // A client that can show a URL is sent the link to follow (2026-07-28 input_required);
        // the retry answers the same evaluation, never a second one.
        let elicit = &r["elicit"];
        let result = &elicit["result"]["structured"];
        assert_eq!(result["status"], "pending");
        let elicit_id = result["evaluation_id"].as_str().unwrap();
        match mode {
            "legacy" => assert_eq!(elicit["elicitations"], json!([])),
            _ => {
                let e = &elicit["elicitations"].as_array().unwrap();
                assert_eq!(e.len(), 1, "{elicit}");
                assert_eq!(e[0]["mode"], "url");
                assert!(e[0]["url"].as_str().unwrap().ends_with(elicit_id));
            }
        }
        let list = app
            .get(
                "/api/v1/evaluations?agent_id=mcp-bot&limit=500",
                &app.admin_key,
            )
            .await;
        let same = list.body["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["amount_cents"] == 75000)
            .count();
        assert_eq!(
            same,
            if mode == "legacy" { 1 } else { 2 },
            "one evaluation per elicit run"
        );
    }
    app.stop().await;
});

/// A directory whose node_modules holds the official TypeScript SDK:
/// `AGENTNEXUS_MCP_NODE_MODULES` (what `.ci/run` sets up), or one installed here once.
fn node_sdk() -> std::path::PathBuf {
    static MADE: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);
    if let Ok(dir) = std::env::var("AGENTNEXUS_MCP_NODE_MODULES") {
        return dir.into();
    }
    let mut made = MADE.lock().unwrap();
    if let Some(dir) = made.as_ref() {
        return dir.clone();
    }
    let dir = std::env::temp_dir().join("agentnexus-mcp-npm-1.32.2");
    if !dir.join("node_modules/@modelcontextprotocol/sdk").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("npm")
            .args([
                "install",
                "--silent",
                "--no-save",
                "--no-audit",
                "--no-fund",
            ])
            .arg("@modelcontextprotocol/sdk@1.32.2")
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install the MCP TypeScript SDK (npm install @modelcontextprotocol/sdk@1.32.2)"
        );
    }
    *made = Some(dir.clone());
    dir
}

both_backends!(official_typescript_client, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.put_policy("payments", PAYMENTS).await;
    let agent = app.key("agent").await;
    let r = tokio::task::spawn_blocking({
        let (url, key) = (app.url.clone(), agent.clone());
        move || {
            // ES modules resolve packages from the script's own directory.
            let dir = node_sdk();
            let script = dir.join("agentnexus-client.mjs");
            std::fs::copy(
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.mjs"),
                &script,
            )
            .unwrap();
            let out = Command::new("node")
                .arg(&script)
                .args([&format!("{url}/api/mcp"), &key])
                .output()
                .expect("node runs");
            assert!(
                out.status.success(),
                "the TypeScript MCP client failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).expect("one JSON object")
        }
    })
    .await
    .unwrap();
    assert_eq!(r["protocol_version"], "2025-11-25");
    assert_eq!(r["server"]["name"], "agentnexus");
    assert_eq!(r["tools"], json!(["evaluate", "get_evaluation"]));
    assert_eq!(
        (
            r["allow"]["is_error"].as_bool(),
            r["allow"]["structured"]["status"].as_str()
        ),
        (Some(false), Some("allowed"))
    );
    assert_eq!(
        (
            r["deny"]["is_error"].as_bool(),
            r["deny"]["structured"]["decision"].as_str()
        ),
        (Some(false), Some("deny"))
    );
    assert_eq!(r["pending"]["structured"]["status"], "pending");
    assert_eq!(
        r["get"]["structured"]["evaluation_id"],
        r["pending"]["structured"]["evaluation_id"]
    );
    let id = r["allow"]["structured"]["evaluation_id"].as_str().unwrap();
    let ev = app.get(&format!("/api/v1/evaluations/{id}"), &agent).await;
    assert_eq!(ev.body["trace"]["session_id"], "npm-1");
    app.stop().await;
});

/// A raw POST to the gateway.
async fn post(
    app: &TestApp,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/mcp", app.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body.to_owned()).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn modern_call(method: &str, params: Value) -> String {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string()
}

both_backends!(raw_protocol_errors, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let bearer = format!("Bearer {}", app.admin_key);
    let auth = ("authorization", bearer.as_str());
    let legacy = |method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
    };
    let code = |v: &Value| v["error"]["code"].as_i64();

    // No key, or a wrong one: 401 with WWW-Authenticate and a readable JSON-RPC error.
    let (status, headers, body) = post(&app, &[], &legacy("tools/list", json!({}))).await;
    assert_eq!((status, code(&body)), (401, Some(-32010)));
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"agentnexus\"");
    let (status, _, _) = post(
        &app,
        &[("authorization", "Bearer anx_nothing")],
        &legacy("ping", json!({})),
    )
    .await;
    assert_eq!(status, 401);

    // Transport and JSON-RPC shape.
    let (status, _, body) = post(&app, &[auth], "{not json").await;
    assert_eq!(
        (status, code(&body), body["id"].clone()),
        (400, Some(-32700), Value::Null)
    );
    let batch = format!("[{}]", legacy("ping", json!({})));
    let (status, _, body) = post(&app, &[auth], &batch).await;
    assert_eq!((status, code(&body)), (400, Some(-32600)));
    let (status, _, body) =
        post(&app, &[auth], r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).await;
    assert_eq!((status, code(&body)), (400, Some(-32600)));
    let (status, _, body) = post(
        &app,
        &[auth],
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
    )
    .await;
    assert_eq!((status, code(&body)), (400, Some(-32600)));
    let (status, _, body) = post(
        &app,
        &[auth],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!((status, body), (202, Value::String(String::new())));
    let resp = app
        .client
        .get(format!("{}/api/mcp", app.url))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            resp.status().as_u16(),
            resp.headers()["allow"].to_str().unwrap()
        ),
        (405, "POST")
    );
    let resp = app
        .client
        .post(format!("{}/api/mcp", app.url))
        .header("authorization", &bearer)
        .header("content-type", "text/plain")
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = app
        .client
        .post(format!("{}/api/mcp", app.url))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(legacy("ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    let (status, _, _) = post(
        &app,
        &[auth, ("origin", "https://evil.example")],
        &legacy("ping", json!({})),
    )
    .await;
    assert_eq!(status, 403, "DNS rebinding: foreign origins are refused");
    let own = app.url.clone();
    let (status, _, _) = post(
        &app,
        &[auth, ("origin", own.as_str())],
        &legacy("ping", json!({})),
    )
    .await;
    assert_eq!(status, 200);

    // Legacy: negotiation, and errors inside a 200.
    let (_, _, body) = post(&app, &[auth], &legacy("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))).await;
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "agentnexus");
    let (_, _, body) = post(
        &app,
        &[auth],
        &legacy("initialize", json!({"protocolVersion": "2024-01-01"})),
    )
    .await;
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    let v = ("mcp-protocol-version", "2025-11-25");
    let (status, _, body) = post(&app, &[auth, v], &legacy("resources/list", json!({}))).await;
    assert_eq!(
        (status, code(&body), body["id"].as_i64()),
        (200, Some(-32601), Some(1))
    );
    let (status, _, body) = post(
        &app,
        &[auth, v],
        &legacy("tools/call", json!({"name": "nope", "arguments": {}})),
    )
    .await;
    assert_eq!((status, code(&body)), (200, Some(-32602)));
    let (status, _, body) = post(
        &app,
        &[auth, ("mcp-protocol-version", "2030-01-01")],
        &legacy("ping", json!({})),
    )
    .await;
    assert_eq!((status, code(&body)), (400, Some(-32022)));
    assert!(
        body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );

    // 2026-07-28: the envelope and the routing headers must agree.
    let m = ("mcp-protocol-version", "2026-07-28");
    let call = modern_call(
        "tools/call",
        json!({"name": "evaluate", "arguments": {"agent_id": "a", "action": "x"}}),
    );
    let (status, _, body) = post(
        &app,
        &[
            auth,
            m,
            ("mcp-method", "tools/call"),
            ("mcp-name", "evaluate"),
        ],
        &call,
    )
    .await;
    assert_eq!(
        (status, body["result"]["resultType"].as_str()),
        (200, Some("complete")),
        "{body}"
    );
    assert_eq!(body["result"]["structuredContent"]["decision"], "deny");
    let (status, _, body) = post(
        &app,
        &[
            auth,
            m,
            ("mcp-method", "tools/list"),
            ("mcp-name", "evaluate"),
        ],
        &call,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (400, Some(-32020)),
        "Mcp-Method differs from the body"
    );
    let (status, _, body) = post(
        &app,
        &[
            auth,
            m,
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_evaluation"),
        ],
        &call,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (400, Some(-32020)),
        "Mcp-Name differs from the body"
    );
    let (status, _, body) = post(&app, &[auth, m, ("mcp-method", "tools/call")], &call).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some(-32020)),
        "Mcp-Name missing"
    );
    let bare = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}).to_string();
    let (status, _, body) = post(&app, &[auth, m, ("mcp-method", "tools/list")], &bare).await;
    assert_eq!((status, code(&body)), (400, Some(-32602)), "no envelope");
    let older = modern_call("tools/list", json!({})).replace("\"2026-07-28\"", "\"2025-11-25\"");
    let (status, _, body) = post(&app, &[auth, m, ("mcp-method", "tools/list")], &older).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some(-32020)),
        "header and envelope versions differ"
    );
    let (status, _, body) = post(
        &app,
        &[auth, m, ("mcp-method", "ping")],
        &modern_call("ping", json!({})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (404, Some(-32601)),
        "ping is gone in 2026-07-28"
    );
    let (status, _, body) = post(
        &app,
        &[auth, m, ("mcp-method", "server/discover")],
        &modern_call("server/discover", json!({})),
    )
    .await;
    assert_eq!(
        (status, body["result"]["supportedVersions"].clone()),
        (200, json!(["2026-07-28"]))
    );
    assert_eq!(body["result"]["ttlMs"], 0);
    assert!(body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"].is_object());
    let unknown = modern_call("tools/call", json!({"name": "nope", "arguments": {}}));
    let (status, _, body) = post(
        &app,
        &[auth, m, ("mcp-method", "tools/call"), ("mcp-name", "nope")],
        &unknown,
    )
    .await;
    assert_eq!((status, code(&body)), (400, Some(-32602)));
    // A sealed state resumes only the call it was given for.
    app.put_policy("payments", PAYMENTS).await;
    let mut elicit = serde_json::from_str::<Value>(&modern_call(
        "tools/call",
        json!({"name": "evaluate", "arguments": {"agent_id": "a", "action": "stripe.refund", "amount_cents": 90000}}),
    ))
    .unwrap();
    elicit["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"elicitation": {"url": {}}});
    let tools_call = [
        auth,
        m,
        ("mcp-method", "tools/call"),
        ("mcp-name", "evaluate"),
    ];
    let (status, _, round1) = post(&app, &tools_call, &elicit.to_string()).await;
    assert_eq!(
        (status, round1["result"]["resultType"].as_str()),
        (200, Some("input_required")),
        "{round1}"
    );
    let state = round1["result"]["requestState"].clone();
    let mut retry = elicit.clone();
    retry["params"]["requestState"] = state.clone();
    retry["params"]["inputResponses"] = json!({"approval": {"action": "accept"}});
    let mut other = retry.clone();
    other["params"]["arguments"]["amount_cents"] = json!(95000);
    let (status, _, body) = post(&app, &tools_call, &other.to_string()).await;
    assert_eq!(
        (status, body["error"]["data"]["reason"].as_str()),
        (400, Some("invalid_request_state"))
    );
    let (status, _, round2) = post(&app, &tools_call, &retry.to_string()).await;
    assert_eq!(
        (status, round2["result"]["resultType"].as_str()),
        (200, Some("complete"))
    );
    assert_eq!(round2["result"]["structuredContent"]["status"], "pending");
    let url = round1["result"]["inputRequests"]["approval"]["params"]["url"]
        .as_str()
        .unwrap();
    assert!(
        url.ends_with(
            round2["result"]["structuredContent"]["evaluation_id"]
                .as_str()
                .unwrap()
        )
    );
    // Oversized bodies are JSON-RPC errors too.
    let huge = legacy(
        "tools/call",
        json!({"name": "evaluate", "arguments": {"agent_id": "a", "action": "x", "params": {"blob": "x".repeat(70_000)}}}),
    );
    let (status, _, body) = post(&app, &[auth], &huge).await;
    assert_eq!((status, code(&body)), (413, Some(-32600)));

    let forged = modern_call(
        "tools/call",
        json!({"name": "evaluate", "arguments": {"agent_id": "a", "action": "x"}, "requestState": "v1.AAAA", "inputResponses": {}}),
    );
    let (status, _, body) = post(
        &app,
        &[
            auth,
            m,
            ("mcp-method", "tools/call"),
            ("mcp-name", "evaluate"),
        ],
        &forged,
    )
    .await;
    assert_eq!(
        (status, body["error"]["data"]["reason"].as_str()),
        (400, Some("invalid_request_state"))
    );
    app.stop().await;
});
