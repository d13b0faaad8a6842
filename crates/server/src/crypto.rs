//! Encryption of secrets the server must read back (webhook signing secrets, later channel
//! tokens): ChaCha20-Poly1305 under a server key that never enters the database.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "v1.";

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
    #[error("cannot read or create the key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("a stored secret cannot be decrypted with this server's key")]
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

    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("encrypting a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn decrypt(&self, text: &str) -> Result<String, CipherError> {
        let raw = text
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or(CipherError::Undecryptable)?;
        let (nonce, sealed) = raw.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CipherError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| CipherError::Undecryptable)
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_keys() {
        let a = Cipher::from_base64(&Cipher::generate_key()).unwrap();
        let b = Cipher::from_base64(&Cipher::generate_key()).unwrap();
        let sealed = a.encrypt("whsec_abc");
        assert_ne!(sealed, a.encrypt("whsec_abc"), "a fresh nonce every time");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(a.decrypt(&sealed).unwrap(), "whsec_abc");
        assert!(b.decrypt(&sealed).is_err());
        assert!(a.decrypt("v1.AAAA").is_err());
        assert!(Cipher::from_base64("c2hvcnQ=").is_err());
    }
}
