//! A stand-in for GitHub's REST API (<https://docs.github.com/rest>), which tests cannot
//! reach: a real HTTP server on loopback serving one repository through the two endpoints
//! policy-as-code reads, to GitHub's published shapes, and refusing what GitHub refuses.
//!
//! - `GET /repos/{owner}/{repo}/commits/{ref}`
//!   (<https://docs.github.com/rest/commits/commits#get-a-commit>): the commit object, with
//!   the files it changed, and an `ETag`; `If-None-Match` with it answers `304` with no body,
//!   not counted against the rate limit as GitHub's conditional requests are not
//!   (<https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate>);
//!   an unknown ref answers `422`. A ref is a branch (its `/` sent as is or as `%2F`) or a SHA.
//! - `GET /repos/{owner}/{repo}/contents/{path}?ref=`
//!   (<https://docs.github.com/rest/repos/contents#get-repository-content>): a file as base64
//!   `content` wrapped at 60 characters, a directory (the root when `path` is empty) as an
//!   array of entries sorted by name, else `404`; `ref` defaults to `main`.
//! - Anything else, or another repository, answers `404 Not Found`.
//! - A wrong token answers `401 Bad credentials`; no `User-Agent` answers `403`
//!   (<https://docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent>);
//!   a rate limit answers `403` with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, or
//!   `429` with `retry-after` for a secondary limit
//!   (<https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api>). Every
//!   answer carries GitHub's `x-ratelimit-*` headers.
//!
//! The test changes the repository between syncs with [`FakeGitHub::commit`], reads every
//! request with [`FakeGitHub::requests`], and gets what GitHub would post to a webhook with
//! [`FakeGitHub::push_event`], signed by [`signature`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// A request the fake received, and the status it answered.
#[derive(Debug, Clone)]
pub struct GitHubRequest {
    pub method: String,
    /// The path as sent, still percent-encoded.
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
    /// ISO 8601, UTC.
    at: String,
    /// The whole tree: path → text.
    files: BTreeMap<String, String>,
}

/// The requests still to refuse as rate limited.
#[derive(Default)]
struct Limit {
    left: usize,
    reset_in_secs: u64,
    retry_after: Option<u64>,
}

struct Repository {
    /// The fake's own base URL, for the API URLs in answers.
    api_url: String,
    full_name: String,
    token: String,
    commits: BTreeMap<String, Commit>,
    branches: BTreeMap<String, String>,
    requests: Vec<GitHubRequest>,
    limit: Limit,
    /// The primary rate limit's window: requests left in it, and when it resets (epoch s).
    remaining: u64,
    reset: u64,
    serial: u64,
}

type Shared = Arc<Mutex<Repository>>;

/// One repository on a fake GitHub.
pub struct FakeGitHub {
    /// What `AGENTNEXUS_GITHUB_API_URL` points at, e.g. `http://127.0.0.1:PORT` (no
    /// trailing `/`).
    pub api_url: String,
    state: Shared,
    _stop: oneshot::Sender<()>,
}

/// Requests an hour, as GitHub allows a token.
const LIMIT: u64 = 5000;
const DOCS: &str = "https://docs.github.com/rest";
const RATE_LIMIT_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";
const NO_USER_AGENT: &str = "Request forbidden by administrative rules. Please make sure your \
     request has a User-Agent header \
     (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).";

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 40 hex digits naming `what` (SHA-256, cut to a SHA-1's length).
fn object_sha(what: &str) -> String {
    hex_of(&Sha256::digest(what.as_bytes())[..20])
}

/// A blob's SHA, from its content as git frames it.
fn blob_sha(text: &str) -> String {
    object_sha(&format!("blob {}\0{text}", text.len()))
}

/// A tree's SHA, from the paths and blobs under `prefix`.
fn tree_sha(files: &BTreeMap<String, String>, prefix: &str) -> String {
    let listing: String = files
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(p, text)| format!("{p}\0{}\n", blob_sha(text)))
        .collect();
    object_sha(&format!("tree {prefix}\0{listing}"))
}

fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `secs` since the epoch as GitHub writes dates: `2026-12-05T13:02:11Z`.
fn iso8601(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (H. Hinnant, <https://howardhinnant.github.io/date_algorithms.html>).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// `%XX` decoded once (a `+` stays a `+`, as in a path).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path segments escaped for a URL, `/` kept between them.
fn escape_path(path: &str) -> String {
    path.split('/')
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>())
        .map(|s| s.replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}

/// GitHub's error body.
fn error(status: StatusCode, message: &str, docs: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "documentation_url": docs, "status": status.as_u16().to_string()}),
    )
}

