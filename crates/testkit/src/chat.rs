//! Stand-ins for Slack and Microsoft Teams, which tests cannot reach: real HTTP servers on
//! loopback that answer as the published APIs do and refuse what those would refuse.
//!
//! - Slack Web API (<https://api.slack.com/methods>): `users.lookupByEmail` and
//!   `chat.postMessage` with a bearer token, answering `{"ok": …}`; Block Kit checked against
//!   the documented block types, fields and length limits (`invalid_blocks` otherwise).
//! - Slack incoming webhooks: `200 ok`, or `400 invalid_blocks`.
//! - Teams incoming webhooks: a `message` with Adaptive Card attachments, answered `202`
//!   (Workflows) or `400`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A message Slack accepted.
#[derive(Debug, Clone)]
pub struct SlackPost {
    /// `chat.postMessage`'s channel (a user id for a direct message); `webhook` for an
    /// incoming webhook.
    pub channel: String,
    pub body: Value,
}

impl SlackPost {
    /// The URL of the message's first button.
    pub fn button_url(&self) -> Option<String> {
        self.body["blocks"]
            .as_array()?
            .iter()
            .filter(|b| b["type"] == "actions")
            .find_map(|b| b["elements"][0]["url"].as_str().map(str::to_owned))
    }
}

#[derive(Default)]
struct SlackState {
    token: String,
    users: HashMap<String, String>,
    posts: Vec<SlackPost>,
    refused: Vec<String>,
    /// `chat.postMessage` calls to answer 429 before accepting.
    rate_limited: usize,
}

type Shared<T> = Arc<Mutex<T>>;

/// A Slack workspace: a bot token, its users by e-mail, an incoming webhook.
pub struct FakeSlack {
    /// What `AGENTNEXUS_SLACK_API_URL` points at.
    pub api_url: String,
    pub webhook_url: String,
    pub token: String,
    state: Shared<SlackState>,
    _stop: oneshot::Sender<()>,
}

