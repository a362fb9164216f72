//! Text generation with a decoder: greedy or temperature / top-p sampling over a key/value cache.

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::adapters::Deltas;
use crate::error::Result;
use crate::models::llama::{KvCache, Llama};

/// How tokens are chosen.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); otherwise scores are divided by it.
    pub temperature: f64,
    /// Nucleus sampling: draw among the most likely tokens whose probabilities sum to `top_p`.
    pub top_p: f64,
    pub seed: u64,
    /// Generation stops after any of these ids (not included in the output).
    pub stop: Vec<u32>,
}

impl Sampling {
    /// Checks the temperature (>= 0) and top_p (in (0, 1]), naming the flag.
    pub fn validate(&self) -> Result<()> {
        use crate::validate::{Range, check};
        check("temperature", self.temperature, Range::NonNegative)?;
        check("top-p", self.top_p, Range::Fraction)
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] }
    }
}

/// Continues `prompt` (token ids, non-empty) and returns the new ids. `on_token` sees each id as
/// it is produced (for streaming output). The prompt is processed in one pass; each further
/// token costs one single-position pass over the cache.
pub fn generate(
    model: &Llama,
    deltas: &Deltas,
    prompt: &[u32],
    sampling: &Sampling,
    device: &Device,
    on_token: &mut dyn FnMut(u32),
) -> Vec<u32> {
    assert!(!prompt.is_empty(), "generation needs at least one prompt token");
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let embeddings = model.embed(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), device));
    generate_after(model, deltas, embeddings, sampling, device, on_token)
}

/// [`generate`] after a prompt given as input embeddings `[1, n, hidden]` (n >= 1): a
/// vision-language model's visual tokens followed by its embedded question.
pub fn generate_after(
    model: &Llama,
    deltas: &Deltas,
    prompt: Tensor<3>,
    sampling: &Sampling,
    device: &Device,
    on_token: &mut dyn FnMut(u32),
) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let mut cache = KvCache::new();
    // A prefix (prefix tuning) takes the first positions.
    let room = model.config.max_position_embeddings.saturating_sub(prompt.dims()[1] + deltas.prefix_len());
    let mut out = vec![];
    let mut input = prompt;
    while out.len() < sampling.max_new_tokens.min(room) {
        let n = input.dims()[1];
        let hidden = model.forward_embeddings(input, None, Some(&mut cache), deltas);
        let d = hidden.dims()[2];
        let last = hidden.narrow(1, n - 1, 1).reshape([1, d]);
        let scores: Vec<f32> = model.logits(last).into_data().try_into_vec_as().expect("float tensor");
        let next = choose(&scores, sampling, &mut rng);
        if sampling.stop.contains(&next) {
            break;
        }
        on_token(next);
        out.push(next);
        input = model.embed(Tensor::<2, Int>::from_data(TensorData::new(vec![next as i64], [1, 1]), device));
    }
    out
}

/// Picks the next token from raw scores.
fn choose(scores: &[f32], sampling: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || scores.iter().enumerate().fold(0, |best, (i, s)| if *s > scores[best] { i } else { best }) as u32;
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = scores.iter().map(|s| ((*s as f64 - max) / sampling.temperature).exp()).enumerate().collect();
    let total: f64 = probs.iter().map(|(_, p)| p).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, (_, p)) in probs.iter().enumerate() {
        kept += p / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    let nucleus = &probs[..cut];
    let mass: f64 = nucleus.iter().map(|(_, p)| p).sum();
    let mut draw = rng.random::<f64>() * mass;
    for (i, p) in nucleus {
        draw -= p;
        if draw <= 0.0 {
            return *i as u32;
        }
    }
    nucleus.last().map_or_else(argmax, |(i, _)| *i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f64, top_p: f64) -> Sampling {
        Sampling { temperature, top_p, ..Sampling::default() }
    }

    #[test]
    fn greedy_takes_the_best_score() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(choose(&[0.1, 3.0, -1.0, 2.9], &sampling(0.0, 1.0), &mut rng), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 2 alone holds > 90% of the mass, so top_p 0.5 can only ever draw it.
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            assert_eq!(choose(&[0.0, 1.0, 8.0, 0.5], &sampling(1.0, 0.5), &mut rng), 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two equal scores: each is drawn about half the time; a third, far lower one never.
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[choose(&[2.0, 2.0, -30.0], &sampling(1.0, 1.0), &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((counts[0] as f64 / 4000.0 - 0.5).abs() < 0.05, "{counts:?}");
    }
}
