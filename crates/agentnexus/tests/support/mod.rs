//! What the binary's tests share: starting `agentnexus serve` on a test database, its admin
//! key, REST calls, scratch directories.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentnexus_testkit::TestDatabase;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_agentnexus");

/// The binary run on the test database with `args`.
pub fn cli(db: &TestDatabase, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AGENTNEXUS_DATABASE_URL", &db.url)
        .output()
        .expect("the binary runs")
}

/// A policy denying amounts over 100 and allowing the rest.
pub const GATE: &str = "name: gate\nrules:\n  - id: big\n    when: amount_cents > 100\n    effect: deny\n    reason: too big\n  - id: rest\n    effect: allow\n";

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

pub fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("anx-cli-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub stdout: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `agentnexus serve` and waits for /healthz.
pub fn serve(db: &TestDatabase, dir: &Path) -> Server {
    serve_with(db, dir, &[])
}

/// The lines a child writes to `out`, as they come, read on a thread of their own.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `agentnexus serve` with `env` and waits until it serves. Its log is `serve.log` in
/// `dir` (read it when a test fails). A port picked free can be taken by another test's server
/// before this one binds it, and a connection would then reach the wrong server: the server
/// is ours once its log says it is serving, and a start that lost its port is tried again.
pub fn serve_with(db: &TestDatabase, dir: &Path, env: &[(&str, &str)]) -> Server {
    let log_path = dir.join("serve.log");
    let mut printed = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir)
            .envs(env.iter().copied())
            .env("AGENTNEXUS_DATABASE_URL", &db.url)
            .env("AGENTNEXUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("AGENTNEXUS_BOOTSTRAP_EMAIL", "boss@example.com")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // Bootstrap output is printed before the listener is bound; a store that was not
        // empty (a second try) prints nothing.
        let rx = lines_of(child.stdout.take().unwrap());
        let start = Instant::now();
        let serving = loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("AgentNexus is serving") {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                assert!(log.contains("cannot listen"), "serve exited:\n{log}");
                break false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        printed.extend(std::iter::from_fn(|| {
            rx.recv_timeout(Duration::from_millis(200)).ok()
        }));
        if serving {
            let url = format!("http://127.0.0.1:{port}");
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Server {
                child,
                url,
                stdout: printed,
            };
        }
    }
    panic!("serve found no free port in 5 tries");
}

/// The admin key a first start prints.
pub fn admin_key(server: &Server) -> String {
    server
        .stdout
        .iter()
        .find_map(|l| l.trim().strip_prefix("admin key: "))
        .expect("the admin key is printed")
        .to_owned()
}

pub fn terminate(server: &mut Server) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A REST call as the admin, answering the body.
pub async fn rest(
    server: &Server,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/yaml")
            .body(body.to_owned());
    }
    let r = request.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}
