use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    match replora::apps::cli::main() {
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
