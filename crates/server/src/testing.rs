//! A webhook receiver for tests: a real HTTP server on loopback that records what arrives,
//! answers from a script, notices one message being delivered twice at once, and verifies
//! Standard Webhooks signatures with its own implementation (not the server's signer).

pub mod chat;

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
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
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

/// An SMTP server for tests: accepts every message and keeps it, so a test can read the
/// link or code out of the delivered mail as a person would.
pub struct SmtpSink {
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent: headers, blank line, body.
    pub data: String,
    /// When the server accepted it.
    pub at: Instant,
}

impl Mail {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The body as text, its transfer encoding undone.
    pub fn text(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        match self
            .header("content-transfer-encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("quoted-printable") => {
                let joined = body.replace("=\r\n", "");
                let mut out = Vec::with_capacity(joined.len());
                let mut rest = joined.as_bytes();
                while let Some((&b, tail)) = rest.split_first() {
                    let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
                    if b == b'='
                        && let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        out.push(v);
                        rest = &tail[2..];
                        continue;
                    }
                    out.push(b);
                    rest = tail;
                }
                String::from_utf8_lossy(&out).into_owned()
            }
            Some("base64") => B64
                .decode(body.replace("\r\n", ""))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            _ => body.to_owned(),
        }
    }

    /// The secure link's token in the body (`…/approvals/<token>`).
    pub fn link_token(&self) -> Option<String> {
        let text = self.text();
        let at = text.find("/approvals/")? + "/approvals/".len();
        Some(
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        )
    }

    /// The first run of six digits in the body (a one-time code).
    pub fn code(&self) -> Option<String> {
        let text = self.text();
        let chars: Vec<char> = text.chars().collect();
        chars.windows(6).enumerate().find_map(|(i, w)| {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 6);
            (w.iter().all(char::is_ascii_digit)
                && !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric()))
            .then(|| w.iter().collect())
        })
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(stream, kept.clone()));
            }
        });
        SmtpSink { url, mails, task }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until `n` messages arrived (or `within` passed) and answers them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let got = self.mails();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().trim_matches(['<', '>']).to_owned();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                data.push_str(
                    l.strip_prefix('.')
                        .filter(|_| l.starts_with(".."))
                        .unwrap_or(&l),
                );
                data.push_str("\r\n");
            }
            mails.lock().unwrap().push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                at: Instant::now(),
            });
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 OK\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
