//! The limits that keep one workspace's traffic from crowding out another's (docs/security.md
//! lists every one): request rates per key, by scope; long polls open per key; requests per
//! secure link on the approval routes, which take no key; chain verifications, one at a time
//! per workspace; and the workspaces whose job queue is full.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Mutex, RwLock};

use agentnexus_store::key_hash;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::{Error, Result};

/// Requests one secure link (or one evaluation's sign-in page) may take per minute, in a burst
/// of as many: a person opens, asks for a code and decides a few times at most.
pub const LINK_REQUESTS_PER_MINUTE: u32 = 30;

/// Sign-in attempts per minute for one account (e-mail address), in a burst of as many.
pub const SIGN_INS_PER_ACCOUNT_PER_MINUTE: u32 = 10;

/// Sign-in attempts per minute from one network address (many people may share one).
pub const SIGN_INS_PER_ADDRESS_PER_MINUTE: u32 = 30;

pub struct Limits {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    management: Option<DefaultKeyedRateLimiter<String>>,
    links: DefaultKeyedRateLimiter<String>,
    sign_ins_by_account: DefaultKeyedRateLimiter<String>,
    sign_ins_by_address: DefaultKeyedRateLimiter<std::net::IpAddr>,
    sso_starts_by_address: DefaultKeyedRateLimiter<std::net::IpAddr>,
    waits_per_key: usize,
    waits: Mutex<HashMap<String, usize>>,
    alone: Mutex<HashSet<String>>,
    full_queues: RwLock<HashSet<String>>,
}

fn limited(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Error {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    Error::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

fn check(limiter: &Option<DefaultKeyedRateLimiter<String>>, key_id: &str) -> Result<()> {
    match limiter {
        // governor's keyed limiter wants an owned key; a key id is short.
        Some(l) => l.check_key(&key_id.to_owned()).map_err(limited),
        None => Ok(()),
    }
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        let keyed = |rate: u32, burst: Option<u32>| {
            NonZeroU32::new(rate).map(|rate| {
                let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
                RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
            })
        };
        Limits {
            requests: keyed(config.rate_limit_per_second, config.rate_limit_burst),
            management: keyed(
                config.admin_rate_limit_per_second,
                config.admin_rate_limit_per_second.checked_mul(2),
            ),
            links: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(LINK_REQUESTS_PER_MINUTE).expect("not zero"),
            )),
            sign_ins_by_account: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(SIGN_INS_PER_ACCOUNT_PER_MINUTE).expect("not zero"),
            )),
            sign_ins_by_address: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(SIGN_INS_PER_ADDRESS_PER_MINUTE).expect("not zero"),
            )),
            sso_starts_by_address: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(SIGN_INS_PER_ADDRESS_PER_MINUTE).expect("not zero"),
            )),
            waits_per_key: config.waits_per_key.max(1),
            waits: Mutex::default(),
            alone: Mutex::default(),
            full_queues: RwLock::default(),
        }
    }

    /// Counts a request against its key's rate limit (every request made with a key).
    pub fn check_key(&self, key_id: &str) -> Result<()> {
        check(&self.requests, key_id)
    }

    /// Counts a request against its key's limit on managing the workspace (every request
    /// only an admin key may make), which is far lower: some of those requests (simulations,
    /// policy saves, chain verification) cost far more than an evaluation.
    pub fn check_management(&self, key_id: &str) -> Result<()> {
        check(&self.management, key_id)
    }

    /// Counts a request against a secure link's (or an evaluation's sign-in page's) limit.
    /// Keyed by a hash, so the limiter's memory never holds a usable token.
    pub fn check_link(&self, token_or_id: &str) -> Result<()> {
        self.links
            .check_key(&key_hash(token_or_id))
            .map_err(limited)
    }

    /// Counts a sign-in attempt against its account's limit and its address's. The account is
    /// keyed as typed (trimmed, lower-cased), by a hash, so a password typed into the e-mail
    /// field is never kept.
    /// An SSO sign-in: counted per address only (the provider, not a password, is what
    /// vouches; a workspace's IdP-initiated sign-ins all name the same relay state).
    pub fn check_sso_sign_in(&self, address: std::net::IpAddr) -> Result<()> {
        self.sign_ins_by_address
            .check_key(&address)
            .map_err(limited)
    }

    /// Leaving for an identity provider (each start keeps a pending sign-in for a while).
    pub fn check_sso_start(&self, address: std::net::IpAddr) -> Result<()> {
        self.sso_starts_by_address
            .check_key(&address)
            .map_err(limited)
    }

    pub fn check_sign_in(&self, email: &str, address: std::net::IpAddr) -> Result<()> {
        self.sign_ins_by_address
            .check_key(&address)
            .map_err(limited)?;
        self.sign_ins_by_account
            .check_key(&key_hash(&email.trim().to_ascii_lowercase()))
            .map_err(limited)
    }

    /// Opens a long poll for a key, or refuses one past [`Config::waits_per_key`]; the poll
    /// is counted until the guard is dropped.
    pub fn open_wait(&self, key_id: &str) -> Result<Counted<'_>> {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let open = waits.entry(key_id.to_owned()).or_default();
        if *open >= self.waits_per_key {
            return Err(Error::TooMany {
                detail: format!(
                    "this key already holds {} waits open (AGENTNEXUS_WAITS_PER_KEY); retry \
                     when one ends",
                    self.waits_per_key
                ),
                retry_after_secs: 1,
            });
        }
        *open += 1;
        Ok(Counted {
            limits: self,
            key: key_id.to_owned(),
        })
    }

    /// Starts a chain verification for a workspace, or refuses a second one while the
    /// first runs (it reads the whole chain).
    pub fn begin_verification(&self, workspace_id: &str) -> Result<Verifying<'_>> {
        self.begin_alone(
            format!("verify:{workspace_id}"),
            "a verification of this workspace's chain is already running",
        )
    }

    /// Starts a replay for a workspace, or refuses a second one while the first runs (each
    /// decides up to 100,000 evaluations again).
    pub fn begin_replay(&self, workspace_id: &str) -> Result<Verifying<'_>> {
        self.begin_alone(
            format!("replay:{workspace_id}"),
            "a replay in this workspace is already running",
        )
    }

    /// One task of a kind per workspace at a time: `key` names both.
    fn begin_alone(&self, key: String, busy: &str) -> Result<Verifying<'_>> {
        self.claim(key.clone(), busy)?;
        Ok(Verifying { limits: self, key })
    }

    /// Claims `key` for one task of its kind, or refuses while another holds it: for a task
    /// that outlives the request (a bundle streamed out), which must [`Limits::release`] it.
    pub(crate) fn claim(&self, key: String, busy: &str) -> Result<()> {
        let mut running = self.alone.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(key) {
            return Err(Error::TooMany {
                detail: busy.into(),
                retry_after_secs: 1,
            });
        }
        Ok(())
    }

    pub(crate) fn release(&self, key: &str) {
        self.alone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether a workspace's job queue is full (as of the last refresh).
    pub fn queue_full(&self, workspace_id: &str) -> bool {
        self.full_queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(workspace_id)
    }

    pub fn set_full_queues(&self, workspaces: HashSet<String>) {
        *self.full_queues.write().unwrap_or_else(|e| e.into_inner()) = workspaces;
    }

    /// Drops the rate limiters' state for keys and links not seen lately, so that requests
    /// naming ever new tokens cannot grow them without bound.
    pub fn forget_idle(&self) {
        for limiter in [&self.requests, &self.management].into_iter().flatten() {
            limiter.retain_recent();
        }
        self.links.retain_recent();
        self.links.shrink_to_fit();
        self.sign_ins_by_account.retain_recent();
        self.sign_ins_by_address.retain_recent();
        self.sso_starts_by_address.retain_recent();
    }
}

