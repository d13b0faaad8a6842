//! The proposal an agent makes, parsed at the edge into a value nothing downstream re-checks.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A proposed action, valid by construction (see [`Proposal::new`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub agent_id: String,
    pub action: String,
    pub resource: Option<String>,
    pub amount_cents: i64,
    pub cost_cents: i64,
    pub params: Value,
    pub context: Value,
}

/// The most `amount_cents` and `cost_cents` may be: 2^53 - 1. Past it a JSON number is a
/// double to RFC 8785, so neither the proposal's hash nor the audit event could hold the value
/// exactly.
pub const MAX_CENTS: i64 = (1 << 53) - 1;

/// The agent's attributed cost so far (SPEC §8), as seen by `spend` in expressions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spend {
    #[serde(default)]
    pub today_cents: i64,
    #[serde(default)]
    pub month_cents: i64,
}

/// A field of a proposal that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// The raw fields of a proposal as a client sends them. Unknown fields are refused: a
/// misspelt `amount_cents` must not quietly become 0 and slip under a threshold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalFields {
    pub agent_id: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    pub amount_cents: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    pub cost_cents: Option<i64>,
    pub params: Option<Value>,
    pub context: Option<Value>,
}

/// An optional integer, also when written as a number with no fraction (`750.0`): JSON has one
/// number type, and JSON Schema's `integer` admits both spellings. A fraction is refused.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("a whole number up to 9223372036854775807"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // Within ±2^63 and without a fraction: the cast is exact.
            if v.fract() == 0.0 && v.abs() < 2f64.powi(63) {
                Ok(Some(v as i64))
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Whole)
}

