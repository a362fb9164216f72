//! Progress where stderr is no terminal (CI, `nohup`, a log file): instead of a bar, a line at
//! most every [`EVERY`] with the position, the bar's message (the training loss and rate), the
//! time taken and the time left, so that a log shows how far a long run is.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::progress::{Indicator, Kind};

/// How often a line is written at most, unless `REPLORA_PROGRESS_EVERY` says otherwise.
pub const EVERY: Duration = Duration::from_secs(30);

/// The interval between lines: `REPLORA_PROGRESS_EVERY` seconds (`0`: a line at every step), else
/// [`EVERY`]. A value that is no number of seconds is named on stderr and ignored.
pub fn interval() -> Duration {
    static INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let Ok(value) = std::env::var("REPLORA_PROGRESS_EVERY") else { return EVERY };
        match value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) {
            Some(seconds) => Duration::from_secs_f64(seconds),
            None => {
                eprintln!(
                    "warning: REPLORA_PROGRESS_EVERY={value:?} is not a number of seconds; a progress line every {}s",
                    EVERY.as_secs()
                );
                EVERY
            }
        }
    })
}

/// One bar's progress, written as lines to `sink`.
pub struct ProgressLines {
    kind: Kind,
    len: u64,
    every: Duration,
    /// Where this process found the bar (a resumed run starts past 0): the rate counts from here.
    start: (u64, Instant),
    state: Mutex<State>,
}

struct State {
    position: u64,
    prefix: String,
    message: String,
    last_line: Instant,
    sink: Box<dyn Write + Send>,
}

impl ProgressLines {
    pub fn new(kind: Kind, position: u64, len: u64, message: String, every: Duration, sink: Box<dyn Write + Send>) -> Self {
        let now = Instant::now();
        let state = State { position, prefix: String::new(), message, last_line: now, sink };
        ProgressLines { kind, len, every, start: (position, now), state: Mutex::new(state) }
    }

    /// Moves to `position`, writing a line if the last one is `every` old.
    fn moved(&self, position: impl FnOnce(u64) -> u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.position = position(state.position);
        if state.last_line.elapsed() >= self.every {
            state.last_line = Instant::now();
            let line = self.line(&state);
            let _ = writeln!(state.sink, "{line}");
        }
    }

    fn line(&self, state: &State) -> String {
        let (position, len) = (state.position, self.len);
        let what = match self.kind {
            Kind::Steps => format!("step {position}/{len}"),
            Kind::Batches => format!("batch {position}/{len}"),
            Kind::Bytes => format!("{:.1}/{:.1} MB", position as f64 / 1e6, len as f64 / 1e6),
            Kind::Spinner => format!("{position}"),
        };
        let elapsed = self.start.1.elapsed().as_secs_f64();
        let done = position.saturating_sub(self.start.0) as f64;
        let left = if done > 0.0 {
            format!(", about {} left", clock(elapsed / done * len.saturating_sub(position) as f64))
        } else {
            String::new()
        };
        let percent = if len > 0 { format!(" ({:.0}%)", 100.0 * position as f64 / len as f64) } else { String::new() };
        let label = [state.prefix.as_str(), state.message.as_str()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
        format!("{label}: {what}{percent}, {} taken{left}", clock(elapsed))
    }
}

/// `1h02m`, `3m05s` or `42s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

impl Indicator for ProgressLines {
    fn set_position(&self, position: u64) {
        self.moved(|_| position);
    }
    fn inc(&self, n: u64) {
        self.moved(|p| p + n);
    }
    fn set_prefix(&self, prefix: String) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).prefix = prefix;
    }
    fn set_message(&self, message: String) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).message = message;
    }
    fn println(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(state.sink, "{line}");
    }
    fn finish(&self) {}
    fn abandon(&self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_string).collect()
        }
    }

    #[test]
    fn a_training_bar_writes_its_step_loss_and_time_left_as_lines() {
        let log = Log::default();
        let bar = ProgressLines::new(Kind::Steps, 0, 40, String::new(), Duration::ZERO, Box::new(log.clone()));
        bar.set_prefix("epoch 1/4".into());
        bar.set_message("loss 0.6931 lr 2.00e-3 75.0 examples/s".into());
        bar.inc(1);
        std::thread::sleep(Duration::from_millis(20));
        bar.inc(9);
        bar.println("epoch 1: validation accuracy 0.9");
        let lines = log.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("epoch 1/4 loss 0.6931 lr 2.00e-3 75.0 examples/s: step 1/40 (2%), "), "{lines:?}");
        assert!(lines[1].contains("step 10/40 (25%)") && lines[1].contains(" taken, about ") && lines[1].ends_with(" left"), "{lines:?}");
        assert_eq!(lines[2], "epoch 1: validation accuracy 0.9");
    }

    #[test]
    fn lines_come_at_most_every_interval_and_a_resumed_bar_counts_from_where_it_started() {
        let log = Log::default();
        let bar = ProgressLines::new(Kind::Batches, 5, 10, "evaluating".into(), Duration::from_secs(3600), Box::new(log.clone()));
        for _ in 0..5 {
            bar.inc(1);
        }
        assert!(log.lines().is_empty(), "{:?}", log.lines());
        let resumed = ProgressLines::new(Kind::Steps, 30, 40, String::new(), Duration::ZERO, Box::new(log.clone()));
        assert!(resumed.line(&resumed.state.lock().unwrap()).ends_with(" taken"), "no rate before a step of this process");
        assert_eq!(clock(3725.0), "1h02m");
        assert_eq!(clock(185.0), "3m05s");
        assert_eq!(clock(42.0), "42s");
    }
}
