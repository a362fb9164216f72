//! Debian packages: downloading one with `apt-get download` and unpacking it with `dpkg-deb -x`.
//!
//! Both programs are the system's own (a Debian or Ubuntu machine has them); where they are
//! missing, the error says so and how to supply the `.deb` file instead (`REPLORA_ARCHIVE_DIR`).

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::Fetcher;
use super::catalog::Asset;
use super::progress::spinner;
use crate::{Error, Result};

impl Fetcher {
    /// Downloads the asset's pinned package version into `download` (the working directory of
    /// `apt-get download`, which names the file `<package>_<version>_<arch>.deb`).
    pub(super) fn apt_download(&self, asset: &Asset, download: &Path) -> Result<()> {
        let spec = format!("{}={}", asset.package, asset.version);
        let bar = spinner(format!("downloading {spec} ({}) with apt-get", asset.size));
        let mut output = self.apt_get(asset, download, &["download", &spec])?;
        if !output.status.success() && lacks_package_lists(&output) {
            // The package lists are missing or stale (e.g. a fresh container): refresh them once.
            bar.set_message(format!("{spec}: apt-get update"));
            let update = self.apt_get(asset, download, &["update"])?;
            if !update.status.success() {
                bar.finish();
                return Err(Error::fetch(
                    asset.name,
                    format!(
                        "`apt-get download {spec}` found no such package and `apt-get update` failed ({}): {}; run \
                         `apt-get update` as root, or put {} into REPLORA_ARCHIVE_DIR",
                        update.status,
                        tail(&update),
                        asset.file_name
                    ),
                ));
            }
            output = self.apt_get(asset, download, &["download", &spec])?;
        }
        bar.finish();
        if output.status.success() {
            return Ok(());
        }
        Err(Error::fetch(
            asset.name,
            format!(
                "`{} download {spec}` failed ({}); is the Debian archive reachable (apt sources)? Or put {} into \
                 REPLORA_ARCHIVE_DIR.\napt-get output (last lines):\n  {}",
                self.apt_get,
                output.status,
                asset.file_name,
                tail(&output)
            ),
        ))
    }

    fn apt_get(&self, asset: &Asset, dir: &Path, args: &[&str]) -> Result<Output> {
        Command::new(&self.apt_get).args(args).current_dir(dir).stdin(Stdio::null()).output().map_err(|e| {
            Error::fetch(
                asset.name,
                format!(
                    "cannot run `{}` ({e}): {} is a Debian package ({}={}); fetch it on a Debian or Ubuntu machine, or put {} \
                     into REPLORA_ARCHIVE_DIR",
                    self.apt_get, asset.name, asset.package, asset.version, asset.file_name
                ),
            )
        })
    }

    /// Unpacks the package's [`member`](Asset::member) folder into `unpack` (which must be empty):
    /// `dpkg-deb -x` into `work/deb`, then one rename.
    pub(super) fn unpack_deb(&self, asset: &Asset, archive: &Path, unpack: &Path, work: &Path) -> Result<()> {
        let root = work.join("deb");
        let bar = spinner(format!("{}: unpacking {}", asset.name, asset.file_name));
        let output = Command::new(&self.dpkg_deb).arg("-x").arg(archive).arg(&root).stdin(Stdio::null()).output();
        bar.finish();
        let output = output.map_err(|e| {
            Error::fetch(
                asset.name,
                format!(
                    "cannot run `{}` ({e}): unpacking {} needs dpkg-deb (the `dpkg` package of Debian/Ubuntu)",
                    self.dpkg_deb, asset.file_name
                ),
            )
        })?;
        if !output.status.success() {
            return Err(Error::fetch(
                asset.name,
                format!("`{} -x {}` failed ({}): {}", self.dpkg_deb, archive.display(), output.status, tail(&output)),
            ));
        }
        let member = root.join(asset.member);
        if !member.is_dir() {
            return Err(Error::fetch(asset.name, format!("{} has no folder {}", asset.file_name, asset.member)));
        }
        fs::remove_dir(unpack).map_err(|e| Error::io(unpack, e))?;
        fs::rename(&member, unpack).map_err(|e| Error::io(&member, e))
    }
}

/// Whether apt-get failed because it does not know the package (version) at all.
fn lacks_package_lists(output: &Output) -> bool {
    let text = String::from_utf8_lossy(&output.stderr);
    text.contains("Unable to locate") || text.contains("was not found") || text.contains("has no installation candidate")
}

/// The last lines of a command's stderr (else stdout), for an error message.
fn tail(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { stderr };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(10)..].join("\n  ")
}
