//! The training loop of every task: AdamW, warm-up + decay, clipping, accumulation,
//! per-epoch evaluation, best-model keeping, early stopping, resumable checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::update_clip::ClippedAdamW;
use crate::adapters::LrGroup;
use crate::weights::tensors::scalar;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, Optimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Progress, Schedule};
use super::collapse::{Collapse, CollapseDetector};
use super::config::TrainConfig;
use super::data_parallel::Replicas;
use super::divergence::Divergence;
use super::event_log::EventLog;
use super::metrics::EvalMetrics;
use super::schedule::LrSchedule;
use super::state::TrainableState;
use crate::error::{Error, Result};
use crate::layout;
use crate::precision::Precision;
use crate::progress::{Bar, Kind};

/// A model and the batches it learns from: what [`train`] needs to know about a task.
pub trait Objective: Module {
    /// Host data (token ids, pixels): read by several replicas' threads in data parallel runs.
    type Batch: Sync;
    /// The mean training loss of one batch (dropout on).
    fn loss(&self, batch: &Self::Batch, device: &Device) -> Tensor<1>;
    /// The mean training loss of one batch (detached) and the gradients of `scale` times it;
    /// with `checkpoint_activations`, recomputing activations in the backward pass where the
    /// task can ([`Objective::CHECKPOINTS`]).
    fn loss_and_gradients(
        &self,
        batch: &Self::Batch,
        device: &Device,
        scale: f64,
        checkpoint_activations: bool,
    ) -> (Tensor<1>, GradientsParams) {
        let _ = checkpoint_activations;
        ordinary_pass(self, batch, device, scale)
    }
    /// Whether [`Objective::loss_and_gradients`] can recompute activations.
    const CHECKPOINTS: bool = false;
    /// How many examples the batch holds (for the loss average and the rate shown).
    fn examples(batch: &Self::Batch) -> usize;
    /// What an example is called in the progress bar's rate (`ex/s`, `img/s`).
    const EXAMPLE_UNIT: &'static str = "ex";
    /// The adapters' relative update `||s B A|| / ||W0||` (logged as `update_norm`), if any.
    fn update_norm(&self) -> Option<f64> {
        None
    }
    /// The loss of a uniform prediction (`ln` of the class count), where the loss has one: the
    /// level the collapse guard watches the training loss return to.
    fn chance_loss(&self) -> Option<f64> {
        None
    }
    /// Fields logged with each metrics line from that step's gradients (the adapters' gradient
    /// norms and saturation, see [`crate::adapters::AdapterSet::diagnostics`]).
    fn diagnostics(&self, _grads: &GradientsParams) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Parameters that train at their own learning rate (RepLoRA's generators), if any.
    fn lr_group(&self) -> Option<LrGroup> {
        None
    }
    /// Parameters without weight decay when [`TrainConfig::exempt_from_decay`] is on: every
    /// 1-D one (biases, norms, scales, DoRA's magnitudes), plus what the adapter adds.
    fn decay_exempt(&self) -> Vec<ParamId> {
        vector_params(self)
    }
}

/// [`Objective::loss_and_gradients`] without recomputation: one forward pass, its graph
/// differentiated.
pub fn ordinary_pass<M: Objective>(model: &M, batch: &M::Batch, device: &Device, scale: f64) -> (Tensor<1>, GradientsParams) {
    let loss = model.loss(batch, device);
    let grads = GradientsParams::from_grads(loss.clone().mul_scalar(scale).backward(), model);
    (loss.detach(), grads)
}

/// One optimizer step at `lr`, with the model's [`LrGroup`] (if any) stepped at its own rate:
/// its gradients move into a second set, stepped first. AdamW keeps its state per parameter,
/// so two steps over disjoint parameters are one step with two learning rates.
pub fn step<M: Objective>(optim: &mut ModuleOptimizer, lr: f64, model: M, mut grads: GradientsParams) -> M {
    let Some(group) = model.lr_group() else { return optim.step(lr, model, grads) };
    let mut own = GradientsParams::new();
    for &id in &group.matrices {
        if let Some(g) = grads.remove::<2>(id) {
            own.register(id, g);
        }
    }
    for &id in &group.vectors {
        if let Some(g) = grads.remove::<1>(id) {
            own.register(id, g);
        }
    }
    let model = optim.step(lr * group.multiplier, model, own);
    optim.step(lr, model, grads)
}

/// What a finished (or early-stopped) run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub best_validation: EvalMetrics,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub steps: usize,
    pub wall_time_s: f64,
    pub history: Vec<EvalMetrics>,
    /// Set when the training loss went back to chance level and stayed there (see
    /// [`super::collapse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<Collapse>,
}

