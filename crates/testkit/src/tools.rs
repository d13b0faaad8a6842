//! The outside programs tests drive (official SDKs, the documentation's snippets' packages),
//! installed once per machine from pinned versions: `.ci/run` makes them and names them in
//! environment variables; without those, the first test to need one makes it under the system
//! temp directory, so `cargo test` alone works on a machine with Python, pip, Node.js and npm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A Python virtual environment: the interpreter `env_var` names, or `venv` under the temp
/// directory, made with `pip install ARGS…` unless `python -c CHECK` already succeeds there.
pub fn python(env_var: &str, venv: &str, check: &str, install: &[&str]) -> String {
    static MADE: Mutex<()> = Mutex::new(());
    if let Ok(p) = std::env::var(env_var) {
        return p;
    }
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(venv);
    let py = dir.join("bin/python").display().to_string();
    let ready = |py: &str| {
        Command::new(py)
            .args(["-c", check])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&py) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "-q"])
                .args(install)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && ready(&py),
            "could not make the Python environment {} (pip install {}); set {env_var}",
            dir.display(),
            install.join(" ")
        );
    }
    py
}

/// A `node_modules` directory: the one `env_var` names, or `dir` under the temp directory,
/// made with `npm ci` from the `package.json` and `package-lock.json` in `manifest` unless
/// `node_modules/CHECK` exists there.
pub fn node_modules(env_var: &str, dir: &str, manifest: &Path, check: &str) -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p).join("node_modules");
    }
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(dir);
    if !dir.join("node_modules").join(check).exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(manifest.join(file), dir.join(file)).unwrap();
        }
        let ok = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not npm ci in {}; set {env_var}", dir.display());
    }
    dir.join("node_modules")
}
