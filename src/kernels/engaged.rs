//! Whether the fused kernels may take their fused path, and which did, counted per thread. A
//! silent fallback to burn's ops would still pass every value test, so the tests read these
//! counts to show that a model's forward and backward passes really run the kernels (the count
//! costs one thread-local add). The switch runs burn's own ops instead, the arithmetic a GPU
//! backend runs, so that a CPU test run covers that path too.

use std::cell::Cell;
use std::sync::OnceLock;

/// The environment variable that turns the fused paths off for the whole process.
pub const SWITCH: &str = "REPLORA_FUSED_KERNELS";

/// The fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Linear,
    Attention,
    Norm,
    Rope,
    Gelu,
    Silu,
    SwiGlu,
    Softmax,
    QuantizedLinear,
}

const KERNELS: usize = 9;

thread_local! {
    static CALLS: [Cell<usize>; KERNELS] = Default::default();
    static FALLBACK_HERE: Cell<bool> = const { Cell::new(false) };
}

/// `false` when `REPLORA_FUSED_KERNELS` is `off` (or `0`, `false`) for this process, or while
/// [`with_fallback`] runs on this thread; the kernels then return burn's ops' results.
pub fn fused_allowed() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    let on = *FROM_ENV.get_or_init(|| match std::env::var(SWITCH) {
        Err(_) => true,
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "" | "on" | "1" | "true" => true,
            "off" | "0" | "false" => false,
            _ => {
                eprintln!("warning: {SWITCH}={v:?} is neither on nor off; the fused kernels stay on");
                true
            }
        },
    });
    on && !FALLBACK_HERE.with(Cell::get)
}

/// Runs `f` with the fused paths off on the calling thread (where the kernels choose their
/// path; their own worker threads follow that choice): every kernel it calls runs burn's ops.
pub fn with_fallback<R>(f: impl FnOnce() -> R) -> R {
    let before = FALLBACK_HERE.with(|c| c.replace(true));
    let out = f();
    FALLBACK_HERE.with(|c| c.set(before));
    out
}

/// Notes that `kernel` took its fused path on this thread.
pub(super) fn record(kernel: Kernel) {
    CALLS.with(|calls| calls[kernel as usize].set(calls[kernel as usize].get() + 1));
}

/// How many times `kernel` took its fused path on the calling thread so far.
pub fn fused_calls(kernel: Kernel) -> usize {
    CALLS.with(|calls| calls[kernel as usize].get())
}
