//! SAML 2.0 for the service-provider side, on `samael` (with xmlsec1 for XML signatures):
//! reading an identity provider's metadata, this server's metadata, the HTTP-Redirect
//! `AuthnRequest`, and the checks on a `Response` posted to the assertion consumer service.
//!
//! What samael checks: a signature over the response or the assertion by one of the
//! provider's signing certificates (with the unsigned parts cut away before anything is
//! read), the issuer, `Destination` and `Recipient` against our ACS URL, the audience when
//! the assertion names one, `NotBefore`/`NotOnOrAfter` with the skew given, and
//! `InResponseTo` against the requests we sent (or none, IdP-initiated, when allowed). What
//! we add: an audience restriction is required, an IdP-initiated response must not claim to
//! answer a request, and the assertion's id goes to the replay cache (in the caller, which
//! has the store).
use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use samael::crypto::AllowedSignatureAlgorithm;
use samael::metadata::{
    EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING, IndexedEndpoint, SpSsoDescriptor,
};
use samael::service_provider::{Error as SamlError, ServiceProvider};
use samael::traits::ToXml;

/// The largest `SAMLResponse` accepted (base64, as posted): the server's request body limit;
/// real ones are a few KiB.
pub const MAX_RESPONSE: usize = 64 * 1024;

const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// Attribute names providers put the e-mail address under (Entra ID's claim URI, Okta's
/// and Google's usual names), tried in order before the NameID.
const EMAIL_ATTRIBUTES: &[&str] = &[
    "email",
    "mail",
    "emailaddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
];

/// libxml2 and xmlsec1 keep process-wide state (the ID table hooks, error callbacks) that
/// their documentation does not promise is safe across threads; one verification at a time
/// (each takes well under a millisecond for a response under the size limit).
static XMLSEC: Mutex<()> = Mutex::new(());

/// An identity provider, as its metadata describes it.
#[derive(Debug, Clone)]
pub struct Idp {
    pub entity_id: String,
    /// Where the `AuthnRequest` goes (HTTP-Redirect binding).
    pub sso_url: String,
    descriptor: EntityDescriptor,
}

/// Reads an identity provider's metadata: its entity id, its HTTP-Redirect single sign-on
/// URL and at least one signing certificate (responses are refused without a signature).
pub fn parse_idp_metadata(xml: &str) -> Result<Idp, String> {
    let descriptor: EntityDescriptor = xml
        .parse()
        .map_err(|e| format!("the metadata is not a SAML EntityDescriptor: {e}"))?;
    let entity_id = descriptor
        .entity_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .ok_or("the metadata has no entityID")?;
    if descriptor
        .idp_sso_descriptors
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err("the metadata has no IDPSSODescriptor (is it a service provider's?)".into());
    }
    let sp = ServiceProvider {
        idp_metadata: descriptor.clone(),
        ..ServiceProvider::default()
    };
    let sso_url = sp
        .sso_binding_location(HTTP_REDIRECT_BINDING)
        .ok_or("the metadata has no SingleSignOnService with the HTTP-Redirect binding")?;
    url::Url::parse(&sso_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| {
            format!("the SingleSignOnService location {sso_url:?} is not an http(s) URL")
        })?;
    match sp.idp_signing_certs() {
        Ok(Some(_)) => {}
        Ok(None) => return Err("the metadata has no signing certificate".into()),
        Err(e) => return Err(format!("a certificate in the metadata cannot be read: {e}")),
    }
    Ok(Idp {
        entity_id,
        sso_url,
        descriptor,
    })
}

/// This server as a service provider.
#[derive(Debug, Clone)]
pub struct Sp {
    pub entity_id: String,
    pub acs_url: String,
}