/// Paths a run writes under its output directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join(layout::CHECKPOINT_DIR)
    }
    pub fn best(&self) -> PathBuf {
        self.0.join(layout::BEST_DIR)
    }
    pub fn metrics_log(&self) -> PathBuf {
        self.0.join(layout::METRICS_FILE)
    }
}

/// The ids of every 1-D parameter of `module`.
pub fn vector_params<M: Module>(module: &M) -> Vec<ParamId> {
    struct Vectors(Vec<ParamId>);
    impl ModuleVisitor for Vectors {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 1 {
                self.0.push(param.id);
            }
        }
    }
    let mut vectors = Vectors(vec![]);
    module.visit(&mut vectors);
    vectors.0
}

/// AdamW (with update clipping if the config says so) with the config's weight decay and
/// gradient clipping; the `exempt` parameters get no decay when the config says so (a second
/// group, clipped alike).
pub fn optimizer(cfg: &TrainConfig, exempt: Vec<ParamId>) -> ModuleOptimizer {
    let beta_2 = cfg.adam_beta2 as f32;
    match cfg.update_clip {
        // burn's AdamW defaults for the rest: beta_1 0.9, epsilon 1e-5.
        true => with_groups(cfg, exempt, |decay| ClippedAdamW { beta_1: 0.9, beta_2, epsilon: 1e-5, weight_decay: decay }),
        false => with_groups(cfg, exempt, |decay| AdamWConfig::new().with_weight_decay(decay).with_beta_2(beta_2).build()),
    }
}

/// `make(decay)` for every parameter, and `make(0)` for the exempt ones.
fn with_groups<O: Optimizer>(cfg: &TrainConfig, exempt: Vec<ParamId>, make: impl Fn(f32) -> O) -> ModuleOptimizer {
    let clipping = || cfg.grad_clip.map(|c| GradientClippingConfig::Norm(c).init());
    let mut optim = ModuleOptimizer::from(make(cfg.weight_decay as f32));
    if let Some(clip) = clipping() {
        optim = optim.with_grad_clipping(clip);
    }
    if cfg.exempt_from_decay && cfg.weight_decay > 0.0 && !exempt.is_empty() {
        optim = optim.with_group(ParamGroup::from_ids(exempt), make(0.0), clipping());
    }
    optim
}

fn log_line(path: &Path, value: serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(path, e))
}

/// Drops the log lines written after the checkpoint a run resumes from (the resumed run writes
/// them again) and any line a kill cut short.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let logged_step = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok()?.get("step")?.as_u64();
    let kept: String = text.lines().filter(|l| logged_step(l).is_some_and(|s| s <= step as u64)).map(|l| format!("{l}\n")).collect();
    crate::files::write_atomic(path, kept.as_bytes())
}

/// Trains `model` (on `devices[0]`; with several devices, data parallel: see
/// [`super::data_parallel`]). `train_batches(epoch)` returns that epoch's (shuffled) batches;
/// the same epoch must always give the same batches, which makes `resume` exact. `validate`
/// scores the model after each epoch.
pub fn train<M: Objective>(
    model: M,
    train_batches: &dyn Fn(usize) -> Vec<M::Batch>,
    validate: &dyn Fn(&M) -> EvalMetrics,
    cfg: &TrainConfig,
    devices: &[Device],
    out: &Path,
    resume: bool,
) -> Result<(M, TrainReport)> {
    cfg.validate()?;
    if cfg.checkpoint_activations && !M::CHECKPOINTS {
        return Err(Error::Config("checkpoint_activations (--checkpoint-activations): this task does not recompute activations".into()));
    }
    super::data_parallel::check_devices(cfg, devices)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let batches_per_epoch = train_batches(0).len();
    if batches_per_epoch == 0 {
        return Err(Error::Config("the training split is empty".into()));
    }
    let (mut session, mut model) = Session::start(model, cfg, devices, RunDir(out.to_path_buf()), batches_per_epoch, resume)?;
    while session.progress.epoch < cfg.epochs && !session.stop {
        model = session.train_epoch(model, &train_batches(session.progress.epoch))?;
        if session.end_epoch(&model, validate)? {
            break;
        }
    }
    session.finish(model)
}

