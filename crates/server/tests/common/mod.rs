//! `TestApp`: the real server on port 0 with its own database, driven over HTTP.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use agentnexus_app::{App, Config, accounts};
use agentnexus_store::{Store, StoreConfig, Tenant};
use agentnexus_testkit::Backend;
use agentnexus_testkit::TestDatabase;
use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PAYMENTS: &str = r#"name: payments
description: Refunds and payouts
rules:
  - id: no-prod-deletes
    when: action == "db.delete" && context.environment == "production"
    effect: deny
    reason: Production data is never deleted by agents
  - id: large-refund
    when: action == "stripe.refund" && amount_cents > 50000
    effect: require_approval
    tier: critical
    reason: Refunds over $500 need finance sign-off
    approval:
      stages:
        - name: finance
          approvers: ["role:finance", "alice@example.com"]
          required: 1
          channels: [email, slack]
          timeout: 30m
          on_timeout: escalate
        - name: cfo
          approvers: ["cfo@example.com"]
          channels: [email, teams]
          timeout: 2h
          on_timeout: reject
  - id: refunds-ok
    when: action == "stripe.refund"
    effect: allow
"#;

/// A clock tests can move forward.
#[derive(Clone, Default)]
pub struct TestClock(Arc<Mutex<Duration>>);

impl TestClock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().unwrap()
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// The `evaluation_id`s of a list of evaluations, in its order.
    pub fn evaluation_ids(&self) -> Vec<String> {
        self.body["evaluations"]
            .as_array()
            .expect("a list of evaluations")
            .iter()
            .map(|e| e["evaluation_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status and returns it.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["status"], status);
        for field in ["type", "title", "detail"] {
            assert!(
                self.body[field].is_string(),
                "problem without {field}: {}",
                self.body
            );
        }
        &self.body
    }
}

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub store: Store,
    pub tenant: Tenant,
    pub clock: TestClock,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    db: Option<TestDatabase>,
}

/// The one-time codes e-mailed so far, oldest first.
pub fn codes(sink: &agentnexus_testkit::SmtpSink) -> Vec<String> {
    sink.mails()
        .iter()
        .filter(|m| {
            m.header("subject")
                .is_some_and(|s| s.contains("approval code"))
        })
        .filter_map(|m| m.code())
        .collect()
}

/// A delivery job that will not run again: done or dead.
pub fn ended(job: &Value) -> bool {
    job["status"] == "done" || job["status"] == "dead"
}

/// A deliveries answer with jobs, every one of them ended.
pub fn settled(body: &Value) -> bool {
    body["deliveries"]
        .as_array()
        .is_some_and(|d| !d.is_empty() && d.iter().all(ended))
}

