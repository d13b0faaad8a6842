//! Real identity providers on loopback, for single sign-on tests: npm `oidc-provider` (OpenID
//! Connect) and npm `saml-idp` (SAML 2.0), each a Node.js child process started by the scripts
//! in `ci/sso-idp` and killed when its handle is dropped. Nothing here is a stand-in: discovery,
//! JWKS, PKCE, code exchange, ID tokens, metadata, the HTTP-Redirect binding and XML signatures
//! are the libraries' own.
//!
//! - [`OidcIdp`]: one static client, accounts given at start, oidc-provider's development
//!   login (any password) driven over plain HTTP by [`OidcIdp::sign_in`], consent skipped.
//!   [`OidcIdp::forge_next`] spoils the next token response's ID token (a broken signature,
//!   wrong claims validly signed, another key, `alg: none`); [`OidcIdp::rotate_keys`] replaces
//!   the signing key.
//! - [`SamlIdp`]: a self-signed signing certificate made with `openssl` at start, metadata at
//!   `/metadata`, saml-idp's sign-in form driven over plain HTTP by [`SamlIdp::sign_in`];
//!   [`SamlIdp::forge`] makes responses a real provider would not (expired, unsigned, signed by
//!   another key, for another audience, a replayed assertion).
//!
//! The npm packages are pinned in `ci/sso-idp/package-lock.json`: `AGENTNEXUS_SSO_IDP_NODE_MODULES`
//! names a directory holding the `node_modules` `npm ci` made from it (what `.ci/run` sets up);
//! without it the first test to start a provider makes one under the temp directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const OIDC_SCRIPT: &str = include_str!("../../../ci/sso-idp/oidc.mjs");
const SAML_SCRIPT: &str = include_str!("../../../ci/sso-idp/saml.mjs");
const FORGE_SAML_SCRIPT: &str = include_str!("../../../ci/sso-idp/forge-saml.mjs");

/// How long a provider may take to print its `READY` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a provider's output is kept for failure messages.
const OUTPUT_KEPT: usize = 64 * 1024;
/// What saml-idp's form calls the e-mail address name identifier format.
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// The `node_modules` of `ci/sso-idp`: the one `AGENTNEXUS_SSO_IDP_NODE_MODULES` names, or one
/// installed once from the lock file under the temp directory (named, as `.ci/run` names its
/// own, after the first 12 hex digits of the lock file's SHA-256).
pub fn node_modules() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/sso-idp");
    let lock = std::fs::read(manifest.join("package-lock.json")).unwrap();
    let hash: String = Sha256::digest(&lock)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    crate::tools::node_modules(
        "AGENTNEXUS_SSO_IDP_NODE_MODULES",
        &format!("agentnexus-sso-idp-{hash}"),
        &manifest,
        "oidc-provider",
    )
}

/// A directory of a provider's own (its scripts, keys and a link to `node_modules`), removed
/// when dropped.
struct Scratch(PathBuf);

