//! A stand-in for GitHub's REST API (<https://docs.github.com/rest>), which tests cannot
//! reach: a real HTTP server on loopback serving one repository through the two endpoints
//! policy-as-code reads, to GitHub's published shapes, and refusing what GitHub refuses.
//!
//! - `GET /repos/{owner}/{repo}/commits/{ref}` (<https://docs.github.com/rest/commits/commits#get-a-commit>):
//!   the commit object with an `ETag`; `If-None-Match` with it answers `304` (not counted
//!   against the rate limit, as GitHub's conditional requests are not); an unknown ref `422`.
//! - `GET /repos/{owner}/{repo}/contents/{path}?ref=`
//!   (<https://docs.github.com/rest/repos/contents#get-repository-content>): a file as base64
//!   `content` wrapped at 60 characters, a directory as an array of entries, else `404`.
//! - A wrong token answers `401 Bad credentials`; no `User-Agent` answers `403`; a rate limit
//!   answers `403` with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, or `429` with
//!   `retry-after` (a secondary limit).
//!
//! The test changes the repository between syncs with [`FakeGitHub::commit`], and reads what
//! GitHub would post to a webhook with [`FakeGitHub::push_event`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// A request the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct GitHubRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
struct Commit {
    sha: String,
    parent: Option<String>,
    author_name: String,
    author_email: String,
    message: String,
    at: String,
    /// The whole tree: path → text.
    files: BTreeMap<String, String>,
}

struct Repository {
    full_name: String,
    token: String,
    commits: BTreeMap<String, Commit>,
    branches: BTreeMap<String, String>,
    requests: Vec<GitHubRequest>,
    /// Requests still to refuse as rate limited: (how many, reset in seconds, retry-after).
    limited: (usize, u64, Option<u64>),
    remaining: i64,
    serial: u64,
}

type Shared = Arc<Mutex<Repository>>;

/// One repository on a fake GitHub.
pub struct FakeGitHub {
    /// What `AGENTNEXUS_GITHUB_API_URL` points at (no trailing `/`).
    pub api_url: String,
    state: Shared,
    _stop: oneshot::Sender<()>,
}

const DOCS: &str = "https://docs.github.com/rest";

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blob_sha(text: &str) -> String {
    hex_of(&Sha256::digest(format!("blob {}\0{text}", text.len()).as_bytes())[..20])
}

fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn message(status: StatusCode, text: &str, docs: &str) -> (StatusCode, Value) {
    (
        status,
        json!({"message": text, "documentation_url": docs, "status": status.as_u16().to_string()}),
    )
}

/// `X-Hub-Signature-256` for `body` under `secret`: `sha256=` and the HMAC-SHA256, hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex_of(&mac.finalize().into_bytes()))
}

