//! The paths a run stores: `run.json` names its model and data by absolute path, and lists
//! each with a SHA-256 of its contents under `sources`, so that a run used later (from another
//! directory, or after a file changed) reads what it was trained on, or says that it cannot.
//! Built-in names (`bigbench:<task>`, `cifar10`, `minilm`) stay names: the asset cache checks
//! their contents when it fetches them.
//!
//! What is checked where: `--resume` and `eval --run` (without `--data`) refuse a changed or
//! missing model or data; `predict`, `export`, `merge` and `logits` read only the model, and
//! refuse a changed or missing one. A run written before sources were stored loads with a
//! warning.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::layout::RUN_FILE;
use crate::tasks::TaskSpec;

pub use crate::tasks::Role;

/// A file or directory a run was trained from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub role: Role,
    /// Absolute, as the spec names it.
    pub path: PathBuf,
    /// SHA-256 over the contents (see [`fingerprint`]), lowercase hex.
    pub sha256: String,
    /// Bytes hashed.
    pub bytes: u64,
}

/// Makes the spec's model and data paths absolute where they name an existing file or
/// directory; names (and paths that do not exist, which fail later with their own error) stay.
pub fn absolutize<S: TaskSpec>(spec: &mut S) {
    for (_, path) in spec.paths_mut() {
        if let Ok(absolute) = std::fs::canonicalize(path.as_str()) {
            *path = absolute.to_string_lossy().into_owned();
        }
    }
}

/// The sources of a spec whose paths [`absolutize`] made absolute: each path that exists, hashed.
pub fn record<S: TaskSpec>(spec: &S) -> Result<Vec<Source>> {
    let mut spec = spec.clone();
    let mut sources = vec![];
    for (role, path) in spec.paths_mut() {
        let path = PathBuf::from(path.as_str());
        if path.is_absolute() && path.exists() {
            let (sha256, bytes) = fingerprint(&path, role)?;
            sources.push(Source { role, path, sha256, bytes });
        }
    }
    Ok(sources)
}

/// Checks that the sources of `roles` are where the run stored them, unchanged. A run without
/// stored sources gets a warning naming the paths it will read (`names`: the spec's).
pub fn check(run: &Path, sources: Option<&[Source]>, names: &[(Role, String)], roles: &[Role]) -> Result<()> {
    let Some(sources) = sources else {
        let paths: Vec<String> = names.iter().filter(|(r, _)| roles.contains(r)).map(|(r, p)| format!("{r} {p}")).collect();
        eprintln!(
            "warning: {} stores no content hashes (written by an older replora): cannot tell whether {} changed since the run trained; relative paths are read from the current directory",
            run.join(RUN_FILE).display(),
            paths.join(", ")
        );
        return Ok(());
    };
    for source in sources.iter().filter(|s| roles.contains(&s.role)) {
        let (role, path) = (source.role, source.path.display());
        if !source.path.exists() {
            return Err(Error::State(format!(
                "{path}: the {role} run {} was trained on is missing; restore it there, or train the run again",
                run.display()
            )));
        }
        let (now, _) = fingerprint(&source.path, role)?;
        if now != source.sha256 {
            return Err(Error::State(format!(
                "{path}: the {role} changed since run {} was trained on it (SHA-256 {} then, {} now); restore it, or train the run again",
                run.display(),
                &source.sha256[..12.min(source.sha256.len())],
                &now[..12]
            )));
        }
    }
    Ok(())
}

