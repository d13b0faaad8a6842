//! Enterprise sign-in against real identity providers on loopback (npm `oidc-provider` and
//! npm `saml-idp`, see `agentnexus_testkit::idp`), over plain HTTP as a browser without
//! script would do it, on both stores: the connection over the API, sign-in routed by e-mail
//! domain, JIT membership and mapped roles, `required` with the owners' break-glass path, and
//! every refusal the issue names, each answered with a page and an audit event.

mod common;

use std::collections::BTreeMap;

use agentnexus_app::accounts;
use agentnexus_store::Actor;
use agentnexus_testkit::both_backends;
use agentnexus_testkit::idp::{OidcIdp, SamlIdp};
use common::TestApp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A browser: its cookies, no redirects followed (the tests look at them).
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
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
            cookies: BTreeMap::new(),
        }
    }

    fn session(&self) -> Option<&String> {
        self.cookies.get("anx_session")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie.join("; "))
        };
        let r = req.send().await.unwrap();
        for set in r.headers().get_all(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            html: r.text().await.unwrap(),
        }
    }

    /// Gets a path here, or a whole URL of this server.
    async fn get(&mut self, path_or_url: &str) -> Page {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let req = self.client.get(url);
        self.send(req).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let req = self
            .client
            .post(url)
            .header("origin", &self.base)
            .form(form);
        self.send(req).await
    }
}

async fn member_roles(app: &TestApp, email: &str) -> Option<Vec<String>> {
    let members = app.get("/api/v1/members", &app.admin_key).await;
    assert_eq!(members.status, 200, "{}", members.body);
    members.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == email)
        .map(|m| {
            let mut roles: Vec<String> = m["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            roles.sort();
            roles
        })
}

/// The URL the continue page (after the sign-in form's "Sign in with SSO") moves on to.
fn continue_url(page: &Page) -> String {
    let at = page
        .html
        .find("url=")
        .unwrap_or_else(|| panic!("no refresh URL in {}", page.html));
    let rest = &page.html[at + 4..];
    rest[..rest.find('"').unwrap()]
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// Starts an OIDC sign-in by link and signs `login` in at the provider; the callback URL.
async fn oidc_attempt(browser: &mut Browser, idp: &OidcIdp, login: &str) -> String {
    let start = browser.get("/sso/start?workspace=default").await;
    assert_eq!(start.status, 303, "{}", start.html);
    assert!(
        start.location().starts_with(&idp.issuer),
        "{}",
        start.location()
    );
    assert!(browser.cookies.contains_key("anx_sso_state"));
    idp.sign_in(&start.location(), login).await
}

/// An OIDC sign-in that must be refused: the page says `why`, and one more
/// `sso.sign_in_failed` event says it too.
async fn oidc_refused(app: &TestApp, idp: &OidcIdp, login: &str, why: &str) {
    let before = app.audited("sso.sign_in_failed").await.len();
    let mut browser = Browser::new(app);
    let callback = oidc_attempt(&mut browser, idp, login).await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 403, "{why}: {}", page.html);
    assert!(page.html.contains(why), "{why} not in {}", page.html);
    assert!(browser.session().is_none());
    let failed = app.audited("sso.sign_in_failed").await;
    assert_eq!(failed.len(), before + 1, "{why}: {failed:?}");
    let reason = failed.last().unwrap()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains(why), "{why} not in the audited {reason}");
}

fn oidc_accounts() -> Value {
    json!({
        "alice": {"email": "alice@corp.example", "email_verified": true, "groups": ["admins"]},
        "carol": {"email": "carol@elsewhere.example", "email_verified": true},
        "dan": {"email": "dan@corp.example", "email_verified": true, "groups": ["nobody"]},
    })
}

