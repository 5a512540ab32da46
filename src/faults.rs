//! Fault injection for the reliability tests, compiled only with the `fault-injection` feature
//! (`cargo test --features fault-injection --test faults`); release builds have none of it.
//! A request triggers a fault through its `seed`, so a test picks exactly which batch fails.

use crate::model::ModelError;

/// A decoder step of the batch holding this row fails as an ONNX Runtime error would.
pub const FAIL_STEP_SEED: u64 = 0xFA11_0001;
/// The decode thread panics while stepping the batch holding this row.
pub const PANIC_DECODE_THREAD_SEED: u64 = 0xFA11_0002;
/// The HTTP handler panics on this request.
pub const PANIC_HANDLER_SEED: u64 = 0xFA11_0003;

/// Called before each decoder step with the seeds of the batch's rows.
pub fn decoder_step(mut seeds: impl Iterator<Item = u64>) -> Result<(), ModelError> {
    match seeds.find(|s| *s == FAIL_STEP_SEED || *s == PANIC_DECODE_THREAD_SEED) {
        Some(FAIL_STEP_SEED) => Err(ModelError::Runtime("injected fault: the decoder step failed".into())),
        Some(_) => panic!("injected fault: the decode thread panics"),
        None => Ok(()),
    }
}

/// Called by the generate handler with the request's seed.
pub fn handler(seed: Option<u64>) {
    if seed == Some(PANIC_HANDLER_SEED) {
        panic!("injected fault: the handler panics");
    }
}

/// With this environment variable set, the warm-up's rows carry `FAIL_STEP_SEED`: every
/// warm-up attempt fails in its decoder step.
pub const FAIL_WARM_UP_ENV: &str = "T5SERVE_FAULT_FAIL_WARM_UP";

/// The seed of the warm-up's rows.
pub fn warm_up_seed() -> u64 {
    if std::env::var_os(FAIL_WARM_UP_ENV).is_some() { FAIL_STEP_SEED } else { 0 }
}
