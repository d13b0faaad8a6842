//! Policy files on disk: `policy apply`, `policy lint` and `policy test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentnexus_app::policies::PolicyText;
use agentnexus_app::{Admin, App, Error};
use agentnexus_engine::testing::{TestFile, run_case};
use agentnexus_engine::{CompiledPolicy, Format, PolicySet, Problem, compile_policy};

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
            print_problems(path, &invalid.0);
            Err(())
        }
    }
}

/// Problems as `FILE:LINE:COL: rule `r`: field: message`, one a line.
fn print_problems(path: &Path, problems: &[Problem]) {
    for p in problems {
        match p.position {
            Some(pos) => eprint!("{}:{}:{}: ", path.display(), pos.line, pos.column),
            None => eprint!("{}: ", path.display()),
        }
        let rule = p
            .rule
            .as_ref()
            .map(|r| format!("rule `{r}`: "))
            .unwrap_or_default();
        let field = p
            .field
            .as_ref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        eprintln!("{rule}{field}{}", p.message);
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

/// Checks every file first (each compiled, and against the workspace), then stores them all
/// in one transaction: all or nothing.
pub async fn apply(app: &App, admin: &Admin, files: &[PathBuf]) -> Result<ExitCode, Error> {
    let mut docs = Vec::new();
    for path in files {
        match load(path) {
            Ok((text, _)) => docs.push(PolicyText {
                text,
                format: format_of(path),
            }),
            Err(()) => {
                eprintln!("nothing applied");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let mut refused = false;
    for (path, doc) in files.iter().zip(&docs) {
        match app.check_policy(admin, doc).await {
            Ok(_) => {}
            Err(Error::Invalid { problems, .. }) => {
                print_problems(path, &problems);
                refused = true;
            }
            Err(e) => return Err(e),
        }
    }
    if refused {
        eprintln!("nothing applied");
        return Ok(ExitCode::FAILURE);
    }
    for (v, changed) in app.apply_policies(admin, &docs).await? {
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

/// Runs every test file in `dir` against every policy in `dir`, like `opa test`, and says so
/// as `cargo test` does: a line per case, the failures again, the totals.
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
    // Read every file first, so the count comes first, as `cargo test` prints it.
    let files: Vec<(String, Result<TestFile, String>)> = tests
        .iter()
        .map(|path| {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| TestFile::parse(&t));
            (path.display().to_string(), parsed)
        })
        .collect();
    let count: usize = files
        .iter()
        .map(|(_, f)| f.as_ref().map_or(1, |f| f.tests.len()))
        .sum();
    println!("running {count} test{}", if count == 1 { "" } else { "s" });
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for (path, file) in &files {
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                println!("test {path} ... FAILED");
                failures.push(format!("{path}: {e}"));
                failed += 1;
                continue;
            }
        };
        for case in &file.tests {
            match run_case(&set, case) {
                Ok(()) => {
                    passed += 1;
                    println!("test {path} :: {} ... ok", case.name);
                }
                Err(why) => {
                    failed += 1;
                    println!("test {path} :: {} ... FAILED", case.name);
                    failures.push(format!("{path} :: {}: {why}", case.name));
                }
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for f in &failures {
            println!("    {f}");
        }
    }
    let verdict = if failed > 0 { "FAILED" } else { "ok" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