async fn connect_oidc(app: &TestApp, idp: &OidcIdp, extra: Value) -> Value {
    let mut body = json!({
        "oidc": {
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "role_claim": "groups",
            "role_map": {"admins": "admin", "approvers": ["approver"]},
        },
        "domains": ["corp.example"],
        "jit": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let put = app.put("/api/v1/settings/sso", &app.admin_key, &body).await;
    assert_eq!(put.status, 200, "{}", put.body);
    put.body
}

both_backends!(oidc_sign_in_jit_roles_and_rotation, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let idp = OidcIdp::start(&format!("{}/sso/oidc/callback", app.url), oidc_accounts()).await;

    // The connection: the secret is kept, never answered.
    let set = connect_oidc(&app, &idp, json!({})).await;
    assert_eq!(set["oidc"]["client_secret_set"], true);
    assert_eq!(set["oidc"]["issuer"], idp.issuer);
    assert_eq!(
        set["service_provider"]["redirect_uri"],
        format!("{}/sso/oidc/callback", app.url)
    );
    let got = app.get("/api/v1/settings/sso", &app.admin_key).await;
    assert_eq!(got.status, 200);
    assert!(!got.body.to_string().contains(&idp.client_secret));
    assert!(!set.to_string().contains(&idp.client_secret));
    assert_eq!(app.audited("settings.sso_updated").await.len(), 1);
    // A provider that is not one is refused at once, and nothing changes.
    let bad = app
        .put(
            "/api/v1/settings/sso",
            &app.admin_key,
            &json!({"oidc": {"issuer": format!("{}/nothing-here", idp.issuer),
                              "client_id": "x", "client_secret": "y"}}),
        )
        .await;
    bad.problem(422);
    let still = app.get("/api/v1/settings/sso", &app.admin_key).await;
    assert_eq!(still.body["oidc"]["issuer"], idp.issuer);

    // The sign-in page routes alice's domain to the provider; she comes back signed in, a
    // member made on the spot with her group's role.
    let mut alice = Browser::new(&app);
    let routed = alice
        .post("/sso/start", &[("email", "alice@corp.example")])
        .await;
    assert_eq!(routed.status, 200, "{}", routed.html);
    let url = continue_url(&routed);
    assert!(url.starts_with(&format!("{}/auth?", idp.issuer)), "{url}");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("nonce="),
        "{url}"
    );
    let callback = idp.sign_in(&url, "alice").await;
    let back = alice.get(&callback).await;
    assert_eq!(back.status, 303, "{}", back.html);
    assert_eq!(back.location(), "/");
    assert!(alice.session().is_some());
    assert!(!alice.cookies.contains_key("anx_sso_state"));
    let home = alice.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.html.contains("alice@corp.example"), "{}", home.html);
    assert_eq!(
        member_roles(&app, "alice@corp.example").await,
        Some(vec!["admin".into()])
    );
    let signed_in = app.audited("session.signed_in").await;
    let last = signed_in.last().unwrap();
    assert_eq!(last["data"]["email"], "alice@corp.example");
    assert_eq!(last["data"]["via"], "oidc");
    assert!(
        app.audited("member.created")
            .await
            .iter()
            .any(|e| e.to_string().contains("alice@corp.example"))
    );
    // A domain no workspace routes is sent back to the password form.
    let unrouted = Browser::new(&app)
        .post("/sso/start", &[("email", "zed@nowhere.example")])
        .await;
    assert_eq!(unrouted.status, 422);
    assert!(unrouted.html.contains("No single sign-on"));

    // Her groups change at the provider: her roles follow on her next sign-in, audited.
    idp.set_account(
        "alice",
        json!({"email": "alice@corp.example", "email_verified": true, "groups": ["approvers"]}),
    )
    .await;
    let mut again = Browser::new(&app);
    let callback = oidc_attempt(&mut again, &idp, "alice").await;
    assert_eq!(again.get(&callback).await.status, 303);
    assert_eq!(
        member_roles(&app, "alice@corp.example").await,
        Some(vec!["approver".into()])
    );
    assert!(
        app.audited("member.updated")
            .await
            .iter()
            .any(|e| e.to_string().contains("approver"))
    );
    // A group that maps to nothing makes a viewer.
    let mut dan = Browser::new(&app);
    let callback = oidc_attempt(&mut dan, &idp, "dan").await;
    assert_eq!(dan.get(&callback).await.status, 303);
    assert_eq!(
        member_roles(&app, "dan@corp.example").await,
        Some(vec!["viewer".into()])
    );

    // The provider rotates its signing key: the next sign-in still verifies (JWKS read again).
    idp.rotate_keys().await;
    let mut rotated = Browser::new(&app);
    let callback = oidc_attempt(&mut rotated, &idp, "alice").await;
    let page = rotated.get(&callback).await;
    assert_eq!(page.status, 303, "{}", page.html);
    assert!(rotated.session().is_some());

    // The dashboard session of an SSO sign-in is bound to the workspace.
    let key = app.other_workspace("acme").await;
    assert!(!key.is_empty());
    let switch = rotated.get("/").await;
    assert!(!switch.html.contains("acme"), "{}", switch.html);
    app.stop().await;
});