fn slack_answer(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn form_field(raw: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn lookup_by_email(
    State(state): State<Shared<SlackState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let s = state.lock().unwrap();
    if bearer(&headers) != Some(s.token.as_str()) {
        return slack_answer(json!({"ok": false, "error": "invalid_auth"}));
    }
    let Some(email) = form_field(&raw, "email") else {
        return slack_answer(json!({"ok": false, "error": "invalid_arguments"}));
    };
    match s.users.get(&email) {
        Some(id) => slack_answer(json!({
            "ok": true,
            "user": {"id": id, "team_id": "T0AGENTNX", "name": email.split('@').next(),
                     "deleted": false, "profile": {"email": email}},
        })),
        None => slack_answer(json!({"ok": false, "error": "users_not_found"})),
    }
}

async fn post_message(
    State(state): State<Shared<SlackState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if bearer(&headers) != Some(s.token.as_str()) {
        return slack_answer(json!({"ok": false, "error": "not_authed"}));
    }
    if s.rate_limited > 0 {
        s.rate_limited -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return slack_answer(json!({"ok": false, "error": "invalid_json"}));
    };
    if !json_body {
        return slack_answer(json!({"ok": false, "error": "invalid_form_data"}));
    }
    let channel = body["channel"].as_str().unwrap_or_default().to_owned();
    if !s.users.values().any(|id| *id == channel) {
        return slack_answer(json!({"ok": false, "error": "channel_not_found"}));
    }
    if let Err(why) = check_slack_message(&body) {
        s.refused.push(why.clone());
        return slack_answer(json!({"ok": false, "error": "invalid_blocks",
            "response_metadata": {"messages": [why]}}));
    }
    s.posts.push(SlackPost {
        channel: channel.clone(),
        body,
    });
    slack_answer(json!({"ok": true, "channel": format!("D{channel}"), "ts": "1764000000.000100"}))
}

async fn slack_webhook(State(state): State<Shared<SlackState>>, raw: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if let Err(why) = check_slack_message(&body) {
        s.refused.push(why);
        return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response();
    }
    s.posts.push(SlackPost {
        channel: "webhook".into(),
        body,
    });
    (StatusCode::OK, "ok").into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A text object: `plain_text` or `mrkdwn`, non-empty, at most `max` characters.
fn check_text(t: &Value, max: usize, plain_only: bool, at: &str) -> Result<(), String> {
    let kind = t["type"].as_str().unwrap_or_default();
    if !(kind == "plain_text" || (!plain_only && kind == "mrkdwn")) {
        return Err(format!("{at}: text type {kind:?} is not allowed here"));
    }
    let text = t["text"].as_str().unwrap_or_default();
    if text.is_empty() || text.chars().count() > max {
        return Err(format!("{at}: text must be 1-{max} characters"));
    }
    let allowed: &[&str] = if kind == "plain_text" {
        &["type", "text", "emoji"]
    } else {
        &["type", "text", "verbatim"]
    };
    only_keys(t, allowed, at)
}

fn only_keys(v: &Value, allowed: &[&str], at: &str) -> Result<(), String> {
    match v.as_object() {
        Some(o) => match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!("{at}: unknown field {k:?}")),
            None => Ok(()),
        },
        None => Err(format!("{at}: must be an object")),
    }
}

/// Block Kit as Slack documents it, for the block types AgentNexus sends.
pub fn check_slack_message(body: &Value) -> Result<(), String> {
    if body["text"].as_str().is_none_or(str::is_empty) {
        return Err("text (the notification fallback) is missing".into());
    }
    let blocks = body["blocks"].as_array().ok_or("blocks must be an array")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err("a message has 1-50 blocks".into());
    }
    let mut action_ids = HashSet::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("blocks[{i}]");
        match b["type"].as_str().unwrap_or_default() {
            "header" => {
                only_keys(b, &["type", "text", "block_id"], &at)?;
                check_text(&b["text"], 150, true, &at)?;
            }
            "section" => {
                only_keys(b, &["type", "text", "fields", "block_id", "accessory"], &at)?;
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err(format!("{at}: a section needs text or fields"));
                }
                if let Some(t) = b.get("text") {
                    check_text(t, 3000, false, &at)?;
                }
                if let Some(fields) = b.get("fields") {
                    let fields = fields.as_array().ok_or(format!("{at}: fields"))?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(format!("{at}: a section has 1-10 fields"));
                    }
                    for f in fields {
                        check_text(f, 2000, false, &at)?;
                    }
                }
            }
            "actions" => {
                only_keys(b, &["type", "elements", "block_id"], &at)?;
                let elements = b["elements"].as_array().ok_or(format!("{at}: elements"))?;
                if elements.is_empty() || elements.len() > 25 {
                    return Err(format!("{at}: 1-25 elements"));
                }
                for e in elements {
                    if e["type"] != "button" {
                        return Err(format!("{at}: only buttons are expected"));
                    }
                    only_keys(
                        e,
                        &[
                            "type",
                            "text",
                            "action_id",
                            "url",
                            "value",
                            "style",
                            "confirm",
                        ],
                        &at,
                    )?;
                    check_text(&e["text"], 75, true, &at)?;
                    if let Some(id) = e["action_id"].as_str()
                        && (id.len() > 255 || !action_ids.insert(id.to_owned()))
                    {
                        return Err(format!("{at}: action_id must be unique, ≤ 255"));
                    }
                    if let Some(style) = e.get("style")
                        && style != "primary"
                        && style != "danger"
                    {
                        return Err(format!("{at}: style is primary or danger"));
                    }
                    let url = e["url"].as_str().unwrap_or_default();
                    if url.len() > 3000 || reqwest::Url::parse(url).is_err() {
                        return Err(format!("{at}: a link button needs a URL ≤ 3000"));
                    }
                }
            }
            "context" => {
                only_keys(b, &["type", "elements", "block_id"], &at)?;
                let elements = b["elements"].as_array().ok_or(format!("{at}: elements"))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("{at}: 1-10 elements"));
                }
                for e in elements {
                    check_text(e, 3000, false, &at)?;
                }
            }
            "divider" => only_keys(b, &["type", "block_id"], &at)?,
            other => return Err(format!("{at}: unexpected block type {other:?}")),
        }
    }
    Ok(())
}

impl FakeSlack {
    /// A Slack workspace whose members are `users` (e-mail → user id).
    pub async fn start(users: &[(&str, &str)]) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = "xoxb-1234567890-0987654321-AgentNexusTestToken".to_owned();
        let state = Arc::new(Mutex::new(SlackState {
            token: token.clone(),
            users: users
                .iter()
                .map(|(e, id)| ((*e).to_owned(), (*id).to_owned()))
                .collect(),
            ..SlackState::default()
        }));
        let app = Router::new()
            .route("/api/users.lookupByEmail", post(lookup_by_email))
            .route("/api/chat.postMessage", post(post_message))
            .route("/services/T0AGENTNX/B0HOOK/secretpart", post(slack_webhook))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        serve(listener, app, stopped);
        FakeSlack {
            api_url: format!("{base}/api"),
            webhook_url: format!("{base}/services/T0AGENTNX/B0HOOK/secretpart"),
            token,
            state,
            _stop: stop,
        }
    }

    /// Messages accepted so far.
    pub fn posts(&self) -> Vec<SlackPost> {
        self.state.lock().unwrap().posts.clone()
    }

    /// Why messages were refused, if any were.
    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }

    /// Answers the next `n` `chat.postMessage` calls with 429 and `Retry-After: 1`.
    pub fn rate_limit(&self, n: usize) {
        self.state.lock().unwrap().rate_limited = n;
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<SlackPost> {
        wait(|| self.posts(), n, within).await
    }
}

