//! The dashboard over plain HTTP, as a browser without script would use it, on both stores:
//! sign-in and sessions, CSRF, roles, invitations, the policy editor, keys, the inbox with a
//! one-time code, timelines, the audit page, and workspaces kept apart. (The headless-browser
//! flows are in `dashboard_browser.rs`.)

mod common;

use std::time::Duration;

use agentnexus_app::accounts;
use agentnexus_store::Actor;
use agentnexus_testkit::{SmtpSink, both_backends};
use common::TestApp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

/// A browser: one cookie, no redirects followed (tests look at them).
struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .html
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.html));
        let rest = &self.html[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn has(&self, text: &str) -> bool {
        self.html.contains(text)
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.url.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", format!("anx_session={c}")),
            None => req,
        };
        let r = req.send().await.unwrap();
        if let Some(set) = r.headers().get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let value = set
                .strip_prefix("anx_session=")
                .and_then(|v| v.split(';').next())
                .unwrap();
            self.cookie = Some(value.to_owned()).filter(|v| !v.is_empty());
        }
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            html: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    async fn submit(&mut self, from: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }

    /// Signs in as a form posted with these extra headers would.
    async fn sign_in_with(
        &mut self,
        headers: &[(&str, &str)],
        email: &str,
        password: &str,
    ) -> Page {
        let mut req = self
            .client
            .post(format!("{}/sign-in", self.base))
            .form(&[("email", email), ("password", password)]);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req).await
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.post("/sign-in", &[("email", email), ("password", password)])
            .await
    }
}

async fn signed_in_owner(app: &TestApp) -> Browser {
    let mut b = Browser::new(app);
    let page = b.sign_in("owner@example.com", "pw").await;
    assert_eq!(page.status, 303, "{}", page.html);
    b
}

async fn audit_kinds(app: &TestApp) -> Vec<String> {
    let r = app.get("/api/v1/audit?limit=1000", &app.admin_key).await;
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

both_backends!(sign_in_sessions_and_headers, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let mut b = Browser::new(&app);

    // No session: to the sign-in form, whose fields are `email` and `password`.
    let home = b.get("/").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.location(), "/sign-in");
    let form = b.get("/sign-in").await;
    assert_eq!(form.status, 200);
    assert!(form.has("name=\"email\"") && form.has("name=\"password\""));

    // Wrong password and unknown address answer alike.
    let wrong = b.sign_in("owner@example.com", "not it").await;
    let unknown = b.sign_in("nobody@example.com", "not it").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(wrong.has("role=\"alert\""));
    let alert = |p: &Page| {
        let at = p.html.find("role=\"alert\">").unwrap();
        p.html[at..at + 80].to_owned()
    };
    assert_eq!(alert(&wrong), alert(&unknown));
    assert!(b.cookie.is_none());

    // The right one: a session cookie, HttpOnly and SameSite=Lax (no Secure over http).
    let ok = b.sign_in("Owner@Example.com", "pw").await;
    assert_eq!(ok.status, 303, "{}", ok.html);
    assert_eq!(ok.location(), "/");
    let set = ok.headers[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
    assert!(!set.contains("ses_") || b.cookie.as_deref().is_some_and(|c| set.contains(c)));

    // Every page answers signed in, with the headers SPEC §11 asks for.
    for path in [
        "/",
        "/inbox",
        "/policies",
        "/policies/simulate",
        "/evaluations",
        "/audit",
        "/keys",
        "/members",
        "/settings",
        "/account",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.html);
        assert!(page.has("owner@example.com"), "{path}");
        let h = &page.headers;
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }
    // The sign-in page of someone signed in leads home.
    assert_eq!(b.get("/sign-in").await.location(), "/");

    // A session is stored hashed: the cookie's token is nowhere in the database.
    let token = b.cookie.clone().unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM sessions")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(!stored.is_empty() && stored.iter().all(|h| !h.contains(&token)));

    // Signing out ends the session here and for anyone holding the cookie.
    let out = b.submit("/", "/sign-out", &[]).await;
    assert_eq!(out.status, 303);
    assert!(b.cookie.is_none());
    b.cookie = Some(token);
    assert_eq!(b.get("/").await.location(), "/sign-in");

    let kinds = audit_kinds(&app).await;
    for kind in [
        "session.sign_in_failed",
        "session.signed_in",
        "session.signed_out",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    app.stop().await;
});

both_backends!(sign_in_is_rate_limited, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let mut b = Browser::new(&app);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(b.sign_in("owner@example.com", "guess").await.status);
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[11], 429);
    // Even the right password waits now.
    let right = b.sign_in("owner@example.com", "pw").await;
    assert_eq!(right.status, 429);
    assert!(right.headers.contains_key("retry-after"));
    // Another account from the same address is still let in (up to the address's limit).
    let other = b.sign_in("someone@example.com", "guess").await;
    assert_eq!(other.status, 401);
    app.stop().await;
});