impl FakeGitHub {
    /// A repository `owner/name` that accepts `token`, with no branches yet.
    pub async fn start(repo: &str, token: &str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(Repository {
            full_name: repo.to_owned(),
            token: token.to_owned(),
            commits: BTreeMap::new(),
            branches: BTreeMap::new(),
            requests: Vec::new(),
            limited: (0, 0, None),
            remaining: 5000,
            serial: 0,
        }));
        let app = Router::new()
            .route("/repos/{owner}/{repo}/commits/{*reference}", get(commit))
            .route("/repos/{owner}/{repo}/contents", get(root))
            .route("/repos/{owner}/{repo}/contents/", get(root))
            .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let stop = crate::serve_until_dropped(listener, app);
        FakeGitHub {
            api_url,
            state,
            _stop: stop,
        }
    }

    /// Makes a commit on `branch` (created from nothing when missing): each `(path,
    /// Some(text))` writes a file, `(path, None)` deletes one. Answers the commit's SHA.
    pub fn commit(
        &self,
        branch: &str,
        author_name: &str,
        author_email: &str,
        message: &str,
        files: &[(&str, Option<&str>)],
    ) -> String {
        let mut repo = self.state.lock().unwrap();
        repo.serial += 1;
        let parent = repo.branches.get(branch).cloned();
        let mut tree = parent
            .as_ref()
            .map(|p| repo.commits[p].files.clone())
            .unwrap_or_default();
        for (path, text) in files {
            match text {
                Some(t) => tree.insert((*path).to_owned(), (*t).to_owned()),
                None => tree.remove(*path),
            };
        }
        let seed = format!("{}/{branch}/{}/{message}", repo.full_name, repo.serial);
        let sha = hex_of(&Sha256::digest(seed.as_bytes())[..20]);
        let at = format!("2026-12-05T12:{:02}:00Z", repo.serial % 60);
        repo.commits.insert(
            sha.clone(),
            Commit {
                sha: sha.clone(),
                parent,
                author_name: author_name.to_owned(),
                author_email: author_email.to_owned(),
                message: message.to_owned(),
                at,
                files: tree,
            },
        );
        repo.branches.insert(branch.to_owned(), sha.clone());
        sha
    }

    /// Deletes a branch; its commits stay readable by SHA.
    pub fn delete_branch(&self, branch: &str) {
        self.state.lock().unwrap().branches.remove(branch);
    }

    /// Accepts `token` instead: the old one answers 401 from now on.
    pub fn set_token(&self, token: &str) {
        self.state.lock().unwrap().token = token.to_owned();
    }

    /// Refuses the next `n` requests as rate limited: `403` with `x-ratelimit-remaining: 0`
    /// and a reset `reset_in_secs` from now, or with `retry_after`, `429` and `retry-after`.
    pub fn rate_limit(&self, n: usize, reset_in_secs: u64, retry_after: Option<u64>) {
        self.state.lock().unwrap().limited = (n, reset_in_secs, retry_after);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<GitHubRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The `push` event GitHub would post to a webhook for the latest commit on `branch`.
    pub fn push_event(&self, branch: &str) -> Value {
        let repo = self.state.lock().unwrap();
        let sha = repo.branches[branch].clone();
        let c = &repo.commits[&sha];
        let before = c.parent.clone().unwrap_or_else(|| "0".repeat(40));
        let old = c
            .parent
            .as_ref()
            .map(|p| repo.commits[p].files.clone())
            .unwrap_or_default();
        let (mut added, mut modified, mut removed) = (vec![], vec![], vec![]);
        for (path, text) in &c.files {
            match old.get(path) {
                None => added.push(path.clone()),
                Some(t) if t != text => modified.push(path.clone()),
                _ => {}
            }
        }
        for path in old.keys().filter(|p| !c.files.contains_key(*p)) {
            removed.push(path.clone());
        }
        let (owner, name) = repo.full_name.split_once('/').unwrap();
        let person = json!({"name": c.author_name, "email": c.author_email, "username": owner});
        let head = json!({
            "id": c.sha, "tree_id": blob_sha(&c.sha), "distinct": true, "message": c.message,
            "timestamp": c.at, "url": format!("https://github.com/{}/commit/{}", repo.full_name, c.sha),
            "author": person, "committer": person,
            "added": added, "removed": removed, "modified": modified,
        });
        json!({
            "ref": format!("refs/heads/{branch}"),
            "before": before,
            "after": c.sha,
            "created": c.parent.is_none(),
            "deleted": false,
            "forced": false,
            "base_ref": null,
            "compare": format!("https://github.com/{}/compare/{}...{}", repo.full_name, &before[..12], &c.sha[..12]),
            "commits": [head.clone()],
            "head_commit": head,
            "repository": {
                "id": 1, "name": name, "full_name": repo.full_name, "private": true,
                "owner": {"login": owner, "name": owner},
                "default_branch": "main",
            },
            "pusher": {"name": owner, "email": c.author_email},
            "sender": {"login": owner, "id": 1, "type": "User"},
        })
    }
}