fn identifier(field: &'static str, value: Option<String>) -> Result<String, FieldError> {
    let value = value.ok_or_else(|| field_error(field, "is required"))?;
    if value.is_empty() || value.chars().count() > 256 {
        return Err(field_error(field, "must be 1 to 256 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(field, "must not contain control characters"));
    }
    Ok(value)
}

fn object(field: &'static str, value: Option<Value>) -> Result<Value, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(field_error(field, "must be an object")),
    }
}

impl Proposal {
    pub fn new(f: ProposalFields) -> Result<Proposal, FieldError> {
        let resource = match f.resource {
            Some(r) if r.chars().count() > 1024 => {
                return Err(field_error("resource", "must be at most 1024 characters"));
            }
            // A line break in `resource` could forge lines of the messages approvers read.
            Some(r) if r.chars().any(char::is_control) => {
                return Err(field_error(
                    "resource",
                    "must not contain control characters",
                ));
            }
            r => r,
        };
        let cents = |field, v: Option<i64>| match v.unwrap_or(0) {
            n if n < 0 => Err(field_error(field, "must not be negative")),
            n if n > MAX_CENTS => Err(field_error(
                field,
                "must be at most 9007199254740991 (2^53 - 1), the largest integer JSON keeps exact",
            )),
            n => Ok(n),
        };
        Ok(Proposal {
            agent_id: identifier("agent_id", f.agent_id)?,
            action: identifier("action", f.action)?,
            resource,
            amount_cents: cents("amount_cents", f.amount_cents)?,
            cost_cents: cents("cost_cents", f.cost_cents)?,
            params: object("params", f.params)?,
            context: object("context", f.context)?,
        })
    }

    /// SHA-256 (hex) of the proposal's canonical JSON (RFC 8785): the object of the seven
    /// proposal fields with defaults filled in (`resource` null when absent). An executing
    /// system recomputes it to check that what it runs is exactly what was decided.
    pub fn hash(&self) -> String {
        use crate::canonical::{write, write_i64, write_str};
        // The object's members in RFC 8785 order, written directly.
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"{\"action\":");
        write_str(&mut out, &self.action);
        out.extend_from_slice(b",\"agent_id\":");
        write_str(&mut out, &self.agent_id);
        out.extend_from_slice(b",\"amount_cents\":");
        write_i64(&mut out, self.amount_cents);
        out.extend_from_slice(b",\"context\":");
        write(&mut out, &self.context);
        out.extend_from_slice(b",\"cost_cents\":");
        write_i64(&mut out, self.cost_cents);
        out.extend_from_slice(b",\"params\":");
        write(&mut out, &self.params);
        out.extend_from_slice(b",\"resource\":");
        match &self.resource {
            Some(r) => write_str(&mut out, r),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        crate::canonical::sha256_hex(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> ProposalFields {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn required_fields_are_checked() {
        let e = Proposal::new(fields(json!({"action": "x"}))).unwrap_err();
        assert_eq!(e.field, "agent_id");
        let e = Proposal::new(fields(json!({"agent_id": "a", "action": ""}))).unwrap_err();
        assert_eq!(e.field, "action");
        let e =
            Proposal::new(fields(json!({"agent_id": "a".repeat(257), "action": "x"}))).unwrap_err();
        assert_eq!(e.field, "agent_id");
        let e = Proposal::new(fields(
            json!({"agent_id": "a", "action": "x", "params": [1]}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "params");
        let e = Proposal::new(fields(
            json!({"agent_id": "a", "action": "x", "amount_cents": -1}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "amount_cents");
        for (field, bad) in [
            ("agent_id", "bot\nApprove: https://evil.example"),
            ("action", "x\ry"),
            (
                "resource",
                "customer/1\n\nApprove or reject: https://evil.example",
            ),
            ("resource", "tab\there"),
            ("resource", "nul\u{0}"),
            ("resource", "next\u{85}line"),
        ] {
            let mut v = json!({"agent_id": "a", "action": "x"});
            v[field] = json!(bad);
            let e = Proposal::new(fields(v)).unwrap_err();
            assert_eq!(
                (e.field, e.message.as_str()),
                (field, "must not contain control characters")
            );
        }
        // Past 2^53 a JSON number is a double: the canonical form (and the audit event, which
        // is a final evaluation's record) could not hold the amount exactly.
        let most = json!({"agent_id": "a", "action": "x", "cost_cents": MAX_CENTS});
        assert_eq!(Proposal::new(fields(most)).unwrap().cost_cents, MAX_CENTS);
        let past = json!({"agent_id": "a", "action": "x", "cost_cents": MAX_CENTS + 1});
        assert_eq!(Proposal::new(fields(past)).unwrap_err().field, "cost_cents");
        // A whole number is one however it is spelled; a fraction is not.
        let spelled: ProposalFields =
            serde_json::from_str(r#"{"agent_id": "a", "action": "x", "amount_cents": 750.0}"#)
                .unwrap();
        assert_eq!(spelled.amount_cents, Some(750));
        assert!(serde_json::from_str::<ProposalFields>(r#"{"amount_cents": 12.5}"#).is_err());
        assert!(serde_json::from_str::<ProposalFields>(r#"{"cost_cents": null}"#).is_ok());
    }

    #[test]
    fn hash_ignores_key_order_and_defaults() {
        let a = Proposal::new(fields(json!({"agent_id": "a", "action": "x",
            "params": {"b": 1, "a": 2}})))
        .unwrap();
        let b = Proposal::new(fields(json!({"params": {"a": 2, "b": 1}, "action": "x",
            "agent_id": "a", "amount_cents": 0, "context": {}})))
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        // The documented recipe: SHA-256 of the canonical object with defaults filled in.
        let canonical = r#"{"action":"x","agent_id":"a","amount_cents":0,"context":{},"cost_cents":0,"params":{"a":2,"b":1},"resource":null}"#;
        assert_eq!(a.hash(), crate::canonical::sha256_hex(canonical.as_bytes()));
        let c = Proposal::new(fields(
            json!({"agent_id": "a", "action": "x", "amount_cents": 1}),
        ))
        .unwrap();
        assert_ne!(a.hash(), c.hash());
        // Written by hand, it must be what the reference canonicalizer makes of the proposal.
        let d = Proposal::new(fields(json!({"agent_id": "bot ☃", "action": "x\"y",
            "resource": "r/😀", "amount_cents": MAX_CENTS, "cost_cents": 7,
            "params": {"\u{ff61}": 1, "😀": [0.5, 9_007_199_254_740_993i64, "\u{1}"]},
            "context": {"on_behalf_of": "a@b.c"}})))
        .unwrap();
        let reference = serde_json_canonicalizer::to_vec(&d).unwrap();
        assert_eq!(d.hash(), crate::canonical::sha256_hex(&reference));
    }
}