/// `X-Hub-Signature-256` for `body` under `secret`: `sha256=` and the HMAC-SHA256 in lowercase
/// hex (<https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries>).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex_of(&mac.finalize().into_bytes()))
}

impl FakeGitHub {
    /// A repository `owner/name` (e.g. `acme/policies`) that accepts `token`, with no
    /// branches yet.
    pub async fn start(repo: &str, token: &str) -> FakeGitHub {
        assert!(
            repo.split('/').count() == 2 && !repo.starts_with('/') && !repo.ends_with('/'),
            "a repository is owner/name, not {repo:?}"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Repository {
            api_url: api_url.clone(),
            full_name: repo.to_owned(),
            token: token.to_owned(),
            commits: BTreeMap::new(),
            branches: BTreeMap::new(),
            requests: Vec::new(),
            limit: Limit::default(),
            remaining: LIMIT,
            reset: epoch() + 3600,
            serial: 0,
        }));
        // Every request, of any method and path, goes through `handle`: it is recorded, and
        // what GitHub does not serve here answers 404 as GitHub would.
        let app = Router::new().fallback(handle).with_state(state.clone());
        let stop = crate::serve_until_dropped(listener, app);
        FakeGitHub {
            api_url,
            state,
            _stop: stop,
        }
    }

    /// Makes a commit on `branch` (created when missing, from nothing): each `(path,
    /// Some(text))` writes a file, `(path, None)` deletes one; the rest of the branch's tree
    /// stays. Answers the new commit's SHA (40 lowercase hex digits, unique per commit).
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
            let path = path.trim_matches('/').to_owned();
            match text {
                Some(t) => tree.insert(path, (*t).to_owned()),
                None => tree.remove(&path),
            };
        }
        // Unique by the serial number; the same from run to run, as docs/ shows SHAs.
        let sha = object_sha(&format!(
            "{}/{branch}/{}/{message}",
            repo.full_name, repo.serial
        ));
        let commit = Commit {
            sha: sha.clone(),
            parent,
            author_name: author_name.to_owned(),
            author_email: author_email.to_owned(),
            message: message.to_owned(),
            at: iso8601(epoch()),
            files: tree,
        };
        repo.commits.insert(sha.clone(), commit);
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

    /// Refuses the next `n` requests (of any endpoint, once past the credentials check) as
    /// rate limited: `403` with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`
    /// `reset_in_secs` from now; or, with `retry_after`, a secondary limit: `429` with
    /// `retry-after`. Then answers as before.
    pub fn rate_limit(&self, n: usize, reset_in_secs: u64, retry_after: Option<u64>) {
        self.state.lock().unwrap().limit = Limit {
            left: n,
            reset_in_secs,
            retry_after,
        };
    }

    /// Every request received so far, in order, refused ones too.
    pub fn requests(&self) -> Vec<GitHubRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The `push` event GitHub would post to a webhook for the latest commit on `branch`
    /// (<https://docs.github.com/webhooks/webhook-events-and-payloads#push>): the commit, and
    /// the files it added, modified and removed relative to its parent.
    pub fn push_event(&self, branch: &str) -> Value {
        let repo = self.state.lock().unwrap();
        let sha = repo
            .branches
            .get(branch)
            .unwrap_or_else(|| panic!("no branch {branch:?} on {}", repo.full_name));
        let c = &repo.commits[sha];
        let before = c.parent.clone().unwrap_or_else(|| "0".repeat(40));
        let (mut added, mut modified, mut removed) = (vec![], vec![], vec![]);
        for (path, status) in changes(&repo, c) {
            match status {
                "added" => added.push(path),
                "removed" => removed.push(path),
                _ => modified.push(path),
            }
        }
        let (owner, name) = repo.full_name.split_once('/').unwrap();
        let person = json!({"name": c.author_name, "email": c.author_email, "username": owner});
        let head = json!({
            "id": c.sha,
            "tree_id": tree_sha(&c.files, ""),
            "distinct": true,
            "message": c.message,
            "timestamp": c.at,
            "url": format!("https://github.com/{}/commit/{}", repo.full_name, c.sha),
            "author": person,
            "committer": person,
            "added": added,
            "removed": removed,
            "modified": modified,
        });
        json!({
            "ref": format!("refs/heads/{branch}"),
            "before": before,
            "after": c.sha,
            "created": c.parent.is_none(),
            "deleted": false,
            "forced": false,
            "base_ref": null,
            "compare": format!(
                "https://github.com/{}/compare/{}...{}",
                repo.full_name,
                &before[..12],
                &c.sha[..12]
            ),
            "commits": [head.clone()],
            "head_commit": head,
            "repository": {
                "id": 1,
                "node_id": "R_kgDOAgentNx",
                "name": name,
                "full_name": repo.full_name,
                "private": true,
                "owner": {"login": owner, "name": owner, "id": 1, "type": "Organization"},
                "html_url": format!("https://github.com/{}", repo.full_name),
                "url": format!("https://github.com/{}", repo.full_name),
                "default_branch": "main",
                "master_branch": "main",
            },
            "pusher": {"name": owner, "email": c.author_email},
            "sender": {"login": owner, "id": 1, "type": "User"},
        })
    }
}

