//! Enterprise sign-in for the dashboard (SPEC §11): one connection per workspace to its
//! identity provider, OpenID Connect ([`crate::oidc`]) or SAML 2.0 ([`crate::saml`]).
//!
//! - **Routing.** The e-mail domains a connection names send sign-ins for those addresses to
//!   the provider; a domain routes to one workspace.
//! - **Sessions.** A session signed in through a workspace's provider is bound to that
//!   workspace: the provider vouches for the person there and nowhere else, so it cannot be
//!   switched to another workspace of the same address.
//! - **`required`.** Password sign-in is refused for the workspace's members, except owners
//!   (break-glass: audited `session.break_glass`), and password sessions already open stop
//!   working there.
//! - **`jit`.** A person the provider vouches for who is not a member becomes one, with the
//!   roles the role map gives (`viewer` when it gives none). A member's mapped roles are set
//!   again at each sign-in; `owner` is never granted or taken by a provider.
//! - Every sign-in (`session.signed_in` with `via`), refusal (`sso.sign_in_failed` with the
//!   reason), membership made and role changed (`member.created`, `member.updated`) is
//!   audited.

use std::collections::BTreeMap;
use std::net::IpAddr;

use agentnexus_store::{NewMember, NewSsoConnection, Tenant};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::notify::token_hash;
use crate::types::{Email, Role};
use crate::{Admin, App, Reader, Signed, oidc, saml};

/// How long a sign-in sent to a provider may take to come back.
pub const REQUEST_LIFETIME: Duration = Duration::minutes(10);

/// The clock difference tolerated between us and a SAML provider.
pub const SAML_SKEW: Duration = Duration::minutes(2);
/// How long an assertion id stays in the replay cache when the assertion says no end.
pub const SAML_KEEP: Duration = Duration::hours(1);

/// At most this many domains per connection, and this many role-map entries.
pub const MAX_DOMAINS: usize = 50;
pub const MAX_ROLE_MAP: usize = 200;

/// The most an IdP metadata document (given or fetched) may hold.
pub const MAX_METADATA: usize = 1 << 20;

/// Which IdP values give which roles.
pub type RoleMap = BTreeMap<String, Vec<String>>;

/// A connection as sent (`PUT /api/v1/settings/sso`).
#[derive(Debug, Clone, Default)]
pub struct SsoInput {
    pub oidc: Option<OidcInput>,
    pub saml: Option<SamlInput>,
    pub domains: Vec<String>,
    pub required: bool,
    pub jit: bool,
}

#[derive(Debug, Clone, Default)]
pub struct OidcInput {
    pub issuer: String,
    pub client_id: String,
    /// Absent on a change that keeps the stored secret (same issuer and client).
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub role_claim: Option<String>,
    pub role_map: RoleMap,
}

#[derive(Debug, Clone, Default)]
pub struct SamlInput {
    pub idp_metadata_xml: Option<String>,
    pub idp_metadata_url: Option<String>,
    pub role_attribute: Option<String>,
    pub role_map: RoleMap,
    /// Whether responses the provider sends unasked (IdP-initiated) are accepted.
    pub allow_idp_initiated: bool,
}

/// A connection as stored (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oidc: Option<StoredOidc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    saml: Option<StoredSaml>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredOidc {
    issuer: String,
    client_id: String,
    client_secret: String,
    scopes: Vec<String>,
    role_claim: Option<String>,
    role_map: RoleMap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSaml {
    metadata_xml: String,
    metadata_url: Option<String>,
    role_attribute: Option<String>,
    role_map: RoleMap,
    allow_idp_initiated: bool,
}

/// A connection as answered: never the client secret.
#[derive(Debug, Clone)]
pub struct SsoView {
    pub oidc: Option<OidcView>,
    pub saml: Option<SamlView>,
    pub domains: Vec<String>,
    pub required: bool,
    pub jit: bool,
    pub updated_at: DateTime<Utc>,
    /// What to register at the provider.
    pub service: ServiceUrls,
}

