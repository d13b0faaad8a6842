//! The few calls of GitHub's REST API that policy-as-code makes (SPEC §9): a branch's head
//! commit (conditional on its ETag, so an unchanged branch costs one `304`, which GitHub does
//! not count against the rate limit) and a path's content at a commit. Answers are read up to
//! a size limit; a rate limit comes back with the time it resets.
//!
//! The API's base URL is the operator's (`AGENTNEXUS_GITHUB_API_URL`), not a workspace's, so
//! this client is not the outbound one that refuses private addresses: GitHub Enterprise
//! Server often lives on one.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, ETAG, HeaderMap, IF_NONE_MATCH};
use serde::Deserialize;

/// Most bytes of one answer read (a file's content arrives base64, a third larger).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The client for GitHub: 5 s to connect, 15 s in all, a few redirects (a renamed repository
/// answers one; reqwest drops the token when one leads to another host).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("AgentNexus/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds")
}

/// Why a call did not answer what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubError {
    /// 401: the token is wrong, expired or revoked.
    Rejected,
    /// 404 (or 422 for a branch): no such repository, branch or path, or one the token may
    /// not read.
    Missing,
    /// Over a rate limit until then.
    RateLimited(DateTime<Utc>),
    /// Anything else: the transport, a 5xx, an answer not shaped as documented.
    Failed(String),
}

impl std::fmt::Display for GitHubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitHubError::Rejected => f.write_str("GitHub rejected the token (401)"),
            GitHubError::Missing => f.write_str("not found on GitHub"),
            GitHubError::RateLimited(until) => {
                write!(
                    f,
                    "GitHub's rate limit is reached until {}",
                    until.to_rfc3339()
                )
            }
            GitHubError::Failed(why) => write!(f, "GitHub: {why}"),
        }
    }
}

/// A branch's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The ETag still holds: nothing was pushed since.
    Unchanged,
    Commit {
        sha: String,
        /// `Name <email>` of the commit's author.
        author: String,
        etag: Option<String>,
    },
}

/// An entry of a directory.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One repository, read with one token.
pub struct Repo<'a> {
    pub http: &'a reqwest::Client,
    /// The API's base URL, without a trailing `/`.
    pub api: &'a str,
    /// `owner/name`.
    pub repo: &'a str,
    pub token: &'a str,
}

#[derive(Deserialize)]
struct CommitAnswer {
    sha: String,
    commit: CommitDetail,
}

#[derive(Deserialize)]
struct CommitDetail {
    author: Option<Person>,
}

#[derive(Deserialize)]
struct Person {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct FileAnswer {
    #[serde(rename = "type")]
    kind: String,
    encoding: Option<String>,
    content: Option<String>,
}

/// Path segments escaped for a URL, `/` kept between them.
fn escape_path(path: &str) -> String {
    path.split('/')
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>())
        .map(|s| s.replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}

/// When a rate-limited answer says to try again: `Retry-After`, else `x-ratelimit-reset`,
/// else a minute from now (GitHub's advice for secondary limits).
fn rate_limited(
    headers: &HeaderMap,
    status: StatusCode,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let exhausted = header("x-ratelimit-remaining") == Some(0);
    let retry_after = header("retry-after");
    if !(status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (exhausted || retry_after.is_some())))
    {
        return None;
    }
    let until = match (retry_after, header("x-ratelimit-reset")) {
        (Some(secs), _) => now + chrono::Duration::seconds(secs.clamp(1, 86_400)),
        (None, Some(epoch)) if exhausted => DateTime::from_timestamp(epoch, 0)
            .unwrap_or(now)
            .max(now + chrono::Duration::seconds(1)),
        _ => now + chrono::Duration::seconds(60),
    };
    Some(until)
}

