// Prints a base64 SAMLResponse made as saml-idp makes one (the assertion by npm saml, the
// Response by samlp's template, both signed the same way), from the JSON argument, so tests can
// make what a real identity provider would not:
//
//   node forge-saml.mjs '{"key": "idp.key", "cert": "idp.crt", "issuer": "...", ...}'
//
// - key, cert: PEM files to sign with (required unless nothing is signed).
// - issuer: the Issuer of the Response and the assertion.
// - audience: the assertion's Audience (a string or a list; none if absent).
// - acs_url: the default of `recipient` (SubjectConfirmationData) and `destination` (Response).
// - in_response_to: the AuthnRequest's ID, on the Response and SubjectConfirmationData.
// - email: the NameID (unless `name_id` is given) and the `email` attribute (unless
//   `attributes` has one); name_id_format defaults to the e-mail address format.
// - attributes: name → list of values (a single value is taken as a list of one).
// - issue_instant, not_before, not_on_or_after, subject_not_on_or_after: a number is seconds
//   from now, a string an xs:dateTime. Defaults: now, now, now + 3600, `not_on_or_after`.
//   `issue_instant` is the Response's, the assertion's and the AuthnInstant.
// - sign_assertion, sign_response: default true.
// - assertion_id, response_id: default fresh ones (`_` and hex), to replay an assertion.
// - session_index; status (default urn:oasis:names:tc:SAML:2.0:status:Success).
// - tamper: {"from": TEXT, "to": TEXT}: replaces the first TEXT after signing.
// - xml: true prints the XML instead of base64.

import fs from 'node:fs';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Saml20 } = require('saml');
const SignXml = require('saml/lib/xml/sign.js');
const templates = require('samlp/lib/templates.js');
const { SignedXml } = require('xml-crypto');
const { DOMParser } = require('@xmldom/xmldom');

const o = JSON.parse(process.argv[2] ?? '{}');
const now = Date.now();
const at = (value, fallback) => {
  if (value === undefined || value === null) return new Date(fallback).toISOString();
  if (typeof value === 'number') return new Date(now + value * 1000).toISOString();
  return value;
};
const id = () => `_${crypto.randomBytes(20).toString('hex')}`;

const issueInstant = at(o.issue_instant, now);
const notBefore = at(o.not_before, now);
const notOnOrAfter = at(o.not_on_or_after, now + 3600 * 1000);
const subjectNotOnOrAfter = o.subject_not_on_or_after === undefined
  ? notOnOrAfter : at(o.subject_not_on_or_after, now);
const attributes = { ...(o.attributes ?? {}) };
if (o.email && !('email' in attributes)) attributes.email = [o.email];
const key = o.key ? fs.readFileSync(o.key, 'utf8') : undefined;
const cert = o.cert ? fs.readFileSync(o.cert, 'utf8') : undefined;
const signAssertion = o.sign_assertion ?? true;
const signResponse = o.sign_response ?? true;

// The assertion, as samlp asks npm saml for one, unsigned so its times can be set first.
const unsigned = Saml20.createUnsignedAssertion({
  issuer: o.issuer,
  lifetimeInSeconds: 3600,
  audiences: o.audience,
  recipient: o.recipient ?? o.acs_url,
  inResponseTo: o.in_response_to,
  attributes: Object.keys(attributes).length ? attributes : undefined,
  nameIdentifier: o.name_id ?? o.email,
  nameIdentifierFormat: o.name_id_format ?? 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  sessionIndex: o.session_index,
  authnContextClassRef: 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport',
});
const doc = new DOMParser().parseFromString(unsigned);
const assertion = doc.documentElement;
assertion.setAttribute('ID', o.assertion_id ?? id());
assertion.setAttribute('IssueInstant', issueInstant);
const conditions = assertion.getElementsByTagName('saml:Conditions')[0];
conditions.setAttribute('NotBefore', notBefore);
conditions.setAttribute('NotOnOrAfter', notOnOrAfter);
assertion.getElementsByTagName('saml:SubjectConfirmationData')[0]
  .setAttribute('NotOnOrAfter', subjectNotOnOrAfter);
assertion.getElementsByTagName('saml:AuthnStatement')[0].setAttribute('AuthnInstant', issueInstant);

const assertionXml = signAssertion
  ? SignXml.fromSignXmlOptions({
    key,
    cert,
    signatureAlgorithm: 'rsa-sha256',
    digestAlgorithm: 'sha256',
    xpathToNodeBeforeSignature: "//*[local-name(.)='Issuer']",
    signatureIdAttribute: 'ID',
  })(doc)
  : SignXml.unsigned(doc);

// The Response, as samlp's buildSamlResponse makes and signs it.
let xml = templates.samlresponse({
  id: o.response_id ?? id(),
  instant: issueInstant,
  destination: o.destination ?? o.acs_url,
  inResponseTo: o.in_response_to,
  issuer: o.issuer,
  samlStatusCode: o.status ?? 'urn:oasis:names:tc:SAML:2.0:status:Success',
  samlStatusMessage: undefined,
  assertion: assertionXml,
});
if (signResponse) {
  const flat = xml.replace(/\r\n/g, '').replace(/\n/g, '').replace(/>(\s*)</g, '><').trim();
  const sig = new SignedXml(null, {
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  });
  sig.addReference(
    "//*[local-name(.)='Response' and namespace-uri(.)='urn:oasis:names:tc:SAML:2.0:protocol']",
    ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
    'http://www.w3.org/2001/04/xmlenc#sha256',
  );
  sig.signingKey = key;
  const pem = cert.replace(/-----[^-]+-----|\s/g, '');
  sig.keyInfoProvider = {
    getKeyInfo: () => `<X509Data><X509Certificate>${pem}</X509Certificate></X509Data>`,
  };
  sig.computeSignature(flat, {
    prefix: '',
    location: { action: 'after', reference: "//*[local-name(.)='Issuer']" },
  });
  xml = sig.getSignedXml();
}
if (o.tamper) {
  if (!xml.includes(o.tamper.from)) {
    console.error(`forge-saml.mjs: "${o.tamper.from}" is not in the response`);
    process.exit(1);
  }
  xml = xml.replace(o.tamper.from, o.tamper.to);
}
process.stdout.write(o.xml ? xml : Buffer.from(xml).toString('base64'));
