//! Policy files on disk: `policy apply`, `policy lint` and `policy test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentnexus_engine::testing::{TestFile, run_case};
use agentnexus_engine::{CompiledPolicy, Format, PolicySet, compile_policy};
use agentnexus_store::{Actor, PolicyChange, PolicySource, Store, Tenant};

fn format_of(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    }
}

fn is_test_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.ends_with("_test"))
}

fn is_policy_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads and compiles a file; problems are printed as `FILE:LINE:COL: …`.
fn load(path: &Path) -> Result<(String, CompiledPolicy), ()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Err(());
        }
    };
    match compile_policy(&text, format_of(path)) {
        Ok(p) => Ok((text, p)),
        Err(invalid) => {
            for p in invalid.0 {
                match p.position {
                    Some(pos) => eprint!("{}:{}:{}: ", path.display(), pos.line, pos.column),
                    None => eprint!("{}: ", path.display()),
                }
                let rule = p.rule.map(|r| format!("rule `{r}`: ")).unwrap_or_default();
                let field = p.field.map(|f| format!("{f}: ")).unwrap_or_default();
                eprintln!("{rule}{field}{}", p.message);
            }
            Err(())
        }
    }
}

pub fn lint(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in files {
        match load(path) {
            Ok((_, p)) => println!(
                "ok {} ({}, {} rules)",
                path.display(),
                p.name(),
                p.rules().len()
            ),
            Err(()) => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks every file first, then stores them all in one transaction: all or nothing.
pub async fn apply(
    store: &Store,
    tenant: &Tenant,
    files: &[PathBuf],
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let mut loaded = Vec::new();
    for path in files {
        match load(path) {
            Ok(l) => loaded.push((path, l)),
            Err(()) => {
                eprintln!("nothing applied");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let mut empty = false;
    for (path, (text, policy)) in &loaded {
        for e in store.empty_stages(tenant, &policy.document).await? {
            let at = agentnexus_engine::locate_rule(text, &e.rule)
                .map(|p| format!("{}:{}:", p.line, p.column))
                .unwrap_or_default();
            eprintln!(
                "{}:{at} rule `{}`: stage `{}` reaches nobody: no member holds any of its roles",
                path.display(),
                e.rule,
                e.name
            );
            empty = true;
        }
    }
    if empty {
        eprintln!("nothing applied");
        return Ok(ExitCode::FAILURE);
    }
    let now = chrono::Utc::now();
    let changes = loaded
        .iter()
        .map(|(path, (text, policy))| PolicyChange {
            name: policy.name(),
            document: text,
            format: format_of(path).as_str(),
            enabled: policy.document.enabled,
            actor: Actor::Cli,
            source: PolicySource::Cli,
            now,
        })
        .collect();
    for (v, changed) in store.put_policies(tenant, changes).await? {
        if changed {
            println!("applied {} version {}", v.name, v.version);
        } else {
            println!("unchanged {} (version {})", v.name, v.version);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_in(&path)?);
        } else if is_policy_file(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every test file in `dir` against every policy in `dir`, like `opa test`.
pub fn test(dir: &Path) -> ExitCode {
    let files = match files_in(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let (tests, policies): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| is_test_file(p));
    let mut compiled = Vec::new();
    for path in &policies {
        match load(path) {
            Ok((_, p)) => compiled.push(Arc::new(p)),
            Err(()) => return ExitCode::FAILURE,
        }
    }
    if tests.is_empty() {
        eprintln!("no *_test.yaml files in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let set = PolicySet::new(compiled);
    let (mut passed, mut failed) = (0, 0);
    for path in &tests {
        let file = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| TestFile::parse(&t))
        {
            Ok(f) => f,
            Err(e) => {
                println!("FAIL {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        for case in &file.tests {
            match run_case(&set, case) {
                Ok(()) => {
                    passed += 1;
                    println!("PASS {}: {}", path.display(), case.name);
                }
                Err(why) => {
                    failed += 1;
                    println!("FAIL {}: {}: {why}", path.display(), case.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