impl Scratch {
    async fn new(kind: &str) -> Scratch {
        let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
        let dir = std::env::temp_dir().join(format!(
            "agentnexus-{kind}-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
        for (name, text) in [
            ("oidc.mjs", OIDC_SCRIPT),
            ("saml.mjs", SAML_SCRIPT),
            ("forge-saml.mjs", FORGE_SAML_SCRIPT),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A provider's process: killed when dropped, its output kept for failure messages.
struct Node {
    _child: Child,
    /// What it printed after `READY `: its base URL.
    url: String,
    output: Arc<Mutex<String>>,
}

fn keep(output: &Mutex<String>, line: &str) {
    let mut kept = output.lock().unwrap_or_else(|e| e.into_inner());
    kept.push_str(line);
    kept.push('\n');
    if kept.len() > OUTPUT_KEPT {
        let mut cut = kept.len() - OUTPUT_KEPT / 2;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept.drain(..cut);
    }
}

/// Copies every line of `from` into `output` until it ends.
fn drain(from: impl AsyncRead + Unpin + Send + 'static, output: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            keep(&output, &line);
        }
    });
}

impl Node {
    /// Runs `node SCRIPT OPTIONS` in `dir` and waits for its `READY URL` line.
    async fn start(dir: &Path, script: &str, options: &Value) -> Node {
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .arg(options.to_string())
            .current_dir(dir)
            .env("FORCE_COLOR", "0")
            .env_remove("PORT")
            .env_remove("HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not run `node {script}` (Node.js 20 is needed): {e}")
            });
        let output = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), output.clone());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            let mut line = String::new();
            loop {
                line.clear();
                if stdout.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return None;
                }
                let line = line.trim_end();
                keep(&output, line);
                if let Some(url) = line.strip_prefix("READY ") {
                    return Some(url.to_owned());
                }
            }
        })
        .await;
        let Ok(Some(url)) = ready else {
            let status = match ready {
                Err(_) => format!("printed no READY line within {START_TIMEOUT:?}"),
                Ok(_) => match child.wait().await {
                    Ok(status) => format!("exited ({status})"),
                    Err(e) => format!("ended its output ({e})"),
                },
            };
            // Let the stderr reader catch up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "`node {script}` {status}; its output:\n{}",
                output.lock().unwrap_or_else(|e| e.into_inner())
            );
        };
        drain(stdout.into_inner(), output.clone());
        Node {
            _child: child,
            url,
            output,
        }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Cookies as a browser keeps them for one host, by name (paths and expiry ignored but for
/// deletion), for driving sign-in pages without reqwest's cookie store.
#[derive(Default)]
struct Cookies(BTreeMap<String, String>);

impl Cookies {
    fn store(&mut self, headers: &reqwest::header::HeaderMap) {
        for header in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            let mut parts = header.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let deleted = parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
            });
            if deleted || value.is_empty() {
                self.0.remove(name.trim());
            } else {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A page as a browser got it: redirects are not followed.
struct Page {
    url: String,
    status: u16,
    /// `Location`, made absolute.
    location: Option<String>,
    body: String,
}

impl Page {
    /// The first form with an `action`, its action made absolute.
    fn form(&self) -> Option<Form> {
        forms(&self.body)
            .into_iter()
            .find(|f| !f.action.is_empty())
            .map(|mut f| {
                f.action = join(&self.url, &f.action);
                f
            })
    }

    /// The page, shortened, for a failure message.
    fn describe(&self) -> String {
        let body: String = self.body.chars().take(3000).collect();
        format!("{} answered {}:\n{body}", self.url, self.status)
    }
}

fn join(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(reference))
        .map(String::from)
        .unwrap_or_else(|e| panic!("cannot resolve {reference} against {base}: {e}"))
}

/// An HTTP client that behaves as a browser that follows nothing by itself.
struct Browser {
    http: reqwest::Client,
    cookies: Cookies,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: client(),
            cookies: Cookies::default(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let request = self.http.get(url);
        self.send(url, request).await
    }

    async fn post(&mut self, url: &str, fields: &[(String, String)]) -> Page {
        let request = self.http.post(url).form(fields);
        self.send(url, request).await
    }

    async fn send(&mut self, url: &str, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.0.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, self.cookies.header())
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        self.cookies.store(response.headers());
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .filter(|_| response.status().is_redirection())
            .map(|l| join(url, l));
        let body = response.text().await.unwrap_or_default();
        Page {
            url: url.to_owned(),
            status,
            location,
            body,
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A form on a page: where it posts, and what a browser would send unchanged.
#[derive(Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

impl Form {
    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, adding the field if the form has none of that name.
    fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// The forms of a page, read as a browser would submit them: named inputs (checkboxes and
/// radio buttons only when checked, buttons never), selects (the selected option, else the
/// first) and text areas.
fn forms(html: &str) -> Vec<Form> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start..];
        let end = after.find("</form>").unwrap_or(after.len());
        let inner = &after[..end];
        let open_end = inner.find('>').unwrap_or(inner.len());
        let action = attribute(&attributes(&inner[..open_end]), "action").unwrap_or_default();
        let mut fields = Vec::new();
        let mut body = &inner[open_end.min(inner.len())..];
        while let Some(lt) = body.find('<') {
            body = &body[lt + 1..];
            let name_end = body
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .unwrap_or(body.len());
            let tag = body[..name_end].to_ascii_lowercase();
            let tag_end = body.find('>').unwrap_or(body.len());
            let attrs = attributes(&body[..tag_end]);
            let Some(name) = attribute(&attrs, "name") else {
                continue;
            };
            match tag.as_str() {
                "input" => {
                    let kind = attribute(&attrs, "type")
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let checked = attrs.iter().any(|(k, _)| k == "checked");
                    if matches!(
                        kind.as_str(),
                        "submit" | "button" | "image" | "reset" | "file"
                    ) || (matches!(kind.as_str(), "checkbox" | "radio") && !checked)
                    {
                        continue;
                    }
                    fields.push((name, attribute(&attrs, "value").unwrap_or_default()));
                }
                "select" => {
                    let options_end = body.find("</select>").unwrap_or(body.len());
                    let mut options = Vec::new();
                    for option in body[tag_end.min(options_end)..options_end]
                        .split("<option")
                        .skip(1)
                    {
                        let open_end = option.find('>').unwrap_or(option.len());
                        let attrs = attributes(&option[..open_end]);
                        let text = option[(open_end + 1).min(option.len())..]
                            .split('<')
                            .next()
                            .unwrap_or_default();
                        let value =
                            attribute(&attrs, "value").unwrap_or_else(|| unescape(text.trim()));
                        options.push((attrs.iter().any(|(k, _)| k == "selected"), value));
                    }
                    let chosen = options
                        .iter()
                        .find(|(selected, _)| *selected)
                        .or(options.first())
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    fields.push((name, chosen));
                }
                "textarea" => {
                    let text_end = body.find("</textarea>").unwrap_or(body.len());
                    fields.push((name, unescape(&body[(tag_end + 1).min(text_end)..text_end])));
                }
                _ => {}
            }
        }
        found.push(Form { action, fields });
        rest = &after[end..];
    }
    found
}

/// The attributes of a tag's text (from after `<` to before `>`), names in lower case,
/// values unescaped; a bare attribute has an empty value.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let chars: Vec<char> = tag.chars().collect();
    let mut i = chars
        .iter()
        .position(|c| c.is_whitespace())
        .unwrap_or(chars.len());
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '=' | '/') {
            i += 1;
        }
        if start == i {
            i += 1;
            continue;
        }
        let name: String = chars[start..i]
            .iter()
            .collect::<String>()
            .to_ascii_lowercase();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                let quote = chars[i];
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
                value = chars[start..i].iter().collect();
                i += 1;
            } else {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
                value = chars[start..i].iter().collect();
            }
        }
        attrs.push((name, unescape(&value)));
    }
    attrs
}

