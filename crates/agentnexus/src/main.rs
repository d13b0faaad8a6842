//! `agentnexus`: the server and its admin CLI, working directly on the store.
#![forbid(unsafe_code)]

mod policy_files;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentnexus_app::members::NewMemberInput;
use agentnexus_app::{App, Config, accounts};
use agentnexus_store::{Actor, Store, StoreConfig, Verification};
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

/// The evaluate path allocates for every request (JSON values, rows, responses), where
/// glibc's malloc and free cost far more than mimalloc's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that need no store run without a runtime.
    match &cli.command {
        Command::Openapi => {
            return match say(&agentnexus_server::openapi::document()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e.into()),
            };
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
        Err(e) => failed(&e),
    }
}

/// A line on stdout, or the error writing it (a reader that went away: see [`failed`]).
fn say(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// How a command that failed ends. Output piped to a reader that stopped reading
/// (`agentnexus openapi | head`) is not a failure: the command ends quietly, as Unix tools do.
fn failed(e: &AnyError) -> ExitCode {
    let gone = e
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
    if gone {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// Threads handling requests. On a SQLite file the group-commit writer and its WAL syncing are
/// threads of their own, the writer busy under load; by default requests get one core fewer
/// than the machine has (at least one), so the writer is not queued behind them
/// (docs/performance.md).
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

async fn run(cli: Cli) -> Result<ExitCode, AnyError> {
    if let Command::Serve(config) = cli.command {
        return serve(&cli.database, *config).await;
    }
    let migrating = matches!(cli.command, Command::Migrate);
    let app = App::offline(open(&cli.database, 2).await?);
    let result = command(&app, cli.command).await;
    app.store.close().await;
    if result.is_ok() && migrating {
        say(&format!(
            "migrated {}",
            agentnexus_store::redact(&cli.database)
        ))?;
    }
    result
}

/// One command of the CLI, on the use cases straight over the store.
async fn command(app: &App, command: Command) -> Result<ExitCode, AnyError> {
    match command {
        // Opening the store migrated it.
        Command::Migrate => Ok(ExitCode::SUCCESS),
        Command::Workspace(WorkspaceCommand::Create {
            name,
            owner_email,
            owner_password,
        }) => {
            let created = accounts::create_workspace(
                &app.store,
                &name,
                &owner_email,
                owner_password,
                Actor::Cli,
            )
            .await?;
            say(&serde_json::to_string(&created)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Create {
            workspace,
            name,
            scope,
        }) => {
            let admin = app.operator(&workspace).await?;
            say(&app.create_key(&admin, &name, &scope).await?.secret)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Members(MembersCommand::Add {
            workspace,
            email,
            name,
            roles,
        }) => {
            let admin = app.operator(&workspace).await?;
            let input = NewMemberInput {
                email,
                name,
                roles: (!roles.is_empty()).then_some(roles),
            };
            let member = app.add_member(&admin, input).await?;
            say(&serde_json::to_string(&member)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Members(MembersCommand::List { workspace }) => {
            let admin = app.operator(&workspace).await?;
            for m in app.members(&admin.reader()).await? {
                say(&serde_json::to_string(&m)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Apply { workspace, files }) => {
            let admin = app.operator(&workspace).await?;
            Ok(policy_files::apply(app, &admin, &files).await?)
        }
        Command::Audit(AuditCommand::Verify { workspace }) => {
            let names = match workspace {
                Some(name) => vec![name],
                None => app
                    .store
                    .workspaces()
                    .await?
                    .into_iter()
                    .map(|(ws, _)| ws.name)
                    .collect(),
            };
            let single = names.len() == 1;
            let mut code = ExitCode::SUCCESS;
            for name in names {
                let admin = app.operator(&name).await?;
                let prefix = if single {
                    String::new()
                } else {
                    format!("{name}: ")
                };
                match app.verify_audit(&admin.reader()).await? {
                    Verification::Ok {
                        events, head_hash, ..
                    } => say(&format!("{prefix}ok {events} {head_hash}"))?,
                    Verification::Broken {
                        broken_at_seq,
                        reason,
                        ..
                    } => {
                        say(&format!("{prefix}broken at seq {broken_at_seq}: {reason}"))?;
                        code = ExitCode::FAILURE;
                    }
                }
            }
            Ok(code)
        }
        Command::Serve(_) | Command::Openapi | Command::Policy(_) => {
            unreachable!("handled before")
        }
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
    let app = Arc::new(App::new(store, config, Arc::new(chrono::Utc::now))?);
    if let Some(created) = accounts::bootstrap(&app.store, &email, password).await? {
        say(&format!(
            "AgentNexus bootstrapped workspace `{}`",
            created.workspace
        ))?;
        say(&format!("  owner:     {}", created.owner_email))?;
        if let Some(pw) = &created.owner_password {
            say(&format!("  password:  {pw}"))?;
        }
        say(&format!("  admin key: {}", created.admin_key))?;
        say("These are shown once: keep them somewhere safe.")?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // What a newcomer needs to know about this start, in one line.
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %agentnexus_store::redact(database),
        public_url = %app.public_url(),
        smtp = app.config.smtp_url.is_some(),
        "AgentNexus is serving"
    );
    if app.config.smtp_url.is_none() {
        tracing::warn!(
            "no SMTP server is configured (AGENTNEXUS_SMTP_URL): approval e-mails, codes and \
             invitations are not delivered; they are retried until one is, within the retry \
             horizon"
        );
    }
    agentnexus_server::serve(listener, app, shutdown_signal()).await?;
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