#[derive(Debug, Clone)]
pub struct OidcView {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub role_claim: Option<String>,
    pub role_map: RoleMap,
}

#[derive(Debug, Clone)]
pub struct SamlView {
    pub idp_entity_id: String,
    pub idp_sso_url: String,
    pub idp_metadata_url: Option<String>,
    pub role_attribute: Option<String>,
    pub role_map: RoleMap,
    pub allow_idp_initiated: bool,
}

/// This server as a provider knows it: the OIDC redirect URI, the SAML entity ID, ACS URL and
/// metadata URL.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub oidc_redirect_uri: String,
    pub saml_entity_id: String,
    pub saml_acs_url: String,
    pub saml_metadata_url: String,
}

/// Which workspace's provider a sign-in starts at.
#[derive(Debug, Clone, Copy)]
pub enum SsoStart<'a> {
    /// By the workspace's name (a link, `/sso/start?workspace=`).
    Workspace(&'a str),
    /// By the routed domain of the e-mail address typed on the sign-in page.
    Email(&'a str),
}

/// Where to send the browser to sign in, and (OIDC) the state to keep in a cookie, which the
/// callback must bring back from the same browser.
#[derive(Debug, Clone)]
pub struct SsoRedirect {
    pub url: String,
    pub state: Option<String>,
}

/// What a sign-in request keeps until the provider sends the person back (sealed).
#[derive(Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
enum Pending {
    Oidc { nonce: String, verifier: String },
    Saml { request_id: String },
}

fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

fn parse_domain(domain: &str) -> Result<String> {
    let d = domain.trim().trim_start_matches('@').to_ascii_lowercase();
    let ok = (3..=253).contains(&d.len())
        && d.contains('.')
        && d.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(d)
    } else {
        Err(Error::field(
            "domains",
            format!("`{domain}` is not an e-mail domain (example.com)"),
        ))
    }
}

fn parse_role_map(field: &str, map: RoleMap) -> Result<RoleMap> {
    if map.len() > MAX_ROLE_MAP {
        return Err(Error::field(
            field,
            format!("at most {MAX_ROLE_MAP} entries"),
        ));
    }
    let mut out = RoleMap::new();
    for (value, roles) in map {
        if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
            return Err(Error::field(
                field,
                "each key is 1-256 characters, no control characters",
            ));
        }
        let roles = Role::parse_all(roles).map_err(|_| {
            Error::field(
                field,
                format!("`{value}` maps to a role that is not a role name (1-64 of a-z 0-9 - _)"),
            )
        })?;
        if roles.iter().any(|r| r.as_str() == "owner") {
            return Err(Error::field(
                field,
                "owner cannot be granted by an identity provider: make owners in AgentNexus",
            ));
        }
        out.insert(value, roles.into_iter().map(Role::into_string).collect());
    }
    Ok(out)
}

fn short_text(field: &str, text: &str, max: usize) -> Result<String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(Error::field(
            field,
            format!("must be 1-{max} characters, no control characters"),
        ));
    }
    Ok(t.to_owned())
}

