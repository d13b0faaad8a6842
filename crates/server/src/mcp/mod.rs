//! The MCP gateway (SPEC §10): a stateless Model Context Protocol server over Streamable HTTP
//! at `POST /api/mcp`, speaking both generations — 2025-06-18 / 2025-11-25 (`initialize`
//! handshake, `MCP-Protocol-Version` header) and 2026-07-28 (no handshake: a `_meta` envelope
//! on every request, `Mcp-Method`/`Mcp-Name` headers, `resultType` on every result). Nothing is
//! kept between requests, so any number of servers can answer behind a load balancer.
//!
//! Written by hand rather than with `rmcp`: the gateway is two tools over our own use cases,
//! and what it must get exactly right (both generations on one stateless endpoint, header and
//! envelope checks, the input-required retry) is the protocol edge itself.

mod tools;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use agentnexus_app::crypto::Purpose;
use agentnexus_app::{App, Caller, Error};

const LEGACY_VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
const MODERN: &str = "2026-07-28";
const LATEST_LEGACY: &str = "2025-11-25";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined: the key is missing, unknown or revoked.
const UNAUTHORIZED: i64 = -32010;
/// Implementation-defined: the key's rate limit.
const RATE_LIMITED: i64 = -32011;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

/// Which generation of the protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Legacy,
    Modern,
}

/// A JSON-RPC error answer, with the HTTP status it goes out with.
struct RpcError {
    status: StatusCode,
    id: Value,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            status,
            id: Value::Null,
            code,
            message: message.into(),
            data: None,
        }
    }

    fn with_id(mut self, id: &Value) -> RpcError {
        self.id = id.clone();
        self
    }

    fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let retry_after = self
            .data
            .as_ref()
            .and_then(|d| d["retry_after_secs"].as_u64());
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = self.data {
            error["data"] = data;
        }
        let body = json!({"jsonrpc": "2.0", "id": self.id, "error": error});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after
            && self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agentnexus\""),
            );
        }
        response
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RpcError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            HEADER_MISMATCH,
            format!("{name} header appears more than once"),
        ));
    }
    first
        .map(|v| {
            v.to_str().map_err(|_| {
                RpcError::new(
                    StatusCode::BAD_REQUEST,
                    HEADER_MISMATCH,
                    format!("{name} is not text"),
                )
            })
        })
        .transpose()
}

/// `Mcp-Name` carries non-ASCII names as `=?base64?…?=`.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

/// Whether a browser page from `origin` may call us: the public URL's own origin, or one
/// listed in `AGENTNEXUS_MCP_ALLOWED_ORIGINS`. Clients that are not browsers send no Origin.
fn origin_allowed(app: &App, origin: &str) -> bool {
    let own = url::Url::parse(&app.public_url())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    origin == own
        || app
            .config
            .mcp_allowed_origins
            .iter()
            .any(|o| o.trim().trim_end_matches('/') == origin)
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().unwrap_or_default().split(',').any(|part| {
            let media = part.split(';').next().unwrap_or_default().trim();
            matches!(media, "application/json" | "application/*" | "*/*")
        })
    })
}

