//! RepLoRA (spec section 3): per-block shared seeds mapped by small MLPs to LoRA factors.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;

use super::config::{Activation, LoraInit, RepLoraConfig, SeedInit, SeedKind};
use super::init::Init;

/// A two-layer MLP `Linear(d_seed, h) -> act -> Linear(h, d_gen)` applied to each seed row;
/// without biases when built with `bias = false` (`replora.generator_bias`), and with a
/// trainable output scale `[1]` when asked (`replora.learn_output_scale`).
#[derive(Module, Debug)]
pub struct Generator {
    pub hidden_weight: Param<Tensor<2>>,
    pub hidden_bias: Option<Param<Tensor<1>>>,
    pub out_weight: Param<Tensor<2>>,
    pub out_bias: Option<Param<Tensor<1>>>,
    pub scale: Option<Param<Tensor<1>>>,
}

/// A generator's shape and options.
pub struct GeneratorShape {
    pub d_seed: usize,
    pub hidden: usize,
    pub d_gen: usize,
    pub bias: bool,
    /// Start of a trainable output scale; `None` keeps the scale fixed.
    pub learned_scale: Option<f64>,
}

/// How a generator's output layer starts.
pub enum OutputInit {
    /// As LoRA's `A` (`g_A`).
    LoraA(LoraInit),
    /// Zero (`g_B`), so every generated `B` is 0 and the adapted model starts as the base.
    Zero,
}

impl Generator {
    pub fn init(shape: &GeneratorShape, rank: usize, out: OutputInit, init: &mut Init) -> Self {
        let &GeneratorShape { d_seed, hidden, d_gen, bias, learned_scale } = shape;
        let hidden_weight = init.kaiming([d_seed, hidden], d_seed);
        // Drawn either way, so that with and without biases the weights start the same.
        let hidden_bias = Some(init.kaiming([hidden], d_seed)).filter(|_| bias);
        let out_weight = match out {
            OutputInit::LoraA(LoraInit::Kaiming) => init.kaiming([hidden, d_gen], hidden),
            OutputInit::LoraA(LoraInit::Gaussian) => init.normal([hidden, d_gen], 1.0 / rank as f64),
            OutputInit::Zero => init.constant([hidden, d_gen], 0.0),
        };
        let out_bias = Some(init.constant([d_gen], 0.0)).filter(|_| bias);
        let scale = learned_scale.map(|s| init.constant([1], s as f32));
        Self { hidden_weight, hidden_bias, out_weight, out_bias, scale }
    }

    /// Maps seed rows `[r, d_seed]` to generated rows `[r, d_gen]`, times its learned scale or
    /// else the fixed `scale`.
    pub fn forward(&self, rows: Tensor<2>, act: Activation, scale: f64) -> Tensor<2> {
        let h = act.apply(self.pre_activations(rows));
        let out = linear(h, self.out_weight.val(), self.out_bias.as_ref().map(|b| b.val()));
        match &self.scale {
            Some(learned) => out * learned.val().unsqueeze::<2>(),
            None if scale == 1.0 => out,
            None => out.mul_scalar(scale),
        }
    }

    /// The hidden layer before its non-linearity, `[rows, h]`.
    pub fn pre_activations(&self, rows: Tensor<2>) -> Tensor<2> {
        linear(rows, self.hidden_weight.val(), self.hidden_bias.as_ref().map(|b| b.val()))
    }

    /// Trainable parameters of a generator of this shape.
    pub fn param_count(shape: &GeneratorShape) -> usize {
        let GeneratorShape { d_seed, hidden, d_gen, .. } = *shape;
        d_seed * hidden + hidden * d_gen + if shape.bias { hidden + d_gen } else { 0 } + usize::from(shape.learned_scale.is_some())
    }
}

/// `g_A` and `g_B`.
#[derive(Module, Debug)]
pub struct GeneratorPair {
    pub a: Generator,
    pub b: Generator,
}

