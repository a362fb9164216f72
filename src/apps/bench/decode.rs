//! `replora bench --decode`: greedy decoding with the KV cache, timed the way
//! `bench/decode_peer.py` times transformers' `generate` on the same model.
//!
//! A batch of `batch` prompts of `seq` random token ids (no padding) is processed in one pass
//! (prefill), then `new_tokens` tokens are generated one position at a time, each the argmax of
//! the last position's logits. Time to first token is prefill + the first token's choice;
//! decoding speed counts the tokens after the first.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{BenchArgs, median};
use crate::adapters::Deltas;
use crate::adapters::base_weight::Quantize;
use crate::error::{Error, Result};
use crate::models::llama::{KvCache, Llama};
use crate::training::trainer::peak_rss_bytes;

/// One side's decoding figures (the keys `bench/decode_peer.py` writes too).
#[derive(Clone, Debug, Serialize)]
pub struct DecodeResult {
    pub side: &'static str,
    pub job: &'static str,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub threads: usize,
    pub rounds: usize,
    pub time_to_first_token_s: f64,
    pub prompt_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    /// How the frozen weights were held (`--quantize`), and the bytes of them each token reads.
    pub quantize: Quantize,
    pub weight_bytes: usize,
    pub model: serde_json::Value,
    pub versions: serde_json::Value,
}

/// Greedy continuation of `prompts` (`[batch, t]`): (time to first token, total time).
fn generate(model: &Llama, prompts: &[i64], batch: usize, new_tokens: usize, device: &Device) -> (f64, f64) {
    let started = Instant::now();
    let mut cache = KvCache::new();
    let deltas = Deltas::none();
    let mut ids = Tensor::<2, Int>::from_data(TensorData::new(prompts.to_vec(), [batch, prompts.len() / batch]), device);
    let mut first = None;
    for _ in 0..new_tokens {
        let t = ids.dims()[1];
        let hidden = model.forward(ids, None, Some(&mut cache), &deltas);
        let d = hidden.dims()[2];
        let last = hidden.narrow(1, t - 1, 1).reshape([batch, d]);
        let next: Vec<i64> = model.logits(last).argmax(1).into_data().iter::<i64>().collect();
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        ids = Tensor::from_data(TensorData::new(next, [batch, 1]), device);
    }
    (first.unwrap_or(0.0), started.elapsed().as_secs_f64())
}

pub fn run(args: &BenchArgs) -> Result<DecodeResult> {
    if args.new_tokens < 2 {
        return Err(Error::Config("--new-tokens must be at least 2 (the first token and one decoded after it)".into()));
    }
    let device = args.device.open()?;
    let model = crate::models::decoder::Decoder::open_as(&args.model, args.quantize, &device)?.model;
    let c = model.config.clone();
    if args.seq + args.new_tokens > c.max_position_embeddings {
        return Err(Error::Config(format!(
            "--seq {} + --new-tokens {} exceed the model's {} positions",
            args.seq, args.new_tokens, c.max_position_embeddings
        )));
    }
    let mut rng = StdRng::seed_from_u64(0);
    let prompts: Vec<i64> = (0..args.batch * args.seq).map(|_| rng.random_range(1000..c.vocab_size as i64)).collect();
    generate(&model, &prompts, args.batch, 2, &device); // warm-up
    let (mut ttft, mut decode) = (vec![], vec![]);
    for round in 0..args.steps {
        let (first, total) = generate(&model, &prompts, args.batch, args.new_tokens, &device);
        eprintln!("replora decode round {}: first token {first:.3} s, total {total:.3} s", round + 1);
        ttft.push(first);
        decode.push((args.batch * (args.new_tokens - 1)) as f64 / (total - first));
    }
    let ttft = median(&ttft);
    Ok(DecodeResult {
        side: "replora",
        job: "decode",
        batch: args.batch,
        prompt_tokens: args.seq,
        new_tokens: args.new_tokens,
        threads: super::threads(),
        rounds: args.steps,
        time_to_first_token_s: ttft,
        prompt_tokens_per_s: (args.batch * args.seq) as f64 / ttft,
        decode_tokens_per_s: median(&decode),
        peak_rss_bytes: peak_rss_bytes(),
        quantize: args.quantize,
        weight_bytes: model.decode_weight_bytes(),
        model: serde_json::json!({"name": args.model, "layers": c.num_hidden_layers, "hidden": c.hidden_size, "vocab": c.vocab_size}),
        versions: super::versions(args),
    })
}