/// The checks every request passes first; the refusal when one fails.
fn admit(repo: &mut Repository, owner: &str, name: &str, headers: &HeaderMap) -> Option<Response> {
    if !headers.contains_key("user-agent") {
        let (s, b) = message(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a \
             User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
            DOCS,
        );
        return Some(answer(repo, s, b, None));
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let token = auth.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("token "))
    });
    if token != Some(repo.token.as_str()) {
        let (s, b) = message(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS);
        return Some(answer(repo, s, b, None));
    }
    let (n, reset_in, retry_after) = repo.limited;
    if n > 0 {
        repo.limited.0 -= 1;
        let mut response = match retry_after {
            Some(_) => {
                let (s, b) = message(
                    StatusCode::TOO_MANY_REQUESTS,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                );
                answer(repo, s, b, None)
            }
            None => {
                repo.remaining = 0;
                let (s, b) = message(
                    StatusCode::FORBIDDEN,
                    "API rate limit exceeded for user ID 1.",
                    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                );
                answer(repo, s, b, None)
            }
        };
        let h = response.headers_mut();
        h.insert("x-ratelimit-reset", HeaderValue::from(epoch() + reset_in));
        if let Some(secs) = retry_after {
            h.insert("retry-after", HeaderValue::from(secs));
        }
        repo.remaining = 5000;
        return Some(response);
    }
    if !repo
        .full_name
        .eq_ignore_ascii_case(&format!("{owner}/{name}"))
    {
        let (s, b) = message(StatusCode::NOT_FOUND, "Not Found", DOCS);
        return Some(answer(repo, s, b, None));
    }
    None
}

/// An answer with GitHub's headers; a 304 costs nothing against the limit.
fn answer(repo: &mut Repository, status: StatusCode, body: Value, etag: Option<&str>) -> Response {
    if status != StatusCode::NOT_MODIFIED && repo.remaining > 0 {
        repo.remaining -= 1;
    }
    let mut response = if status == StatusCode::NOT_MODIFIED {
        status.into_response()
    } else {
        (status, axum::Json(body)).into_response()
    };
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(5000));
    h.insert("x-ratelimit-remaining", HeaderValue::from(repo.remaining));
    h.insert("x-ratelimit-used", HeaderValue::from(5000 - repo.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(epoch() + 3600));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    if status != StatusCode::NOT_MODIFIED {
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    if let Some(etag) = etag {
        h.insert("etag", HeaderValue::from_str(etag).unwrap());
    }
    response
}

fn record(
    repo: &mut Repository,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    status: u16,
) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    repo.requests.push(GitHubRequest {
        method: "GET".into(),
        path,
        query,
        if_none_match: header("if-none-match"),
        authorization: header("authorization"),
        status,
    });
}