/// The shared seeds of one block and the adapted linears they feed.
#[derive(Module, Debug)]
pub struct RepLoraBlock {
    /// Diagonal seeds are stored as their diagonal `[1, r]`; full seeds as `[r, d]`.
    pub seed_a: Param<Tensor<2>>,
    pub seed_b: Param<Tensor<2>>,
    /// Indices into the adapter set's targets, in generator-output order.
    pub targets: Vec<usize>,
    /// Index of the generator pair this block uses.
    pub generator: usize,
}

/// The shapes of `g_A` and `g_B` for a block with these targets.
pub fn generator_shapes(opts: &RepLoraConfig, rank: usize, d_ins: &[usize], d_outs: &[usize]) -> [GeneratorShape; 2] {
    let (da, db) = seed_widths(opts.seed_kind, rank, d_ins, d_outs);
    let learned_scale = opts.learn_output_scale.then(|| opts.output_scale.factor(opts.hidden));
    let shape = |d_seed, d_gen| GeneratorShape { d_seed, hidden: opts.hidden, d_gen, bias: opts.generator_bias, learned_scale };
    [shape(da, d_ins.iter().sum()), shape(db, d_outs.iter().sum())]
}

/// Seed widths for a block: `(d_seed_a, d_seed_b)`.
pub fn seed_widths(kind: SeedKind, rank: usize, d_ins: &[usize], d_outs: &[usize]) -> (usize, usize) {
    match kind {
        SeedKind::Diagonal => (rank, rank),
        SeedKind::Full => (max(d_ins), max(d_outs)),
    }
}

fn max(v: &[usize]) -> usize {
    v.iter().copied().max().unwrap_or(0)
}

impl RepLoraBlock {
    pub fn init(
        opts: &RepLoraConfig,
        rank: usize,
        d_ins: &[usize],
        d_outs: &[usize],
        targets: Vec<usize>,
        generator: usize,
        init: &mut Init,
    ) -> Self {
        let (da, db) = seed_widths(opts.seed_kind, rank, d_ins, d_outs);
        let mut seed = |width: usize| match (opts.seed_kind, opts.seed_start()) {
            (SeedKind::Diagonal, SeedInit::Identity) => init.constant([1, rank], 1.0),
            (SeedKind::Diagonal, SeedInit::Random) => init.normal([1, rank], 1.0),
            (SeedKind::Full, SeedInit::Random) => init.kaiming([rank, width], width),
            (SeedKind::Full, SeedInit::Identity) => init.eye([rank, width]),
        };
        let (seed_a, seed_b) = (seed(da), seed(db));
        Self { seed_a, seed_b, targets, generator }
    }

    /// `[A_t, B_t]` for every target of the block, `A_t` as `[d_in, r]`, `B_t` as `[r, d_out]`.
    pub fn generate(
        &self,
        generators: &GeneratorPair,
        opts: &RepLoraConfig,
        d_ins: &[usize],
        d_outs: &[usize],
    ) -> Vec<(Tensor<2>, Tensor<2>)> {
        let scale = opts.output_scale.factor(opts.hidden);
        let a_rows = generators.a.forward(seed_rows(self.seed_a.val(), opts.seed_kind), opts.activation, scale);
        let b_rows = generators.b.forward(seed_rows(self.seed_b.val(), opts.seed_kind), opts.activation, scale);
        let split = |rows: Tensor<2>, widths: &[usize]| {
            let mut offset = 0;
            widths
                .iter()
                .map(|&w| {
                    offset += w;
                    rows.clone().narrow(1, offset - w, w)
                })
                .collect::<Vec<_>>()
        };
        let a = split(a_rows, d_ins);
        let b = split(b_rows, d_outs);
        a.into_iter().zip(b).map(|(a, b)| (a.transpose(), b)).collect()
    }
}

/// The generator input: `diag(a)` for a stored diagonal `[1, r]`, the seed itself otherwise.
pub fn seed_rows(seed: Tensor<2>, kind: SeedKind) -> Tensor<2> {
    match kind {
        SeedKind::Diagonal => Tensor::eye(seed.dims()[1], &seed.device()) * seed,
        SeedKind::Full => seed,
    }
}
