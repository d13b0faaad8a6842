//! The `agentnexus` binary as an operator uses it, on both stores.

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentnexus_testkit::TestDatabase;
use agentnexus_testkit::both_backends;
use serde_json::{Value, json};
use support::*;

both_backends!(workspace_keys_policies_and_audit, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    // Only serve, migrate and workspace create make a store; any other command names the
    // store it looked for and how to point elsewhere, and leaves nothing behind.
    for args in [
        &["audit", "verify"][..],
        &["keys", "list", "--workspace", "default"],
        &["members", "list", "--workspace", "default"],
    ] {
        let out = cli(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let said = stderr(&out);
        match backend {
            agentnexus_testkit::Backend::Sqlite => {
                let file = db.url.trim_start_matches("sqlite://");
                assert!(
                    said.contains(&format!("there is no store at {file}")),
                    "{said}"
                );
                assert!(!Path::new(file).exists(), "{args:?} created {file}");
            }
            agentnexus_testkit::Backend::Postgres => {
                assert!(said.contains("holds no AgentNexus store"), "{said}");
            }
        }
        assert!(said.contains("`agentnexus serve` (or `agentnexus migrate`, or `agentnexus"));
        assert!(said.contains("--database URL or set AGENTNEXUS_DATABASE_URL"));
    }
    let out = cli(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("migrated "), "{}", stdout(&out));
    let out = cli(&db, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "nothing to verify: the store has no workspaces yet"
    );
    let out = cli(
        &db,
        &[
            "workspace",
            "create",
            "acme",
            "--owner-email",
            "o@acme.example",
            "--owner-password",
            "s3cret-pass",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(created["workspace"], "acme");
    assert_eq!(created["owner_email"], "o@acme.example");
    assert!(created["admin_key"].as_str().unwrap().starts_with("anx_"));
    assert!(
        created.get("owner_password").is_none(),
        "a given password is not echoed"
    );
    let again = cli(
        &db,
        &[
            "workspace",
            "create",
            "acme",
            "--owner-email",
            "x@acme.example",
        ],
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));

    let out = cli(
        &db,
        &[
            "keys",
            "create",
            "--workspace",
            "acme",
            "--name",
            "bot",
            "--scope",
            "agent",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out);
    assert_eq!(key.lines().count(), 1);
    assert!(key.trim().starts_with("anx_") && key.trim().len() >= 36);
    let out = cli(
        &db,
        &[
            "keys",
            "create",
            "--workspace",
            "nope",
            "--name",
            "bot",
            "--scope",
            "agent",
        ],
    );
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("no workspace named `nope`"), "{said}");
    assert!(said.contains(&format!("store: {}", db.url)), "{said}");

    // apply is all or nothing.
    let good = write(&dir, "gate.yaml", GATE);
    let bad = write(
        &dir,
        "bad.yaml",
        "name: bad\nrules:\n  - id: r\n    when: amount_cents >\n    effect: deny\n",
    );
    let out = cli(
        &db,
        &["policy", "apply", "--workspace", "acme", &good, &bad],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.yaml:4:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("rule `r`"));
    let out = cli(&db, &["policy", "apply", "--workspace", "acme", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "applied gate version 1");
    let out = cli(&db, &["policy", "apply", "--workspace", "acme", &good]);
    assert_eq!(stdout(&out).trim(), "unchanged gate (version 1)");

    let out = cli(&db, &["audit", "verify", "--workspace", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let parts: Vec<&str> = line.split_whitespace().collect();
    // workspace, member and key at creation, one more key, one policy change.
    assert_eq!(
        (parts[0], parts[1], parts[2].len()),
        ("ok", "5", 64),
        "{line}"
    );

    // Someone edits an event behind the product's back: verify names it and fails.
    let store = agentnexus_store::Store::open(agentnexus_store::StoreConfig::new(&db.url))
        .await
        .unwrap();
    agentnexus_testkit::tamper(
        store.pool(),
        backend,
        "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 4",
    )
    .await;
    store.close().await;
    let out = cli(&db, &["audit", "verify", "--workspace", "acme"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("broken at seq 4"),
        "{}",
        stdout(&out)
    );
    cli(
        &db,
        &[
            "workspace",
            "create",
            "other",
            "--owner-email",
            "o@other.example",
        ],
    );
    let out = cli(&db, &["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one broken workspace fails the run"
    );
    assert!(
        stdout(&out).contains("acme: broken at seq 4"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("other: ok 3 "), "{}", stdout(&out));

    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});

#[test]
fn lint_refuses_what_the_server_refuses_without_crashing() {
    let dir = scratch();
    // 29,000 terms killed `policy lint` while parsing; each is now a refusal naming the rule.
    for terms in [3_000, 30_000] {
        let file = write(
            &dir,
            &format!("chain{terms}.yaml"),
            &format!(
                "name: chain\nrules:\n  - id: long\n    when: {} == 0\n    effect: allow\n",
                vec!["1"; terms].join("+")
            ),
        );
        for command in ["lint", "test"] {
            let target = if command == "lint" {
                file.as_str()
            } else {
                dir.to_str().unwrap()
            };
            let out = Command::new(BIN)
                .args(["policy", command, target])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("rule `long`: when: the expression is"),
                "{command}: {}",
                stderr(&out)
            );
        }
        std::fs::remove_file(&file).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lint_and_test_policy_directories() {
    let dir = scratch();
    let good = write(&dir, "gate.yaml", GATE);
    let out = Command::new(BIN)
        .args(["policy", "lint", &good])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("ok {good} (gate, 2 rules)"));
    let json_policy = write(
        &dir,
        "json.json",
        "{\"name\": \"j\", \"rules\": [{\"id\": \"r\", \"when\": \"nope(\", \"effect\": \"allow\"}]}",
    );
    let out = Command::new(BIN)
        .args(["policy", "lint", &json_policy])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rule `r`: when: does not compile"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&json_policy).unwrap();

    write(
        &dir,
        "gate_test.yaml",
        "tests:\n  - name: small passes\n    proposal: {agent_id: a, action: pay, amount_cents: 5}\n    expect: {decision: allow, rule: rest}\n  - name: big is denied\n    proposal: {agent_id: a, action: pay, amount_cents: 500}\n    expect: {decision: deny, reason: too big}\n",
    );
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("running 2 tests\n")
            && stdout(&out).ends_with("\ntest result: ok. 2 passed; 0 failed\n"),
        "{}",
        stdout(&out)
    );

    write(
        &dir,
        "wrong_test.yaml",
        "tests:\n  - name: expects the wrong thing\n    proposal: {agent_id: a, action: pay, amount_cents: 500}\n    expect: {decision: allow}\n",
    );
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("wrong_test.yaml :: expects the wrong thing ... FAILED\n")
            && text.contains("\nfailures:\n")
            && text.contains("expects the wrong thing: decision: expected allow, got deny"),
        "{text}"
    );
    assert!(
        text.ends_with("\ntest result: FAILED. 2 passed; 1 failed\n"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that every acknowledged evaluation is stored and the chain verifies; returns the
/// chain's length.
async fn assert_recorded(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    acknowledged: &[String],
) -> i64 {
    for id in acknowledged {
        let r = client
            .get(format!("{}/api/v1/evaluations/{id}", server.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id} was acknowledged but is missing");
    }
    let v: Value = client
        .get(format!("{}/api/v1/audit/verify", server.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["events"].as_i64().unwrap()
}

both_backends!(
    serve_bootstraps_once_and_stops_gracefully,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let dir = scratch();
        let mut server = serve(&db, &dir);
        let text = server.stdout.join("\n");
        assert!(text.contains("bootstrapped workspace `default`"), "{text}");
        assert!(text.contains("owner:     boss@example.com"));
        let key = admin_key(&server);
        assert!(
            text.contains("password:  "),
            "a generated password is printed once"
        );

        // Load while SIGTERM arrives: every answered evaluation is complete and stored.
        let client = reqwest::Client::new();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..300 {
            let (client, url, key) = (client.clone(), server.url.clone(), key.clone());
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{url}/api/v1/evaluate"))
                    .bearer_auth(&key)
                    .json(&json!({"agent_id": "a", "action": format!("act{i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        assert_eq!(r.status(), 200, "never a server error during shutdown");
                        let body: Value = r.json().await.expect("a complete answer");
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Some(body["evaluation_id"].as_str().unwrap().to_owned())
                    }
                    // Refused after the listener closed: the client knows it was not acknowledged.
                    Err(_) => None,
                }
            }));
        }
        // Signal once the server is busy, with requests still in flight.
        let start = Instant::now();
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 20 {
            assert!(start.elapsed() < Duration::from_secs(20), "no answers");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap();
        let mut acknowledged = Vec::new();
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
        let status = terminate_or_wait(&mut server);
        assert!(status.success(), "clean exit: {status:?}");
        assert!(
            acknowledged.len() >= 20,
            "served until the signal: {}",
            acknowledged.len()
        );

        // Restart: no second bootstrap, every acknowledged evaluation is there, the chain holds.
        let mut server = serve(&db, &dir);
        assert!(
            server.stdout.is_empty(),
            "bootstrap happens once: {:?}",
            server.stdout
        );
        assert_eq!(
            assert_recorded(&client, &server, &key, &acknowledged).await,
            3 + acknowledged.len() as i64,
            "one audit event per acknowledged evaluation"
        );
        assert!(terminate(&mut server).success());
        std::fs::remove_dir_all(&dir).unwrap();
        db.drop_database().await;
    }
);

fn terminate_or_wait(server: &mut Server) -> std::process::ExitStatus {
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

both_backends!(queued_webhooks_survive_sigkill, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    // Nothing listens here yet: every first attempt is refused and queued for a retry.
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    // The first retry comes 6-10 s after the first attempt: long enough that no job is in a
    // second attempt (leased to the killed server for a minute) when the kill comes, even on
    // a loaded machine; soon enough for the restarted server to deliver within the wait.
    let env = [
        ("AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE", "1"),
        ("AGENTNEXUS_RETRY_BASE_MS", "8000"),
    ];
    let mut server = serve_with(&db, &dir, &env);
    let key = admin_key(&server);
    let client = reqwest::Client::new();
    let get = |url: String| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let r: Value = client
            .post(format!("{}/api/v1/evaluate", server.url))
            .bearer_auth(&key)
            .json(&json!({"agent_id": "a", "action": format!("act{i}"), "webhook_url": hook}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["evaluation_id"].as_str().unwrap().to_owned());
    }
    // Wait until every job has failed once, so all are queued for later, then kill -9.
    let start = Instant::now();
    for id in &ids {
        loop {
            let d = get(format!("{}/api/v1/evaluations/{id}/deliveries", server.url)).await;
            if d["deliveries"][0]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                assert_eq!(d["deliveries"][0]["status"], "queued", "{d}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no first attempt: {d}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Command::new("kill")
        .args(["-KILL", &server.child.id().to_string()])
        .status()
        .unwrap();
    server.child.wait().unwrap();

    let receiver = agentnexus_testkit::Receiver::start_on(port).await;
    let mut server = serve_with(&db, &dir, &env);
    let got = receiver.wait_for(20, Duration::from_secs(30)).await;
    let mut delivered: Vec<String> = got
        .iter()
        .map(|r| r.body["evaluation_id"].as_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        delivered, expected,
        "every queued webhook arrived once after the restart"
    );
    let secret = get(format!("{}/api/v1/webhooks/secret", server.url)).await;
    let secret = secret["signing_secret"].as_str().unwrap();
    assert!(got.iter().all(|r| agentnexus_testkit::verify(secret, r)));
    assert!(terminate(&mut server).success());
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});

both_backends!(members_and_stages_from_the_cli, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    cli(
        &db,
        &[
            "workspace",
            "create",
            "acme",
            "--owner-email",
            "o@acme.example",
        ],
    );
    let policy = write(
        &dir,
        "payouts.yaml",
        "name: payouts\nrules:\n  - id: big\n    effect: require_approval\n    approval:\n      stages:\n        - name: treasury\n          approvers: [\"role:treasury\"]\n",
    );
    let out = cli(&db, &["policy", "apply", "--workspace", "acme", &policy]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stage `treasury` reaches nobody"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &db,
        &[
            "members",
            "add",
            "--workspace",
            "acme",
            "--email",
            "Tess@Example.com",
            "--role",
            "treasury",
            "--role",
            "approver",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let member: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (member["email"].as_str(), member["roles"].clone()),
        (Some("tess@example.com"), json!(["treasury", "approver"]))
    );
    let out = cli(
        &db,
        &["members", "add", "--workspace", "acme", "--email", "nope"],
    );
    assert!(!out.status.success());
    let out = cli(&db, &["members", "list", "--workspace", "acme"]);
    assert_eq!(stdout(&out).lines().count(), 2);
    let out = cli(&db, &["policy", "apply", "--workspace", "acme", &policy]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});

both_backends!(
    acknowledged_evaluations_survive_sigkill,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let dir = scratch();
        let mut server = serve(&db, &dir);
        let key = admin_key(&server);
        let client = reqwest::Client::new();
        // Sixteen clients evaluating as fast as they can, so the kill lands while batches are
        // being written and synced; each keeps the ids it was answered with.
        let mut clients = Vec::new();
        for c in 0..16 {
            let (client, key, url) = (client.clone(), key.clone(), server.url.clone());
            clients.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let sent = client
                        .post(format!("{url}/api/v1/evaluate"))
                        .bearer_auth(&key)
                        .json(
                            &json!({"agent_id": format!("agent-{c}"), "action": format!("act{i}")}),
                        )
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    acknowledged.push(body["evaluation_id"].as_str().unwrap().to_owned());
                }
                acknowledged
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()
            .unwrap();
        server.child.wait().unwrap();
        let mut acknowledged = Vec::new();
        for c in clients {
            acknowledged.extend(c.await.unwrap());
        }
        assert!(
            acknowledged.len() >= 50,
            "{} evaluations",
            acknowledged.len()
        );

        // Every evaluation that was answered is there after a restart, and the chain verifies
        // with one event per evaluation at least.
        let mut server = serve(&db, &dir);
        let events = assert_recorded(&client, &server, &key, &acknowledged).await;
        assert!(events >= acknowledged.len() as i64, "{events} events");
        assert!(terminate(&mut server).success());
        std::fs::remove_dir_all(&dir).unwrap();
        db.drop_database().await;
    }
);

#[test]
fn output_piped_into_a_reader_that_stops_is_not_an_error() {
    // `agentnexus openapi | head -c 100`: the document is larger than a pipe holds, so the
    // writes after the reader closes fail with EPIPE.
    let mut child = Command::new(BIN)
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with(b"{"));
    assert!(out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

both_backends!(serve_says_how_it_is_configured, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env("AGENTNEXUS_DATABASE_URL", &db.url)
        .env("AGENTNEXUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENTNEXUS_PUBLIC_URL", "https://agents.example.com")
        .env_remove("AGENTNEXUS_SMTP_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines().map_while(Result::ok);
    let serving = lines
        .by_ref()
        .find(|l| l.contains("AgentNexus is serving"))
        .expect("the start-up line");
    let warning = lines.next().unwrap_or_default();
    // The access log: method, route (the pattern, never a token), status, latency.
    let url = format!("http://127.0.0.1:{port}");
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let page = reqwest::get(format!("{url}/approvals/apr_secrettokenvalue"))
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let rest: Vec<String> = lines.collect();
    let access: Vec<Value> = rest
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "agentnexus::access")
        .collect();
    let healthz = access
        .iter()
        .find(|l| l["route"] == "/healthz")
        .unwrap_or_else(|| panic!("no access line for /healthz in {rest:?}"));
    assert_eq!(
        (healthz["method"].as_str(), healthz["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert!(healthz["latency_us"].is_u64(), "{healthz}");
    let approval = access
        .iter()
        .find(|l| l["route"] == "/approvals/{token}")
        .unwrap_or_else(|| panic!("no access line for the approval page in {rest:?}"));
    assert_eq!(approval["status"], 404);
    assert!(
        !rest.iter().any(|l| l.contains("secrettokenvalue")),
        "a token was logged"
    );
    let line: Value = serde_json::from_str(&serving).unwrap();
    assert_eq!(line["public_url"], "https://agents.example.com");
    assert_eq!(line["smtp"], false);
    assert_eq!(line["listen"], format!("127.0.0.1:{port}"));
    assert!(
        warning.contains("no SMTP server is configured"),
        "{warning}"
    );
    assert_eq!(line["channels"], "none");

    // With SMTP and a workspace that connected Teams, the line names both channels.
    let key = cli(
        &db,
        &[
            "keys",
            "create",
            "--workspace",
            "default",
            "--name",
            "t",
            "--scope",
            "admin",
        ],
    );
    let key = stdout(&key).trim().to_owned();
    let smtp = [("AGENTNEXUS_SMTP_URL", "smtp://127.0.0.1:9")];
    let mut server = serve_with(&db, &dir, &smtp);
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/settings/channels/teams", server.url))
        .bearer_auth(&key)
        .json(&json!({"webhook_url": "https://example.webhook.office.com/webhookb2/x"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert!(terminate(&mut server).success());
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env("AGENTNEXUS_DATABASE_URL", &db.url)
        .env("AGENTNEXUS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(smtp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serving = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("AgentNexus is serving"))
        .expect("the start-up line");
    child.kill().unwrap();
    child.wait().unwrap();
    let line: Value = serde_json::from_str(&serving).unwrap();
    assert_eq!(line["channels"], "email, teams (1 workspace)");
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// The admin tasks of the REST API from the CLI, answering the same JSON, beside a running
// server on the same store.
both_backends!(
    admin_commands_answer_what_the_api_answers,
    |backend| async move {
        use reqwest::Method;
        let db = TestDatabase::new(backend).await;
        let dir = scratch();
        let mut server = serve(&db, &dir);
        let key = admin_key(&server);
        let ws = ["--workspace", "default"];

        // Keys: listed without secrets; a revoked key stops working.
        let agent = cli(
            &db,
            &[
                "keys",
                "create",
                "--workspace",
                "default",
                "--name",
                "bot",
                "--scope",
                "agent",
            ],
        );
        let agent = stdout(&agent).trim().to_owned();
        let keys = json_lines(&cli(&db, &[&["keys", "list"][..], &ws].concat()));
        let api = rest(&server, &key, Method::GET, "/api/v1/keys", None).await;
        assert_eq!(json!(keys), api["keys"]);
        assert!(!stdout(&cli(&db, &[&["keys", "list"][..], &ws].concat())).contains(&agent));
        let bot = keys.iter().find(|k| k["name"] == "bot").unwrap();
        let out = cli(
            &db,
            &[&["keys", "revoke"][..], &ws, &[bot["id"].as_str().unwrap()]].concat(),
        );
        let revoked: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert!(revoked["revoked_at"].is_string(), "{revoked}");
        let out = cli(&db, &[&["keys", "revoke"][..], &ws, &["key_nope"]].concat());
        assert!(
            stderr(&out).contains("no key `key_nope` in workspace `default`"),
            "{}",
            stderr(&out)
        );
        let start = Instant::now();
        loop {
            let status = reqwest::Client::new()
                .post(format!("{}/api/v1/evaluate", server.url))
                .bearer_auth(&agent)
                .json(&json!({"agent_id": "a", "action": "x"}))
                .send()
                .await
                .unwrap()
                .status();
            if status == 401 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the revoked key still works"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Policies: list, show (the document as written), versions, rollback.
        rest(
            &server,
            &key,
            Method::PUT,
            "/api/v1/policies/gate",
            Some(GATE),
        )
        .await;
        let v2 = GATE.replace("> 100", "> 500");
        rest(
            &server,
            &key,
            Method::PUT,
            "/api/v1/policies/gate",
            Some(&v2),
        )
        .await;
        let listed = json_lines(&cli(&db, &[&["policy", "list"][..], &ws].concat()));
        let api = rest(&server, &key, Method::GET, "/api/v1/policies", None).await;
        assert_eq!(json!(listed), api["policies"]);
        let out = cli(&db, &[&["policy", "show"][..], &ws, &["gate"]].concat());
        assert_eq!(stdout(&out), v2);
        let out = cli(
            &db,
            &[&["policy", "show"][..], &ws, &["gate", "--version", "1"]].concat(),
        );
        assert_eq!(stdout(&out), GATE);
        let out = cli(
            &db,
            &[&["policy", "show"][..], &ws, &["gate", "--version", "9"]].concat(),
        );
        assert!(
            stderr(&out).contains("policy `gate` has no version 9"),
            "{}",
            stderr(&out)
        );
        let out = cli(&db, &[&["policy", "show"][..], &ws, &["nope"]].concat());
        assert!(
            stderr(&out).contains("no policy `nope` in workspace `default`"),
            "{}",
            stderr(&out)
        );
        let versions = json_lines(&cli(
            &db,
            &[&["policy", "versions"][..], &ws, &["gate"]].concat(),
        ));
        let api = rest(
            &server,
            &key,
            Method::GET,
            "/api/v1/policies/gate/versions",
            None,
        )
        .await;
        assert_eq!(json!(versions), api["versions"]);
        let out = cli(
            &db,
            &[&["policy", "rollback"][..], &ws, &["gate", "--to", "1"]].concat(),
        );
        let back: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(
            (
                back["version"].as_i64(),
                back["document"].as_str(),
                back["source"].as_str()
            ),
            (Some(3), Some(GATE), Some("cli"))
        );
        let api = rest(&server, &key, Method::GET, "/api/v1/policies/gate", None).await;
        assert_eq!(api["version"], 3, "the server sees the CLI's rollback");

        // Evaluations: list (filters included) and show, as the API answers them.
        let mut ids = Vec::new();
        for amount in [50, 700] {
            let r = reqwest::Client::new()
                .post(format!("{}/api/v1/evaluate", server.url))
                .bearer_auth(&key)
                .json(&json!({"agent_id": "pay-bot", "action": "refund", "amount_cents": amount}))
                .send()
                .await
                .unwrap();
            let body: Value = r.json().await.unwrap();
            ids.push(body["evaluation_id"].as_str().unwrap().to_owned());
        }
        let listed = json_lines(&cli(&db, &[&["evaluations", "list"][..], &ws].concat()));
        let api = rest(&server, &key, Method::GET, "/api/v1/evaluations", None).await;
        assert_eq!(json!(listed), api["evaluations"]);
        assert_eq!(listed.len(), 2);
        let denied = json_lines(&cli(
            &db,
            &[&["evaluations", "list"][..], &ws, &["--status", "denied"]].concat(),
        ));
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0]["evaluation_id"], ids[1].as_str());
        // By action and by policy, as the API filters.
        reqwest::Client::new()
            .post(format!("{}/api/v1/evaluate", server.url))
            .bearer_auth(&key)
            .json(&json!({"agent_id": "pay-bot", "action": "lookup"}))
            .send()
            .await
            .unwrap();
        for (args, query, n) in [
            (
                &["--action", "refund", "--policy", "gate"][..],
                "action=refund&policy=gate",
                2,
            ),
            (&["--action", "lookup"][..], "action=lookup", 1),
            (&["--policy", "elsewhere"][..], "policy=elsewhere", 0),
        ] {
            let listed = json_lines(&cli(
                &db,
                &[&["evaluations", "list"][..], &ws, args].concat(),
            ));
            let path = format!("/api/v1/evaluations?{query}");
            let api = rest(&server, &key, Method::GET, &path, None).await;
            assert_eq!(json!(listed), api["evaluations"], "{query}");
            assert_eq!(listed.len(), n, "{query}");
        }
        let out = cli(
            &db,
            &[&["evaluations", "show"][..], &ws, &[ids[0].as_str()]].concat(),
        );
        let shown: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let api = rest(
            &server,
            &key,
            Method::GET,
            &format!("/api/v1/evaluations/{}", ids[0]),
            None,
        )
        .await;
        assert_eq!(shown, api);
        let out = cli(
            &db,
            &[&["evaluations", "show"][..], &ws, &["ev_nope"]].concat(),
        );
        assert!(
            stderr(&out).contains("no evaluation `ev_nope` in workspace `default`"),
            "{}",
            stderr(&out)
        );

        // Members: removed by e-mail; the last owner stays.
        let out = cli(
            &db,
            &[
                &["members", "add"][..],
                &ws,
                &["--email", "ann@example.com"],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = cli(
            &db,
            &[&["members", "remove"][..], &ws, &["ANN@example.com"]].concat(),
        );
        let removed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(removed["email"], "ann@example.com");
        let api = rest(&server, &key, Method::GET, "/api/v1/members", None).await;
        assert!(!api.to_string().contains("ann@example.com"), "{api}");
        let out = cli(
            &db,
            &[&["members", "remove"][..], &ws, &["boss@example.com"]].concat(),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("owner"), "{}", stderr(&out));

        // Each of those changes is in the trail, by the CLI.
        let audit = rest(&server, &key, Method::GET, "/api/v1/audit?limit=500", None).await;
        let by_cli: Vec<&str> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == "cli")
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        for kind in [
            "key.created",
            "key.revoked",
            "policy.rolled_back",
            "member.created",
            "member.removed",
        ] {
            assert!(by_cli.contains(&kind), "{kind} in {by_cli:?}");
        }
        assert!(terminate(&mut server).success());
        std::fs::remove_dir_all(&dir).unwrap();
        db.drop_database().await;
    }
);

/// Waits until `dir` holds a checkpoint of `seq`; answers its path.
fn checkpoint_file(dir: &Path, seq: i64) -> std::path::PathBuf {
    let path = dir.join(format!("default-{seq:012}.json"));
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no checkpoint of seq {seq} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    path
}

// SPEC §7's signed checkpoints: the server signs each growing chain into
// AGENTNEXUS_CHECKPOINT_DIR and on demand, with a signature the Ed25519 library accepts under
// the published key; `audit verify --checkpoint` then catches what the chain alone cannot:
// the tail deleted and the head rolled back (which plain verification calls `ok`), and the
// chain rewritten to the same length; and it refuses an altered checkpoint.
both_backends!(
    signed_checkpoints_catch_a_rolled_back_chain,
    |backend| async move {
        use base64::Engine;
        use ed25519_dalek::Verifier;
        use ed25519_dalek::pkcs8::DecodePublicKey;
        let db = TestDatabase::new(backend).await;
        let dir = scratch();
        let cps = dir.join("checkpoints");
        let env = [
            ("AGENTNEXUS_CHECKPOINT_DIR", cps.to_str().unwrap()),
            ("AGENTNEXUS_CHECKPOINT_SECS", "1"),
        ];
        let mut server = serve_with(&db, &dir, &env);
        let key = admin_key(&server);
        rest(
            &server,
            &key,
            reqwest::Method::PUT,
            "/api/v1/policies/gate",
            Some(GATE),
        )
        .await;
        let evaluate = |server_url: String, key: String| async move {
            for amount in [50, 500, 70] {
                let r = reqwest::Client::new()
                    .post(format!("{server_url}/api/v1/evaluate"))
                    .bearer_auth(&key)
                    .json(&json!({"agent_id": "a", "action": "pay", "amount_cents": amount}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        };
        evaluate(server.url.clone(), key.clone()).await;
        let head = rest(
            &server,
            &key,
            reqwest::Method::GET,
            "/api/v1/audit/verify",
            None,
        )
        .await;
        let events = head["events"].as_i64().unwrap();
        let file = checkpoint_file(&cps, events);

        // On demand, and checked with the library under the published key.
        let on_demand = rest(
            &server,
            &key,
            reqwest::Method::GET,
            "/api/v1/audit/checkpoint",
            None,
        )
        .await;
        assert_eq!(on_demand["workspace"], "default");
        assert_eq!(on_demand["seq"], events);
        assert_eq!(on_demand["head_hash"], head["head_hash"]);
        let published = rest(
            &server,
            &key,
            reqwest::Method::GET,
            "/api/v1/audit/signing-key",
            None,
        )
        .await;
        assert_eq!(published["key_id"], on_demand["key_id"]);
        let public = ed25519_dalek::VerifyingKey::from_public_key_pem(
            published["public_key_pem"].as_str().unwrap(),
        )
        .unwrap();
        let mut signed = on_demand.clone();
        let signature = signed.as_object_mut().unwrap().remove("signature").unwrap();
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.as_str().unwrap())
            .unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        let message = agentnexus_engine::canonical::to_vec(&signed);
        public
            .verify(&message, &signature)
            .expect("a valid signature");
        signed["seq"] = json!(events - 1);
        assert!(
            public
                .verify(&agentnexus_engine::canonical::to_vec(&signed), &signature)
                .is_err()
        );
        let pem = dir.join("signing-key.pem");
        std::fs::write(&pem, published["public_key_pem"].as_str().unwrap()).unwrap();
        assert!(terminate(&mut server).success());

        // The written checkpoint holds.
        // `audit verify --checkpoint FILE ARGS…`, run in `cwd` (where the key file is, or not).
        let verify_in = |cwd: &Path, checkpoint: &Path, args: &[&Path]| {
            Command::new(BIN)
                .args(["audit", "verify", "--checkpoint"])
                .arg(checkpoint)
                .args(args)
                .current_dir(cwd)
                .env("AGENTNEXUS_DATABASE_URL", &db.url)
                .output()
                .unwrap()
        };
        let verify = |checkpoint: &Path| verify_in(&dir, checkpoint, &[]);
        let out = verify(&file);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert!(
            stdout(&out).contains(&format!("checkpoint ok: seq {events} ")),
            "{}",
            stdout(&out)
        );

        // Someone with the database's keys deletes the last two events and rolls the head back:
        // the chain alone still verifies; against the checkpoint it does not.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let kept = events - 2;
        agentnexus_testkit::tamper(
            &pool,
            db.backend,
            &format!("DELETE FROM audit_events WHERE seq > {kept}"),
        )
        .await;
        sqlx::query(&format!(
            "UPDATE audit_heads SET seq = {kept}, indexed_seq = {kept}, \
         hash = (SELECT hash FROM audit_events WHERE seq = {kept})"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let plain = cli(&db, &["audit", "verify"]);
        assert!(plain.status.success(), "{}", stdout(&plain));
        assert!(
            stdout(&plain).starts_with(&format!("ok {kept} ")),
            "{}",
            stdout(&plain)
        );
        let out = verify(&file);
        assert!(!out.status.success());
        assert!(
            stdout(&out).contains(&format!(
                "checkpoint broken: the chain has {kept} events, fewer than the {events} the \
             checkpoint signed"
            )),
            "{}",
            stdout(&out)
        );

        // The chain grown back to the same length with other events.
        let mut server = serve_with(&db, &dir, &[("AGENTNEXUS_CHECKPOINT_SECS", "0")]);
        evaluate(server.url.clone(), key.clone()).await;
        assert!(terminate(&mut server).success());
        let out = verify(&file);
        assert!(!out.status.success());
        assert!(
            stdout(&out).contains(&format!(
                "checkpoint broken: the event at seq {events} is not the one the checkpoint signed"
            )),
            "{}",
            stdout(&out)
        );

        // An altered checkpoint is refused on its signature, with the published key too (from a
        // directory without the server's key file).
        let mut altered: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        altered["seq"] = json!(kept);
        let altered_file = dir.join("altered.json");
        std::fs::write(&altered_file, altered.to_string()).unwrap();
        let elsewhere = scratch();
        let out = verify_in(
            &elsewhere,
            &altered_file,
            &[Path::new("--public-key"), pem.as_path()],
        );
        assert!(!out.status.success());
        assert!(
            stdout(&out).contains("checkpoint broken: the signature does not match the checkpoint"),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        // Without a key at hand, it says where to get one.
        let out = verify_in(&elsewhere, &file, &[]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("pass --public-key FILE"),
            "{}",
            stderr(&out)
        );
        pool.close().await;
        for d in [&dir, &elsewhere] {
            std::fs::remove_dir_all(d).unwrap();
        }
        db.drop_database().await;
    }
);

/// Runs the binary with `args` and no store in its environment: the remote commands need none.
fn remote(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("AGENTNEXUS_DATABASE_URL")
        .output()
        .unwrap()
}

// The remote commands, through the typed client against a running server, with no database in
// reach: policy apply (checked first, nothing stored when one file is invalid; unchanged files
// said so), evaluate (exit 0 when the agent may go ahead, 2 when not; the same idempotency key
// is the same evaluation; --wait for a pending one), get, and the server's refusals (a wrong
// key, an agent key applying policies) as errors with the server's words.
both_backends!(remote_commands_use_the_api, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let dir = scratch();
    let mut server = serve(&db, &dir);
    let admin = admin_key(&server);
    let url = server.url.clone();
    let agent = cli(
        &db,
        &[
            "keys",
            "create",
            "--workspace",
            "default",
            "--name",
            "bot",
            "--scope",
            "agent",
        ],
    );
    assert!(agent.status.success(), "{}", stderr(&agent));
    let agent = stdout(&agent).trim().to_owned();
    let policy = write(
        &dir,
        "payments.yaml",
        "name: payments\nrules:\n  - id: large\n    when: amount_cents > 50000\n    effect: require_approval\n    approval:\n      stages:\n        - name: owners\n          approvers: [\"role:owner\"]\n          timeout: 1h\n  - id: deletes\n    when: action == \"db.delete\"\n    effect: deny\n    reason: no deletes\n  - id: rest\n    effect: allow\n",
    );
    let broken = write(
        &dir,
        "broken.yaml",
        "name: broken\nrules:\n  - id: r\n    when: amount_cents >\n    effect: allow\n",
    );

    let apply = |files: &[&str], key: &str| {
        let mut args = vec!["policy", "apply", "--server", &url, "--key", key];
        args.extend_from_slice(files);
        remote(&args)
    };
    let out = apply(&[&policy, &broken], &admin);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("{broken}:4:")) && said.ends_with("nothing applied\n"),
        "{said}"
    );
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/policies/payments"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing was applied");
    let out = apply(&[&policy], &admin);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "applied payments version 1\n");
    let out = apply(&[&policy], &admin);
    assert_eq!(stdout(&out), "unchanged payments (version 1)\n");
    let out = apply(&[&policy], &agent);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    let evaluate = |extra: &[&str], key: &str| {
        let mut args = vec![
            "evaluate",
            "--server",
            &url,
            "--key",
            key,
            "--agent",
            "billing-bot",
        ];
        args.extend_from_slice(extra);
        let out = remote(&args);
        let ev: Value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
        (out, ev)
    };
    let (out, ev) = evaluate(
        &["--action", "stripe.refund", "--amount-cents", "1200"],
        &agent,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        (ev["status"].as_str(), ev["decision"].as_str()),
        (Some("allowed"), Some("allow"))
    );
    let (out, ev) = evaluate(&["--action", "db.delete"], &agent);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        (ev["status"].as_str(), ev["reason"].as_str()),
        (Some("denied"), Some("no deletes"))
    );
    let (out, first) = evaluate(
        &[
            "--json",
            r#"{"action": "stripe.refund", "amount_cents": 90000}"#,
            "--idempotency-key",
            "refund-9",
            "--wait",
            "1",
        ],
        &agent,
    );
    assert_eq!(out.status.code(), Some(2), "pending after the wait");
    assert_eq!(first["status"], "pending");
    let (_, again) = evaluate(
        &[
            "--json",
            r#"{"action": "stripe.refund", "amount_cents": 90000}"#,
            "--idempotency-key",
            "refund-9",
        ],
        &agent,
    );
    assert_eq!(
        again["evaluation_id"], first["evaluation_id"],
        "one evaluation"
    );
    // The same key with another proposal: the server's 409, in its words.
    let (out, _) = evaluate(
        &[
            "--action",
            "stripe.refund",
            "--amount-cents",
            "1",
            "--idempotency-key",
            "refund-9",
        ],
        &agent,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("409"), "{}", stderr(&out));

    let id = first["evaluation_id"].as_str().unwrap();
    let out = remote(&["get", id, "--server", &url, "--key", &agent]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (got["evaluation_id"].as_str(), got["status"].as_str()),
        (Some(id), Some("pending"))
    );
    assert_eq!(got["proposal_hash"], first["proposal_hash"]);

    let (out, _) = evaluate(
        &["--action", "x"],
        "anx_notakey0000000000000000000000000000",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = remote(&["get", "ev_nope", "--server", &url, "--key", &agent]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let out = remote(&[
        "evaluate", "--server", &url, "--key", &agent, "--action", "x",
    ]);
    assert!(
        stderr(&out).contains("give --agent and --action"),
        "{}",
        stderr(&out)
    );

    assert!(terminate(&mut server).success());
    // No server: said plainly, after the retries.
    let out = remote(&["get", id, "--server", &url, "--key", &agent]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no answer from the server"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_database().await;
});
