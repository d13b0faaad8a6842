//! The admin commands that work on a store: the use cases straight over it, their answers
//! printed as the REST API's JSON (one object a line for lists).

use std::process::ExitCode;

use agentnexus_app::checkpoints::CheckpointCheck;
use agentnexus_app::evaluations::ListInput;
use agentnexus_app::members::NewMemberInput;
use agentnexus_app::notary::{Checkpoint, PublicKey};
use agentnexus_app::types::{EvaluationId, KeyId, MemberId};
use agentnexus_app::{App, Error, accounts};
use agentnexus_server::api::keys::KeyView;
use agentnexus_server::api::members::MemberView;
use agentnexus_server::api::policies::{PolicySummaryView, PolicyView};
use agentnexus_server::wire::EvaluationDetail;
use agentnexus_store::{Actor, Store, StoreConfig, StoreError, Verification, redact};
use serde::Serialize;

use crate::{
    AnyError, AuditCommand, EvaluationsCommand, KeysCommand, MembersCommand, PolicyCommand,
    WorkspaceCommand, policy_files, say,
};

/// What to do once the store is open.
pub(crate) enum Task {
    Migrate,
    Workspace(WorkspaceCommand),
    Keys(KeysCommand),
    Members(MembersCommand),
    Policy(PolicyCommand),
    Evaluations(EvaluationsCommand),
    Audit(AuditCommand),
}

/// Opens the store at `database`, runs the task, and names the store in any error, since the
/// default is a file in the current directory. Only `migrate` and `workspace create` (which
/// says what it makes, as `serve` does) create a store that is not there; every other command
/// refuses rather than leave an empty store behind.
pub(crate) async fn run(database: &str, task: Task) -> Result<ExitCode, AnyError> {
    let migrating = matches!(task, Task::Migrate);
    let mut config = StoreConfig::new(database);
    config.max_connections = 2;
    config.create = matches!(task, Task::Migrate | Task::Workspace(_));
    let store = match Store::open(config).await {
        Ok(store) => store,
        Err(StoreError::Missing(what)) => {
            return Err(format!(
                "{what}\n  `agentnexus serve` (or `agentnexus migrate`, or `agentnexus workspace \
                 create`) creates one; to use another store, pass --database URL or set \
                 AGENTNEXUS_DATABASE_URL"
            )
            .into());
        }
        Err(e) => return Err(format!("cannot open {}: {e}", redact(database)).into()),
    };
    let app = App::offline(store);
    let result = task.run(&app).await;
    let place = place(database, &app.store);
    app.store.close().await;
    match result {
        Ok(code) => {
            if migrating {
                say(&format!("migrated {place}"))?;
            }
            Ok(code)
        }
        // A reader that went away is not the store's business.
        Err(e) if e.is::<std::io::Error>() => Err(e),
        Err(e) => Err(format!(
            "{}\n  store: {place} (another: --database URL or AGENTNEXUS_DATABASE_URL)",
            describe(&*e)
        )
        .into()),
    }
}

/// The store as a person finds it: the URL, and for SQLite the file it is.
fn place(database: &str, store: &Store) -> String {
    match store.file() {
        Some(file) => format!("{} ({})", redact(database), file.display()),
        None => redact(database),
    }
}

/// An error with the problems a use case named, one a line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<Error>() {
        Some(Error::Invalid { detail, problems }) if !problems.is_empty() => {
            let mut text = detail.clone();
            for p in problems {
                match &p.field {
                    Some(field) => text.push_str(&format!("\n  {field}: {}", p.message)),
                    None => text.push_str(&format!("\n  {}", p.message)),
                }
            }
            text
        }
        _ => e.to_string(),
    }
}

/// Prints one value as a JSON line.
fn json(value: &impl Serialize) -> Result<(), AnyError> {
    say(&serde_json::to_string(value)?)?;
    Ok(())
}

/// What was not found, said with its name (the use cases answer only "not found").
fn missing(what: String) -> impl FnOnce(Error) -> AnyError {
    move |e| match e {
        Error::NotFound => what.into(),
        e => e.into(),
    }
}