both_backends!(forms_need_the_sessions_csrf_token, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let mut b = signed_in_owner(&app).await;
    let keys_before = app.get("/api/v1/keys", &app.admin_key).await.body["keys"]
        .as_array()
        .unwrap()
        .len();
    for form in [
        vec![("name", "ci"), ("scope", "admin")],
        vec![("csrf", "0000"), ("name", "ci"), ("scope", "admin")],
    ] {
        let refused = b.post("/keys", &form).await;
        assert_eq!(refused.status, 403, "{}", refused.html);
    }
    // Another session's token does not do either.
    let mut other = signed_in_owner(&app).await;
    let their = other.get("/keys").await.csrf();
    assert_ne!(their, b.get("/keys").await.csrf());
    let refused = b
        .post(
            "/keys",
            &[("csrf", &their), ("name", "ci"), ("scope", "admin")],
        )
        .await;
    assert_eq!(refused.status, 403);
    let keys_after = app.get("/api/v1/keys", &app.admin_key).await.body["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(keys_before, keys_after, "nothing was created");

    // With it: the key's secret is shown once, and it works.
    let created = b
        .submit("/keys", "/keys", &[("name", "ci"), ("scope", "agent")])
        .await;
    assert_eq!(created.status, 200, "{}", created.html);
    let at = created.html.find("id=\"new-secret\">").unwrap();
    let secret = created.html[at + 16..]
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("anx_"));
    let evaluated = app
        .evaluate(&secret, json!({"agent_id": "a", "action": "read"}))
        .await;
    assert_eq!(evaluated.status, 200);
    let listing = b.get("/keys").await;
    assert!(!listing.has(&secret), "the secret is not shown again");
    // Revoked from the page, it stops working.
    let id = app.get("/api/v1/keys", &app.admin_key).await.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = b.submit("/keys", &format!("/keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.status, 303);
    let refused = app
        .evaluate(&secret, json!({"agent_id": "a", "action": "read"}))
        .await;
    assert_eq!(refused.status, 401);
    app.stop().await;
});

both_backends!(
    invited_members_set_a_password_and_roles_hold,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let smtp = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
        let mut owner = signed_in_owner(&app).await;
        let invited = owner
            .submit(
                "/members",
                "/members",
                &[
                    ("email", "Vera@Example.com"),
                    ("name", "Vera"),
                    ("roles", "viewer"),
                ],
            )
            .await;
        assert_eq!(invited.status, 303, "{}", invited.html);
        let mails = sink.wait_for(1, Duration::from_secs(15)).await;
        let text = mails[0].text();
        assert_eq!(mails[0].header("To").unwrap(), "vera@example.com");
        let at = text.find("/invitations/").expect("an invitation link");
        let token: String = text[at + 13..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();

        let mut vera = Browser::new(&app);
        let page = vera.get(&format!("/invitations/{token}")).await;
        assert_eq!(page.status, 200, "{}", page.html);
        assert!(page.has("vera@example.com"));
        let short = vera
            .post(&format!("/invitations/{token}"), &[("password", "short")])
            .await;
        assert_eq!(short.status, 422);
        let accepted = vera
            .post(
                &format!("/invitations/{token}"),
                &[("password", "a long enough password")],
            )
            .await;
        assert_eq!(accepted.status, 303, "{}", accepted.html);
        assert!(vera.cookie.is_some());
        // Single use.
        let again = Browser::new(&app)
            .post(
                &format!("/invitations/{token}"),
                &[("password", "another long password")],
            )
            .await;
        assert_eq!(again.status, 410);

        // A viewer reads every page but changes nothing, whatever the form.
        assert_eq!(vera.get("/policies").await.status, 200);
        assert!(!vera.get("/keys").await.has("Create a key"));
        let csrf = vera.get("/keys").await.csrf();
        for (path, form) in [
            ("/keys", vec![("name", "x"), ("scope", "admin")]),
            (
                "/members",
                vec![("email", "eve@example.com"), ("roles", "owner")],
            ),
            (
                "/policies",
                vec![
                    ("name", "p"),
                    ("document", "name: p\nrules:\n  - id: r\n    effect: deny\n"),
                ],
            ),
            ("/settings/workspace", vec![("currency", "EUR")]),
        ] {
            let mut fields = vec![("csrf", csrf.as_str())];
            fields.extend(form);
            let refused = vera.post(path, &fields).await;
            assert_eq!(refused.status, 403, "{path}: {}", refused.html);
        }
        let members = app.get("/api/v1/members", &app.admin_key).await;
        assert_eq!(members.body["members"].as_array().unwrap().len(), 2);
        assert_eq!(
            app.get("/api/v1/policies", &app.admin_key).await.body["policies"],
            json!([])
        );
        assert_eq!(
            app.get("/api/v1/settings/workspace", &app.admin_key)
                .await
                .body["currency"],
            "USD"
        );

        // Vera signs in with her password; changing it needs the current one and ends her other
        // sessions.
        let mut second = Browser::new(&app);
        assert_eq!(
            second
                .sign_in("vera@example.com", "a long enough password")
                .await
                .status,
            303
        );
        let wrong = vera
            .submit(
                "/account",
                "/account/password",
                &[
                    ("current_password", "nope"),
                    ("new_password", "the newer password"),
                ],
            )
            .await;
        assert_eq!(wrong.status, 422);
        let changed = vera
            .submit(
                "/account",
                "/account/password",
                &[
                    ("current_password", "a long enough password"),
                    ("new_password", "the newer password"),
                ],
            )
            .await;
        assert_eq!(changed.status, 200, "{}", changed.html);
        assert_eq!(second.get("/").await.location(), "/sign-in");
        assert_eq!(vera.get("/").await.status, 200, "this session stays");
        assert_eq!(
            Browser::new(&app)
                .sign_in("vera@example.com", "the newer password")
                .await
                .status,
            303
        );

        // Roles changed from the page take effect at once; the last owner stays.
        let vera_id = members.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == "vera@example.com")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let owner_id = members.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == "owner@example.com")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let promoted = owner
            .submit(
                "/members",
                &format!("/members/{vera_id}"),
                &[("roles", "admin")],
            )
            .await;
        assert_eq!(promoted.status, 303, "{}", promoted.html);
        assert!(vera.get("/keys").await.has("Create a key"));
        let last_owner = owner
            .submit("/members", &format!("/members/{owner_id}/remove"), &[])
            .await;
        assert_eq!(last_owner.status, 409, "{}", last_owner.html);

        let kinds = audit_kinds(&app).await;
        for kind in [
            "member.invited",
            "invitation.accepted",
            "account.password_changed",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        app.stop().await;
    }
);

const DRAFT: &str =
    "name: refunds\nrules:\n  - id: big\n    when: amount_cents > 100\n    effect: deny\n";

