//! The run lifecycle, the same for every [`Task`]: train (or resume) into a run directory,
//! evaluate, predict, export the adapter in PEFT's layout, merge, and compare methods.
//!
//! A run directory holds `run.json` (the spec), `adapter/` (native format) or, for full
//! fine-tuning, the tuned weights, the task's extra files (a head, labels), `metrics.jsonl`,
//! `checkpoint/`, `best/`, `run.lock` and, once finished, `summary.json` ([`crate::layout`]).
//!
//! Every function that computes takes the burn device from its caller (`--device`,
//! [`crate::device::DeviceSpec::open`]); nothing written depends on it, so a run trained on one
//! device is resumed, evaluated or merged on another.

pub mod compare;
pub mod dir;
pub mod failure;
pub mod listing;
pub mod lock;
pub mod output;
pub mod results;
pub mod run_file;
pub mod sources;

use std::path::Path;

use burn::prelude::*;

pub use dir::Start;
pub use results::{RunSummary, table};

use crate::adapters::count::{ParamReport, ppt};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::formats::native;
use crate::layout;
use crate::models::Architecture;
use crate::tasks::{Task, TaskKind, TaskSpec, TestScores, Tuning, check_best_metric};
use crate::training;
use crate::training::event_log::{self, EventLog};
use sources::Role;

/// Trains a run on `devices` (the first holds the model; with several, each computes a share of
/// every step's micro-batches: [`training::data_parallel`]) into `out`, or resumes the one
/// there from a checkpoint written on any device, and writes its artefacts, holding the
/// directory's lock throughout. Everything (settings, devices, model, data) is checked before
/// the first file is written.
pub fn train<T: Task>(spec: &T::Spec, out: &Path, start: Start, devices: &[Device]) -> Result<RunSummary> {
    training::reset_peak_rss();
    output::check("--out", out, output::Output::Run)?;
    let _lock = lock::RunLock::acquire(out)?;
    let mut given = spec.clone();
    sources::absolutize(&mut given);
    let (spec, start) = match dir::begin(out, &given, &T::Spec::default(), start, T::KIND)? {
        dir::Begin::Train { spec, start } => (spec, start),
        dir::Begin::Finished => return read_json(&out.join(layout::SUMMARY_FILE)),
    };
    spec.validate()?;
    check_best_metric::<T>(&spec)?;
    training::data_parallel::check_devices(spec.train(), devices)?;
    let stored = match start {
        Start::Resume => {
            let (_, stored) = run_file::read::<T::Spec>(out, T::KIND)?;
            sources::check(out, stored.as_deref(), &names(&spec), &[Role::Model, Role::Data])?;
            stored
        }
        _ => Some(sources::record(&spec)?),
    };
    let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let task = T::open(spec, &devices[0])?;
    let data = task.data()?;
    let model = task.build(&data)?;
    dir::clear(out, start)?;
    run_file::write(out, T::KIND, task.spec(), stored.as_deref())?;
    failure::clear(out)?;
    let summary = train_and_test(&task, &data, model, out, start, &devices).map_err(|e| failure::record(out, e))?;
    write_json(&out.join(layout::SUMMARY_FILE), &summary)?;
    Ok(summary)
}

/// Trains the model of a run whose `run.json` is written, saves it and tests it.
fn train_and_test<T: Task>(task: &T, data: &T::Data, model: T::Model, out: &Path, start: Start, devices: &[Device]) -> Result<RunSummary> {
    let params = params::<T>(&model);
    eprintln!("{}: {params}", task.spec().method_name());

    let train_batches = |epoch: usize| task.train_batches(data, epoch);
    let validate = |m: &T::Model| task.validate(data, m);
    let train = task.spec().train();
    let (model, report) = training::train(model, &train_batches, &validate, train, devices, out, start == Start::Resume)?;
    // The training time of every process the run took (a resumed run's own is a part of it).
    let seconds = report.wall_time_s.max(1e-9);
    save::<T>(task, data, &model, out)?;
    let test = task.test(data, &model)?;
    let sizes = T::sizes(data);
    let epochs = report.epochs_run as f64;
    let mut summary = summarize::<T>(task, data, test, params);
    summary.train_examples_per_s = sizes[0] as f64 * epochs / seconds;
    summary.train_tokens_per_s = T::train_tokens(data).map(|t| t as f64 * epochs / seconds);
    let scalars = event_log::end_of_run_scalars(&summary.test, summary.train_examples_per_s, summary.train_tokens_per_s);
    EventLog::append(out, train.report_to).scalars(report.steps as u64, &scalars)?;
    summary.training = Some(report);
    Ok(summary)
}

