//! A stand-in for the OpenAI Responses API (<https://platform.openai.com/docs/api-reference/responses>),
//! which tests cannot reach: a real HTTP server on loopback, driven by the official SDKs through
//! `OPENAI_BASE_URL`. Its "model" is a script: asked with tools and no tool result yet, it calls
//! one tool with the arguments it was given; given a tool's result, it answers a message
//! quoting that result's `status` (or the whole result when it has none), so what the agent
//! prints comes from what the tool really answered.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Script {
    tool: String,
    arguments: Value,
    requests: Vec<Value>,
}

/// A model that calls `tool` with `arguments`, then reports what the tool answered.
pub struct FakeResponses {
    /// What `OPENAI_BASE_URL` points at (ends in `/v1`).
    pub base_url: String,
    state: Arc<Mutex<Script>>,
    _stop: oneshot::Sender<()>,
}

impl FakeResponses {
    pub async fn start(tool: &str, arguments: Value) -> FakeResponses {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Script {
            tool: tool.to_owned(),
            arguments,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/responses", post(respond))
            .with_state(state.clone());
        let stop = crate::serve_until_dropped(listener, app);
        FakeResponses {
            base_url: format!("{base}/v1"),
            state,
            _stop: stop,
        }
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// The text of a tool result: a string, or a list of content parts.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    }
}

async fn respond(
    State(state): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > "Bearer ".len());
    if !authorized {
        let error = json!({"error": {"message": "Missing bearer authentication", "type": "invalid_request_error", "code": null, "param": null}});
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    }
    if body["stream"] == true {
        let error = json!({"error": {"message": "this stand-in does not stream", "type": "invalid_request_error", "code": null, "param": null}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let mut script = state.lock().unwrap();
    script.requests.push(body.clone());
    let n = script.requests.len();
    let result = body["input"].as_array().and_then(|items| {
        items
            .iter()
            .rev()
            .find(|i| i["type"] == "function_call_output")
            .map(|i| output_text(&i["output"]))
    });
    let offered = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["name"] == script.tool.as_str()));
    let item = match result {
        Some(text) => {
            let said = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned))
                .unwrap_or(text);
            json!({"type": "message", "id": format!("msg_{n}"), "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": format!("{} answered: {said}", script.tool), "annotations": []}]})
        }
        None if offered => json!({
            "type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"),
            "name": script.tool, "arguments": script.arguments.to_string(), "status": "completed"
        }),
        None => {
            json!({"type": "message", "id": format!("msg_{n}"), "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": format!("no tool named {}", script.tool), "annotations": []}]})
        }
    };
    Json(json!({
        "id": format!("resp_{n}"), "object": "response", "created_at": 1_767_225_600, "status": "completed",
        "model": body["model"], "output": [item], "parallel_tool_calls": true, "tool_choice": "auto",
        "tools": body["tools"], "error": null, "incomplete_details": null, "instructions": body["instructions"],
        "metadata": {}, "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}
    }))
    .into_response()
}