both_backends!(
    policy_editor_versions_diff_and_rollback,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut b = signed_in_owner(&app).await;

        // An error is shown at its line, by the API's validator, and the text is kept.
        let broken =
            "name: refunds\nrules:\n  - id: big\n    when: amount_cents >\n    effect: deny\n";
        let live = b
            .submit("/policies", "/policies/validate", &[("document", broken)])
            .await;
        assert_eq!(live.status, 200);
        assert!(live.has("class=\"problems\""), "{}", live.html);
        assert!(
            live.html.contains("4:"),
            "the line of the error: {}",
            live.html
        );
        let refused = b
            .submit(
                "/policies",
                "/policies",
                &[("name", "refunds"), ("document", broken)],
            )
            .await;
        assert_eq!(refused.status, 422);
        assert!(refused.has("amount_cents &#62;"), "the draft is kept");
        assert_eq!(
            app.get("/api/v1/policies", &app.admin_key).await.body["policies"],
            json!([])
        );
        let valid = b
            .submit("/policies", "/policies/validate", &[("document", DRAFT)])
            .await;
        assert!(valid.has("Valid"), "{}", valid.html);

        let created = b
            .submit(
                "/policies",
                "/policies",
                &[("name", "refunds"), ("document", DRAFT)],
            )
            .await;
        assert_eq!(created.status, 303, "{}", created.html);
        assert_eq!(created.location(), "/policies/refunds");
        let second = DRAFT.replace("> 100", "> 5000");
        let saved = b
            .submit(
                "/policies/refunds",
                "/policies/refunds",
                &[("document", &second)],
            )
            .await;
        assert_eq!(saved.status, 303, "{}", saved.html);
        assert_eq!(saved.location(), "/policies/refunds?saved=1");
        let page = b.get(saved.location()).await;
        assert!(page.has("v2") && page.has("Saved as version 2"));

        let diff = b.get("/policies/refunds/diff?from=1&to=2").await;
        assert_eq!(diff.status, 200);
        assert!(
            diff.has("<span class=\"del\">-    when: amount_cents &#62; 100</span>"),
            "{}",
            diff.html
        );
        assert!(diff.has("<span class=\"add\">+    when: amount_cents &#62; 5000</span>"));

        let rolled = b
            .submit(
                "/policies/refunds",
                "/policies/refunds/rollback",
                &[("version", "1")],
            )
            .await;
        assert_eq!(rolled.status, 303, "{}", rolled.html);
        let active = app.get("/api/v1/policies/refunds", &app.admin_key).await;
        assert_eq!(active.body["version"], 3);
        assert!(active.body["document"].as_str().unwrap().contains("> 100"));
        let decided = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "x", "amount_cents": 200}),
            )
            .await;
        assert_eq!(decided.body["matched_rules"][0]["rule"], "big");

        let disabled = b
            .submit(
                "/policies/refunds",
                "/policies/refunds/enabled",
                &[("enabled", "false")],
            )
            .await;
        assert_eq!(disabled.status, 303);
        let active = app.get("/api/v1/policies/refunds", &app.admin_key).await;
        assert_eq!(
            (
                active.body["version"].clone(),
                active.body["enabled"].clone()
            ),
            (json!(4), json!(false)),
            "{}",
            active.body
        );
        let decided = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "x", "amount_cents": 200}),
            )
            .await;
        assert_eq!(
            decided.body["matched_rules"],
            json!([]),
            "the policy takes no part"
        );
        let enabled = b
            .submit(
                "/policies/refunds",
                "/policies/refunds/enabled",
                &[("enabled", "true")],
            )
            .await;
        assert_eq!(enabled.status, 303);
        let active = app.get("/api/v1/policies/refunds", &app.admin_key).await;
        assert_eq!(
            (
                active.body["version"].clone(),
                active.body["enabled"].clone()
            ),
            (json!(5), json!(true))
        );
        let versions = app
            .get("/api/v1/policies/refunds/versions", &app.admin_key)
            .await;
        assert_eq!(versions.body["versions"][0]["source"], "dashboard");

        // Simulation decides against what is in force, recording nothing.
        let before = app.audit_len().await;
        let sim = b
            .submit(
                "/policies/simulate",
                "/policies/simulate",
                &[(
                    "proposal",
                    r#"{"agent_id": "a", "action": "x", "amount_cents": 200}"#,
                )],
            )
            .await;
        assert_eq!(sim.status, 200, "{}", sim.html);
        assert!(
            sim.has("id=\"decision\" class=\"s-denied\">deny"),
            "{}",
            sim.html
        );
        assert_eq!(app.audit_len().await, before);
        app.stop().await;
    }
);

const CRITICAL: &str = r#"name: payouts
rules:
  - id: big
    when: amount_cents > 100
    effect: require_approval
    tier: critical
    reason: Big payouts need a second look
    approval:
      stages:
        - name: owners
          approvers: ["role:owner"]
          timeout: 1h
"#;

both_backends!(
    the_inbox_decides_with_a_code_and_the_timeline_shows_it,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let smtp = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
        assert_eq!(app.put_policy("payouts", CRITICAL).await.status, 200);
        let ev = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "payer", "action": "payout", "resource": "acct/9", "amount_cents": 12345, "params": {"iban": "DE00"}}),
        )
        .await;
        let id = ev.body["evaluation_id"].as_str().unwrap().to_owned();
        // The stage's own e-mail.
        sink.wait_for(1, Duration::from_secs(15)).await;

        let mut b = signed_in_owner(&app).await;
        let overview = b.get("/").await;
        assert!(
            overview.has("id=\"waiting-for-me\">1<"),
            "{}",
            overview.html
        );
        let inbox = b.get("/inbox").await;
        for shown in [
            "payout",
            "payer",
            "acct/9",
            "$123.45",
            "critical",
            "Big payouts need a second look",
            "DE00",
        ] {
            assert!(inbox.has(shown), "{shown} in the inbox");
        }
        // Opening the decision leads to the approval page with a link of the owner's own.
        let opened = b.submit("/inbox", &format!("/inbox/{id}"), &[]).await;
        assert_eq!(opened.status, 303, "{}", opened.html);
        let to = opened.location().to_owned();
        assert!(to.starts_with("/approvals/apr_"), "{to}");
        let approve = [("decision", "approve"), ("comment", "checked the IBAN")];
        let asked = b.post(&to, &approve).await;
        assert_eq!(asked.status, 200);
        assert!(asked.has("6-digit code"), "{}", asked.html);
        let mails = sink.wait_for(2, Duration::from_secs(15)).await;
        let code = mails
            .iter()
            .find_map(|m| m.code())
            .expect("a code was e-mailed");
        // A wrong code: said in words, the form again with the comment kept.
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let missed = b
            .post(
                &to,
                &[
                    ("decision", "approve"),
                    ("comment", "checked the IBAN"),
                    ("otp", wrong),
                ],
            )
            .await;
        assert_eq!(missed.status, 422);
        assert!(missed.has("That code did not work"), "{}", missed.html);
        assert!(
            missed.has(">checked the IBAN</textarea>"),
            "{}",
            missed.html
        );
        assert!(!missed.has("otp:"), "no API wording");
        let with_code = [
            ("decision", "approve"),
            ("comment", "checked the IBAN"),
            ("otp", code.as_str()),
        ];
        let recorded = b.post(&to, &with_code).await;
        assert!(recorded.has("approved"), "{}", recorded.html);

        let page = b.get(&format!("/evaluations/{id}")).await;
        assert!(
            page.has("approval.decided") && page.has("checked the IBAN"),
            "{}",
            page.html
        );
        assert!(b.get("/inbox").await.has("id=\"inbox-empty\""));
        let decided = app
            .timeline_events(&app.admin_key, &id, "approval.decided")
            .await;
        assert_eq!(decided[0]["actor"], "member:owner@example.com");

        // The audit page lists the events and verifies the chain.
        let verified = b.submit("/audit", "/audit/verify", &[]).await;
        assert_eq!(verified.status, 303);
        let audit = b.get("/audit").await;
        assert!(audit.has("Chain intact"), "{}", audit.html);
        assert!(audit.has("approval.decided"));

        // And offers the evidence bundle of the days chosen.
        assert!(
            audit.has("action=\"/audit/evidence.zip\""),
            "{}",
            audit.html
        );
        let today = app.clock.now().date_naive();
        let zip = b
            .get(&format!("/audit/evidence.zip?from={today}&to={today}"))
            .await;
        assert_eq!(zip.status, 200);
        assert_eq!(zip.headers["content-type"], "application/zip");
        assert!(zip.html.starts_with("PK"));
        for file in [
            "SHA256SUMS",
            "attestation.json",
            "evaluations.csv",
            "verify.py",
        ] {
            assert!(zip.has(file), "{file}");
        }
        let bad = b.get("/audit/evidence.zip?from=yesterday").await;
        assert_eq!(bad.status, 422);
        assert!(bad.has("must be a day"), "{}", bad.html);
        app.stop().await;
    }
);