/// The state of one training run between its steps.
struct Session<'a, M> {
    cfg: &'a TrainConfig,
    replicas: Replicas<M>,
    run: RunDir,
    steps: Schedule,
    schedule: LrSchedule,
    optim: ModuleOptimizer,
    progress: Progress,
    guard: Option<CollapseDetector>,
    /// Set when the collapse guard ends the run (`--stop-on-collapse`).
    stop: bool,
    started: Instant,
    bar: Bar,
    /// The TensorBoard event file every metrics line also goes to (`--report-to`).
    events: EventLog,
}

impl<'a, M: Objective> Session<'a, M> {
    /// A new run, or the one in `run`'s checkpoint when resuming (model, optimizer, progress).
    fn start(
        mut model: M,
        cfg: &'a TrainConfig,
        devices: &[Device],
        run: RunDir,
        batches_per_epoch: usize,
        resume: bool,
    ) -> Result<(Self, M)> {
        let steps = Schedule { epochs: cfg.epochs, batches_per_epoch, grad_accum: cfg.grad_accum };
        let total_steps = steps.steps_per_epoch() * cfg.epochs;
        let warmup_steps = (cfg.warmup_ratio * total_steps as f64).round() as usize;
        let schedule = LrSchedule { peak: cfg.lr, warmup_steps, total_steps, decay: cfg.decay };
        let resumed = match (resume, checkpoint::existing(&run.checkpoint())) {
            (true, Some(dir)) => {
                model = checkpoint::restore(&dir, model)?;
                Some(dir)
            }
            (true, None) => return Err(Error::State(format!("--resume: no checkpoint in {}", run.checkpoint().display()))),
            (false, _) => {
                let _ = std::fs::remove_file(run.metrics_log());
                None
            }
        };
        let mut events = None;
        // Built after the restore: the exempt group names the restored model's parameter ids,
        // which the saved optimizer state is keyed by.
        let mut optim = optimizer(cfg, model.decay_exempt());
        let mut progress = Progress::default();
        if let Some(dir) = resumed {
            optim = checkpoint::read_optimizer(&dir, optim)?;
            progress = checkpoint::read_progress(&dir, &steps)?;
            truncate_log(&run.metrics_log(), progress.step)?;
            events = Some(EventLog::start(&run.0, cfg.report_to, Some(progress.step))?);
            eprintln!("resuming from {} (epoch {}, step {})", dir.display(), progress.epoch + 1, progress.step);
        }
        let guard = model.chance_loss().map(|chance| CollapseDetector::replay(chance, &run.metrics_log()));
        let events = match events {
            Some(events) => events,
            None => EventLog::start(&run.0, cfg.report_to, None)?,
        };
        // f16 products scale the loss (a run resumed in another precision drops the state).
        progress.loss_scale = match crate::precision::current() {
            Precision::F16 => Some(progress.loss_scale.take().unwrap_or_default()),
            _ => None,
        };
        let bar = Bar::starting_at(Kind::Steps, progress.step as u64, total_steps as u64, "");
        let replicas = Replicas::new(&model, devices);
        let session =
            Session { cfg, replicas, run, steps, schedule, optim, progress, guard, stop: false, started: Instant::now(), bar, events };
        Ok((session, model))
    }

    /// Training wall time so far, this process's and that of the runs it resumed.
    fn elapsed(&self) -> f64 {
        self.progress.elapsed_s + self.started.elapsed().as_secs_f64()
    }

