//! Configuration: every setting, its environment variable and its default, in one place.
//! The README's configuration table is this file in prose.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::retry::RetrySchedule;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "AGENTNEXUS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of links in notifications; defaults to http://LISTEN.
    #[arg(long, env = "AGENTNEXUS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Most database connections in the pool.
    #[arg(
        long,
        env = "AGENTNEXUS_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub database_max_connections: u32,

    /// Threads handling requests; by default one per core, less one on SQLite (at least one).
    #[arg(long, env = "AGENTNEXUS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// E-mail of the owner account bootstrapped on an empty store.
    #[arg(
        long,
        env = "AGENTNEXUS_BOOTSTRAP_EMAIL",
        default_value = "owner@agentnexus.local"
    )]
    pub bootstrap_email: String,

    /// Password of the bootstrapped owner; random (and printed once) when unset.
    #[arg(long, env = "AGENTNEXUS_BOOTSTRAP_PASSWORD", hide_env_values = true)]
    pub bootstrap_password: Option<String>,

    /// Requests per second each agent key may make (0 turns limiting off). High on purpose:
    /// one key often stands for a whole fleet of agents, and evaluate is cheap; fairness
    /// between workspaces comes from the cost budget and the queue limits below.
    #[arg(
        long,
        env = "AGENTNEXUS_RATE_LIMIT_PER_SECOND",
        default_value_t = 50_000
    )]
    pub rate_limit_per_second: u32,

    /// Requests a key may make in a burst above its steady rate; defaults to one second's worth.
    #[arg(long, env = "AGENTNEXUS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Requests per second each admin key may make to the endpoints only admin keys may use
    /// (0 turns limiting off), in a burst of twice as many: some of them (simulations, policy
    /// saves, chain verification) cost far more than an evaluation. Evaluating and reading
    /// evaluations with an admin key count only against AGENTNEXUS_RATE_LIMIT_PER_SECOND.
    #[arg(
        long,
        env = "AGENTNEXUS_ADMIN_RATE_LIMIT_PER_SECOND",
        default_value_t = 200
    )]
    pub admin_rate_limit_per_second: u32,

    /// Long polls (`?wait=`, MCP `get_evaluation` with a wait) one key may hold open at once.
    #[arg(long, env = "AGENTNEXUS_WAITS_PER_KEY", default_value_t = 32)]
    pub waits_per_key: usize,

    /// Jobs (webhooks, e-mails, chat messages) a workspace may have queued or running before
    /// evaluations naming a webhook_url are refused with 429 until some are delivered.
    #[arg(
        long,
        env = "AGENTNEXUS_QUEUE_LIMIT_PER_WORKSPACE",
        default_value_t = 10_000
    )]
    pub queue_limit_per_workspace: u32,

    /// Seconds between checks for policy changes and key revocations made elsewhere
    /// (another replica, the CLI).
    #[arg(long, env = "AGENTNEXUS_REFRESH_SECS", default_value_t = 1)]
    pub refresh_secs: u64,

    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "AGENTNEXUS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Base64 of 32 random bytes: encrypts secrets kept in the store (webhook signing
    /// secrets). Every server sharing a database needs the same key.
    #[arg(long, env = "AGENTNEXUS_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Where the key is read from (and created, on first start) when AGENTNEXUS_SECRET_KEY
    /// is unset.
    #[arg(
        long,
        env = "AGENTNEXUS_SECRET_KEY_FILE",
        default_value = "agentnexus.key"
    )]
    pub secret_key_file: PathBuf,

    /// Base64 of a 32-byte Ed25519 seed: signs the audit chains' checkpoints (and the
    /// evidence bundle). Every server sharing a database should use the same key.
    #[arg(long, env = "AGENTNEXUS_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,

    /// Where the signing key is read from (and created, on first start) when
    /// AGENTNEXUS_SIGNING_KEY is unset.
    #[arg(
        long,
        env = "AGENTNEXUS_SIGNING_KEY_FILE",
        default_value = "agentnexus-signing.key"
    )]
    pub signing_key_file: PathBuf,

    /// Seconds between signed checkpoints of each growing chain (0 turns them off).
    #[arg(long, env = "AGENTNEXUS_CHECKPOINT_SECS", default_value_t = 60)]
    pub checkpoint_secs: u64,

    /// A directory to write each checkpoint to, one JSON file each, outside the database.
    #[arg(long, env = "AGENTNEXUS_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Let webhooks reach private, loopback and link-local addresses (1/true to allow).
    #[arg(long, env = "AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
        action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,

    /// Let SSO identity providers (OIDC discovery, keys and tokens; SAML metadata URLs) be
    /// reached over plain http and at private, loopback and link-local addresses (1/true to
    /// allow): an on-premises provider needs it.
    #[arg(long, env = "AGENTNEXUS_SSO_ALLOW_PRIVATE", default_value_t = false,
        action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub sso_allow_private: bool,

    /// Deliveries one server performs at once.
    #[arg(long, env = "AGENTNEXUS_DELIVERY_CONCURRENCY", default_value_t = 16)]
    pub delivery_concurrency: usize,

    /// Deliveries of one workspace under way at once, across every server: a workspace with
    /// a slow receiver holds at most this many slots, and the others keep theirs.
    #[arg(long, env = "AGENTNEXUS_DELIVERY_PER_WORKSPACE", default_value_t = 8)]
    pub delivery_per_workspace: u32,

    /// How long a claimed job stays with its worker before another may take it (at least 20 s,
    /// longer than a delivery's 15 s timeout).
    #[arg(long, env = "AGENTNEXUS_DELIVERY_LEASE_SECS", default_value_t = 60)]
    pub delivery_lease_secs: u64,

    /// Longest wait between looks for due jobs queued by other servers, in milliseconds.
    #[arg(long, env = "AGENTNEXUS_DELIVERY_POLL_MS", default_value_t = 1000)]
    pub delivery_poll_ms: u64,

    /// Delay before the first retry, in milliseconds; it doubles with each failure.
    #[arg(long, env = "AGENTNEXUS_RETRY_BASE_MS", default_value_t = 5000)]
    pub retry_base_ms: u64,

    /// Longest delay between retries, in seconds.
    #[arg(long, env = "AGENTNEXUS_RETRY_MAX_SECS", default_value_t = 3600)]
    pub retry_max_secs: u64,

    /// A delivery still failing this long after it was queued is given up (dead), in seconds.
    #[arg(long, env = "AGENTNEXUS_RETRY_HORIZON_SECS", default_value_t = 86_400)]
    pub retry_horizon_secs: u64,

    /// SMTP server for approval e-mails, e.g. smtp://127.0.0.1:2525, smtps://user:pass@host
    /// or smtp://host:587?tls=required (STARTTLS).
    #[arg(long, env = "AGENTNEXUS_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The From of approval e-mails.
    #[arg(
        long,
        env = "AGENTNEXUS_SMTP_FROM",
        default_value = "AgentNexus <agentnexus@localhost>"
    )]
    pub smtp_from: String,

    /// Base URL of the Slack Web API (`users.lookupByEmail`, `chat.postMessage`); change it
    /// for a Slack-compatible gateway or a test double.
    #[arg(
        long,
        env = "AGENTNEXUS_SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub slack_api_url: String,

    /// GitHub's REST API, which policy-as-code reads (GitHub Enterprise Server:
    /// `https://HOST/api/v3`).
    #[arg(
        long,
        env = "AGENTNEXUS_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Seconds between looks at each bound policy's branch (0 turns the schedule off; pushes
    /// and manual syncs still work). An unchanged branch costs one conditional request (304).
    #[arg(long, env = "AGENTNEXUS_GITHUB_POLL_SECS", default_value_t = 300)]
    pub github_poll_secs: u64,

    /// The bearer secret of `POST /api/cron/approval-timeouts`; the endpoint answers 401
    /// while it is unset.
    #[arg(long, env = "CRON_SECRET", hide_env_values = true)]
    pub cron_secret: Option<String>,

    /// Seconds between the server's own sweeps of approval deadlines (sooner when a deadline
    /// is nearer); 0 turns the sweep off.
    #[arg(long, env = "AGENTNEXUS_TIMEOUT_SWEEP_SECS", default_value_t = 15)]
    pub timeout_sweep_secs: u64,

    /// Reverse proxies whose `X-Forwarded-For` is believed, for the sign-in limit per
    /// address: IP addresses or CIDR ranges, comma-separated. Without it, the connection's
    /// address counts.
    #[arg(long, env = "AGENTNEXUS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = ip_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Browser origins allowed to call the MCP gateway besides the public URL's own
    /// (comma-separated, e.g. https://app.example.com).
    #[arg(long, env = "AGENTNEXUS_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub mcp_allowed_origins: Vec<String>,
}