both_backends!(oidc_refusals_are_shown_and_audited, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let idp = OidcIdp::start(&format!("{}/sso/oidc/callback", app.url), oidc_accounts()).await;
    connect_oidc(&app, &idp, json!({})).await;

    // A tampered ID token, a validly signed one with the wrong issuer, audience, expiry or
    // nonce, and one signed by a key in no JWKS.
    idp.forge_next(json!({"tamper": true})).await;
    oidc_refused(&app, &idp, "alice", "signature").await;
    idp.forge_next(json!({"tamper": "payload", "claims": {"email": "mallory@corp.example"}}))
        .await;
    oidc_refused(&app, &idp, "alice", "signature").await;
    idp.forge_next(json!({"other_key": true})).await;
    oidc_refused(&app, &idp, "alice", "signature").await;
    idp.forge_next(json!({"claims": {"iss": "http://127.0.0.1:9/evil"}}))
        .await;
    oidc_refused(&app, &idp, "alice", "another issuer").await;
    idp.forge_next(json!({"claims": {"aud": "someone-else"}}))
        .await;
    oidc_refused(&app, &idp, "alice", "another client").await;
    let now = chrono::Utc::now().timestamp();
    idp.forge_next(json!({"claims": {"exp": now - 600, "iat": now - 1200}}))
        .await;
    oidc_refused(&app, &idp, "alice", "expired").await;
    // A nonce from another sign-in (a token replayed into this one).
    idp.forge_next(json!({"claims": {"nonce": "a-nonce-of-another-sign-in"}}))
        .await;
    oidc_refused(&app, &idp, "alice", "nonce").await;
    idp.forge_next(json!({"claims": {"nonce": null}})).await;
    oidc_refused(&app, &idp, "alice", "nonce").await;
    idp.forge_next(json!({"alg": "none"})).await;
    oidc_refused(&app, &idp, "alice", "ID token").await;

    // An address outside the routed domains, though the provider vouches for it.
    oidc_refused(&app, &idp, "carol", "outside the e-mail domains").await;
    let failed = app.audited("sso.sign_in_failed").await;
    assert_eq!(
        failed.last().unwrap()["data"]["email"],
        "carol@elsewhere.example"
    );
    assert_eq!(member_roles(&app, "carol@elsewhere.example").await, None);

    // State mismatch: a callback finished in another browser (login CSRF) is refused and
    // spends the sign-in; the same callback again names nothing.
    let before = app.audited("sso.sign_in_failed").await.len();
    let mut victim = Browser::new(&app);
    let mut attacker = Browser::new(&app);
    let callback = oidc_attempt(&mut attacker, &idp, "alice").await;
    let page = victim.get(&callback).await;
    assert_eq!(page.status, 403);
    assert!(page.html.contains("state mismatch"), "{}", page.html);
    assert!(victim.session().is_none());
    assert_eq!(app.audited("sso.sign_in_failed").await.len(), before + 1);
    let replayed = attacker.get(&callback).await;
    assert_eq!(replayed.status, 403);
    assert!(attacker.session().is_none());
    // No sign-in was let through by any of it.
    let signed = app.audited("session.signed_in").await;
    assert!(
        signed.iter().all(|e| e["data"]["via"] != "oidc"),
        "{signed:?}"
    );
    app.stop().await;
});

