//! Files replora writes whole: atomically (a temporary sibling renamed into place, so a crash
//! never leaves a half-written file where a good one was) and JSON with errors naming the file.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes bytes to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // Named per process: two processes writing one file (sweeps sharing their cells) each
    // rename their own temporary, never the other's half-written one.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The file name a temporary of [`write_atomic`] stands for: `run.json` for `run.json.4242.tmp`.
pub fn temporary_of(name: &str) -> Option<&str> {
    let (base, pid) = name.strip_suffix(".tmp")?.rsplit_once('.')?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// The bytes of a file mapped into memory rather than read into a copy: pages are read as they
/// are touched and belong to the page cache ([`release`] gives them back once used).
pub fn map(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives while the model loads; a file truncated by another
    // process meanwhile would fault, the risk every memory-mapped model loader takes.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Gives back the pages of `part` (a slice of `map`) once it has been read: they stay in the
/// page cache but no longer count in this process's memory, so loading a file peaks at what was
/// made of it plus one tensor's bytes, not plus the whole file.
pub fn release(map: &memmap2::Mmap, part: &[u8]) {
    #[cfg(unix)]
    {
        let offset = part.as_ptr() as usize - map.as_ptr() as usize;
        // SAFETY: the map is read-only and private, so dropping its pages loses nothing: a later
        // read faults them in from the file again.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, part.len()) };
    }
}

/// Reads a JSON file into `T`; a wrong field type or a syntax error names the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("replora's own types serialize");
    write_atomic(path, text.as_bytes())
}