/// Trainable and total parameters: the adapter (or every weight) plus the task's head.
fn params<T: Task>(model: &T::Model) -> ParamReport
where
    T::Model: Module,
{
    let adapted = T::adapted(model);
    let report = adapted.param_report();
    let head = model.num_params().saturating_sub(report.total);
    let base_trained = if adapted.is_full_finetune() { 0 } else { T::base_params_trained(model) };
    ParamReport { trainable: report.trainable + head + base_trained, total: report.total + head }
}

/// The spec's model and data as it names them.
fn names<S: TaskSpec>(spec: &S) -> Vec<(Role, String)> {
    spec.clone().paths_mut().into_iter().map(|(role, p)| (role, p.clone())).collect()
}

/// Performance per parameter of a test accuracy (0 for a zero-shot run, which trains nothing).
fn ppt_of(accuracy: f64, trainable: usize) -> f64 {
    if trainable == 0 { 0.0 } else { ppt(100.0 * accuracy, trainable) }
}

/// A non-finite-output error with the run's trained files named: their values are the likely
/// cause (other errors pass unchanged).
pub fn blame_trained_files(run: &Path, e: Error) -> Error {
    match e {
        Error::NonFiniteOutput { what, .. } => {
            let trained = [layout::ADAPTER_DIR, layout::ENCODER_DIR, layout::BACKBONE_DIR, layout::MODEL_DIR, layout::HEAD_FILE];
            let files = trained.map(|f| run.join(f)).into_iter().filter(|f| f.exists()).collect();
            Error::NonFiniteOutput { what, files }
        }
        e => e,
    }
}

fn summarize<T: Task>(task: &T, data: &T::Data, test: TestScores, params: ParamReport) -> RunSummary {
    let spec = task.spec();
    RunSummary {
        task: T::KIND,
        method: spec.method_name(),
        model: spec.model().to_string(),
        data: spec.data_name(),
        seed: spec.train().seed,
        train_fraction: spec.train_fraction(),
        labels: T::labels(data),
        sizes: T::sizes(data),
        ppt: ppt_of(test.overall.accuracy, params.trainable),
        test: test.overall,
        per_task: test.per_task,
        training: None,
        trainable_params: params.trainable,
        total_params: params.total,
        trainable_percent: 100.0 * params.trainable as f64 / params.total.max(1) as f64,
        train_examples_per_s: 0.0,
        train_tokens_per_s: None,
        peak_rss_mib: results::peak_rss_mib(),
        precision: match crate::precision::current() {
            crate::precision::Precision::F32 => None,
            other => Some(crate::choice::Choice::name(other).to_string()),
        },
    }
}

/// Writes the trained parts: the adapter (native format) or every tuned weight, and the task's
/// own files.
fn save<T: Task>(task: &T, data: &T::Data, model: &T::Model, out: &Path) -> Result<()> {
    let adapted = T::adapted(model);
    match task.spec().tuning() {
        Tuning::Full => adapted.model.save(&out.join(T::FULL_MODEL_DIR))?,
        Tuning::Adapter(_) => native::save(&adapted.adapters, &out.join(layout::ADAPTER_DIR))?,
        Tuning::Probe => {}
    }
    task.save_extra(data, model, out)
}

/// The task kind of a finished run directory, or why it cannot be used.
pub fn kind_of(run: &Path) -> Result<TaskKind> {
    dir::check_finished(run)?;
    run_file::kind(run)
}

