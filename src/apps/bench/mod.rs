//! `replora bench`: one fixed fine-tuning job timed the way `bench/peer.py` times the same job
//! in PyTorch + PEFT, so `scripts/bench` can put the two side by side.
//!
//! The jobs, on one synthetic batch (seeded token ids, no padding) with AdamW (lr 1e-4, weight
//! decay 0.01, gradient clipping 1.0), through the library's own code path (`PeftModel`, the
//! trainer's loss and optimizer):
//! - an encoder (all-MiniLM-L6-v2): mean pooling + a 4-way linear head, labels `i % 4`;
//! - a decoder (SmolLM2-135M): causal-LM loss on the last [`ANSWER_TOKENS`] tokens of each
//!   sequence, only those positions projected onto the vocabulary (as `train-lm` does).
//!
//! Each figure is measured in this one process, so peak RSS belongs to this method alone.
//! `--decode` times greedy generation instead ([`decode`]).

pub mod decode;

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::adapters::base_weight::Quantize;
use crate::adapters::{AdapterConfig, Method, PeftModel, TargetModules};
use crate::choice::Choice;
use crate::data::Batch;
use crate::error::Result;
use crate::models::bert::{Bert, Pooling};
use crate::models::encoder::Encoder;
use crate::models::{Architecture, Family};
use crate::tasks::Tuning;
use crate::tasks::choice_model::{CausalLm, LmBatch, LmSequence};
use crate::tasks::heads::{ClassifierModel, SequenceClassifier};
use crate::training::TrainConfig;
use crate::training::trainer::Objective;
use crate::training::trainer::{optimizer, peak_rss_bytes};

/// What to run.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// lora, dora, replora or full.
    #[arg(long, default_value = "lora", value_parser = ["lora", "dora", "replora", "full"])]
    pub method: String,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// Timed training steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Model directory, .gguf file or asset name (`minilm`; `smollm2` for the decoder job).
    #[arg(long, default_value = "minilm")]
    pub model: String,
    /// Skip the matmul peak measurement (it takes a few seconds).
    #[arg(long)]
    pub no_peak: bool,
    /// Time greedy decoding with the KV cache (a decoder) instead of training: `--batch`
    /// prompts of `--seq` tokens, `--new-tokens` generated, `--steps` timed rounds.
    #[arg(long)]
    pub decode: bool,
    /// Tokens generated per prompt with `--decode`.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// How the model's frozen linear weights are held: as the file stores them, widened to f32
    /// (`none`), or converted to 8- or 4-bit blocks or 16-bit floats
    #[arg(long, default_value = "stored", value_parser = crate::apps::cli::choice::<Quantize>())]
    pub quantize: Quantize,
    /// Recompute each layer in the backward pass instead of keeping its activations (as
    /// `train --checkpoint-activations`)
    #[arg(long)]
    pub checkpoint_activations: bool,
    #[command(flatten)]
    pub device: crate::apps::cli::DeviceArg,
}

/// One side's figures (the keys `bench/peer.py` writes too).
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub side: &'static str,
    pub method: String,
    pub batch: usize,
    pub seq: usize,
    pub rank: usize,
    pub threads: usize,
    pub trainable_params: usize,
    pub time_to_first_step_s: f64,
    pub step_times_s: Vec<f64>,
    pub median_step_s: f64,
    pub train_tokens_per_s: f64,
    pub infer_base_tokens_per_s: f64,
    pub infer_merged_tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    /// The most device memory the allocator held during the timed steps (a GPU's; none on the
    /// CPU, where `peak_rss_bytes` is the measure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
    pub matmul_peak_gflops: Option<f64>,
    pub model: serde_json::Value,
    pub versions: serde_json::Value,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// The synthetic batch both sides build the same way: ids uniform in `[1000, vocab)` from a
/// seeded generator, `[CLS]` first and `[SEP]` last. (The generators differ between Rust and
/// Python, so the ids do too; the work does not depend on them.)
fn synthetic_batch(batch: usize, seq: usize, vocab: usize) -> Batch {
    let mut rng = StdRng::seed_from_u64(0);
    let mut ids = Vec::with_capacity(batch * seq);
    for _ in 0..batch {
        for p in 0..seq {
            ids.push(match p {
                0 => 101,
                p if p + 1 == seq => 102,
                _ => rng.random_range(1000..vocab as i64),
            });
        }
    }
    Batch {
        input_ids: ids,
        token_type_ids: vec![0; batch * seq],
        attention_mask: vec![1.0; batch * seq],
        batch,
        seq,
        labels: (0..batch).map(|i| i % 4).collect(),
    }
}

