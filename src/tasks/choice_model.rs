//! Causal language modelling on an adapted decoder: the loss on answer tokens only, and the
//! log-likelihood of candidate answers (multiple-choice scoring), exact match of generated
//! answers, and the sequences and batches they work on.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::SubtaskScore;
use super::multiple_choice::prompt;
use crate::data::bigbench::ChoiceExample;
use crate::error::Result;
use crate::generate::{Sampling, generate};
use crate::models::decoder::Decoder;

use crate::adapters::PeftModel;
use crate::models::llama::{CheckpointedPass, Llama};
use crate::models::recompute::summed_gradients;
use crate::training::Objective;

/// Token sequences padded on the right into one batch, with the positions whose next token is
/// an answer token. Position `p` predicts token `p + 1`, so the targets of a sequence whose
/// answer starts at `s` are read at positions `s - 1 .. len - 1`.
#[derive(Clone, Debug)]
pub struct LmBatch {
    pub batch: usize,
    pub len: usize,
    /// `[batch * len]`, row-major.
    pub input_ids: Vec<i64>,
    /// `[batch * len]`, 1 for real tokens.
    pub mask: Vec<f32>,
    /// Flat positions (`row * len + p`) that predict an answer token.
    pub target_rows: Vec<i64>,
    /// The answer token each of `target_rows` predicts.
    pub target_ids: Vec<i64>,
    /// The sequence each target belongs to.
    pub owner: Vec<usize>,
}

/// One training or scoring sequence: prompt tokens followed by answer tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmSequence {
    pub tokens: Vec<u32>,
    /// Index of the first answer token (at least 1: something must precede the answer).
    pub answer_start: usize,
}

impl LmBatch {
    pub fn pad(sequences: &[&LmSequence], pad_id: u32) -> Self {
        let batch = sequences.len();
        let len = sequences.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
        let mut out = LmBatch {
            batch,
            len,
            input_ids: vec![pad_id as i64; batch * len],
            mask: vec![0.0; batch * len],
            target_rows: vec![],
            target_ids: vec![],
            owner: vec![],
        };
        for (row, s) in sequences.iter().enumerate() {
            assert!(s.answer_start >= 1 && s.answer_start <= s.tokens.len(), "answer_start out of range");
            for (p, &t) in s.tokens.iter().enumerate() {
                out.input_ids[row * len + p] = t as i64;
                out.mask[row * len + p] = 1.0;
            }
            for p in s.answer_start..s.tokens.len() {
                out.target_rows.push((row * len + p - 1) as i64);
                out.target_ids.push(s.tokens[p] as i64);
                out.owner.push(row);
            }
        }
        out
    }

    pub fn tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m > 0.0).count()
    }

    /// The token ids and the mask as `[batch, len]` tensors.
    pub fn tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let shape = [self.batch, self.len];
        let ids = Tensor::from_data(TensorData::new(self.input_ids.clone(), shape), device);
        (ids, Tensor::from_data(TensorData::new(self.mask.clone(), shape), device))
    }
}

/// A decoder with adapters, trained as a causal language model.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub decoder: PeftModel<Llama>,
}

impl CausalLm {
    /// `log p(target)` of every answer token of the batch, `[targets]`. Only the rows that
    /// predict an answer go through the vocabulary projection (49k wide for SmolLM2), which
    /// keeps the logits small.
    pub fn target_logprobs(&self, batch: &LmBatch, training: bool, device: &Device) -> Tensor<1> {
        let (ids, mask) = batch.tensors(device);
        let deltas = if training { self.decoder.training_deltas() } else { self.decoder.deltas() };
        self.hidden_logprobs(self.decoder.model.forward(ids, Some(mask), None, &deltas), batch, device)
    }

    /// [`CausalLm::target_logprobs`] from the final-norm hidden states `[batch, len, hidden]`.
    fn hidden_logprobs(&self, hidden: Tensor<3>, batch: &LmBatch, device: &Device) -> Tensor<1> {
        let (b, t) = (batch.batch, batch.len);
        let d = hidden.dims()[2];
        let n = batch.target_rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(batch.target_rows.clone(), [n]), device);
        let logits = self.decoder.model.logits(hidden.reshape([b * t, d]).select(0, rows));
        let targets = Tensor::<2, Int>::from_data(TensorData::new(batch.target_ids.clone(), [n, 1]), device);
        log_softmax(logits, 1).gather(1, targets).reshape([n])
    }

    /// The summed answer log-likelihood of each sequence of the batch (no gradients needed).
    pub fn sequence_scores(&self, batch: &LmBatch, device: &Device) -> Vec<f64> {
        let values: Vec<f32> = self.target_logprobs(batch, false, device).into_data().try_into_vec_as().expect("float tensor");
        let mut sums = vec![0.0; batch.batch];
        for (v, &row) in values.iter().zip(&batch.owner) {
            sums[row] += *v as f64;
        }
        sums
    }
}

