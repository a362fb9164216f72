//! Causal language modelling on an adapted decoder: the loss on answer tokens only, and the
//! log-likelihood of candidate answers (multiple-choice scoring).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::llama::Llama;
use crate::adapters::PeftModel;
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
        let (b, t) = (batch.batch, batch.len);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(batch.input_ids.clone(), [b, t]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(batch.mask.clone(), [b, t]), device);
        let deltas = if training { self.decoder.training_deltas() } else { self.decoder.deltas() };
        let hidden = self.decoder.model.forward(ids, Some(mask), None, &deltas);
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

    fn examples(batch: &LmBatch) -> usize {
        batch.batch
    }

    fn update_norm(&self) -> Option<f64> {
        self.decoder.relative_update_norm()
    }
}