/// An open long poll, counted against its key until dropped.
pub struct Counted<'a> {
    limits: &'a Limits,
    key: String,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut waits = self.limits.waits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = waits.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                waits.remove(&self.key);
            }
        }
    }
}

/// A chain verification under way, until dropped.
/// A task running alone in its workspace; the next may start once this is dropped.
pub struct Verifying<'a> {
    limits: &'a Limits,
    key: String,
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.limits.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_run_one_at_a_time_in_a_workspace() {
        let limits = Limits::new(&Config::for_tests());
        let first = limits.begin_replay("ws_a").unwrap();
        assert!(matches!(
            limits.begin_replay("ws_a"),
            Err(Error::TooMany { .. })
        ));
        // Another workspace, and a verification of the same one, are not held up.
        let _other = limits.begin_replay("ws_b").unwrap();
        let _verify = limits.begin_verification("ws_a").unwrap();
        drop(first);
        assert!(limits.begin_replay("ws_a").is_ok());
    }

    #[test]
    fn a_claim_outliving_its_request_holds_until_released() {
        let limits = Limits::new(&Config::for_tests());
        limits.claim("evidence:ws_a".into(), "busy").unwrap();
        assert!(matches!(
            limits.claim("evidence:ws_a".into(), "busy"),
            Err(Error::TooMany { .. })
        ));
        limits.claim("evidence:ws_b".into(), "busy").unwrap();
        limits.release("evidence:ws_a");
        assert!(limits.claim("evidence:ws_a".into(), "busy").is_ok());
    }

    #[test]
    fn waits_and_verifications_are_counted_until_dropped() {
        let config = Config {
            waits_per_key: 2,
            ..Config::for_tests()
        };
        let limits = Limits::new(&config);
        let a = limits.open_wait("key_a").unwrap();
        let _b = limits.open_wait("key_a").unwrap();
        assert!(limits.open_wait("key_a").is_err());
        assert!(limits.open_wait("key_b").is_ok());
        drop(a);
        assert!(limits.open_wait("key_a").is_ok());

        let v = limits.begin_verification("ws_1").unwrap();
        assert!(limits.begin_verification("ws_1").is_err());
        assert!(limits.begin_verification("ws_2").is_ok());
        drop(v);
        assert!(limits.begin_verification("ws_1").is_ok());
    }

    #[test]
    fn management_has_its_own_lower_rate() {
        let config = Config {
            admin_rate_limit_per_second: 3,
            ..Config::for_tests()
        };
        let limits = Limits::new(&config);
        // A burst of twice the rate, then refused with a time to wait.
        for _ in 0..6 {
            limits.check_management("key_admin").unwrap();
        }
        match limits.check_management("key_admin") {
            Err(Error::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("{other:?}"),
        }
        // Evaluating with the same key is not management.
        for _ in 0..100 {
            limits.check_key("key_admin").unwrap();
        }
    }
}