both_backends!(a_session_sees_only_its_workspace, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let other = accounts::create_workspace(
        &app.store,
        "acme",
        "mallory@example.com",
        Some("mallory's password".into()),
        Actor::Cli,
    )
    .await
    .unwrap();
    assert_eq!(app.put_policy("payouts", CRITICAL).await.status, 200);
    let ours = app
        .evaluate(
            &app.admin_key,
            json!({"agent_id": "ours", "action": "payout", "amount_cents": 500}),
        )
        .await;
    let ours = ours.body["evaluation_id"].as_str().unwrap().to_owned();
    let theirs = app
        .evaluate(
            &other.admin_key,
            json!({"agent_id": "theirs", "action": "x"}),
        )
        .await;
    let theirs = theirs.body["evaluation_id"].as_str().unwrap().to_owned();

    let mut mallory = Browser::new(&app);
    assert_eq!(
        mallory
            .sign_in("mallory@example.com", "mallory's password")
            .await
            .status,
        303
    );
    assert_eq!(
        mallory.get(&format!("/evaluations/{theirs}")).await.status,
        200
    );
    assert_eq!(
        mallory.get(&format!("/evaluations/{ours}")).await.status,
        404
    );
    assert!(!mallory.get("/evaluations").await.has(&ours));
    assert!(!mallory.get("/policies").await.has("payouts"));
    assert!(!mallory.get("/members").await.has("owner@example.com"));
    let refused = mallory.submit("/", &format!("/inbox/{ours}"), &[]).await;
    assert_eq!(refused.status, 404);

    // A person in two workspaces switches between them.
    app.post(
        "/api/v1/members",
        &other.admin_key,
        &json!({"email": "owner@example.com", "roles": ["viewer"]}),
    )
    .await;
    // They land in the first by name, where they only read.
    let mut owner = signed_in_owner(&app).await;
    let account = owner.get("/account").await;
    assert!(
        account.has("<strong>acme</strong> (this one)"),
        "{}",
        account.html
    );
    let list = owner.get("/evaluations").await;
    assert!(list.has(&theirs) && !list.has(&ours));
    assert!(
        !owner.get("/keys").await.has("Create a key"),
        "a viewer in acme"
    );
    let switched = owner
        .submit(
            "/account",
            "/account/workspace",
            &[("workspace", "default")],
        )
        .await;
    assert_eq!(switched.status, 303);
    let list = owner.get("/evaluations").await;
    assert!(list.has(&ours) && !list.has(&theirs));
    assert!(
        owner.get("/keys").await.has("Create a key"),
        "an owner in default"
    );
    app.stop().await;
});

both_backends!(
    the_chat_sign_in_page_takes_a_dashboard_session,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("payouts", CRITICAL).await.status, 200);
        let ev = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "a", "action": "payout", "amount_cents": 500}),
            )
            .await;
        let id = ev.body["evaluation_id"].as_str().unwrap().to_owned();
        let anonymous = Browser::new(&app)
            .get(&format!("/approvals/evaluations/{id}"))
            .await;
        assert!(!anonymous.has("Review and decide"));
        let mut b = signed_in_owner(&app).await;
        let page = b.get(&format!("/approvals/evaluations/{id}")).await;
        assert!(
            page.has("Review and decide as owner@example.com"),
            "{}",
            page.html
        );
        let csrf = page.csrf();
        let opened = b.post(&format!("/inbox/{id}"), &[("csrf", &csrf)]).await;
        assert!(opened.location().starts_with("/approvals/apr_"));
        app.stop().await;
    }
);

const MIXED: &str = "name: mixed
rules:
  - id: reads
    when: action == \"read\"
    effect: allow
  - id: deletes
    when: action == \"delete\"
    effect: deny
  - id: pays
    when: action == \"pay\"
    effect: require_approval
    approval:
      stages:
        - name: owners
          approvers: [\"owner@example.com\"]
";

both_backends!(
    the_overview_counts_today_past_the_lists_catch_up,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("mixed", MIXED).await.status, 200);
        // More than a catch-up's worth (128 events), so some are counted from `decision_counts`
        // and the rest from the chain's tail; pending ones make the catch-up read the chain back.
        for i in 0..150 {
            let action = match i % 50 {
                0 => "delete",
                1 => "pay",
                _ => "read",
            };
            let r = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": format!("agent-{}", i % 3), "action": action, "cost_cents": 7}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        app.store.catch_up_lists().await.unwrap();
        for i in 0..5 {
            app.evaluate(
                &app.admin_key,
                json!({"agent_id": "late", "action": "read", "cost_cents": i}),
            )
            .await;
        }
        let mut b = signed_in_owner(&app).await;
        let overview = b.get("/").await;
        let figures = &overview.html[overview.html.find("id=\"decided-today\"").unwrap()..];
        for (label, n) in [("allowed", 149), ("denied", 3), ("sent for approval", 3)] {
            assert!(
                figures.contains(&format!("{label}</span>: <strong>{n}</strong>")),
                "{label} {n} in {figures}"
            );
        }
        // 150 × 7 ¢ and 0 + 1 + 2 + 3 + 4 ¢.
        assert!(
            overview.has("id=\"spend-today\">$10.60<"),
            "{}",
            overview.html
        );
        assert!(overview.has("id=\"waiting-for-me\">3<"));
        let inbox = b.get("/inbox").await;
        assert_eq!(inbox.html.matches("Review and decide").count(), 3);
        app.stop().await;
    }
);

both_backends!(reports_show_a_period_of_days, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("mixed", MIXED).await.status, 200);
    let agent = app.key("agent").await;
    let propose = async |agent_id: &str, action: &str, cents: i64| {
        let body = json!({"agent_id": agent_id, "action": action, "cost_cents": cents});
        let r = app.evaluate(&agent, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    };
    // Yesterday: two reads and a delete; today: a read and a payment.
    propose("bot-a", "read", 5).await;
    propose("bot-a", "read", 5).await;
    propose("bot-b", "delete", 0).await;
    app.clock.advance(chrono::Duration::days(1));
    propose("bot-a", "read", 5).await;
    propose("bot-b", "pay", 40).await;
    let today = app.clock.now().date_naive();
    let yesterday = today - chrono::Duration::days(1);

    let mut b = signed_in_owner(&app).await;
    let page = b.get("/reports").await;
    assert_eq!(page.status, 200);
    assert!(
        page.has("aria-current=\"page\">Reports<"),
        "in the navigation"
    );
    assert!(page.has("id=\"evaluations\">5<"), "{}", page.html);
    assert!(page.has("id=\"spend\">$0.55<"), "{}", page.html);
    // One bar per day of the default 30, stacked by decision, each titled for screen readers.
    assert!(page.has("role=\"img\""));
    assert!(
        page.has(&format!("{yesterday}: 2 allowed, 1 denied, 0 for approval")),
        "{}",
        page.html
    );
    assert!(page.has(&format!("{today}: 1 allowed, 0 denied, 1 for approval")));
    assert!(
        page.has("<td><code>bot-a</code></td><td>3</td>"),
        "{}",
        page.html
    );

    // Only today.
    let page = b.get(&format!("/reports?from={today}&to={today}")).await;
    assert!(page.has("id=\"evaluations\">2<"), "{}", page.html);
    assert!(page.has("id=\"spend\">$0.45<"), "{}", page.html);
    assert!(!page.has(&format!("{yesterday}:")));
    assert!(
        page.has(&format!("value=\"{today}\"")),
        "the form keeps the days"
    );

    let bad = b.get("/reports?from=last-week").await;
    assert_eq!(bad.status, 422);
    assert!(bad.has("must be a day"), "{}", bad.html);
    app.stop().await;
});

