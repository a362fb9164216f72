//! The crate's one error type: every failure a user can cause names its cause.

use std::path::PathBuf;

/// Errors returned by replora's library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A target pattern selected no linear module.
    #[error("target pattern {pattern:?} matches no linear module; available linear modules: {}", available.join(", "))]
    NoTargetMatch { pattern: String, available: Vec<String> },
    /// A tensor in a file does not fit the model or adapter it is loaded into.
    #[error("shape mismatch for {name}: file has {found:?}, model expects {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    /// A tensor the model needs is missing from a file.
    #[error("{file}: missing tensor {name}")]
    MissingTensor { file: PathBuf, name: String },
    /// A file could not be parsed.
    #[error("{file}: {message}")]
    Format { file: PathBuf, message: String },
    /// Reading or writing a file failed.
    #[error("{file}: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    /// A merge would write non-finite values into the base weights.
    #[error("merging the adapter into {path} would produce NaN/Inf weights; the model was left unchanged")]
    NonFinite { path: String },
    /// A model's outputs are NaN or infinite; `files`: the run's trained files, the likely cause
    /// (filled in by the run layer).
    #[error("{what} are not finite (NaN or infinite): {}", non_finite_cause(files))]
    NonFiniteOutput { what: String, files: Vec<PathBuf> },
    /// Training cannot go on (e.g. the loss became NaN).
    #[error("training failed: {0}")]
    Training(String),
    /// `replora simulate` failed.
    #[error("simulation: {0}")]
    Simulation(String),
    /// An operation was called in a state that does not allow it.
    #[error("{0}")]
    State(String),
    /// Another process (`pid`, when it has written it into the lock file) is writing the run
    /// directory `dir` (see `run::lock`).
    #[error("{} is being written by {}; wait for it or stop it", dir.display(), pid.map_or("another process (it holds run.lock)".into(), |p| format!("process {p}")))]
    Busy { dir: PathBuf, pid: Option<u32> },
    /// A dataset has a bad record (`line` is 1-based where the format has lines), or is unusable.
    #[error("{}", data_message(file, *line, message))]
    Data { file: PathBuf, line: Option<usize>, message: String },
    /// A named asset (model or dataset from a package registry) could not be fetched.
    #[error("cannot fetch {asset}: {message}")]
    Fetch { asset: String, message: String },
}

fn data_message(file: &std::path::Path, line: Option<usize>, message: &str) -> String {
    match line {
        Some(line) => format!("{}:{line}: {message}", file.display()),
        None => format!("{}: {message}", file.display()),
    }
}

fn non_finite_cause(files: &[PathBuf]) -> String {
    match files {
        [] => "the model's weights likely hold non-finite or huge values".into(),
        files => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            format!(
                "the run's trained weights ({}) likely hold non-finite or huge values; retrain the run or restore them",
                names.join(", ")
            )
        }
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { file: file.into(), source }
    }
    pub(crate) fn format(file: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Format { file: file.into(), message: message.to_string() }
    }
    pub(crate) fn data(file: impl Into<PathBuf>, line: Option<usize>, message: impl std::fmt::Display) -> Self {
        Error::Data { file: file.into(), line, message: message.to_string() }
    }
    pub(crate) fn fetch(asset: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Fetch { asset: asset.into(), message: message.to_string() }
    }
}
