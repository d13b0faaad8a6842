//! `agentnexus`: the server and its admin CLI, working directly on the store.
#![forbid(unsafe_code)]

mod admin;
mod policy_files;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentnexus_app::{App, Config, accounts};
use agentnexus_store::{Store, StoreConfig};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentnexus",
    version,
    about = "AgentNexus: a governance runtime for AI agents",
    after_help = "Commands other than serve, migrate and workspace create open an existing store \
                  and never create one. Policy lint and test, and openapi, need no store."
)]
struct Cli {
    /// The store, for any command that uses one (it may also follow the command's name).
    #[arg(long, value_name = "URL")]
    database: Option<String>,

    #[command(subcommand)]
    command: Command,
}

const DEFAULT_DATABASE: &str = "sqlite://agentnexus.db";

#[derive(Subcommand)]
enum Command {
    /// Run the server (API, dashboard, MCP gateway, background workers); creates and
    /// bootstraps an empty store.
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
    /// Policy documents: apply, list, show, versions, rollback (on a store); lint, test (on files).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Evaluations: the proposals agents made and how they were decided.
    #[command(subcommand)]
    Evaluations(EvaluationsCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the OpenAPI document of the REST API.
    Openapi,
    /// Propose an action to a running server (--server, --key); prints the evaluation as JSON.
    /// Exit status 0 when the agent may go ahead, 2 when it may not (denied, rejected,
    /// expired, or still pending).
    Evaluate(EvaluateArgs),
    /// Print an evaluation from a running server (--server, --key) as JSON.
    Get {
        #[command(flatten)]
        remote: RemoteArg,
        /// The evaluation's id (`ev_…`).
        id: String,
        /// Wait up to this many seconds for a pending evaluation to be decided.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

/// A running server, reached over its REST API.
#[derive(Args)]
struct RemoteArg {
    /// The server's URL (`http://127.0.0.1:8080`).
    #[arg(long, value_name = "URL", env = "AGENTNEXUS_SERVER")]
    server: String,
    /// An API key of the workspace (`anx_…`): agent scope to evaluate and get, admin for
    /// policy apply.
    #[arg(long, value_name = "KEY", env = "AGENTNEXUS_API_KEY")]
    key: String,
}

impl RemoteArg {
    fn client(&self) -> Result<agentnexus_client::Client, AnyError> {
        Ok(agentnexus_client::Client::new(&self.server, &self.key)?)
    }
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    remote: RemoteArg,
    /// The whole proposal as JSON (`{"agent_id", "action", …}`, SPEC §4); the flags below
    /// set or replace its fields.
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
    /// The proposing agent.
    #[arg(long, value_name = "AGENT_ID")]
    agent: Option<String>,
    /// The action it proposes.
    #[arg(long)]
    action: Option<String>,
    /// What the action is done to (`customer/cus_123`).
    #[arg(long)]
    resource: Option<String>,
    /// The amount at stake, in the minor unit of the workspace's currency.
    #[arg(long, value_name = "CENTS")]
    amount_cents: Option<i64>,
    /// Retries and repeats of the command with the same key are one evaluation.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Wait up to this many seconds for a person's decision when approval is required.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

impl EvaluateArgs {
    fn proposal(&self) -> Result<agentnexus_client::Proposal, AnyError> {
        let mut p: agentnexus_client::Proposal = match &self.json {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("--json: {e}"))?,
            None => agentnexus_client::Proposal::default(),
        };
        if let Some(a) = &self.agent {
            p.agent_id = a.clone();
        }
        if let Some(a) = &self.action {
            p.action = a.clone();
        }
        if self.resource.is_some() {
            p.resource = self.resource.clone();
        }
        if self.amount_cents.is_some() {
            p.amount_cents = self.amount_cents;
        }
        if self.idempotency_key.is_some() {
            p.idempotency_key = self.idempotency_key.clone();
        }
        if p.agent_id.is_empty() || p.action.is_empty() {
            return Err("give --agent and --action (or both in --json)".into());
        }
        Ok(p)
    }
}

/// The workspace a command acts in.
#[derive(Args)]
struct WorkspaceArg {
    /// The workspace's name (`default` is the one `serve` bootstraps).
    #[arg(long, value_name = "NAME")]
    workspace: String,
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace with an owner and an admin key; prints them as JSON.
    Create {
        /// The new workspace's name.
        name: String,
        /// E-mail of the workspace's first owner (their sign-in to the dashboard).
        #[arg(long, value_name = "EMAIL")]
        owner_email: String,
        /// The owner's password; generated (and printed) when absent.
        #[arg(long, value_name = "PASSWORD")]
        owner_password: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints it alone (it is never shown again).
    Create {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// A label to recognise the key by.
        #[arg(long, value_name = "LABEL")]
        name: String,
        /// `agent` (evaluate, read its own evaluations) or `admin` (everything).
        #[arg(long, value_parser = ["agent", "admin"])]
        scope: String,
    },
    /// List the workspace's keys as JSON lines (never their secrets).
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Revoke a key at once; prints it as JSON.
    Revoke {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The key's id (`key_…`, from `keys list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Add a member; prints it as JSON.
    Add {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The member's e-mail (where approval requests go).
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// A display name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// A role to hold (repeat for several): owner, admin, approver, viewer or a group
        /// such as finance. Default: approver.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// List members as JSON lines.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Remove a member; prints it as JSON (the last owner cannot be removed).
    Remove {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The member's id (`mem_…`) or e-mail.
        member: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate and store policy files as new versions: on a store, all or nothing; on a
    /// running server (--server, --key), all checked first, then each stored.
    Apply {
        /// The workspace's name, on a store.
        #[arg(long, value_name = "NAME", required_unless_present = "server")]
        workspace: Option<String>,
        /// A running server's URL, to apply over its REST API with an admin key.
        #[arg(long, value_name = "URL", env = "AGENTNEXUS_SERVER", requires = "key")]
        server: Option<String>,
        /// An admin key of the server's workspace.
        #[arg(long, value_name = "KEY", env = "AGENTNEXUS_API_KEY")]
        key: Option<String>,
        /// Policy documents (YAML or JSON); each one's `name` says which policy it is.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the workspace's policies as JSON lines.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Print a policy's document as written (the active version, or --version N).
    Show {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The policy's name.
        name: String,
        /// A stored version rather than the active one.
        #[arg(long, value_name = "N")]
        version: Option<i64>,
    },
    /// List a policy's versions as JSON lines, newest first.
    Versions {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The policy's name.
        name: String,
    },
    /// Make an older version active again (as a new version); prints it as JSON.
    Rollback {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The policy's name.
        name: String,
        /// The version to bring back.
        #[arg(long, value_name = "N")]
        to: i64,
    },
    /// Validate policy files without storing them (no store needed).
    Lint {
        /// Policy documents (YAML or JSON).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run the *_test.yaml files in DIR against the policies in DIR (no store needed).
    Test {
        /// A directory of policies and their tests.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvaluationsCommand {
    /// List evaluations as JSON lines, newest first.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// Only this status: allowed, denied, pending, approved, rejected or expired.
        #[arg(long)]
        status: Option<String>,
        /// Only this agent.
        #[arg(long, value_name = "AGENT_ID")]
        agent: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Only evaluations a rule of this policy matched.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// Only evaluations made at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Only evaluations made before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// How many, 1-500.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print one evaluation as JSON, with its stages and decisions.
    Show {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// The evaluation's id (`ev_…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; one line per workspace; exit 1 when it is broken.
    Verify {
        /// One workspace (prints `ok EVENTS HEAD_HASH`); every workspace when absent.
        #[arg(long, value_name = "NAME")]
        workspace: Option<String>,
        /// A signed checkpoint (a file of AGENTNEXUS_CHECKPOINT_DIR, or what
        /// GET /api/v1/audit/checkpoint answered): its workspace's chain must still hold it.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
        /// The signing key's public half, PEM (GET /api/v1/audit/signing-key); default: the
        /// server's own key (AGENTNEXUS_SIGNING_KEY or its file), when at hand.
        #[arg(long, value_name = "FILE", requires = "checkpoint")]
        public_key: Option<std::path::PathBuf>,
    },
}

/// The evaluate path allocates for every request (JSON values, rows, responses), where
/// glibc's malloc and free cost far more than mimalloc's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = with_store_args(Cli::command()).get_matches();
    let database = database(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let task = match cli.command {
        // Commands that need no store run without a runtime.
        Command::Openapi => {
            return match say(&agentnexus_server::openapi::document()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e.into()),
            };
        }
        Command::Policy(PolicyCommand::Lint { files }) => return policy_files::lint(&files),
        Command::Policy(PolicyCommand::Test { dir }) => return policy_files::test(&dir),
        Command::Evaluate(args) => {
            return remote_command(async move {
                let proposal = args.proposal()?;
                remote::evaluate(&args.remote.client()?, proposal, args.wait).await
            });
        }
        Command::Get { remote, id, wait } => {
            return remote_command(async move { remote::get(&remote.client()?, &id, wait).await });
        }
        Command::Policy(PolicyCommand::Apply {
            server: Some(server),
            key: Some(key),
            files,
            ..
        }) => {
            return remote_command(async move {
                let client = agentnexus_client::Client::new(&server, &key)?;
                remote::apply(&client, &files).await
            });
        }
        Command::Serve(config) => {
            let runtime = runtime(Some(worker_threads(&database, config.worker_threads)));
            return match runtime.block_on(serve(&database, *config)) {
                Ok(code) => code,
                Err(e) => failed(&e),
            };
        }
        Command::Migrate => admin::Task::Migrate,
        Command::Workspace(command) => admin::Task::Workspace(command),
        Command::Keys(command) => admin::Task::Keys(command),
        Command::Members(command) => admin::Task::Members(command),
        Command::Policy(command) => admin::Task::Policy(command),
        Command::Evaluations(command) => admin::Task::Evaluations(command),
        Command::Audit(command) => admin::Task::Audit(command),
    };
    match runtime(None).block_on(admin::run(&database, task)) {
        Ok(code) => code,
        Err(e) => failed(&e),
    }
}

/// A command against a running server, on a runtime of its own.
fn remote_command(
    command: impl std::future::Future<Output = Result<ExitCode, AnyError>>,
) -> ExitCode {
    match runtime(Some(1)).block_on(command) {
        Ok(code) => code,
        Err(e) => failed(&e),
    }
}

/// Commands that need no store, which do not take `--database`.
const STORELESS: [&str; 5] = ["lint", "test", "openapi", "evaluate", "get"];

/// `--database` on every command that uses a store, so that it may follow the command's name
/// (a global argument would also show on the commands that use none); and help that shows
/// which variable sets an option, never its value (`[env: NAME]`, not `[env: NAME=…]`).
fn with_store_args(command: clap::Command) -> clap::Command {
    let command = command.mut_args(|a| a.hide_env_values(true));
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    if names.is_empty() {
        if STORELESS.contains(&command.get_name()) {
            return command;
        }
        return command.arg(
            clap::Arg::new("store")
                .long("database")
                .value_name("URL")
                .env("AGENTNEXUS_DATABASE_URL")
                .hide_env_values(true)
                .help(
                    "The store: sqlite://FILE or postgres://USER:PASSWORD@HOST/DB \
                     [default: sqlite://agentnexus.db]",
                ),
        );
    }
    names.iter().fold(command, |command, name| {
        command.mut_subcommand(name, with_store_args)
    })
}

/// The store's URL: `--database` before the command, after it (or the environment), or the
/// default.
fn database(matches: &clap::ArgMatches) -> String {
    let mut found = matches.get_one::<String>("database").cloned();
    let mut level = matches;
    while let Some((_, sub)) = level.subcommand() {
        if found.is_none() {
            found = sub.try_get_one::<String>("store").ok().flatten().cloned();
        }
        level = sub;
    }
    found.unwrap_or_else(|| DEFAULT_DATABASE.to_owned())
}

fn runtime(worker_threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build().expect("a tokio runtime")
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

async fn serve(database: &str, config: Config) -> Result<ExitCode, AnyError> {
    let _log = init_logging();
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
    let channels = app.channels_summary().await?;
    // What a newcomer needs to know about this start, in one line.
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %agentnexus_store::redact(database),
        public_url = %app.public_url(),
        smtp = app.config.smtp_url.is_some(),
        channels = %channels,
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
    agentnexus_server::ops::flush_access_log();
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
/// people. `AGENTNEXUS_LOG` filters (default `info`, which includes the access log).
///
/// Lines are written by a thread of their own, which writes what has piled up at once: under
/// load the access log costs a request a formatted line in memory, not a system call. None is
/// dropped (a full buffer makes loggers wait); the guard flushes what is left at exit.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("agentnexus-log")
        // The thread writes every line waiting, then flushes: one system call for many.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let filter =
        EnvFilter::try_from_env("AGENTNEXUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The access log's lines go through the same writer, so lines never interleave.
    let access = writer.clone();
    agentnexus_server::ops::set_access_log(move |line| {
        use std::io::Write;
        let _ = access.clone().write_all(line);
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if std::env::var("AGENTNEXUS_LOG_FORMAT").as_deref() == Ok("text") {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::{Cli, STORELESS, with_store_args, worker_threads};
    use clap::CommandFactory;

    /// Every argument of every command says what it is; `--database` is on exactly the
    /// commands that use a store; help never shows a variable's value.
    #[test]
    fn every_argument_is_described() {
        fn walk(command: &clap::Command, path: &str, seen: &mut usize) {
            let path = format!("{path} {}", command.get_name());
            let leaf = command.get_subcommands().next().is_none();
            for arg in command.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path}: {} has no description",
                    arg.get_id()
                );
                if arg.get_env().is_some() {
                    assert!(arg.is_hide_env_values_set(), "{path}: {}", arg.get_id());
                }
            }
            let stores = command.get_arguments().any(|a| a.get_id() == "store");
            if leaf && path != "agentnexus" {
                assert_eq!(
                    stores,
                    !STORELESS.contains(&command.get_name()),
                    "{path}: --database"
                );
                *seen += 1;
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, seen);
            }
        }
        let mut seen = 0;
        walk(&with_store_args(Cli::command()), "", &mut seen);
        assert!(seen >= 20, "{seen} commands");
        with_store_args(Cli::command()).debug_assert();
    }

    #[test]
    fn sqlite_leaves_the_writer_a_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads("sqlite://a.db", None), (cores - 1).max(1));
        assert_eq!(worker_threads("postgres://h/db", None), cores);
        assert_eq!(worker_threads("sqlite://a.db", Some(3)), 3);
        assert_eq!(worker_threads("postgres://h/db", Some(0)), 1);
    }
}