both_backends!(evaluations_filter_by_a_period, |backend| async move {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.put_policy("mixed", MIXED).await.status, 200);
    let mut ids = Vec::new();
    let mut marks = Vec::new();
    for batch in 0..3 {
        // Evaluation ids carry the time they were made at, to the millisecond.
        tokio::time::sleep(Duration::from_millis(15)).await;
        marks.push(chrono::Utc::now());
        tokio::time::sleep(Duration::from_millis(15)).await;
        for i in 0..3 {
            let r = app
                .evaluate(
                    &app.admin_key,
                    json!({"agent_id": format!("b{batch}"), "action": if i == 0 { "delete" } else { "read" }}),
                )
                .await;
            ids.push(r.body["evaluation_id"].as_str().unwrap().to_owned());
        }
    }
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let listed = |q: String| {
        let app = &app;
        async move {
            let r = app
                .get(&format!("/api/v1/evaluations?{q}"), &app.admin_key)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.evaluation_ids()
        }
    };
    // Newest first by id; ids made in the same millisecond order among themselves at random,
    // so a batch is compared as a set.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let middle = sorted(ids[3..6].to_vec());
    let window = format!("from={}&to={}", rfc(marks[1]), rfc(marks[2]));
    let in_window = listed(window.clone()).await;
    assert_eq!(
        in_window,
        sorted(in_window.clone())
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
    );
    assert_eq!(sorted(in_window), middle);
    // With a status (walked through its facet) and paged.
    assert_eq!(
        listed(format!("{window}&status=denied")).await,
        vec![ids[3].clone()]
    );
    let first = app
        .get(
            &format!("/api/v1/evaluations?{window}&limit=2"),
            &app.admin_key,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let mut paged = first.evaluation_ids();
    let rest = listed(format!("{window}&limit=2&cursor={cursor}")).await;
    assert_eq!(rest.len(), 1);
    paged.extend(rest);
    assert_eq!(sorted(paged), middle);
    assert_eq!(listed(format!("from={}", rfc(marks[2]))).await.len(), 3);
    app.get("/api/v1/evaluations?from=yesterday", &app.admin_key)
        .await
        .problem(422);
    // A time before the first possible id is the beginning.
    assert_eq!(listed("from=1900-01-01T00:00:00Z".into()).await.len(), 9);

    // The dashboard's form: `datetime-local` values, in UTC (to the minute here, so all nine).
    let mut b = signed_in_owner(&app).await;
    let minute = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
    let page = b
        .get(&format!(
            "/evaluations?from={}&to=",
            minute(marks[0] - chrono::Duration::minutes(1))
        ))
        .await;
    assert_eq!(page.status, 200);
    assert!(ids.iter().all(|id| page.has(id)));
    let none = b
        .get(&format!(
            "/evaluations?to={}",
            minute(marks[0] - chrono::Duration::minutes(1))
        ))
        .await;
    assert!(none.has("No evaluations match"));
    app.stop().await;
});

both_backends!(
    evaluations_filter_by_action_and_policy,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.put_policy("mixed", MIXED).await.status, 200);
        let refunds = "name: refunds.v2\nrules:\n  - id: small\n    when: action == \"refund\"\n    effect: allow\n";
        assert_eq!(app.put_policy("refunds.v2", refunds).await.status, 200);
        // Past a catch-up's worth (128 events), so both the index and the chain's tail answer.
        let mut made: Vec<(String, &str, &str)> = Vec::new();
        for i in 0..160 {
            let (agent, action) = (
                ["ops-bot", "pay-bot"][i % 2],
                ["read", "delete", "refund", "read now"][i % 4],
            );
            let r = app
                .evaluate(&app.admin_key, json!({"agent_id": agent, "action": action}))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            made.push((
                r.body["evaluation_id"].as_str().unwrap().to_owned(),
                agent,
                action,
            ));
        }
        made.sort_by(|a, b| b.0.cmp(&a.0));
        let ids = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
            made.iter()
                .filter(|(_, agent, action)| keep(agent, action))
                .map(|(id, ..)| id.clone())
                .collect()
        };
        let listed = |q: &'static str| {
            let app = &app;
            async move {
                let r = app
                    .get(
                        &format!("/api/v1/evaluations?limit=500&{q}"),
                        &app.admin_key,
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                r.evaluation_ids()
            }
        };
        assert_eq!(listed("action=delete").await, ids(&|_, a| a == "delete"));
        assert_eq!(
            listed("action=read%20now").await,
            ids(&|_, a| a == "read now")
        );
        // A rule of `mixed` matched reads and deletes; of `refunds.v2`, refunds; none, "read now".
        assert_eq!(
            listed("policy=mixed").await,
            ids(&|_, a| a == "read" || a == "delete")
        );
        assert_eq!(
            listed("policy=refunds.v2").await,
            ids(&|_, a| a == "refund")
        );
        assert_eq!(
            listed("policy=mixed&agent_id=ops-bot&status=allowed").await,
            ids(&|g, a| g == "ops-bot" && a == "read")
        );
        assert_eq!(
            listed("policy=mixed&action=refund").await,
            Vec::<String>::new()
        );
        assert_eq!(listed("policy=refunds").await, Vec::<String>::new());
        for bad in ["policy=Refunds", "policy=a%20b", "action=%01", "action="] {
            let r = app
                .get(&format!("/api/v1/evaluations?{bad}"), &app.admin_key)
                .await;
            r.problem(422);
        }

        // The dashboard's form: both fields, policies offered, kept on the next page's link.
        let mut b = signed_in_owner(&app).await;
        let page = b.get("/evaluations?action=delete&policy=mixed").await;
        assert_eq!(page.status, 200);
        assert!(
            page.has("name=\"action\" value=\"delete\""),
            "{}",
            page.html
        );
        assert!(page.has("name=\"policy\" value=\"mixed\""), "{}", page.html);
        assert!(page.has("<option value=\"refunds.v2\">"), "{}", page.html);
        let deletes = ids(&|_, a| a == "delete");
        assert!(deletes.iter().all(|id| page.has(id)));
        assert!(ids(&|_, a| a != "delete").iter().all(|id| !page.has(id)));
        let page = b.get("/evaluations?policy=refunds.v2").await;
        let refunds = ids(&|_, a| a == "refund");
        assert!(refunds.iter().all(|id| page.has(id)), "{}", page.html);
        assert!(ids(&|_, a| a != "refund").iter().all(|id| !page.has(id)));
        // 80 reads and deletes: a second page, found by the same filters.
        let first = b.get("/evaluations?policy=mixed").await;
        let start = "/evaluations?status=&#38;agent_id=&#38;action=&#38;policy=mixed&#38;";
        let at = first.html.find(start).expect("a link to the next page");
        let link = &first.html[at..];
        let next = b
            .get(&link[..link.find('"').unwrap()].replace("&#38;", "&"))
            .await;
        let mixed = ids(&|_, a| a == "read" || a == "delete");
        assert!(mixed[..50].iter().all(|id| first.has(id) && !next.has(id)));
        assert!(mixed[50..].iter().all(|id| next.has(id) && !first.has(id)));
        let bad = b.get("/evaluations?policy=No!").await;
        assert_eq!(bad.status, 422);
        assert!(bad.has("must be a policy name"), "{}", bad.html);
        app.stop().await;
    }
);