both_backends!(
    required_sso_blocks_passwords_but_owners_break_glass,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let idp = OidcIdp::start(&format!("{}/sso/oidc/callback", app.url), oidc_accounts()).await;
        // Vera has a password and is an approver.
        let added = app
            .post(
                "/api/v1/members",
                &app.admin_key,
                &json!({"email": "vera@corp.example", "roles": ["approver"]}),
            )
            .await;
        assert!(added.status.is_success(), "{}", added.body);
        app.store
            .set_password(
                &app.tenant,
                "vera@corp.example",
                &accounts::hash_password("a long enough password"),
                None,
                Actor::Cli,
                app.clock.now(),
            )
            .await
            .unwrap();
        let mut vera = Browser::new(&app);
        let ok = vera
            .post(
                "/sign-in",
                &[
                    ("email", "vera@corp.example"),
                    ("password", "a long enough password"),
                ],
            )
            .await;
        assert_eq!(ok.status, 303, "{}", ok.html);
        let session = vera.session().cloned().expect("signed in");

        connect_oidc(&app, &idp, json!({"required": true})).await;
        // Her password session from before no longer opens pages.
        let home = vera.get("/").await;
        assert_ne!(home.status, 200, "{}", home.html);
        // A password sign-in is refused with a pointer to SSO, and audited.
        let mut vera = Browser::new(&app);
        let refused = vera
            .post(
                "/sign-in",
                &[
                    ("email", "vera@corp.example"),
                    ("password", "a long enough password"),
                ],
            )
            .await;
        assert_ne!(refused.status, 303, "{}", refused.html);
        assert!(
            refused.html.contains("identity provider"),
            "{}",
            refused.html
        );
        assert!(vera.session().is_none_or(|s| *s != session));
        let failed = app.audited("session.sign_in_failed").await;
        let last = failed.last().unwrap();
        assert_eq!(last["data"]["email"], "vera@corp.example");
        assert_eq!(last["data"]["reason"], "single sign-on required");

        // The owner's password still works: break-glass, audited.
        let mut owner = Browser::new(&app);
        let page = owner
            .post(
                "/sign-in",
                &[("email", "owner@example.com"), ("password", "pw")],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.html);
        assert!(owner.session().is_some());
        let glass = app.audited("session.break_glass").await;
        assert_eq!(glass.len(), 1, "{glass:?}");
        assert_eq!(glass[0]["data"]["email"], "owner@example.com");

        // Through the provider, Vera (alice's provider account stands in for her address) gets in.
        idp.set_account(
            "vera",
            json!({"email": "vera@corp.example", "email_verified": true, "groups": ["approvers"]}),
        )
        .await;
        let mut vera = Browser::new(&app);
        let callback = oidc_attempt(&mut vera, &idp, "vera").await;
        assert_eq!(vera.get(&callback).await.status, 303);
        assert_eq!(vera.get("/").await.status, 200);
        // Turning SSO off gives passwords back.
        let removed = app.delete("/api/v1/settings/sso", &app.admin_key).await;
        assert!(removed.status.is_success(), "{}", removed.body);
        assert_eq!(app.audited("settings.sso_removed").await.len(), 1);
        let page = Browser::new(&app)
            .post(
                "/sign-in",
                &[
                    ("email", "vera@corp.example"),
                    ("password", "a long enough password"),
                ],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.html);
        app.stop().await;
    }
);

fn sp_urls(app: &TestApp) -> (String, String) {
    (
        format!("{}/sso/saml/acs", app.url),
        format!("{}/sso/saml/metadata", app.url),
    )
}

async fn connect_saml(app: &TestApp, idp: &SamlIdp, idp_initiated: bool) {
    let put = app
        .put(
            "/api/v1/settings/sso",
            &app.admin_key,
            &json!({
                "saml": {
                    "idp_metadata_url": idp.metadata_url,
                    "role_attribute": "groups",
                    "role_map": {"admins": "admin"},
                    "allow_idp_initiated": idp_initiated,
                },
                "domains": ["corp.example"],
                "jit": true,
            }),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["saml"]["idp_entity_id"], idp.entity_id);
    assert_eq!(put.body["saml"]["allow_idp_initiated"], idp_initiated);
}

/// Posts a response to the ACS as the provider's page would.
async fn post_acs(app: &TestApp, response: &str, relay: Option<&str>) -> (Page, Browser) {
    let mut browser = Browser::new(app);
    let mut form = vec![("SAMLResponse", response)];
    if let Some(r) = relay {
        form.push(("RelayState", r));
    }
    let page = browser.post("/sso/saml/acs", &form).await;
    (page, browser)
}

/// A response that must be refused: the page says `why`, and so does a new audit event.
async fn saml_refused(app: &TestApp, response: &str, relay: Option<&str>, why: &str) {
    let before = app.audited("sso.sign_in_failed").await.len();
    let (page, browser) = post_acs(app, response, relay).await;
    assert_eq!(page.status, 403, "{why}: {}", page.html);
    assert!(page.html.contains(why), "{why} not in {}", page.html);
    assert!(browser.session().is_none());
    let failed = app.audited("sso.sign_in_failed").await;
    assert_eq!(failed.len(), before + 1, "{why}: {failed:?}");
    let reason = failed.last().unwrap()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains(why), "{why} not in the audited {reason}");
}