/// This server's metadata: its entity id and assertion consumer service (HTTP-POST), signed
/// assertions wanted, requests unsigned.
pub fn sp_metadata(sp: &Sp) -> String {
    let descriptor = EntityDescriptor {
        entity_id: Some(sp.entity_id.clone()),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some(PROTOCOL.into()),
            authn_requests_signed: Some(false),
            want_assertions_signed: Some(true),
            name_id_formats: Some(vec![EMAIL_FORMAT.into()]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.into(),
                location: sp.acs_url.clone(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    ToXml::to_string(&descriptor).unwrap_or_default()
}

fn service_provider(sp: &Sp, idp: &Idp) -> ServiceProvider {
    ServiceProvider {
        entity_id: Some(sp.entity_id.clone()),
        metadata_url: Some(sp.entity_id.clone()),
        acs_url: Some(sp.acs_url.clone()),
        idp_metadata: idp.descriptor.clone(),
        authn_name_id_format: Some(EMAIL_FORMAT.into()),
        allowed_signature_algorithms: Some(vec![
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::RsaSha384,
            AllowedSignatureAlgorithm::RsaSha512,
            AllowedSignatureAlgorithm::EcdsaSha256,
            AllowedSignatureAlgorithm::EcdsaSha384,
            AllowedSignatureAlgorithm::EcdsaSha512,
        ]),
        ..ServiceProvider::default()
    }
}

/// The URL that sends the person to the provider with an `AuthnRequest` (HTTP-Redirect),
/// and the request's id, which the response must answer.
pub fn authn_request(sp: &Sp, idp: &Idp, relay_state: &str) -> Result<(String, String), String> {
    let mut request = service_provider(sp, idp)
        .make_authentication_request(&idp.sso_url)
        .map_err(|e| format!("authn request: {e}"))?;
    // samael's ids carry 32 random bits; ours carry 128 (an id must start with a letter or _).
    request.id = format!("_{}", hex::encode(rand::random::<[u8; 16]>()));
    let url = request
        .redirect(relay_state)
        .map_err(|e| format!("authn request: {e}"))?
        .ok_or("authn request: no destination")?;
    Ok((url.to_string(), request.id))
}

/// What a verified assertion says.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub id: String,
    pub email: Option<String>,
    /// Values by attribute `Name` (and by `FriendlyName` too, when it has one).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// When the assertion stops being good (conditions or subject confirmation), if said.
    pub not_on_or_after: Option<DateTime<Utc>>,
}

/// Why a response was refused; the text is shown to the person and audited.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the SAML response is malformed: {0}")]
    Malformed(String),
    #[error(
        "the SAML response is not signed by the identity provider's certificate (unsigned, or signed by another key)"
    )]
    Signature,
    #[error("the SAML assertion is for another audience (expected {0})")]
    Audience(String),
    #[error("the SAML assertion has expired or is not valid yet ({0})")]
    Expired(String),
    #[error("the SAML response was sent to another address than this server's ACS ({0})")]
    Recipient(String),
    #[error("the SAML response answers no sign-in this server started (InResponseTo)")]
    InResponseTo,
    #[error("the SAML response comes from another issuer than the configured identity provider")]
    Issuer,
    #[error("the identity provider refused the sign-in ({0})")]
    Status(String),
}

impl From<SamlError> for Refusal {
    fn from(e: SamlError) -> Self {
        use SamlError as E;
        match e {
            E::FailedToValidateSignature | E::CryptoXmlError(_) => Refusal::Signature,
            E::AssertionConditionAudienceRestrictionFailed { requirement } => {
                Refusal::Audience(requirement)
            }
            E::AssertionExpired { time }
            | E::ResponseExpired { time }
            | E::AssertionConditionExpired { time }
            | E::AssertionConditionExpiredBefore { time }
            | E::AssertionSubjectConfirmationExpired { time }
            | E::AssertionSubjectConfirmationExpiredBefore { time } => Refusal::Expired(time),
            E::DestinationValidationError {
                response_destination,
                ..
            } => Refusal::Recipient(format!(
                "Destination {}",
                response_destination.unwrap_or_default()
            )),
            E::AssertionRecipientMismatch {
                assertion_recipient,
                ..
            } => Refusal::Recipient(format!(
                "Recipient {}",
                assertion_recipient.unwrap_or_default()
            )),
            E::AssertionInResponseToInvalid { .. } | E::ResponseInResponseToInvalid { .. } => {
                Refusal::InResponseTo
            }
            E::AssertionIssuerMismatch { .. } | E::ResponseIssuerMismatch { .. } => Refusal::Issuer,
            E::ResponseBadStatusCode { code } => Refusal::Status(code),
            other => Refusal::Malformed(other.to_string()),
        }
    }
}