/// A ref: a branch's head, else a commit by SHA.
fn resolve(repo: &Repository, reference: &str) -> Option<Commit> {
    let reference = url_decode(reference);
    let sha = repo.branches.get(&reference).cloned().unwrap_or(reference);
    repo.commits.get(&sha).cloned()
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn commit(
    State(state): State<Shared>,
    Path((owner, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut repo = state.lock().unwrap();
    let path = format!("/repos/{owner}/{name}/commits/{reference}");
    let response = match admit(&mut repo, &owner, &name, &headers) {
        Some(refused) => refused,
        None => match resolve(&repo, &reference) {
            None => {
                let (s, b) = message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("No commit found for SHA: {}", url_decode(&reference)),
                    "https://docs.github.com/rest/commits/commits#get-a-commit",
                );
                answer(&mut repo, s, b, None)
            }
            Some(c) => {
                let etag = format!("W/\"{}\"", blob_sha(&c.sha));
                let sent = headers.get("if-none-match").and_then(|v| v.to_str().ok());
                if sent == Some(etag.as_str()) {
                    answer(
                        &mut repo,
                        StatusCode::NOT_MODIFIED,
                        Value::Null,
                        Some(&etag),
                    )
                } else {
                    let body = commit_json(&repo.full_name, &c);
                    answer(&mut repo, StatusCode::OK, body, Some(&etag))
                }
            }
        },
    };
    record(&mut repo, path, None, &headers, response.status().as_u16());
    response
}

fn commit_json(full_name: &str, c: &Commit) -> Value {
    let person = json!({"name": c.author_name, "email": c.author_email, "date": c.at});
    json!({
        "sha": c.sha,
        "node_id": format!("C_{}", &c.sha[..16]),
        "url": format!("https://api.github.com/repos/{full_name}/commits/{}", c.sha),
        "html_url": format!("https://github.com/{full_name}/commit/{}", c.sha),
        "commit": {
            "author": person,
            "committer": person,
            "message": c.message,
            "tree": {"sha": blob_sha(&c.sha)},
        },
        "author": null,
        "committer": null,
        "parents": c.parent.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>(),
        "files": [],
    })
}

async fn root(
    state: State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    query: RawQuery,
    headers: HeaderMap,
) -> Response {
    read_contents(state, owner, name, String::new(), query, headers).await
}

async fn contents(
    state: State<Shared>,
    Path((owner, name, path)): Path<(String, String, String)>,
    query: RawQuery,
    headers: HeaderMap,
) -> Response {
    read_contents(state, owner, name, path, query, headers).await
}

async fn read_contents(
    State(state): State<Shared>,
    owner: String,
    name: String,
    path: String,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut repo = state.lock().unwrap();
    let path = url_decode(path.trim_end_matches('/'));
    let reference = query
        .as_deref()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "ref"))
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "main".into());
    let response = match admit(&mut repo, &owner, &name, &headers) {
        Some(refused) => refused,
        None => {
            let found = resolve(&repo, &reference).and_then(|c| entry(&repo.full_name, &c, &path));
            match found {
                Some(body) => answer(&mut repo, StatusCode::OK, body, None),
                None => {
                    let (s, b) = message(
                        StatusCode::NOT_FOUND,
                        "Not Found",
                        "https://docs.github.com/rest/repos/contents#get-repository-content",
                    );
                    answer(&mut repo, s, b, None)
                }
            }
        }
    };
    let shown = format!("/repos/{owner}/{name}/contents/{path}");
    record(
        &mut repo,
        shown,
        query,
        &headers,
        response.status().as_u16(),
    );
    response
}

fn links(full_name: &str, path: &str, kind: &str) -> (String, String, String) {
    let url = format!("https://api.github.com/repos/{full_name}/contents/{path}?ref=main");
    let html = format!("https://github.com/{full_name}/{kind}/main/{path}");
    let git = format!(
        "https://api.github.com/repos/{full_name}/git/blobs/{}",
        blob_sha(path)
    );
    (url, html, git)
}