/// What `c` changed relative to its parent: (path, `added` | `modified` | `removed`), by path.
fn changes(repo: &Repository, c: &Commit) -> Vec<(String, &'static str)> {
    let empty = BTreeMap::new();
    let old = c.parent.as_ref().map_or(&empty, |p| &repo.commits[p].files);
    let mut changed: Vec<(String, &'static str)> = c
        .files
        .iter()
        .filter_map(|(path, text)| match old.get(path) {
            None => Some((path.clone(), "added")),
            Some(t) if t != text => Some((path.clone(), "modified")),
            Some(_) => None,
        })
        .collect();
    changed.extend(
        old.keys()
            .filter(|p| !c.files.contains_key(*p))
            .map(|p| (p.clone(), "removed")),
    );
    changed.sort();
    changed
}

/// Lines of `a` not in `b`, each line counted as often as it occurs.
fn lines_not_in(a: &str, b: &str) -> usize {
    let mut left: BTreeMap<&str, usize> = BTreeMap::new();
    for line in b.lines() {
        *left.entry(line).or_default() += 1;
    }
    a.lines()
        .filter(|line| match left.get_mut(line) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .count()
}

/// An answer before GitHub's common headers.
struct Reply {
    status: StatusCode,
    /// `None` for a 304.
    body: Option<Value>,
    headers: Vec<(&'static str, HeaderValue)>,
    /// Whether it counts against the rate limit.
    counted: bool,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
            counted: true,
        }
    }

    fn uncounted(mut self) -> Reply {
        self.counted = false;
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<HeaderValue>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut repo = state.lock().unwrap();
    let reply = respond(&mut repo, &method, &uri, &headers);
    let response = finish(&mut repo, reply);
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    repo.requests.push(GitHubRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        if_none_match: header("if-none-match"),
        authorization: header("authorization"),
        status: response.status().as_u16(),
    });
    response
}

/// The answer to one request, refusals first: no `User-Agent`, bad credentials, a rate
/// limit, then another repository or an endpoint not served.
fn respond(repo: &mut Repository, method: &Method, uri: &Uri, headers: &HeaderMap) -> Reply {
    if !headers.contains_key("user-agent") {
        return Reply::json(StatusCode::FORBIDDEN, json!({"message": NO_USER_AGENT})).uncounted();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("token "))
        })
        .map(str::trim);
    if token != Some(repo.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS).uncounted();
    }
    if repo.limit.left > 0 {
        repo.limit.left -= 1;
        return match repo.limit.retry_after {
            Some(secs) => Reply::json(
                StatusCode::TOO_MANY_REQUESTS,
                json!({
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "documentation_url": format!("{RATE_LIMIT_DOCS}#about-secondary-rate-limits"),
                }),
            )
            .header("retry-after", secs),
            None => Reply::json(
                StatusCode::FORBIDDEN,
                json!({
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": RATE_LIMIT_DOCS,
                }),
            )
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-used", LIMIT)
            .header("x-ratelimit-reset", epoch() + repo.limit.reset_in_secs),
        }
        .uncounted();
    }
    let not_found = || error(StatusCode::NOT_FOUND, "Not Found", DOCS);
    let Some(rest) = uri.path().strip_prefix("/repos/") else {
        return not_found();
    };
    let mut parts = rest.splitn(3, '/');
    let (owner, name) = (
        percent_decode(parts.next().unwrap_or_default()),
        percent_decode(parts.next().unwrap_or_default()),
    );
    if !repo
        .full_name
        .eq_ignore_ascii_case(&format!("{owner}/{name}"))
    {
        return not_found();
    }
    let endpoint = parts.next().unwrap_or_default();
    let query = |key: &str| {
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    if method != Method::GET {
        return not_found();
    }
    if let Some(reference) = endpoint.strip_prefix("commits/")
        && !reference.is_empty()
    {
        return get_commit(repo, &percent_decode(reference), headers);
    }
    let path = match endpoint {
        "contents" => "",
        _ => match endpoint.strip_prefix("contents/") {
            Some(path) => path,
            None => return not_found(),
        },
    };
    let reference = query("ref").unwrap_or_else(|| "main".into());
    get_contents(repo, &percent_decode(path.trim_matches('/')), &reference)
}