/// `POST /api/mcp` (and every other method, answered 405).
pub async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Read here rather than by an extractor, so an oversized body is a JSON-RPC error too.
    let body: Bytes = match axum::body::to_bytes(body, crate::extract::BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return RpcError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                "the request body is larger than 64 KiB",
            )
            .into_response();
        }
    };
    match serve(&app, parts.method, &parts.headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    app: &Arc<App>,
    method: Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RpcError> {
    if let Some(origin) = header_text(headers, "origin")?
        && !origin_allowed(app, origin)
    {
        return Err(RpcError::new(
            StatusCode::FORBIDDEN,
            INVALID_REQUEST,
            format!("origin {origin} is not allowed"),
        ));
    }
    if method != Method::POST {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let caller = authenticate(app, headers).await?;
    let content_type = header_text(headers, "content-type")?.unwrap_or_default();
    if !content_type.trim().starts_with("application/json") {
        return Err(RpcError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    if !accepts_json(headers) {
        return Err(RpcError::new(
            StatusCode::NOT_ACCEPTABLE,
            INVALID_REQUEST,
            "Not Acceptable: the client must accept application/json",
        ));
    }
    let message: Value = serde_json::from_slice(body)
        .map_err(|_| RpcError::new(StatusCode::BAD_REQUEST, PARSE_ERROR, "Parse error"))?;
    let Value::Object(message) = message else {
        let what = if message.is_array() {
            "batches are not supported: send one JSON-RPC request or notification per POST"
        } else {
            "the body must be one JSON-RPC request or notification object"
        };
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            what,
        ));
    };
    let era = era(headers)?;
    if message.get("jsonrpc") != Some(&json!("2.0")) || !message["method"].is_string() {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "not a JSON-RPC 2.0 message: `jsonrpc` must be \"2.0\" and `method` a string",
        ));
    }
    let Some(id) = message.get("id").cloned() else {
        // A notification: nothing to keep, nothing to answer.
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "the request id must be a string or an integer",
        ));
    }
    let params = match message.get("params") {
        None => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "params must be an object",
            )
            .with_id(&id));
        }
    };
    let method = message["method"].as_str().unwrap_or_default();
    if era == Era::Modern {
        check_envelope(headers, method, &params).map_err(|e| e.with_id(&id))?;
    }
    let result = dispatch(app, &caller, era, method, &params)
        .await
        .map_err(|e| e.with_id(&id))?;
    let mut result = result;
    if era == Era::Modern {
        if result.get("resultType").is_none() {
            result["resultType"] = json!("complete");
        }
        result["_meta"] = json!({META_SERVER: server_info()});
    }
    Ok(axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response())
}

async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Caller, RpcError> {
    let secret = header_text(headers, "authorization")?
        .and_then(crate::auth::bearer)
        .unwrap_or_default();
    match app.authenticate(secret).await {
        Ok(caller) => Ok(caller),
        Err(Error::Unauthorized) => Err(RpcError::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED,
            "Invalid or missing API key: send Authorization: Bearer anx_…",
        )),
        Err(Error::RateLimited { retry_after_secs }) => Err(RpcError::new(
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED,
            format!("rate limited: retry in {retry_after_secs} s"),
        )
        .with_data(json!({"retry_after_secs": retry_after_secs}))),
        Err(e) => Err(internal(e)),
    }
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    tracing::error!(error = %e, "MCP request failed");
    RpcError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        INTERNAL_ERROR,
        "internal error; nothing was recorded",
    )
}

/// The generation, from `MCP-Protocol-Version`: absent or a handshake version is legacy.
fn era(headers: &HeaderMap) -> Result<Era, RpcError> {
    match header_text(headers, "mcp-protocol-version")? {
        None => Ok(Era::Legacy),
        Some(v) if LEGACY_VERSIONS.contains(&v) => Ok(Era::Legacy),
        Some(MODERN) => Ok(Era::Modern),
        Some(other) => Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            UNSUPPORTED_VERSION,
            "Unsupported protocol version",
        )
        .with_data(json!({
            "supported": [LEGACY_VERSIONS[0], LEGACY_VERSIONS[1], MODERN],
            "requested": other,
        }))),
    }
}

/// 2026-07-28: every request carries its envelope, and the routing headers agree with it.
fn check_envelope(headers: &HeaderMap, method: &str, params: &Value) -> Result<(), RpcError> {
    let bad = |code, message: String| RpcError::new(StatusCode::BAD_REQUEST, code, message);
    let meta = params
        .get("_meta")
        .and_then(Value::as_object)
        .filter(|m| m.contains_key(META_VERSION) && m.contains_key(META_CAPABILITIES))
        .ok_or_else(|| {
            bad(
                INVALID_PARAMS,
                format!("params._meta must carry the {META_VERSION} and {META_CAPABILITIES} keys"),
            )
        })?;
    let version = header_text(headers, "mcp-protocol-version")?.unwrap_or_default();
    if meta[META_VERSION].as_str() != Some(version) {
        return Err(bad(
            HEADER_MISMATCH,
            "mcp-protocol-version header does not match the request envelope's protocol version"
                .into(),
        ));
    }
    if header_text(headers, "mcp-method")? != Some(method) {
        return Err(bad(
            HEADER_MISMATCH,
            "mcp-method header does not match the request body's method".into(),
        ));
    }
    if method == "tools/call" {
        let name = header_text(headers, "mcp-name")?.and_then(decode_header_value);
        if name.as_deref() != params["name"].as_str() || name.is_none() {
            return Err(bad(
                HEADER_MISMATCH,
                "mcp-name header does not match the request body's 'name' parameter".into(),
            ));
        }
    }
    Ok(())
}