both_backends!(
    settings_show_deadlines_and_the_signing_secret,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let smtp = sink.url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.smtp_url = Some(smtp)).await;
        assert_eq!(app.put_policy("payouts", CRITICAL).await.status, 200);
        app.evaluate(
            &app.admin_key,
            json!({"agent_id": "a", "action": "payout", "amount_cents": 500}),
        )
        .await;
        let mut b = signed_in_owner(&app).await;
        let page = b.get("/settings").await;
        assert!(
            page.has("off on this server"),
            "the tests' servers do not sweep"
        );
        assert!(
            page.has("id=\"overdue\" class=\"ok\">0 waiting stages"),
            "{}",
            page.html
        );
        app.clock.advance(chrono::Duration::hours(2));
        let late = b.get("/settings").await;
        assert!(
            late.has("id=\"overdue\" class=\"warn\">1 waiting stage<"),
            "{}",
            late.html
        );

        // The secret, shown on demand and rotated, as the REST API has it.
        let shown = b
            .submit(
                "/settings",
                "/settings/webhook-secret",
                &[("action", "show")],
            )
            .await;
        let current = app
            .get("/api/v1/webhooks/secret", &app.admin_key)
            .await
            .body["signing_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(shown.has(&format!(">{current}</code>")), "{}", shown.html);
        let rotated = b
            .submit(
                "/settings",
                "/settings/webhook-secret",
                &[("action", "rotate")],
            )
            .await;
        assert!(rotated.has("keeps signing beside it"));
        let now = app
            .get("/api/v1/webhooks/secret", &app.admin_key)
            .await
            .body["signing_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(now, current);
        assert!(rotated.has(&format!(">{now}</code>")));
        assert!(!b.get("/settings").await.has(&now), "not shown again");

        // A test e-mail reaches the person who asked, through the real SMTP path.
        // (The stage's own e-mail to the owner arrives first, whenever its worker runs.)
        sink.wait_for(1, Duration::from_secs(15)).await;
        let tested = b
            .submit("/settings", "/settings/test", &[("channel", "email")])
            .await;
        assert!(tested.has("id=\"tested\""), "{}", tested.html);
        let mails = sink.wait_for(2, Duration::from_secs(15)).await;
        let mail = mails
            .iter()
            .find(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains("AgentNexus test message for default"))
            })
            .expect("the test e-mail");
        assert_eq!(mail.header("To").unwrap(), "owner@example.com");
        assert!(
            audit_kinds(&app)
                .await
                .iter()
                .any(|k| k == "channel.test_queued")
        );

        // The workspace's currency, set from the page: shown, used by the API, audited; a
        // bad code changes nothing.
        assert!(b.get("/settings").await.has("id=\"currency\">USD"));
        let saved = b
            .submit("/settings", "/settings/workspace", &[("currency", "chf")])
            .await;
        assert!(saved.has("Amounts are now shown in CHF."), "{}", saved.html);
        assert!(saved.has("id=\"currency\">CHF"), "{}", saved.html);
        let api = app.get("/api/v1/settings/workspace", &app.admin_key).await;
        assert_eq!(api.body["currency"], "CHF");
        let refused = b
            .submit(
                "/settings",
                "/settings/workspace",
                &[("currency", "Swiss francs")],
            )
            .await;
        assert!(refused.has("ISO 4217"), "{}", refused.html);
        let api = app.get("/api/v1/settings/workspace", &app.admin_key).await;
        assert_eq!(api.body["currency"], "CHF");
        assert!(
            audit_kinds(&app)
                .await
                .iter()
                .any(|k| k == "settings.workspace_updated")
        );
        app.stop().await;
    }
);

both_backends!(test_posts_reach_slack_and_teams, |backend| async move {
    let slack = agentnexus_testkit::chat::FakeSlack::start(&[]).await;
    let teams = agentnexus_testkit::chat::FakeTeams::start().await;
    let app = TestApp::spawn(backend).await;
    let mut b = signed_in_owner(&app).await;
    // Not connected yet: refused, nothing sent, no button offered.
    let refused = b
        .submit("/settings", "/settings/test", &[("channel", "slack")])
        .await;
    assert_eq!(refused.status, 409, "{}", refused.html);
    assert!(!b.get("/settings").await.has("Post a test to Slack"));
    for (path, url) in [
        ("/api/v1/settings/channels/slack", &slack.webhook_url),
        ("/api/v1/settings/channels/teams", &teams.webhook_url),
    ] {
        let r = app
            .request(
                reqwest::Method::PUT,
                path,
                Some(&app.admin_key),
                Some(json!({"webhook_url": url}).to_string().into()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(b.get("/settings").await.has("Post a test to Slack"));
    let posted = b
        .submit("/settings", "/settings/test", &[("channel", "slack")])
        .await;
    assert!(
        posted.has("on its way to the Slack channel"),
        "{}",
        posted.html
    );
    b.submit("/settings", "/settings/test", &[("channel", "teams")])
        .await;
    let posts = slack.wait_for(1, Duration::from_secs(15)).await;
    assert!(slack.refused().is_empty(), "{:?}", slack.refused());
    assert!(
        posts[0].body["text"]
            .as_str()
            .unwrap()
            .contains("AgentNexus test message")
    );
    let cards = teams.wait_for(1, Duration::from_secs(15)).await;
    assert!(teams.refused().is_empty(), "{:?}", teams.refused());
    assert_eq!(
        cards[0]["attachments"][0]["content"]["body"][0]["inlines"][0]["text"],
        "AgentNexus test message"
    );
    app.stop().await;
});

both_backends!(an_unknown_path_is_a_neutral_404, |backend| async move {
    let app = TestApp::spawn(backend).await;
    for path in ["/nothing-here", "/api/v1/nothing-here"] {
        let r = app.get(path, &app.admin_key).await;
        let problem = r.problem(404);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("Nothing is served at this path"),
            "{detail}"
        );
        assert!(!detail.contains("workspace"), "{detail}");
    }
    // A thing of the workspace that is not there still says so.
    let missing = app
        .get(
            "/api/v1/evaluations/ev_00000000000000000000000000",
            &app.admin_key,
        )
        .await;
    assert!(
        missing.problem(404)["detail"]
            .as_str()
            .unwrap()
            .contains("workspace")
    );
    app.stop().await;
});

// Login CSRF: a sign-in form posted from another site is refused (403) and signs nobody in,
// whether the browser says so with Sec-Fetch-Site or only with Origin; from the dashboard's own
// origin, and from clients that send neither header, it works.
both_backends!(sign_in_from_another_site_is_refused, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let host = app.url.trim_start_matches("http://").to_owned();
    let own = app.url.clone();
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
    ] {
        let mut b = Browser::new(&app);
        let page = b.sign_in_with(headers, "owner@example.com", "pw").await;
        assert_eq!(page.status, 403, "{headers:?}: {}", page.html);
        assert!(page.has("sent from another site"), "{}", page.html);
        assert!(b.cookie.is_none(), "{headers:?} signed in");
        assert_eq!(b.get("/").await.location(), "/sign-in");
    }
    for headers in [
        &[("sec-fetch-site", "same-origin"), ("origin", own.as_str())][..],
        &[("origin", own.as_str())],
        &[("sec-fetch-site", "none")],
        &[],
    ] {
        let mut b = Browser::new(&app);
        let page = b.sign_in_with(headers, "owner@example.com", "pw").await;
        assert_eq!(page.status, 303, "{headers:?}: {}", page.html);
        assert_eq!(b.get("/").await.status, 200, "{headers:?} ({host})");
    }
    app.stop().await;
});

