//! `failed.json`: what tells a failed run from an interrupted one. `train` writes it when its
//! training or testing ends with an error (a non-finite loss, a full disk), and removes it when
//! the run starts again (`--resume`). A run killed by a signal or a power cut leaves none, and
//! `replora runs` lists it as interrupted.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::layout::FAILED_FILE;

/// The content of `failed.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The error, as `train` reported it.
    pub error: String,
    /// When, in seconds since the Unix epoch.
    pub unix_time: u64,
}

/// Removes the record of an earlier failure: the run is being trained again.
pub fn clear(run: &Path) -> Result<()> {
    let file = run.join(FAILED_FILE);
    match std::fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&file, e)),
        _ => Ok(()),
    }
}

/// Records `error` in `run`'s `failed.json` and hands it back. A failure to write the record is
/// reported on stderr and does not replace the error.
pub fn record(run: &Path, error: Error) -> Error {
    let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Err(e) = write_json(&run.join(FAILED_FILE), &Failure { error: error.to_string(), unix_time }) {
        eprintln!("warning: {e}");
    }
    error
}

/// The failure recorded in `run`, if any.
pub fn read(run: &Path) -> Result<Option<Failure>> {
    let file = run.join(FAILED_FILE);
    if !file.exists() {
        return Ok(None);
    }
    read_json(&file).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_recorded_read_back_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let e = record(dir.path(), Error::Training("the loss is NaN".into()));
        assert!(e.to_string().contains("the loss is NaN"));
        let failure = read(dir.path()).unwrap().expect("recorded");
        assert_eq!(failure.error, e.to_string());
        assert!(failure.unix_time > 1_700_000_000);
        clear(dir.path()).unwrap();
        clear(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