fn server_info() -> Value {
    json!({"name": "agentnexus", "title": "AgentNexus", "version": env!("CARGO_PKG_VERSION")})
}

const INSTRUCTIONS: &str = "Before any consequential action (a refund, a deploy, a deletion, \
    an e-mail to a customer), call `evaluate`. Act only when status is `allowed` or \
    `approved`. When it is `pending`, a human must decide: follow it with `get_evaluation` \
    (wait_seconds up to 60) until it is final.";

async fn dispatch(
    app: &Arc<App>,
    caller: &Caller,
    era: Era,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    // Legacy answers errors inside a 200, as the legacy transport did; 2026-07-28 maps them
    // to HTTP statuses.
    let status = |modern: StatusCode| match era {
        Era::Legacy => StatusCode::OK,
        Era::Modern => modern,
    };
    match (era, method) {
        (Era::Legacy, "initialize") => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version = if LEGACY_VERSIONS.contains(&asked) {
                asked
            } else {
                LATEST_LEGACY
            };
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": server_info(),
                "instructions": INSTRUCTIONS,
            }))
        }
        (Era::Legacy, "ping") => Ok(json!({})),
        (Era::Modern, "server/discover") => Ok(json!({
            "supportedVersions": [MODERN],
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
            "ttlMs": 0,
            "cacheScope": "private",
        })),
        (_, "tools/list") => {
            let mut result = json!({"tools": tools::list()});
            if era == Era::Modern {
                result["ttlMs"] = json!(0);
                result["cacheScope"] = json!("private");
            }
            Ok(result)
        }
        (_, "tools/call") => call(app, caller, era, params).await.map_err(|e| RpcError {
            status: status(e.status),
            ..e
        }),
        _ => Err(RpcError::new(
            status(StatusCode::NOT_FOUND),
            METHOD_NOT_FOUND,
            "Method not found",
        )
        .with_data(json!(method))),
    }
}

/// MCP reserves `_meta` prefixes whose second label is `modelcontextprotocol` or `mcp`
/// (`io.modelcontextprotocol/…`, `dev.mcp/…`).
fn reserved_meta_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        matches!(
            prefix.split('.').nth(1),
            Some("modelcontextprotocol" | "mcp")
        )
    })
}

/// The caller's `_meta`, kept as the evaluation's trace: the protocol's own keys are
/// dropped, except the client's name, kept as `mcp_client`.
fn trace_meta(params: &Value) -> Option<Value> {
    let meta = params.get("_meta")?.as_object()?;
    let mut kept: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !reserved_meta_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(client) = meta.get(META_CLIENT) {
        kept.insert("mcp_client".into(), client.clone());
    }
    (!kept.is_empty()).then_some(Value::Object(kept))
}

fn text_result(outcome: tools::Outcome) -> Result<Value, RpcError> {
    Ok(match outcome {
        tools::Outcome::Done {
            structured,
            summary,
        } => json!({
            "content": [{"type": "text", "text": summary}],
            "structuredContent": structured,
            "isError": false,
        }),
        tools::Outcome::Failed(why) => json!({
            "content": [{"type": "text", "text": why}],
            "isError": true,
        }),
        tools::Outcome::Broken(e) => return Err(internal(e)),
    })
}

