//! The MCP tools: `evaluate` and `get_evaluation`, over the same use cases as the REST API.

use std::time::Duration;

use agentnexus_app::evaluations::MAX_WAIT_SECS;
use agentnexus_app::types::EvaluationId;
use agentnexus_app::{App, Caller, Error};
use serde_json::{Map, Value, json};

use crate::wire::{EvaluateRequest, EvaluationDetail, EvaluationResponse};

fn cents(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": agentnexus_engine::MAX_CENTS,
        "description": description})
}

/// The evaluate request (SPEC §4) as JSON Schema.
fn evaluate_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "agent_id": {"type": "string", "minLength": 1, "maxLength": 256,
                "description": "The agent proposing the action."},
            "action": {"type": "string", "minLength": 1, "maxLength": 256,
                "description": "What the agent wants to do, e.g. stripe.refund."},
            "resource": {"type": "string", "maxLength": 1024,
                "description": "What it acts on, e.g. customer/cus_123."},
            "amount_cents": cents("Money the action moves, in cents (0 when absent)."),
            "cost_cents": cents("What the agent spent to get here, in cents."),
            "params": {"type": "object", "description": "The action's parameters."},
            "context": {"type": "object", "description": "Facts about the situation, e.g. environment."},
            "trace": {"type": "object", "description": "Trace metadata stored with the evaluation."},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 256,
                "description": "The same key within 24 hours returns the first evaluation."},
            "webhook_url": {"type": "string", "description": "http(s) URL for approval_required and terminal_outcome events."}
        },
        "required": ["agent_id", "action"],
        "additionalProperties": false
    })
}

/// The fields every answer about an evaluation has (the evaluate response of SPEC §4).
fn decision_properties() -> Map<String, Value> {
    let object = json!({"type": "object"});
    let Value::Object(p) = json!({
        "evaluation_id": {"type": "string"},
        "decision": {"type": "string", "enum": ["allow", "deny", "require_approval"]},
        "status": {"type": "string",
            "enum": ["allowed", "denied", "pending", "approved", "rejected", "expired"],
            "description": "Execute only on allowed or approved."},
        "reason": {"type": "string"},
        "matched_rules": {"type": "array", "items": object},
        "approval": {"type": "object", "description": "The tier, the rule and the stage waiting now."},
        "policy_versions": {"type": "object"},
        "proposal_hash": {"type": "string"},
        "errors": {"type": "array", "items": object},
        "created_at": {"type": "string"},
        "follow": {"type": "object",
            "description": "Where to follow a pending evaluation: the get_evaluation arguments and a URL."}
    }) else {
        unreachable!("a literal object")
    };
    p
}

fn evaluate_output() -> Value {
    json!({
        "type": "object",
        "properties": decision_properties(),
        "required": ["evaluation_id", "decision", "status", "reason", "matched_rules",
            "policy_versions", "proposal_hash", "created_at"]
    })
}

fn evaluation_output() -> Value {
    let mut properties = decision_properties();
    for (name, schema) in [
        ("agent_id", json!({"type": "string"})),
        ("action", json!({"type": "string"})),
        ("resource", json!({"type": ["string", "null"]})),
        ("amount_cents", json!({"type": "integer"})),
        ("cost_cents", json!({"type": "integer"})),
        ("params", json!({"type": "object"})),
        ("context", json!({"type": "object"})),
        ("trace", json!({"type": ["object", "null"]})),
        ("idempotency_key", json!({"type": ["string", "null"]})),
        (
            "stages",
            json!({"type": "array", "items": {"type": "object"}}),
        ),
        (
            "decisions",
            json!({"type": "array", "items": {"type": "object"}}),
        ),
        ("updated_at", json!({"type": "string"})),
    ] {
        properties.insert(name.into(), schema);
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": ["evaluation_id", "decision", "status", "reason", "agent_id", "action"]
    })
}

/// The tools as `tools/list` shows them.
pub fn list() -> Value {
    json!([
        {
            "name": "evaluate",
            "title": "Ask AgentNexus before a consequential action",
            "description": "Propose an action (a refund, a deploy, a deletion, an e-mail) and get \
                allow, deny or require_approval under the workspace's policies. Execute only when \
                status is allowed or approved. A pending evaluation needs a human: follow it with \
                get_evaluation.",
            "inputSchema": evaluate_input(),
            "outputSchema": evaluate_output(),
            "annotations": {"readOnlyHint": false, "destructiveHint": false,
                "idempotentHint": false, "openWorldHint": false}
        },
        {
            "name": "get_evaluation",
            "title": "Read an evaluation's current status",
            "description": "The evaluation with its current status, stages and human decisions. \
                With wait_seconds, waits (up to 60 s) for the status to change.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "evaluation_id": {"type": "string", "minLength": 1},
                    "wait_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS}
                },
                "required": ["evaluation_id"],
                "additionalProperties": false
            },
            "outputSchema": evaluation_output(),
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        }
    ])
}