// Behind a trusted proxy the sign-in limit per address counts the client's address from
// X-Forwarded-For (the nearest one that is not a proxy, so an address a client prepends
// changes nothing); from anyone else the header is ignored.
both_backends!(
    sign_in_limit_believes_only_trusted_proxies,
    |backend| async move {
        let trusting = TestApp::spawn_with(backend, |c| {
            c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        let mut b = Browser::new(&trusting);
        let attempt = async |b: &mut Browser, forwarded: &str, i: usize| {
            b.sign_in_with(
                &[("x-forwarded-for", forwarded)],
                &format!("someone{i}@example.com"),
                "guess",
            )
            .await
            .status
        };
        // 30 a minute, replenished one every 2 s: 30 refused as wrong, and the limit within
        // as many more as were replenished meanwhile (sign-ins hash a password each).
        let started = std::time::Instant::now();
        let mut wrong = 0;
        while attempt(&mut b, "203.0.113.7", wrong).await == 401 {
            wrong += 1;
            assert!(wrong <= 60, "never limited");
        }
        let replenished = started.elapsed().as_secs() as usize / 2 + 1;
        assert!(
            (30..=30 + replenished).contains(&wrong),
            "limited after {wrong}"
        );
        // A made-up address to its left is not believed; another client is not limited.
        assert_eq!(attempt(&mut b, "198.51.100.1, 203.0.113.7", 61).await, 429);
        assert_eq!(attempt(&mut b, "203.0.113.8", 62).await, 401);
        trusting.stop().await;

        // Not a trusted proxy: the header counts for nothing.
        let app = TestApp::spawn(backend).await;
        let mut b = Browser::new(&app);
        let started = std::time::Instant::now();
        let mut wrong = 0;
        while attempt(&mut b, &format!("198.51.100.{wrong}"), wrong).await == 401 {
            wrong += 1;
            assert!(wrong <= 60, "never limited");
        }
        let replenished = started.elapsed().as_secs() as usize / 2 + 1;
        assert!(
            (30..=30 + replenished).contains(&wrong),
            "limited after {wrong}"
        );
        app.stop().await;
    }
);

// An evaluation's page shows its execution receipt: none until one is reported, then what was
// reported and, for one that does not conform, why.
both_backends!(
    the_evaluation_page_shows_the_receipt,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let denied = app
            .evaluate(
                &app.admin_key,
                json!({"agent_id": "bot", "action": "db.drop"}),
            )
            .await
            .body;
        let id = denied["evaluation_id"].as_str().unwrap().to_owned();
        let mut b = signed_in_owner(&app).await;
        let page = b.get(&format!("/evaluations/{id}")).await;
        assert!(page.has("none reported"), "{}", page.html);
        let r = app
            .post(
                &format!("/api/v1/evaluations/{id}/receipt"),
                &app.admin_key,
                &json!({"outcome": "executed", "proposal_hash": denied["proposal_hash"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let page = b.get(&format!("/evaluations/{id}")).await;
        assert!(
            page.has("does not conform: executed while the evaluation is denied"),
            "{}",
            page.html
        );
        assert!(page.has("receipt.recorded"), "{}", page.html);
        app.stop().await;
    }
);

// The agents page: the inventory as evaluate saw it; suspending from it stops the agent and
// ends what it had pending; a form without the session's CSRF token changes nothing; the
// kill switch engages and releases from it; each change is audited as the person.
both_backends!(
    agents_are_stopped_from_the_dashboard,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(
            app.put_policy("payments", common::PAYMENTS).await.status,
            200
        );
        let agent = app.key("agent").await;
        let waiting = app
        .evaluate(
            &agent,
            json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 90000}),
        )
        .await
        .body;
        assert_eq!(waiting["status"], "pending");
        let mut b = signed_in_owner(&app).await;
        let page = b.get("/agents").await;
        assert_eq!(page.status, 200);
        assert!(page.has("<code>billing-bot</code>") && page.has("Engage the kill switch"));
        assert!(page.has("href=\"/evaluations?agent_id=billing-bot\""));

        // Without the CSRF token: 403, nothing changed.
        let forged = b
            .post(
                "/agents/suspend",
                &[("agent_id", "billing-bot"), ("reason", "forged")],
            )
            .await;
        assert_eq!(forged.status, 403);
        assert_eq!(
            app.evaluate(
                &agent,
                json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1})
            )
            .await
            .body["status"],
            "allowed"
        );

        let done = b
            .submit(
                "/agents",
                "/agents/suspend",
                &[("agent_id", "billing-bot"), ("reason", "refund loop")],
            )
            .await;
        assert_eq!((done.status.as_u16(), done.location()), (303, "/agents"));
        let page = b.get("/agents").await;
        assert!(
            page.has("suspended") && page.has("refund loop"),
            "{}",
            page.html
        );
        let id = waiting["evaluation_id"].as_str().unwrap();
        let ended = app
            .get(&format!("/api/v1/evaluations/{id}"), &agent)
            .await
            .body;
        assert_eq!(ended["status"], "rejected");
        assert_eq!(ended["reason"], "agent suspended: refund loop");
        // A suspension without a reason is refused with the reason why.
        let refused = b
            .submit("/agents", "/agents/suspend", &[("agent_id", "other-bot")])
            .await;
        assert_eq!(refused.status, 422);
        assert!(refused.has("Reason: is required"), "{}", refused.html);

        let done = b
            .submit("/agents", "/agents/resume", &[("agent_id", "billing-bot")])
            .await;
        assert_eq!(done.status, 303);
        let done = b
            .submit(
                "/agents",
                "/kill-switch",
                &[("engaged", "true"), ("reason", "incident 7")],
            )
            .await;
        assert_eq!(done.status, 303);
        let page = b.get("/agents").await;
        assert!(
            page.has("Engaged") && page.has("incident 7"),
            "{}",
            page.html
        );
        assert_eq!(
            app.evaluate(
                &agent,
                json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1})
            )
            .await
            .body["reason"],
            "agent suspended: kill switch engaged: incident 7"
        );
        let done = b
            .submit("/agents", "/kill-switch", &[("engaged", "false")])
            .await;
        assert_eq!(done.status, 303);
        assert_eq!(
            app.evaluate(
                &agent,
                json!({"agent_id": "billing-bot", "action": "stripe.refund", "amount_cents": 1})
            )
            .await
            .body["status"],
            "allowed"
        );
        let r = app.get("/api/v1/audit?limit=1000", &app.admin_key).await;
        let by_owner: Vec<&str> = r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == "member:owner@example.com")
            .map(|e| e["type"].as_str().unwrap())
            .filter(|t| t.starts_with("agent.") || t.starts_with("kill_switch."))
            .collect();
        assert_eq!(
            by_owner,
            [
                "agent.suspended",
                "agent.resumed",
                "kill_switch.engaged",
                "kill_switch.released"
            ]
        );
        app.stop().await;
    }
);

