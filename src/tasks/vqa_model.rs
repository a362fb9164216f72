//! The vision-language model of visual question answering: the frozen ViT's visual tokens
//! (cached per image, [`ImageFeatures`]) through a trainable [`Projector`], prepended to the
//! question's token embeddings in an adapted decoder, trained as causal language modelling on
//! the answer tokens; answers scored by likelihood among a fixed answer set, or generated.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::choice_model::{LmBatch, LmSequence};
use crate::adapters::PeftModel;
use crate::error::Result;
use crate::models::decoder::Decoder;
use crate::models::llama::{CheckpointedPass, Llama};
use crate::models::recompute::summed_gradients;
use crate::models::vision_language::{ImageFeatures, Projector};
use crate::training::Objective;

/// The prompt of a question; the answer follows it as ` {answer}`.
pub fn prompt(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

/// One question as token ids (prompt, then the answer if any) about image `image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VqaItem {
    pub image: usize,
    pub sequence: LmSequence,
}

/// Prompt tokens of `question`, cut from the left to leave `room` tokens (at least one).
pub fn prompt_tokens(decoder: &Decoder, question: &str, room: usize) -> Result<Vec<u32>> {
    let mut tokens = decoder.encode(&prompt(question))?;
    if tokens.len() > room.max(1) {
        tokens.drain(..tokens.len() - room.max(1));
    }
    Ok(tokens)
}

/// `prompt` followed by `answer`, scored from the answer's first token.
pub fn with_answer(prompt: &[u32], answer: &[u32]) -> LmSequence {
    LmSequence { tokens: [prompt, answer].concat(), answer_start: prompt.len() }
}

/// Questions of one batch: their images' visual tokens and their padded text.
pub struct VqaBatch {
    /// `[batch, tokens, width]` visual tokens, row-major.
    pub visual: Vec<f32>,
    pub visual_tokens: usize,
    pub visual_width: usize,
    pub text: LmBatch,
}

impl VqaBatch {
    pub fn new(features: &ImageFeatures, items: &[&VqaItem]) -> Self {
        let visual = items.iter().flat_map(|i| features.image(i.image).iter().copied()).collect();
        let sequences: Vec<&LmSequence> = items.iter().map(|i| &i.sequence).collect();
        Self { visual, visual_tokens: features.tokens, visual_width: features.width, text: LmBatch::pad(&sequences, 0) }
    }

    /// Positions in the flattened `[batch * (visual + len)]` output of the rows that predict
    /// each target token.
    fn target_rows(&self) -> Vec<i64> {
        let (v, len) = (self.visual_tokens as i64, self.text.len as i64);
        self.text.target_rows.iter().map(|&r| (r / len) * (v + len) + v + r % len).collect()
    }

    /// Positions of each sequence's last token (the one that predicts what follows it).
    fn last_rows(&self) -> Vec<i64> {
        let (v, len) = (self.visual_tokens, self.text.len);
        (0..self.text.batch)
            .map(|b| {
                let real = self.text.mask[b * len..(b + 1) * len].iter().filter(|m| **m > 0.0).count();
                (b * (v + len) + v + real.max(1) - 1) as i64
            })
            .collect()
    }
}

/// An adapted decoder reading projected visual tokens before the question.
#[derive(Module, Debug)]
pub struct VqaModel {
    pub decoder: PeftModel<Llama>,
    pub projector: Projector,
}

