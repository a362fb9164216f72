//! The fetcher's progress bars, and hashing an archive (with a progress bar) to verify its sha256.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::catalog::Asset;
use crate::progress::{Bar, Kind};
use crate::{Error, Result};

pub(super) fn spinner(message: String) -> Bar {
    Bar::new(Kind::Spinner, 0, message)
}

pub(super) fn byte_bar(total: u64, message: String) -> Bar {
    Bar::new(Kind::Bytes, total, message)
}

pub(super) fn truncate_chars(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "..." }
}

/// A reader that advances a progress bar by the bytes it reads.
pub(super) struct Progress<R> {
    pub(super) inner: R,
    pub(super) bar: Bar,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub(super) fn open_with_progress(path: &Path, message: String) -> Result<Progress<BufReader<File>>> {
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
    reader.bar.finish();
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn verify(asset: &Asset, archive: &Path) -> Result<()> {
    let actual = sha256_file(archive, format!("{}: sha256", asset.name))?;
    if actual != asset.sha256 {
        return Err(Error::fetch(
            asset.name,
            format!("sha256 mismatch for {}: expected {}, got {actual}; the file was not used", archive.display(), asset.sha256),
        ));
    }
    Ok(())
}