/// SHA-256 and size of a file, or of a directory's files in name order (each hashed as its
/// relative name, length and bytes). A model directory's files are those at its top level (a
/// run written inside it must not change it); a data directory's include sub-directories
/// (image classes). Hidden entries are skipped.
pub fn fingerprint(path: &Path, role: Role) -> Result<(String, u64)> {
    let mut files = vec![];
    if path.is_dir() {
        list_files(path, path, role == Role::Data, &mut files)?;
    } else {
        files.push((PathBuf::new(), path.to_path_buf()));
    }
    files.sort();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (name, file) in files {
        let mut reader = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        let len = reader.metadata().map_err(|e| Error::io(&file, e))?.len();
        hasher.update(name.to_string_lossy().as_bytes());
        hasher.update(len.to_le_bytes());
        loop {
            let n = reader.read(&mut buf).map_err(|e| Error::io(&file, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        total += len;
    }
    Ok((hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(), total))
}

fn list_files(root: &Path, dir: &Path, recursive: bool, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if recursive {
                list_files(root, &path, recursive, out)?;
            }
        } else if path.is_file() {
            out.push((path.strip_prefix(root).unwrap_or(&path).to_path_buf(), path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classification::ClassificationSpec;

    /// Issue 26: a run re-read its data relative to the current directory and scored another
    /// file without a word. Stored paths are absolute, and a changed or missing file is refused.
    #[test]
    fn stored_paths_are_absolute_and_changes_are_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        std::fs::write(&data, "{\"text\": \"a\", \"label\": \"x\"}\n").unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join(".cache")).unwrap();
        std::fs::write(model.join("model.safetensors"), "weights").unwrap();
        let mut spec =
            ClassificationSpec { data: data.to_str().unwrap().into(), model: model.to_str().unwrap().into(), ..Default::default() };
        absolutize(&mut spec);
        let sources = record(&spec).unwrap();
        assert_eq!(sources.iter().map(|s| s.role).collect::<Vec<_>>(), [Role::Model, Role::Data]);
        assert!(sources.iter().all(|s| s.path.is_absolute()));
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        crate::run::run_file::write(&run, crate::tasks::TaskKind::Classification, &spec, Some(&sources)).unwrap();
        let (back, stored): (ClassificationSpec, _) = crate::run::run_file::read(&run, crate::tasks::TaskKind::Classification).unwrap();
        assert_eq!(back, spec);
        let stored = stored.unwrap();
        let both = [Role::Model, Role::Data];
        check(&run, Some(&stored), &[], &both).unwrap();

        // Hidden files in the model directory do not count.
        std::fs::write(model.join(".cache/x"), "y").unwrap();
        check(&run, Some(&stored), &[], &both).unwrap();
        std::fs::write(&data, "{\"text\": \"b\", \"label\": \"x\"}\n").unwrap();
        let e = check(&run, Some(&stored), &[], &both).unwrap_err().to_string();
        assert!(e.contains(data.to_str().unwrap()) && e.contains("the data changed"), "{e}");
        check(&run, Some(&stored), &[], &[Role::Model]).unwrap();
        std::fs::remove_file(model.join("model.safetensors")).unwrap();
        let e = check(&run, Some(&stored), &[], &[Role::Model]).unwrap_err().to_string();
        assert!(e.contains(model.to_str().unwrap()) && e.contains("the model changed"), "{e}");
        std::fs::remove_dir_all(&model).unwrap();
        let e = check(&run, Some(&stored), &[], &[Role::Model]).unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
    }

    #[test]
    fn names_stay_names_and_old_runs_still_load() {
        let mut spec = ClassificationSpec::default();
        absolutize(&mut spec);
        assert_eq!((spec.model.as_str(), spec.data.as_str()), ("minilm", "bigbench:intent_recognition"));
        assert!(record(&spec).unwrap().is_empty());
        let run = tempfile::tempdir().unwrap();
        crate::run::run_file::write(run.path(), crate::tasks::TaskKind::Classification, &spec, None).unwrap();
        let (back, sources): (ClassificationSpec, _) =
            crate::run::run_file::read(run.path(), crate::tasks::TaskKind::Classification).unwrap();
        assert_eq!((back, sources), (spec, None));
        check(run.path(), None, &[(Role::Data, "d.jsonl".into())], &[Role::Data]).unwrap();
    }
}
