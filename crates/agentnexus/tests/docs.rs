//! The documentation, run: the README's walkthrough, every command and snippet in `docs/`, and
//! the `examples/` folder, each against a fresh server on both stores.

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentnexus_testkit::TestDatabase;
use agentnexus_testkit::both_backends;
use agentnexus_testkit::openai::FakeResponses;
use agentnexus_testkit::{Receiver, SmtpSink};
use serde_json::{Value, json};
use support::*;

/// The repository's `examples/` folder.
fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

// Every example runs as its README says: the policy's tests pass, the curl and Python clients
// get their decisions from a running server, and the receiver verifies a signed test event.
both_backends!(the_examples_run, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    let ex = examples();
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(ex.join("policies"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("4 passed"), "{}", stdout(&out));

    let mut server = serve_with(&db, &dir, &[("AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE", "1")]);
    let key = admin_key(&server);
    let policy = ex.join("policies/refunds.yaml").display().to_string();
    let out = cli(&db, &["policy", "apply", "--workspace", "default", &policy]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The server picks up the CLI's change within its refresh interval.
    let start = Instant::now();
    let curl = loop {
        let out = Command::new("bash")
            .arg(ex.join("curl/evaluate.sh"))
            .arg("1200")
            .env("AGENTNEXUS_URL", &server.url)
            .env("AGENTNEXUS_KEY", &key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let answer: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        if answer["decision"] == "allow" || start.elapsed() > Duration::from_secs(15) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(curl["decision"], "allow", "{curl}");
    let out = Command::new("python3")
        .arg(ex.join("python/evaluate.py"))
        .env("AGENTNEXUS_URL", &server.url)
        .env("AGENTNEXUS_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("stripe.refund: go ahead (Small refunds are fine)"),
        "{said}"
    );
    assert!(
        said.contains("db.delete: do not act, denied (Production data is never deleted by agents)"),
        "{said}"
    );
    assert!(
        said.contains("stripe.refund: waiting for a human, evaluation ev_"),
        "{said}"
    );

    // The receiver: a signed test event is verified and printed.
    let secret = rest(
        &server,
        &key,
        reqwest::Method::GET,
        "/api/v1/webhooks/secret",
        None,
    )
    .await;
    let port = free_port();
    let mut receiver = Command::new("python3")
        .arg(ex.join("webhook-receiver/receiver.py"))
        .env(
            "AGENTNEXUS_WEBHOOK_SECRET",
            secret["signing_secret"].as_str().unwrap(),
        )
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("listening"));
    let sent = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/test", server.url))
        .bearer_auth(&key)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/hook")}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let printed = tokio::task::spawn_blocking(move || lines.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(printed, "test - -");
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert!(terminate(&mut server).success());
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});

/// The text of a markdown section: from its heading to the next `## ` heading.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("{heading}"));
    let rest = &markdown[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The `"key": value` pairs of a documented answer a real answer must hold: scalar values
/// written out in full, leaving out what differs on every run (ids, times, hashes of the chain).
fn documented_pairs(expected: &str) -> Vec<String> {
    const VOLATILE: [&str; 18] = [
        "at",
        "first_seen",
        "last_seen",
        "evaluation_id",
        "created_at",
        "updated_at",
        "occurred_at",
        "started_at",
        "expires_at",
        "decided_at",
        "hash",
        "prev_hash",
        "head_hash",
        "author",
        "actor",
        "workspace_id",
        "events",
        "seq",
    ];
    let mut pairs = Vec::new();
    let mut rest = expected;
    while let Some(at) = rest.find('"') {
        rest = &rest[at + 1..];
        let Some(end) = rest.find('"') else { break };
        let key = &rest[..end];
        let after = rest[end + 1..].trim_start();
        if let Some(value) = after.strip_prefix(':').map(str::trim_start) {
            let scalar = if let Some(s) = value.strip_prefix('"') {
                s.find('"').map(|e| format!("\"{}\"", &s[..e]))
            } else {
                let v: String = value
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                    .collect();
                (!v.is_empty()).then_some(v)
            };
            // A value naming an id (an evaluation's in a message text) differs on every run.
            let names_an_id = |v: &str| {
                [
                    "ev_", "key_", "msg_", "apr_", "ws_", "mem_", "anx_", "whsec_",
                ]
                .iter()
                .any(|p| v.contains(p))
            };
            if let Some(v) = scalar
                && !v.contains('…')
                && !names_an_id(&v)
                && !VOLATILE.contains(&key)
                && !key.ends_with("_at")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                pairs.push(format!("\"{key}\":{v}"));
            }
        }
        rest = &rest[end + 1..];
    }
    pairs
}

// The README's walkthrough, run as written against a fresh server (its URL and the binary put
// in for `127.0.0.1:8080` and `cargo run`, the printed admin key for `anx_…`): every command
// succeeds, and every answer holds the documented fields (decisions, statuses, reasons,
// proposal hashes, stages), so the README cannot drift from the product.
both_backends!(the_readme_walkthrough_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let key = admin_key(&server);
    let mut reader = Reader::new(&server, &db, &key);
    reader.placeholder("anx_…", &key);
    let readme = page("README.md");
    let walkthrough = section(&readme, "## A two-minute walkthrough");
    let ran = reader.run("README.md", walkthrough, |_, _| false);
    assert_eq!(ran, 9);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

/// A fenced block of a documentation page.
struct Block {
    lang: String,
    /// `file=PATH` after the language: the block is that file, written before what follows.
    file: Option<String>,
    text: String,
    /// Only blank lines between this block and the one before: it shows that one's answer.
    adjacent: bool,
    /// Its first line in the page, for messages.
    line: usize,
}

impl Block {
    /// A `text` block of `$ COMMAND` lines, each followed by what it prints.
    fn is_transcript(&self) -> bool {
        self.lang == "text" && self.text.starts_with("$ ")
    }
}

/// Every fenced block of `markdown`, indented ones (in list items) included, in order.
fn page_blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut only_blank_since_last = false;
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            if !line.trim().is_empty() {
                only_blank_since_last = false;
            }
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or_default().to_owned();
        let file = words
            .find_map(|w| w.strip_prefix("file="))
            .map(str::to_owned);
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            text.push_str(l.get(indent..).unwrap_or_else(|| l.trim_start()));
            text.push('\n');
        }
        out.push(Block {
            lang,
            file,
            text,
            adjacent: only_blank_since_last,
            line: i + 1,
        });
        only_blank_since_last = true;
    }
    out
}

