//! Canonical JSON (RFC 8785) and the hashes built on it.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The canonical JSON bytes of a value.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data (no maps with non-string keys) cannot fail.
    serde_json_canonicalizer::to_vec(value).expect("canonical JSON of plain data")
}

pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_json_canonicalizer::to_string(value).expect("canonical JSON of plain data")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `prev_hash` of a workspace's first audit event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation: a chain hash can never be confused with another SHA-256 in the product.
const AUDIT_DOMAIN: &[u8] = b"agentnexus/audit-event/v1\0";

/// `hash = SHA-256(domain ‖ prev_hash ‖ canonical event)`, hex. `event` is the canonical
/// JSON of the event without its hashes (see the store's audit module for its fields).
pub fn chain_hash(prev_hash: &str, canonical_event: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(AUDIT_DOMAIN);
    h.update(prev_hash.as_bytes());
    h.update(canonical_event);
    hex::encode(h.finalize())
}

/// The fields of an audit event that its hash covers.
pub struct AuditFields<'a> {
    pub workspace_id: &'a str,
    pub seq: i64,
    pub occurred_at: &'a str,
    pub kind: &'a str,
    pub actor: &'a str,
    pub evaluation_id: Option<&'a str>,
    /// Already canonical JSON (the store keeps `data` that way).
    pub data: &'a str,
}

impl AuditFields<'_> {
    /// The event's canonical JSON, assembled directly: keys in RFC 8785 order, strings escaped
    /// as RFC 8785 requires (serde_json's escaping is exactly that), `data` spliced in as is.
    /// Verifying a long chain re-does this for every event, so it avoids building a tree.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.data.len());
        let string = |out: &mut Vec<u8>, s: &str| {
            serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail")
        };
        out.extend_from_slice(b"{\"actor\":");
        string(&mut out, self.actor);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.as_bytes());
        out.extend_from_slice(b",\"evaluation_id\":");
        match self.evaluation_id {
            Some(id) => string(&mut out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"occurred_at\":");
        string(&mut out, self.occurred_at);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"type\":");
        string(&mut out, self.kind);
        out.extend_from_slice(b",\"workspace_id\":");
        string(&mut out, self.workspace_id);
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audit_canonical_form_is_rfc8785() {
        let data = json!({"z": [1, 2.5, "é\u{1}\"\\/"], "a": {"y": null, "b": true}});
        let data_text = to_string(&data);
        let fields = AuditFields {
            workspace_id: "ws_1",
            seq: 42,
            occurred_at: "2026-11-25T15:04:33.123456Z",
            kind: "evaluation.created",
            actor: "key:key_\u{7f}\n",
            evaluation_id: Some("ev_1"),
            data: &data_text,
        };
        let expected = to_vec(&json!({
            "workspace_id": "ws_1", "seq": 42, "occurred_at": "2026-11-25T15:04:33.123456Z",
            "type": "evaluation.created", "actor": "key:key_\u{7f}\n", "evaluation_id": "ev_1",
            "data": data,
        }));
        assert_eq!(
            String::from_utf8(fields.canonical()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        let none = AuditFields {
            evaluation_id: None,
            ..fields
        };
        assert!(
            String::from_utf8(none.canonical())
                .unwrap()
                .contains("\"evaluation_id\":null")
        );
    }

    #[test]
    fn chain_hash_depends_on_previous_hash() {
        assert_ne!(
            chain_hash(GENESIS_HASH, b"{}"),
            chain_hash(&"1".repeat(64), b"{}")
        );
        assert_eq!(chain_hash(GENESIS_HASH, b"{}").len(), 64);
    }
}
