//! Server configuration: every setting, its environment variable and its default, in one
//! place. The README's configuration table is this file in prose.

use std::net::SocketAddr;

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

    /// Requests per second each API key may make (0 turns limiting off).
    #[arg(
        long,
        env = "AGENTNEXUS_RATE_LIMIT_PER_SECOND",
        default_value_t = 50_000
    )]
    pub rate_limit_per_second: u32,

    /// Requests a key may make in a burst above its steady rate; defaults to one second's worth.
    #[arg(long, env = "AGENTNEXUS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Seconds between checks for policy changes and key revocations made elsewhere
    /// (another replica, the CLI).
    #[arg(long, env = "AGENTNEXUS_REFRESH_SECS", default_value_t = 1)]
    pub refresh_secs: u64,

    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "AGENTNEXUS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// Defaults for everything; tests override what they need.
    pub fn for_tests() -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            public_url: None,
            database_max_connections: 8,
            bootstrap_email: "owner@agentnexus.local".into(),
            bootstrap_password: None,
            rate_limit_per_second: 50_000,
            rate_limit_burst: None,
            refresh_secs: 1,
            shutdown_grace_secs: 5,
        }
    }
}