impl Repo<'_> {
    async fn get(
        &self,
        path_and_query: &str,
        etag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), GitHubError> {
        let mut request = self
            .http
            .get(format!("{}/repos/{}{path_and_query}", self.api, self.repo))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| GitHubError::Failed(crate::outbound::describe(&e)))?;
        let (status, headers) = (response.status(), response.headers().clone());
        if let Some(until) = rate_limited(&headers, status, now) {
            return Err(GitHubError::RateLimited(until));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| GitHubError::Failed(crate::outbound::describe(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER_BYTES {
                return Err(GitHubError::Failed(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
        }
        match status {
            StatusCode::UNAUTHORIZED => Err(GitHubError::Rejected),
            // GitHub answers 422 "No commit found for SHA" for a branch that is not there.
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Err(GitHubError::Missing),
            s if s.is_success() || s == StatusCode::NOT_MODIFIED => Ok((s, headers, body)),
            s => Err(GitHubError::Failed(format!("answered {s}"))),
        }
    }

    /// The head commit of `branch`; [`Head::Unchanged`] when `etag` still matches.
    pub async fn head(
        &self,
        branch: &str,
        etag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Head, GitHubError> {
        // A branch's `/` stays a `/`: GitHub reads `commits/release/v1` as the branch.
        let path = format!("/commits/{}", escape_path(branch));
        let (status, headers, body) = self.get(&path, etag, now).await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Head::Unchanged);
        }
        let answer: CommitAnswer = serde_json::from_slice(&body)
            .map_err(|e| GitHubError::Failed(format!("the commit is not as documented: {e}")))?;
        if answer.sha.len() != 40 || !answer.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GitHubError::Failed(
                "the commit's sha is not a SHA-1".into(),
            ));
        }
        let author = match answer.commit.author {
            Some(Person {
                name: Some(name),
                email: Some(email),
            }) => format!("{name} <{email}>"),
            Some(Person {
                name: Some(name), ..
            }) => name,
            Some(Person {
                email: Some(email), ..
            }) => email,
            _ => "unknown".into(),
        };
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Head::Commit {
            sha: answer.sha.to_ascii_lowercase(),
            author: one_line(&author),
            etag,
        })
    }

    /// A file's text at `sha`.
    pub async fn file(
        &self,
        path: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> Result<String, GitHubError> {
        let (_, _, body) = self
            .get(
                &format!("/contents/{}?ref={sha}", escape_path(path)),
                None,
                now,
            )
            .await?;
        let answer: FileAnswer = serde_json::from_slice(&body)
            .map_err(|_| GitHubError::Failed(format!("`{path}` is not a file")))?;
        if answer.kind != "file" {
            return Err(GitHubError::Failed(format!("`{path}` is not a file")));
        }
        if answer.encoding.as_deref() != Some("base64") {
            return Err(GitHubError::Failed(format!(
                "`{path}` is too large for GitHub's contents API"
            )));
        }
        let content: String = answer
            .content
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|_| GitHubError::Failed(format!("`{path}`'s content is not base64")))?;
        String::from_utf8(bytes).map_err(|_| GitHubError::Failed(format!("`{path}` is not UTF-8")))
    }

    /// The entries of directory `dir` (`""` for the repository's root) at `sha`.
    pub async fn dir(
        &self,
        dir: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Entry>, GitHubError> {
        let path = if dir.is_empty() {
            format!("/contents?ref={sha}")
        } else {
            format!("/contents/{}?ref={sha}", escape_path(dir))
        };
        let (_, _, body) = self.get(&path, None, now).await?;
        serde_json::from_slice(&body)
            .map_err(|_| GitHubError::Failed(format!("`{dir}` is not a directory")))
    }
}

/// A commit author as one short line: control characters out, at most 200 characters.
fn one_line(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_segment_by_segment() {
        assert_eq!(
            escape_path("policies/pay ments.yaml"),
            "policies/pay%20ments.yaml"
        );
        assert_eq!(escape_path("release/v1"), "release/v1");
        assert_eq!(escape_path("a/b?c#d.yaml"), "a/b%3Fc%23d.yaml");
    }

    #[test]
    fn rate_limits_say_when_they_end() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "1000600".parse().unwrap());
        assert_eq!(
            rate_limited(&h, StatusCode::FORBIDDEN, now),
            DateTime::from_timestamp(1_000_600, 0)
        );
        // A 403 that is not a rate limit (a token without access) is not one.
        h.insert("x-ratelimit-remaining", "4999".parse().unwrap());
        assert_eq!(rate_limited(&h, StatusCode::FORBIDDEN, now), None);
        h.insert("retry-after", "30".parse().unwrap());
        assert_eq!(
            rate_limited(&h, StatusCode::FORBIDDEN, now),
            Some(now + chrono::Duration::seconds(30))
        );
        assert_eq!(
            rate_limited(&HeaderMap::new(), StatusCode::TOO_MANY_REQUESTS, now),
            Some(now + chrono::Duration::seconds(60))
        );
    }
}