both_backends!(saml_sign_in_sp_initiated, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let (acs, entity) = sp_urls(&app);
    let idp = SamlIdp::start(&acs, &entity).await;

    // This server's metadata names its entity ID and ACS.
    let metadata = reqwest::get(format!("{}/sso/saml/metadata", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metadata.contains(&format!("entityID=\"{entity}\"")),
        "{metadata}"
    );
    assert!(
        metadata.contains(&format!("Location=\"{acs}\"")),
        "{metadata}"
    );

    // Metadata that is not an identity provider's is refused, nothing set.
    let bad = app
        .put(
            "/api/v1/settings/sso",
            &app.admin_key,
            &json!({"saml": {"idp_metadata_xml": metadata}}),
        )
        .await;
    bad.problem(422);
    assert_eq!(
        app.get("/api/v1/settings/sso", &app.admin_key).await.status,
        404
    );
    connect_saml(&app, &idp, false).await;

    // SP-initiated: routed by domain, redirected with an AuthnRequest, back at the ACS.
    let mut dana = Browser::new(&app);
    let routed = dana
        .post("/sso/start", &[("email", "dana@corp.example")])
        .await;
    assert_eq!(routed.status, 200, "{}", routed.html);
    let url = continue_url(&routed);
    assert!(
        url.starts_with(&idp.sso_url) && url.contains("SAMLRequest="),
        "{url}"
    );
    let (to, response, relay) = idp
        .sign_in(&url, "dana@corp.example", &[("groups", "admins")])
        .await;
    assert_eq!(to, acs);
    assert!(
        relay.is_some(),
        "no RelayState came back from {url}\n{}",
        idp.log()
    );
    let page = dana
        .post(
            &to,
            &[
                ("SAMLResponse", &response),
                ("RelayState", relay.as_deref().unwrap()),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}\n{}", page.html, idp.log());
    assert!(dana.session().is_some());
    assert!(dana.get("/").await.html.contains("dana@corp.example"));
    assert_eq!(
        member_roles(&app, "dana@corp.example").await,
        Some(vec!["admin".into()])
    );
    let last = app.audited("session.signed_in").await.pop().unwrap();
    assert_eq!(last["data"]["via"], "saml");

    // The same response again: the sign-in it answered is spent.
    let (page, _) = post_acs(&app, &response, relay.as_deref()).await;
    assert_eq!(page.status, 403);

    // A response that answers another request than the one this sign-in sent.
    let start = Browser::new(&app).get("/sso/start?workspace=default").await;
    let relay = url::Url::parse(&start.location())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "RelayState")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let forged = idp
        .forge(json!({"email": "dana@corp.example", "in_response_to": "_not-our-request"}))
        .await;
    saml_refused(&app, &forged, Some(&relay), "answers no sign-in").await;
    // IdP-initiated is off: an unasked response is refused.
    let unasked = idp.forge(json!({"email": "dana@corp.example"})).await;
    saml_refused(&app, &unasked, Some("default"), "answers no sign-in").await;
    app.stop().await;
});

both_backends!(saml_refusals_and_replay, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let (acs, entity) = sp_urls(&app);
    let idp = SamlIdp::start(&acs, &entity).await;
    connect_saml(&app, &idp, true).await;

    // IdP-initiated (enabled here), the workspace named in RelayState.
    let good = idp
        .forge(
            json!({"email": "erin@corp.example", "assertion_id": "_once-only",
                      "attributes": {"groups": ["admins"]}}),
        )
        .await;
    let (page, erin) = post_acs(&app, &good, Some("default")).await;
    assert_eq!(page.status, 303, "{}", page.html);
    assert!(erin.session().is_some());
    assert_eq!(
        member_roles(&app, "erin@corp.example").await,
        Some(vec!["admin".into()])
    );
    // Replayed, to this server or to a second one on the same database: refused.
    saml_refused(&app, &good, Some("default"), "replayed").await;
    // Replicas serve one public URL (behind one load balancer).
    let public = app.url.clone();
    let replica = app.replica(move |c| c.public_url = Some(public)).await;
    let mut other = Browser::new(&replica);
    let page = other
        .post(
            "/sso/saml/acs",
            &[("SAMLResponse", &good), ("RelayState", "default")],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(page.html.contains("replayed"), "{}", page.html);

    // Unsigned, signed by another key, tampered after signing, for another audience, to
    // another ACS, expired, from another issuer.
    let unsigned = idp
        .forge(
            json!({"email": "erin@corp.example", "sign_assertion": false, "sign_response": false}),
        )
        .await;
    saml_refused(&app, &unsigned, Some("default"), "not signed").await;
    let (key, cert) = idp.other_key();
    let other_key = idp
        .forge(json!({"email": "erin@corp.example", "key": key, "cert": cert}))
        .await;
    saml_refused(&app, &other_key, Some("default"), "not signed").await;
    let tampered = idp
        .forge(json!({"email": "erin@corp.example",
                      "tamper": {"from": "erin@corp.example", "to": "eve@corp.example"}}))
        .await;
    saml_refused(&app, &tampered, Some("default"), "not signed").await;
    let audience = idp
        .forge(json!({"email": "erin@corp.example", "audience": "http://127.0.0.1:9/other-sp"}))
        .await;
    saml_refused(&app, &audience, Some("default"), "another audience").await;
    let recipient = idp
        .forge(json!({"email": "erin@corp.example", "acs_url": "http://127.0.0.1:9/sso/saml/acs"}))
        .await;
    saml_refused(&app, &recipient, Some("default"), "another address").await;
    let expired = idp
        .forge(
            json!({"email": "erin@corp.example", "issue_instant": -3600, "not_before": -3600,
                      "not_on_or_after": -1800, "subject_not_on_or_after": -1800}),
        )
        .await;
    saml_refused(&app, &expired, Some("default"), "expired").await;
    let issuer = idp
        .forge(json!({"email": "erin@corp.example", "issuer": "http://127.0.0.1:9/evil-idp"}))
        .await;
    saml_refused(&app, &issuer, Some("default"), "another issuer").await;
    let outside = idp.forge(json!({"email": "frank@elsewhere.example"})).await;
    saml_refused(
        &app,
        &outside,
        Some("default"),
        "outside the e-mail domains",
    )
    .await;
    let garbage = "PHNhbWxwOlJlc3BvbnNlLz4="; // <samlp:Response/>
    saml_refused(&app, garbage, Some("default"), "SAML response").await;
    // Only erin got in.
    let signed = app.audited("session.signed_in").await;
    assert_eq!(
        signed.iter().filter(|e| e["data"]["via"] == "saml").count(),
        1,
        "{signed:?}"
    );
    replica.stop().await;
    app.stop().await;
});

