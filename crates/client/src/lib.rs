//! A typed async client for the AgentNexus REST API (SPEC §12): evaluate a proposal, read an
//! evaluation or wait for its decision, report what ran, and put policies — what an agent's
//! runtime and an operator's CLI need, over HTTP only (no database access).
//!
//! ```no_run
//! # async fn run() -> Result<(), agentnexus_client::Error> {
//! use agentnexus_client::{Client, Proposal};
//! let client = Client::new("http://127.0.0.1:8080", "anx_…")?;
//! let decided = client
//!     .evaluate(&Proposal::new("billing-bot", "stripe.refund").amount_cents(75_000))
//!     .await?;
//! if decided.status == "pending" {
//!     let done = client
//!         .wait_for_decision(&decided.evaluation_id, std::time::Duration::from_secs(600))
//!         .await?;
//!     println!("{}", done.status);
//! }
//! # Ok(()) }
//! ```
//!
//! Errors the server answers (RFC 9457 problem+json) come back as [`Error::Problem`]. A request
//! that got no answer, a 5xx or a 429 is tried again (with backoff, honouring `Retry-After`);
//! an evaluation is retried under the same `idempotency_key`, so a retry never makes a second
//! evaluation.
#![forbid(unsafe_code)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A proposal, as `POST /api/v1/evaluate` takes it (read with every field optional: the
/// server says what is missing).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Proposal {
    pub agent_id: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_cents: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Value>,
    /// Given one when absent, so that retries are the same evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl Proposal {
    pub fn new(agent_id: impl Into<String>, action: impl Into<String>) -> Proposal {
        Proposal {
            agent_id: agent_id.into(),
            action: action.into(),
            ..Proposal::default()
        }
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Proposal {
        self.resource = Some(resource.into());
        self
    }

    pub fn amount_cents(mut self, cents: i64) -> Proposal {
        self.amount_cents = Some(cents);
        self
    }

    pub fn params(mut self, params: Value) -> Proposal {
        self.params = Some(params);
        self
    }

    pub fn context(mut self, context: Value) -> Proposal {
        self.context = Some(context);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Proposal {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// An evaluation as the server answers it. The fields every client needs are typed; the rest
/// of the answer (stages, decisions, receipt, …) is kept in `other`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub evaluation_id: String,
    /// `allow`, `deny` or `require_approval`.
    pub decision: String,
    /// `allowed`, `denied`, `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub matched_rules: Vec<MatchedRule>,
    #[serde(default)]
    pub proposal_hash: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Evaluation {
    /// Whether the agent may go ahead: `allowed` or `approved`.
    pub fn may_execute(&self) -> bool {
        self.status == "allowed" || self.status == "approved"
    }

    /// Whether the decision is final (nothing is waiting for a person).
    pub fn is_final(&self) -> bool {
        self.status != "pending"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MatchedRule {
    pub policy: String,
    pub rule: String,
    pub effect: String,
}

/// A stored policy version, as the policy endpoints answer it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyVersion {
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What `POST /api/v1/policies/validate` says of a document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    pub valid: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// An RFC 9457 problem the server answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    /// Per-field or per-rule problems (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused: its problem document.
    #[error("{} {}: {}", .0.status, .0.title, .0.detail)]
    Problem(Problem),
    /// No answer (connection, timeout), after the retries.
    #[error("no answer from the server: {0}")]
    Transport(String),
    /// An answer not shaped as the API documents.
    #[error("an unexpected answer ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
    /// The base URL or the key cannot be used.
    #[error("{0}")]
    Config(String),
    /// `wait_for_decision` ran out of time with the evaluation still pending.
    #[error("still pending after {0:?}")]
    StillPending(Duration),
}

impl Error {
    /// The HTTP status of a refusal, if the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem(p) => Some(p.status),
            Error::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client for one server, with one API key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    retries: u32,
}

/// The longest the server holds a `?wait=` request.
const MAX_WAIT_SECS: u64 = 60;

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:8080`) with an API key
    /// (`anx_…`), retrying a request that got no answer, a 5xx or a 429 up to 3 times.
    pub fn new(base_url: &str, api_key: &str) -> Result<Client> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "the server's URL must start with http:// or https://, not `{base}`"
            )));
        }
        if api_key.is_empty() || !api_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the API key is empty or not printable".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("agentnexus-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            http,
            base,
            key: api_key.to_owned(),
            retries: 3,
        })
    }

    /// How many times a request is tried again (0: never).
    pub fn with_retries(mut self, retries: u32) -> Client {
        self.retries = retries;
        self
    }

    /// Proposes an action; answers its decision. Retries reuse one idempotency key (the
    /// proposal's own, or one given here), so they are the same evaluation.
    pub async fn evaluate(&self, proposal: &Proposal) -> Result<Evaluation> {
        let mut proposal = proposal.clone();
        proposal
            .idempotency_key
            .get_or_insert_with(|| format!("client-{}", ulid::Ulid::new()));
        let body = serde_json::to_vec(&proposal).map_err(|e| Error::Config(e.to_string()))?;
        self.json(
            Method::POST,
            "/api/v1/evaluate",
            Some((body, "application/json")),
            None,
        )
        .await
    }

    /// An evaluation with its current status; with `wait`, held until the status changes or
    /// the time passes (at most 60 s a request).
    pub async fn get_evaluation(&self, id: &str, wait: Option<Duration>) -> Result<Evaluation> {
        let id = segment(id)?;
        let (path, hold) = match wait {
            Some(w) => {
                let secs = w.as_secs().min(MAX_WAIT_SECS);
                (format!("/api/v1/evaluations/{id}?wait={secs}"), Some(secs))
            }
            None => (format!("/api/v1/evaluations/{id}"), None),
        };
        self.json(Method::GET, &path, None, hold).await
    }

    /// Waits until a person decides (or a deadline passes), long-polling; answers the final
    /// evaluation, or [`Error::StillPending`] after `timeout`.
    pub async fn wait_for_decision(&self, id: &str, timeout: Duration) -> Result<Evaluation> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let ev = self
                .get_evaluation(id, Some(left.max(Duration::from_secs(1))))
                .await?;
            if ev.is_final() {
                return Ok(ev);
            }
            if tokio::time::Instant::now() >= until {
                return Err(Error::StillPending(timeout));
            }
        }
    }

    /// Reports what the executing system did (`executed`, `failed` or `skipped`), with the
    /// `proposal_hash` of what it ran; answers the evaluation carrying the receipt
    /// (`other["receipt"]["conforms"]`).
    pub async fn report_receipt(
        &self,
        id: &str,
        outcome: &str,
        proposal_hash: Option<&str>,
    ) -> Result<Evaluation> {
        let path = format!("/api/v1/evaluations/{}/receipt", segment(id)?);
        let mut body = serde_json::json!({"outcome": outcome});
        if let Some(h) = proposal_hash {
            body["proposal_hash"] = Value::String(h.to_owned());
        }
        let body = serde_json::to_vec(&body).map_err(|e| Error::Config(e.to_string()))?;
        self.json(Method::POST, &path, Some((body, "application/json")), None)
            .await
    }

    /// Checks a policy document (YAML or JSON) without storing it.
    pub async fn validate_policy(&self, document: &str) -> Result<Validation> {
        let body = (document.as_bytes().to_vec(), content_type(document));
        self.json(Method::POST, "/api/v1/policies/validate", Some(body), None)
            .await
    }

    /// Creates or replaces policy `name` with a document (YAML or JSON); answers the active
    /// version (the same one when the document is unchanged).
    pub async fn put_policy(&self, name: &str, document: &str) -> Result<PolicyVersion> {
        let path = format!("/api/v1/policies/{}", segment(name)?);
        let body = (document.as_bytes().to_vec(), content_type(document));
        self.json(Method::PUT, &path, Some(body), None).await
    }

    /// The active version number of policy `name`, or `None` when there is no such policy.
    pub async fn get_policy_version(&self, name: &str) -> Result<Option<i64>> {
        let path = format!("/api/v1/policies/{}", segment(name)?);
        match self
            .json::<PolicyVersion>(Method::GET, &path, None, None)
            .await
        {
            Ok(v) => Ok(Some(v.version)),
            Err(Error::Problem(p)) if p.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a request, retrying what may succeed later, and reads its JSON answer.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        hold_secs: Option<u64>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        // A held request may take its whole wait; anything else answers within seconds.
        let timeout = Duration::from_secs(30 + hold_secs.unwrap_or(0));
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.key)
                .timeout(timeout);
            if let Some((bytes, kind)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *kind)
                    .body(bytes.clone());
            }
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response
                        .text()
                        .await
                        .map_err(|e| Error::Transport(e.to_string()))?;
                    let again = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !again || attempt >= self.retries {
                        return answer(status, &text);
                    }
                    retry_after.unwrap_or_else(|| backoff(attempt))
                }
                Err(e) if attempt >= self.retries => return Err(Error::Transport(e.to_string())),
                Err(_) => backoff(attempt),
            };
            attempt += 1;
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
        }
    }
}

/// 0.25 s, 0.5 s, 1 s, … between tries.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(7)))
}

/// An id or a name as one path segment: what the API's ids and names are made of.
fn segment(text: &str) -> Result<&str> {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(text)
    } else {
        Err(Error::Config(format!("`{text}` is not an id or a name")))
    }
}

/// JSON when the document is an object, YAML otherwise.
fn content_type(document: &str) -> &'static str {
    if document.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    }
}

fn answer<T: DeserializeOwned>(status: StatusCode, text: &str) -> Result<T> {
    if status.is_success() {
        return serde_json::from_str(text).map_err(|e| Error::Unexpected {
            status: status.as_u16(),
            detail: e.to_string(),
        });
    }
    match serde_json::from_str::<Problem>(text) {
        Ok(p) => Err(Error::Problem(p)),
        Err(_) => Err(Error::Unexpected {
            status: status.as_u16(),
            detail: text.chars().take(200).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(Client::new("127.0.0.1:8080", "anx_x").is_err());
        assert!(Client::new("http://127.0.0.1:8080", "").is_err());
        assert!(segment("ev_01ABC").is_ok());
        assert!(segment("../keys").is_err());
        assert!(segment("a/b").is_err());
    }

    #[test]
    fn proposals_leave_out_what_is_not_set() {
        let p = Proposal::new("bot", "pay").amount_cents(5);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"agent_id": "bot", "action": "pay", "amount_cents": 5})
        );
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
    }

    #[test]
    fn problems_and_answers_are_read() {
        let p: Result<Evaluation> = answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"type": "t", "title": "Invalid request", "status": 422, "detail": "action: required"}"#,
        );
        match p {
            Err(Error::Problem(p)) => {
                assert_eq!((p.status, p.detail.as_str()), (422, "action: required"))
            }
            other => panic!("{other:?}"),
        }
        let e: Evaluation = answer(
            StatusCode::OK,
            r#"{"evaluation_id": "ev_1", "decision": "allow", "status": "allowed", "proposal_hash": "h", "created_at": "t"}"#,
        )
        .unwrap();
        assert!(e.may_execute() && e.is_final());
        assert_eq!(e.other["created_at"], "t");
    }
}
