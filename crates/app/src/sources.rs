//! Policy-as-code (SPEC §9): a policy bound to a file in a GitHub repository, kept in step on
//! demand, on a schedule and on a push.
//!
//! A sync reads the branch's head (conditionally: an unchanged branch costs one `304`), the
//! file at that commit and the `*_test.yaml` files beside it; the document must be valid and
//! named as the policy, and every test must pass against the policies as they would be in
//! force (the workspace's others, this one replaced). Only then is it stored, as a version
//! with source `git:SHA` and the commit's author; one commit is one version however many
//! servers sync it. On any failure the active version stays, and the error is kept in the
//! binding's `last_sync` and, when it is new, in the audit trail.

use std::sync::Arc;

use agentnexus_engine::testing::{TestFile, run_case};
use agentnexus_engine::{CompiledPolicy, Format};
use agentnexus_store::{
    Actor, EventKind, GitHubFile, NewAuditEvent, PolicyBinding, PolicyChange, PolicySource,
    SyncRecord, SyncResult, Tenant,
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::github::{GitHubError, Head, Repo};
use crate::policies::PolicyText;
use crate::{Admin, App, Reader};

/// Most test files run beside one policy, and most cases in all.
pub const MAX_TEST_FILES: usize = 20;
pub const MAX_TEST_CASES: usize = 1_000;
/// The longest one sync may take, all its requests and tests together.
pub const SYNC_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `PUT /api/v1/policies/{name}/source` takes.
#[derive(Debug, Clone)]
pub struct BindInput {
    pub repo: String,
    pub branch: String,
    pub path: String,
    pub token: String,
}

/// A binding as answered: never the token.
#[derive(Debug, Clone)]
pub struct Binding {
    pub name: String,
    pub file: GitHubFile,
    pub last_sync: Option<SyncRecord>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PolicyBinding> for Binding {
    fn from(b: PolicyBinding) -> Binding {
        Binding {
            name: b.name,
            file: b.file,
            last_sync: b.last_sync,
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Updated,
    Unchanged,
    Failed,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Updated => "updated",
            SyncStatus::Unchanged => "unchanged",
            SyncStatus::Failed => "failed",
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone)]
pub struct Synced {
    pub status: SyncStatus,
    /// The active version afterwards, if the policy exists.
    pub version: Option<i64>,
    pub commit: Option<String>,
    pub error: Option<String>,
}

/// Where GitHub posts pushes for the workspace, and the secret it signs them with.
#[derive(Debug, Clone)]
pub struct GitHubIntegration {
    pub webhook_url: String,
    pub webhook_secret: String,
}

/// What a push delivery came to.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// GitHub's `ping` when the webhook is created.
    Pong,
    /// Each bound policy the push touched, synced.
    Synced(Vec<(String, Synced)>),
}

/// `owner/name` as GitHub allows them.
fn repo(sent: String) -> Result<String> {
    let ok = sent.split_once('/').is_some_and(|(owner, name)| {
        (1..=39).contains(&owner.len())
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && (1..=100).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && name != "."
            && name != ".."
    });
    if ok {
        Ok(sent)
    } else {
        Err(Error::field("github.repo", "must be `owner/name`"))
    }
}

/// A branch name git accepts (`git check-ref-format --branch`), at most 255 bytes.
fn branch(sent: String) -> Result<String> {
    let bad_char = |c: char| c.is_control() || " ~^:?*[\\".contains(c);
    let ok = (1..=255).contains(&sent.len())
        && !sent.chars().any(bad_char)
        && !sent.contains("..")
        && !sent.contains("@{")
        && !sent.contains("//")
        && !sent.starts_with(['/', '-', '.'])
        && !sent.ends_with(['/', '.'])
        && !sent.ends_with(".lock")
        && sent != "@";
    if ok {
        Ok(sent)
    } else {
        Err(Error::field(
            "github.branch",
            "must be a branch name git accepts",
        ))
    }
}

/// A file's path in the repository: relative, no `.` or `..` segments, a policy document's
/// extension, at most 1,024 bytes.
fn path(sent: String) -> Result<String> {
    let ok = (1..=1024).contains(&sent.len())
        && !sent.chars().any(|c| c.is_control() || c == '\\')
        && sent
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && [".yaml", ".yml", ".json"].iter().any(|e| sent.ends_with(e))
        && !is_test_file(&sent);
    if ok {
        Ok(sent)
    } else {
        Err(Error::field(
            "github.path",
            "must be the relative path of a .yaml, .yml or .json policy document (not a test file)",
        ))
    }
}

fn token(sent: String) -> Result<String> {
    if (1..=255).contains(&sent.len()) && sent.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(sent)
    } else {
        Err(Error::field(
            "github.token",
            "must be a GitHub token (1-255 printable characters)",
        ))
    }
}

fn is_test_file(path: &str) -> bool {
    path.ends_with("_test.yaml") || path.ends_with("_test.yml")
}

/// The directory a path is in (`""` at the root).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// Why a sync failed, as kept in `last_sync.error` and the audit trail.
struct Failure {
    commit: Option<String>,
    error: String,
    /// A rate limit's end: no look before it.
    wait_until: Option<DateTime<Utc>>,
}

impl Failure {
    fn at(commit: Option<&str>, error: impl Into<String>) -> Failure {
        Failure {
            commit: commit.map(str::to_owned),
            error: error.into(),
            wait_until: None,
        }
    }

    fn github(file: &GitHubFile, commit: Option<&str>, e: GitHubError) -> Failure {
        let wait_until = match &e {
            GitHubError::RateLimited(until) => Some(*until),
            _ => None,
        };
        let error = match e {
            GitHubError::Rejected => {
                "GitHub rejected the token (401): bind the policy again with a valid token".into()
            }
            GitHubError::Missing => match commit {
                None => format!(
                    "branch `{}` of `{}` not found (renamed or deleted?), or the token cannot \
                     read the repository",
                    file.branch, file.repo
                ),
                Some(sha) => format!(
                    "`{}` not found at commit {} (deleted or moved?)",
                    file.path,
                    short(sha)
                ),
            },
            other => other.to_string(),
        };
        Failure {
            commit: commit.map(str::to_owned),
            error,
            wait_until,
        }
    }
}

impl App {
    fn poll_interval(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.github_poll_secs.clamp(1, 86_400) as i64)
    }

    /// Binds policy `name` (which need not exist yet: its first sync creates it) to a file.
    /// The token is sealed for this workspace and policy, and never answered back.
    pub async fn bind_policy(
        &self,
        admin: &Admin,
        name: &str,
        input: BindInput,
    ) -> Result<Binding> {
        if !agentnexus_engine::valid_policy_name(name) {
            return Err(Error::field(
                "name",
                "must be 1-64 of a-z, 0-9, `-`, `_`, `.`",
            ));
        }
        let file = GitHubFile {
            repo: repo(input.repo)?,
            branch: branch(input.branch)?,
            path: path(input.path)?,
        };
        let token = token(input.token)?;
        let tenant = admin.tenant();
        let purpose = Purpose::GitHubToken {
            workspace_id: tenant.workspace_id(),
            policy: name,
        };
        let sealed = self.cipher()?.seal(&token, purpose);
        let bound = self
            .store
            .bind_policy_source(tenant, name, &file, &sealed, admin.actor(), self.now())
            .await?;
        Ok(bound.into())
    }

    /// Unbinds a policy; the policy and its versions stay as they are.
    pub async fn unbind_policy(&self, admin: &Admin, name: &str) -> Result<()> {
        let (tenant, now) = (admin.tenant(), self.now());
        Ok(self
            .store
            .unbind_policy_source(tenant, name, admin.actor(), now)
            .await?)
    }

    pub async fn policy_binding(&self, reader: &Reader, name: &str) -> Result<Option<Binding>> {
        Ok(self
            .store
            .policy_source(reader.tenant(), name)
            .await?
            .map(Into::into))
    }

    /// Every bound policy of the workspace, by name.
    pub async fn policy_bindings(&self, reader: &Reader) -> Result<Vec<Binding>> {
        let all = self.store.policy_sources(reader.tenant()).await?;
        Ok(all.into_iter().map(Into::into).collect())
    }

    /// Where GitHub posts the workspace's pushes (the secret is [`App::github_integration`]).
    pub fn github_webhook_url(&self, reader: &Reader) -> String {
        format!(
            "{}/api/v1/integrations/github/webhook/{}",
            self.public_url(),
            reader.tenant().workspace_id()
        )
    }

    /// Syncs a bound policy now (404 when it is not bound).
    pub async fn sync_policy(&self, admin: &Admin, name: &str) -> Result<Synced> {
        let binding = self
            .store
            .policy_source(admin.tenant(), name)
            .await?
            .ok_or(Error::NotFound)?;
        self.sync_binding(admin.tenant(), binding, admin.actor())
            .await
    }

    /// The workspace's push webhook: its URL and secret (made on first ask).
    pub async fn github_integration(&self, admin: &Admin) -> Result<GitHubIntegration> {
        let tenant = admin.tenant();
        let purpose = Purpose::GitHubWebhookSecret {
            workspace_id: tenant.workspace_id(),
        };
        let sealed = match self.store.github_webhook_secret(tenant).await? {
            Some(s) => s,
            None => {
                let fresh = crate::crypto::random_token("ghs_");
                let sealed = self.cipher()?.seal(&fresh, purpose);
                let (actor, now) = (admin.actor(), self.now());
                self.store
                    .create_github_webhook_secret(tenant, &sealed, actor, now)
                    .await?
            }
        };
        let secret = self
            .cipher()?
            .open(&sealed, purpose)
            .map_err(|e| Error::Internal(format!("GitHub webhook secret: {e}")))?;
        Ok(GitHubIntegration {
            webhook_url: self.github_webhook_url(&admin.reader()),
            webhook_secret: secret,
        })
    }

    /// A delivery from GitHub to workspace `workspace_id`'s webhook. Its `X-Hub-Signature-256`
    /// must be the HMAC of the body under the workspace's secret (compared in constant time);
    /// anything else, an unknown workspace included, is [`Error::Unauthorized`]. A push syncs
    /// each policy bound to its repository and branch whose file or tests it changed; other
    /// events and pushes do nothing.
    pub async fn github_push(
        &self,
        workspace_id: &str,
        event: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<PushOutcome> {
        let (tenant, sealed) = self
            .store
            .github_integration_of(workspace_id)
            .await?
            .ok_or(Error::Unauthorized)?;
        let purpose = Purpose::GitHubWebhookSecret { workspace_id };
        let secret = self
            .cipher()?
            .open(&sealed, purpose)
            .map_err(|e| Error::Internal(format!("GitHub webhook secret: {e}")))?;
        let sent = signature
            .and_then(|s| s.strip_prefix("sha256="))
            .and_then(|hex| hex::decode(hex).ok())
            .ok_or(Error::Unauthorized)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sent).map_err(|_| Error::Unauthorized)?;

        match event {
            "ping" => return Ok(PushOutcome::Pong),
            "push" => {}
            _ => return Ok(PushOutcome::Synced(Vec::new())),
        }
        let push: Value = serde_json::from_slice(body)
            .map_err(|e| Error::field("body", format!("not a push event: {e}")))?;
        let full_name = push["repository"]["full_name"].as_str().unwrap_or_default();
        let pushed_ref = push["ref"].as_str().unwrap_or_default();
        let changed = changed_files(&push);
        let mut synced = Vec::new();
        for binding in self.store.policy_sources(&tenant).await? {
            let f = &binding.file;
            let touched = match &changed {
                // A push lists its changes only for a small history; otherwise assume it did.
                None => true,
                Some(files) => files
                    .iter()
                    .any(|p| p == &f.path || (parent(p) == parent(&f.path) && is_test_file(p))),
            };
            if f.repo.eq_ignore_ascii_case(full_name)
                && pushed_ref.strip_prefix("refs/heads/") == Some(f.branch.as_str())
                && touched
            {
                let name = binding.name.clone();
                let outcome = self.sync_binding(&tenant, binding, Actor::System).await?;
                synced.push((name, outcome));
            }
        }
        Ok(PushOutcome::Synced(synced))
    }

    /// The schedule: syncs the bindings whose time has come (claimed, so replicas do not
    /// look twice), each at most every `AGENTNEXUS_GITHUB_POLL_SECS`. Answers how many.
    pub async fn poll_policy_sources(&self) -> Result<usize> {
        let now = self.now();
        let due = self
            .store
            .claim_due_policy_sources(now, now + self.poll_interval(), 50)
            .await?;
        let n = due.len();
        for (tenant, name) in due {
            if let Some(binding) = self.store.policy_source(&tenant, &name).await?
                && let Err(e) = self.sync_binding(&tenant, binding, Actor::System).await
            {
                tracing::warn!(error = %e, policy = %name, "a scheduled policy sync failed");
            }
        }
        Ok(n)
    }

    /// One sync of one binding, recorded on it; GitHub's and the document's failures are a
    /// [`SyncStatus::Failed`] answer, not an error.
    async fn sync_binding(
        &self,
        tenant: &Tenant,
        binding: PolicyBinding,
        actor: Actor,
    ) -> Result<Synced> {
        let now = self.now();
        let previous = binding.last_sync.clone();
        let healthy = previous.as_ref().is_some_and(|s| s.status != "failed");
        let attempt = self
            .try_sync(tenant, &binding, actor.clone(), healthy)
            .await;
        let mut etag = binding.etag.clone();
        let mut next = now + self.poll_interval();
        let (synced, audit) = match attempt {
            Ok((synced, new_etag)) => {
                if new_etag.is_some() {
                    etag = new_etag;
                }
                (synced, None)
            }
            Err(failure) => {
                if let Some(until) = failure.wait_until {
                    next = next.max(until);
                }
                let is_new = previous.as_ref().is_none_or(|p| {
                    p.status != "failed" || p.error.as_deref() != Some(&failure.error)
                });
                let audit = is_new.then(|| NewAuditEvent {
                    kind: EventKind::PolicySyncFailed,
                    actor,
                    evaluation_id: None,
                    data: json!({
                        "name": binding.name,
                        "commit": failure.commit,
                        "error": failure.error,
                    }),
                    occurred_at: now,
                });
                let version = self
                    .store
                    .policy(tenant, &binding.name)
                    .await?
                    .map(|v| v.version);
                let synced = Synced {
                    status: SyncStatus::Failed,
                    version,
                    commit: failure.commit,
                    error: Some(failure.error),
                };
                (synced, audit)
            }
        };
        let result = SyncResult {
            record: SyncRecord {
                at: now,
                commit: synced.commit.clone(),
                status: synced.status.as_str().to_owned(),
                error: synced.error.clone(),
            },
            etag,
            next_poll_at: next,
            audit,
        };
        self.store
            .record_sync(tenant, &binding.name, result)
            .await?;
        Ok(synced)
    }

    /// Reads, checks, tests and stores; answers what happened and the branch's new ETag.
    async fn try_sync(
        &self,
        tenant: &Tenant,
        binding: &PolicyBinding,
        actor: Actor,
        healthy: bool,
    ) -> Result<(Synced, Option<String>), Failure> {
        let now = self.now();
        let file = &binding.file;
        let purpose = Purpose::GitHubToken {
            workspace_id: tenant.workspace_id(),
            policy: &binding.name,
        };
        let token = self
            .cipher()
            .ok()
            .and_then(|c| c.open(&binding.token, purpose).ok())
            .ok_or_else(|| {
                Failure::at(
                    None,
                    "the token cannot be opened with this server's key: bind again",
                )
            })?;
        let api = self.config.github_api_url.trim_end_matches('/');
        let gh = Repo {
            http: &self.github,
            api,
            repo: &file.repo,
            token: &token,
        };
        let last_commit = binding.last_sync.as_ref().and_then(|s| s.commit.clone());
        let active = |commit: Option<String>| async move {
            let version = self
                .store
                .policy(tenant, &binding.name)
                .await
                .map_err(|e| Failure::at(commit.as_deref(), e.to_string()))?
                .map(|v| v.version);
            Ok::<_, Failure>(Synced {
                status: SyncStatus::Unchanged,
                version,
                commit,
                error: None,
            })
        };
        // The ETag only while the last sync went through: after a failure, look again in full.
        let etag = binding.etag.as_deref().filter(|_| healthy);
        let (sha, author, new_etag) = match gh.head(&file.branch, etag, now).await {
            Ok(Head::Unchanged) => return Ok((active(last_commit).await?, None)),
            Ok(Head::Commit { sha, author, etag }) => (sha, author, etag),
            Err(e) => return Err(Failure::github(file, None, e)),
        };
        if healthy && last_commit.as_deref() == Some(sha.as_str()) {
            return Ok((active(Some(sha)).await?, new_etag));
        }
        let at = Some(sha.as_str());
        let text = gh
            .file(&file.path, &sha, now)
            .await
            .map_err(|e| Failure::github(file, at, e))?;
        let format = if file.path.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        };
        let doc = PolicyText { text, format };
        let compiled = self
            .check_policy_in(tenant, &doc)
            .await
            .map_err(|e| Failure::at(at, format!("`{}` at {}: {e}", file.path, short(&sha))))?;
        if compiled.name() != binding.name {
            return Err(Failure::at(
                at,
                format!(
                    "`{}` at {} is named `{}`, not `{}`",
                    file.path,
                    short(&sha),
                    compiled.name(),
                    binding.name
                ),
            ));
        }
        let enabled = compiled.document.enabled;
        self.run_tests(tenant, &gh, file, &sha, compiled, now)
            .await
            .map_err(|why| Failure::at(at, why))?;
        let change = PolicyChange {
            name: &binding.name,
            document: &doc.text,
            format: doc.format.as_str(),
            enabled,
            actor,
            source: PolicySource::Git(sha.clone()),
            now,
        };
        let (version, changed) = self
            .store
            .put_git_policy(tenant, change, &sha, &author)
            .await
            .map_err(|e| Failure::at(at, e.to_string()))?;
        let status = if changed {
            if let Err(e) = self.reload_policies(tenant).await {
                tracing::error!(error = %e, "reloading policies after a sync failed");
            }
            SyncStatus::Updated
        } else {
            SyncStatus::Unchanged
        };
        let synced = Synced {
            status,
            version: Some(version.version),
            commit: Some(sha),
            error: None,
        };
        Ok((synced, new_etag))
    }

    /// Runs the test files beside the document against the policies as they would be in
    /// force; answers the first failures when any fails.
    async fn run_tests(
        &self,
        tenant: &Tenant,
        gh: &Repo<'_>,
        file: &GitHubFile,
        sha: &str,
        draft: CompiledPolicy,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), String> {
        let entries = gh
            .dir(parent(&file.path), sha, now)
            .await
            .map_err(|e| Failure::github(file, Some(sha), e).error)?;
        let tests: Vec<_> = entries
            .into_iter()
            .filter(|e| e.kind == "file" && is_test_file(&e.name))
            .collect();
        if tests.len() > MAX_TEST_FILES {
            return Err(format!(
                "more than {MAX_TEST_FILES} test files beside `{}`",
                file.path
            ));
        }
        let mut files = Vec::with_capacity(tests.len());
        for t in &tests {
            let text = gh
                .file(&t.path, sha, now)
                .await
                .map_err(|e| Failure::github(file, Some(sha), e).error)?;
            let parsed = TestFile::parse(&text).map_err(|e| format!("`{}`: {e}", t.path))?;
            files.push((t.path.clone(), parsed));
        }
        let cases: usize = files.iter().map(|(_, f)| f.tests.len()).sum();
        if cases > MAX_TEST_CASES {
            return Err(format!(
                "more than {MAX_TEST_CASES} test cases beside `{}`",
                file.path
            ));
        }
        let set = self
            .set_with(tenant, draft)
            .await
            .map_err(|e| e.to_string())?;
        // Each decision is bounded by the engine's budget; a thousand of them still belong off
        // the request threads.
        tokio::task::spawn_blocking(move || {
            let mut failures = Vec::new();
            for (path, file) in &files {
                for case in &file.tests {
                    if let Err(why) = run_case(&set, case) {
                        failures.push(format!("{path}: {}: {why}", case.name));
                    }
                }
            }
            match failures.len() {
                0 => Ok(()),
                n => Err(format!(
                    "{n} of {cases} policy tests failed: {}",
                    failures
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            }
        })
        .await
        .map_err(|e| format!("the tests did not finish: {e}"))?
    }
}

/// The schedule's loop: every few seconds, syncs the bindings whose time has come. Off when
/// `AGENTNEXUS_GITHUB_POLL_SECS` is 0; outlives any sync's failure.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = app.config.github_poll_secs;
    if every == 0 {
        return;
    }
    let tick = std::time::Duration::from_secs(every.min(10));
    loop {
        let looked = {
            let app = app.clone();
            tokio::spawn(async move { app.poll_policy_sources().await }).await
        };
        match looked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the policy sync schedule failed"),
            Err(e) => tracing::warn!(error = %e, "the policy sync schedule failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The paths a push's commits added, modified or removed; `None` when it does not list them
/// (GitHub lists at most 20 commits).
fn changed_files(push: &Value) -> Option<Vec<String>> {
    let commits = push["commits"].as_array()?;
    if commits.is_empty() || commits.len() >= 20 {
        return None;
    }
    let mut files = Vec::new();
    for c in commits {
        for key in ["added", "modified", "removed"] {
            for p in c[key].as_array()? {
                files.push(p.as_str()?.to_owned());
            }
        }
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_take_only_what_github_and_git_allow() {
        assert!(repo("acme/policies".into()).is_ok());
        assert!(repo("acme/pol.icies_v2".into()).is_ok());
        for bad in [
            "acme", "/x", "acme/", "ac me/x", "a/b/c", "acme/..", "acme/x?y",
        ] {
            assert!(repo(bad.into()).is_err(), "{bad}");
        }
        assert!(branch("main".into()).is_ok());
        assert!(branch("release/v1.2".into()).is_ok());
        for bad in [
            "", "a..b", "-x", "x/", "x.lock", "a b", "a\nb", "a~1", "@", "x@{1}",
        ] {
            assert!(branch(bad.into()).is_err(), "{bad:?}");
        }
        assert!(path("policies/payments.yaml".into()).is_ok());
        assert!(path("payments.json".into()).is_ok());
        for bad in [
            "/etc/x.yaml",
            "a/../b.yaml",
            "a//b.yaml",
            "x.txt",
            "x_test.yaml",
            "a\\b.yaml",
            "./x.yaml",
        ] {
            assert!(path(bad.into()).is_err(), "{bad}");
        }
        assert!(token("ghp_abc".into()).is_ok());
        assert!(token("".into()).is_err());
        assert!(token("a b".into()).is_err());
    }

    #[test]
    fn a_push_names_what_it_changed() {
        let push = json!({"commits": [
            {"added": ["p/a.yaml"], "modified": [], "removed": ["p/x_test.yaml"]},
            {"added": [], "modified": ["README.md"], "removed": []},
        ]});
        assert_eq!(
            changed_files(&push),
            Some(vec![
                "p/a.yaml".into(),
                "p/x_test.yaml".into(),
                "README.md".into()
            ])
        );
        assert_eq!(changed_files(&json!({"commits": []})), None);
        assert_eq!(changed_files(&json!({})), None);
        assert_eq!(parent("p/q/a.yaml"), "p/q");
        assert_eq!(parent("a.yaml"), "");
    }
}