/// The benchmark's method on `model` (alpha = 2r on the architecture's default targets, as
/// the PyTorch peer configures PEFT).
fn adapt<A: Architecture>(model: A, args: &BenchArgs) -> Result<PeftModel<A>> {
    if args.method == "full" {
        return Tuning::Full.wrap(model);
    }
    let method = args.method.parse::<Method>()?;
    let config = AdapterConfig {
        method: method.defaults(),
        r: args.rank,
        lora_alpha: 2.0 * args.rank as f64,
        target_modules: TargetModules::Names(A::default_targets(method).iter().map(|t| t.to_string()).collect()),
        ..Default::default()
    };
    Tuning::Adapter(config).wrap(model)
}

fn build(args: &BenchArgs, device: &Device) -> Result<SequenceClassifier> {
    let bert = Encoder::Bert(Bert::load_as(&crate::models::resolve(&args.model)?, "bert.", args.quantize, device)?);
    Ok(SequenceClassifier::new(adapt(bert, args)?, 4, Pooling::Mean, 0.0, 0))
}

/// The config of the BERT [`build`] loads.
fn bert_config(model: &SequenceClassifier) -> &crate::models::bert::BertConfig {
    match &model.encoder.model {
        Encoder::Bert(bert) => &bert.config,
        Encoder::ModernBert(_) => unreachable!("the encoder benchmark loads a BERT"),
    }
}

/// The best f32 matmul rate this backend reaches on a few shapes (GFLOP/s).
pub fn matmul_peak(device: &Device) -> f64 {
    let mut best: f64 = 0.0;
    for (m, k, n) in [(1024usize, 1024usize, 1024usize), (4096, 384, 1536), (4096, 1536, 384)] {
        let a = Tensor::<2>::ones([m, k], device).mul_scalar(0.5);
        let b = Tensor::<2>::ones([k, n], device).mul_scalar(0.25);
        let _ = a.clone().matmul(b.clone()).into_data();
        for _ in 0..5 {
            let started = Instant::now();
            let _ = a.clone().matmul(b.clone()).into_data();
            best = best.max(2.0 * (m * k * n) as f64 / started.elapsed().as_secs_f64() / 1e9);
        }
    }
    best
}

/// Positions per sequence that carry the decoder job's loss.
pub const ANSWER_TOKENS: usize = 32;

/// Runs the job and returns its figures.
pub fn run(args: &BenchArgs) -> Result<BenchResult> {
    let device = args.device.open()?;
    if Family::detect(&args.model) == Some(Family::Llama) {
        return run_decoder(args, &device);
    }
    run_encoder(args, &device)
}

/// What [`timed_steps`] measured: the time to the end of the first step since the process
/// started, each timed step's duration, and the most device memory held (a GPU's).
struct Steps {
    first: f64,
    times: Vec<f64>,
    peak_device_bytes: Option<u64>,
}

/// Trains `steps` optimizer steps on `gradients`, timing each; returns the trained model.
fn timed_steps<M: Module>(
    args: &BenchArgs,
    mut model: M,
    gradients: &dyn Fn(&M) -> GradientsParams,
    device: &Device,
    started: Instant,
) -> Result<(M, Steps)> {
    let cfg = TrainConfig { lr: 1e-4, weight_decay: 0.01, grad_clip: Some(1.0), ..TrainConfig::default() };
    let mut optim = optimizer(&cfg, vec![]);
    let (mut first_step, mut times, mut peak_device_bytes) = (None, vec![], None);
    for step in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let grads = gradients(&model);
        model = optim.step(cfg.lr, model, grads);
        // A GPU queues its work: the step has finished once the device has run it (flex runs
        // each op to completion before returning).
        device.sync().map_err(|e| crate::error::Error::Config(format!("a benchmark step failed on the device: {e:?}")))?;
        first_step.get_or_insert_with(|| started.elapsed().as_secs_f64());
        if step >= args.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        if let Some(usage) = device.memory_pool_usage() {
            peak_device_bytes = Some(peak_device_bytes.unwrap_or(0).max(usage.bytes_reserved));
        }
        eprintln!("replora {} step {}: {:.3} s", args.method, step + 1, t0.elapsed().as_secs_f64());
    }
    Ok((model, Steps { first: first_step.unwrap_or(f64::NAN), times, peak_device_bytes }))
}

