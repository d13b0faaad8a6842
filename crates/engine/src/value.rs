//! JSON to CEL values. Every JSON integer becomes a CEL `int` (never `uint`), so mixed
//! arithmetic such as `spend.today_cents + cost_cents` or `params.n + 1` type-checks.
//!
//! Built straight as the context's own values (`Box<dyn Val>`), borrowing the proposal's
//! strings. Going through `cel::Value` first cost a copy of every string and then, in
//! `Context::add_variable_from_value`, a clone of every map to convert it
//! (docs/performance.md).

use std::collections::HashMap;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
};
use cel::common::value::Val;

pub fn to_val(v: &serde_json::Value) -> Box<dyn Val + '_> {
    match v {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            // Integers past i64 and fractions are doubles, as in JSON itself.
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(items) => {
            Box::new(CelList::from(items.iter().map(to_val).collect::<Vec<_>>()))
        }
        serde_json::Value::Object(fields) => Box::new(CelMap::from(
            fields
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

pub fn string(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

pub fn int(i: i64) -> Box<dyn Val + 'static> {
    Box::new(CelInt::from(i))
}

/// A map of names to integers (`spend`).
pub fn int_map(fields: &[(&'static str, i64)]) -> Box<dyn Val + 'static> {
    Box::new(CelMap::from(
        fields
            .iter()
            .map(|(k, v)| (CelMapKey::from(*k), int(*v)))
            .collect::<HashMap<_, _>>(),
    ))
}