// A policy bound to GitHub shows where it comes from and its last sync on its page, syncs from
// there, shows a failed sync's reason while the active version stays, names the commit of each
// git version (and the evaluation page the commit of the version that decided); the editor
// replays a draft over the last 30 days and shows what would change.
both_backends!(
    the_policy_page_shows_its_source_syncs_and_replays,
    |backend| async move {
        use agentnexus_testkit::github::FakeGitHub;
        let gh = FakeGitHub::start("acme/policies", "ghp_token").await;
        let api = gh.api_url.clone();
        let app = TestApp::spawn_with(backend, move |c| c.github_api_url = api).await;
        let doc = |limit: u32| {
            format!(
                "name: refunds\nrules:\n  - id: small\n    effect: allow\n    when: amount_cents <= {limit}\n"
            )
        };
        let sha = gh.commit(
            "main",
            "Alice",
            "alice@acme.test",
            "first",
            &[("refunds.yaml", Some(&doc(100)))],
        );
        let bound = app
            .put(
                "/api/v1/policies/refunds/source",
                &app.admin_key,
                &json!({"github": {"repo": "acme/policies", "branch": "main", "path": "refunds.yaml", "token": "ghp_token"}}),
            )
            .await;
        assert_eq!(bound.status, 200, "{}", bound.body);
        let mut b = signed_in_owner(&app).await;
        // Not a policy until its first sync: the page cannot show it yet.
        assert_eq!(b.get("/policies/refunds").await.status, 404);
        assert_eq!(
            app.post("/api/v1/policies/refunds/sync", &app.admin_key, &json!({}))
                .await
                .body["status"],
            "updated"
        );

        let page = b.get("/policies/refunds").await;
        assert_eq!(page.status, 200, "{}", page.html);
        assert!(page.has("GitHub <code>acme/policies</code>, branch <code>main</code>, file <code>refunds.yaml</code>"), "{}", page.html);
        assert!(
            page.has(&format!(
                "updated</span> at commit <code>{}</code>",
                &sha[..7]
            )),
            "{}",
            page.html
        );
        assert!(
            page.has(&format!("<td>git {}</td>", &sha[..7])),
            "{}",
            page.html
        );
        assert!(page.has("Alice &#60;alice@acme.test&#62;"), "{}", page.html);

        // A broken commit, synced from the page: the reason shows, version 1 stays.
        gh.commit(
            "main",
            "Bob",
            "bob@acme.test",
            "broken",
            &[("refunds.yaml", Some("name: refunds\nrules: [\n"))],
        );
        let synced = b
            .submit("/policies/refunds", "/policies/refunds/sync", &[])
            .await;
        assert_eq!(synced.status, 303, "{}", synced.html);
        let page = b.get("/policies/refunds").await;
        assert!(page.has("failed</span>"), "{}", page.html);
        assert!(
            page.has("role=\"alert\">`refunds.yaml` at"),
            "{}",
            page.html
        );
        assert!(page.has("<span class=\"badge\">v1</span>"), "{}", page.html);

        // The evaluation page names the commit of the version that decided.
        let agent = app.key("agent").await;
        let e = app
            .evaluate(
                &agent,
                json!({"agent_id": "a", "action": "refund", "amount_cents": 150}),
            )
            .await
            .body;
        assert_eq!(e["decision"], "deny");
        let id = e["evaluation_id"].as_str().unwrap().to_owned();
        let page = b.get(&format!("/evaluations/{id}")).await;
        assert!(
            page.has(&format!("refunds v1</a> (git commit <code>{sha}</code>)")),
            "{}",
            page.html
        );

        // Replay from the editor: the draft raising the limit would allow that evaluation.
        let replayed = b
            .submit(
                "/policies/refunds",
                "/policies/refunds/replay",
                &[("name", "refunds"), ("document", &doc(200))],
            )
            .await;
        assert_eq!(replayed.status, 200, "{}", replayed.html);
        assert!(replayed.has("1 evaluation(s) of the last 30 days decided again with this draft: <strong>1</strong> would change."), "{}", replayed.html);
        assert!(
            replayed.has("<code>deny-&#62;allow</code>: 1"),
            "{}",
            replayed.html
        );
        assert!(
            replayed.has(&format!("<a href=\"/evaluations/{id}\">")),
            "{}",
            replayed.html
        );
        assert!(
            replayed.has("amount_cents &#60;= 200"),
            "the draft stays in the editor"
        );
        // Nothing changed by a replay.
        assert_eq!(
            app.get("/api/v1/policies/refunds", &app.admin_key)
                .await
                .body["version"],
            1
        );
        // The settings page lists the bound policies and the webhook GitHub posts to; a
        // manager sees its secret on asking, the one the API gives.
        let settings = b.get("/settings").await;
        assert!(settings.has("<a href=\"/policies/refunds\">refunds</a></td><td><code>acme/policies@main:refunds.yaml</code></td><td>failed "), "{}", settings.html);
        let url = format!(
            "{}/api/v1/integrations/github/webhook/{}",
            app.url,
            app.tenant.workspace_id()
        );
        assert!(
            settings.has(&format!("id=\"github-webhook-url\">{url}</code>")),
            "{}",
            settings.html
        );
        assert!(!settings.has("id=\"github-secret\""));
        let shown = b.submit("/settings", "/settings/github-secret", &[]).await;
        assert_eq!(shown.status, 200, "{}", shown.html);
        let secret = app
            .get("/api/v1/integrations/github", &app.admin_key)
            .await
            .body["webhook_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            shown.has(&format!("id=\"github-secret\">{secret}</code>")),
            "{}",
            shown.html
        );
        app.stop().await;
    }
);
