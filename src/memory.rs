//! What a run needs in memory against what this machine has, checked before the allocation:
//! a failed allocation aborts the process (exit 134) with no word about the setting behind it.

use crate::error::{Error, Result};

/// This machine's total memory in bytes (`MemTotal` in /proc/meminfo), if known.
pub fn total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Whether `need` bytes fit in `total` (unknown memory: assume they do).
pub fn fits(need: u64, total: Option<u64>) -> bool {
    total.is_none_or(|t| need <= t)
}

/// Refuses `need` bytes where this machine has less memory; `what` says what needs them and
/// `fitting` what would fit (both only computed on failure).
pub fn check(need: u64, what: impl FnOnce() -> String, fitting: impl FnOnce() -> String) -> Result<()> {
    let total = total_bytes();
    if fits(need, total) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} needs about {}, more than this machine's {} of memory (MemTotal in /proc/meminfo); {}",
        what(),
        gib(need),
        gib(total.unwrap_or(0)),
        fitting()
    )))
}

/// The largest value in `1..=current` for which `need(value)` fits in this machine's memory
/// (`need` must grow with the value); `None` if not even 1 fits.
pub fn largest_fitting(current: usize, need: impl Fn(usize) -> u64) -> Option<usize> {
    let total = total_bytes();
    let (mut lo, mut hi) = (0usize, current);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(need(mid), total) { lo = mid } else { hi = mid - 1 }
    }
    (lo >= 1).then_some(lo)
}

/// Bytes in GiB, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_fitting_value_is_found() {
        let total = total_bytes().expect("/proc/meminfo on Linux");
        assert!(total > 1 << 20);
        // One byte per unit: exactly the machine's memory fits, one more does not.
        assert_eq!(largest_fitting(usize::MAX, |v| v as u64), Some(total as usize));
        assert_eq!(largest_fitting(10, |v| v as u64), Some(10));
        assert_eq!(largest_fitting(10, |_| u64::MAX), None);
        let e = check(u64::MAX, || "--thing 9".into(), || "at most --thing 1 fits".into()).unwrap_err().to_string();
        assert!(e.contains("--thing 9 needs about") && e.contains("MemTotal") && e.contains("at most --thing 1 fits"), "{e}");
    }
}
