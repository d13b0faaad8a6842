//! A webhook receiver for tests: a real HTTP server on loopback that records what arrives,
//! answers from a script, notices one message being delivered twice at once, and verifies
//! Standard Webhooks signatures with its own implementation (not the server's signer).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::oneshot;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: Bytes,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    inflight: HashSet<String>,
    overlaps: usize,
}

pub struct Receiver {
    pub url: String,
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    default: Arc<Mutex<Reply>>,
    stop: Option<oneshot::Sender<()>>,
}

type Shared = (Arc<Mutex<Inner>>, Arc<Mutex<Reply>>);

async fn receive(
    State((inner, default)): State<Shared>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let reply = {
        let mut inner = inner.lock().unwrap();
        if !inner.inflight.insert(id.clone()) {
            inner.overlaps += 1;
        }
        inner.received.push(Received {
            id: id.clone(),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw,
            at: Instant::now(),
        });
        inner
            .script
            .pop_front()
            .unwrap_or_else(|| default.lock().unwrap().clone())
    };
    tokio::time::sleep(reply.delay).await;
    inner.lock().unwrap().inflight.remove(&id);
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        reply.body,
    )
        .into_response();
    if let Some(s) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    response
}

impl Receiver {
    /// A receiver on a free port, answering 204 unless scripted otherwise.
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let default = Arc::new(Mutex::new(Reply::status(204)));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state((inner.clone(), default.clone()));
        let stop = crate::serve_until_dropped(listener, app);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            inner,
            default,
            stop: Some(stop),
        }
    }

    /// Answers these, in order, before falling back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn answer_by_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// How often a message arrived while the same message was still being answered.
    pub fn overlaps(&self) -> usize {
        self.inner.lock().unwrap().overlaps
    }

    /// Waits until `n` requests arrived (or `within` passed) and answers what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Verifies a `webhook-signature` header as a Standard Webhooks receiver does: some `v1,`
/// signature must equal base64(HMAC-SHA256(key, "id.timestamp.body")), the key being the
/// base64 after `whsec_`.
pub fn verify(secret: &str, received: &Received) -> bool {
    let Ok(key) = B64.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.raw);
    let expected = B64.encode(mac.finalize().into_bytes());
    received
        .signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

#[cfg(test)]
mod tests {
    #[test]
    fn verifies_the_standard_webhooks_test_vector() {
        let r = super::Received {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
            timestamp: "1614265330".into(),
            signature: "v1,bm9ub3NlbnNl v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into(),
            raw: axum::body::Bytes::from_static(br#"{"test": 2432232314}"#),
            body: serde_json::Value::Null,
            at: std::time::Instant::now(),
        };
        assert!(super::verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &r));
        assert!(!super::verify("whsec_bm9ub3NlbnNlbm9ub3NlbnNl", &r));
    }
}
