//! The dashboard in a real headless browser: Debian's Chromium driven over WebDriver
//! (chromedriver) by fantoccini, on both stores. A person signs in (wrongly, then rightly),
//! edits a policy with an error the page points at as they type, fixes it, compares versions
//! and rolls back, creates and revokes a key, approves from the inbox with the one-time code
//! read from the real SMTP sink, reads the timeline, invites a viewer who sets a password and
//! finds nothing to change. Screenshots of every main page are saved (light and dark, the
//! approval page also at a phone's width): under the test's temporary directory, and under
//! `docs/screenshots/` when `AGENTNEXUS_SCREENSHOTS=docs`.
//!
//! `AGENTNEXUS_CHROMIUM` and `AGENTNEXUS_CHROMEDRIVER` name the binaries (default
//! `/usr/bin/chromium`, `/usr/bin/chromedriver`); the tests fail when they are missing.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentnexus_testkit::{Backend, SmtpSink, both_backends};
use common::TestApp;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A chromedriver of this test's own, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let binary =
            std::env::var("AGENTNEXUS_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{binary} could not be started ({e}): install chromium-driver (.ci/run does)"
                )
            });
        // Stopped by `drop` whatever happens next.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start on {}", driver.url);
    }

    async fn browser(&self, dark: bool) -> Client {
        let chromium = std::env::var("AGENTNEXUS_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&chromium).exists(),
            "{chromium} is missing: install chromium (.ci/run does)"
        );
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        if dark {
            args.push("--force-dark-mode");
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// Where screenshots go.
struct Shots {
    dirs: Vec<PathBuf>,
}

impl Shots {
    fn new(backend: Backend) -> Shots {
        let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "screenshots-{}",
            match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
        ))];
        if backend == Backend::Sqlite
            && std::env::var("AGENTNEXUS_SCREENSHOTS").is_ok_and(|v| v == "docs")
        {
            dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
        }
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        Shots { dirs }
    }

    async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        for d in &self.dirs {
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn fill(c: &Client, css: &str, value: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks a button whose form asks "are you sure?" first, and says yes.
async fn click_confirmed(c: &Client, css: &str) {
    click(c, css).await;
    c.accept_alert().await.unwrap();
}

async fn page_has(c: &Client, text: &str) -> bool {
    c.source().await.unwrap().contains(text)
}

/// Waits until the page's source holds `text` (after a redirect or an htmx swap).
async fn wait_for_text(c: &Client, text: &str) {
    for _ in 0..100 {
        if page_has(c, text).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{text}` never appeared on {}", path_of(c).await);
}

/// Waits until the page's source no longer holds `text`.
async fn wait_for_no_text(c: &Client, text: &str) {
    for _ in 0..100 {
        if !page_has(c, text).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{text}` never went from {}", path_of(c).await);
}

async fn sign_in(c: &Client, base: &str, email: &str, password: &str) {
    c.goto(&format!("{base}/sign-in")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "button[type=submit]").await;
}

/// Waits until the browser is at `path` (after a form's redirect).
async fn expect_path(c: &Client, path: &str) {
    wait_path(c, |p| p == path).await;
}

/// Waits until the browser's path passes `check`; answers it.
async fn wait_path(c: &Client, check: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let path = path_of(c).await;
        if check(&path) {
            return path;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser stayed at {}", path_of(c).await);
}

const BROKEN: &str =
    "name: payouts\nrules:\n  - id: big\n    when: amount_cents >\n    effect: deny\n";

const PAYOUTS: &str = "name: payouts
rules:
  - id: big
    when: amount_cents > 100
    effect: require_approval
    tier: critical
    reason: Big payouts need a second look
    approval:
      stages:
        - name: owners
          approvers: [\"role:owner\"]
          timeout: 1h
  - id: small
    effect: allow
";

both_backends!(a_person_governs_from_the_browser, |backend| async move {
    let sink = SmtpSink::start().await;
    let smtp = sink.url.clone();
    let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
    let base = app.url.clone();
    let shots = Shots::new(backend);
    let driver = Driver::start().await;
    let c = driver.browser(false).await;

    // Without a session, the sign-in page; a wrong password is refused there.
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(path_of(&c).await, "/sign-in");
    shots.take(&c, "sign-in").await;
    sign_in(&c, &base, "owner@example.com", "wrong password").await;
    assert!(text_of(&c, "[role=alert]").await.contains("not right"));
    sign_in(&c, &base, "owner@example.com", "pw").await;
    expect_path(&c, "/").await;
    assert_eq!(text_of(&c, "h1").await, "Overview");

    // The policy editor points at the error as one types, from the API's validator.
    c.goto(&format!("{base}/policies")).await.unwrap();
    fill(&c, "#name", "payouts").await;
    fill(&c, "#document", BROKEN).await;
    let problem = text_of(&c, "#validation .problems li").await;
    assert!(problem.starts_with("4:"), "at its line: {problem}");
    shots.take(&c, "policy-editor-error").await;
    fill(&c, "#document", PAYOUTS).await;
    wait_for_text(&c, "Valid: policy").await;
    click(&c, "form[action='/policies'] button.primary").await;
    expect_path(&c, "/policies/payouts").await;

    // A second version, its diff, and a rollback to the first.
    let editor = c.find(Locator::Css("#document")).await.unwrap();
    editor.clear().await.unwrap();
    editor
        .send_keys(&PAYOUTS.replace("timeout: 1h", "timeout: 2h"))
        .await
        .unwrap();
    click(&c, "#editor button.primary").await;
    wait_for_text(&c, "Saved as version 2").await;
    shots.take(&c, "policy").await;
    click(&c, "a[href='/policies/payouts/diff?from=1&to=2']").await;
    assert!(text_of(&c, "#diff .add").await.contains("timeout: 2h"));
    assert!(text_of(&c, "#diff .del").await.contains("timeout: 1h"));
    shots.take(&c, "policy-diff").await;
    c.goto(&format!("{base}/policies/payouts")).await.unwrap();
    click_confirmed(&c, "form[action='/policies/payouts/rollback'] button").await;
    wait_for_text(&c, "Saved as version 3").await;
    let active = app.get("/api/v1/policies/payouts", &app.admin_key).await;
    assert!(
        active.body["document"]
            .as_str()
            .unwrap()
            .contains("timeout: 1h")
    );

    // A key: its secret shown once, then revoked.
    c.goto(&format!("{base}/keys")).await.unwrap();
    fill(&c, "#name", "ci-agent").await;
    click(&c, "form[action='/keys'] button.primary").await;
    let secret = text_of(&c, "#new-secret").await;
    assert!(secret.starts_with("anx_"), "{secret}");
    shots.take(&c, "keys").await;
    let proposal = json!({"agent_id": "payer", "action": "payout", "resource": "acct/9", "amount_cents": 12345});
    let pending = app.evaluate(&secret, proposal.clone()).await;
    assert_eq!(pending.body["status"], "pending", "{}", pending.body);
    let id = pending.body["evaluation_id"].as_str().unwrap().to_owned();
    c.goto(&format!("{base}/keys")).await.unwrap();
    assert!(!page_has(&c, &secret).await, "shown once");
    c.find(Locator::XPath(
        "//tr[td[text()='ci-agent']]//form[contains(@action, '/revoke')]//button",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.accept_alert().await.unwrap();
    wait_for_text(&c, "revoked").await;
    assert_eq!(app.evaluate(&secret, proposal).await.status, 401);

    // The inbox: the whole proposal, and a decision with the code from the e-mail.
    sink.wait_for(1, Duration::from_secs(15)).await;
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text_of(&c, "#waiting-for-me").await, "1");
    shots.take(&c, "overview").await;
    c.goto(&format!("{base}/inbox")).await.unwrap();
    let card = text_of(&c, "section.card").await;
    for shown in [
        "payout",
        "payer",
        "$123.45",
        "acct/9",
        "critical",
        "Big payouts need a second look",
    ] {
        assert!(card.contains(shown), "{shown} in {card}");
    }
    shots.take(&c, "inbox").await;
    click(&c, "section.card form button.primary").await;
    wait_path(&c, |p| p.starts_with("/approvals/apr_")).await;
    shots.take(&c, "approval").await;
    c.set_window_size(390, 844).await.unwrap();
    shots.take(&c, "approval-phone").await;
    c.set_window_size(1280, 900).await.unwrap();
    fill(&c, "textarea[name=comment]", "IBAN checked").await;
    click(&c, "button.approve").await;
    wait_for_text(&c, "6-digit code").await;
    let mails = sink.wait_for(2, Duration::from_secs(15)).await;
    let code = mails
        .iter()
        .find_map(|m| m.code())
        .expect("the code's e-mail");
    fill(&c, "input[name=otp]", &code).await;
    fill(&c, "textarea[name=comment]", "IBAN checked").await;
    click(&c, "button.approve").await;
    wait_for_text(&c, "approved").await;

    // The list, filtered through its form by action and by policy.
    let other = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "payer", "action": "balance.read"}),
        )
        .await;
    let other = other.body["evaluation_id"].as_str().unwrap().to_owned();
    c.goto(&format!("{base}/evaluations")).await.unwrap();
    assert!(page_has(&c, &other).await && page_has(&c, &id).await);
    fill(&c, "#action", "payout").await;
    fill(&c, "#policy", "payouts").await;
    click(&c, "form[role=search] button").await;
    for _ in 0..100 {
        if c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("policy=payouts")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(path_of(&c).await.contains("action=payout"));
    assert!(page_has(&c, &id).await);
    assert!(!page_has(&c, &other).await);
    shots.take(&c, "evaluations").await;

    // The evaluation's page tells the whole story.
    c.goto(&format!("{base}/evaluations/{id}")).await.unwrap();
    let timeline = text_of(&c, "#timeline").await;
    for kind in [
        "evaluation.created",
        "approval.viewed",
        "approval.otp_sent",
        "approval.decided",
    ] {
        assert!(timeline.contains(kind), "{kind} in {timeline}");
    }
    assert!(timeline.contains("IBAN checked"));
    shots.take(&c, "evaluation").await;

    // Replaying a draft from the editor: the answer swapped in by htmx in place, the draft
    // kept, the page not left.
    c.goto(&format!("{base}/policies/payouts")).await.unwrap();
    let editor = c.find(Locator::Css("#document")).await.unwrap();
    editor.clear().await.unwrap();
    editor
        .send_keys(&PAYOUTS.replace("amount_cents > 100", "amount_cents > 100000000"))
        .await
        .unwrap();
    click(&c, "#editor button[formaction='/policies/payouts/replay']").await;
    wait_for_text(&c, "would change").await;
    let replay = text_of(&c, "#replay").await;
    assert!(replay.contains("require_approval->allow: 1"), "{replay}");
    assert_eq!(path_of(&c).await, "/policies/payouts");
    let draft = c
        .execute("return document.querySelector('#document').value", vec![])
        .await
        .unwrap();
    assert!(draft.as_str().unwrap().contains("100000000"), "{draft}");
    c.goto(&format!("{base}/audit")).await.unwrap();
    click(&c, "form[action='/audit/verify'] button").await;
    wait_for_text(&c, "Chain intact").await;
    shots.take(&c, "audit").await;
    c.goto(&format!("{base}/settings")).await.unwrap();
    shots.take(&c, "settings").await;
    // The reports draw the period's days as bars, without script of their own.
    c.goto(&format!("{base}/reports")).await.unwrap();
    let bars = c
        .execute(
            "return document.querySelectorAll('figure.chart rect').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(bars.as_u64().unwrap_or(0) >= 1, "{bars}");
    shots.take(&c, "reports").await;

    // The agent that proposed the payout is in the inventory; suspended from its row, it is
    // denied at once; resumed, it is not.
    c.goto(&format!("{base}/agents")).await.unwrap();
    assert!(text_of(&c, "table").await.contains("payer"));
    fill(
        &c,
        "form[action='/agents/suspend'] input[name=reason]",
        "payout loop",
    )
    .await;
    click_confirmed(&c, "form[action='/agents/suspend'] button.danger").await;
    wait_for_text(&c, "payout loop").await;
    assert!(text_of(&c, "table").await.contains("suspended"));
    shots.take(&c, "agents").await;
    let stopped = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "payer", "action": "payout", "amount_cents": 1}),
        )
        .await;
    assert_eq!(stopped.body["reason"], "agent suspended: payout loop");
    click(&c, "form[action='/agents/resume'] button").await;
    // The page it comes back to no longer shows the suspension (text the page had before the
    // click would be found on the old page, which the navigation then takes away).
    wait_for_no_text(&c, "payout loop").await;
    assert!(!text_of(&c, "table").await.contains("suspended"));

    // A viewer, invited by e-mail, sets a password, signs in, and can change nothing.
    c.goto(&format!("{base}/members")).await.unwrap();
    fill(&c, "#email", "vera@example.com").await;
    fill(&c, "#roles", "viewer").await;
    click(&c, "form[action='/members'] button.primary").await;
    wait_for_text(&c, "was invited").await;
    shots.take(&c, "members").await;
    let mails = sink.wait_for(3, Duration::from_secs(15)).await;
    let text = mails
        .iter()
        .map(|m| m.text())
        .find(|t| t.contains("/invitations/"))
        .expect("the invitation");
    let at = text.find("/invitations/").unwrap();
    let link: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    click(&c, "form[action='/sign-out'] button").await;
    expect_path(&c, "/sign-in").await;
    c.goto(&format!("{base}{link}")).await.unwrap();
    fill(&c, "#password", "vera's own password").await;
    click(&c, "button.primary").await;
    expect_path(&c, "/").await;
    assert!(
        text_of(&c, "header .who")
            .await
            .contains("vera@example.com")
    );
    c.goto(&format!("{base}/agents")).await.unwrap();
    assert!(text_of(&c, "table").await.contains("payer"));
    assert!(
        c.find_all(Locator::Css(
            "form[action^='/agents/'], form[action='/kill-switch']"
        ))
        .await
        .unwrap()
        .is_empty()
    );
    c.goto(&format!("{base}/keys")).await.unwrap();
    assert!(!page_has(&c, "Create a key").await);
    assert!(
        c.find_all(Locator::Css("form[action$='/revoke']"))
            .await
            .unwrap()
            .is_empty()
    );
    c.goto(&format!("{base}/policies/payouts")).await.unwrap();
    assert!(
        c.find_all(Locator::Css("#editor"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.find_all(Locator::Css("form[action$='/rollback']"))
            .await
            .unwrap()
            .is_empty()
    );
    c.close().await.unwrap();

    // Dark: the same pages, as someone whose system prefers it sees them.
    let dark = driver.browser(true).await;
    sign_in(&dark, &base, "owner@example.com", "pw").await;
    expect_path(&dark, "/").await;
    assert_eq!(
        dark.execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![]
        )
        .await
        .unwrap(),
        json!(true)
    );
    for (path, name) in [
        ("/", "overview-dark"),
        ("/policies/payouts", "policy-dark"),
        ("/evaluations", "evaluations-dark"),
        ("/audit", "audit-dark"),
        ("/keys", "keys-dark"),
        ("/members", "members-dark"),
        ("/agents", "agents-dark"),
        ("/reports", "reports-dark"),
        ("/settings", "settings-dark"),
    ] {
        dark.goto(&format!("{base}{path}")).await.unwrap();
        shots.take(&dark, name).await;
    }
    let again = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "payer", "action": "payout", "amount_cents": 999}),
        )
        .await;
    assert_eq!(again.body["status"], "pending");
    dark.goto(&format!("{base}/inbox")).await.unwrap();
    shots.take(&dark, "inbox-dark").await;
    click(&dark, "section.card form button.primary").await;
    wait_path(&dark, |p| p.starts_with("/approvals/apr_")).await;
    shots.take(&dark, "approval-dark").await;
    dark.set_window_size(390, 844).await.unwrap();
    shots.take(&dark, "approval-phone-dark").await;
    dark.close().await.unwrap();
    app.stop().await;
});

