//! The commands that work against a running server over its REST API (`--server URL --key
//! KEY`), through the typed client: evaluate, get, and policy apply. Operators and scripts need
//! no database access for them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentnexus_client::{Client, Error, Proposal};

use crate::AnyError;

/// Exit status of `evaluate` when the agent may not go ahead (denied, rejected, expired, or
/// still pending after `--wait`).
const NOT_ALLOWED: u8 = 2;

/// Prints an evaluation as one JSON line.
fn print(ev: &agentnexus_client::Evaluation) -> Result<(), AnyError> {
    crate::say(&serde_json::to_string(ev)?)?;
    Ok(())
}

/// Proposes an action; with `wait`, waits that long for a person's decision. Exit 0 when the
/// agent may go ahead, 2 when not.
pub async fn evaluate(
    client: &Client,
    proposal: Proposal,
    wait: Option<u64>,
) -> Result<ExitCode, AnyError> {
    let mut ev = client.evaluate(&proposal).await?;
    if let (Some(secs), false) = (wait, ev.is_final()) {
        ev = match client
            .wait_for_decision(&ev.evaluation_id, Duration::from_secs(secs))
            .await
        {
            Ok(done) => done,
            Err(Error::StillPending(_)) => client.get_evaluation(&ev.evaluation_id, None).await?,
            Err(e) => return Err(e.into()),
        };
    }
    print(&ev)?;
    Ok(if ev.may_execute() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_ALLOWED)
    })
}

/// Prints an evaluation; with `wait`, once its status changes (or the time passes).
pub async fn get(client: &Client, id: &str, wait: Option<u64>) -> Result<ExitCode, AnyError> {
    let ev = match wait {
        Some(secs) => match client
            .wait_for_decision(id, Duration::from_secs(secs))
            .await
        {
            Ok(done) => done,
            Err(Error::StillPending(_)) => client.get_evaluation(id, None).await?,
            Err(e) => return Err(e.into()),
        },
        None => client.get_evaluation(id, None).await?,
    };
    print(&ev)?;
    Ok(ExitCode::SUCCESS)
}

/// Checks every file with the server first (nothing is stored when one is invalid), then puts
/// each policy in turn; prints what happened to each as `policy apply` on a store does.
pub async fn apply(client: &Client, files: &[PathBuf]) -> Result<ExitCode, AnyError> {
    let mut docs = Vec::with_capacity(files.len());
    let mut refused = false;
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v = client.validate_policy(&text).await?;
        match v.name {
            Some(name) if v.valid => docs.push((name, text)),
            _ => {
                refused = true;
                for e in &v.errors {
                    let at = match (
                        e["position"]["line"].as_u64(),
                        e["position"]["column"].as_u64(),
                    ) {
                        (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
                        _ => path.display().to_string(),
                    };
                    let rule = e["rule"]
                        .as_str()
                        .map(|r| format!("rule `{r}`: "))
                        .unwrap_or_default();
                    let field = e["field"]
                        .as_str()
                        .map(|f| format!("{f}: "))
                        .unwrap_or_default();
                    eprintln!("{at}: {rule}{field}{}", e["message"].as_str().unwrap_or(""));
                }
            }
        }
    }
    if refused {
        eprintln!("nothing applied");
        return Ok(ExitCode::FAILURE);
    }
    for (name, text) in &docs {
        let before = client.get_policy_version(name).await?;
        let v = client.put_policy(name, text).await?;
        if before == Some(v.version) {
            crate::say(&format!("unchanged {} (version {})", v.name, v.version))?;
        } else {
            crate::say(&format!("applied {} version {}", v.name, v.version))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