/// The delivery worker's settings, as types.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    pub per_workspace: u32,
    pub lease: chrono::Duration,
    pub poll: Duration,
    pub retry: RetrySchedule,
}

impl Config {
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            concurrency: self.delivery_concurrency.max(1),
            per_workspace: self.delivery_per_workspace.max(1),
            lease: chrono::Duration::seconds(self.delivery_lease_secs.clamp(20, 86_400) as i64),
            poll: Duration::from_millis(self.delivery_poll_ms.max(10)),
            retry: RetrySchedule {
                base: Duration::from_millis(self.retry_base_ms.max(1)),
                max: Duration::from_secs(self.retry_max_secs.max(1)),
                horizon: Duration::from_secs(self.retry_horizon_secs),
            },
        }
    }

    /// The settings the environment gives, defaults for the rest (no command-line flags).
    pub fn from_env() -> Config {
        #[derive(clap::Parser)]
        struct Env {
            #[command(flatten)]
            config: Config,
        }
        <Env as clap::Parser>::parse_from(["agentnexus"]).config
    }

    /// Defaults for everything; tests override what they need.
    pub fn for_tests() -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            public_url: None,
            database_max_connections: 8,
            worker_threads: None,
            bootstrap_email: "owner@agentnexus.local".into(),
            bootstrap_password: None,
            rate_limit_per_second: 50_000,
            rate_limit_burst: None,
            admin_rate_limit_per_second: 50_000,
            waits_per_key: 32,
            queue_limit_per_workspace: 10_000,
            refresh_secs: 1,
            shutdown_grace_secs: 5,
            secret_key: Some(crate::crypto::Cipher::generate_key()),
            secret_key_file: PathBuf::from("agentnexus.key"),
            signing_key: Some(crate::notary::Notary::generate_key()),
            signing_key_file: PathBuf::from("agentnexus-signing.key"),
            checkpoint_secs: 60,
            checkpoint_dir: None,
            webhook_allow_private: true,
            sso_allow_private: true,
            delivery_concurrency: 16,
            delivery_per_workspace: 8,
            delivery_lease_secs: 60,
            delivery_poll_ms: 200,
            retry_base_ms: 50,
            retry_max_secs: 1,
            retry_horizon_secs: 86_400,
            mcp_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            smtp_url: None,
            cron_secret: Some("cron-secret-for-tests".into()),
            timeout_sweep_secs: 0,
            smtp_from: "AgentNexus <agentnexus@localhost>".into(),
            slack_api_url: "http://127.0.0.1:9/api".into(),
            github_api_url: "http://127.0.0.1:9".into(),
            github_poll_secs: 0,
        }
    }
}

/// An IP range (`10.0.0.0/8`) or one address (`10.0.0.7`).
fn ip_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or a CIDR range"))
}
