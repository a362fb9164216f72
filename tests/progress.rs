//! The library reports its long steps through `replora::progress` and draws nothing itself: a
//! front end's `Reporter` (the CLI's draws indicatif bars) sees a training run's steps and its
//! test evaluation's batches. Runs without the `cli` feature too.

mod support;

use std::sync::{Arc, Mutex};

use replora::progress::{Indicator, Kind, Reporter};
use replora::run::{self, Start};
use replora::tasks::Classification;
use replora::tasks::classification::ClassificationSpec;
use replora::training::TrainConfig;

/// One bar as a front end saw it.
#[derive(Clone, Debug, Default)]
struct Seen {
    kind: Option<Kind>,
    len: u64,
    position: u64,
    message: String,
    finished: bool,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

struct RecordedBar {
    bars: Arc<Mutex<Vec<Seen>>>,
    index: usize,
}

impl RecordedBar {
    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.bars.lock().unwrap()[self.index]);
    }
}

impl Reporter for Recorder {
    fn bar(&self, kind: Kind, position: u64, len: u64, message: String) -> Box<dyn Indicator> {
        let mut bars = self.0.lock().unwrap();
        bars.push(Seen { kind: Some(kind), len, position, message, finished: false });
        Box::new(RecordedBar { bars: Arc::clone(&self.0), index: bars.len() - 1 })
    }
}

impl Indicator for RecordedBar {
    fn set_position(&self, position: u64) {
        self.update(|s| s.position = position);
    }
    fn inc(&self, n: u64) {
        self.update(|s| s.position += n);
    }
    fn set_prefix(&self, _: String) {}
    fn set_message(&self, message: String) {
        self.update(|s| s.message = message);
    }
    fn println(&self, line: &str) {
        eprintln!("{line}");
    }
    fn finish(&self) {
        self.update(|s| s.finished = true);
    }
    fn abandon(&self) {}
}

#[test]
fn a_training_run_reports_its_steps_and_its_evaluation_to_the_installed_reporter() {
    let recorder = Recorder::default();
    assert!(replora::progress::install(recorder.clone()), "the first reporter is installed");
    assert!(!replora::progress::install(Recorder::default()), "only the first counts");

    let dir = tempfile::tempdir().unwrap();
    support::tiny_bert_model(&dir.path().join("bert"));
    support::word_dataset(&dir.path().join("data.jsonl"), 3, 10);
    let spec = ClassificationSpec {
        model: dir.path().join("bert").to_str().unwrap().into(),
        data: dir.path().join("data.jsonl").to_str().unwrap().into(),
        max_len: 16,
        train: TrainConfig { epochs: 2, batch_size: 4, ..TrainConfig::default() },
        ..ClassificationSpec::default()
    };
    let summary = run::train::<Classification>(&spec, &dir.path().join("run"), Start::New, &[burn::prelude::Device::flex()]).unwrap();

    let bars = recorder.0.lock().unwrap().clone();
    let steps: Vec<&Seen> = bars.iter().filter(|b| b.kind == Some(Kind::Steps)).collect();
    assert_eq!(steps.len(), 1, "one training bar: {bars:?}");
    let train = steps[0];
    assert!(train.len > 0 && train.position == train.len && train.finished, "the bar ran to its end: {train:?}");
    assert_eq!(train.len as usize, summary.training.expect("a training report").steps, "{train:?}");
    assert!(train.message.starts_with("loss "), "the message shows the loss: {train:?}");
    let eval = bars.iter().find(|b| b.kind == Some(Kind::Batches)).unwrap_or_else(|| panic!("no evaluation bar: {bars:?}"));
    assert!(eval.message == "evaluating" && eval.len > 0 && eval.position == eval.len && eval.finished, "{eval:?}");
}