impl Task {
    async fn run(self, app: &App) -> Result<ExitCode, AnyError> {
        match self {
            // Opening the store migrated it.
            Task::Migrate => {}
            Task::Workspace(WorkspaceCommand::Create {
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
                json(&created)?;
            }
            Task::Keys(command) => keys(app, command).await?,
            Task::Members(command) => members(app, command).await?,
            Task::Policy(command) => return policy(app, command).await,
            Task::Evaluations(command) => evaluations(app, command).await?,
            Task::Audit(AuditCommand::Verify {
                workspace,
                checkpoint,
                public_key,
            }) => {
                return match checkpoint {
                    Some(file) => {
                        verify_checkpoint(app, workspace, &file, public_key.as_deref()).await
                    }
                    None => verify(app, workspace).await,
                };
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn keys(app: &App, command: KeysCommand) -> Result<(), AnyError> {
    match command {
        KeysCommand::Create {
            workspace,
            name,
            scope,
        } => {
            let admin = app.operator(&workspace.workspace).await?;
            say(&app.create_key(&admin, &name, &scope).await?.secret)?;
        }
        KeysCommand::List { workspace } => {
            let admin = app.operator(&workspace.workspace).await?;
            for key in app.keys(&admin.reader()).await? {
                json(&KeyView::from(key))?;
            }
        }
        KeysCommand::Revoke { workspace, id } => {
            let admin = app.operator(&workspace.workspace).await?;
            let key = app
                .revoke_key(&admin, &KeyId::from(id.clone()))
                .await
                .map_err(missing(format!(
                    "no key `{id}` in workspace `{}` (`agentnexus keys list` shows them)",
                    workspace.workspace
                )))?;
            json(&KeyView::from(key))?;
        }
    }
    Ok(())
}

async fn members(app: &App, command: MembersCommand) -> Result<(), AnyError> {
    match command {
        MembersCommand::Add {
            workspace,
            email,
            name,
            roles,
        } => {
            let admin = app.operator(&workspace.workspace).await?;
            let input = NewMemberInput {
                email,
                name,
                roles: (!roles.is_empty()).then_some(roles),
            };
            json(&MemberView::from(app.add_member(&admin, input).await?))?;
        }
        MembersCommand::List { workspace } => {
            let admin = app.operator(&workspace.workspace).await?;
            for m in app.members(&admin.reader()).await? {
                json(&MemberView::from(m))?;
            }
        }
        MembersCommand::Remove { workspace, member } => {
            let admin = app.operator(&workspace.workspace).await?;
            let not_there = || {
                format!(
                    "no member `{member}` in workspace `{}` (`agentnexus members list` shows them)",
                    workspace.workspace
                )
            };
            // By e-mail too, as people know each other.
            let id = if member.contains('@') {
                app.members(&admin.reader())
                    .await?
                    .into_iter()
                    .find(|m| m.email.eq_ignore_ascii_case(member.trim()))
                    .map(|m| m.id)
                    .ok_or_else(not_there)?
            } else {
                member.clone()
            };
            let removed = app
                .remove_member(&admin, &MemberId::from(id))
                .await
                .map_err(missing(not_there()))?;
            json(&MemberView::from(removed))?;
        }
    }
    Ok(())
}

async fn policy(app: &App, command: PolicyCommand) -> Result<ExitCode, AnyError> {
    let no_policy = |name: &str, workspace: &str| {
        format!(
            "no policy `{name}` in workspace `{workspace}` (`agentnexus policy list` shows them)"
        )
    };
    match command {
        PolicyCommand::Apply {
            workspace, files, ..
        } => {
            let workspace = workspace.ok_or("give --workspace (or --server and --key)")?;
            let admin = app.operator(&workspace).await?;
            return Ok(policy_files::apply(app, &admin, &files).await?);
        }
        PolicyCommand::List { workspace } => {
            let admin = app.operator(&workspace.workspace).await?;
            for p in app.policies(&admin.reader()).await? {
                json(&PolicySummaryView::from(p))?;
            }
        }
        PolicyCommand::Show {
            workspace,
            name,
            version,
        } => {
            let admin = app.operator(&workspace.workspace).await?;
            let found = match version {
                Some(n) => app.policy_version(&admin.reader(), &name, n).await,
                None => app.policy(&admin.reader(), &name).await,
            };
            let v = found.map_err(missing(match version {
                Some(n) => format!(
                    "policy `{name}` has no version {n} (`agentnexus policy versions` lists them)"
                ),
                None => no_policy(&name, &workspace.workspace),
            }))?;
            // The document as written, ready to be saved and applied again.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(v.document.as_bytes())?;
            if !v.document.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        PolicyCommand::Versions { workspace, name } => {
            let admin = app.operator(&workspace.workspace).await?;
            let versions = app
                .policy_versions(&admin.reader(), &name)
                .await
                .map_err(missing(no_policy(&name, &workspace.workspace)))?;
            for v in versions {
                json(&PolicyView::from(v))?;
            }
        }
        PolicyCommand::Rollback {
            workspace,
            name,
            to,
        } => {
            let admin = app.operator(&workspace.workspace).await?;
            let v = app
                .rollback_policy(&admin, &name, to)
                .await
                .map_err(missing(format!(
                    "policy `{name}` has no version {to} in workspace `{}` (`agentnexus policy \
                 versions` lists them)",
                    workspace.workspace
                )))?;
            json(&PolicyView::from(v))?;
        }
        PolicyCommand::Lint { .. } | PolicyCommand::Test { .. } => {
            unreachable!("run without a store")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn evaluations(app: &App, command: EvaluationsCommand) -> Result<(), AnyError> {
    match command {
        EvaluationsCommand::List {
            workspace,
            status,
            agent,
            action,
            policy,
            from,
            to,
            limit,
        } => {
            let admin = app.operator(&workspace.workspace).await?;
            let mut input = ListInput {
                status,
                agent_id: agent,
                action,
                policy,
                limit: Some(limit),
                cursor: None,
                from,
                to,
            };
            // A filtered page may search only part of the history: on to the next until
            // `limit` are printed or the history ends.
            let mut left = limit;
            loop {
                let page = app.evaluations(&admin.reader(), input.clone()).await?;
                left = left.saturating_sub(page.evaluations.len() as u32);
                for ev in page.evaluations {
                    json(&EvaluationDetail::from(ev))?;
                }
                match page.next_cursor {
                    Some(cursor) if left > 0 => {
                        input.cursor = Some(cursor);
                        input.limit = Some(left);
                    }
                    _ => break,
                }
            }
        }
        EvaluationsCommand::Show { workspace, id } => {
            let admin = app.operator(&workspace.workspace).await?;
            let ev = app
                .read_evaluation(&admin.reader(), &EvaluationId::from(id.clone()))
                .await
                .map_err(missing(format!(
                    "no evaluation `{id}` in workspace `{}`",
                    workspace.workspace
                )))?;
            json(&EvaluationDetail::from(ev))?;
        }
    }
    Ok(())
}

/// `ok EVENTS HEAD_HASH` (SPEC §1) when there is one workspace to verify; `NAME: …` a line for
/// each when there are several.
async fn verify(app: &App, workspace: Option<String>) -> Result<ExitCode, AnyError> {
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
    if names.is_empty() {
        say("nothing to verify: the store has no workspaces yet")?;
    }
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

/// `audit verify --checkpoint FILE`: the chain of the checkpoint's workspace verifies, and it
/// still holds what the checkpoint signed. Prints the verification, then `checkpoint ok: …`
/// or `checkpoint broken: PROBLEM`; exit 1 when either fails.
async fn verify_checkpoint(
    app: &App,
    workspace: Option<String>,
    file: &std::path::Path,
    public_key: Option<&std::path::Path>,
) -> Result<ExitCode, AnyError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let checkpoint: Checkpoint = serde_json::from_str(&read(file)?)
        .map_err(|e| format!("{}: not a checkpoint: {e}", file.display()))?;
    let key = match public_key {
        Some(path) => {
            PublicKey::from_pem(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => app
            .notary()
            .map_err(|_| {
                "no public key to check the signature with: pass --public-key FILE (the PEM \
                 GET /api/v1/audit/signing-key answers), or run where the server's signing \
                 key is (AGENTNEXUS_SIGNING_KEY or AGENTNEXUS_SIGNING_KEY_FILE)"
            })?
            .public()
            .clone(),
    };
    let name = workspace.unwrap_or_else(|| checkpoint.workspace.clone());
    let reader = app.operator(&name).await?.reader();
    let mut code = ExitCode::SUCCESS;
    match app.verify_audit(&reader).await? {
        Verification::Ok {
            events, head_hash, ..
        } => say(&format!("ok {events} {head_hash}"))?,
        Verification::Broken {
            broken_at_seq,
            reason,
            ..
        } => {
            say(&format!("broken at seq {broken_at_seq}: {reason}"))?;
            code = ExitCode::FAILURE;
        }
    }
    match app.check_checkpoint(&reader, &checkpoint, &key).await? {
        CheckpointCheck::Holds => say(&format!(
            "checkpoint ok: seq {} {} signed by {} at {}",
            checkpoint.seq, checkpoint.head_hash, checkpoint.key_id, checkpoint.issued_at
        ))?,
        CheckpointCheck::Fails(problem) => {
            say(&format!("checkpoint broken: {problem}"))?;
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}
