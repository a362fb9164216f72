//! The one check of every path a command writes (`train --out`, `export`/`merge --out`,
//! `logits --out`, `compare`/`sweep`/`simulate --out`, `sweep --cells`): nothing is ever
//! written over the file system's root, into a run directory that is not the one being
//! trained, or into the files a run writes (`runs/a/adapter/...`, `runs/a/checkpoint/peft`),
//! and a directory that holds files but no run is never taken for a run.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{self, LOCK_FILE, RUN_FILE};

/// What a command writes at the path it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A file (`logits --out`).
    File,
    /// A directory the command keeps its own files in, rewritten on each call (`compare`,
    /// `sweep` and `simulate --out`, `sweep --cells`).
    Dir,
    /// A directory that must be new or empty, unless `overwrite` (`export`, `merge`).
    NewDir { overwrite: bool },
    /// The run directory `train` writes: new, empty, or holding a run.
    Run,
}

/// Checks that a command may write `path` (given as `flag`) as `output`.
pub fn check(flag: &str, path: &Path, output: Output) -> Result<()> {
    let shown = path.display();
    let refuse = |why: String| Err(Error::State(format!("{flag} {shown}{why}")));
    let full = absolute(path)?;
    if full.parent().is_none() {
        return refuse(" is the file system's root; give a directory of its own".into());
    }
    for dir in full.ancestors().filter(|d| layout::is_run(d)) {
        let d = dir.display();
        if dir == full {
            if output != Output::Run {
                return refuse(format!(
                    " is a run directory (it holds {RUN_FILE}); only `replora train` writes into a run, and --overwrite never does: choose another directory"
                ));
            }
            continue;
        }
        let below = full.strip_prefix(dir).ok().and_then(|p| p.components().next()).map(|c| c.as_os_str().to_owned()).unwrap_or_default();
        if layout::is_artefact(&below) || below == LOCK_FILE {
            let own = below.to_string_lossy();
            return refuse(format!(
                " is inside {own} of the run in {d}, which the run itself writes (and replaces); write outside the run's own files"
            ));
        }
    }
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir).map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    };
    // A path under a file cannot be created: name the file rather than the system's "Not a directory".
    if let Some(file) = full.ancestors().skip(1).find(|a| a.exists() && !a.is_dir()) {
        return refuse(format!(": {} is a file, not a directory", file.display()));
    }
    match output {
        Output::File if full.is_dir() => refuse(" is a directory; give a file name".into()),
        Output::File => Ok(()),
        _ if full.exists() && !full.is_dir() => refuse(" is a file, not a directory".into()),
        Output::NewDir { overwrite: false } if !entries(&full).is_empty() => {
            refuse(" exists and is not empty; choose a new directory, or pass --overwrite to write over its files".into())
        }
        Output::Run if !layout::is_run(&full) => {
            let mut found: Vec<String> = entries(&full).into_iter().filter(|e| e != LOCK_FILE).collect();
            if found.is_empty() {
                return Ok(());
            }
            found.sort();
            let more = if found.len() > 3 { format!(" and {} more", found.len() - 3) } else { String::new() };
            found.truncate(3);
            refuse(format!(
                " holds files but no replora run (no {RUN_FILE}: {}{more}); a run is written only into a new or empty directory or over a run, so nothing of yours is deleted: choose another directory",
                found.join(", ")
            ))
        }
        _ => Ok(()),
    }
}

