//! Which fused kernels took their fused path, counted per thread. A silent fallback to burn's
//! ops would still pass every value test, so the tests read these counts to show that a model's
//! forward and backward passes really run the kernels (the count costs one thread-local add).

use std::cell::Cell;

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
}

const KERNELS: usize = 8;

thread_local! {
    static CALLS: [Cell<usize>; KERNELS] = Default::default();
}

/// Notes that `kernel` took its fused path on this thread.
pub(super) fn record(kernel: Kernel) {
    CALLS.with(|calls| calls[kernel as usize].set(calls[kernel as usize].get() + 1));
}

/// How many times `kernel` took its fused path on the calling thread so far.
pub fn fused_calls(kernel: Kernel) -> usize {
    CALLS.with(|calls| calls[kernel as usize].get())
}