/// The reply as an HTTP answer with GitHub's headers, counted against the rate limit.
fn finish(repo: &mut Repository, reply: Reply) -> Response {
    let now = epoch();
    if now >= repo.reset {
        repo.remaining = LIMIT;
        repo.reset = now + 3600;
    }
    if reply.counted && repo.remaining > 0 {
        repo.remaining -= 1;
    }
    let mut response = match &reply.body {
        Some(body) => (
            reply.status,
            [("content-type", "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response(),
        None => reply.status.into_response(),
    };
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(LIMIT));
    h.insert("x-ratelimit-remaining", HeaderValue::from(repo.remaining));
    h.insert(
        "x-ratelimit-used",
        HeaderValue::from(LIMIT - repo.remaining),
    );
    h.insert("x-ratelimit-reset", HeaderValue::from(repo.reset));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    for (name, value) in reply.headers {
        h.insert(name, value);
    }
    response
}

/// A ref: a branch's head (also as `heads/…` or `refs/heads/…`), else a commit by SHA.
fn resolve<'r>(repo: &'r Repository, reference: &str) -> Option<&'r Commit> {
    let branch = reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("heads/"))
        .unwrap_or(reference);
    match repo.branches.get(branch) {
        Some(sha) => repo.commits.get(sha),
        None => repo.commits.get(&reference.to_ascii_lowercase()),
    }
}

/// Whether `If-None-Match` names `etag` (compared weakly, as GitHub does for GETs).
fn matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if_none_match.is_some_and(|sent| {
        sent.split(',')
            .any(|t| t.trim() == "*" || bare(t) == bare(etag))
    })
}

fn get_commit(repo: &Repository, reference: &str, headers: &HeaderMap) -> Reply {
    let Some(c) = resolve(repo, reference) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {reference}"),
            "https://docs.github.com/rest/commits/commits#get-a-commit",
        );
    };
    let body = commit_json(repo, c);
    let etag = format!("W/\"{}\"", hex_of(&Sha256::digest(body.to_string())));
    let sent = headers.get("if-none-match").and_then(|v| v.to_str().ok());
    if matches(sent, &etag) {
        return Reply {
            status: StatusCode::NOT_MODIFIED,
            body: None,
            headers: Vec::new(),
            counted: false,
        }
        .header("etag", HeaderValue::from_str(&etag).unwrap());
    }
    Reply::json(StatusCode::OK, body).header("etag", HeaderValue::from_str(&etag).unwrap())
}

fn commit_json(repo: &Repository, c: &Commit) -> Value {
    let full = &repo.full_name;
    let api = format!("{}/repos/{full}", repo.api_url);
    let person = json!({"name": c.author_name, "email": c.author_email, "date": c.at});
    let empty = BTreeMap::new();
    let old = c.parent.as_ref().map_or(&empty, |p| &repo.commits[p].files);
    let files: Vec<Value> = changes(repo, c)
        .into_iter()
        .map(|(path, status)| {
            let (before, after) = (
                old.get(&path).map_or("", String::as_str),
                c.files.get(&path).map_or("", String::as_str),
            );
            let (additions, deletions) = (lines_not_in(after, before), lines_not_in(before, after));
            let escaped = escape_path(&path);
            json!({
                "sha": blob_sha(if status == "removed" { before } else { after }),
                "filename": path,
                "status": status,
                "additions": additions,
                "deletions": deletions,
                "changes": additions + deletions,
                "blob_url": format!("https://github.com/{full}/blob/{}/{escaped}", c.sha),
                "raw_url": format!("https://github.com/{full}/raw/{}/{escaped}", c.sha),
                "contents_url": format!("{api}/contents/{escaped}?ref={}", c.sha),
            })
        })
        .collect();
    let additions: u64 = files.iter().filter_map(|f| f["additions"].as_u64()).sum();
    let deletions: u64 = files.iter().filter_map(|f| f["deletions"].as_u64()).sum();
    let tree = tree_sha(&c.files, "");
    json!({
        "sha": c.sha,
        "node_id": format!("C_kwDO{}", &c.sha[..24]),
        "url": format!("{api}/commits/{}", c.sha),
        "html_url": format!("https://github.com/{full}/commit/{}", c.sha),
        "comments_url": format!("{api}/commits/{}/comments", c.sha),
        "commit": {
            "url": format!("{api}/git/commits/{}", c.sha),
            "author": person,
            "committer": person,
            "message": c.message,
            "tree": {"sha": tree, "url": format!("{api}/git/trees/{tree}")},
            "comment_count": 0,
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null},
        },
        // The author and committer as GitHub users: null, as for an e-mail no account has.
        "author": null,
        "committer": null,
        "parents": c.parent.iter().map(|p| json!({
            "sha": p,
            "url": format!("{api}/commits/{p}"),
            "html_url": format!("https://github.com/{full}/commit/{p}"),
        })).collect::<Vec<_>>(),
        "stats": {"total": additions + deletions, "additions": additions, "deletions": deletions},
        "files": files,
    })
}