    /// Trains the rest of the current epoch (all of it unless resumed mid-epoch), or up to
    /// the step the collapse guard stops the run at.
    fn train_epoch(&mut self, mut model: M, batches: &[M::Batch]) -> Result<M> {
        let (cfg, epoch) = (self.cfg, self.progress.epoch);
        self.bar.set_prefix(format!("epoch {}/{}", epoch + 1, cfg.epochs));
        // A run resumed mid-epoch continues the log line in progress where the checkpoint left it.
        let start = self.progress.batch_in_epoch;
        let mut window = match start {
            0 => Window::new(0.0, 0, 0, self.progress.step),
            _ => Window::new(self.progress.window_loss, self.progress.window_examples, start, self.progress.step),
        };
        // Dropout draws from the device's generator: seeded per micro-batch, so a resumed run
        // (or one on another number of devices) draws exactly what the uninterrupted one did.
        let first_of_epoch = epoch * self.steps.batches_per_epoch;
        let forward = |model: &M, device: &Device, i: usize, scale: f64| {
            device.seed(cfg.seed.wrapping_mul(1_000_003).wrapping_add((first_of_epoch + i) as u64));
            model.loss_and_gradients(&batches[i], device, scale, cfg.checkpoint_activations)
        };
        let mut first = start;
        while first < batches.len() {
            // An optimizer step's micro-batches: grad_accum of them, fewer at the epoch's end.
            let end = ((first / cfg.grad_accum + 1) * cfg.grad_accum).min(batches.len());
            let loss_scale = self.progress.loss_scale.as_ref().map_or(1.0, |s| s.scale);
            let (losses, grads) = self.replicas.passes(&model, first..end, loss_scale / cfg.grad_accum as f64, &forward);
            for (i, loss) in (first..end).zip(losses) {
                // Before the first step each loss is read at once: not finite there means the
                // weights or the data, and no step must be taken on it.
                if self.progress.step == 0 {
                    let value = scalar(loss.clone());
                    if !value.is_finite() {
                        return Err(self.diverged(&model, value, i..=i, 0));
                    }
                }
                window.add(loss, M::examples(&batches[i]));
            }
            let i = end - 1;
            self.progress.batch_in_epoch = end;
            first = end;
            let lr = self.schedule.at(self.progress.step);
            let logged = (self.progress.step + 1).is_multiple_of(cfg.log_every);
            // An f16 step whose gradients overflowed is skipped (its scale halved).
            let (grads, finite) = match &mut self.progress.loss_scale {
                Some(scale) => scale.unscale(&model, grads),
                None => (grads, true),
            };
            let mut diagnostics = if logged { model.diagnostics(&grads) } else { Default::default() };
            if let (true, Some(scale)) = (logged, &self.progress.loss_scale) {
                diagnostics.insert("loss_scale".into(), scale.scale.into());
                diagnostics.insert("skipped_steps".into(), scale.skipped.into());
            }
            if finite {
                model = step(&mut self.optim, lr, model, grads);
                self.replicas.refresh(&model);
            }
            self.progress.step += 1;
            if self.progress.step == 1 {
                // The batches before the first step were read one by one: a non-finite sum
                // comes from those after it.
                (window.first_batch, window.steps_before) = (end, 1);
            }
            self.bar.inc(1);
            let checkpointed = cfg.checkpoint_every.is_some_and(|n| self.progress.step.is_multiple_of(n)) && end != batches.len();
            if logged || checkpointed {
                self.check_finite(&model, &mut window, i)?;
            }
            if logged {
                self.bar.set_message(format!("loss {:.4} lr {lr:.2e} {:.1} {}/s", window.mean(), window.rate(), M::EXAMPLE_UNIT));
                self.log_step(&model, lr, &mut window, diagnostics)?;
                window = Window::new(0.0, 0, end, self.progress.step);
            }
            if checkpointed {
                let p = Progress {
                    elapsed_s: self.elapsed(),
                    window_loss: window.sum(),
                    window_examples: window.examples,
                    ..self.progress.clone()
                };
                checkpoint::write_dir(&self.run.checkpoint(), &TrainableState::of(&model), Some(&self.optim), Some(&p))?;
            }
            if self.stop {
                break;
            }
        }
        // The batches after the epoch's last metrics line are checked before the model is
        // evaluated and checkpointed.
        self.check_finite(&model, &mut window, self.progress.batch_in_epoch.saturating_sub(1))?;
        Ok(model)
    }