/// What a tool call came to: structured content and a one-line summary, or an error of the
/// call itself (bad arguments, unknown evaluation), which MCP reports with `isError`.
pub enum Outcome {
    Done {
        structured: Value,
        summary: String,
    },
    Failed(String),
    /// The server failed (the store, say): a JSON-RPC internal error, logged, never shown.
    Broken(Error),
}

fn summarize(v: &Value) -> String {
    let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    format!(
        "{}: {} ({}) — {} [{}]",
        text("action"),
        text("decision"),
        text("status"),
        text("reason"),
        text("evaluation_id")
    )
}

fn failed(e: Error) -> Outcome {
    match e {
        Error::Invalid { detail, .. } => Outcome::Failed(detail),
        Error::NotFound => Outcome::Failed("no such evaluation in this workspace".into()),
        Error::Internal(_) | Error::Unavailable(_) => Outcome::Broken(e),
        other => Outcome::Failed(other.to_string()),
    }
}

/// Where an evaluation is followed: by the agent, the tool call to make; by its user, the
/// approval page, where an approver signs in to decide.
fn follow(app: &App, id: &str) -> Value {
    json!({
        "tool": "get_evaluation",
        "arguments": {"evaluation_id": id, "wait_seconds": MAX_WAIT_SECS},
        "url": app.sign_in_url(id),
    })
}

/// `evaluate`, with the request's `_meta` kept as trace metadata.
pub async fn evaluate(
    app: &App,
    caller: &Caller,
    arguments: Value,
    meta: Option<&Value>,
) -> Outcome {
    let mut req: EvaluateRequest = match serde_json::from_value(arguments) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("invalid arguments: {e}")),
    };
    if let Some(Value::Object(meta)) = meta {
        let mut trace = match req.trace.take() {
            Some(Value::Object(t)) => t,
            Some(other) => return Outcome::Failed(format!("trace must be an object, not {other}")),
            None => Map::new(),
        };
        for (k, v) in meta {
            trace.entry(k.clone()).or_insert_with(|| v.clone());
        }
        req.trace = Some(Value::Object(trace));
    }
    let action = req.action.clone();
    match app.evaluate(caller, req.into()).await {
        Ok(summary) => {
            let response = EvaluationResponse::from(summary);
            let mut structured = serde_json::to_value(&response).unwrap_or_default();
            if response.status == "pending" {
                structured["follow"] = follow(app, &response.evaluation_id);
            }
            structured["action"] = json!(action);
            let summary = summarize(&structured);
            structured.as_object_mut().map(|o| o.remove("action"));
            Outcome::Done {
                structured,
                summary,
            }
        }
        Err(e) => failed(e),
    }
}

/// `get_evaluation`, optionally waiting for the status to change.
pub async fn get_evaluation(app: &App, caller: &Caller, arguments: Value) -> Outcome {
    let Some(id) = arguments["evaluation_id"]
        .as_str()
        .filter(|s| !s.is_empty())
    else {
        return Outcome::Failed("evaluation_id is required".into());
    };
    let wait = match &arguments["wait_seconds"] {
        Value::Null => 0,
        v => match v.as_u64() {
            Some(n) if n <= MAX_WAIT_SECS => n,
            _ => return Outcome::Failed(format!("wait_seconds must be 0 to {MAX_WAIT_SECS}")),
        },
    };
    if let Some(extra) = arguments.as_object().and_then(|o| {
        o.keys()
            .find(|k| *k != "evaluation_id" && *k != "wait_seconds")
            .cloned()
    }) {
        return Outcome::Failed(format!("unknown argument `{extra}`"));
    }
    let id = EvaluationId::from(id);
    match app.evaluation(caller, &id, Duration::from_secs(wait)).await {
        Ok(ev) => {
            let pending = ev.status == agentnexus_store::Status::Pending;
            let mut structured =
                serde_json::to_value(EvaluationDetail::from(ev)).unwrap_or_default();
            if pending {
                structured["follow"] = follow(app, id.as_str());
            }
            let summary = summarize(&structured);
            Outcome::Done {
                structured,
                summary,
            }
        }
        Err(e) => failed(e),
    }
}