impl VqaModel {
    /// The batch on `device`: its visual tokens `[batch, visual, width]`, its text's token ids
    /// `[batch, len]`, and the attention mask over both `[batch, visual + len]`.
    fn tensors(batch: &VqaBatch, device: &Device) -> (Tensor<3>, Tensor<2, Int>, Tensor<2>) {
        let (b, t, v) = (batch.text.batch, batch.text.len, batch.visual_tokens);
        let visual = Tensor::<3>::from_data(TensorData::new(batch.visual.clone(), [b, v, batch.visual_width]), device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(batch.text.input_ids.clone(), [b, t]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(batch.text.mask.clone(), [b, t]), device);
        (visual, ids, Tensor::cat(vec![Tensor::ones([b, v], device), mask], 1))
    }

    /// The decoder's input: the projected visual tokens, then the text's token embeddings.
    fn embed(&self, visual: Tensor<3>, ids: Tensor<2, Int>) -> Tensor<3> {
        Tensor::cat(vec![self.projector.forward(visual), self.decoder.model.embed(ids)], 1)
    }

    /// The final hidden states `[batch * (visual + len), hidden]` of a batch.
    fn hidden(&self, batch: &VqaBatch, training: bool, device: &Device) -> Tensor<2> {
        let (visual, ids, mask) = Self::tensors(batch, device);
        let deltas = if training { self.decoder.training_deltas() } else { self.decoder.deltas() };
        let hidden = self.decoder.model.forward_embeddings(self.embed(visual, ids), Some(mask), None, &deltas);
        let [b, vt, d] = hidden.dims();
        hidden.reshape([b * vt, d])
    }

    /// `log p(target)` of every answer token of the batch, `[targets]`.
    pub fn target_logprobs(&self, batch: &VqaBatch, training: bool, device: &Device) -> Tensor<1> {
        self.hidden_logprobs(self.hidden(batch, training, device), batch, device)
    }

    /// [`VqaModel::target_logprobs`] from the final hidden states `[batch * (visual + len), hidden]`.
    fn hidden_logprobs(&self, hidden: Tensor<2>, batch: &VqaBatch, device: &Device) -> Tensor<1> {
        let rows = batch.target_rows();
        let n = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device);
        let logits = self.decoder.model.logits(hidden.select(0, rows));
        let targets = Tensor::<2, Int>::from_data(TensorData::new(batch.text.target_ids.clone(), [n, 1]), device);
        log_softmax(logits, 1).gather(1, targets).reshape([n])
    }

    /// The summed answer log-likelihood of each sequence of the batch.
    pub fn sequence_scores(&self, batch: &VqaBatch, device: &Device) -> Vec<f64> {
        let values: Vec<f32> = self.target_logprobs(batch, false, device).into_data().try_into_vec_as().expect("float tensor");
        let mut sums = vec![0.0; batch.text.batch];
        for (v, &row) in values.iter().zip(&batch.text.owner) {
            sums[row] += *v as f64;
        }
        sums
    }

    /// The next-token log-probabilities after each sequence of the batch, `[batch, vocab]`.
    pub fn next_token_logprobs(&self, batch: &VqaBatch, device: &Device) -> Vec<Vec<f32>> {
        let rows = batch.last_rows();
        let n = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device);
        let logprobs = log_softmax(self.decoder.model.logits(self.hidden(batch, false, device).select(0, rows)), 1);
        let vocab = logprobs.dims()[1];
        let values: Vec<f32> = logprobs.into_data().try_into_vec_as().expect("float tensor");
        values.chunks(vocab).map(<[f32]>::to_vec).collect()
    }

    /// Greedy answers to `questions` (prompt tokens about an image), at most `max_tokens` each,
    /// stopping at any of `stop` (not included). Batches of `batch_size` questions step together,
    /// each step a pass over the prompts and the tokens chosen so far (answers are short, so
    /// this costs less than a key/value cache per question would).
    pub fn generate(
        &self,
        features: &ImageFeatures,
        questions: &[(usize, Vec<u32>)],
        max_tokens: usize,
        stop: &[u32],
        batch_size: usize,
        device: &Device,
    ) -> Vec<Vec<u32>> {
        let mut answers: Vec<Vec<u32>> = vec![vec![]; questions.len()];
        let room = self.decoder.model.config.max_position_embeddings.saturating_sub(features.tokens + self.decoder.deltas().prefix_len());
        for (chunk, start) in questions.chunks(batch_size.max(1)).zip((0..).step_by(batch_size.max(1))) {
            let mut open: Vec<usize> = (0..chunk.len()).collect();
            for _ in 0..max_tokens {
                open.retain(|&i| chunk[i].1.len() + answers[start + i].len() < room);
                if open.is_empty() {
                    break;
                }
                let items: Vec<VqaItem> = open
                    .iter()
                    .map(|&i| VqaItem { image: chunk[i].0, sequence: with_answer(&[&chunk[i].1[..], &answers[start + i]].concat(), &[]) })
                    .collect();
                let rows = self.next_token_logprobs(&VqaBatch::new(features, &items.iter().collect::<Vec<_>>()), device);
                let mut still_open = vec![];
                for (&i, row) in open.iter().zip(rows) {
                    let next = (0..row.len()).fold(0, |best, t| if row[t] > row[best] { t } else { best }) as u32;
                    if !stop.contains(&next) {
                        answers[start + i].push(next);
                        still_open.push(i);
                    }
                }
                open = still_open;
            }
        }
        answers
    }
}

impl Objective for VqaModel {
    type Batch = VqaBatch;
    const EXAMPLE_UNIT: &'static str = "q";

