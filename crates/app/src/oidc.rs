//! OpenID Connect sign-in (SPEC §11) over the `openidconnect` crate: discovery, the
//! authorization code flow with PKCE (S256), state and nonce, and the ID token's checks
//! (signature against the provider's JWKS, issuer, audience, expiry, nonce). Discovery
//! documents and key sets are kept [`DISCOVERY_TTL`]; a signature that no kept key verifies
//! fetches them again once, so a provider's key rotation is followed at the next sign-in.
//!
//! Requests to the provider go through [`Http`]: no redirects (a discovery document cannot
//! send us elsewhere), bounded in time and size, and — unless `AGENTNEXUS_SSO_ALLOW_PRIVATE`
//! — never to loopback, private or link-local addresses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};

/// How long a provider's discovery document and key set are used before fetching them again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// The most a provider's answer may hold.
const MAX_ANSWER: usize = 1 << 20;

/// A workspace's OIDC connection, opened.
#[derive(Debug, Clone)]
pub struct Connection {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
}

/// A sign-in sent to the provider: where to send the browser, and what to keep until it is
/// back (state, nonce, PKCE verifier).
#[derive(Debug, Clone)]
pub struct Begun {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// Who the provider says signed in, from a verified ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Every claim of the ID token (the role claim is read from these).
    pub claims: serde_json::Value,
}

/// Why a sign-in was refused, as a person and an auditor read it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the identity provider could not be reached or answered wrongly: {0}")]
    Provider(String),
    #[error("the identity provider refused the sign-in: {0}")]
    Denied(String),
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client (audience)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("the ID token was refused: {0}")]
    Token(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The HTTP client for providers (see the module's documentation).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    allow_private: bool,
}

impl Http {
    pub fn new(allow_private: bool) -> Http {
        Http {
            client: crate::outbound::sso_client(allow_private),
            allow_private,
        }
    }

    /// Refuses a URL that is not http(s), or (unless allowed) names a private address.
    pub fn check(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url} is not http or https"));
        }
        if parsed.scheme() == "http" && !self.allow_private {
            return Err(format!(
                "{url} is not https (AGENTNEXUS_SSO_ALLOW_PRIVATE=1 allows http)"
            ));
        }
        if !self.allow_private
            && let Some(ip) = crate::outbound::literal_private(&parsed)
        {
            return Err(format!(
                "{ip} is a private, loopback or link-local address; refused \
                 (AGENTNEXUS_SSO_ALLOW_PRIVATE=1 allows it)"
            ));
        }
        Ok(parsed)
    }

    /// GETs a document (IdP metadata), within the same bounds.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let request = openidconnect::http::Request::builder()
            .method(openidconnect::http::Method::GET)
            .uri(url)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let answer = self.send(request).await.map_err(|e| e.0)?;
        if !answer.status().is_success() {
            return Err(format!("{url} answered {}", answer.status()));
        }
        Ok(answer.into_body())
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let url = self.check(&parts.uri.to_string()).map_err(HttpError)?;
        let mut response = self
            .client
            .request(parts.method, url.clone())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError(crate::outbound::describe(&e)))?;
        let mut answer = openidconnect::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HttpError(crate::outbound::describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(HttpError(format!(
                    "the answer from {url} is larger than {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        answer.body(body).map_err(|e| HttpError(e.to_string()))
    }
}

// A named future type (not a closure) so that the handlers' futures are plainly `Send`.
impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// Discovery documents (with their key sets) by issuer, each with when it was fetched.
#[derive(Default)]
pub struct Discovery {
    kept: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

impl Discovery {
    /// The provider's discovery document and key set: kept, or fetched when older than
    /// [`DISCOVERY_TTL`] or when `fresh`.
    pub async fn metadata(
        &self,
        http: &Http,
        issuer: &str,
        fresh: bool,
    ) -> Result<CoreProviderMetadata, Refusal> {
        if !fresh {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, metadata)) = kept.get(issuer)
                && at.elapsed() < DISCOVERY_TTL
            {
                return Ok(metadata.clone());
            }
        }
        let url =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| Refusal::Provider(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(url, http)
            .await
            .map_err(|e| Refusal::Provider(chain(&e)))?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        // A bound on what hostile configurations can make us keep: one entry per issuer in
        // use, cleared when there are too many.
        if kept.len() >= 10_000 {
            kept.clear();
        }
        kept.insert(issuer.to_owned(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Starts a sign-in: the provider's authorization URL with PKCE, a fresh state and nonce.
pub async fn begin(
    discovery: &Discovery,
    http: &Http,
    connection: &Connection,
    redirect: &str,
) -> Result<Begun, Refusal> {
    let metadata = discovery.metadata(http, &connection.issuer, false).await?;
    let client = client(metadata, connection, redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in connection.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    Ok(Begun {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
    })
}

fn client(
    metadata: CoreProviderMetadata,
    connection: &Connection,
    redirect: &str,
) -> Result<
    openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    Refusal,
> {
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(connection.client_id.clone()),
        Some(ClientSecret::new(connection.client_secret.clone())),
    )
    .set_redirect_uri(
        RedirectUrl::new(redirect.to_owned()).map_err(|e| Refusal::Provider(e.to_string()))?,
    ))
}

/// Finishes a sign-in: exchanges the code (with the PKCE verifier) and verifies the ID token.
pub async fn finish(
    discovery: &Discovery,
    http: &Http,
    connection: &Connection,
    redirect: &str,
    code: &str,
    nonce: &str,
    verifier: &str,
) -> Result<Identity, Refusal> {
    let metadata = discovery.metadata(http, &connection.issuer, false).await?;
    let client = client(metadata, connection, redirect)?;
    let answer: CoreTokenResponse = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| Refusal::Provider(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
        .request_async(http)
        .await
        .map_err(|e| Refusal::Denied(chain(&e)))?;
    let _ = answer.access_token();
    let token = answer
        .id_token()
        .ok_or_else(|| Refusal::Token("the provider answered no ID token".into()))?;
    let nonce = Nonce::new(nonce.to_owned());
    match verify(&client, token, &nonce) {
        // No key we keep verifies it: the provider may have rotated its keys.
        Err(Refusal::Signature) => {
            let metadata = discovery.metadata(http, &connection.issuer, true).await?;
            let client = self::client(metadata, connection, redirect)?;
            verify(&client, token, &nonce)
        }
        other => other,
    }
}

fn verify(
    client: &openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    token: &CoreIdToken,
    nonce: &Nonce,
) -> Result<Identity, Refusal> {
    let claims = token
        .claims(&client.id_token_verifier(), nonce)
        .map_err(|e| match e {
            ClaimsVerificationError::SignatureVerification(_) => Refusal::Signature,
            ClaimsVerificationError::InvalidIssuer(_) => Refusal::Issuer,
            ClaimsVerificationError::InvalidAudience(_) => Refusal::Audience,
            ClaimsVerificationError::Expired(_) => Refusal::Expired,
            ClaimsVerificationError::InvalidNonce(_) => Refusal::Nonce,
            other => Refusal::Token(other.to_string()),
        })?;
    // The signature is verified: the payload of the same token can be read as it is, for
    // the claims the typed ones do not carry (a role claim such as `groups`).
    let compact = token.to_string();
    let all = compact
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Identity {
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified(),
        claims: all,
    })
}
