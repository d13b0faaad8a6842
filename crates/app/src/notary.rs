//! The server's Ed25519 signing key and what it signs: checkpoints of the audit chains
//! (SPEC §7). The signature covers the RFC 8785 canonical JSON of a checkpoint's other fields
//! (`head_hash`, `issued_at`, `key_id`, `seq`, `workspace`), so anyone can check it with the
//! public key alone.

use std::path::Path;

use agentnexus_engine::canonical;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crypto::{CipherError, write_private};

/// A workspace's chain head, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The workspace's name.
    pub workspace: String,
    /// The chain's length: the `seq` of its last event.
    pub seq: i64,
    /// That event's hash.
    pub head_hash: String,
    /// When it was signed, RFC 3339 in UTC with six fractional digits.
    pub issued_at: String,
    /// Which key signed it: the first 16 hex characters of the SHA-256 of the raw public key.
    pub key_id: String,
    /// Ed25519 over the canonical JSON of the other fields, base64.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    fn signed_bytes(&self) -> Vec<u8> {
        canonical::to_vec(&json!({
            "head_hash": self.head_hash,
            "issued_at": self.issued_at,
            "key_id": self.key_id,
            "seq": self.seq,
            "workspace": self.workspace,
        }))
    }
}

/// The public half of a signing key, as an auditor holds it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl PublicKey {
    /// From the PEM `GET /api/v1/audit/signing-key` answers (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<PublicKey, String> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?;
        Ok(PublicKey {
            key_id: key_id(&key),
            key,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(Default::default())
            .expect("an Ed25519 key encodes")
    }

    /// Whether `checkpoint` was signed by this key, as it stands; the problem otherwise.
    pub fn check(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        if checkpoint.key_id != self.key_id {
            return Err(format!(
                "the checkpoint names key {}, not this key ({})",
                checkpoint.key_id, self.key_id
            ));
        }
        let signature = B64
            .decode(&checkpoint.signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or("the signature is not a base64 Ed25519 signature")?;
        self.key
            .verify(&checkpoint.signed_bytes(), &signature)
            .map_err(|_| "the signature does not match the checkpoint".to_owned())
    }
}

/// The server's signing key.
pub struct Notary {
    key: SigningKey,
    public: PublicKey,
}

impl Notary {
    /// A fresh random seed, base64.
    pub fn generate_key() -> String {
        B64.encode(rand::random::<[u8; 32]>())
    }

    pub fn from_base64(seed: &str) -> Result<Notary, CipherError> {
        let bytes = B64
            .decode(seed.trim())
            .map_err(|_| CipherError::BadSigningKey)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| CipherError::BadSigningKey)?;
        let key = SigningKey::from_bytes(&seed);
        let verifying = key.verifying_key();
        Ok(Notary {
            public: PublicKey {
                key_id: key_id(&verifying),
                key: verifying,
            },
            key,
        })
    }

    /// The key from `path`, created (mode 0600) with a random seed when missing and `create`.
    pub fn from_key_file(path: &Path, create: bool) -> Result<Option<Notary>, CipherError> {
        let file_error = |e| CipherError::KeyFile(path.display().to_string(), e);
        if !path.exists() {
            if !create {
                return Ok(None);
            }
            write_private(path, &Notary::generate_key()).map_err(file_error)?;
        }
        Notary::from_base64(&std::fs::read_to_string(path).map_err(file_error)?).map(Some)
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// A DSSE envelope (https://github.com/secure-systems-lab/dsse, v1.0) of `payload`: the
    /// signature covers its pre-authentication encoding, `DSSEv1 LEN(type) type LEN(body) body`.
    pub(crate) fn envelope(&self, payload_type: &str, payload: &[u8]) -> serde_json::Value {
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .into_bytes();
        pae.extend_from_slice(payload);
        json!({
            "payloadType": payload_type,
            "payload": B64.encode(payload),
            "signatures": [{
                "keyid": self.public.key_id,
                "sig": B64.encode(self.key.sign(&pae).to_bytes()),
            }],
        })
    }

    pub(crate) fn sign(
        &self,
        workspace: &str,
        seq: i64,
        head_hash: &str,
        issued_at: String,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            workspace: workspace.to_owned(),
            seq,
            head_hash: head_hash.to_owned(),
            issued_at,
            key_id: self.public.key_id.clone(),
            signature: String::new(),
        };
        checkpoint.signature = B64.encode(self.key.sign(&checkpoint.signed_bytes()).to_bytes());
        checkpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(notary: &Notary) -> Checkpoint {
        notary.sign(
            "default",
            7,
            &"ab".repeat(32),
            "2026-12-05T00:00:00.000000Z".into(),
        )
    }

    #[test]
    fn a_checkpoint_holds_only_under_its_own_key_and_as_signed() {
        let notary = Notary::from_base64(&Notary::generate_key()).unwrap();
        let public = PublicKey::from_pem(&notary.public().to_pem()).unwrap();
        assert_eq!(public.key_id(), notary.public().key_id());
        assert_eq!(public.key_id().len(), 16);
        let checkpoint = signed(&notary);
        assert_eq!(public.check(&checkpoint), Ok(()));

        for altered in [
            Checkpoint {
                seq: 6,
                ..checkpoint.clone()
            },
            Checkpoint {
                workspace: "acme".into(),
                ..checkpoint.clone()
            },
            Checkpoint {
                head_hash: "cd".repeat(32),
                ..checkpoint.clone()
            },
            Checkpoint {
                issued_at: "2026-12-06T00:00:00.000000Z".into(),
                ..checkpoint.clone()
            },
        ] {
            assert_eq!(
                public.check(&altered),
                Err("the signature does not match the checkpoint".into())
            );
        }
        let garbled = Checkpoint {
            signature: "not base64!".into(),
            ..checkpoint.clone()
        };
        assert_eq!(
            public.check(&garbled),
            Err("the signature is not a base64 Ed25519 signature".into())
        );

        // Another server's key: named as such, before any signature check.
        let other = Notary::from_base64(&Notary::generate_key()).unwrap();
        let theirs = signed(&other);
        let problem = public.check(&theirs).unwrap_err();
        assert!(
            problem.starts_with(&format!(
                "the checkpoint names key {}",
                other.public().key_id()
            )),
            "{problem}"
        );
        // Same key id claimed, other key's signature: refused on the signature.
        let forged = Checkpoint {
            key_id: checkpoint.key_id.clone(),
            ..theirs
        };
        assert!(public.check(&forged).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Notary::from_base64("c2hvcnQ=").is_err());
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        // The same seed is the same key.
        let seed = Notary::generate_key();
        assert_eq!(
            Notary::from_base64(&seed).unwrap().public().key_id(),
            Notary::from_base64(&seed).unwrap().public().key_id()
        );
    }
}