fn get_contents(repo: &Repository, path: &str, reference: &str) -> Reply {
    match resolve(repo, reference).and_then(|c| entry(repo, c, path, reference)) {
        Some(body) => Reply::json(StatusCode::OK, body),
        None => error(
            StatusCode::NOT_FOUND,
            "Not Found",
            "https://docs.github.com/rest/repos/contents#get-repository-content",
        ),
    }
}

/// An entry's URLs: (`url`, `html_url`, `git_url`, `download_url`).
fn links(
    repo: &Repository,
    path: &str,
    reference: &str,
    sha: &str,
    dir: bool,
) -> (String, String, String, Value) {
    let full = &repo.full_name;
    let escaped = escape_path(path);
    let url = format!(
        "{}/repos/{full}/contents/{escaped}?ref={}",
        repo.api_url,
        url::form_urlencoded::byte_serialize(reference.as_bytes()).collect::<String>()
    );
    let kind = if dir { "tree" } else { "blob" };
    let html = format!("https://github.com/{full}/{kind}/{reference}/{escaped}");
    let git_kind = if dir { "trees" } else { "blobs" };
    let git = format!("{}/repos/{full}/git/{git_kind}/{sha}", repo.api_url);
    let download = if dir {
        Value::Null
    } else {
        json!(format!(
            "https://raw.githubusercontent.com/{full}/{reference}/{escaped}"
        ))
    };
    (url, html, git, download)
}