/// What a response must match.
pub struct Expect<'a> {
    pub sp: &'a Sp,
    pub idp: &'a Idp,
    /// The requests this response may answer; empty for an IdP-initiated response.
    pub request_ids: &'a [String],
    pub allow_idp_initiated: bool,
    /// How far the provider's clock may be from ours.
    pub skew: chrono::Duration,
}

/// Checks a posted `SAMLResponse` (base64) and returns its assertion. Blocking (XML parsing
/// and signature checks): call it off the async runtime.
pub fn verify_response(encoded: &str, expect: &Expect) -> Result<Assertion, Refusal> {
    if encoded.len() > MAX_RESPONSE {
        return Err(Refusal::Malformed(format!(
            "larger than {MAX_RESPONSE} bytes"
        )));
    }
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let idp_initiated = expect.request_ids.is_empty();
    if idp_initiated && !expect.allow_idp_initiated {
        return Err(Refusal::InResponseTo);
    }
    let sp = ServiceProvider {
        allow_idp_initiated: idp_initiated,
        max_clock_skew: expect.skew,
        max_issue_delay: chrono::Duration::minutes(5) + expect.skew,
        ..service_provider(expect.sp, expect.idp)
    };
    let ids: Vec<&str> = expect.request_ids.iter().map(String::as_str).collect();
    let assertion = {
        let _one = XMLSEC.lock().unwrap_or_else(|p| p.into_inner());
        sp.parse_base64_response(&compact, Some(&ids))
    }
    .map_err(|e| match e.downcast::<SamlError>() {
        Ok(e) => Refusal::from(*e),
        Err(e) => Refusal::Malformed(e.to_string()),
    })?;

    // An audience restriction naming us is required, not only checked when present.
    let audiences = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.audience_restrictions.as_ref());
    if !audiences.is_some_and(|rs| {
        rs.iter()
            .any(|r| r.audience.iter().any(|a| a == &expect.sp.entity_id))
    }) {
        return Err(Refusal::Audience(expect.sp.entity_id.clone()));
    }
    let confirmations: Vec<_> = assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter_map(|c| c.subject_confirmation_data.as_ref())
        .collect();
    // With IdP-initiated allowed samael skips InResponseTo; a response that names a request
    // answers someone else's sign-in, so it is not ours to accept here.
    if idp_initiated && confirmations.iter().any(|d| d.in_response_to.is_some()) {
        return Err(Refusal::InResponseTo);
    }
    let not_on_or_after = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.not_on_or_after)
        .into_iter()
        .chain(confirmations.iter().filter_map(|d| d.not_on_or_after))
        .min();

    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attribute in assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
    {
        let values: Vec<String> = attribute
            .values
            .iter()
            .filter_map(|v| v.value.as_ref().map(|v| v.trim().to_owned()))
            .collect();
        for name in [&attribute.name, &attribute.friendly_name]
            .into_iter()
            .flatten()
        {
            attributes
                .entry(name.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
    }
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .map(|n| n.value.trim().to_owned());
    let email = EMAIL_ATTRIBUTES
        .iter()
        .find_map(|name| {
            attributes
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first().cloned())
        })
        .or_else(|| name_id.clone().filter(|n| n.contains('@')));
    Ok(Assertion {
        id: assertion.id,
        email,
        attributes,
        not_on_or_after,
    })
}