/// What the contents endpoint answers for `path` in commit `c`: a file, a directory, or
/// nothing.
fn entry(full_name: &str, c: &Commit, path: &str) -> Option<Value> {
    if let Some(text) = c.files.get(path) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let wrapped: Vec<String> = encoded
            .as_bytes()
            .chunks(60)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let (url, html, git) = links(full_name, path, "blob");
        return Some(json!({
            "type": "file",
            "encoding": "base64",
            "size": text.len(),
            "name": path.rsplit('/').next().unwrap_or(path),
            "path": path,
            "content": wrapped.join("\n") + "\n",
            "sha": blob_sha(text),
            "url": url,
            "git_url": git,
            "html_url": html,
            "download_url": format!("https://raw.githubusercontent.com/{full_name}/main/{path}"),
            "_links": {"self": url, "git": git, "html": html},
        }));
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut names: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    for (p, text) in &c.files {
        if let Some(rest) = p.strip_prefix(&prefix) {
            match rest.split_once('/') {
                Some((dir, _)) => names.insert(dir.to_owned(), (true, 0)),
                None => names.insert(rest.to_owned(), (false, text.len())),
            };
        }
    }
    if names.is_empty() {
        return None;
    }
    let entries: Vec<Value> = names
        .into_iter()
        .map(|(name, (is_dir, size))| {
            let full = format!("{prefix}{name}");
            let (url, html, git) = links(full_name, &full, if is_dir { "tree" } else { "blob" });
            json!({
                "type": if is_dir { "dir" } else { "file" },
                "name": name,
                "path": full,
                "sha": blob_sha(&full),
                "size": size,
                "url": url,
                "html_url": html,
                "git_url": git,
                "download_url": if is_dir { Value::Null } else {
                    json!(format!("https://raw.githubusercontent.com/{full_name}/main/{full}"))
                },
                "_links": {"self": url, "git": git, "html": html},
            })
        })
        .collect();
    Some(Value::Array(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(
        gh: &FakeGitHub,
        path: &str,
        token: &str,
        etag: Option<&str>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", gh.api_url))
            .header("user-agent", "test")
            .bearer_auth(token);
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        req.send().await.unwrap()
    }

    #[tokio::test]
    async fn serves_commits_and_contents_as_github_does() {
        let gh = FakeGitHub::start("acme/policies", "t0k").await;
        let sha = gh.commit(
            "main",
            "A",
            "a@x",
            "m",
            &[
                ("p/x.yaml", Some("name: x\n")),
                ("p/x_test.yaml", Some("tests: []\n")),
            ],
        );
        let r = get(&gh, "/repos/acme/policies/commits/main", "t0k", None).await;
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sha"], sha.as_str());
        assert_eq!(body["commit"]["author"]["email"], "a@x");
        let r = get(&gh, "/repos/acme/policies/commits/main", "t0k", Some(&etag)).await;
        assert_eq!(r.status(), 304);
        gh.commit("main", "A", "a@x", "m2", &[("README.md", Some("hi"))]);
        let r = get(&gh, "/repos/acme/policies/commits/main", "t0k", Some(&etag)).await;
        assert_eq!(r.status(), 200, "a new commit, a new ETag");

        let r = get(
            &gh,
            &format!("/repos/acme/policies/contents/p/x.yaml?ref={sha}"),
            "t0k",
            None,
        )
        .await;
        let body: Value = r.json().await.unwrap();
        let content: String = body["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        let text = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        assert_eq!(text, b"name: x\n");
        let r = get(
            &gh,
            &format!("/repos/acme/policies/contents/p?ref={sha}"),
            "t0k",
            None,
        )
        .await;
        let dir: Value = r.json().await.unwrap();
        let names: Vec<&str> = dir
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["x.yaml", "x_test.yaml"]);
        let r = get(&gh, "/repos/acme/policies/contents?ref=main", "t0k", None).await;
        let root: Value = r.json().await.unwrap();
        assert_eq!(root[0]["name"], "README.md");
        assert_eq!(
            (root[1]["name"].as_str(), root[1]["type"].as_str()),
            (Some("p"), Some("dir"))
        );

        assert_eq!(
            get(&gh, "/repos/acme/policies/commits/main", "wrong", None)
                .await
                .status(),
            401
        );
        assert_eq!(
            get(&gh, "/repos/acme/policies/commits/nope", "t0k", None)
                .await
                .status(),
            422
        );
        assert_eq!(
            get(&gh, "/repos/acme/other/commits/main", "t0k", None)
                .await
                .status(),
            404
        );
        assert_eq!(
            get(&gh, "/repos/acme/policies/contents/gone.yaml", "t0k", None)
                .await
                .status(),
            404
        );
        gh.rate_limit(1, 60, None);
        let r = get(&gh, "/repos/acme/policies/commits/main", "t0k", None).await;
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(
            get(&gh, "/repos/acme/policies/commits/main", "t0k", None)
                .await
                .status(),
            200
        );
        assert_eq!(gh.requests().len(), 12);
    }

    #[test]
    fn signs_as_github_documents() {
        // https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