/// The first `json` block after `heading` in docs/sso.md.
fn documented_json(heading: &str) -> Value {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sso.md")).unwrap();
    let at = page
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in docs/sso.md"));
    let rest = &page[at..];
    let start = rest.find("```json\n").unwrap() + 8;
    let end = start + rest[start..].find("```").unwrap();
    serde_json::from_str(&rest[start..end]).unwrap()
}

// docs/sso.md's two examples, as written but for the provider's own values, are accepted and
// read back as the page says.
both_backends!(
    the_documented_connections_are_accepted,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let idp = OidcIdp::start(&format!("{}/sso/oidc/callback", app.url), oidc_accounts()).await;
        let mut body = documented_json("## OpenID Connect");
        body["oidc"]["issuer"] = json!(idp.issuer);
        body["oidc"]["client_id"] = json!(idp.client_id);
        body["oidc"]["client_secret"] = json!(idp.client_secret);
        let put = app.put("/api/v1/settings/sso", &app.admin_key, &body).await;
        assert_eq!(put.status, 200, "{}", put.body);
        assert_eq!(
            put.body["oidc"]["role_map"]["Finance"],
            json!(["approver", "finance"])
        );
        assert_eq!(put.body["oidc"]["scopes"], body["oidc"]["scopes"]);
        assert_eq!(put.body["domains"], json!(["example.com"]));
        assert_eq!(put.body["jit"], true);
        // Put again without the secret: the stored one is kept.
        body["oidc"]
            .as_object_mut()
            .unwrap()
            .remove("client_secret");
        let again = app.put("/api/v1/settings/sso", &app.admin_key, &body).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.body["oidc"]["client_secret_set"], true);

        let (acs, entity) = sp_urls(&app);
        let saml = SamlIdp::start(&acs, &entity).await;
        let mut body = documented_json("## SAML 2.0");
        body["saml"]["idp_metadata_url"] = json!(saml.metadata_url);
        let put = app.put("/api/v1/settings/sso", &app.admin_key, &body).await;
        assert_eq!(put.status, 200, "{}", put.body);
        assert_eq!(put.body["saml"]["idp_sso_url"], saml.sso_url);
        assert_eq!(put.body["required"], true);
        assert!(put.body["oidc"].is_null());
        // The values to register are the ones the page's table names.
        assert_eq!(put.body["service_provider"]["acs_url"], acs);
        assert_eq!(put.body["service_provider"]["entity_id"], entity);
        assert_eq!(put.body["service_provider"]["metadata_url"], entity);
        // The same domain cannot be routed by a second workspace.
        let other = app.other_workspace("acme").await;
        let clash = app.put("/api/v1/settings/sso", &other, &body).await;
        clash.problem(409);
        app.stop().await;
    }
);
