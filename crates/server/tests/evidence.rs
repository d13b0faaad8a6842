//! The compliance evidence bundle (SPEC §8), end to end: a period's governance happens, the
//! bundle is fetched over HTTP, unpacked by Python's `zipfile`, and checked by the `verify.py`
//! it carries, against the key the server publishes; then tampered with, and refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agentnexus_testkit::SmtpSink;
use agentnexus_testkit::both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Duration;
use common::TestApp;
use ed25519_dalek::Signer;
use serde_json::{Value, json};

const OPS: &str = r#"name: ops
rules:
  - id: drops
    when: action == "db.drop"
    effect: deny
    reason: never drop a database
  - id: deploys
    when: action == "deploy"
    effect: require_approval
    approval:
      stages:
        - name: review
          approvers: ["dan@example.com"]
  - id: reads
    when: action == "read"
    effect: allow
"#;

/// Unpacks `zip` with Python's `zipfile` (not ours) into a new directory.
fn unpack(zip: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anx-evidence-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.with_extension("zip");
    std::fs::write(&file, zip).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
             assert z.testzip() is None; z.extractall(sys.argv[2])",
        ])
        .arg(&file)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(file).unwrap();
    dir
}

/// `python3 verify.py --public-key KEY` in `dir`: its exit code and output.
fn verify(dir: &Path, key: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(dir.join("verify.py"))
        .arg("--public-key")
        .arg(key)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn rows(dir: &Path, name: &str) -> Vec<csv::StringRecord> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    assert!(text.ends_with("\r\n"), "{name} ends its records with CRLF");
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect()
}

fn column(dir: &Path, name: &str, column: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let at = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("{name} has no column {column}"));
    reader
        .records()
        .map(|r| r.unwrap()[at].to_owned())
        .collect()
}

