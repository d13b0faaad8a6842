use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, PartialEq)]
pub enum InvalidWebhook {
    BadTimestamp,
    TimestampOutOfTolerance,
    BadSecret,
    NoMatchingSignature,
}

/// Checks one delivery. `id`, `timestamp` and `signatures` are the `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` headers; `body` is the raw request body.
pub fn verify_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    check_timestamp: bool,
) -> Result<(), InvalidWebhook> {
    let sent_at: i64 = timestamp
        .parse()
        .map_err(|_| InvalidWebhook::BadTimestamp)?;
    if check_timestamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if (now - sent_at).abs() > TOLERANCE_SECS {
            return Err(InvalidWebhook::TimestampOutOfTolerance);
        }
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| InvalidWebhook::BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any size");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signatures.split(' ') {
        let Some(signature) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(signature) = STANDARD.decode(signature) else {
            continue;
        };
        // verify_slice compares in constant time.
        if mac.clone().verify_slice(&signature).is_ok() {
            return Ok(());
        }
    }
    Err(InvalidWebhook::NoMatchingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        let (secret, id, timestamp, body) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            verify_webhook(secret, id, timestamp, header, body, false),
            Ok(())
        );
        assert_eq!(
            verify_webhook(secret, id, timestamp, header, b"{}", false),
            Err(InvalidWebhook::NoMatchingSignature)
        );
        assert_eq!(
            verify_webhook(secret, id, timestamp, header, body, true),
            Err(InvalidWebhook::TimestampOutOfTolerance)
        );
    }
}
