//! The lock of a run directory: the process that trains a run (new, resumed or overwritten)
//! holds an exclusive `flock` on its `run.lock` from its first check to its last write, with
//! its PID in the file. The kernel releases it when the holder exits, however it dies
//! (SIGKILL included), so a stale lock never needs cleaning up; a second writer, and a reader
//! of the unfinished run, are told which process holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{self, LOCK_FILE};

/// How long a writer retries a lock held by someone else before it gives up: long enough to
/// ride over a reader's momentary probe ([`check_free`]), far shorter than any training.
const RETRIES: usize = 20;
const RETRY_WAIT: Duration = Duration::from_millis(25);

/// The held lock of a run directory; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    /// Open as long as the lock is held: closing it releases the lock.
    _file: File,
    dir: PathBuf,
    /// The directories [`RunLock::acquire`] created, deepest first.
    created: Vec<PathBuf>,
}

impl RunLock {
    /// Creates `dir` (and its missing parents) if needed and locks it for writing, or says which
    /// process is writing it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let mut created = vec![];
        let path = dir.join(LOCK_FILE);
        let mut waits = 0;
        loop {
            created.extend(create_dirs(dir)?);
            // Not truncated on open: the holder's PID must stay readable.
            let file =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                // A holder that gave up on a directory it created removes the lock file (and
                // the directory): a lock on that unlinked file locks nothing; start again.
                Ok(()) if !is_file_at(&file, &path) => continue,
                Ok(()) => {
                    let pid = format!("{}\n", std::process::id());
                    file.set_len(0).and_then(|()| file.write_all_at(pid.as_bytes(), 0)).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { _file: file, dir: dir.to_path_buf(), created });
                }
                Err(TryLockError::WouldBlock) if waits < RETRIES => {
                    waits += 1;
                    std::thread::sleep(RETRY_WAIT);
                }
                Err(TryLockError::WouldBlock) => return Err(Error::Busy { dir: dir.to_path_buf(), pid: holder_pid(&path) }),
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}

impl Drop for RunLock {
    /// A train that stopped before writing `run.json` leaves the directory as it found it:
    /// without the lock file, and gone if it created it. (The lock itself is released after
    /// this, when `_file` closes.)
    fn drop(&mut self) {
        let only_the_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| entries.flatten().all(|e| e.file_name() == LOCK_FILE));
        if layout::is_run(&self.dir) || !only_the_lock {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Refuses to read `dir` while another process writes it (a reader of an unfinished run).
/// Takes a shared lock for a moment, so no process is told "busy" by a run nobody writes.
pub fn check_free(dir: &Path) -> Result<()> {
    let path = dir.join(LOCK_FILE);
    let Ok(file) = File::open(&path) else { return Ok(()) };
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => Err(Error::Busy { dir: dir.to_path_buf(), pid: holder_pid(&path) }),
        // Unlocked when `file` closes; an unreadable lock file says nothing either way.
        Ok(()) | Err(TryLockError::Error(_)) => Ok(()),
    }
}

/// The PID the holder wrote into the lock file; `None` in the moment before it writes it.
fn holder_pid(path: &Path) -> Option<u32> {
    (0..RETRIES).find_map(|i| {
        if i > 0 {
            std::thread::sleep(RETRY_WAIT);
        }
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
}

/// Whether the open `file` is still the one at `path` (not unlinked or replaced).
fn is_file_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// `create_dir_all`, returning the directories it created, deepest first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_and_a_reader_are_told_the_holders_pid_until_it_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/run");
        let lock = RunLock::acquire(&dir).unwrap();
        std::fs::write(dir.join(layout::RUN_FILE), "{}").unwrap();
        let me = std::process::id();
        // flock locks belong to an open file, so a second open in this process conflicts too.
        for e in [RunLock::acquire(&dir).unwrap_err(), check_free(&dir).unwrap_err()] {
            assert!(matches!(e, Error::Busy { pid: Some(pid), .. } if pid == me), "{e}");
            assert!(e.to_string().contains(&format!("being written by process {me}")) && e.to_string().contains("a/run"), "{e}");
        }
        drop(lock);
        check_free(&dir).unwrap();
        drop(RunLock::acquire(&dir).unwrap());
        assert!(dir.join(LOCK_FILE).exists(), "a run's lock file stays");
    }

    #[test]
    fn a_lock_given_up_before_the_run_started_leaves_no_trace() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/deeper");
        drop(RunLock::acquire(&dir).unwrap());
        assert!(!root.path().join("new").exists(), "the directories it created are gone");
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        drop(RunLock::acquire(&empty).unwrap());
        assert!(empty.is_dir() && std::fs::read_dir(&empty).unwrap().next().is_none(), "a directory it found stays, empty");
    }
}