/// A finished run: its task (spec, pre-trained model, tokenizer) and its trained model. The
/// model must be the one it trained on, and so must the data where `roles` include it.
pub fn open<T: Task>(run: &Path, device: &Device, roles: &[Role]) -> Result<(T, T::Model)> {
    dir::check_finished(run)?;
    let (spec, stored): (T::Spec, _) = run_file::read(run, T::KIND)?;
    spec.validate()?;
    sources::check(run, stored.as_deref(), &names(&spec), roles)?;
    let task = T::open(spec, device)?;
    let model = task.restore(run, device)?;
    Ok((task, model))
}

/// Re-scores a finished run on its test split, or on `data` (a labelled file or sub-tasks).
pub fn evaluate<T: Task>(run: &Path, data: Option<&str>, device: &Device) -> Result<RunSummary> {
    // Without other data the run re-reads its own, which must be what it trained on.
    let roles: &[Role] = if data.is_some() { &[Role::Model] } else { &[Role::Model, Role::Data] };
    let (task, model) = open::<T>(run, device, roles)?;
    let source = data;
    let data = match source {
        Some(source) => task.test_data(source)?,
        None => task.data()?,
    };
    let test = task.test(&data, &model)?;
    if !test.overall.loss.is_finite() {
        let what = format!("the run's outputs on {}", source.map_or("its test split".into(), |s| s.to_string()));
        return Err(blame_trained_files(run, Error::NonFiniteOutput { what, files: vec![] }));
    }
    // A run finished by replora 0.1 has a summary of another shape: report without its training.
    let mut summary: RunSummary = match read_json(&run.join(layout::SUMMARY_FILE)) {
        Ok(summary) => summary,
        Err(_) => summarize::<T>(&task, &data, test.clone(), params::<T>(&model)),
    };
    if let Some(source) = source {
        summary.data = source.to_string();
    }
    summary.sizes[2] = T::sizes(&data)[2];
    // Every number of the row comes from this evaluation (PPT too, not the training-time test).
    summary.ppt = ppt_of(test.overall.accuracy, summary.trainable_params);
    summary.test = test.overall;
    summary.per_task = test.per_task;
    Ok(summary)
}

/// The pre-trained model zero-shot on the spec's test split (tasks that need no trained head).
pub fn evaluate_base<T: Task>(spec: &T::Spec, device: &Device) -> Result<RunSummary> {
    training::reset_peak_rss();
    spec.validate()?;
    let task = T::open(spec.clone(), device)?;
    let model = task.zero_shot().ok_or_else(|| {
        Error::Config(format!("a {} model needs a trained head: zero-shot evaluation is for multiple-choice runs", T::KIND))
    })?;
    let data = task.data()?;
    let test = task.test(&data, &model)?;
    let total = params::<T>(&model).total;
    let mut summary = summarize::<T>(&task, &data, test, ParamReport { trainable: 0, total });
    summary.method = "base".into();
    Ok(summary)
}

/// Writes a finished run's adapter in PEFT's layout into `out`; returns how Python loads it.
pub fn export<T: Task>(run: &Path, out: &Path, device: &Device) -> Result<String> {
    let (task, model) = open::<T>(run, device, &[Role::Model])?;
    match task.spec().tuning() {
        Tuning::Full => return Err(Error::State("a full fine-tuning run has no adapter to export; use `replora merge`".into())),
        Tuning::Probe => {
            return Err(Error::State("a linear probe has no adapter to export; `replora merge` writes the model with its head".into()));
        }
        Tuning::Adapter(_) => {}
    }
    task.export_peft(&model, out)
}

/// Writes a finished run's model with its adapter folded in as a plain Hugging Face directory.
pub fn merge<T: Task>(run: &Path, out: &Path, device: &Device) -> Result<String> {
    let (task, model) = open::<T>(run, device, &[Role::Model])?;
    task.merge(model, out)
}

/// Answers for raw inputs with a finished run (see [`Task::predict`]).
pub fn predict<T: Task>(run: &Path, inputs: &[serde_json::Value], device: &Device) -> Result<Vec<serde_json::Value>> {
    let (task, model) = open::<T>(run, device, &[Role::Model])?;
    task.predict(&model, inputs).map_err(|e| blame_trained_files(run, e))
}