/// Whether `line` is `pattern` with each `…` standing for any text.
fn matches_documented(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (n, part) in parts.iter().enumerate() {
        if n + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Where a page's commands run: a server, a scratch directory with `agentnexus` on the `PATH`,
/// the environment a reader has set up, and the documented placeholders with what stands for
/// them here (the server's URL for `http://127.0.0.1:8080` always).
struct Reader {
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
    placeholders: Vec<(String, String)>,
    /// What the last `sh` block printed.
    last_answer: String,
}

impl Reader {
    fn new(server: &Server, db: &TestDatabase, key: &str) -> Reader {
        let dir = scratch();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, dir.join("bin/agentnexus")).unwrap();
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Reader {
            env: vec![
                ("PATH".into(), path),
                ("KEY".into(), key.into()),
                ("AGENTNEXUS_DATABASE_URL".into(), db.url.clone()),
            ],
            placeholders: vec![
                ("http://127.0.0.1:8080".into(), server.url.clone()),
                (
                    "cargo run --release -q -p agentnexus --".into(),
                    "agentnexus".into(),
                ),
            ],
            last_answer: String::new(),
            dir,
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.env.push((name.into(), value.into()));
    }

    fn placeholder(&mut self, documented: &str, here: &str) {
        self.placeholders.push((documented.into(), here.into()));
    }

    fn fill(&self, text: &str) -> String {
        self.placeholders
            .iter()
            .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    }

    /// Runs `script` in one bash, as a reader keeps one terminal: the variables earlier
    /// blocks assigned (`vars`) are kept in a file the next block reads.
    fn bash(&self, script: &str, vars: &[String]) -> Output {
        let keep = if vars.is_empty() {
            String::new()
        } else {
            format!("declare -p {} 2>/dev/null > .vars || true", vars.join(" "))
        };
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\n[ -f .vars ] && . ./.vars\n{}\n{keep}",
                self.fill(script)
            ))
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    /// Writes the `file=` blocks of `markdown` into the directory.
    fn write_files(&self, markdown: &str) {
        for b in page_blocks(markdown) {
            if let Some(file) = &b.file {
                let path = self.dir.join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, &b.text).unwrap();
            }
        }
    }

    /// Runs `program` with `args` in the directory, with the reader's environment.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.exec_with(program, args, &[])
    }

    /// [`Reader::exec`] with some variables set otherwise.
    fn exec_with(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Makes `node_modules` in the directory the given one, for the Node.js samples.
    fn link_node_modules(&self, node_modules: &Path) {
        let link = self.dir.join("node_modules");
        if !link.exists() {
            std::os::unix::fs::symlink(node_modules, &link).unwrap();
        }
    }

    /// Starts `program` as a stdio JSON-RPC server, sends it `messages` one per line, and
    /// answers the first `answers` replies (messages with an `id`), within 60 seconds, by id.
    fn stdio(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        messages: &[Value],
        answers: usize,
    ) -> Vec<Value> {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for m in messages {
            writeln!(stdin, "{m}").unwrap();
        }
        let rx = lines_of(child.stdout.take().unwrap());
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < answers {
            let left = Duration::from_secs(60).saturating_sub(start.elapsed());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("{program} answered {} of {answers}: {got:?}", got.len())
            });
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v.get("id").is_some()
            {
                got.push(v);
            }
        }
        drop(stdin);
        child.kill().unwrap();
        child.wait().unwrap();
        // Requests sent together are answered as they finish, not in the order sent.
        got.sort_by_key(|v| v["id"].as_i64());
        got
    }

    /// Starts `program` with `args` in the directory, its stdout piped.
    fn start(&self, program: &str, args: &[&str]) -> std::process::Child {
        Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Writes the page's `file=` blocks (the files a reader has in their directory), then runs
    /// every command of `markdown` in order: `sh` blocks (which must succeed, and answer every
    /// scalar field of a `json` answer shown right after them) and transcripts (`$ COMMAND`
    /// then exactly what it prints, `…` standing for what differs on every run). Each block is
    /// first shown to `snippet`, which answers whether it ran it itself (and may set up the
    /// reader for it, from what the block before printed); code in any other language that
    /// `snippet` did not run fails the test. Answers how many blocks ran.
    fn run(
        &mut self,
        page: &str,
        markdown: &str,
        mut snippet: impl FnMut(&Block, &mut Reader) -> bool,
    ) -> usize {
        let blocks = page_blocks(markdown);
        let mut vars: Vec<String> = Vec::new();
        for b in blocks.iter().filter(|b| b.lang == "sh") {
            for line in b.text.lines() {
                let line = line.trim_start();
                let line = line.strip_prefix("export ").unwrap_or(line);
                if let Some((name, _)) = line.split_once('=')
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && !vars.iter().any(|v| v == name)
                {
                    vars.push(name.to_owned());
                }
            }
        }
        self.write_files(markdown);
        let mut ran = 0;
        for (i, b) in blocks.iter().enumerate().filter(|(_, b)| b.file.is_none()) {
            let at = format!("{page}:{}", b.line);
            if snippet(b, self) {
                ran += 1;
                continue;
            }
            match b.lang.as_str() {
                "sh" => {
                    let out = self.bash(&b.text, &vars);
                    assert!(
                        out.status.success(),
                        "{at}:\n{}\n{}{}",
                        b.text,
                        stdout(&out),
                        stderr(&out)
                    );
                    let answer = stdout(&out);
                    self.last_answer = answer.clone();
                    if let Some(next) = blocks.get(i + 1).filter(|n| n.adjacent && n.file.is_none())
                    {
                        let flat: String = answer.split_whitespace().collect();
                        if next.lang == "json" || next.lang == "text" && !next.is_transcript() {
                            for pair in documented_pairs(&next.text) {
                                let pair: String = pair.split_whitespace().collect();
                                assert!(
                                    flat.contains(&pair),
                                    "{at} answered without {pair}:\n{answer}"
                                );
                            }
                        }
                        if next.lang == "text" && !next.is_transcript() {
                            // The first word (a verdict such as `ok`) as documented.
                            assert_eq!(
                                answer.split_whitespace().next(),
                                next.text.split_whitespace().next(),
                                "{at}: {answer}"
                            );
                        }
                    }
                }
                "text" if b.is_transcript() => {
                    // Each `$ ` line and the lines up to the next one.
                    let mut chunks: Vec<(&str, String)> = Vec::new();
                    for line in b.text.lines() {
                        match (line.strip_prefix("$ "), chunks.last_mut()) {
                            (Some(command), _) => chunks.push((command, String::new())),
                            (None, Some((_, printed))) => {
                                printed.push_str(line);
                                printed.push('\n');
                            }
                            (None, None) => {}
                        }
                    }
                    for (command, documented) in chunks {
                        let documented = self.fill(&documented);
                        let out = self.bash(&format!("{{ {command}; }} 2>&1 || true"), &vars);
                        let printed = stdout(&out);
                        let (documented, printed): (Vec<&str>, Vec<&str>) =
                            (documented.lines().collect(), printed.lines().collect());
                        assert!(
                            documented.len() == printed.len()
                                && documented
                                    .iter()
                                    .zip(&printed)
                                    .all(|(d, p)| matches_documented(d, p)),
                            "{at}: `{command}` printed\n{}\nnot as documented:\n{}",
                            printed.join("\n"),
                            documented.join("\n")
                        );
                    }
                }
                "python" | "js" | "ts" | "rust" | "sql" => {
                    panic!("{at}: a {} snippet no test runs", b.lang)
                }
                // Data: answers, configuration, documents, formats.
                _ => continue,
            }
            ran += 1;
        }
        ran
    }
}

