//! Encryption of secrets the server must read back (webhook signing secrets, channel settings,
//! the links and codes inside queued messages, MCP request states): ChaCha20-Poly1305 under a
//! server key that never enters the database.
//!
//! Every value is sealed for a [`Purpose`], which names its kind and its workspace and is
//! bound into the ciphertext as associated data: a ciphertext copied into another workspace's
//! row, or into a row of another kind, does not open. Values sealed by earlier versions
//! (`v1.`, no associated data) are opened only by [`reseal_legacy`], which seals them again
//! when a server starts.

use std::path::Path;

use agentnexus_store::{SealedAt, Store};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde_json::Value;

const LEGACY: &str = "v1.";
const PREFIX: &str = "v2.";

/// What a sealed value is for, and whose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// A workspace's webhook signing secret.
    WebhookSecret { workspace_id: &'a str },
    /// A workspace's settings for one chat channel (`slack`, `teams`).
    ChannelSettings {
        workspace_id: &'a str,
        channel: &'a str,
    },
    /// A secure link's token inside a queued message.
    LinkToken { workspace_id: &'a str },
    /// A one-time code inside a queued e-mail.
    OneTimeCode { workspace_id: &'a str },
    /// An invitation's token inside a queued e-mail.
    InvitationToken { workspace_id: &'a str },
    /// An MCP `requestState` (it names its key inside).
    McpRequestState,
    /// The GitHub token a policy's binding reads its repository with.
    GitHubToken {
        workspace_id: &'a str,
        policy: &'a str,
    },
    /// A workspace's GitHub push-webhook secret.
    GitHubWebhookSecret { workspace_id: &'a str },
    /// A workspace's SSO connection (an OIDC client secret inside).
    SsoConnection { workspace_id: &'a str },
    /// What a sign-in sent to an identity provider keeps until it is back.
    SsoRequest { workspace_id: &'a str },
}

impl Purpose<'_> {
    fn associated_data(&self) -> String {
        match self {
            Purpose::WebhookSecret { workspace_id } => {
                format!("agentnexus/v2/webhook-secret/{workspace_id}")
            }
            Purpose::ChannelSettings {
                workspace_id,
                channel,
            } => format!("agentnexus/v2/channel-settings/{workspace_id}/{channel}"),
            Purpose::LinkToken { workspace_id } => {
                format!("agentnexus/v2/link-token/{workspace_id}")
            }
            Purpose::OneTimeCode { workspace_id } => {
                format!("agentnexus/v2/one-time-code/{workspace_id}")
            }
            Purpose::InvitationToken { workspace_id } => {
                format!("agentnexus/v2/invitation-token/{workspace_id}")
            }
            Purpose::McpRequestState => "agentnexus/v2/mcp-request-state".to_owned(),
            Purpose::GitHubToken {
                workspace_id,
                policy,
            } => format!("agentnexus/v2/github-token/{workspace_id}/{policy}"),
            Purpose::GitHubWebhookSecret { workspace_id } => {
                format!("agentnexus/v2/github-webhook-secret/{workspace_id}")
            }
            Purpose::SsoConnection { workspace_id } => {
                format!("agentnexus/v2/sso-connection/{workspace_id}")
            }
            Purpose::SsoRequest { workspace_id } => {
                format!("agentnexus/v2/sso-request/{workspace_id}")
            }
        }
    }
}

#[derive(Clone)]
pub struct Cipher(ChaCha20Poly1305);

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("the secret key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("the signing key must be a 32-byte Ed25519 seed, base64-encoded")]
    BadSigningKey,
    #[error("cannot read or create the key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("a stored secret cannot be decrypted with this server's key for this use")]
    Undecryptable,
}

impl Cipher {
    pub fn from_base64(key: &str) -> Result<Cipher, CipherError> {
        let bytes = B64.decode(key.trim()).map_err(|_| CipherError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CipherError::BadKey)?;
        Ok(Cipher(ChaCha20Poly1305::new(Key::from_slice(&key))))
    }

    /// A fresh random key, base64.
    pub fn generate_key() -> String {
        B64.encode(ChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// The key from `path`, created (mode 0600) with a random key when missing.
    pub fn from_key_file(path: &Path) -> Result<Cipher, CipherError> {
        let file_error = |e| CipherError::KeyFile(path.display().to_string(), e);
        if !path.exists() {
            write_private(path, &Cipher::generate_key()).map_err(file_error)?;
        }
        Cipher::from_base64(&std::fs::read_to_string(path).map_err(file_error)?)
    }

    /// Seals `plaintext` for `purpose`.
    pub fn seal(&self, plaintext: &str, purpose: Purpose<'_>) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = purpose.associated_data();
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("encrypting a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Opens a value sealed for `purpose`; anything else (another purpose or workspace,
    /// another key, a tampered or legacy value) is [`CipherError::Undecryptable`].
    pub fn open(&self, text: &str, purpose: Purpose<'_>) -> Result<String, CipherError> {
        let raw = text
            .strip_prefix(PREFIX)
            .ok_or(CipherError::Undecryptable)?;
        self.open_raw(raw, purpose.associated_data().as_bytes())
    }

    /// Opens a value sealed by an earlier version, without associated data.
    fn open_legacy(&self, text: &str) -> Result<String, CipherError> {
        let raw = text
            .strip_prefix(LEGACY)
            .ok_or(CipherError::Undecryptable)?;
        self.open_raw(raw, b"")
    }

    fn open_raw(&self, raw: &str, aad: &[u8]) -> Result<String, CipherError> {
        let raw = B64
            .decode(raw)
            .ok()
            .filter(|r| r.len() > 12)
            .ok_or(CipherError::Undecryptable)?;
        let (nonce, sealed) = raw.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| CipherError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| CipherError::Undecryptable)
    }

    /// A legacy value, stored at `at` in a workspace, sealed again for the purpose its place
    /// gives it.
    fn reseal(
        &self,
        workspace_id: &str,
        at: &SealedAt,
        stored: &str,
    ) -> Result<String, CipherError> {
        match at {
            SealedAt::WebhookSecret { .. } => Ok(self.seal(
                &self.open_legacy(stored)?,
                Purpose::WebhookSecret { workspace_id },
            )),
            SealedAt::ChannelSettings { channel } => Ok(self.seal(
                &self.open_legacy(stored)?,
                Purpose::ChannelSettings {
                    workspace_id,
                    channel,
                },
            )),
            SealedAt::JobPayload { .. } => {
                let mut payload: Value =
                    serde_json::from_str(stored).map_err(|_| CipherError::Undecryptable)?;
                for (field, purpose) in [
                    ("token", Purpose::LinkToken { workspace_id }),
                    ("code", Purpose::OneTimeCode { workspace_id }),
                ] {
                    if let Some(sealed) = payload[field].as_str().filter(|s| s.starts_with(LEGACY))
                    {
                        payload[field] =
                            Value::from(self.seal(&self.open_legacy(sealed)?, purpose));
                    }
                }
                Ok(payload.to_string())
            }
        }
    }
}

/// Seals again, bound to their workspace and purpose, the values earlier versions stored
/// without associated data. Run by `serve` at start; idempotent, and safe with several servers
/// starting at once (each replacement only applies to the value it read). Answers how many
/// this call replaced.
pub async fn reseal_legacy(store: &Store, cipher: &Cipher) -> Result<usize, String> {
    let mut replaced = 0;
    for value in store.legacy_sealed().await.map_err(|e| e.to_string())? {
        match cipher.reseal(value.tenant.workspace_id(), &value.at, &value.stored) {
            Ok(new) => {
                if store
                    .replace_sealed(&value, &new)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    replaced += 1;
                }
            }
            // Sealed with another key: it never opened here, and it is left as it was.
            Err(e) => {
                tracing::warn!(error = %e, at = ?value.at, "a stored secret cannot be resealed")
            }
        }
    }
    Ok(replaced)
}

/// Creates `path` with `content`, readable and writable by its owner only.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(content.as_bytes())
}

/// A secret token for a link or a cookie: `prefix` and 43 random alphanumerics (~256 bits).
pub(crate) fn random_token(prefix: &str) -> String {
    use rand::Rng;
    let random: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("{prefix}{random}")
}

/// Equality in time independent of where the two differ: how much of a secret matched must
/// not show in the answer's timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::from_base64(&Cipher::generate_key()).unwrap()
    }

    #[test]
    fn round_trips_and_refuses_other_keys() {
        let (a, b) = (cipher(), cipher());
        let p = Purpose::WebhookSecret {
            workspace_id: "ws_1",
        };
        let sealed = a.seal("whsec_abc", p);
        assert_ne!(sealed, a.seal("whsec_abc", p), "a fresh nonce every time");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(a.open(&sealed, p).unwrap(), "whsec_abc");
        assert!(b.open(&sealed, p).is_err());
        assert!(a.open("v2.AAAA", p).is_err());
        assert!(Cipher::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn a_value_opens_only_for_its_workspace_and_purpose() {
        let c = cipher();
        let sealed = c.seal(
            "xoxb-1",
            Purpose::ChannelSettings {
                workspace_id: "ws_1",
                channel: "slack",
            },
        );
        for other in [
            Purpose::ChannelSettings {
                workspace_id: "ws_2",
                channel: "slack",
            },
            Purpose::ChannelSettings {
                workspace_id: "ws_1",
                channel: "teams",
            },
            Purpose::WebhookSecret {
                workspace_id: "ws_1",
            },
            Purpose::LinkToken {
                workspace_id: "ws_1",
            },
            Purpose::McpRequestState,
        ] {
            assert!(c.open(&sealed, other).is_err(), "{other:?}");
        }
    }

    #[test]
    fn legacy_values_open_only_to_be_sealed_again() {
        let c = cipher();
        // What versions before associated data wrote.
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut raw = nonce.to_vec();
        raw.extend(c.0.encrypt(&nonce, b"whsec_old".as_slice()).unwrap());
        let legacy = format!("{LEGACY}{}", B64.encode(raw));
        let p = Purpose::WebhookSecret {
            workspace_id: "ws_1",
        };
        assert!(c.open(&legacy, p).is_err(), "not opened by ordinary use");
        let at = SealedAt::WebhookSecret { id: "whs_1".into() };
        let resealed = c.reseal("ws_1", &at, &legacy).unwrap();
        assert_eq!(c.open(&resealed, p).unwrap(), "whsec_old");
        assert!(c.reseal("ws_1", &at, "v1.AAAA").is_err());
    }
}