    /// Reads the window's loss (one host read) and fails if it is not finite, naming its
    /// batches up to `last_batch` (0-based).
    fn check_finite(&self, model: &M, window: &mut Window, last_batch: usize) -> Result<()> {
        let mean = window.mean();
        if window.examples > 0 && !mean.is_finite() {
            return Err(self.diverged(model, mean, window.first_batch..=last_batch, window.steps_before));
        }
        Ok(())
    }

    /// Appends a line to `metrics.jsonl` and its numbers to the event file.
    fn log(&self, line: serde_json::Value) -> Result<()> {
        self.events.line(&line)?;
        log_line(&self.run.metrics_log(), line)
    }

    /// Writes a metrics line for the step just taken and feeds its loss to the collapse guard.
    fn log_step(&mut self, model: &M, lr: f64, window: &mut Window, diagnostics: serde_json::Map<String, serde_json::Value>) -> Result<()> {
        let mean_loss = window.mean();
        let mut line = serde_json::json!({
            "step": self.progress.step, "epoch": self.progress.epoch + 1, "loss": mean_loss,
            "lr": lr, "examples_per_s": window.rate(), "update_norm": model.update_norm(),
        });
        line.as_object_mut().expect("an object").extend(diagnostics);
        self.log(line)?;
        if let Some(collapse) = self.guard.as_mut().and_then(|g| g.observe(self.progress.step, mean_loss)) {
            self.bar.println(&collapse.warning());
            self.stop = self.cfg.stop_on_collapse;
        }
        Ok(())
    }

    /// The error for a non-finite loss in the micro-batches `batches` (0-based) of the current
    /// epoch, after `steps_before` optimizer steps.
    fn diverged(&self, model: &M, loss: f64, batches: std::ops::RangeInclusive<usize>, steps_before: usize) -> Error {
        self.bar.abandon();
        let divergence = Divergence {
            loss,
            epoch: self.progress.epoch + 1,
            batches: batches.start() + 1..=batches.end() + 1,
            steps_taken: steps_before,
            generator_multiplier: model.lr_group().map(|g| g.multiplier),
        };
        let lr = self.schedule.at(self.progress.step.saturating_sub(1));
        Error::Training(divergence.message(self.cfg, lr, &self.run.checkpoint(), &self.steps))
    }

    /// Scores the model on validation (a run stopped on collapse is scored where it stopped, as
    /// at an epoch's end), keeps it if it is the best so far, and checkpoints. `true` when
    /// early stopping ends the run here.
    fn end_epoch(&mut self, model: &M, validate: &dyn Fn(&M) -> EvalMetrics) -> Result<bool> {
        let (cfg, epoch) = (self.cfg, self.progress.epoch);
        let metrics = validate(model);
        let line = format!("epoch {}: validation {}", epoch + 1, metrics.describe());
        self.bar.println(&line);
        self.log(serde_json::json!({"epoch": epoch + 1, "step": self.progress.step, "validation": metrics}))?;
        let s =
            metrics.score(cfg.best_metric).ok_or_else(|| Error::Config(format!("the validation metrics have no {:?}", cfg.best_metric)))?;
        if self.progress.best.is_none_or(|(best, _)| s > best) {
            self.progress.best = Some((s, epoch));
            self.progress.evals_without_improvement = 0;
            checkpoint::write_dir(&self.run.best(), &TrainableState::of(model), None, None)?;
        } else {
            self.progress.evals_without_improvement += 1;
        }
        self.progress.history.push(metrics);
        self.progress.epoch += 1;
        self.progress.batch_in_epoch = 0;
        let p = Progress { elapsed_s: self.elapsed(), window_loss: 0.0, window_examples: 0, ..self.progress.clone() };
        checkpoint::write_dir(&self.run.checkpoint(), &TrainableState::of(model), Some(&self.optim), Some(&p))?;
        if self.stop {
            self.bar.println(&format!("stopping at step {}: --stop-on-collapse", self.progress.step));
        } else if cfg.patience.is_some_and(|n| self.progress.evals_without_improvement >= n) {
            self.bar.println(&format!("early stopping: no improvement for {} epochs", self.progress.evals_without_improvement));
            return Ok(true);
        }
        Ok(false)
    }

