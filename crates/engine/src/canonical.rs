//! Canonical JSON (RFC 8785) and the hashes built on it.
//!
//! Written here, from a `serde_json::Value`, rather than through `serde_json_canonicalizer`
//! (which the tests keep as the oracle this must match byte for byte): that crate buffers
//! every member, parses every key back to sort it and allocates for each value, and on the
//! evaluate path (the proposal hash and the audit event) it was the largest single cost
//! (docs/performance.md). Here a value is written in one
//! pass into one buffer; object members are re-sorted only when their order differs from
//! RFC 8785's.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// The canonical JSON bytes of a value.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value);
    out
}

pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value)).expect("JSON text is UTF-8")
}

/// Appends the canonical JSON of `value`.
pub fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(out, members),
    }
}

/// A string as RFC 8785 writes it: `"`, `\\` and control characters escaped (the short forms
/// where JSON has them, else `\u00xx` in lower case), everything else as is — which is
/// exactly serde_json's escaping.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// An integer as RFC 8785 writes numbers: as the ECMAScript rendering of the double it is.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    // Up to 2^53 the double is exact and ECMAScript prints its digits.
    if n.unsigned_abs() <= 1 << 53 {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    } else {
        write_f64(out, n as f64);
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    match n.as_i64() {
        Some(i) => write_i64(out, i),
        // u64 past i64, or a float: every JSON number is a double to RFC 8785.
        None => write_f64(out, n.as_f64().unwrap_or_default()),
    }
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    // serde_json holds no NaN or infinity.
    out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
}

/// RFC 8785 orders members by their names' UTF-16 code units. serde_json's map iterates in
/// UTF-8 byte (code point) order, which agrees except where a character above U+FFFF meets
/// one in U+E000..U+FFFF; such objects (and any map in another order) are sorted first.
fn write_object(out: &mut Vec<u8>, members: &Map<String, Value>) {
    let ordered = members
        .keys()
        .zip(members.keys().skip(1))
        .all(|(a, b)| utf16_cmp(a, b) == Ordering::Less);
    let mut write_member = |i: usize, (key, value): (&String, &Value)| {
        out.push(if i == 0 { b'{' } else { b',' });
        write_str(out, key);
        out.push(b':');
        write(out, value);
    };
    if ordered {
        members
            .iter()
            .enumerate()
            .for_each(|(i, m)| write_member(i, m));
    } else {
        let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
        sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));
        sorted
            .into_iter()
            .enumerate()
            .for_each(|(i, m)| write_member(i, m));
    }
    if members.is_empty() {
        out.push(b'{');
    }
    out.push(b'}');
}

/// A map of names to integers (policy versions), members in RFC 8785's order.
pub fn write_i64_map(out: &mut Vec<u8>, map: &std::collections::BTreeMap<String, i64>) {
    let mut members: Vec<(&String, &i64)> = map.iter().collect();
    // A BTreeMap iterates in code point order; see `write_object` for where that differs.
    if !map.keys().all(|k| k.is_ascii()) {
        members.sort_by(|a, b| utf16_cmp(a.0, b.0));
    }
    out.push(b'{');
    for (i, (name, n)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_i64(out, *n);
    }
    out.push(b'}');
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(&Sha256::digest(bytes).into())
}

/// A SHA-256 digest in lower-case hex. `hex::encode` goes a `char` at a time through an
/// iterator, three digests per evaluation; its `encode_to_slice` fills a buffer from a table.
pub fn digest_hex(digest: &[u8; 32]) -> String {
    let mut text = [0u8; 64];
    hex::encode_to_slice(digest, &mut text).expect("64 bytes hold 32 in hex");
    String::from_utf8(text.to_vec()).expect("hex is ASCII")
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
    digest_hex(&h.finalize().into())
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
        let string = write_str;
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
        write_i64(&mut out, self.seq);
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

    fn oracle(v: &Value) -> String {
        serde_json_canonicalizer::to_string(v).unwrap()
    }

    #[test]
    fn matches_the_reference_implementation() {
        let samples = [
            json!(null),
            json!({}),
            json!([]),
            json!({"b": 1, "a": [true, false, null, {}, []], "": "empty key"}),
            json!([
                0,
                -0.0,
                1,
                -1,
                1.5,
                0.1,
                1e21,
                1e-7,
                123456789012345678u64,
                u64::MAX,
                i64::MIN,
                i64::MAX,
                9007199254740992i64,
                9007199254740993i64,
                -9007199254740993i64,
                5e-324,
                1.7976931348623157e308,
                4.35,
                0.000001
            ]),
            json!("\u{0}\u{1f}\u{7f}\"\\/\u{8}\u{c}\n\r\t é €😀 \u{fffd}"),
            // UTF-16 order differs from code point order: U+FF61 sorts after U+1F600.
            json!({"\u{ff61}": 1, "😀": 2, "\u{e000}": 3, "a": 4, "é": 5, "\u{10000}": 6}),
            json!({"nested": {"z": {"y": [{"b": 2, "a": 1}]}, "k": "v"}}),
        ];
        for v in &samples {
            assert_eq!(to_string(v), oracle(v), "{v}");
        }
        // Pseudo-random documents, the same every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn build(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            let pick = next() % if depth > 3 { 5 } else { 7 };
            let text = |n: u64| -> String {
                let alphabet = [
                    'a', 'Z', '0', ' ', 'é', '€', '😀', '\u{e001}', '\u{1}', '"', '\\', '\u{ffff}',
                ];
                (0..n % 6)
                    .map(|i| alphabet[((n >> (i * 4)) % 12) as usize])
                    .collect()
            };
            match pick {
                0 => Value::Null,
                1 => json!(next().is_multiple_of(2)),
                2 => json!((next() as i64) >> (next() % 64)),
                3 => json!(f64::from_bits(next()).clamp(-1e300, 1e300) / 7.0),
                4 => json!(text(next())),
                5 => Value::Array((0..next() % 4).map(|_| build(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next() % 5)
                        .map(|_| (text(next()), build(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        for _ in 0..5000 {
            let v = build(&mut next, 0);
            if v.as_f64().is_some_and(f64::is_nan) {
                continue;
            }
            assert_eq!(to_string(&v), oracle(&v), "{v}");
        }
    }

    #[test]
    fn integer_maps_are_written_in_utf16_order() {
        let map: std::collections::BTreeMap<String, i64> =
            [("\u{ff61}", 1), ("😀", 2), ("b", 3), ("a", 1 << 60)]
                .map(|(k, v)| (k.to_owned(), v))
                .into();
        let mut out = Vec::new();
        write_i64_map(&mut out, &map);
        assert_eq!(String::from_utf8(out).unwrap(), oracle(&json!(map)));
    }

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

    #[test]
    fn digests_are_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