impl Objective for CausalLm {
    type Batch = LmBatch;

    /// Mean negative log-likelihood over the batch's answer tokens.
    fn loss(&self, batch: &LmBatch, device: &Device) -> Tensor<1> {
        self.target_logprobs(batch, true, device).mean().neg()
    }

    fn loss_and_gradients(
        &self,
        batch: &LmBatch,
        device: &Device,
        scale: f64,
        checkpoint_activations: bool,
    ) -> (Tensor<1>, GradientsParams) {
        if !checkpoint_activations {
            return crate::training::trainer::ordinary_pass(self, batch, device, scale);
        }
        let (ids, mask) = batch.tensors(device);
        let model = &self.decoder.model;
        let pass = CheckpointedPass {
            embed: &|| model.embed(ids.clone()),
            attention_mask: Some(mask),
            deltas: &|| self.decoder.training_deltas(),
            loss: &|hidden| self.hidden_logprobs(hidden, batch, device).mean().neg(),
            scale,
        };
        summed_gradients(self, |collect| model.checkpointed_backward(pass, collect))
    }

    const CHECKPOINTS: bool = true;

    fn examples(batch: &LmBatch) -> usize {
        batch.batch
    }

    fn update_norm(&self) -> Option<f64> {
        self.decoder.relative_update_norm()
    }
    fn lr_group(&self) -> Option<crate::adapters::LrGroup> {
        self.decoder.adapters.lr_group()
    }
    fn decay_exempt(&self) -> Vec<burn::module::ParamId> {
        [crate::training::trainer::vector_params(self), self.decoder.adapters.decay_exempt()].concat()
    }
    fn diagnostics(&self, grads: &burn::optim::GradientsParams) -> serde_json::Map<String, serde_json::Value> {
        self.decoder.diagnostics(grads)
    }
}

/// Prompt + answer tokens, the prompt cut from the left to fit `max_len` (after the model's BOS
/// token, which stays first).
fn sequence(decoder: &Decoder, example: &ChoiceExample, option: usize, eos: Option<u32>, max_len: usize) -> Result<LmSequence> {
    let mut answer = decoder.encode(&format!(" {}", example.options[option]))?;
    answer.extend(eos);
    let mut tokens = decoder.encode(&prompt(example))?;
    let bos = decoder.bos.map_or(0, |_| 1);
    let room = max_len.saturating_sub(answer.len() + bos).max(1);
    if tokens.len() > room {
        tokens.drain(..tokens.len() - room);
    }
    tokens.splice(0..0, decoder.bos);
    let answer_start = tokens.len();
    tokens.extend(answer);
    Ok(LmSequence { tokens, answer_start })
}

/// Training sequences: each question with its correct answer and the end-of-sequence token.
pub fn training_sequences(decoder: &Decoder, examples: &[ChoiceExample], max_len: usize) -> Result<Vec<LmSequence>> {
    let eos = decoder.eos_id()?;
    examples.iter().map(|e| sequence(decoder, e, e.answer, Some(eos), max_len)).collect()
}

/// Shuffled batches of similar-length sequences (less padding): a seeded shuffle, sorted by
/// length within windows of 16 batches, then the batches themselves shuffled.
pub fn length_grouped_batches(sequences: &[LmSequence], batch_size: usize, seed: u64) -> Vec<LmBatch> {
    let lengths: Vec<usize> = sequences.iter().map(|s| s.tokens.len()).collect();
    length_grouped_order(&lengths, batch_size, seed)
        .iter()
        .map(|b| LmBatch::pad(&b.iter().map(|&i| &sequences[i]).collect::<Vec<_>>(), 0))
        .collect()
}