/// A documentation page's text.
fn page(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(name),
    )
    .unwrap()
}

// docs/policies.md from top to bottom on a fresh workspace: the refused document, put,
// disable, roll back, both simulations, lint, test and apply, each answer as documented.
both_backends!(the_policies_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let ran = reader.run("docs/policies.md", &page("docs/policies.md"), |_, _| false);
    assert_eq!(ran, 11);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

const TWO_STAGES: &str = "name: payouts
rules:
  - id: payout
    when: action == \"payout\"
    effect: require_approval
    approval:
      stages:
        - name: finance
          approvers: [\"alice@example.com\"]
        - name: cfo
          approvers: [\"cfo@example.com\"]
";

// docs/approvals.md as written: members from the CLI, a decision sent as JSON with the link
// from the approver's e-mail (recorded, the evaluation still pending at its first stage, as
// documented), and the outside scheduler's sweep call with the server's CRON_SECRET.
both_backends!(the_approvals_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let sink = SmtpSink::start().await;
    let mut server = serve_with(
        &db,
        &server_dir,
        &[
            ("AGENTNEXUS_SMTP_URL", sink.url.as_str()),
            ("CRON_SECRET", "cron-secret-for-the-docs"),
        ],
    );
    let key = admin_key(&server);
    rest(
        &server,
        &key,
        reqwest::Method::PUT,
        "/api/v1/policies/payouts",
        Some(TWO_STAGES),
    )
    .await;
    let pending: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/evaluate", server.url))
        .bearer_auth(&key)
        .json(&json!({"agent_id": "billing-bot", "action": "payout", "amount_cents": 5000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["status"], "pending", "{pending}");
    let mails = sink.wait_for(1, Duration::from_secs(20)).await;
    let token = mails[0].link_token().expect("the e-mail carries a link");

    let mut reader = Reader::new(&server, &db, &key);
    reader.set("CRON_SECRET", "cron-secret-for-the-docs");
    reader.placeholder("apr_…", &token);
    let ran = reader.run("docs/approvals.md", &page("docs/approvals.md"), |_, _| {
        false
    });
    assert_eq!(ran, 3);
    // What the commands did, seen from the API: Tess is a member with her role, and alice's
    // approval passed the first stage.
    let members = rest(&server, &key, reqwest::Method::GET, "/api/v1/members", None).await;
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["email"] == "tess@example.com" && m["roles"] == json!(["treasury"])),
        "{members}"
    );
    let id = pending["evaluation_id"].as_str().unwrap();
    let ev = rest(
        &server,
        &key,
        reqwest::Method::GET,
        &format!("/api/v1/evaluations/{id}"),
        None,
    )
    .await;
    assert_eq!(ev["decisions"][0]["approver"], "alice@example.com", "{ev}");
    assert_eq!(ev["decisions"][0]["comment"], "checked the invoice", "{ev}");
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

/// The `node_modules` of `ci/docs-npm`: the one `AGENTNEXUS_DOCS_NODE_MODULES` names (what
/// `.ci/run` sets up), or one installed once from its lock file.
fn docs_node_modules() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/docs-npm");
    let dir = format!(
        "agentnexus-docs-npm-{:x}",
        content_hash(&manifest.join("package-lock.json"))
    );
    agentnexus_testkit::tools::node_modules(
        "AGENTNEXUS_DOCS_NODE_MODULES",
        &dir,
        &manifest,
        "typescript",
    )
}

/// A hash of a file's bytes, to name what is installed from it.
fn content_hash(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut hasher);
    hasher.finish()
}

/// A Python with the pinned packages of `ci/REQUIREMENTS` (which must include `check`): the one
/// `env_var` names (what `.ci/run` sets up), or a virtual environment made once.
fn docs_python(env_var: &str, requirements: &str, check: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ci")
        .join(requirements);
    let venv = format!("agentnexus-{requirements}-{:x}", content_hash(&path));
    let path = path.display().to_string();
    agentnexus_testkit::tools::python(env_var, &venv, check, &["--no-deps", "-r", &path])
}

/// Whether process `pid` itself holds a socket listening on TCP `port` (read from /proc: a
/// port picked free can be taken by another test's listener before the child binds it, and
/// then connecting to it proves nothing).
fn listens(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let local_port = cols.get(1)?.rsplit(':').next()?;
                    (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3)? == &"0A")
                        .then(|| format!("socket:[{}]", cols.get(9).unwrap_or(&"")))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| inodes.iter().any(|i| target.to_str() == Some(i)))
    })
}