fn median_rate(tokens: usize, repeats: usize, pass: &dyn Fn()) -> f64 {
    let mut times = vec![];
    for i in 0..=repeats {
        let started = Instant::now();
        pass();
        if i > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    tokens as f64 / median(&times)
}

fn result(args: &BenchArgs, trainable: usize, steps: Steps, infer: (f64, f64), model: serde_json::Value, device: &Device) -> BenchResult {
    let Steps { first, times, peak_device_bytes } = steps;
    let median_step = median(&times);
    BenchResult {
        side: "replora",
        method: args.method.clone(),
        batch: args.batch,
        seq: args.seq,
        rank: args.rank,
        threads: threads(),
        trainable_params: trainable,
        time_to_first_step_s: first,
        step_times_s: times,
        median_step_s: median_step,
        train_tokens_per_s: (args.batch * args.seq) as f64 / median_step,
        infer_base_tokens_per_s: infer.0,
        infer_merged_tokens_per_s: infer.1,
        peak_rss_bytes: peak_rss_bytes(),
        peak_device_bytes,
        matmul_peak_gflops: (!args.no_peak).then(|| matmul_peak(device)),
        model,
        versions: versions(args),
    }
}

/// The threads rayon runs on.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn versions(args: &BenchArgs) -> serde_json::Value {
    let backend = match args.device.device.backend {
        crate::device::Backend::Cpu => "flex (CPU)".to_string(),
        _ => args.device.device.to_string(),
    };
    serde_json::json!({"replora": env!("CARGO_PKG_VERSION"), "burn": "0.22.1", "backend": backend})
}

fn run_encoder(args: &BenchArgs, device: &Device) -> Result<BenchResult> {
    let started = Instant::now();
    let device = device.clone().autodiff();
    let model = build(args, &device)?;
    let batch = synthetic_batch(args.batch, args.seq, bert_config(&model).vocab_size);
    let trainable = model.encoder.param_report().trainable + model.head.num_params();
    let gradients = |m: &SequenceClassifier| m.loss_and_gradients(&batch, &device, 1.0, args.checkpoint_activations).1;
    let (model, steps) = timed_steps(args, model, &gradients, &device, started)?;
    let inner = device.clone().inner();
    let model = model.valid();
    let input = batch.to_input(&inner);
    let tokens = args.batch * args.seq;
    let base = SequenceClassifier { encoder: PeftModel::full_finetune(model.encoder.model.clone()), ..model.clone() };
    let infer_base = median_rate(tokens, 5, &|| drop(base.logits(&input, false).into_data()));
    let merged = if model.encoder.is_full_finetune() { model } else { SequenceClassifier { encoder: model.encoder.merge()?, ..model } };
    let infer_merged = median_rate(tokens, 5, &|| drop(merged.logits(&input, false).into_data()));
    let c = bert_config(&merged);
    let description = serde_json::json!({
        "name": args.model, "kind": "encoder", "layers": c.num_hidden_layers, "hidden": c.hidden_size,
        "intermediate": c.intermediate_size, "heads": c.num_attention_heads, "kv_heads": c.num_attention_heads, "vocab": c.vocab_size,
        "checkpoint_activations": args.checkpoint_activations, "quantize": args.quantize, "precision": args.device.precision.name(),
    });
    Ok(result(args, trainable, steps, (infer_base, infer_merged), description, &inner))
}

fn run_decoder(args: &BenchArgs, device: &Device) -> Result<BenchResult> {
    let started = Instant::now();
    let device = device.clone().autodiff();
    let llama = crate::models::decoder::Decoder::open_as(&args.model, args.quantize, &device)?.model;
    let c = llama.config.clone();
    let model = CausalLm { decoder: adapt(llama, args)? };
    let mut rng = StdRng::seed_from_u64(0);
    let answer = ANSWER_TOKENS.min(args.seq - 1);
    let sequences: Vec<LmSequence> = (0..args.batch)
        .map(|_| LmSequence {
            tokens: (0..args.seq).map(|_| rng.random_range(1000..c.vocab_size as u32)).collect(),
            answer_start: args.seq - answer,
        })
        .collect();
    let batch = LmBatch::pad(&sequences.iter().collect::<Vec<_>>(), 0);
    let trainable = model.decoder.param_report().trainable;
    let gradients = |m: &CausalLm| m.loss_and_gradients(&batch, &device, 1.0, args.checkpoint_activations).1;
    let (model, steps) = timed_steps(args, model, &gradients, &device, started)?;
    let inner = device.clone().inner();
    let model = model.valid();
    let tokens = args.batch * args.seq;
    let base = CausalLm { decoder: PeftModel::full_finetune(model.decoder.model.clone()) };
    let infer_base = median_rate(tokens, 3, &|| drop(base.target_logprobs(&batch, false, &inner).into_data()));
    let merged = if model.decoder.is_full_finetune() { model } else { CausalLm { decoder: model.decoder.merge()? } };
    let infer_merged = median_rate(tokens, 3, &|| drop(merged.target_logprobs(&batch, false, &inner).into_data()));
    let description = serde_json::json!({
        "name": args.model, "kind": "decoder", "layers": c.num_hidden_layers, "hidden": c.hidden_size,
        "intermediate": c.intermediate_size, "heads": c.num_attention_heads, "kv_heads": c.kv_heads(), "vocab": c.vocab_size,
        "answer_tokens": answer, "quantize": args.quantize, "checkpoint_activations": args.checkpoint_activations,
        "precision": args.device.precision.name(),
    });
    Ok(result(args, trainable, steps, (infer_base, infer_merged), description, &inner))
}
