//! The identity providers of `agentnexus_testkit::idp`, driven as a relying party and a
//! service provider would drive them: what the single sign-on tests rely on them to do.

use agentnexus_testkit::idp::{OidcIdp, SamlIdp};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REDIRECT_URI: &str = "http://127.0.0.1:9/sso/oidc/callback";
const ACS_URL: &str = "http://127.0.0.1:9/sso/saml/acs";
const SP_ENTITY_ID: &str = "http://127.0.0.1:9/sso/saml/metadata";

fn accounts() -> Value {
    json!({
        "alice": {
            "email": "alice@example.com",
            "email_verified": true,
            "name": "Alice Example",
            "groups": ["admins", "platform"],
        },
        "bob": {"email": "bob@example.com", "email_verified": false, "role": "viewer"},
    })
}

/// A relying party's half of one sign-in: the authorization URL it would redirect to, with
/// PKCE (S256), and what it keeps to finish.
struct Attempt {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn start_attempt(idp: &OidcIdp, pkce: bool) -> Attempt {
    let id = ulid::Ulid::new().to_string();
    let verifier = format!("verifier-{id}-0123456789abcdefghijklmnop");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = url::Url::parse(&format!("{}/auth", idp.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &idp.client_id)
        .append_pair("redirect_uri", &idp.redirect_uri)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &format!("state-{id}"))
        .append_pair("nonce", &format!("nonce-{id}"));
    if pkce {
        url.query_pairs_mut()
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
    }
    Attempt {
        url: url.into(),
        state: format!("state-{id}"),
        nonce: format!("nonce-{id}"),
        verifier,
    }
}

fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Signs `login` in and exchanges the code as a confidential client would; the token
/// response.
async fn sign_in_and_exchange(idp: &OidcIdp, login: &str) -> (Attempt, Value) {
    let attempt = start_attempt(idp, true);
    let callback = idp.sign_in(&attempt.url, login).await;
    assert!(callback.starts_with(REDIRECT_URI), "{callback}");
    assert_eq!(query(&callback, "state").as_deref(), Some(&*attempt.state));
    assert_eq!(query(&callback, "iss").as_deref(), Some(&*idp.issuer));
    let code = query(&callback, "code").expect("a code");
    let response = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .basic_auth(&idp.client_id, Some(&idp.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &attempt.verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    (attempt, tokens)
}

/// A JWT's header and payload, unverified.
fn decode(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut part = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    (part(), part())
}

fn id_token(tokens: &Value) -> &str {
    tokens["id_token"].as_str().expect("an id_token")
}

async fn jwks_kids(idp: &OidcIdp) -> Vec<String> {
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: Value = reqwest::get(discovery["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn oidc_discovery_names_the_exact_issuer() {
    let idp = OidcIdp::start(REDIRECT_URI, accounts()).await;
    assert!(
        idp.issuer.starts_with("http://127.0.0.1:"),
        "{}",
        idp.issuer
    );
    assert!(!idp.issuer.ends_with('/'));
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], idp.issuer);
    assert_eq!(
        discovery["authorization_endpoint"],
        format!("{}/auth", idp.issuer)
    );
    assert_eq!(discovery["token_endpoint"], format!("{}/token", idp.issuer));
    assert_eq!(discovery["jwks_uri"], format!("{}/jwks", idp.issuer));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(jwks_kids(&idp).await.len(), 1);
}

#[tokio::test]
async fn oidc_sign_in_gives_a_code_for_an_id_token_with_the_accounts_claims() {
    let idp = OidcIdp::start(REDIRECT_URI, accounts()).await;
    let (attempt, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let (header, payload) = decode(id_token(&tokens));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(
        header["kid"].as_str(),
        jwks_kids(&idp).await.first().map(|k| &**k)
    );
    assert_eq!(payload["iss"], idp.issuer);
    assert_eq!(payload["aud"], idp.client_id);
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["email"], "alice@example.com");
    assert_eq!(payload["email_verified"], true);
    assert_eq!(payload["name"], "Alice Example");
    assert_eq!(payload["groups"], json!(["admins", "platform"]));
    assert_eq!(payload["nonce"], attempt.nonce);
    assert_eq!(idp.verify(id_token(&tokens)).await, Ok(payload));

    // Another account, a custom claim; and one changed between sign-ins.
    let (_, tokens) = sign_in_and_exchange(&idp, "bob").await;
    let (_, payload) = decode(id_token(&tokens));
    assert_eq!(
        (&payload["email"], &payload["role"]),
        (&json!("bob@example.com"), &json!("viewer"))
    );
    idp.set_account(
        "bob",
        json!({"email": "bob@example.com", "department": "ops"}),
    )
    .await;
    let (_, tokens) = sign_in_and_exchange(&idp, "bob").await;
    let (_, payload) = decode(id_token(&tokens));
    assert_eq!(payload["department"], "ops");
    assert!(payload.get("role").is_none(), "{payload}");

    // PKCE is required: without it the provider sends the browser back with an error.
    let plain = start_attempt(&idp, false);
    let callback = idp.sign_in(&plain.url, "alice").await;
    assert_eq!(
        query(&callback, "error").as_deref(),
        Some("invalid_request"),
        "{callback}"
    );
    assert_eq!(query(&callback, "state").as_deref(), Some(&*plain.state));
}

#[tokio::test]
async fn oidc_forges_spoil_only_the_next_id_token() {
    let idp = OidcIdp::start(REDIRECT_URI, accounts()).await;

    idp.forge_next(json!({"tamper": true})).await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let tampered = id_token(&tokens).to_owned();
    let refused = idp.verify(&tampered).await.unwrap_err();
    assert!(
        refused.contains("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
        "{refused}"
    );
    assert_eq!(decode(&tampered).1["email"], "alice@example.com");

    // The forge was used up: the next token is sound.
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    assert!(idp.verify(id_token(&tokens)).await.is_ok());

    idp.forge_next(json!({"claims": {"aud": "someone-else", "nonce": null}}))
        .await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let (_, payload) = decode(id_token(&tokens));
    assert_eq!(payload["aud"], "someone-else");
    assert!(payload.get("nonce").is_none());
    let refused = idp.verify(id_token(&tokens)).await.unwrap_err();
    assert!(
        refused.contains("ERR_JWT_CLAIM_VALIDATION_FAILED"),
        "{refused}"
    );

    // Validly signed but expired: the signature holds, the expiry does not.
    idp.forge_next(json!({"claims": {"exp": 1_000_000_000}}))
        .await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let refused = idp.verify(id_token(&tokens)).await.unwrap_err();
    assert!(refused.contains("ERR_JWT_EXPIRED"), "{refused}");

    idp.forge_next(json!({"other_key": true})).await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let (header, _) = decode(id_token(&tokens));
    assert_eq!(
        header["kid"].as_str(),
        jwks_kids(&idp).await.first().map(|k| &**k)
    );
    let refused = idp.verify(id_token(&tokens)).await.unwrap_err();
    assert!(
        refused.contains("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
        "{refused}"
    );

    idp.forge_next(json!({"alg": "none"})).await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    assert!(id_token(&tokens).ends_with('.'));
    assert_eq!(decode(id_token(&tokens)).0, json!({"alg": "none"}));

    idp.forge_next(json!({"omit_id_token": true})).await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn oidc_rotation_replaces_the_signing_key() {
    let idp = OidcIdp::start(REDIRECT_URI, accounts()).await;
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    let old_token = id_token(&tokens).to_owned();
    let old = jwks_kids(&idp).await;

    // A sign-in under way when the key changes still completes.
    let pending = start_attempt(&idp, true);
    let kid = idp.rotate_keys().await;
    assert_eq!(jwks_kids(&idp).await, vec![kid.clone()]);
    assert!(!old.contains(&kid));
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], idp.issuer);

    let callback = idp.sign_in(&pending.url, "alice").await;
    assert!(query(&callback, "code").is_some(), "{callback}");
    let (_, tokens) = sign_in_and_exchange(&idp, "alice").await;
    assert_eq!(decode(id_token(&tokens)).0["kid"], kid);
    assert!(idp.verify(id_token(&tokens)).await.is_ok());
    let refused = idp.verify(&old_token).await.unwrap_err();
    assert!(refused.contains("ERR_JWKS_NO_MATCHING_KEY"), "{refused}");
}

/// An AuthnRequest in the HTTP-Redirect binding: raw DEFLATE (one stored block, which every
/// inflater reads), base64, URL-encoded.
fn redirect_binding(sso_url: &str, id: &str, relay_state: &str) -> String {
    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="2026-01-01T00:00:00Z" Destination="{sso_url}" AssertionConsumerServiceURL="{ACS_URL}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{SP_ENTITY_ID}</saml:Issuer></samlp:AuthnRequest>"#
    );
    let len = u16::try_from(xml.len()).unwrap();
    let mut deflated = vec![1u8];
    deflated.extend(len.to_le_bytes());
    deflated.extend((!len).to_le_bytes());
    deflated.extend(xml.as_bytes());
    let mut url = url::Url::parse(sso_url).unwrap();
    url.query_pairs_mut()
        .append_pair("SAMLRequest", &STANDARD.encode(deflated))
        .append_pair("RelayState", relay_state);
    url.into()
}

fn xml_of(response: &str) -> String {
    String::from_utf8(STANDARD.decode(response).unwrap()).unwrap()
}

/// The values of attribute `name` in a response's XML.
fn attribute_values(xml: &str, name: &str) -> Vec<String> {
    let Some(start) = xml.find(&format!(r#"<saml:Attribute Name="{name}""#)) else {
        return Vec::new();
    };
    let attribute = &xml[start..start + xml[start..].find("</saml:Attribute>").unwrap()];
    attribute
        .split("<saml:AttributeValue")
        .skip(1)
        .map(|v| v[v.find('>').unwrap() + 1..v.find("</saml:AttributeValue>").unwrap()].to_owned())
        .collect()
}

fn der_of(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[tokio::test]
async fn saml_metadata_names_the_entity_and_its_certificate() {
    let idp = SamlIdp::start(ACS_URL, SP_ENTITY_ID).await;
    assert!(idp.metadata_url.starts_with("http://127.0.0.1:"));
    let served = reqwest::get(&idp.metadata_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, idp.metadata_xml);
    assert!(served.contains(&format!(r#"entityID="{}""#, idp.entity_id)));
    assert!(served.contains(&der_of(&idp.cert_pem)), "{served}");
    assert!(served.contains(&format!(
        r#"Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{}""#,
        idp.sso_url
    )));
}

#[tokio::test]
async fn saml_sign_in_answers_the_request_with_a_signed_response() {
    let idp = SamlIdp::start(ACS_URL, SP_ENTITY_ID).await;
    let request = redirect_binding(&idp.sso_url, "_request-1", "relay-1");
    let (acs, response, relay_state) = idp
        .sign_in(
            &request,
            "carol@example.com",
            &[("groups", "admins"), ("groups", "dev"), ("role", "owner")],
        )
        .await;
    assert_eq!(acs, ACS_URL);
    assert_eq!(relay_state.as_deref(), Some("relay-1"));
    let xml = xml_of(&response);
    assert!(xml.contains(r#"InResponseTo="_request-1""#), "{xml}");
    assert_eq!(xml.matches("<Signature ").count(), 2, "{xml}");
    assert!(xml.contains(&format!("<saml:Issuer>{}</saml:Issuer>", idp.entity_id)));
    assert!(xml.contains(&format!("<saml:Audience>{SP_ENTITY_ID}</saml:Audience>")));
    assert!(xml.contains(
        r#"<saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">carol@example.com</saml:NameID>"#
    ));
    assert_eq!(attribute_values(&xml, "email"), ["carol@example.com"]);
    assert_eq!(attribute_values(&xml, "groups"), ["admins", "dev"]);
    assert_eq!(attribute_values(&xml, "role"), ["owner"]);

    // saml-idp keeps one user: the next sign-in must not inherit the last one's attributes.
    let request = redirect_binding(&idp.sso_url, "_request-2", "relay-2");
    let (_, response, _) = idp.sign_in(&request, "dave@example.com", &[]).await;
    let xml = xml_of(&response);
    assert!(xml.contains(r#"InResponseTo="_request-2""#));
    assert_eq!(attribute_values(&xml, "email"), ["dave@example.com"]);
    assert!(attribute_values(&xml, "groups").is_empty(), "{xml}");
    assert!(attribute_values(&xml, "role").is_empty(), "{xml}");
}

#[tokio::test]
async fn saml_forges_what_a_provider_would_not_sign() {
    let idp = SamlIdp::start(ACS_URL, SP_ENTITY_ID).await;

    let sound = xml_of(
        &idp.forge(json!({"email": "erin@example.com", "in_response_to": "_r9",
                          "attributes": {"groups": ["a", "b"]}}))
            .await,
    );
    assert_eq!(sound.matches("<Signature ").count(), 2);
    assert!(sound.contains(r#"InResponseTo="_r9""#));
    assert!(sound.contains(&format!(r#"Destination="{ACS_URL}""#)));
    assert!(sound.contains(&der_of(&idp.cert_pem)));
    assert_eq!(attribute_values(&sound, "email"), ["erin@example.com"]);
    assert_eq!(attribute_values(&sound, "groups"), ["a", "b"]);

    let unsigned = xml_of(
        &idp.forge(json!({"email": "erin@example.com", "sign_assertion": false,
                          "sign_response": false}))
            .await,
    );
    assert!(!unsigned.contains("Signature"), "{unsigned}");

    let expired = xml_of(
        &idp.forge(json!({"email": "erin@example.com",
                          "not_on_or_after": "2001-01-01T00:00:00.000Z"}))
            .await,
    );
    assert_eq!(
        expired
            .matches(r#"NotOnOrAfter="2001-01-01T00:00:00.000Z""#)
            .count(),
        2,
        "{expired}"
    );

    let replayed = json!({"email": "erin@example.com", "assertion_id": "_same"});
    let first = xml_of(&idp.forge(replayed.clone()).await);
    let second = xml_of(&idp.forge(replayed).await);
    assert!(first.contains(r#"ID="_same""#) && second.contains(r#"ID="_same""#));

    let (key, cert) = idp.other_key();
    let other = xml_of(
        &idp.forge(json!({"email": "erin@example.com", "key": key, "cert": cert}))
            .await,
    );
    let other_cert = der_of(&std::fs::read_to_string(&cert).unwrap());
    assert!(other.contains(&other_cert));
    assert!(!other.contains(&der_of(&idp.cert_pem)));

    let tampered = xml_of(
        &idp.forge(json!({"email": "erin@example.com",
                          "tamper": {"from": "erin@", "to": "mallory@"}}))
            .await,
    );
    assert!(tampered.contains("mallory@example.com"));
}