/// Starts a receiver by `start(port)` on a free port and waits until it listens there itself;
/// when it could not (another listener took the port first), tries another port.
fn start_listening(start: impl Fn(u16) -> std::process::Child) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = start(port);
        let since = Instant::now();
        loop {
            if listens(child.id(), port) {
                return (child, port);
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "the receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("the receiver could not listen on any of five free ports");
}

/// The first line `child` prints, within 20 seconds.
fn first_line(child: &mut std::process::Child) -> String {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(out).lines().next() {
            let _ = tx.send(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the receiver printed an event")
}

// docs/webhooks.md as written, against real deliveries: the page's Python and Node.js
// receivers (with its verifiers) each get a signed event from the server and print it; the
// evaluate, secret and rotation calls answer as documented; the verifiers accept the Standard
// Webhooks test vector and refuse it altered; the `standardwebhooks` samples accept a real
// delivery and refuse a tampered one; the Rust sample is `examples/webhook-verifier-rust`,
// which the workspace builds and tests.
both_backends!(the_webhooks_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve_with(
        &db,
        &server_dir,
        &[("AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE", "true")],
    );
    let key = admin_key(&server);
    let secret = rest(
        &server,
        &key,
        reqwest::Method::GET,
        "/api/v1/webhooks/secret",
        None,
    )
    .await["signing_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let markdown = page("docs/webhooks.md");
    let blocks = page_blocks(&markdown);
    let mut reader = Reader::new(&server, &db, &key);
    reader.set("AGENTNEXUS_WEBHOOK_SECRET", &secret);
    reader.write_files(&markdown);
    let verifier = std::fs::read_to_string(reader.dir.join("verify_webhook.py")).unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/webhook-receiver/verify_webhook.py"),
    )
    .unwrap();
    assert!(
        example.ends_with(&verifier),
        "examples/webhook-receiver/verify_webhook.py differs from docs/webhooks.md"
    );

    // The receivers, on free ports instead of 8000.
    let receiver = |lang: &str, marker: &str| {
        blocks
            .iter()
            .find(|b| b.lang == lang && b.text.contains(marker))
            .unwrap()
            .text
            .clone()
    };
    let (mut python, py_port) = start_listening(|port| {
        std::fs::write(
            reader.dir.join("receiver.py"),
            receiver("python", "HTTPServer(").replace("8000", &port.to_string()),
        )
        .unwrap();
        reader.start("python3", &["-u", "receiver.py"])
    });
    let (mut node, js_port) = start_listening(|port| {
        std::fs::write(
            reader.dir.join("receiver.js"),
            receiver("js", "createServer").replace("8000", &port.to_string()),
        )
        .unwrap();
        reader.start("node", &["receiver.js"])
    });
    reader.placeholder(
        "https://integrator.example.com/hooks/agentnexus",
        &format!("http://127.0.0.1:{py_port}/hooks/agentnexus"),
    );

    // A real delivery kept for the `standardwebhooks` sample.
    let capture = Receiver::start().await;
    for url in [format!("http://127.0.0.1:{js_port}/"), capture.url.clone()] {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/webhooks/test", server.url))
            .bearer_auth(&key)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let delivered = capture.wait_for(1, Duration::from_secs(20)).await;
    let delivery = &delivered[0];
    let headers = json!({
        "webhook-id": delivery.id,
        "webhook-timestamp": delivery.timestamp,
        "webhook-signature": delivery.signature,
        "content-type": "application/json",
    });

    let python_bin = docs_python(
        "AGENTNEXUS_DOCS_PYTHON",
        "requirements-docs.txt",
        "import standardwebhooks",
    );
    let ran = reader.run("docs/webhooks.md", &markdown, |b, reader| {
        match b.lang.as_str() {
            "python" if b.text.contains("HTTPServer(") => true,
            "js" if b.text.contains("createServer") => true,
            "python" | "js" => {
                let (program, flag) = match b.lang.as_str() {
                    "js" => ("node", "-e"),
                    _ => (python_bin.as_str(), "-c"),
                };
                let code = if b.text.contains("def handle(") {
                    // The sample's handler, given the real delivery and then a tampered one.
                    format!(
                        "{}\nimport json\nbody = bytes.fromhex({:?})\nheaders = json.loads({:?})\n\
                     print(handle(body, headers), handle(body + b' ', headers))",
                        b.text,
                        delivery
                            .raw
                            .iter()
                            .map(|c| format!("{c:02x}"))
                            .collect::<String>(),
                        headers.to_string()
                    )
                } else {
                    b.text.clone()
                };
                let out = reader.exec(program, &[flag, &code]);
                assert!(out.status.success(), "{}\n{}", b.text, stderr(&out));
                if b.text.contains("def handle(") {
                    assert_eq!(stdout(&out).trim(), "204 401");
                } else if b.text.contains("2432232314") && !b.text.contains("wh.sign") {
                    assert_eq!(stdout(&out).trim(), "ok");
                    // Altered, the vector is refused.
                    let out =
                        reader.exec(program, &[flag, &code.replace("2432232314", "2432232315")]);
                    assert!(!out.status.success());
                    assert!(
                        stderr(&out).contains("no matching signature"),
                        "{}",
                        stderr(&out)
                    );
                }
                true
            }
            "rust" => {
                let example = std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../../examples/webhook-verifier-rust/src/lib.rs"),
                )
                .unwrap();
                assert!(
                    example == b.text,
                    "examples/webhook-verifier-rust differs from the page"
                );
                true
            }
            _ => false,
        }
    });
    assert_eq!(ran, 10);
    let toml = blocks.iter().find(|b| b.lang == "toml").unwrap();
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/webhook-verifier-rust/Cargo.toml"),
    )
    .unwrap();
    assert!(
        manifest.ends_with(&toml.text),
        "examples/webhook-verifier-rust/Cargo.toml"
    );

    // Each receiver verified its delivery and printed it.
    let printed = first_line(&mut python);
    assert!(
        printed.starts_with("terminal_outcome ev_") && printed.ends_with(" denied"),
        "{printed}"
    );
    assert_eq!(first_line(&mut node), "test undefined undefined");
    for mut child in [python, node] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/operations.md as written: migrate (its URL with the password hidden), the key-making
// commands, lost-key recovery (the SQL, after which the server makes a new signing secret),
// creating a key, the CLI's verification, and the outside checks: the chain verifier agrees
// with the server's own verification and names an altered event; the proposal-hash sketch
// prints the hash the page (and the README's evaluation) shows.
both_backends!(the_operations_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let key = admin_key(&server);
    rest(
        &server,
        &key,
        reqwest::Method::PUT,
        "/api/v1/policies/gate",
        Some(GATE),
    )
    .await;
    for amount in [50, 500] {
        reqwest::Client::new()
            .post(format!("{}/api/v1/evaluate", server.url))
            .bearer_auth(&key)
            .json(&json!({"agent_id": "a", "action": "pay", "amount_cents": amount}))
            .send()
            .await
            .unwrap();
    }
    let secret = |reader: &Reader| {
        let out = reader.bash(
            "curl -sf http://127.0.0.1:8080/api/v1/webhooks/secret -H \"Authorization: Bearer $KEY\"",
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()["signing_secret"].clone()
    };
    let mut reader = Reader::new(&server, &db, &key);
    reader.placeholder("postgres://agentnexus:…@db.internal/agentnexus", &db.url);
    // What `migrate` prints for the test's store: a SQLite URL is followed by its file.
    let printed = match db.url.strip_prefix("sqlite://") {
        Some(file) => format!("{} ({file})", db.url),
        None => db.url.clone(),
    };
    reader.placeholder("postgres://agentnexus:***@db.internal/agentnexus", &printed);
    let before = secret(&reader);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let markdown = page("docs/operations.md");
    let ran = reader.run("docs/operations.md", &markdown, |b, reader| {
        match b.lang.as_str() {
            "sql" => {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(sqlx::query(&b.text).execute(&pool))
                        .unwrap()
                });
                // The server makes a new secret once the old one is gone.
                let after = secret(reader);
                assert!(after.is_string() && after != before, "{before} {after}");
                true
            }
            "python" if b.text.contains("def proposal_hash") => {
                let documented = b.text.lines().last().unwrap().trim_start_matches("# ");
                let out = reader.exec("python3", &["-c", &b.text]);
                assert!(out.status.success(), "{}", stderr(&out));
                assert_eq!(stdout(&out).trim(), documented);
                true
            }
            _ => false,
        }
    });
    assert_eq!(ran, 8);

    // The outside verifier agrees with the server's own verification …
    let audit = page_blocks(&markdown);
    let command = &audit
        .iter()
        .find(|b| b.lang == "sh" && b.text.contains("verify.py"))
        .unwrap()
        .text;
    let out = reader.bash(command, &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let own = rest(
        &server,
        &key,
        reqwest::Method::GET,
        "/api/v1/audit/verify",
        None,
    )
    .await;
    let printed = stdout(&out);
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(words[0], "ok");
    // Events appended since (the key made above, e-mail attempts) are in the server's count;
    // the chain the sketch verified is a prefix of it.
    assert!(words[1].parse::<i64>().unwrap() <= own["events"].as_i64().unwrap());
    // … and names an event altered on the way.
    let altered = reader.bash(
        "curl -s 'http://127.0.0.1:8080/api/v1/audit?limit=1000' -H \"Authorization: Bearer $KEY\" \
         | sed 's/\"amount_cents\":500/\"amount_cents\":5/' | python3 verify.py",
        &[],
    );
    assert!(!altered.status.success());
    assert!(
        stderr(&altered).contains("broken at seq"),
        "{}",
        stderr(&altered)
    );
    pool.close().await;
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

/// Approves every evaluation the e-mails of `sink` ask about, as each approver would: opens
/// the link's JSON decision endpoint and, on a critical tier, sends the code the next e-mail
/// brings. Runs until the test ends.
fn approve_everything(sink: std::sync::Arc<SmtpSink>, url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut handled = std::collections::HashSet::new();
        loop {
            let mails = sink.mails();
            let next = mails
                .iter()
                .enumerate()
                .find(|(i, m)| !handled.contains(i) && m.link_token().is_some());
            let Some((i, mail)) = next else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            handled.insert(i);
            let link = format!("{url}/api/v1/approvals/{}", mail.link_token().unwrap());
            let text = mail.text();
            // The evaluation the e-mail is about: its code comes in an e-mail naming it.
            let evaluation = text[text.find("ev_").unwrap()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>();
            let answer: Value = client
                .post(&link)
                .json(&json!({"decision": "approve"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if answer["status"] != "otp_required" {
                continue;
            }
            let code = loop {
                let code = sink.mails().iter().enumerate().find_map(|(j, m)| {
                    (!handled.contains(&j)
                        && m.link_token().is_none()
                        && m.text().contains(&evaluation))
                    .then(|| (j, m.code()))
                });
                if let Some((j, Some(code))) = code {
                    handled.insert(j);
                    break code;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            client
                .post(&link)
                .json(&json!({"decision": "approve", "otp": code}))
                .send()
                .await
                .unwrap();
        }
    })
}

// docs/mcp.md as written, after the README's policy: the curl calls (the tool list, an
// evaluate call with trace metadata, its documented answer's fields, the proposal hash
// included, and the trace read back from it), and the Python and TypeScript SDK clients, each
// following its pending evaluation until the approvers (this test, from their e-mails)
// approve it, and the Python one refused with a wrong key.
both_backends!(the_mcp_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let sink = std::sync::Arc::new(SmtpSink::start().await);
    let mut server = serve_with(
        &db,
        &server_dir,
        &[("AGENTNEXUS_SMTP_URL", sink.url.as_str())],
    );
    let approver = approve_everything(sink.clone(), server.url.clone());
    let key = admin_key(&server);
    let mut reader = Reader::new(&server, &db, &key);
    reader.set("AGENTNEXUS_KEY", &key);
    reader.placeholder("anx_…", &key);
    reader.set("AGENTNEXUS_MCP_URL", &format!("{}/api/mcp", server.url));
    let readme = page("README.md");
    let policy = page_blocks(&readme)
        .into_iter()
        .find(|b| b.lang == "sh" && b.text.contains("payments.yaml"))
        .unwrap();
    let out = reader.bash(&policy.text, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let python = agentnexus_testkit::tools::python(
        "AGENTNEXUS_MCP_PYTHON",
        "agentnexus-mcp-venv-2.3.0",
        "import mcp",
        &["mcp==2.3.0"],
    );
    let node_modules = docs_node_modules();
    let agents_python = docs_python(
        "AGENTNEXUS_DOCS_PYTHON",
        "requirements-docs.txt",
        "import agents, standardwebhooks",
    );
    let langchain_python = docs_python(
        "AGENTNEXUS_DOCS_LANGCHAIN_PYTHON",
        "requirements-docs-langchain.txt",
        "import langchain_mcp_adapters",
    );
    // The model the Agents SDK sample asks: it calls evaluate for a $12 refund.
    let model = FakeResponses::start(
        "evaluate",
        json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1200}),
    )
    .await;
    let ran = reader.run("docs/mcp.md", &page("docs/mcp.md"), |b, reader| {
        match b.lang.as_str() {
            "python" if b.text.contains("from agents import") => {
                std::fs::write(reader.dir.join("agent.py"), reader.fill(&b.text)).unwrap();
                let out = tokio::task::block_in_place(|| {
                    reader.exec_with(
                        &agents_python,
                        &["agent.py"],
                        &[
                            ("OPENAI_API_KEY", "sk-test"),
                            ("OPENAI_BASE_URL", &model.base_url),
                            ("OPENAI_AGENTS_DISABLE_TRACING", "1"),
                        ],
                    )
                });
                assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
                // The agent called evaluate through the gateway, and the model saw its answer.
                assert_eq!(
                    stdout(&out),
                    "evaluate answered: allowed\n",
                    "{}",
                    stderr(&out)
                );
                let asked = model.requests();
                assert_eq!(asked.len(), 2, "{asked:?}");
                let tools: Vec<&str> = asked[0]["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["name"].as_str())
                    .collect();
                assert_eq!(tools, ["evaluate", "get_evaluation"]);
                true
            }
            "python" if b.text.contains("langchain_mcp_adapters") => {
                std::fs::write(reader.dir.join("tools.py"), reader.fill(&b.text)).unwrap();
                let out =
                    tokio::task::block_in_place(|| reader.exec(&langchain_python, &["tools.py"]));
                assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
                let printed = stdout(&out);
                assert!(printed.contains("'decision': 'allow'"), "{printed}");
                assert!(printed.contains("'status': 'allowed'"), "{printed}");
                true
            }
            "sh" if b.text.contains("$ID") => {
                // The evaluation the call before made is the `$ID` this one reads back.
                let answer: Value = serde_json::from_str(reader.last_answer.trim()).unwrap();
                let id = answer["result"]["structuredContent"]["evaluation_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                reader.set("ID", &id);
                false
            }
            "python" if b.text.contains("from mcp import") => {
                std::fs::write(reader.dir.join("client.py"), &b.text).unwrap();
                let out = tokio::task::block_in_place(|| reader.exec(&python, &["client.py"]));
                assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
                assert!(
                    stdout(&out).contains("Approval needed:"),
                    "{}",
                    stdout(&out)
                );
                assert!(stdout(&out).ends_with("go ahead\n"), "{}", stdout(&out));
                let out =
                    reader.exec_with(&python, &["client.py"], &[("AGENTNEXUS_KEY", "anx_wrong")]);
                assert!(!out.status.success());
                assert!(
                    stderr(&out).contains("refused: Invalid or missing API key"),
                    "{}",
                    stderr(&out)
                );
                true
            }
            "json" if b.text.contains("mcpServers") => {
                // Claude Desktop's configuration, started as Claude Desktop starts it and
                // driven over stdio as it does: the handshake, the tool list, a call.
                reader.link_node_modules(&node_modules);
                let config: Value = serde_json::from_str(&reader.fill(&b.text)).unwrap();
                let server = &config["mcpServers"]["agentnexus"];
                let args: Vec<&str> = server["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let auth_dir = reader.dir.join("mcp-auth").display().to_string();
                let mut env: Vec<(&str, &str)> = server["env"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                    .collect();
                // mcp-remote keeps its state here rather than in ~/.mcp-auth.
                env.push(("MCP_REMOTE_CONFIG_DIR", &auth_dir));
                let answers =
                    tokio::task::block_in_place(|| {
                        reader.stdio(server["command"].as_str().unwrap(), &args, &env, &[
                        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                            "protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "claude-ai", "version": "0.1.0"}}}),
                        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
                        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                            "name": "evaluate",
                            "arguments": {"agent_id": "desktop", "action": "db.delete",
                                          "context": {"environment": "production"}}}}),
                    ], 3)
                    });
                assert_eq!(answers[0]["result"]["serverInfo"]["name"], "agentnexus");
                assert_eq!(
                    answers[1]["result"]["tools"][0]["name"], "evaluate",
                    "{answers:?}"
                );
                let decided = &answers[2]["result"]["structuredContent"];
                assert_eq!(decided["status"], "denied", "{decided}");
                assert_eq!(
                    decided["reason"],
                    "Production data is never deleted by agents"
                );
                true
            }
            "ts" => {
                std::fs::write(reader.dir.join("client.mts"), reader.fill(&b.text)).unwrap();
                reader.link_node_modules(&node_modules);
                // Type-checked as strictly as the page says, then run as compiled.
                let tsc = node_modules
                    .join("typescript/bin/tsc")
                    .display()
                    .to_string();
                let out = reader.exec(
                    "node",
                    &[
                        &tsc,
                        "--strict",
                        "--module",
                        "nodenext",
                        "--target",
                        "es2022",
                        "--types",
                        "node",
                        "client.mts",
                    ],
                );
                assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
                let out = tokio::task::block_in_place(|| reader.exec("node", &["client.mjs"]));
                assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
                assert_eq!(stdout(&out), "go ahead\n");
                true
            }
            _ => false,
        }
    });
    assert_eq!(ran, 8);
    approver.abort();
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/governance.md as written: a conforming receipt for an allowed refund, then a second
// report refused.
both_backends!(the_governance_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let ran = reader.run("docs/governance.md", &page("docs/governance.md"), |_, _| {
        false
    });
    assert_eq!(ran, 3);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/agents.md as written: the inventory, a description, suspending an agent (its waiting
// evaluation ended, its next proposal denied), resuming it, and the kill switch.
both_backends!(the_agents_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let ran = reader.run("docs/agents.md", &page("docs/agents.md"), |_, _| false);
    assert_eq!(ran, 7);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/analytics.md as written: a governance report, then cost reports by agent and by action.
both_backends!(the_analytics_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let ran = reader.run("docs/analytics.md", &page("docs/analytics.md"), |_, _| {
        false
    });
    assert_eq!(ran, 3);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/compliance.md as written: a bundle fetched, unpacked, verified against the published key,
// then a file changed and the change found.
both_backends!(the_compliance_page_runs, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let mut server = serve(&db, &server_dir);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let ran = reader.run("docs/compliance.md", &page("docs/compliance.md"), |_, _| {
        false
    });
    assert_eq!(ran, 3);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

// docs/policy-as-code.md as written, against a stand-in for GitHub: the repository's tests, a
// push (the page's `git` commands become commits on the stand-in and, once the page has set up
// the webhook, GitHub's signed delivery to it), binding, syncing, versions, and a failing push
// that leaves the active version in force.
both_backends!(the_policy_as_code_page_runs, |backend| async move {
    use agentnexus_testkit::github::{FakeGitHub, signature};
    const TOKEN: &str = "github_pat_11AGENTNEXUSDOCS0example_readsThePolicyRepository";
    let gh = FakeGitHub::start("acme/policies", TOKEN).await;
    let db = TestDatabase::new(backend).await;
    let server_dir = scratch();
    let env = [
        ("AGENTNEXUS_GITHUB_API_URL", gh.api_url.as_str()),
        ("AGENTNEXUS_GITHUB_POLL_SECS", "0"),
    ];
    let mut server = serve_with(&db, &server_dir, &env);
    let mut reader = Reader::new(&server, &db, &admin_key(&server));
    let mut webhook: Option<(String, String)> = None;
    let mut pushes = 0;
    let ran = reader.run(
        "docs/policy-as-code.md",
        &page("docs/policy-as-code.md"),
        |b, reader| {
            if let Ok(answer) = serde_json::from_str::<Value>(&reader.last_answer)
                && let (Some(url), Some(secret)) = (
                    answer["webhook_url"].as_str(),
                    answer["webhook_secret"].as_str(),
                )
            {
                webhook = Some((url.to_owned(), secret.to_owned()));
            }
            if b.lang != "sh" || !b.text.contains("git push") {
                return false;
            }
            // The block as written, git doing nothing; then its commit on GitHub.
            let out = reader.bash(&format!("git() {{ :; }}\n{}", b.text), &[]);
            assert!(out.status.success(), "{}{}", b.text, stderr(&out));
            pushes += 1;
            let read = |name: &str| std::fs::read_to_string(reader.dir.join(name)).unwrap();
            let (policy, tests) = (
                read("policies/payments.yaml"),
                read("policies/payments_test.yaml"),
            );
            gh.commit(
                "main",
                "Alice Doe",
                "alice@acme.test",
                &format!("change {pushes}"),
                &[
                    ("policies/payments.yaml", Some(&policy)),
                    ("policies/payments_test.yaml", Some(&tests)),
                ],
            );
            if let Some((url, secret)) = &webhook {
                let body = gh.push_event("main").to_string();
                let out = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-X",
                        "POST",
                        url,
                    ])
                    .args([
                        "-H",
                        "Content-Type: application/json",
                        "-H",
                        "X-GitHub-Event: push",
                    ])
                    .arg("-H")
                    .arg(format!(
                        "X-Hub-Signature-256: {}",
                        signature(secret, body.as_bytes())
                    ))
                    .args(["--data-binary", &body])
                    .output()
                    .unwrap();
                assert_eq!(stdout(&out), "200", "GitHub's delivery");
            }
            true
        },
    );
    assert_eq!(ran, 11);
    assert_eq!(pushes, 3);
    assert!(terminate(&mut server).success());
    for dir in [&server_dir, &reader.dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
});

/// The pages whose commands and snippets a test above runs, each from top to bottom.
const PAGES_RUN: [&str; 10] = [
    "docs/agents.md",
    "docs/policy-as-code.md",
    "docs/compliance.md",
    "docs/analytics.md",
    "docs/governance.md",
    "docs/policies.md",
    "docs/approvals.md",
    "docs/webhooks.md",
    "docs/operations.md",
    "docs/mcp.md",
];

// A page added to docs/ with a command or a snippet in it, and no test running it, fails here.
#[test]
fn every_page_with_commands_is_run() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    let runnable = ["sh", "python", "js", "ts", "rust", "sql"];
    for name in pages {
        let path = format!("docs/{name}");
        let commands = page_blocks(&page(&path))
            .iter()
            .filter(|b| {
                b.file.is_none() && (runnable.contains(&b.lang.as_str()) || b.is_transcript())
            })
            .count();
        assert!(
            commands == 0 || PAGES_RUN.contains(&path.as_str()),
            "{path} has {commands} commands or snippets and no test runs them"
        );
    }
}