    /// The best epoch's model and the run's report.
    fn finish(self, model: M) -> Result<(M, TrainReport)> {
        self.bar.finish();
        let elapsed = self.elapsed();
        let progress = self.progress;
        let (_, best_epoch) = progress.best.ok_or_else(|| Error::State("training ended before any epoch was evaluated".into()))?;
        let model = checkpoint::restore(&self.run.best(), model)?;
        let report = TrainReport {
            best_validation: progress.history[best_epoch].clone(),
            best_epoch: best_epoch + 1,
            epochs_run: progress.history.len(),
            steps: progress.step,
            wall_time_s: elapsed,
            history: progress.history,
            collapse: self.guard.and_then(|g| g.found().cloned()).map(|c| Collapse { stopped: self.stop, ..c }),
        };
        Ok((model, report))
    }
}

/// The training loss and examples since the last metrics line. The loss stays on the device and
/// is read at metrics lines, checkpoints and epoch ends, so a GPU is not stopped every batch.
struct Window {
    /// The examples-weighted loss sum read so far (a resumed window starts from its checkpoint's).
    read: f64,
    /// The sum's part not yet read from the device.
    pending: Option<Tensor<1>>,
    examples: usize,
    /// The micro-batch (of the epoch, 0-based) the window starts at, and the optimizer steps
    /// taken before it: where a non-finite sum points.
    first_batch: usize,
    steps_before: usize,
    started: Instant,
}

impl Window {
    fn new(loss_sum: f64, examples: usize, first_batch: usize, steps_before: usize) -> Self {
        Window { read: loss_sum, pending: None, examples, first_batch, steps_before, started: Instant::now() }
    }

    fn add(&mut self, batch_loss: Tensor<1>, examples: usize) {
        let weighted = batch_loss.detach().mul_scalar(examples as f64);
        self.pending = Some(match self.pending.take() {
            Some(sum) => sum + weighted,
            None => weighted,
        });
        self.examples += examples;
    }

    /// The examples-weighted loss sum (one read from the device if batches were added since).
    fn sum(&mut self) -> f64 {
        if let Some(pending) = self.pending.take() {
            self.read += scalar(pending);
        }
        self.read
    }

    fn mean(&mut self) -> f64 {
        self.sum() / self.examples as f64
    }

    /// Examples per second since the window opened.
    fn rate(&self) -> f64 {
        self.examples as f64 / self.started.elapsed().as_secs_f64()
    }
}

/// Starts a new peak-memory window (Linux: `VmHWM` drops to the current RSS), so that each
/// run of a `compare` or `sweep` reports its own peak rather than the process's high-water mark
/// so far. The allocator first gives back the memory earlier runs freed: glibc keeps it
/// otherwise, and a run's peak then counted the largest run before it (a sweep's f32-base and
/// Q4-base cells measured 1212 and 1192 MiB, where separate processes measure 0.72x).
pub fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`) since the start or the last
/// [`reset_peak_rss`], if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_sums_its_losses_on_the_device_and_keeps_a_resumed_part() {
        let device = Device::flex();
        let loss = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &device);
        let mut window = Window::new(1.5, 3, 4, 7);
        window.add(loss(2.0), 2);
        window.add(loss(0.5), 4);
        assert!(window.pending.is_some(), "nothing is read until asked");
        assert_eq!(window.sum(), 1.5 + 4.0 + 2.0);
        assert!(window.pending.is_none());
        assert_eq!(window.mean(), 7.5 / 9.0);
        window.add(loss(f32::NAN), 1);
        assert!(window.mean().is_nan(), "a non-finite batch shows in the window's mean");
        assert_eq!((window.first_batch, window.steps_before), (4, 7));
    }
}
