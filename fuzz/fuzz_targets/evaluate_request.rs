#![no_main]

#[path = "../../crates/engine/tests/fuzz/targets.rs"]
#[allow(dead_code)] // each binary uses one of the targets
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::evaluate_request(data);
});