/// `path` made absolute with every symlink of its existing part resolved; the part that does
/// not exist yet is taken as written (`..` there steps back lexically, as creating it will).
fn absolute(path: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let mut full = PathBuf::new();
    let mut exists = true;
    for part in cwd.join(path).components() {
        match part {
            Component::Prefix(_) | Component::RootDir => full.push(part.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                full.pop();
            }
            Component::Normal(name) => {
                full.push(name);
                if exists {
                    match std::fs::canonicalize(&full) {
                        Ok(real) => full = real,
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_in(root: &Path, name: &str) -> PathBuf {
        let run = root.join(name);
        std::fs::create_dir_all(run.join("adapter")).unwrap();
        std::fs::create_dir_all(run.join("checkpoint")).unwrap();
        std::fs::write(run.join(RUN_FILE), "{}").unwrap();
        std::fs::write(run.join("head.safetensors"), "x").unwrap();
        run
    }

    fn refused(path: &Path, output: Output, expected: &str) {
        let e = check("--out", path, output).expect_err(&format!("{} as {output:?} was allowed", path.display())).to_string();
        assert!(e.contains(expected) && e.contains("--out"), "{}: {e}", path.display());
    }

    #[test]
    fn no_command_writes_into_a_run_or_its_files() {
        let root = tempfile::tempdir().unwrap();
        let run = run_in(root.path(), "run");
        for output in [Output::File, Output::Dir, Output::NewDir { overwrite: true }, Output::Run] {
            for own in
                [run.join("adapter"), run.join("adapter/adapter_model.safetensors"), run.join("checkpoint/peft"), run.join("best.tmp/x")]
            {
                refused(&own, output, "of the run in");
            }
            // Through `..` and a symlink too.
            refused(&run.join("x/../adapter"), output, "of the run in");
            let link = root.path().join("link");
            let _ = std::os::unix::fs::symlink(&run, &link);
            refused(&link.join("head.safetensors"), output, "of the run in");
        }
        for output in [Output::Dir, Output::NewDir { overwrite: true }] {
            refused(&run, output, "is a run directory");
            refused(&run.join("."), output, "is a run directory");
        }
        refused(&run, Output::File, "is a run directory");
        check("--out", &run, Output::Run).unwrap();
        // A new folder or file of the user's beside a run's files is theirs to write.
        check("--out", &run.join("peft"), Output::NewDir { overwrite: false }).unwrap();
        check("--out", &run.join("logits.safetensors"), Output::File).unwrap();
    }

    #[test]
    fn train_takes_only_a_new_or_empty_directory_or_a_run() {
        let root = tempfile::tempdir().unwrap();
        refused(Path::new("/"), Output::Run, "root");
        refused(Path::new("/.."), Output::Dir, "root");
        let project = root.path().join("proj");
        std::fs::create_dir_all(project.join("model")).unwrap();
        std::fs::create_dir_all(project.join("best")).unwrap();
        refused(&project, Output::Run, "no replora run (no run.json: best, model)");
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check("--out", &empty, Output::Run).unwrap();
        std::fs::write(empty.join(LOCK_FILE), "").unwrap();
        check("--out", &empty, Output::Run).expect("a lock file left by a train that never started is no run's content");
        check("--out", &root.path().join("new/deeper"), Output::Run).unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        refused(&file, Output::Run, "is a file");
        refused(&empty, Output::File, "is a directory");
    }

    #[test]
    fn export_takes_a_non_empty_directory_only_with_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let full = root.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("x"), "x").unwrap();
        refused(&full, Output::NewDir { overwrite: false }, "--overwrite");
        check("--out", &full, Output::NewDir { overwrite: true }).unwrap();
        check("--out", &root.path().join("new"), Output::NewDir { overwrite: false }).unwrap();
    }

    #[test]
    fn an_output_that_is_or_lies_under_a_file_names_the_flag_and_the_file() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("afile");
        std::fs::write(&file, "x").unwrap();
        for output in [Output::Run, Output::Dir, Output::NewDir { overwrite: true }] {
            refused(&file, output, "afile is a file, not a directory");
            refused(&file.join("run"), output, "afile is a file, not a directory");
        }
        refused(&file.join("logits.safetensors"), Output::File, "afile is a file, not a directory");
        check("--out", &root.path().join("new/run"), Output::Run).unwrap();
        check("--out", Path::new("relative-new-dir"), Output::Run).unwrap();
    }
}
