use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    match on_worker_thread(replora::apps::cli::main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc hands large freed blocks back to the kernel, so every training step faults in and
/// zeroes its activation buffers again (about 12% of a SmolLM2 step). Keep blocks up to 32 MiB
/// on the heap and never trim it: steps then reuse the same memory.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Runs `f` on a thread of rayon's pool. The kernels split each op over rayon's threads; called
/// from a thread outside the pool, every op (even one that makes a single task) is handed over
/// and waited for, a sleep and a wake-up per op: about 15% of a decoding step, which issues
/// some 400 small ops per token. On a pool thread, one-task ops run in place and the other
/// threads steal the rest. (`RAYON_NUM_THREADS` still sets the thread count.)
fn on_worker_thread(f: fn() -> replora::error::Result<()>) -> replora::error::Result<()> {
    // Deep autodiff graphs recurse: give the pool the main thread's stack, not the 2 MiB default.
    match rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