async fn call(
    app: &Arc<App>,
    caller: &Caller,
    era: Era,
    params: &Value,
) -> Result<Value, RpcError> {
    let name = params["name"].as_str().ok_or_else(|| {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_PARAMS,
            "tools/call needs a tool name",
        )
    })?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => {
            return Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                INVALID_PARAMS,
                "arguments must be an object",
            ));
        }
    };
    match name {
        "evaluate" => {
            // The retry of an input-required round: answer the evaluation it names, never a
            // second one.
            if era == Era::Modern && params.get("requestState").is_some() {
                let ev = resume(app, caller, params)?;
                return text_result(
                    tools::get_evaluation(app, caller, json!({"evaluation_id": ev})).await,
                );
            }
            let outcome =
                tools::evaluate(app, caller, arguments.clone(), trace_meta(params).as_ref()).await;
            if era == Era::Modern
                && wants_url_elicitation(params)
                && let tools::Outcome::Done { structured, .. } = &outcome
                && structured["status"] == "pending"
            {
                return input_required(app, caller, &arguments, structured);
            }
            text_result(outcome)
        }
        "get_evaluation" => text_result(tools::get_evaluation(app, caller, arguments).await),
        other => Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_PARAMS,
            format!("Unknown tool: {other}"),
        )),
    }
}

/// Whether the client said it can show a URL to its user (2026-07-28 capabilities).
fn wants_url_elicitation(params: &Value) -> bool {
    params["_meta"][META_CAPABILITIES]["elicitation"]["url"].is_object()
}

/// How long a sealed request state is good for.
const REQUEST_STATE_SECS: i64 = 600;

/// A pending evaluation on a client that can show a link: ask it to show where the approval
/// is followed, and to come back with the sealed state naming this evaluation.
fn input_required(
    app: &App,
    caller: &Caller,
    arguments: &Value,
    structured: &Value,
) -> Result<Value, RpcError> {
    let id = structured["evaluation_id"].as_str().unwrap_or_default();
    let sealed = app.cipher().map_err(internal)?.seal(
        &json!({
            "evaluation_id": id,
            "key_id": caller.key_id().as_str(),
            "arguments": arguments_digest(arguments),
            "expires": app.now().timestamp() + REQUEST_STATE_SECS,
        })
        .to_string(),
        Purpose::McpRequestState,
    );
    let url = structured["follow"]["url"].as_str().unwrap_or_default();
    Ok(json!({
        "resultType": "input_required",
        "inputRequests": {
            "approval": {
                "method": "elicitation/create",
                "params": {
                    "mode": "url",
                    "message": format!(
                        "{} waits for a human decision ({}); follow it here.",
                        structured["evaluation_id"].as_str().unwrap_or("this action"),
                        structured["reason"].as_str().unwrap_or("policy"),
                    ),
                    "url": url,
                }
            }
        },
        "requestState": sealed,
    }))
}

/// Opens a request state: it must be ours, unexpired, and sealed for this caller's key.
/// The retry must repeat the call it resumes: its arguments are bound into the state.
fn arguments_digest(arguments: &Value) -> String {
    agentnexus_engine::canonical::sha256_hex(&agentnexus_engine::canonical::to_vec(arguments))
}

fn resume(app: &App, caller: &Caller, params: &Value) -> Result<String, RpcError> {
    let invalid = || {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            INVALID_PARAMS,
            "Invalid or expired requestState",
        )
        .with_data(json!({"reason": "invalid_request_state"}))
    };
    let sealed = params["requestState"].as_str().ok_or_else(invalid)?;
    let opened: Value = app
        .cipher()
        .map_err(internal)?
        .open(sealed, Purpose::McpRequestState)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(invalid)?;
    let fresh = opened["expires"].as_i64().unwrap_or(0) >= app.now().timestamp();
    let same_call = opened["arguments"].as_str()
        == Some(arguments_digest(params.get("arguments").unwrap_or(&Value::Null)).as_str());
    if !fresh || !same_call || opened["key_id"].as_str() != Some(caller.key_id().as_str()) {
        return Err(invalid());
    }
    opened["evaluation_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(invalid)
}