    /// Mean negative log-likelihood over the batch's answer tokens.
    fn loss(&self, batch: &VqaBatch, device: &Device) -> Tensor<1> {
        self.target_logprobs(batch, true, device).mean().neg()
    }
    fn loss_and_gradients(
        &self,
        batch: &VqaBatch,
        device: &Device,
        scale: f64,
        checkpoint_activations: bool,
    ) -> (Tensor<1>, GradientsParams) {
        if !checkpoint_activations {
            return crate::training::trainer::ordinary_pass(self, batch, device, scale);
        }
        let (visual, ids, mask) = Self::tensors(batch, device);
        let pass = CheckpointedPass {
            // The projector trains: its graph is the embeddings' one, at the end.
            embed: &|| self.embed(visual.clone(), ids.clone()),
            attention_mask: Some(mask),
            deltas: &|| self.decoder.training_deltas(),
            loss: &|hidden| {
                let [b, vt, d] = hidden.dims();
                self.hidden_logprobs(hidden.reshape([b * vt, d]), batch, device).mean().neg()
            },
            scale,
        };
        summed_gradients(self, |collect| self.decoder.model.checkpointed_backward(pass, collect))
    }
    const CHECKPOINTS: bool = true;
    fn examples(batch: &VqaBatch) -> usize {
        batch.text.batch
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
    fn diagnostics(&self, grads: &GradientsParams) -> serde_json::Map<String, serde_json::Value> {
        self.decoder.diagnostics(grads)
    }
}

/// Per question (its image and prompt tokens), the log-likelihood of each answer (its tokens).
/// The one-token answers are all read off one next-token distribution per question (a pass per
/// batch of prompts); each longer answer is scored as its own sequence.
pub fn answer_scores(
    model: &VqaModel,
    features: &ImageFeatures,
    questions: &[(usize, Vec<u32>)],
    answers: &[Vec<u32>],
    batch_size: usize,
    device: &Device,
) -> Vec<Vec<f64>> {
    let (single, longer): (Vec<usize>, Vec<usize>) = (0..answers.len()).partition(|&a| answers[a].len() == 1);
    let mut out = vec![vec![0.0; answers.len()]; questions.len()];
    let pick = |group: &[usize]| group.iter().map(|&a| answers[a].clone()).collect::<Vec<_>>();
    let mut scatter = |group: &[usize], scores: Vec<Vec<f64>>| {
        for (row, scores) in out.iter_mut().zip(scores) {
            group.iter().zip(scores).for_each(|(&a, s)| row[a] = s);
        }
    };
    if !single.is_empty() {
        scatter(&single, single_token_scores(model, features, questions, &pick(&single), batch_size, device));
    }
    if !longer.is_empty() {
        scatter(&longer, sequence_answer_scores(model, features, questions, &pick(&longer), batch_size, device));
    }
    out
}

/// [`answer_scores`] for one-token answers: one pass per batch of prompts.
pub fn single_token_scores(
    model: &VqaModel,
    features: &ImageFeatures,
    questions: &[(usize, Vec<u32>)],
    answers: &[Vec<u32>],
    batch_size: usize,
    device: &Device,
) -> Vec<Vec<f64>> {
    let items: Vec<VqaItem> = questions.iter().map(|(image, p)| VqaItem { image: *image, sequence: with_answer(p, &[]) }).collect();
    let mut out = vec![];
    for chunk in items.chunks(batch_size.max(1)) {
        let batch = VqaBatch::new(features, &chunk.iter().collect::<Vec<_>>());
        for row in model.next_token_logprobs(&batch, device) {
            out.push(answers.iter().map(|a| f64::from(row[a[0] as usize])).collect());
        }
    }
    out
}

/// [`answer_scores`] scoring every (question, answer) pair as its own sequence.
pub fn sequence_answer_scores(
    model: &VqaModel,
    features: &ImageFeatures,
    questions: &[(usize, Vec<u32>)],
    answers: &[Vec<u32>],
    batch_size: usize,
    device: &Device,
) -> Vec<Vec<f64>> {
    let items: Vec<VqaItem> = questions
        .iter()
        .flat_map(|(image, p)| answers.iter().map(move |a| VqaItem { image: *image, sequence: with_answer(p, a) }))
        .collect();
    let mut scores = vec![];
    for chunk in items.chunks(batch_size.max(1)) {
        scores.extend(model.sequence_scores(&VqaBatch::new(features, &chunk.iter().collect::<Vec<_>>()), device));
    }
    scores.chunks(answers.len().max(1)).map(<[f64]>::to_vec).collect()
}