impl TestApp {
    /// Polls the evaluation's delivery jobs (`GET …/deliveries`, as the admin) until `done`
    /// holds of the answer's body or 15 s pass; returns the last body.
    pub async fn deliveries_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.get_until(&format!("/api/v1/evaluations/{id}/deliveries"), done)
            .await
    }

    /// Polls `GET path` as the admin until `done` holds of the answer's body or 15 s pass;
    /// returns the last body.
    pub async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = std::time::Instant::now();
        loop {
            let r = self.get(path, &self.admin_key).await;
            assert_eq!(r.status, 200, "{}", r.body);
            if done(&r.body) || start.elapsed() > std::time::Duration::from_secs(15) {
                return r.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// The default workspace's audit events of type `kind`, oldest first.
    pub async fn audited(&self, kind: &str) -> Vec<Value> {
        let r = self.get("/api/v1/audit?limit=1000", &self.admin_key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Another workspace on the same store; answers its admin key.
    pub async fn other_workspace(&self, name: &str) -> String {
        agentnexus_app::accounts::create_workspace(
            &self.store,
            name,
            &format!("owner@{name}.example"),
            None,
            agentnexus_store::Actor::Cli,
        )
        .await
        .unwrap()
        .admin_key
    }

    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDatabase::new(backend).await;
        let mut config = Config::for_tests();
        configure(&mut config);
        let app = TestApp::start(&db.url, config).await;
        TestApp {
            db: Some(db),
            ..app
        }
    }

    /// Another server on the same database, as a second replica.
    pub async fn replica(&self, configure: impl FnOnce(&mut Config)) -> TestApp {
        // Servers sharing a database share its secret key.
        let mut config = Config {
            secret_key: self.config.secret_key.clone(),
            ..Config::for_tests()
        };
        configure(&mut config);
        let url = self
            .db
            .as_ref()
            .expect("the first app owns the database")
            .url
            .clone();
        TestApp::start(&url, config).await
    }

    async fn start(database_url: &str, config: Config) -> TestApp {
        let store = Store::open(StoreConfig::new(database_url))
            .await
            .expect("store");
        let created = accounts::bootstrap(&store, "owner@example.com", Some("pw".into()))
            .await
            .expect("bootstrap");
        let admin_key = created.map(|c| c.admin_key).unwrap_or_default();
        let (_, tenant) = store.workspace_by_name("default").await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = config;
        config.public_url.get_or_insert_with(|| url.clone());
        let clock = TestClock::default();
        let c = clock.clone();
        let state = Arc::new(
            App::new(store.clone(), config.clone(), Arc::new(move || c.now())).expect("app state"),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            agentnexus_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestApp {
            url,
            client: reqwest::Client::new(),
            admin_key,
            store,
            tenant,
            clock,
            config,
            shutdown: Some(tx),
            server: Some(server),
            db: None,
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.request(reqwest::Method::GET, path, Some(key), None, None)
            .await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.request(
            reqwest::Method::POST,
            path,
            Some(key),
            Some(body.to_string().into()),
            Some("application/json"),
        )
        .await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Response {
        self.request(
            reqwest::Method::PUT,
            path,
            Some(key),
            Some(body.to_string().into()),
            Some("application/json"),
        )
        .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.request(reqwest::Method::DELETE, path, Some(key), None, None)
            .await
    }

    pub async fn put_policy(&self, name: &str, yaml: &str) -> Response {
        self.request(
            reqwest::Method::PUT,
            &format!("/api/v1/policies/{name}"),
            Some(&self.admin_key),
            Some(yaml.to_owned().into()),
            Some("application/yaml"),
        )
        .await
    }

    pub async fn evaluate(&self, key: &str, body: Value) -> Response {
        self.post("/api/v1/evaluate", key, &body).await
    }

    /// A new key of this workspace.
    pub async fn key(&self, scope: &str) -> String {
        let r = self
            .post(
                "/api/v1/keys",
                &self.admin_key.clone(),
                &serde_json::json!({"name": "t", "scope": scope}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["key"].as_str().unwrap().to_owned()
    }

    /// A decision through a secure link, as JSON (no key: the link is the credential).
    pub async fn decide_link(&self, token: &str, body: Value) -> Response {
        self.request(
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{token}"),
            None,
            Some(body.to_string().into()),
            Some("application/json"),
        )
        .await
    }

    /// An evaluation's audit events of one type, read with `key`.
    pub async fn timeline_events(&self, key: &str, id: &str, kind: &str) -> Vec<Value> {
        self.timeline(key, id, |e| e["type"] == kind).await
    }

    /// An evaluation's audit events that `keep` holds of, read with `key`.
    pub async fn timeline(&self, key: &str, id: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let timeline = self
            .get(&format!("/api/v1/evaluations/{id}/timeline"), key)
            .await;
        assert_eq!(timeline.status, 200, "{}", timeline.body);
        timeline.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }

    /// How many audit events the workspace has; bad requests must not change it.
    pub async fn audit_len(&self) -> i64 {
        let r = self.get("/api/v1/audit/verify", &self.admin_key).await;
        assert_eq!(r.body["ok"], true, "{}", r.body);
        r.body["events"].as_i64().unwrap()
    }

    /// Stops the server and answers its database, to look at what it left behind.
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        self.db.take().expect("the app owns its database")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}