fn attribute(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Text with HTML's character references replaced (the named ones templates write, and
/// numeric ones: Handlebars writes `=` as `&#x3D;`).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Merges `overrides`' members into `base` (both JSON objects).
fn merge(mut base: Value, overrides: Value) -> Value {
    if let (Some(base), Value::Object(overrides)) = (base.as_object_mut(), overrides) {
        base.extend(overrides);
    }
    base
}

/// An OpenID Connect provider (npm `oidc-provider` 9) with one confidential client.
///
/// - The issuer is `http://127.0.0.1:PORT`, byte for byte (no trailing `/`); discovery at
///   `/.well-known/openid-configuration`, JWKS (one RS256 key made at start) at `/jwks`.
/// - The client uses `client_secret_basic` unless `start_with` says otherwise and the
///   authorization code grant, and must send PKCE (S256 only). No refresh tokens are issued
///   (`offline_access` is not granted).
/// - Every sign-in is granted `openid email profile` without a consent page. An account's
///   claims all go into the ID token (`email`, `email_verified` by the `email` scope, every
///   other claim by `profile`), as do `nonce`, `iss`, `aud`, `exp`, `iat`; `sub` is the login.
///   A login not among the accounts signs in with `sub` alone.
/// - The authorization response carries `iss` (RFC 9207) beside `code` and `state`.
pub struct OidcIdp {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The first of the client's redirect URIs.
    pub redirect_uri: String,
    redirect_uris: Vec<String>,
    http: reqwest::Client,
    node: Node,
    _scratch: Scratch,
}

impl OidcIdp {
    /// A provider whose client (`agentnexus-test`, a random secret) redirects to
    /// `redirect_uri`; `accounts` maps a login to its claims, e.g.
    /// `{"alice": {"email": "alice@example.com", "email_verified": true, "name": "Alice",
    /// "groups": ["admins"]}}`.
    pub async fn start(redirect_uri: &str, accounts: Value) -> OidcIdp {
        OidcIdp::start_with(json!({
            "redirect_uris": [redirect_uri],
            "accounts": accounts,
        }))
        .await
    }

    /// A provider from `oidc.mjs`'s options: `redirect_uris` (required), `accounts`,
    /// `client_id`, `client_secret`, `token_endpoint_auth_method` (`client_secret_basic` or
    /// `client_secret_post`), `post_logout_redirect_uris`.
    pub async fn start_with(options: Value) -> OidcIdp {
        let secret = format!("secret-{}", ulid::Ulid::new().to_string().to_lowercase());
        let options = merge(
            json!({"port": 0, "client_id": "agentnexus-test", "client_secret": secret}),
            options,
        );
        let redirect_uris: Vec<String> = options["redirect_uris"]
            .as_array()
            .expect("OidcIdp needs redirect_uris")
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        let scratch = Scratch::new("oidc-idp").await;
        let node = Node::start(&scratch.0, "oidc.mjs", &options).await;
        OidcIdp {
            issuer: node.url.clone(),
            client_id: options["client_id"].as_str().unwrap().to_owned(),
            client_secret: options["client_secret"].as_str().unwrap().to_owned(),
            redirect_uri: redirect_uris[0].clone(),
            redirect_uris,
            http: client(),
            node,
            _scratch: scratch,
        }
    }

    /// Everything the provider printed so far (the last 64 KiB), for a failing test's message.
    pub fn log(&self) -> String {
        self.node.output()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.issuer);
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}\n{}", self.log()));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{url} answered {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Spoils the ID token of the next token response (one only; a new forge replaces one
    /// not yet used):
    /// - `{"tamper": true}`: one character of its signature changed;
    ///   `{"tamper": "payload"}`: its payload changed (by `claims`, else `"tampered": true`
    ///   added) under the old signature.
    /// - `{"claims": {"aud": "other", "nonce": null, …}}`: claims replaced (`null` removes
    ///   one), signed again with the provider's own key: a valid signature on wrong content.
    /// - `{"other_key": true}`: signed with a fresh key in no JWKS, under the same `kid`
    ///   unless `"kid": "…"` names another (with `claims` if given).
    /// - `{"alg": "none"}`: unsigned; `{"alg": "HS256"}`: signed with the client secret.
    /// - `{"omit_id_token": true}`: the response has no `id_token`.
    pub async fn forge_next(&self, forge: Value) {
        self.post("/__control", forge).await;
    }

    /// Replaces the signing key with a new one: the JWKS serves only the new key and tokens
    /// are signed with it. Sign-ins under way survive it. Returns the new key's `kid`.
    pub async fn rotate_keys(&self) -> String {
        let answer = self.post("/__control", json!({"rotate": true})).await;
        answer["kid"].as_str().unwrap().to_owned()
    }

    /// Adds or replaces an account (`claims` as in [`OidcIdp::start`]), or removes it
    /// (`Value::Null`), for sign-ins from now on.
    pub async fn set_account(&self, login: &str, claims: Value) {
        self.post("/__control", json!({"accounts": {login: claims}}))
            .await;
    }

    /// Checks `jwt` as a relying party would: its signature against the JWKS the provider
    /// serves now, `iss`, `aud` (the client) and `exp`. The payload, or why it was refused.
    pub async fn verify(&self, jwt: &str) -> Result<Value, String> {
        let answer = self.post("/__verify", json!({"jwt": jwt})).await;
        if answer["ok"] == true {
            Ok(answer["payload"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// Signs `login` in as a person with a browser would, over plain HTTP: gets
    /// `authorization_url` (the provider's `/auth?…`, as a relying party redirected to it),
    /// submits the development login form (any password), and follows the provider's
    /// redirects (cookies kept, a fresh browser each call) until one leaves for a redirect
    /// URI. Returns that callback URL (`code`, `state`, `iss`; or `error` when the provider
    /// refused the request) without requesting it.
    pub async fn sign_in(&self, authorization_url: &str, login: &str) -> String {
        let mut browser = Browser::new();
        let mut page = browser.get(authorization_url).await;
        for _ in 0..20 {
            if let Some(next) = page.location.take() {
                if self
                    .redirect_uris
                    .iter()
                    .any(|r| next.starts_with(r.as_str()))
                {
                    return next;
                }
                page = browser.get(&next).await;
                continue;
            }
            let Some(mut form) = page.form() else {
                panic!(
                    "no redirect and no form signing {login} in: {}\n{}",
                    page.describe(),
                    self.log()
                );
            };
            if form.has("login") {
                form.set("login", login);
                form.set("password", "any password");
            }
            page = browser.post(&form.action, &form.fields).await;
        }
        panic!(
            "signing {login} in did not come back to {:?}: {}",
            self.redirect_uris,
            page.describe()
        );
    }
}

/// Makes a self-signed RSA certificate and its key, `NAME.crt` and `NAME.key` in `dir`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("could not run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl req -x509 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, cert)
}

/// A SAML 2.0 identity provider (npm `saml-idp` 1.2, signing with npm `samlp` and `saml`).
///
/// - Entity ID `http://127.0.0.1:PORT/metadata`; metadata at `/metadata`; single sign-on at
///   `/saml/sso` for both the HTTP-Redirect and HTTP-POST bindings.
/// - Responses go to the AuthnRequest's `AssertionConsumerServiceURL` when it has one (saml-idp
///   trusts it), else to `acs_url`; `Audience` is `audience`. Both the Response and the
///   assertion are signed (RSA-SHA256, exclusive C14N, the certificate in `KeyInfo`); the
///   assertion lasts an hour.
/// - The NameID is the e-mail address (format `emailAddress`), and the `email` attribute too.
///   Attributes are `basic` names with `xs:string` values.
pub struct SamlIdp {
    /// The IdP's entity ID, the `Issuer` of what it signs.
    pub entity_id: String,
    pub metadata_url: String,
    /// The metadata as served at start.
    pub metadata_xml: String,
    /// Where AuthnRequests go (both bindings).
    pub sso_url: String,
    pub acs_url: String,
    pub audience: String,
    /// The signing certificate, PEM.
    pub cert_pem: String,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    others: AtomicUsize,
    node: Node,
    scratch: Scratch,
}

impl SamlIdp {
    /// A provider for a service provider whose assertion consumer service is `acs_url` and
    /// whose entity ID (the assertions' audience) is `audience`.
    pub async fn start(acs_url: &str, audience: &str) -> SamlIdp {
        let scratch = Scratch::new("saml-idp").await;
        let (key_path, cert_path) = key_pair(&scratch.0, "test-idp");
        let options = json!({
            "port": 0,
            "key": key_path,
            "cert": cert_path,
            "acs_url": acs_url,
            "audience": audience,
        });
        let node = Node::start(&scratch.0, "saml.mjs", &options).await;
        let metadata_url = format!("{}/metadata", node.url);
        let metadata_xml = client()
            .get(&metadata_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{metadata_url}: {e}\n{}", node.output()))
            .text()
            .await
            .unwrap();
        SamlIdp {
            entity_id: metadata_url.clone(),
            sso_url: format!("{}/saml/sso", node.url),
            metadata_url,
            metadata_xml,
            acs_url: acs_url.to_owned(),
            audience: audience.to_owned(),
            cert_pem: std::fs::read_to_string(&cert_path).unwrap(),
            key_path,
            cert_path,
            others: AtomicUsize::new(0),
            node,
            scratch,
        }
    }

    /// Everything the provider printed so far (the last 64 KiB; saml-idp prints each
    /// response it makes), for a failing test's message.
    pub fn log(&self) -> String {
        self.node.output()
    }

    /// Signs in as a person with a browser would, over plain HTTP, SP-initiated: gets
    /// `redirect_url` (the SSO URL with `SAMLRequest` and `RelayState`, the HTTP-Redirect
    /// binding as a service provider redirected to it), fills saml-idp's form (NameID and
    /// `email` attribute `email`; each of `attributes`, a name given twice for two values;
    /// every other attribute left empty, so absent) and submits it. Attributes the form lacks
    /// are added first as its "Add attribute" button does (multi-valued); saml-idp keeps one
    /// user for everyone, so sign in once at a time on one provider. Returns the
    /// auto-submitting form's target (the ACS URL), `SAMLResponse` (base64) and `RelayState`,
    /// without posting them.
    pub async fn sign_in(
        &self,
        redirect_url: &str,
        email: &str,
        attributes: &[(&str, &str)],
    ) -> (String, String, Option<String>) {
        let mut browser = Browser::new();
        let mut page = browser.get(redirect_url).await;
        let mut form = self.sign_in_form(&page);
        let mut added = false;
        for (name, _) in attributes {
            if !form.has(name) {
                let fields = [
                    ("attributeName", *name),
                    ("displayName", *name),
                    ("description", ""),
                    ("valueType", "multi"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()));
                let url = join(&page.url, "/metadata");
                let added_page = browser.post(&url, &fields).await;
                assert_eq!(added_page.status, 200, "{}", added_page.describe());
                added = true;
            }
        }
        if added {
            page = browser.get(redirect_url).await;
            form = self.sign_in_form(&page);
        }
        let fixed = ["userName", "nameIdFormat", "_authnRequest"];
        let names: Vec<String> = form
            .fields
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !fixed.contains(&n.as_str()) && !n.starts_with("nameId"))
            .collect();
        for name in names {
            let mut values: Vec<&str> = attributes
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            if values.is_empty() && name == "email" {
                values.push(email);
            }
            form.set(&name, &values.join(","));
        }
        form.set("userName", email);
        form.set("nameIdFormat", EMAIL_FORMAT);
        let answer = browser.post(&form.action, &form.fields).await;
        let posted = forms(&answer.body)
            .into_iter()
            .find(|f| f.has("SAMLResponse"))
            .unwrap_or_else(|| {
                panic!(
                    "saml-idp answered no SAMLResponse: {}\n{}",
                    answer.describe(),
                    self.log()
                )
            });
        let relay_state = posted
            .get("RelayState")
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        let response = posted.get("SAMLResponse").unwrap().to_owned();
        (posted.action, response, relay_state)
    }

    fn sign_in_form(&self, page: &Page) -> Form {
        page.form()
            .filter(|f| f.action.ends_with("/signin"))
            .unwrap_or_else(|| {
                panic!(
                    "saml-idp showed no sign-in form: {}\n{}",
                    page.describe(),
                    self.log()
                )
            })
    }

    /// A response made now by `ci/sso-idp/forge-saml.mjs` (base64, or the XML with
    /// `"xml": true`), for negative tests and IdP-initiated sign-in. By default as this
    /// provider would sign one in: its key, certificate and issuer, `audience`, `acs_url` as
    /// Recipient and Destination, no InResponseTo. `options` (all optional) change that:
    /// `email`, `name_id`, `name_id_format`, `attributes` (name → list of values), `issuer`,
    /// `audience`, `acs_url`, `recipient`, `destination`, `in_response_to`; `issue_instant`,
    /// `not_before`, `not_on_or_after`, `subject_not_on_or_after` (a number is seconds from
    /// now, a string an `xs:dateTime`); `sign_assertion`, `sign_response` (default true);
    /// `key`, `cert` (paths, e.g. [`SamlIdp::other_key`]); `assertion_id`, `response_id` (to
    /// replay one); `session_index`; `status`; `tamper: {"from", "to"}` (text replaced after
    /// signing).
    pub async fn forge(&self, options: Value) -> String {
        let options = merge(
            json!({
                "key": self.key_path,
                "cert": self.cert_path,
                "issuer": self.entity_id,
                "audience": self.audience,
                "acs_url": self.acs_url,
            }),
            options,
        );
        let out = Command::new("node")
            .arg(self.scratch.0.join("forge-saml.mjs"))
            .arg(options.to_string())
            .current_dir(&self.scratch.0)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("could not run node forge-saml.mjs: {e}"));
        assert!(
            out.status.success(),
            "forge-saml.mjs {options} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Another key pair (key, certificate), in no metadata, to sign with in
    /// [`SamlIdp::forge`] (`"key"`, `"cert"`): a new one each call.
    pub fn other_key(&self) -> (PathBuf, PathBuf) {
        let n = self.others.fetch_add(1, Ordering::Relaxed);
        key_pair(&self.scratch.0, &format!("other-{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_as_a_browser_submits_them() {
        let html = r#"<form class="x" role="form"><input name="a" value="1"></form>
            <form action="/signin" method="post"><input name="userName" required="" value="a@b">
            <select id="f" name="fmt"><option>one</option><option selected>two</option></select>
            <input type="radio" name="r" value="no"><input checked name="r" type="radio" value="yes">
            <button type="submit">Go</button><input type="submit" name="go" value="Go">
            <input name="_authnRequest" type='hidden' value='eyJ&#x3D;&#x3D;'>
            <textarea name="t">x &amp; y</textarea></form>"#;
        let found = forms(html);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].action, "/signin");
        let fields: Vec<(&str, &str)> = found[1]
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("userName", "a@b"),
                ("fmt", "two"),
                ("r", "yes"),
                ("_authnRequest", "eyJ=="),
                ("t", "x & y"),
            ]
        );
    }

    #[test]
    fn cookies_are_kept_and_deleted() {
        let mut headers = reqwest::header::HeaderMap::new();
        for c in [
            "_interaction=abc; path=/interaction/x; httponly",
            "_session=s1; path=/; samesite=lax",
            "_gone=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            headers.append(reqwest::header::SET_COOKIE, c.parse().unwrap());
        }
        let mut cookies = Cookies::default();
        cookies.0.insert("_gone".into(), "old".into());
        cookies.store(&headers);
        assert_eq!(cookies.header(), "_interaction=abc; _session=s1");
    }
}
