//! Shared state: the store, and the caches that keep the evaluate path off the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use agentnexus_engine::{CompiledPolicy, Format, PolicySet, compile_policy};
use agentnexus_store::{Evaluation, KeyIdentity, Status, Store, Tenant, key_hash};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::crypto::{Cipher, CipherError, Purpose};
use crate::error::{ApiError, ApiResult};
use crate::limits::Limits;

/// Where "now" comes from; tests move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct AppState {
    /// Set when the server begins to stop: long polls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub store: Store,
    pub config: Config,
    pub clock: Clock,
    pub cipher: Cipher,
    /// For outbound deliveries; see `workers::delivery::http_client`.
    pub http: reqwest::Client,
    pub keys: KeyCache,
    pub policies: PolicyCache,
    pub limits: Limits,
}

impl AppState {
    /// The state for one server; fails when the secret key is unusable.
    pub fn new(store: Store, config: Config, clock: Clock) -> Result<AppState, CipherError> {
        let cipher = match &config.secret_key {
            Some(key) => Cipher::from_base64(key)?,
            None => Cipher::from_key_file(&config.secret_key_file)?,
        };
        let http = crate::workers::delivery::http_client(config.webhook_allow_private);
        let limits = Limits::new(&config);
        Ok(AppState {
            stopping: tokio::sync::watch::Sender::new(false),
            store,
            config,
            clock,
            cipher,
            http,
            keys: KeyCache::default(),
            policies: PolicyCache::default(),
            limits,
        })
    }

    /// Now, to the microsecond: the precision the store keeps, so an answer and a later
    /// read of the same evaluation show the same times.
    pub fn now(&self) -> DateTime<Utc> {
        let t = (self.clock)();
        DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
    }

    /// The identity behind a key, from the cache or the store; `None` if unknown or revoked.
    pub async fn authenticate(&self, secret: &str) -> ApiResult<Option<Arc<CachedKey>>> {
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

    /// An evaluation, once its status differs from what it was when asked, or when `wait`
    /// has passed. Only a pending evaluation can change. It polls the store rather than
    /// holding a connection open while it waits.
    ///
    /// A key holds at most `AGENTNEXUS_WAITS_PER_KEY` waits open at once; past that the wait
    /// is refused (429), not queued.
    pub async fn wait_for_change(
        &self,
        tenant: &Tenant,
        key_id: &str,
        id: &str,
        wait: std::time::Duration,
    ) -> ApiResult<Option<Evaluation>> {
        let Some(first) = self.store.evaluation(tenant, id).await? else {
            return Ok(None);
        };
        if wait.is_zero() || first.status != Status::Pending {
            return Ok(Some(first));
        }
        let _open = self.limits.open_wait(key_id)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut stopping = self.stopping.subscribe();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let stop = tokio::select! {
                _ = tokio::time::sleep(left.min(std::time::Duration::from_millis(250))) => false,
                _ = stopping.wait_for(|s| *s) => true,
            };
            let now = self.store.evaluation(tenant, id).await?;
            let changed = now.as_ref().is_none_or(|e| e.status != first.status);
            if changed || stop || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
        }
    }

    /// The workspace's current webhook signing secret, made on first use.
    pub async fn webhook_secret(&self, tenant: &Tenant) -> ApiResult<String> {
        let purpose = Purpose::WebhookSecret {
            workspace_id: tenant.workspace_id(),
        };
        let stored = match self.store.current_webhook_secret(tenant).await? {
            Some(s) => s,
            None => {
                let fresh = self.cipher.seal(&crate::webhooks::new_secret(), purpose);
                self.store
                    .ensure_webhook_secret(tenant, &fresh, self.now())
                    .await?
            }
        };
        self.cipher
            .open(&stored, purpose)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Every secret that signs deliveries now: the current one and any in its grace period.
    pub async fn signing_secrets(&self, tenant: &Tenant) -> ApiResult<Vec<String>> {
        self.webhook_secret(tenant).await?;
        let sealed = self
            .store
            .signing_webhook_secrets(tenant, self.now())
            .await?;
        sealed
            .iter()
            .map(|s| {
                self.cipher
                    .open(
                        s,
                        Purpose::WebhookSecret {
                            workspace_id: tenant.workspace_id(),
                        },
                    )
                    .map_err(|e| ApiError::Internal(e.to_string()))
            })
            .collect()
    }

    /// The workspace's enabled policies, compiled; loaded on first use and after changes.
    pub async fn policy_set(&self, tenant: &Tenant) -> ApiResult<Arc<LoadedPolicies>> {
        if let Some(set) = self.policies.get(tenant.workspace_id()) {
            return Ok(set);
        }
        self.reload_policies(tenant).await
    }

    /// Reads and compiles a workspace's policies and swaps them in.
    pub async fn reload_policies(&self, tenant: &Tenant) -> ApiResult<Arc<LoadedPolicies>> {
        // Generation first: a change landing between the two reads makes the next refresh
        // reload again rather than keep a stale set.
        let generation = self.store.policy_generation(tenant).await?;
        let versions = self.store.active_policies(tenant).await?;
        let mut compiled = Vec::with_capacity(versions.len());
        for v in versions.into_iter().filter(|v| v.enabled) {
            let format = if v.format == "json" {
                Format::Json
            } else {
                Format::Yaml
            };
            let policy = compile_policy(&v.document, format).map_err(|e| {
                ApiError::Unavailable(format!(
                    "stored policy `{}` version {} no longer compiles: {e}",
                    v.name, v.version
                ))
            })?;
            let mut policy: CompiledPolicy = policy.with_version(v.version);
            // The version's flag is authoritative: disabling keeps the document as written.
            policy.document.enabled = true;
            compiled.push(Arc::new(policy));
        }
        let loaded = Arc::new(LoadedPolicies {
            generation,
            set: PolicySet::new(compiled),
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

pub struct LoadedPolicies {
    pub generation: i64,
    pub set: PolicySet,
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
