//! [`App`]: what every use case runs on — the store, the configuration, the clock, the server
//! key, the outbound HTTP client, the limits, and the caches that keep the evaluate path off
//! the database (keys by hash, compiled policies by workspace).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use agentnexus_engine::{CompiledPolicy, PolicySet, compile_policy};
use agentnexus_store::{KeyIdentity, Store, Tenant, key_hash};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::crypto::{Cipher, CipherError, Purpose};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::notary::Notary;

/// Where "now" comes from; tests move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct App {
    /// Set when the server begins to stop: long polls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub store: Store,
    pub config: Config,
    clock: Clock,
    /// The server key; none for the command line, which seals and opens nothing.
    cipher: Option<Cipher>,
    /// The signing key; on the command line, only when it is configured or its file exists.
    pub(crate) notary: Option<Notary>,
    /// For outbound deliveries; see [`crate::outbound::http_client`].
    pub(crate) http: reqwest::Client,
    /// For GitHub's API; see [`crate::github::http_client`].
    pub(crate) github: reqwest::Client,
    /// For identity providers; see [`crate::oidc::Http`].
    pub(crate) sso_http: crate::oidc::Http,
    pub(crate) discovery: crate::oidc::Discovery,
    pub(crate) keys: KeyCache,
    pub(crate) policies: PolicyCache,
    pub(crate) limits: Limits,
}

impl App {
    /// The use cases of one server; fails when the secret key is unusable.
    pub fn new(store: Store, config: Config, clock: Clock) -> Result<App, CipherError> {
        let cipher = match &config.secret_key {
            Some(key) => Cipher::from_base64(key)?,
            None => Cipher::from_key_file(&config.secret_key_file)?,
        };
        let notary = Some(notary(&config, true)?.expect("created when missing"));
        Ok(App::with(store, config, clock, Some(cipher), notary))
    }

    /// The use cases as the command line runs them: straight on the store, without the
    /// server key (a use case that needs it fails saying so) and without request limits.
    pub fn offline(store: Store) -> App {
        let mut config = Config::from_env();
        config.rate_limit_per_second = 0;
        config.admin_rate_limit_per_second = 0;
        // A command checking checkpoints uses the key when it is at hand, and makes none.
        let notary = notary(&config, false).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the signing key cannot be used");
            None
        });
        App::with(store, config, Arc::new(Utc::now), None, notary)
    }

    fn with(
        store: Store,
        config: Config,
        clock: Clock,
        cipher: Option<Cipher>,
        notary: Option<Notary>,
    ) -> App {
        App {
            stopping: tokio::sync::watch::Sender::new(false),
            http: crate::outbound::http_client(config.webhook_allow_private),
            github: crate::github::http_client(),
            sso_http: crate::oidc::Http::new(config.sso_allow_private),
            discovery: crate::oidc::Discovery::default(),
            limits: Limits::new(&config),
            store,
            config,
            clock,
            cipher,
            notary,
            keys: KeyCache::default(),
            policies: PolicyCache::default(),
        }
    }

    /// The server key, which seals and opens stored secrets.
    pub fn cipher(&self) -> Result<&Cipher> {
        self.cipher.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "this needs the server key (AGENTNEXUS_SECRET_KEY or its file): run it \
                 through the server"
                    .into(),
            )
        })
    }

    /// Now, to the microsecond: the precision the store keeps, so an answer and a later
    /// read of the same evaluation show the same times.
    pub fn now(&self) -> DateTime<Utc> {
        let t = (self.clock)();
        DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
    }

    /// The identity behind a key, from the cache or the store; `None` if unknown or revoked.
    pub(crate) async fn key(&self, secret: &str) -> Result<Option<Arc<CachedKey>>> {
        let hash = key_hash(secret);
        if let Some(k) = self.keys.get(&hash) {
            return Ok(Some(k));
        }
        let Some(identity) = self.store.authenticate(secret).await? else {
            return Ok(None);
        };
        Ok(Some(self.keys.insert(hash, identity)))
    }

    /// The base of links this server gives out: `AGENTNEXUS_PUBLIC_URL`, or its own address.
    pub fn public_url(&self) -> String {
        match &self.config.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.config.listen),
        }
    }

    /// The workspace's current webhook signing secret, made on first use.
    pub(crate) async fn webhook_secret(&self, tenant: &Tenant) -> Result<String> {
        let purpose = Purpose::WebhookSecret {
            workspace_id: tenant.workspace_id(),
        };
        let stored = match self.store.current_webhook_secret(tenant).await? {
            Some(s) => s,
            None => {
                let fresh = self.cipher()?.seal(&crate::signing::new_secret(), purpose);
                self.store
                    .ensure_webhook_secret(tenant, &fresh, self.now())
                    .await?
            }
        };
        self.cipher()?
            .open(&stored, purpose)
            .map_err(Error::internal)
    }

    /// Every secret that signs deliveries now: the current one and any in its grace period.
    pub(crate) async fn signing_secrets(&self, tenant: &Tenant) -> Result<Vec<String>> {
        self.webhook_secret(tenant).await?;
        let sealed = self
            .store
            .signing_webhook_secrets(tenant, self.now())
            .await?;
        let cipher = self.cipher()?;
        sealed
            .iter()
            .map(|s| {
                cipher
                    .open(
                        s,
                        Purpose::WebhookSecret {
                            workspace_id: tenant.workspace_id(),
                        },
                    )
                    .map_err(Error::internal)
            })
            .collect()
    }

    /// The workspace's enabled policies, compiled, and its halts; loaded on first use and after
    /// changes.
    pub(crate) async fn policy_set(&self, tenant: &Tenant) -> Result<Arc<LoadedPolicies>> {
        if let Some(set) = self.policies.get(tenant.workspace_id()) {
            return Ok(set);
        }
        self.reload_policies(tenant).await
    }

    /// Reads and compiles a workspace's policies, reads its halts, and swaps them in.
    pub(crate) async fn reload_policies(&self, tenant: &Tenant) -> Result<Arc<LoadedPolicies>> {
        // Generation first: a change landing between the two reads makes the next refresh
        // reload again rather than keep a stale set.
        let generation = self.store.policy_generation(tenant).await?;
        let versions = self.store.active_policies(tenant).await?;
        let halts = self.store.halts(tenant).await?;
        let compiled = versions
            .iter()
            .filter(|v| v.enabled)
            .map(|v| compile_stored(v).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let loaded = Arc::new(LoadedPolicies {
            generation,
            set: PolicySet::new(compiled),
            halts,
        });
        self.policies.insert(tenant.workspace_id(), loaded.clone());
        Ok(loaded)
    }
}

