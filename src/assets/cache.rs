//! The cache directory: where assets go, when one is complete, installing it, locks and work dirs.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::catalog::Asset;
use crate::{Error, Result};

/// The file written last into a completed asset directory.
pub(super) const MARKER: &str = ".replora-asset.json";

/// The cache directory: `$REPLORA_CACHE`, else the user's cache directory + `replora`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("REPLORA_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("replora"),
    }
}

/// Where `asset` is (or will be) unpacked.
pub fn asset_dir(asset: &Asset) -> PathBuf {
    cache_dir().join(asset.dest)
}

/// Whether `dir` holds a completed copy of `asset`: all its required files, and a marker naming
/// the pinned archive (and assembled file). A directory without a marker that has the required files counts as
/// complete: it was placed there by hand (e.g. unzipped from the same wheel). A marked directory
/// that lacks a required file was unpacked by an older replora that kept less of the same
/// archive (e.g. no BIG-bench subtasks): it is unpacked again.
pub(super) fn is_complete(dir: &Path, asset: &Asset) -> bool {
    let has_required = dir.is_dir() && asset.required.iter().all(|f| dir.join(f).is_file());
    let Ok(text) = fs::read_to_string(dir.join(MARKER)) else {
        return has_required;
    };
    let Ok(marker) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    has_required && marker["sha256"] == asset.sha256 && asset.assembled.is_none_or(|a| marker["assembled"]["sha256"] == a.sha256)
}

/// Moves the completed `unpack` directory to `dest`, replacing an outdated or empty one.
pub(super) fn install(asset: &Asset, unpack: &Path, dest: &Path, work: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if dest.exists() && !is_complete(dest, asset) {
        // An empty directory, or an asset of another version (its marker names another sha256):
        // move it aside so that the rename below can take its place.
        let old = work.join("old");
        fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
    }
    match fs::rename(unpack, dest) {
        Ok(()) => Ok(()),
        Err(_) if is_complete(dest, asset) => Ok(()), // lost a race: the winner's copy is as good
        Err(e) => Err(Error::io(dest, e)),
    }
}

/// Takes this asset's lock file, waiting for another fetch of it to end. `None` where the file
/// system has no locks (then concurrent fetches both download; see the module docs).
pub(super) fn lock(asset: &Asset, cache: &Path) -> Result<Option<File>> {
    let dir = cache.join(".locks");
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("{}.lock", asset.name));
    let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!("replora: waiting for another fetch of {} to finish ...", asset.name);
            match file.lock() {
                Ok(()) => Ok(Some(file)),
                Err(_) => Ok(None),
            }
        }
        Err(fs::TryLockError::Error(_)) => Ok(None),
    }
}

/// Removes work directories `<name>-*` that interrupted fetches of this asset left behind.
pub(super) fn remove_stale(tmp_root: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(tmp_root) else { return };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

pub(super) fn unique() -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    nanos ^ u128::from(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}