fn serve(listener: tokio::net::TcpListener, app: Router, stopped: oneshot::Receiver<()>) {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
}

async fn wait<T>(get: impl Fn() -> Vec<T>, n: usize, within: Duration) -> Vec<T> {
    let start = Instant::now();
    loop {
        let got = get();
        if got.len() >= n || start.elapsed() > within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct TeamsState {
    cards: Vec<Value>,
    refused: Vec<String>,
}

/// A Teams channel's incoming webhook.
pub struct FakeTeams {
    pub webhook_url: String,
    state: Shared<TeamsState>,
    _stop: oneshot::Sender<()>,
}

async fn teams_webhook(State(state): State<Shared<TeamsState>>, raw: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let checked = serde_json::from_slice::<Value>(&raw)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|body| check_teams_message(&body).map(|()| body));
    match checked {
        Ok(body) => {
            s.cards.push(body);
            StatusCode::ACCEPTED.into_response()
        }
        Err(why) => {
            s.refused.push(why.clone());
            (StatusCode::BAD_REQUEST, why).into_response()
        }
    }
}

/// An incoming-webhook message with Adaptive Cards, as Teams documents it: `type: message`,
/// attachments of content type `application/vnd.microsoft.card.adaptive` whose content is an
/// `AdaptiveCard` (schema version ≤ 1.5) with known elements and `Action.OpenUrl` actions.
pub fn check_teams_message(body: &Value) -> Result<(), String> {
    if body["type"] != "message" {
        return Err("type must be \"message\"".into());
    }
    let attachments = body["attachments"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("attachments must be a non-empty array")?;
    for a in attachments {
        if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Err("contentType must be application/vnd.microsoft.card.adaptive".into());
        }
        let card = &a["content"];
        if card["type"] != "AdaptiveCard" {
            return Err("content.type must be AdaptiveCard".into());
        }
        let version = card["version"]
            .as_str()
            .ok_or("content.version is required")?;
        if !["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"].contains(&version) {
            return Err(format!("card version {version} is not rendered by Teams"));
        }
        let body = card["body"]
            .as_array()
            .ok_or("content.body must be an array")?;
        for (i, e) in body.iter().enumerate() {
            match e["type"].as_str().unwrap_or_default() {
                "TextBlock" => {
                    if e["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("body[{i}]: a TextBlock needs text"));
                    }
                }
                "FactSet" => {
                    let facts = e["facts"].as_array().ok_or(format!("body[{i}]: facts"))?;
                    if facts
                        .iter()
                        .any(|f| f["title"].as_str().is_none() || f["value"].as_str().is_none())
                    {
                        return Err(format!("body[{i}]: each fact has a title and a value"));
                    }
                }
                "RichTextBlock" => {
                    let inlines = e["inlines"]
                        .as_array()
                        .filter(|i| !i.is_empty())
                        .ok_or(format!("body[{i}]: a RichTextBlock needs inlines"))?;
                    for run in inlines {
                        let text = run.as_str().or_else(|| {
                            (run["type"] == "TextRun")
                                .then(|| run["text"].as_str())
                                .flatten()
                        });
                        if text.is_none_or(str::is_empty) {
                            return Err(format!("body[{i}]: inlines are TextRuns with text"));
                        }
                    }
                }
                "Container" | "ColumnSet" | "Image" => {}
                other => return Err(format!("body[{i}]: unknown element {other:?}")),
            }
        }
        for action in card["actions"].as_array().into_iter().flatten() {
            if action["type"] != "Action.OpenUrl" {
                return Err("an incoming webhook card can only open URLs".into());
            }
            let url = action["url"].as_str().unwrap_or_default();
            if !url.starts_with("http") || reqwest::Url::parse(url).is_err() {
                return Err("Action.OpenUrl needs an absolute URL".into());
            }
            if action["title"].as_str().is_none_or(str::is_empty) {
                return Err("an action needs a title".into());
            }
        }
    }
    Ok(())
}

impl FakeTeams {
    pub async fn start() -> FakeTeams {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(TeamsState::default()));
        let app = Router::new()
            .route("/workflows/agentnexus/triggers/manual", post(teams_webhook))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        serve(listener, app, stopped);
        FakeTeams {
            webhook_url: format!("{base}/workflows/agentnexus/triggers/manual"),
            state,
            _stop: stop,
        }
    }

    /// Messages (with their cards) accepted so far.
    pub fn cards(&self) -> Vec<Value> {
        self.state.lock().unwrap().cards.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        wait(|| self.cards(), n, within).await
    }
}