/// An authenticated key, cached; `last_used` is flushed to the store in the background.
pub struct CachedKey {
    pub identity: KeyIdentity,
    last_used: AtomicI64,
    flushed: AtomicI64,
}

impl CachedKey {
    pub fn touch(&self, now: DateTime<Utc>) {
        self.last_used
            .fetch_max(now.timestamp_micros(), Ordering::Relaxed);
    }

    /// The last use if it has not been written yet, marked as written.
    fn unflushed_use(&self) -> Option<(String, DateTime<Utc>)> {
        let used = self.last_used.load(Ordering::Relaxed);
        let flushed = self.flushed.swap(used, Ordering::Relaxed);
        (used > flushed).then(|| {
            (
                self.identity.key_id.clone(),
                DateTime::from_timestamp_micros(used).unwrap_or_default(),
            )
        })
    }
}

#[derive(Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<CachedKey>>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Arc<CachedKey>> {
        self.by_hash.read().expect("key cache").get(hash).cloned()
    }

    fn insert(&self, hash: String, identity: KeyIdentity) -> Arc<CachedKey> {
        let key = Arc::new(CachedKey {
            identity,
            last_used: AtomicI64::new(0),
            flushed: AtomicI64::new(0),
        });
        self.by_hash
            .write()
            .expect("key cache")
            .insert(hash, key.clone());
        key
    }

    /// Forgets revoked keys at once, so their next request goes to the store and fails.
    /// Answers their uses not yet written, for the caller to record.
    pub fn forget(&self, key_ids: &[String]) -> Vec<(String, DateTime<Utc>)> {
        if key_ids.is_empty() {
            return Vec::new();
        }
        let mut uses = Vec::new();
        self.by_hash.write().expect("key cache").retain(|_, k| {
            let keep = !key_ids.contains(&k.identity.key_id);
            if !keep {
                uses.extend(k.unflushed_use());
            }
            keep
        });
        uses
    }

    /// The ids of every cached key.
    pub fn key_ids(&self) -> Vec<String> {
        self.by_hash
            .read()
            .expect("key cache")
            .values()
            .map(|k| k.identity.key_id.clone())
            .collect()
    }

    /// Uses not yet written to the store, marked as written.
    pub fn take_uses(&self) -> Vec<(String, DateTime<Utc>)> {
        let keys = self.by_hash.read().expect("key cache");
        keys.values().filter_map(|k| k.unflushed_use()).collect()
    }
}

/// What evaluate decides a workspace's proposals with: its enabled policies and what is halted
/// (SPEC §8's kill switch), changed together under one generation.
pub struct LoadedPolicies {
    pub generation: i64,
    pub set: PolicySet,
    pub halts: agentnexus_store::Halts,
}

#[derive(Default)]
pub struct PolicyCache {
    by_workspace: RwLock<HashMap<String, Arc<LoadedPolicies>>>,
}

impl PolicyCache {
    fn get(&self, workspace_id: &str) -> Option<Arc<LoadedPolicies>> {
        self.by_workspace
            .read()
            .expect("policy cache")
            .get(workspace_id)
            .cloned()
    }

    fn insert(&self, workspace_id: &str, loaded: Arc<LoadedPolicies>) {
        self.by_workspace
            .write()
            .expect("policy cache")
            .insert(workspace_id.to_owned(), loaded);
    }

    /// The cached workspaces and the generation each was loaded at.
    pub fn generations(&self) -> Vec<(String, i64)> {
        self.by_workspace
            .read()
            .expect("policy cache")
            .iter()
            .map(|(ws, l)| (ws.clone(), l.generation))
            .collect()
    }
}

/// The signing key the configuration names: `AGENTNEXUS_SIGNING_KEY`, else its file (made when
/// missing if `create`).
fn notary(config: &Config, create: bool) -> Result<Option<Notary>, CipherError> {
    match &config.signing_key {
        Some(key) => Notary::from_base64(key).map(Some),
        None => Notary::from_key_file(&config.signing_key_file, create),
    }
}

/// A stored, enabled version compiled as evaluate decides with it: marked with its version
/// number, and enabled (the version's flag is authoritative: disabling keeps the document as
/// written).
pub(crate) fn compile_stored(v: &agentnexus_store::PolicyVersion) -> Result<CompiledPolicy> {
    let policy = compile_policy(&v.document, v.document_format()).map_err(|e| {
        Error::Unavailable(format!(
            "stored policy `{}` version {} no longer compiles: {e}",
            v.name, v.version
        ))
    })?;
    let mut policy = policy.with_version(v.version);
    policy.document.enabled = true;
    Ok(policy)
}