/// What the contents endpoint answers for `path` in commit `c`: a file, a directory, or
/// nothing.
fn entry(repo: &Repository, c: &Commit, path: &str, reference: &str) -> Option<Value> {
    if let Some(text) = c.files.get(path) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        // GitHub wraps the base64 at 60 characters, each line ending in `\n`.
        let content: String = encoded
            .as_bytes()
            .chunks(60)
            .map(|line| format!("{}\n", String::from_utf8_lossy(line)))
            .collect();
        let sha = blob_sha(text);
        let (url, html, git, download) = links(repo, path, reference, &sha, false);
        return Some(json!({
            "type": "file",
            "encoding": "base64",
            "size": text.len(),
            "name": path.rsplit('/').next().unwrap_or(path),
            "path": path,
            "content": content,
            "sha": sha,
            "url": url,
            "git_url": git,
            "html_url": html,
            "download_url": download,
            "_links": {"self": url, "git": git, "html": html},
        }));
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    // name → the text of a file, or None for a directory.
    let mut names: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for (p, text) in &c.files {
        if let Some(rest) = p.strip_prefix(&prefix) {
            match rest.split_once('/') {
                Some((dir, _)) => names.insert(dir, None),
                None => names.insert(rest, Some(text.as_str())),
            };
        }
    }
    if names.is_empty() {
        return None;
    }
    let entries: Vec<Value> = names
        .into_iter()
        .map(|(name, text)| {
            let full = format!("{prefix}{name}");
            let sha = match text {
                Some(t) => blob_sha(t),
                None => tree_sha(&c.files, &format!("{full}/")),
            };
            let (url, html, git, download) = links(repo, &full, reference, &sha, text.is_none());
            json!({
                "type": if text.is_some() { "file" } else { "dir" },
                "name": name,
                "path": full,
                "sha": sha,
                "size": text.map_or(0, str::len),
                "url": url,
                "html_url": html,
                "git_url": git,
                "download_url": download,
                "_links": {"self": url, "git": git, "html": html},
            })
        })
        .collect();
    Some(Value::Array(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "acme/policies";
    const TOKEN: &str = "ghp_0123456789abcdefABCDEF0123456789abcd";

    async fn get(
        gh: &FakeGitHub,
        path: &str,
        token: &str,
        etag: Option<&str>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", gh.api_url))
            .header("user-agent", "agentnexus-testkit")
            .header("accept", "application/vnd.github+json")
            .bearer_auth(token);
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        req.send().await.unwrap()
    }

    async fn json_of(gh: &FakeGitHub, path: &str) -> Value {
        let r = get(gh, path, TOKEN, None).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    fn header(r: &reqwest::Response, name: &str) -> String {
        r.headers()[name].to_str().unwrap().to_owned()
    }

    fn decode(content: &Value) -> String {
        let content: String = content
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn file_content_round_trips_through_base64() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let text = format!("name: payments\n# Zahlungen über {}\n", "€".repeat(100));
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "add",
            &[
                ("policies/payments.yaml", Some(&text)),
                ("a b.yaml", Some("x: 1\n")),
            ],
        );
        assert_eq!(sha.len(), 40);
        assert!(
            sha.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );

        let r = get(
            &gh,
            &format!("/repos/acme/policies/contents/policies/payments.yaml?ref={sha}"),
            TOKEN,
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-type"),
            "application/json; charset=utf-8"
        );
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
        ] {
            assert!(header(&r, h).parse::<u64>().is_ok(), "{h}");
        }
        assert_eq!(header(&r, "x-ratelimit-resource"), "core");
        assert_eq!(header(&r, "x-github-api-version-selected"), "2022-11-28");
        let file: Value = r.json().await.unwrap();
        assert_eq!(
            (file["type"].as_str(), file["encoding"].as_str()),
            (Some("file"), Some("base64"))
        );
        assert_eq!(file["name"], "payments.yaml");
        assert_eq!(file["path"], "policies/payments.yaml");
        assert_eq!(file["size"], text.len());
        let lines: Vec<&str> = file["content"]
            .as_str()
            .unwrap()
            .split_terminator('\n')
            .collect();
        assert!(
            lines.len() > 1 && lines.iter().all(|l| l.len() <= 60),
            "{lines:?}"
        );
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 60));
        assert!(file["content"].as_str().unwrap().ends_with('\n'));
        assert_eq!(decode(&file["content"]), text);
        assert_eq!(file["_links"]["self"], file["url"]);
        assert_eq!(file["sha"].as_str().unwrap().len(), 40);

        // By branch, by the default branch, and with a space escaped in the path.
        let by_branch = json_of(
            &gh,
            "/repos/acme/policies/contents/policies/payments.yaml?ref=main",
        )
        .await;
        assert_eq!(by_branch["sha"], file["sha"]);
        let by_default = json_of(&gh, "/repos/acme/policies/contents/policies/payments.yaml").await;
        assert_eq!(decode(&by_default["content"]), text);
        let spaced = json_of(&gh, "/repos/acme/policies/contents/a%20b.yaml").await;
        assert_eq!(decode(&spaced["content"]), "x: 1\n");

        // An older commit keeps its content; a deleted file is gone.
        gh.commit(
            "main",
            "Bob",
            "bob@acme.test",
            "rm",
            &[("policies/payments.yaml", None)],
        );
        let old = json_of(
            &gh,
            &format!("/repos/acme/policies/contents/policies/payments.yaml?ref={sha}"),
        )
        .await;
        assert_eq!(decode(&old["content"]), text);
        let r = get(
            &gh,
            "/repos/acme/policies/contents/policies/payments.yaml?ref=main",
            TOKEN,
            None,
        )
        .await;
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (body["message"].as_str(), body["status"].as_str()),
            (Some("Not Found"), Some("404"))
        );
    }

    #[tokio::test]
    async fn etag_answers_304_until_a_new_commit() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let first = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[("x.yaml", Some("a\n"))],
        );
        let r = get(&gh, "/repos/acme/policies/commits/main", TOKEN, None).await;
        assert_eq!(r.status(), 200);
        let etag = header(&r, "etag");
        assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
        let remaining = header(&r, "x-ratelimit-remaining");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sha"], first.as_str());
        assert_eq!(body["commit"]["author"]["name"], "Alice");
        assert_eq!(body["commit"]["author"]["email"], "alice@acme.test");
        assert_eq!(body["commit"]["message"], "one");
        assert_eq!(body["parents"], json!([]));
        assert_eq!(
            (
                body["files"][0]["filename"].as_str(),
                body["files"][0]["status"].as_str()
            ),
            (Some("x.yaml"), Some("added"))
        );

        // Unchanged: 304, no body, the ETag again, and free.
        for _ in 0..2 {
            let r = get(&gh, "/repos/acme/policies/commits/main", TOKEN, Some(&etag)).await;
            assert_eq!(r.status(), 304);
            assert_eq!(header(&r, "etag"), etag);
            assert_eq!(header(&r, "x-ratelimit-remaining"), remaining);
            assert!(r.bytes().await.unwrap().is_empty());
        }
        // The same commit by SHA has the same ETag.
        let r = get(
            &gh,
            &format!("/repos/acme/policies/commits/{first}"),
            TOKEN,
            Some(&etag),
        )
        .await;
        assert_eq!(r.status(), 304);

        let second = gh.commit(
            "main",
            "Bob",
            "bob@acme.test",
            "two",
            &[("x.yaml", Some("b\n")), ("y.yaml", Some("c\n"))],
        );
        let r = get(&gh, "/repos/acme/policies/commits/main", TOKEN, Some(&etag)).await;
        assert_eq!(r.status(), 200, "a new commit, a new ETag");
        assert_ne!(header(&r, "etag"), etag);
        assert!(
            header(&r, "x-ratelimit-remaining").parse::<u64>().unwrap()
                < remaining.parse().unwrap()
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sha"], second.as_str());
        assert_eq!(body["parents"][0]["sha"], first.as_str());
        let files: Vec<(&str, &str)> = body["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["filename"].as_str().unwrap(),
                    f["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(files, [("x.yaml", "modified"), ("y.yaml", "added")]);

        let asked = gh.requests();
        assert_eq!(asked.len(), 5);
        assert_eq!(asked[1].if_none_match.as_deref(), Some(etag.as_str()));
        assert_eq!(
            asked.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 304, 304, 304, 200]
        );
        assert_eq!(
            asked[4].authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(asked[4].path, "/repos/acme/policies/commits/main");
    }

    #[tokio::test]
    async fn refuses_bad_credentials_and_no_user_agent() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[("x.yaml", Some("a\n"))],
        );
        let r = get(&gh, "/repos/acme/policies/commits/main", "ghp_wrong", None).await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("x-ratelimit-remaining"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
        );

        // `token TOKEN` is accepted too; no Authorization is not.
        let client = reqwest::Client::new();
        let url = format!("{}/repos/acme/policies/contents/x.yaml", gh.api_url);
        let r = client
            .get(&url)
            .header("user-agent", "t")
            .header("authorization", format!("token {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client
            .get(&url)
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        gh.set_token("ghp_rotated");
        assert_eq!(
            get(&gh, "/repos/acme/policies/commits/main", TOKEN, None)
                .await
                .status(),
            401
        );
        assert_eq!(
            get(
                &gh,
                "/repos/acme/policies/commits/main",
                "ghp_rotated",
                None
            )
            .await
            .status(),
            200
        );

        let r = client
            .get(&url)
            .bearer_auth("ghp_rotated")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("User-Agent header"),
            "{body}"
        );

        let statuses: Vec<u16> = gh.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 200, 401, 401, 200, 403]);
        assert_eq!(
            gh.requests()[0].authorization.as_deref(),
            Some("Bearer ghp_wrong")
        );
        assert_eq!(gh.requests()[2].authorization, None);
    }

    #[tokio::test]
    async fn unknown_refs_repositories_and_paths() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let r = get(&gh, "/repos/acme/policies/commits/main", TOKEN, None).await;
        assert_eq!(r.status(), 422, "no branches yet");
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[("x.yaml", Some("a\n"))],
        );
        let r = get(&gh, "/repos/acme/policies/commits/nope", TOKEN, None).await;
        assert_eq!(r.status(), 422);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": "No commit found for SHA: nope",
                   "documentation_url": "https://docs.github.com/rest/commits/commits#get-a-commit",
                   "status": "422"})
        );
        for path in [
            "/repos/acme/other/commits/main",
            "/repos/other/policies/contents/x.yaml",
            "/repos/acme/policies/contents/nope.yaml",
            "/repos/acme/policies/contents/x.yaml?ref=nope",
            "/repos/acme/policies/pulls",
            "/user",
        ] {
            let r = get(&gh, path, TOKEN, None).await;
            assert_eq!(r.status(), 404, "{path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["message"], "Not Found", "{path}");
        }

        // A branch with a `/`, as is or escaped; a deleted branch's commits stay by SHA.
        let release = gh.commit(
            "release/v1",
            "Bob",
            "bob@acme.test",
            "cut",
            &[("x.yaml", Some("b\n"))],
        );
        for path in [
            "/repos/acme/policies/commits/release/v1",
            "/repos/acme/policies/commits/release%2Fv1",
        ] {
            assert_eq!(json_of(&gh, path).await["sha"], release.as_str(), "{path}");
        }
        let file = json_of(&gh, "/repos/acme/policies/contents/x.yaml?ref=release%2Fv1").await;
        assert_eq!(decode(&file["content"]), "b\n");
        gh.delete_branch("main");
        assert_eq!(
            get(&gh, "/repos/acme/policies/commits/main", TOKEN, None)
                .await
                .status(),
            422
        );
        assert_eq!(
            json_of(&gh, &format!("/repos/acme/policies/commits/{sha}")).await["sha"],
            sha.as_str()
        );
        assert_eq!(
            gh.requests()[gh.requests().len() - 4].path,
            "/repos/acme/policies/commits/release%2Fv1"
        );
    }

    #[tokio::test]
    async fn rate_limits_then_recovers() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[("x.yaml", Some("a\n"))],
        );
        gh.rate_limit(2, 60, None);
        for path in [
            "/repos/acme/policies/commits/main",
            "/repos/acme/policies/contents/x.yaml",
        ] {
            let r = get(&gh, path, TOKEN, None).await;
            assert_eq!(r.status(), 403, "{path}");
            assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
            assert_eq!(header(&r, "x-ratelimit-limit"), "5000");
            let reset: u64 = header(&r, "x-ratelimit-reset").parse().unwrap();
            assert!((epoch() + 55..=epoch() + 61).contains(&reset), "{reset}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["message"], "API rate limit exceeded for user ID 1.");
            assert!(
                body["documentation_url"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://docs.github.com/")
            );
        }
        let r = get(&gh, "/repos/acme/policies/commits/main", TOKEN, None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-remaining"), "4999");

        // A secondary limit: 429 and Retry-After.
        gh.rate_limit(1, 60, Some(7));
        let r = get(&gh, "/repos/acme/policies/contents/x.yaml", TOKEN, None).await;
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "retry-after"), "7");
        assert_eq!(
            get(&gh, "/repos/acme/policies/contents/x.yaml", TOKEN, None)
                .await
                .status(),
            200
        );
        let statuses: Vec<u16> = gh.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [403, 403, 200, 429, 200]);
    }

    #[tokio::test]
    async fn lists_directories_sorted_by_name() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[
                ("policies/x_test.yaml", Some("tests: []\n")),
                ("policies/x.yaml", Some("name: x\n")),
                ("policies/deep/y.yaml", Some("name: y\n")),
                ("README.md", Some("hi\n")),
            ],
        );
        let dir = json_of(
            &gh,
            &format!("/repos/acme/policies/contents/policies?ref={sha}"),
        )
        .await;
        let entries: Vec<(&str, &str, &str)> = dir
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["type"].as_str().unwrap(),
                    e["path"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("deep", "dir", "policies/deep"),
                ("x.yaml", "file", "policies/x.yaml"),
                ("x_test.yaml", "file", "policies/x_test.yaml"),
            ]
        );
        assert_eq!(dir[0]["download_url"], Value::Null);
        assert!(dir[1]["download_url"].is_string());
        assert_eq!(dir[1]["size"], 8);
        assert!(dir[1].get("content").is_none());
        // The file's sha in the listing is the one its contents answer gives.
        let file = json_of(&gh, "/repos/acme/policies/contents/policies/x.yaml").await;
        assert_eq!(dir[1]["sha"], file["sha"]);
        assert_eq!(
            json_of(
                &gh,
                &format!("/repos/acme/policies/contents/policies/?ref={sha}")
            )
            .await,
            dir
        );

        for root in [
            "/repos/acme/policies/contents",
            "/repos/acme/policies/contents/",
            "/repos/acme/policies/contents?ref=main",
        ] {
            let listing = json_of(&gh, root).await;
            let names: Vec<&str> = listing
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["README.md", "policies"], "{root}");
        }
    }

    #[tokio::test]
    async fn push_event_lists_what_the_commit_changed() {
        let gh = FakeGitHub::start(REPO, TOKEN).await;
        let first = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "one",
            &[("a.yaml", Some("1")), ("b.yaml", Some("2"))],
        );
        let event = gh.push_event("main");
        assert_eq!(event["before"], "0".repeat(40));
        assert_eq!(event["commits"][0]["added"], json!(["a.yaml", "b.yaml"]));
        let second = gh.commit(
            "main",
            "Bob",
            "bob@acme.test",
            "two",
            &[
                ("a.yaml", Some("1!")),
                ("b.yaml", None),
                ("c.yaml", Some("3")),
            ],
        );
        let event = gh.push_event("main");
        assert_eq!(event["ref"], "refs/heads/main");
        assert_eq!(
            (event["before"].as_str(), event["after"].as_str()),
            (Some(&*first), Some(&*second))
        );
        assert_eq!(event["repository"]["full_name"], REPO);
        assert_eq!(event["repository"]["name"], "policies");
        assert_eq!(event["repository"]["owner"]["login"], "acme");
        assert!(event["pusher"]["name"].is_string());
        assert_eq!(event["head_commit"], event["commits"][0]);
        let c = &event["commits"][0];
        assert_eq!(c["id"], second.as_str());
        assert_eq!(c["message"], "two");
        assert_eq!(c["author"]["name"], "Bob");
        assert_eq!(c["author"]["email"], "bob@acme.test");
        assert_eq!(c["added"], json!(["c.yaml"]));
        assert_eq!(c["modified"], json!(["a.yaml"]));
        assert_eq!(c["removed"], json!(["b.yaml"]));
        assert!(
            gh.requests().is_empty(),
            "reading the event asks GitHub nothing"
        );
    }

    #[test]
    fn signs_as_github_documents() {
        // https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn writes_dates_as_github_does() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(iso8601(1_796_477_731), "2026-12-05T13:35:31Z");
    }
}
