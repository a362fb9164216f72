//! Progress of long steps (training, evaluation, downloads), reported without a terminal
//! library: the library asks for a [`Bar`] and moves it; a front end draws it by installing a
//! [`Reporter`] once ([`install`]; the CLI's draws indicatif bars). With none installed the
//! bars are quiet, and only the lines printed through [`Bar::println`] reach stderr.

use std::sync::{Arc, OnceLock};

/// What a bar counts, which decides how a front end draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Optimizer steps of a training run; the prefix names the epoch, the message the loss.
    Steps,
    /// Batches of an evaluation; the message names the job.
    Batches,
    /// Bytes of a file read or unpacked; the message names it.
    Bytes,
    /// Work of unknown length (a download by another program); the message says what.
    Spinner,
}

/// A front end's view of one bar.
pub trait Indicator: Send + Sync {
    fn set_position(&self, position: u64);
    fn inc(&self, n: u64);
    fn set_prefix(&self, prefix: String);
    fn set_message(&self, message: String);
    /// Prints `line` to stderr without breaking the bar.
    fn println(&self, line: &str);
    /// Removes the bar: its work is done.
    fn finish(&self);
    /// Leaves the bar as it stands: its work stopped short.
    fn abandon(&self);
}

/// Draws the library's bars; installed once per process by a front end.
pub trait Reporter: Send + Sync {
    /// A bar of `kind` at `position` (work done before, e.g. by the run resumed) that reaches
    /// `len` when the work is done.
    fn bar(&self, kind: Kind, position: u64, len: u64, message: String) -> Box<dyn Indicator>;
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Sends every later bar of this process to `reporter`. Only the first call counts: it
/// returns false (and drops `reporter`) when one is installed already.
pub fn install(reporter: impl Reporter + 'static) -> bool {
    REPORTER.set(Box::new(reporter)).is_ok()
}

/// A progress bar; clones move the same bar. Quiet when no [`Reporter`] is installed.
#[derive(Clone)]
pub struct Bar(Option<Arc<dyn Indicator>>);

impl Bar {
    /// A bar of `kind` from 0 to `len`, drawn by the installed [`Reporter`].
    pub fn new(kind: Kind, len: u64, message: impl Into<String>) -> Bar {
        Bar::starting_at(kind, 0, len, message)
    }

    /// A bar of `kind` from `position` (work done before) to `len`.
    pub fn starting_at(kind: Kind, position: u64, len: u64, message: impl Into<String>) -> Bar {
        Bar(REPORTER.get().map(|r| Arc::from(r.bar(kind, position, len, message.into()))))
    }

    /// A bar that is never drawn.
    pub fn hidden() -> Bar {
        Bar(None)
    }

    pub fn set_position(&self, position: u64) {
        if let Some(b) = &self.0 {
            b.set_position(position);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    pub fn set_prefix(&self, prefix: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_prefix(prefix.into());
        }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_message(message.into());
        }
    }

    /// Prints `line` to stderr (above the bar while one is drawn).
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar: its work is done.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }

    /// Leaves the bar as it stands: its work stopped short.
    pub fn abandon(&self) {
        if let Some(b) = &self.0 {
            b.abandon();
        }
    }
}
