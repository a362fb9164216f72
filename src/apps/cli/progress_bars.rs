//! The CLI's progress bars: indicatif draws the library's [`Bar`](crate::progress::Bar)s on
//! stderr; where stderr is no terminal, a line now and then instead ([`ProgressLines`]).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::progress_lines::{self, ProgressLines};
use crate::progress::{Indicator, Kind, Reporter};

/// The [`Reporter`] `replora` installs.
pub struct Indicatif;

impl Reporter for Indicatif {
    fn bar(&self, kind: Kind, position: u64, len: u64, message: String) -> Box<dyn Indicator> {
        if !std::io::stderr().is_terminal() && kind != Kind::Spinner {
            return Box::new(ProgressLines::new(kind, position, len, message, progress_lines::interval(), Box::new(std::io::stderr())));
        }
        let bar = match kind {
            Kind::Spinner => ProgressBar::new_spinner(),
            _ => ProgressBar::new(len).with_position(position),
        };
        bar.set_style(style(kind));
        bar.set_message(message);
        if kind == Kind::Spinner {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Box::new(bar)
    }
}

fn style(kind: Kind) -> ProgressStyle {
    let template = match kind {
        Kind::Steps => "{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed} < {eta})",
        Kind::Batches => "{msg} [{bar:30}] {pos}/{len} batches ({elapsed} < {eta})",
        Kind::Bytes => "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        Kind::Spinner => "{spinner} [{elapsed_precise}] {wide_msg}",
    };
    let style = ProgressStyle::with_template(template).expect("a valid template");
    if kind == Kind::Spinner { style } else { style.progress_chars("=> ") }
}

impl Indicator for ProgressBar {
    fn set_position(&self, position: u64) {
        ProgressBar::set_position(self, position);
    }
    fn inc(&self, n: u64) {
        ProgressBar::inc(self, n);
    }
    fn set_prefix(&self, prefix: String) {
        ProgressBar::set_prefix(self, prefix);
    }
    fn set_message(&self, message: String) {
        ProgressBar::set_message(self, message);
    }
    fn println(&self, line: &str) {
        // `ProgressBar::println` prints nothing while the bar is hidden (stderr no terminal).
        self.suspend(|| eprintln!("{line}"));
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
    fn abandon(&self) {
        ProgressBar::abandon(self);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressDrawTarget, TermLike};

    use super::*;

    /// A terminal 100 columns wide that keeps what was written to it.
    #[derive(Clone, Debug, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line a bar of `kind` draws.
    fn render(kind: Kind, position: u64, len: u64, message: &str, prefix: &str) -> String {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::term_like(Box::new(screen.clone())))
            .with_position(position)
            .with_style(style(kind))
            .with_prefix(prefix.to_string())
            .with_message(message.to_string());
        bar.tick();
        let lines = screen.0.lock().unwrap();
        lines.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default()
    }

    /// The lines (up to the times) that the trainer, the evaluation and the fetcher drew with
    /// these templates when they held indicatif themselves.
    #[test]
    fn the_bars_look_as_they_did_when_the_library_drew_them() {
        let cases = [
            (render(Kind::Steps, 3, 10, "loss 0.6931", "epoch 1/2"), "epoch 1/2 [=========>                    ] 3/10 steps loss 0.6931 ("),
            (render(Kind::Batches, 1, 4, "evaluating", ""), "evaluating [=======>                      ] 1/4 batches ("),
        ];
        for (line, expected) in cases {
            assert!(line.starts_with(expected), "{line:?} does not start with {expected:?}");
        }
        // The download bar is as wide as the line leaves it beside the rate, whose text varies
        // with the measured speed: its frame and its half-full fill, not its width.
        let line = render(Kind::Bytes, 512, 1024, "minilm: sha256", "");
        let (head, rest) = line.split_once('[').expect("a bar");
        let (bar, tail) = rest.split_once(']').expect("a bar");
        assert_eq!(head, "minilm: sha256 ", "{line:?}");
        assert!(tail.starts_with(" 512 B/1.00 KiB "), "{line:?}");
        let filled = bar.chars().take_while(|&c| c == '=').count() as f64 / bar.chars().count() as f64;
        assert!(bar.contains("=>") && (filled - 0.5).abs() < 0.05, "{line:?}");
    }
}