/// The roles a provider's values give: `None` when the connection maps none (roles are then
/// managed in AgentNexus only).
fn mapped_roles(map: &RoleMap, values: &[String]) -> Option<Vec<String>> {
    if map.is_empty() {
        return None;
    }
    let mut roles: Vec<String> = Vec::new();
    for value in values {
        for role in map.get(value).into_iter().flatten() {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
    }
    Some(roles)
}

/// A claim's values: a string, or the strings of an array.
fn claim_values(claims: &serde_json::Value, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Why an SSO sign-in was refused: shown to the person, and audited in the workspace when
/// one is known.
#[derive(Debug)]
pub struct SsoRefused {
    pub reason: String,
    pub internal: Option<Error>,
}

impl From<Error> for SsoRefused {
    fn from(e: Error) -> Self {
        SsoRefused {
            reason: "the sign-in could not be completed".into(),
            internal: Some(e),
        }
    }
}

impl From<agentnexus_store::StoreError> for SsoRefused {
    fn from(e: agentnexus_store::StoreError) -> Self {
        Error::from(e).into()
    }
}

fn refused(reason: impl Into<String>) -> SsoRefused {
    SsoRefused {
        reason: reason.into(),
        internal: None,
    }
}

impl App {
    /// This server's URLs that identity providers are told.
    pub fn service_urls(&self) -> ServiceUrls {
        let base = self.public_url();
        ServiceUrls {
            oidc_redirect_uri: format!("{base}/sso/oidc/callback"),
            saml_entity_id: format!("{base}/sso/saml/metadata"),
            saml_acs_url: format!("{base}/sso/saml/acs"),
            saml_metadata_url: format!("{base}/sso/saml/metadata"),
        }
    }

    fn sp(&self) -> saml::Sp {
        let urls = self.service_urls();
        saml::Sp {
            entity_id: urls.saml_entity_id,
            acs_url: urls.saml_acs_url,
        }
    }

    /// This server's SAML service-provider metadata.
    pub fn saml_metadata(&self) -> String {
        saml::sp_metadata(&self.sp())
    }

    async fn stored_sso(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<(agentnexus_store::SsoConnection, Stored)>> {
        let Some(connection) = self.store.sso_connection(tenant).await? else {
            return Ok(None);
        };
        let open = self
            .cipher()?
            .open(
                &connection.sealed,
                Purpose::SsoConnection {
                    workspace_id: tenant.workspace_id(),
                },
            )
            .map_err(|e| Error::Internal(format!("sso connection: {e}")))?;
        let stored: Stored = serde_json::from_str(&open).map_err(Error::internal)?;
        Ok(Some((connection, stored)))
    }

    /// The workspace's SSO connection, without its secret.
    pub async fn sso_settings(&self, reader: &Reader) -> Result<Option<SsoView>> {
        let Some((connection, stored)) = self.stored_sso(reader.tenant()).await? else {
            return Ok(None);
        };
        Ok(Some(SsoView {
            oidc: stored.oidc.map(|o| OidcView {
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret_set: !o.client_secret.is_empty(),
                scopes: o.scopes,
                role_claim: o.role_claim,
                role_map: o.role_map,
            }),
            saml: match stored.saml {
                Some(s) => {
                    let idp = saml::parse_idp_metadata(&s.metadata_xml).map_err(Error::Internal)?;
                    Some(SamlView {
                        idp_entity_id: idp.entity_id,
                        idp_sso_url: idp.sso_url,
                        idp_metadata_url: s.metadata_url,
                        role_attribute: s.role_attribute,
                        role_map: s.role_map,
                        allow_idp_initiated: s.allow_idp_initiated,
                    })
                }
                None => None,
            },
            domains: connection.domains,
            required: connection.required,
            jit: connection.jit,
            updated_at: connection.updated_at,
            service: self.service_urls(),
        }))
    }

    /// Connects the workspace to its identity provider, or changes the connection. The
    /// provider is reached now (OIDC discovery, SAML metadata by URL) so a wrong setting is
    /// answered at once. Audited (`settings.sso_updated`, without the secret).
    pub async fn put_sso(&self, admin: &Admin, input: SsoInput) -> Result<SsoView> {
        let tenant = admin.tenant();
        let mut domains = Vec::new();
        if input.domains.len() > MAX_DOMAINS {
            return Err(Error::field("domains", format!("at most {MAX_DOMAINS}")));
        }
        for d in &input.domains {
            let d = parse_domain(d)?;
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        let previous = self.stored_sso(tenant).await?.map(|(_, s)| s);
        let (stored, described) = match (input.oidc, input.saml) {
            (Some(o), None) => {
                let issuer = short_text("oidc.issuer", &o.issuer, 2048)?;
                self.sso_http
                    .check(&issuer)
                    .map_err(|why| Error::field("oidc.issuer", why))?;
                let client_id = short_text("oidc.client_id", &o.client_id, 255)?;
                let kept = previous
                    .and_then(|p| p.oidc)
                    .filter(|p| p.issuer == issuer && p.client_id == client_id)
                    .map(|p| p.client_secret);
                let client_secret = match (o.client_secret, kept) {
                    (Some(s), _) => short_text("oidc.client_secret", &s, 1024)?,
                    (None, Some(kept)) => kept,
                    (None, None) => {
                        return Err(Error::field("oidc.client_secret", "is required"));
                    }
                };
                let mut scopes = Vec::new();
                for s in o
                    .scopes
                    .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()])
                {
                    let s = short_text("oidc.scopes", &s, 64)?;
                    if s.contains(' ') {
                        return Err(Error::field("oidc.scopes", "a scope has no spaces"));
                    }
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                if scopes.len() > 20 {
                    return Err(Error::field("oidc.scopes", "at most 20"));
                }
                if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
                let role_claim = o
                    .role_claim
                    .map(|c| short_text("oidc.role_claim", &c, 64))
                    .transpose()?;
                let role_map = parse_role_map("oidc.role_map", o.role_map)?;
                // Discovery now: an issuer that is wrong is answered here, not at sign-in.
                self.discovery
                    .metadata(&self.sso_http, &issuer, true)
                    .await
                    .map_err(|e| Error::field("oidc.issuer", e))?;
                let described = json!({
                    "protocol": "oidc", "issuer": issuer, "client_id": client_id,
                    "scopes": scopes, "role_claim": role_claim, "role_map": role_map,
                });
                (
                    Stored {
                        oidc: Some(StoredOidc {
                            issuer,
                            client_id,
                            client_secret,
                            scopes,
                            role_claim,
                            role_map,
                        }),
                        saml: None,
                    },
                    described,
                )
            }
            (None, Some(s)) => {
                let (metadata_xml, metadata_url) = match (s.idp_metadata_xml, s.idp_metadata_url) {
                    (Some(xml), None) => (xml, None),
                    (None, Some(url)) => {
                        let url = short_text("saml.idp_metadata_url", &url, 2048)?;
                        self.sso_http
                            .check(&url)
                            .map_err(|why| Error::field("saml.idp_metadata_url", why))?;
                        let body = self
                            .sso_http
                            .get(&url)
                            .await
                            .map_err(|why| Error::field("saml.idp_metadata_url", why))?;
                        let xml = String::from_utf8(body).map_err(|_| {
                            Error::field("saml.idp_metadata_url", "the metadata is not UTF-8")
                        })?;
                        (xml, Some(url))
                    }
                    _ => {
                        return Err(Error::field(
                            "saml",
                            "give idp_metadata_xml or idp_metadata_url, one of them",
                        ));
                    }
                };
                let field = if metadata_url.is_some() {
                    "saml.idp_metadata_url"
                } else {
                    "saml.idp_metadata_xml"
                };
                if metadata_xml.len() > MAX_METADATA {
                    return Err(Error::field(
                        field,
                        format!("the metadata is larger than {MAX_METADATA} bytes"),
                    ));
                }
                let xml = metadata_xml.clone();
                let idp = tokio::task::spawn_blocking(move || saml::parse_idp_metadata(&xml))
                    .await
                    .map_err(Error::internal)?
                    .map_err(|why| Error::field(field, why))?;
                let role_attribute = s
                    .role_attribute
                    .map(|c| short_text("saml.role_attribute", &c, 256))
                    .transpose()?;
                let role_map = parse_role_map("saml.role_map", s.role_map)?;
                let described = json!({
                    "protocol": "saml", "idp_entity_id": idp.entity_id,
                    "idp_metadata_url": metadata_url, "role_attribute": role_attribute,
                    "role_map": role_map, "allow_idp_initiated": s.allow_idp_initiated,
                });
                (
                    Stored {
                        oidc: None,
                        saml: Some(StoredSaml {
                            metadata_xml,
                            metadata_url,
                            role_attribute,
                            role_map,
                            allow_idp_initiated: s.allow_idp_initiated,
                        }),
                    },
                    described,
                )
            }
            _ => {
                return Err(Error::field("oidc", "give oidc or saml, one of them"));
            }
        };
        let protocol = if stored.oidc.is_some() {
            "oidc"
        } else {
            "saml"
        };
        let mut described = described;
        described["domains"] = json!(domains);
        described["required"] = json!(input.required);
        described["jit"] = json!(input.jit);
        let sealed = self.cipher()?.seal(
            &serde_json::to_string(&stored).map_err(Error::internal)?,
            Purpose::SsoConnection {
                workspace_id: tenant.workspace_id(),
            },
        );
        self.store
            .put_sso_connection(
                tenant,
                NewSsoConnection {
                    protocol,
                    sealed: &sealed,
                    required: input.required,
                    jit: input.jit,
                    domains: &domains,
                    described,
                },
                admin.actor(),
                self.now(),
            )
            .await?;
        self.sso_settings(&admin.reader())
            .await?
            .ok_or_else(|| Error::Internal("the connection just saved is gone".into()))
    }

    /// Disconnects the workspace from its provider: passwords work again.
    pub async fn delete_sso(&self, admin: &Admin) -> Result<()> {
        Ok(self
            .store
            .delete_sso_connection(admin.tenant(), admin.actor(), self.now())
            .await?)
    }

    /// Whether password sign-in is off for the workspace's members (owners excepted).
    pub(crate) async fn sso_required(&self, tenant: &Tenant) -> Result<bool> {
        Ok(self
            .store
            .sso_connection(tenant)
            .await?
            .is_some_and(|c| c.required))
    }

    /// Starts a sign-in through a workspace's provider: the workspace named, or the one the
    /// e-mail address's domain is routed to. `NotFound` when there is none, or it has no
    /// connection.
    pub async fn sso_begin(&self, start: SsoStart<'_>, address: IpAddr) -> Result<SsoRedirect> {
        self.limits.check_sso_start(address)?;
        let found = match start {
            SsoStart::Workspace(name) => self.store.workspace_by_name(name).await?,
            SsoStart::Email(email) => match Email::parse(email) {
                Ok(email) => self.store.sso_route(domain_of(email.as_str())).await?,
                Err(_) => None,
            },
        };
        let (_, tenant) = found.ok_or(Error::NotFound)?;
        let (_, stored) = self.stored_sso(&tenant).await?.ok_or(Error::NotFound)?;
        let now = self.now();
        let seal = |pending: &Pending| -> Result<String> {
            Ok(self.cipher()?.seal(
                &serde_json::to_string(pending).map_err(Error::internal)?,
                Purpose::SsoRequest {
                    workspace_id: tenant.workspace_id(),
                },
            ))
        };
        if let Some(o) = stored.oidc {
            let begun = oidc::begin(
                &self.discovery,
                &self.sso_http,
                &connection(&o),
                &self.service_urls().oidc_redirect_uri,
            )
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
            let sealed = seal(&Pending::Oidc {
                nonce: begun.nonce,
                verifier: begun.verifier,
            })?;
            self.store
                .create_sso_request(
                    &token_hash(&begun.state),
                    &tenant,
                    &sealed,
                    now + REQUEST_LIFETIME,
                    now,
                )
                .await?;
            return Ok(SsoRedirect {
                url: begun.url,
                state: Some(begun.state),
            });
        }
        let s = stored
            .saml
            .ok_or_else(|| Error::Internal("a connection with no protocol".into()))?;
        let idp = saml::parse_idp_metadata(&s.metadata_xml).map_err(Error::Internal)?;
        let relay = crate::crypto::random_token("rs_");
        let (url, request_id) =
            saml::authn_request(&self.sp(), &idp, &relay).map_err(Error::Internal)?;
        let sealed = seal(&Pending::Saml { request_id })?;
        self.store
            .create_sso_request(
                &token_hash(&relay),
                &tenant,
                &sealed,
                now + REQUEST_LIFETIME,
                now,
            )
            .await?;
        Ok(SsoRedirect { url, state: None })
    }

    /// Takes a pending sign-in: its workspace and what it kept.
    async fn take_pending(&self, key: &str) -> Result<Option<(Tenant, Pending)>> {
        let Some((tenant, sealed)) = self
            .store
            .take_sso_request(&token_hash(key), self.now())
            .await?
        else {
            return Ok(None);
        };
        let open = self
            .cipher()?
            .open(
                &sealed,
                Purpose::SsoRequest {
                    workspace_id: tenant.workspace_id(),
                },
            )
            .map_err(|e| Error::Internal(format!("sso request: {e}")))?;
        let pending = serde_json::from_str(&open).map_err(Error::internal)?;
        Ok(Some((tenant, pending)))
    }

    async fn sso_failed(
        &self,
        tenant: &Tenant,
        protocol: &str,
        email: Option<&str>,
        why: &SsoRefused,
    ) {
        tracing::info!(workspace = tenant.workspace_id(), protocol, reason = %why.reason, "an SSO sign-in was refused");
        if let Some(e) = &why.internal {
            tracing::error!(error = %e, "an SSO sign-in failed");
        }
        let data = json!({"protocol": protocol, "email": email, "reason": why.reason});
        if let Err(e) = self
            .store
            .record_sso_failure(tenant, data, self.now())
            .await
        {
            tracing::error!(error = %e, "an SSO refusal could not be audited");
        }
    }

    /// Finishes an OIDC sign-in at the redirect URI. `browser_state` is the state the
    /// sign-in's cookie kept: a callback from another browser is refused (login CSRF).
    pub async fn oidc_callback(
        &self,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
        browser_state: Option<&str>,
        address: IpAddr,
    ) -> std::result::Result<(String, Signed), SsoRefused> {
        self.limits
            .check_sso_sign_in(address)
            .map_err(|_| refused("too many sign-ins from this address; wait a minute"))?;
        let Some((tenant, pending)) = self.take_pending(state).await? else {
            tracing::info!("an OIDC callback named no sign-in under way (state mismatch)");
            return Err(refused(
                "this sign-in is not one this server started, or it was used or has expired \
                 (state mismatch): start again",
            ));
        };
        let outcome = self
            .oidc_finish(&tenant, pending, state, code, provider_error, browser_state)
            .await;
        match outcome {
            Ok((email, roles)) => match self.admit(&tenant, &email, roles, "oidc").await {
                Ok(signed) => Ok(signed),
                Err(why) => {
                    self.sso_failed(&tenant, "oidc", Some(&email), &why).await;
                    Err(why)
                }
            },
            Err(why) => {
                self.sso_failed(&tenant, "oidc", None, &why).await;
                Err(why)
            }
        }
    }

    async fn oidc_finish(
        &self,
        tenant: &Tenant,
        pending: Pending,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
        browser_state: Option<&str>,
    ) -> std::result::Result<(String, Option<Vec<String>>), SsoRefused> {
        if !browser_state
            .is_some_and(|b| crate::crypto::constant_time_eq(b.as_bytes(), state.as_bytes()))
        {
            return Err(refused(
                "this sign-in was started in another browser (state mismatch): start again here",
            ));
        }
        if let Some(error) = provider_error {
            return Err(refused(format!("the identity provider answered: {error}")));
        }
        let code = code.ok_or_else(|| refused("the identity provider sent no code"))?;
        let Pending::Oidc { nonce, verifier } = pending else {
            return Err(refused("this sign-in was not an OpenID Connect one"));
        };
        let (_, stored) = self
            .stored_sso(tenant)
            .await?
            .ok_or_else(|| refused("the workspace has no SSO connection any more"))?;
        let o = stored.oidc.ok_or_else(|| {
            refused("the workspace's SSO connection is not OpenID Connect any more")
        })?;
        let identity = oidc::finish(
            &self.discovery,
            &self.sso_http,
            &connection(&o),
            &self.service_urls().oidc_redirect_uri,
            code,
            &nonce,
            &verifier,
        )
        .await
        .map_err(|e| refused(e.to_string()))?;
        if identity.email_verified == Some(false) {
            return Err(refused(
                "the identity provider has not verified the e-mail address",
            ));
        }
        let email = identity.email.ok_or_else(|| {
            refused("the ID token carries no e-mail address (ask for the email scope)")
        })?;
        let roles = o
            .role_claim
            .as_deref()
            .and_then(|claim| mapped_roles(&o.role_map, &claim_values(&identity.claims, claim)));
        let roles = match (o.role_claim.is_some(), roles) {
            (true, r) => r,
            (false, _) => None,
        };
        Ok((email, roles))
    }

    /// Finishes a SAML sign-in at the assertion consumer service.
    pub async fn saml_acs(
        &self,
        response: &str,
        relay_state: Option<&str>,
        address: IpAddr,
    ) -> std::result::Result<(String, Signed), SsoRefused> {
        self.limits
            .check_sso_sign_in(address)
            .map_err(|_| refused("too many sign-ins from this address; wait a minute"))?;
        // SP-initiated: the relay state names the request we sent. Otherwise IdP-initiated,
        // when the workspace the relay state names accepts that.
        let pending = match relay_state {
            Some(relay) => self.take_pending(relay).await?,
            None => None,
        };
        let (tenant, request_ids) = match pending {
            Some((tenant, Pending::Saml { request_id })) => (tenant, vec![request_id]),
            Some((tenant, Pending::Oidc { .. })) => {
                let why = refused("this sign-in was not a SAML one");
                self.sso_failed(&tenant, "saml", None, &why).await;
                return Err(why);
            }
            None => {
                let named = match relay_state {
                    Some(name) => self.store.workspace_by_name(name).await?,
                    None => None,
                };
                let Some((_, tenant)) = named else {
                    return Err(refused(
                        "this response answers no sign-in this server started, or one already \
                         used or expired: start again from the sign-in page",
                    ));
                };
                (tenant, Vec::new())
            }
        };
        let outcome = self.saml_finish(&tenant, response, request_ids).await;
        match outcome {
            Ok((email, roles)) => match self.admit(&tenant, &email, roles, "saml").await {
                Ok(signed) => Ok(signed),
                Err(why) => {
                    self.sso_failed(&tenant, "saml", Some(&email), &why).await;
                    Err(why)
                }
            },
            Err(why) => {
                self.sso_failed(&tenant, "saml", None, &why).await;
                Err(why)
            }
        }
    }

    async fn saml_finish(
        &self,
        tenant: &Tenant,
        response: &str,
        request_ids: Vec<String>,
    ) -> std::result::Result<(String, Option<Vec<String>>), SsoRefused> {
        let (_, stored) = self
            .stored_sso(tenant)
            .await?
            .ok_or_else(|| refused("the workspace has no SSO connection"))?;
        let s = stored
            .saml
            .ok_or_else(|| refused("the workspace's SSO connection is not SAML"))?;
        let (sp, now, response) = (self.sp(), self.now(), response.to_owned());
        if response.len() > saml::MAX_RESPONSE {
            return Err(refused(format!(
                "the SAML response is larger than {} bytes",
                saml::MAX_RESPONSE
            )));
        }
        let assertion = tokio::task::spawn_blocking(move || {
            let idp = saml::parse_idp_metadata(&s.metadata_xml).map_err(refused)?;
            saml::verify_response(
                &response,
                &saml::Expect {
                    sp: &sp,
                    idp: &idp,
                    request_ids: &request_ids,
                    allow_idp_initiated: s.allow_idp_initiated,
                    skew: SAML_SKEW,
                },
            )
            .map_err(|e| refused(e.to_string()))
            .map(|a| (a, s))
        })
        .await
        .map_err(Error::internal)?;
        let (assertion, s) = assertion?;
        if !self
            .store
            .use_saml_assertion(
                tenant,
                &assertion.id,
                assertion
                    .not_on_or_after
                    .unwrap_or(now + SAML_KEEP)
                    .max(now)
                    + SAML_SKEW,
                now,
            )
            .await?
        {
            return Err(refused("this assertion was used before (replayed)"));
        }
        let email = assertion
            .email
            .clone()
            .ok_or_else(|| refused("the assertion carries no e-mail address"))?;
        let roles = match &s.role_attribute {
            Some(attribute) => mapped_roles(
                &s.role_map,
                assertion
                    .attributes
                    .get(attribute)
                    .map_or(&[][..], Vec::as_slice),
            ),
            None => None,
        };
        Ok((email, roles))
    }

    /// Lets a person the provider vouched for in: checks the routed domains, makes them a
    /// member (JIT) or sets their mapped roles, and starts a session bound to the workspace.
    async fn admit(
        &self,
        tenant: &Tenant,
        email: &str,
        roles: Option<Vec<String>>,
        via: &str,
    ) -> std::result::Result<(String, Signed), SsoRefused> {
        let email = Email::parse(email)
            .map_err(|_| refused("the identity provider sent an e-mail address that is not one"))?
            .into_string();
        let connection = self
            .store
            .sso_connection(tenant)
            .await?
            .ok_or_else(|| refused("the workspace has no SSO connection"))?;
        if !connection.domains.is_empty()
            && !connection.domains.iter().any(|d| d == domain_of(&email))
        {
            return Err(refused(format!(
                "the address {email} is outside the e-mail domains this workspace signs in through its \
                 identity provider"
            )));
        }
        let now = self.now();
        let member = self
            .store
            .members(tenant)
            .await?
            .into_iter()
            .find(|m| m.email == email);
        match member {
            Some(m) => {
                if let Some(mut mapped) = roles {
                    if mapped.is_empty() {
                        mapped.push("viewer".into());
                    }
                    if m.roles.iter().any(|r| r == "owner") {
                        mapped.insert(0, "owner".into());
                    }
                    let mut before = m.roles.clone();
                    let mut after = mapped.clone();
                    before.sort();
                    after.sort();
                    if before != after {
                        self.store
                            .update_member(
                                tenant,
                                &m.id,
                                None,
                                Some(mapped),
                                agentnexus_store::Actor::System,
                                now,
                            )
                            .await
                            .map_err(Error::from)?;
                    }
                }
            }
            None if connection.jit => {
                let mut mapped = roles.unwrap_or_default();
                if mapped.is_empty() {
                    mapped.push("viewer".into());
                }
                self.store
                    .add_member(
                        tenant,
                        NewMember {
                            email: email.clone(),
                            name: None,
                            roles: mapped,
                        },
                        agentnexus_store::Actor::System,
                        now,
                    )
                    .await
                    .map_err(Error::from)?;
            }
            None => {
                return Err(refused(format!(
                    "the address {email} is not a member of this workspace (ask an admin to add you)"
                )));
            }
        }
        Ok(self.start_session(&email, tenant, via, true, now).await?)
    }
}

fn connection(o: &StoredOidc) -> oidc::Connection {
    oidc::Connection {
        issuer: o.issuer.clone(),
        client_id: o.client_id.clone(),
        client_secret: o.client_secret.clone(),
        scopes: o.scopes.clone(),
    }
}