both_backends!(
    an_auditor_verifies_the_bundle_offline_and_sees_tampering,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let smtp = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
        let admin = app.admin_key.clone();
        let r = app
            .post(
                "/api/v1/members",
                &admin,
                &json!({"email": "dan@example.com", "roles": ["approver"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(app.put_policy("ops", OPS).await.status, 200);
        let agent = app.key("agent").await;
        let ev = async |agent_id: &str, action: &str| {
            let r = app
                .evaluate(
                    &agent,
                    json!({"agent_id": agent_id, "action": action, "cost_cents": 7}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        };
        // Another workspace's agent, at the same time: never in this bundle.
        let acme = app.other_workspace("acme").await;
        let r = app
            .evaluate(&acme, json!({"agent_id": "acme-bot", "action": "read"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Before the period: not in it.
        let old = ev("bot-a", "read").await;
        app.clock.advance(Duration::days(2));
        let from = app.clock.now() - Duration::hours(1);

        // A second apart: ids order by creation to the millisecond (within one, by chance).
        let read = ev("bot-a", "read").await;
        app.clock.advance(Duration::seconds(1));
        let deploy = ev("bot-a", "deploy").await;
        app.clock.advance(Duration::seconds(1));
        let drop = ev("bot-b", "db.drop").await;
        let link = loop {
            if let Some(t) = sink.mails().iter().find_map(|m| m.link_token()) {
                break t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let r = app
            .decide_link(
                &link,
                json!({"decision": "approve", "comment": "ok, ship it"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        for (ev, hash) in [
            (&read, read["proposal_hash"].clone()),
            (&drop, drop["proposal_hash"].clone()),
        ] {
            let id = ev["evaluation_id"].as_str().unwrap();
            let r = app
                .post(
                    &format!("/api/v1/evaluations/{id}/receipt"),
                    &agent,
                    &json!({"outcome": "executed", "proposal_hash": hash}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        let r = app
            .post(
                "/api/v1/agents/bot-b/suspend",
                &admin,
                &json!({"reason": "dropped a table"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);

        // Refusals first: an agent key, a bad period.
        let path = format!(
            "/api/v1/compliance/evidence.zip?from={}",
            from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        assert_eq!(app.get(&path, &agent).await.status, 403);
        let backwards =
            "/api/v1/compliance/evidence.zip?from=2026-12-05T00:00:00Z&to=2026-12-01T00:00:00Z";
        app.get(backwards, &admin).await.problem(422);

        let resp = app
            .client
            .get(format!("{}{path}", app.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/zip");
        let zip = resp.bytes().await.unwrap();
        let dir = unpack(&zip);
        let pem = app.get("/api/v1/audit/signing-key", &admin).await.body;
        let key = dir.with_extension("pem");
        std::fs::write(&key, pem["public_key_pem"].as_str().unwrap()).unwrap();

        let (code, out) = verify(&dir, &key);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("verified"), "{out}");
        assert!(
            out.contains("ok   populations match the audit events: 3 evaluations, 1 human decisions, 2 receipts"),
            "{out}"
        );
        let sums = Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(sums.status.success(), "{sums:?}");
        for file in walk(&dir) {
            let text = std::fs::read(&file).unwrap();
            assert!(
                !String::from_utf8_lossy(&text).contains("acme"),
                "another workspace in {}",
                file.display()
            );
        }

        // Full populations of the period, nothing before it.
        let mut ids = column(&dir, "evaluations.csv", "id");
        ids.sort();
        let mut want: Vec<String> = [&read, &deploy, &drop]
            .iter()
            .map(|e| e["evaluation_id"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        assert_eq!(ids, want);
        assert!(!ids.contains(&old["evaluation_id"].as_str().unwrap().to_owned()));
        assert_eq!(
            column(&dir, "evaluations.csv", "status"),
            ["denied", "approved", "allowed"],
            "newest first, status as it stands"
        );
        let approvals = rows(&dir, "approvals.csv");
        assert_eq!(approvals.len(), 1);
        assert_eq!(&approvals[0][1], deploy["evaluation_id"].as_str().unwrap());
        assert_eq!(&approvals[0][3], "dan@example.com");
        assert_eq!(&approvals[0][4], "approve");
        assert_eq!(&approvals[0][5], "ok, ship it");
        let mut conforms = column(&dir, "receipts.csv", "conforms");
        conforms.sort();
        assert_eq!(conforms, ["false", "true"], "the denied drop ran anyway");
        let agents = rows(&dir, "agents.csv");
        let bot_b = agents.iter().find(|r| &r[0] == "bot-b").unwrap();
        assert_eq!(&bot_b[1], "suspended");
        assert_eq!(&bot_b[12], "dropped a table");
        assert_eq!(
            std::fs::read_to_string(dir.join("policies/ops/v1.yaml")).unwrap(),
            OPS
        );
        assert_eq!(
            column(&dir, "policy_versions.csv", "in_force_during_period"),
            ["true"]
        );
        assert!(column(&dir, "members.csv", "email").contains(&"dan@example.com".to_owned()));
        let keys = std::fs::read_to_string(dir.join("api_keys.csv")).unwrap();
        assert!(
            !keys.contains(&agent) && !keys.contains(&admin),
            "no secrets"
        );
        let costs = rows(&dir, "costs.csv");
        let by_agent: Vec<_> = costs.iter().filter(|r| &r[0] == "agent_id").collect();
        assert_eq!(by_agent.len(), 2);
        assert_eq!(
            by_agent
                .iter()
                .map(|r| r[2].parse::<i64>().unwrap())
                .sum::<i64>(),
            21,
            "three evaluations in the period at 7 cents"
        );
        let events: Vec<Value> = std::fs::read_to_string(dir.join("audit_events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let created: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "evaluation.created")
            .collect();
        assert_eq!(created.len(), 3);
        let checkpoint: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
                .unwrap();
        assert_eq!(checkpoint["seq"], events.last().unwrap()["seq"]);
        let narrative = std::fs::read_to_string(dir.join("narrative.md")).unwrap();
        assert!(narrative.contains("- ops v1"), "{narrative}");
        assert!(narrative.contains("3 evaluations"), "{narrative}");
        assert!(narrative.contains("1 agent suspensions"), "{narrative}");
        assert!(
            narrative.contains("verified at generation: ok"),
            "{narrative}"
        );
        let mapping = rows(&dir, "control_mapping.csv");
        for control in [
            "Art. 12",
            "Art. 14",
            "Art. 19",
            "Art. 26",
            "CC6.1",
            "MANAGE 2.4",
        ] {
            assert!(mapping.iter().any(|r| &r[1] == control), "{control}");
        }

        // Tampering: each is caught, and named.
        let evaluations = dir.join("evaluations.csv");
        let original = std::fs::read_to_string(&evaluations).unwrap();
        std::fs::write(&evaluations, original.replace("denied", "allowed")).unwrap();
        let (code, out) = verify(&dir, &key);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("FAIL") && out.contains("evaluations.csv"),
            "{out}"
        );
        std::fs::write(&evaluations, &original).unwrap();
        assert_eq!(verify(&dir, &key).0, 0);

        let other = ed25519_pem();
        let (code, out) = verify(&dir, &other);
        assert_eq!(code, 1, "another key: {out}");

        // The attestation re-signed by someone else (its key id kept, its sum made to match):
        // the signature is not the server's.
        let attestation = dir.join("attestation.json");
        let signed = std::fs::read(&attestation).unwrap();
        let mut envelope: Value = serde_json::from_slice(&signed).unwrap();
        let payload = B64.decode(envelope["payload"].as_str().unwrap()).unwrap();
        let kind = envelope["payloadType"].as_str().unwrap().to_owned();
        let mut pae = format!("DSSEv1 {} {kind} {} ", kind.len(), payload.len()).into_bytes();
        pae.extend_from_slice(&payload);
        let forger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        envelope["signatures"][0]["sig"] = json!(B64.encode(forger.sign(&pae).to_bytes()));
        std::fs::write(&attestation, serde_json::to_vec(&envelope).unwrap()).unwrap();
        let sums_path = dir.join("SHA256SUMS");
        let sums = std::fs::read_to_string(&sums_path).unwrap();
        let digest = |bytes: &[u8]| agentnexus_engine::canonical::sha256_hex(bytes);
        let resummed = sums.replace(
            &digest(&signed),
            &digest(&std::fs::read(&attestation).unwrap()),
        );
        assert_ne!(resummed, sums);
        std::fs::write(&sums_path, resummed).unwrap();
        let (code, out) = verify(&dir, &key);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("FAIL attestation signature"), "{out}");
        assert!(out.contains("ok   SHA256SUMS digests match"), "{out}");
        std::fs::write(&attestation, &signed).unwrap();
        std::fs::write(&sums_path, &sums).unwrap();
        assert_eq!(verify(&dir, &key).0, 0);

        std::fs::remove_file(dir.join("approvals.csv")).unwrap();
        let (code, out) = verify(&dir, &key);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("approvals.csv"), "{out}");

        for path in [&key, &other] {
            std::fs::remove_file(path).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        app.stop().await;
    }
);

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Another Ed25519 public key, as PEM.
fn ed25519_pem() -> PathBuf {
    // SubjectPublicKeyInfo for Ed25519: a fixed prefix and the 32-byte key (any 32 bytes
    // that are not this server's key will do: verification must fail).
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    // The Ed25519 base point's encoding: a valid point, and nobody's server key.
    let mut point = [0u8; 32];
    point[0] = 0x58;
    point[1..].fill(0x66);
    der.extend_from_slice(&point);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    );
    let path = std::env::temp_dir().join(format!("anx-other-{}.pem", rand::random::<u64>()));
    std::fs::write(&path, pem).unwrap();
    path
}
