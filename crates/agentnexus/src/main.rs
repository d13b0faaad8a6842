//! `agentnexus`: the server and its admin CLI, working directly on the store.
#![forbid(unsafe_code)]

mod policy_files;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentnexus_server::{AppState, Config, accounts};
use agentnexus_store::{Actor, Scope, Store, StoreConfig, Tenant, Verification};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentnexus",
    version,
    about = "AgentNexus: a governance runtime for AI agents"
)]
struct Cli {
    /// The store: sqlite://FILE (created when missing) or postgres://…
    #[arg(
        long,
        global = true,
        env = "AGENTNEXUS_DATABASE_URL",
        default_value = "sqlite://agentnexus.db",
        hide_env_values = true
    )]
    database: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (API, background workers); bootstraps an empty store.
    Serve(Box<Config>),
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Workspaces (tenants).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Members and their roles (the people approval stages reach).
    #[command(subcommand)]
    Members(MembersCommand),
    /// Policy documents: apply, lint, test.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace with an owner and an admin key; prints them as JSON.
    Create {
        name: String,
        #[arg(long)]
        owner_email: String,
        /// Generated (and printed) when absent.
        #[arg(long)]
        owner_password: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints it alone (it is never shown again).
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["agent", "admin"])]
        scope: String,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Add a member; prints it as JSON.
    Add {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// A role to hold (repeat for several): owner, admin, approver, viewer or a group
        /// such as finance. Default: approver.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List members as JSON lines.
    List {
        #[arg(long)]
        workspace: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate and store policy files as new versions (all or nothing).
    Apply {
        #[arg(long)]
        workspace: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate policy files without storing them.
    Lint {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the *_test.yaml files in DIR against the policies in DIR.
    Test { dir: PathBuf },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exit 1 when it is broken.
    Verify {
        /// One workspace; all when absent.
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// The evaluate path allocates for every request (JSON values, rows, responses); under
/// callgrind glibc's malloc and free were a quarter of the server's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that need no store run without a runtime.
    match &cli.command {
        Command::Openapi => {
            println!("{}", agentnexus_server::openapi::document());
            return ExitCode::SUCCESS;
        }
        Command::Policy(PolicyCommand::Lint { files }) => return policy_files::lint(files),
        Command::Policy(PolicyCommand::Test { dir }) => return policy_files::test(dir),
        _ => {}
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(config) = &cli.command {
        runtime.worker_threads(worker_threads(&cli.database, config.worker_threads));
    }
    let runtime = runtime.enable_all().build().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Threads handling requests. On a SQLite file the group-commit writer and its WAL syncing are
/// threads of their own, the writer busy under load; by default requests get one core fewer
/// than the machine has (at least one), so the writer is not queued behind them: on two cores
/// that took evaluate from 13.5k to 16.2k requests/s (docs/performance.md).
fn worker_threads(database: &str, configured: Option<usize>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match configured {
        Some(n) => n.max(1),
        None if database.starts_with("sqlite:") => cores.saturating_sub(1).max(1),
        None => cores,
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

async fn open(database: &str, max_connections: u32) -> Result<Store, AnyError> {
    let mut config = StoreConfig::new(database);
    config.max_connections = max_connections;
    Store::open(config)
        .await
        .map_err(|e| format!("cannot open {}: {e}", agentnexus_store::redact(database)).into())
}

async fn tenant(store: &Store, workspace: &str) -> Result<Tenant, AnyError> {
    match store.workspace_by_name(workspace).await? {
        Some((_, tenant)) => Ok(tenant),
        None => Err(format!("no workspace named `{workspace}`").into()),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, AnyError> {
    match cli.command {
        Command::Serve(config) => serve(&cli.database, *config).await,
        Command::Migrate => {
            open(&cli.database, 2).await?.close().await;
            println!("migrated {}", agentnexus_store::redact(&cli.database));
            Ok(ExitCode::SUCCESS)
        }
        Command::Workspace(WorkspaceCommand::Create {
            name,
            owner_email,
            owner_password,
        }) => {
            if !agentnexus_engine::valid_policy_name(&name) {
                return Err("a workspace name is 1-64 of a-z 0-9 - _ .".into());
            }
            let store = open(&cli.database, 2).await?;
            let created =
                accounts::create_workspace(&store, &name, &owner_email, owner_password, Actor::Cli)
                    .await;
            store.close().await;
            println!("{}", serde_json::to_string(&created?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Create {
            workspace,
            name,
            scope,
        }) => {
            let store = open(&cli.database, 2).await?;
            let tenant = tenant(&store, &workspace).await?;
            let scope = Scope::parse(&scope).ok_or("scope is agent or admin")?;
            let key = store
                .create_key(&tenant, &name, scope, Actor::Cli, chrono::Utc::now())
                .await;
            store.close().await;
            println!("{}", key?.secret);
            Ok(ExitCode::SUCCESS)
        }
        Command::Members(MembersCommand::Add {
            workspace,
            email,
            name,
            roles,
        }) => {
            let email = agentnexus_server::api::members::parse_email(&email)
                .map_err(|_| format!("`{email}` is not an e-mail address"))?;
            let roles = if roles.is_empty() {
                vec!["approver".to_owned()]
            } else {
                roles
            };
            let roles =
                agentnexus_server::api::members::parse_roles(roles).map_err(|e| e.to_string())?;
            let store = open(&cli.database, 2).await?;
            let tenant = tenant(&store, &workspace).await?;
            let new = agentnexus_store::NewMember {
                email,
                name,
                roles,
                password_hash: None,
            };
            let member = store
                .add_member(&tenant, new, Actor::Cli, chrono::Utc::now())
                .await;
            store.close().await;
            println!("{}", serde_json::to_string(&member?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Members(MembersCommand::List { workspace }) => {
            let store = open(&cli.database, 2).await?;
            let tenant = tenant(&store, &workspace).await?;
            let members = store.members(&tenant).await;
            store.close().await;
            for m in members? {
                println!("{}", serde_json::to_string(&m)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Apply { workspace, files }) => {
            let store = open(&cli.database, 2).await?;
            let tenant = tenant(&store, &workspace).await?;
            let code = policy_files::apply(&store, &tenant, &files).await;
            store.close().await;
            code
        }
        Command::Audit(AuditCommand::Verify { workspace }) => {
            let store = open(&cli.database, 2).await?;
            let targets = match workspace {
                Some(name) => vec![(name.clone(), tenant(&store, &name).await?)],
                None => store
                    .workspaces()
                    .await?
                    .into_iter()
                    .map(|(ws, t)| (ws.name, t))
                    .collect(),
            };
            let single = targets.len() == 1;
            let mut code = ExitCode::SUCCESS;
            for (name, tenant) in targets {
                let prefix = if single {
                    String::new()
                } else {
                    format!("{name}: ")
                };
                match store.verify_audit(&tenant).await? {
                    Verification::Ok {
                        events, head_hash, ..
                    } => println!("{prefix}ok {events} {head_hash}"),
                    Verification::Broken {
                        broken_at_seq,
                        reason,
                        ..
                    } => {
                        println!("{prefix}broken at seq {broken_at_seq}: {reason}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            store.close().await;
            Ok(code)
        }
        Command::Openapi | Command::Policy(_) => unreachable!("handled before the runtime"),
    }
}

async fn serve(database: &str, config: Config) -> Result<ExitCode, AnyError> {
    init_logging();
    let store = open(database, config.database_max_connections).await?;
    // A bad server key refuses to start before the store is bootstrapped and credentials
    // are printed.
    let listen = config.listen;
    let (email, password) = (
        config.bootstrap_email.clone(),
        config.bootstrap_password.clone(),
    );
    let state = Arc::new(AppState::new(store, config, Arc::new(chrono::Utc::now))?);
    if let Some(created) = accounts::bootstrap(&state.store, &email, password).await? {
        println!("AgentNexus bootstrapped workspace `{}`", created.workspace);
        println!("  owner:     {}", created.owner_email);
        if let Some(pw) = &created.owner_password {
            println!("  password:  {pw}");
        }
        println!("  admin key: {}", created.admin_key);
        println!("These are shown once: keep them somewhere safe.");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %agentnexus_store::redact(database),
        "AgentNexus is serving"
    );
    agentnexus_server::serve(listener, state, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (how service managers stop us) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// JSON logs by default (one object per line on stderr); `AGENTNEXUS_LOG_FORMAT=text` for
/// people. `AGENTNEXUS_LOG` filters (default `info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("AGENTNEXUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("AGENTNEXUS_LOG_FORMAT").as_deref() == Ok("text") {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn sqlite_leaves_the_writer_a_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads("sqlite://a.db", None), (cores - 1).max(1));
        assert_eq!(worker_threads("postgres://h/db", None), cores);
        assert_eq!(worker_threads("sqlite://a.db", Some(3)), 3);
        assert_eq!(worker_threads("postgres://h/db", Some(0)), 1);
    }
}