/// Sets a form field by name on whatever page the browser is at (an identity provider's).
async fn set_field(c: &Client, name: &str, value: &str) {
    c.execute(
        "const f = document.querySelector(`[name=\"${arguments[0]}\"]`); \
         if (f) { f.value = arguments[1]; } return !!f;",
        vec![json!(name), json!(value)],
    )
    .await
    .unwrap();
}

/// Submits a form as its button would (an identity provider's page, whose buttons vary).
async fn submit_form(c: &Client, css: &str) {
    c.execute(
        "const f = document.querySelector(arguments[0]); f.requestSubmit ? f.requestSubmit() : f.submit();",
        vec![json!(css)],
    )
    .await
    .unwrap();
}

both_backends!(single_sign_on_in_the_browser, |backend| async move {
    use agentnexus_testkit::idp::{OidcIdp, SamlIdp};
    let app = TestApp::spawn(backend).await;
    let base = app.url.clone();
    let oidc = OidcIdp::start(
        &format!("{base}/sso/oidc/callback"),
        json!({"alice": {"email": "alice@corp.example", "email_verified": true,
                         "groups": ["admins"]}}),
    )
    .await;
    let driver = Driver::start().await;
    let shots = Shots::new(backend);

    // The owner connects the workspace on the settings page.
    let owner = driver.browser(false).await;
    sign_in(&owner, &base, "owner@example.com", "pw").await;
    expect_path(&owner, "/").await;
    owner.goto(&format!("{base}/settings#sso")).await.unwrap();
    assert!(page_has(&owner, "none: everyone signs in with a password").await);
    fill(&owner, "#sso-issuer", &oidc.issuer).await;
    fill(&owner, "#sso-client-id", &oidc.client_id).await;
    fill(&owner, "#sso-client-secret", &oidc.client_secret).await;
    fill(&owner, "#sso-role-claim", "groups").await;
    fill(&owner, "#sso-role-map", "admins = admin").await;
    fill(&owner, "#sso-domains", "corp.example").await;
    click(&owner, "#sso-form input[name=jit]").await;
    click(&owner, "#sso-form button").await;
    wait_for_text(
        &owner,
        &format!("OpenID Connect with <code>{}</code>", oidc.issuer),
    )
    .await;
    expect_path(&owner, "/settings").await;
    assert!(page_has(&owner, "(set; leave empty to keep it)").await);
    assert!(!page_has(&owner, &oidc.client_secret).await);
    owner
        .execute("document.getElementById('sso').scrollIntoView()", vec![])
        .await
        .unwrap();
    shots.take(&owner, "settings-sso").await;

    // Alice signs in from the sign-in page: her domain sends her to the provider, its login
    // form, and back, a member with her group's role.
    let alice = driver.browser(false).await;
    alice.goto(&format!("{base}/sign-in")).await.unwrap();
    fill(&alice, "#email", "alice@corp.example").await;
    click(&alice, "button[formaction='/sso/start']").await;
    wait_path(&alice, |p| p.starts_with("/interaction/")).await;
    set_field(&alice, "login", "alice").await;
    set_field(&alice, "password", "any password").await;
    click(&alice, "button[type=submit]").await;
    wait_for_text(&alice, "alice@corp.example").await;
    let url = alice.current_url().await.unwrap();
    assert_eq!(url.as_str(), format!("{base}/"));
    alice.goto(&format!("{base}/members")).await.unwrap();
    assert!(page_has(&alice, "alice@corp.example").await);

    // The same workspace on SAML: the provider's form, its auto-posting page, the ACS.
    let (acs, entity) = (
        format!("{base}/sso/saml/acs"),
        format!("{base}/sso/saml/metadata"),
    );
    let saml = SamlIdp::start(&acs, &entity).await;
    let put = app
        .put(
            "/api/v1/settings/sso",
            &app.admin_key,
            &json!({"saml": {"idp_metadata_url": saml.metadata_url}, "domains": ["corp.example"],
                    "jit": true}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let dana = driver.browser(true).await;
    dana.goto(&format!("{base}/sign-in")).await.unwrap();
    fill(&dana, "#email", "dana@corp.example").await;
    click(&dana, "button[formaction='/sso/start']").await;
    wait_path(&dana, |p| p.starts_with("/saml/sso")).await;
    set_field(&dana, "userName", "dana@corp.example").await;
    set_field(&dana, "email", "dana@corp.example").await;
    submit_form(&dana, "form[action$='/signin']").await;
    wait_for_text(&dana, "dana@corp.example").await;
    assert_eq!(
        dana.current_url().await.unwrap().as_str(),
        format!("{base}/")
    );

    // A refusal is a page that says why: the same sign-in by an address outside the domains.
    let eve = driver.browser(false).await;
    eve.goto(&format!("{base}/sso/start?workspace=default"))
        .await
        .unwrap();
    wait_path(&eve, |p| p.starts_with("/saml/sso")).await;
    set_field(&eve, "userName", "eve@elsewhere.example").await;
    set_field(&eve, "email", "eve@elsewhere.example").await;
    submit_form(&eve, "form[action$='/signin']").await;
    wait_for_text(&eve, "Single sign-on refused").await;
    assert!(page_has(&eve, "outside the e-mail domains").await);
    shots.take(&eve, "sso-refused").await;

    for c in [owner, alice, dana, eve] {
        c.close().await.unwrap();
    }
    app.stop().await;
});