/// The batches of [`length_grouped_batches`] as indices into `lengths` (one per sequence).
pub fn length_grouped_order(lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    for window in order.chunks_mut(batch_size * 16) {
        window.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    batches.shuffle(&mut rng);
    batches
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches(['.', '!', '?']).trim().to_lowercase()
}

/// Every (question, option) sequence to score.
pub struct ChoiceItems(Vec<(usize, usize, LmSequence)>);

pub fn choice_items(decoder: &Decoder, examples: &[ChoiceExample], max_len: usize) -> Result<ChoiceItems> {
    let mut items = vec![];
    for (i, e) in examples.iter().enumerate() {
        for o in 0..e.options.len() {
            items.push((i, o, sequence(decoder, e, o, None, max_len)?));
        }
    }
    Ok(ChoiceItems(items))
}

/// Scores every option of every question and reports per task (with exact match where
/// `exact_match` is on).
pub fn evaluate(
    model: &CausalLm,
    decoder: &Decoder,
    examples: &[ChoiceExample],
    batch_size: usize,
    max_len: usize,
    exact_match: bool,
    device: &Device,
) -> Result<Vec<SubtaskScore>> {
    let items = choice_items(decoder, examples, max_len)?;
    let generated = if exact_match { Some(exact_matches(model, decoder, examples, max_len, device)?) } else { None };
    Ok(score(model, examples, &items, batch_size, generated.as_deref(), device))
}

/// The summed log-likelihood of every (question, option) sequence, in batches sorted by length
/// to limit padding.
fn item_scores(model: &CausalLm, items: &ChoiceItems, batch_size: usize, device: &Device) -> Vec<f64> {
    let items = &items.0;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&k| items[k].2.tokens.len());
    let mut scores = vec![0.0; items.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let seqs: Vec<&LmSequence> = chunk.iter().map(|&k| &items[k].2).collect();
        let batch = LmBatch::pad(&seqs, 0);
        for (&k, s) in chunk.iter().zip(model.sequence_scores(&batch, device)) {
            scores[k] = s;
        }
    }
    scores
}

/// Per question, the log-likelihood of each option.
pub fn option_scores(model: &CausalLm, items: &ChoiceItems, batch_size: usize, device: &Device) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![];
    for (&(i, _, _), s) in items.0.iter().zip(item_scores(model, items, batch_size, device)) {
        if out.len() <= i {
            out.resize(i + 1, vec![]);
        }
        out[i].push(s);
    }
    out
}

/// Log-likelihood scoring per sub-task: accuracy, answer loss and, given the generation
/// results, exact match.
pub fn score(
    model: &CausalLm,
    examples: &[ChoiceExample],
    items: &ChoiceItems,
    batch_size: usize,
    generated: Option<&[bool]>,
    device: &Device,
) -> Vec<SubtaskScore> {
    let scores = item_scores(model, items, batch_size, device);
    let items = &items.0;
    let mut best: Vec<(f64, usize)> = vec![(f64::NEG_INFINITY, 0); examples.len()];
    let mut correct_ll = vec![(0.0, 0usize); examples.len()];
    for ((i, o, seq), s) in items.iter().zip(&scores) {
        if *s > best[*i].0 {
            best[*i] = (*s, *o);
        }
        if *o == examples[*i].answer {
            correct_ll[*i] = (*s, seq.tokens.len() - seq.answer_start);
        }
    }
    let mut tasks: Vec<String> = examples.iter().map(|e| e.task.clone()).collect();
    tasks.sort();
    tasks.dedup();
    tasks
        .into_iter()
        .map(|task| {
            let idx: Vec<usize> = (0..examples.len()).filter(|&i| examples[i].task == task).collect();
            let n = idx.len() as f64;
            let (ll, tokens) = idx.iter().fold((0.0, 0), |(l, t), &i| (l + correct_ll[i].0, t + correct_ll[i].1));
            SubtaskScore {
                examples: idx.len(),
                accuracy: idx.iter().filter(|&&i| best[i].1 == examples[i].answer).count() as f64 / n,
                answer_loss: -ll / tokens.max(1) as f64,
                exact_match: generated.map(|g| idx.iter().filter(|&&i| g[i]).count() as f64 / n),
                task,
            }
        })
        .collect()
}

/// Whether the greedy continuation of each prompt is the correct option.
fn exact_matches(model: &CausalLm, decoder: &Decoder, examples: &[ChoiceExample], max_len: usize, device: &Device) -> Result<Vec<bool>> {
    let deltas = model.decoder.deltas();
    let newline = decoder.encode("\n")?;
    let mut stop = vec![decoder.eos_id()?];
    stop.extend(newline.first());
    examples
        .iter()
        .map(|e| {
            let seq = sequence(decoder, e, e.answer, None, max_len)?;
            let longest = e.options.iter().map(|o| decoder.encode(&format!(" {o}")).map(|t| t.len())).collect::<Result<Vec<_>>>()?;
            let sampling =
                Sampling { max_new_tokens: longest.into_iter().max().unwrap_or(1) + 2, stop: stop.clone(), ..Sampling::default() };
            let out = generate(&model.decoder.model, &deltas, &seq.tokens[..seq.answer_start], &sampling, device, &mut |_| {});
            Ok(normalize(&decoder.decode(&out)?) == normalize(&e.options[e.answer]))
        })
        .collect()
}
