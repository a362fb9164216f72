//! RepLoRA (spec section 3): per-block shared seeds mapped by small MLPs to LoRA factors.

use burn::module::{Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::module::linear;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AdapterMethod, Pass, SizeSetting};
use crate::adapters::LrGroup;
use crate::adapters::config::{Activation, AdapterConfig, LoraInit};
use crate::adapters::diagnostics::grad_norm;
use crate::adapters::init::Init;
use crate::adapters::linear::{AdaptedLinear, Deltas, LinearDelta};
use crate::adapters::set::NamedParams;
use crate::adapters::target::Target;
use crate::error::{Error, Result};

crate::choice_enum! {
    /// The shape of RepLoRA's shared seeds (spec section 3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum SeedKind: "seed kind" {
        /// `A = diag(a)`, `B = diag(b)`: `2 r` seed parameters per block.
        Diagonal => "diagonal",
        /// `A` is a full `r x d_in` matrix, `B` a full `r x d_out` matrix.
        Full => "full",
    }
}

crate::choice_enum! {
    /// How RepLoRA's seeds start.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum SeedInit: "seed init" {
        /// Diagonal seeds all ones (the identity); full seeds the first `r` rows of the identity.
        Identity => "identity",
        /// Diagonal seeds N(0, 1); full seeds Kaiming-uniform, as `torch.nn.Linear`'s weight.
        Random => "random",
    }
}

impl SeedInit {
    /// Each seed kind's own start: the identity for diagonal seeds, random for full seeds.
    pub fn default_for(kind: SeedKind) -> Self {
        match kind {
            SeedKind::Diagonal => SeedInit::Identity,
            SeedKind::Full => SeedInit::Random,
        }
    }
}

crate::choice_enum! {
    /// How a RepLoRA generator's output is scaled. Every generated entry sums `h` hidden units,
    /// and Adam moves each output weight by about `lr` per step with a sign that agrees across
    /// them, so without a scale a generated factor moves about `h * E|act|` times as fast as a
    /// LoRA factor at the same learning rate (about 4x at h = 16, with A also starting 5x
    /// larger): RepLoRA's update `B A` then runs an order of magnitude ahead of LoRA's.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum OutputScale: "output scale" {
        /// No scale (replora 0.1 before this option; adapters saved then read back as this).
        One => "one",
        /// `1 / sqrt(h)`: a generated factor starts and moves about as a LoRA factor does.
        InvSqrtH => "inv_sqrt_h",
        /// `1 / h`.
        InvH => "inv_h",
    }
}

impl OutputScale {
    /// The multiplier for a generator of hidden width `hidden`.
    pub fn factor(self, hidden: usize) -> f64 {
        match self {
            OutputScale::One => 1.0,
            OutputScale::InvSqrtH => 1.0 / (hidden as f64).sqrt(),
            OutputScale::InvH => 1.0 / hidden as f64,
        }
    }
}

/// Files written before `output_scale` existed used no scale.
fn legacy_output_scale() -> OutputScale {
    OutputScale::One
}

/// RepLoRA's settings (a config's `replora` object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepLoraConfig {
    pub seed_kind: SeedKind,
    /// Hidden width `h` of the generator MLPs `g_A` and `g_B`.
    pub hidden: usize,
    pub activation: Activation,
    /// One generator pair for all blocks instead of one per block (seeds stay per block).
    pub shared_generators: bool,
    /// Multiplier on each generator's output (weights and bias); see [`OutputScale`].
    #[serde(default = "legacy_output_scale")]
    pub output_scale: OutputScale,
    /// The generators' learning rate relative to the run's (the seeds keep the run's), as
    /// LoRA+ gives B its own rate. A training setting: the adapter it trains is unchanged.
    pub generator_lr_multiplier: f64,
    /// Biases in both generator layers. Written to files only when off, so that adapters and
    /// sweep cells from before this option read back unchanged.
    #[serde(skip_serializing_if = "is_true")]
    pub generator_bias: bool,
    /// Train each generator's output scale, a scalar starting at `output_scale`'s factor, with
    /// the generators' learning rate; written only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub learn_output_scale: bool,
    /// How the seeds start [default: [`SeedInit::default_for`] the seed kind]; written only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_init: Option<SeedInit>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RepLoraConfig {
    /// The seeds' start, explicit or the seed kind's own.
    pub fn seed_start(&self) -> SeedInit {
        self.seed_init.unwrap_or(SeedInit::default_for(self.seed_kind))
    }
}

impl Default for RepLoraConfig {
    fn default() -> Self {
        Self {
            seed_kind: SeedKind::Diagonal,
            hidden: 8,
            activation: Activation::Tanh,
            shared_generators: false,
            output_scale: OutputScale::InvSqrtH,
            generator_lr_multiplier: 1.0,
            generator_bias: true,
            learn_output_scale: false,
            seed_init: None,
        }
    }
}

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

    /// The generator's tensors under `<prefix>.<hidden|out>.<weight|bias>` and `<prefix>.scale`.
    pub fn map_named<V: NamedParams>(self, v: &mut V, prefix: &str) -> Result<Self> {
        Ok(Self {
            hidden_weight: v.param(&format!("{prefix}.hidden.weight"), self.hidden_weight)?,
            hidden_bias: self.hidden_bias.map(|b| v.param(&format!("{prefix}.hidden.bias"), b)).transpose()?,
            out_weight: v.param(&format!("{prefix}.out.weight"), self.out_weight)?,
            out_bias: self.out_bias.map(|b| v.param(&format!("{prefix}.out.bias"), b)).transpose()?,
            scale: self.scale.map(|s| v.param(&format!("{prefix}.scale"), s)).transpose()?,
        })
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

/// RepLoRA's trainable state: every block's seeds and the generators they share.
#[derive(Module, Debug)]
pub struct RepLoraState {
    pub blocks: Vec<RepLoraBlock>,
    pub generators: Vec<GeneratorPair>,
}

impl RepLoraState {
    /// Every parameter of the generators, as a group trained at `multiplier` x the rate.
    pub fn generator_params(&self, multiplier: f64) -> LrGroup {
        let gens = || self.generators.iter().flat_map(|p| [&p.a, &p.b]);
        LrGroup {
            multiplier,
            matrices: gens().flat_map(|g| [g.hidden_weight.id, g.out_weight.id]).collect(),
            vectors: gens().flat_map(|g| [&g.hidden_bias, &g.out_bias, &g.scale]).flatten().map(|b| b.id).collect(),
        }
    }

    /// The fraction of the tanh units that are saturated, over every block's seed rows through
    /// its generators; `None` for other activations.
    pub fn tanh_saturated(&self, opts: &RepLoraConfig) -> Option<f64> {
        if opts.activation != Activation::Tanh || self.blocks.is_empty() {
            return None;
        }
        let (mut saturated, mut units) = (0.0, 0usize);
        for block in &self.blocks {
            let pair = &self.generators[block.generator];
            for (generator, seed) in [(&pair.a, &block.seed_a), (&pair.b, &block.seed_b)] {
                let pre = generator.pre_activations(seed_rows(seed.val(), opts.seed_kind)).detach();
                units += pre.dims().iter().product::<usize>();
                saturated += crate::weights::tensors::scalar(pre.abs().greater_elem(SATURATED_PRE_ACTIVATION).float().sum());
            }
        }
        Some(saturated / units as f64)
    }
}

/// A tanh unit whose pre-activation exceeds this in magnitude is saturated: its slope
/// `1 - tanh^2` is below 0.01, so almost no gradient passes it.
pub const SATURATED_PRE_ACTIVATION: f64 = 3.0;

/// The targets of each block (one block per layer), as indices into the targets.
fn blocks_of(targets: &[Target]) -> Vec<(Option<usize>, Vec<usize>)> {
    let mut groups: Vec<(Option<usize>, Vec<usize>)> = vec![];
    for (i, t) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(layer, _)| *layer == t.layer) {
            Some((_, members)) => members.push(i),
            None => groups.push((t.layer, vec![i])),
        }
    }
    groups
}

fn widths(targets: &[Target], members: &[usize]) -> (Vec<usize>, Vec<usize>) {
    members.iter().map(|&i| (targets[i].d_in, targets[i].d_out)).unzip()
}

/// RepLoRA.
pub struct RepLora;

impl AdapterMethod for RepLora {
    type Settings = RepLoraConfig;
    type State = RepLoraState;
    const NAME: &'static str = "replora";
    const PEFT_TYPE: &'static str = "REPLORA";
    const SETTINGS_KEY: Option<&'static str> = Some("replora");

    fn validate(opts: &RepLoraConfig) -> Result<()> {
        if opts.hidden == 0 {
            return Err(Error::Config("replora.hidden must be at least 1".into()));
        }
        let m = opts.generator_lr_multiplier;
        if !(m.is_finite() && m > 0.0) {
            return Err(Error::Config(format!("replora.generator_lr_multiplier must be a positive number, got {m}")));
        }
        Ok(())
    }

    /// Groups the targets into blocks by layer index and creates seeds and generators.
    fn init(
        opts: &RepLoraConfig,
        config: &AdapterConfig,
        targets: &[Target],
        _: &[&AdaptedLinear],
        init: &mut Init,
    ) -> Result<RepLoraState> {
        let mut blocks = vec![];
        let mut generators: Vec<GeneratorPair> = vec![];
        let mut first_shape = None;
        for (layer, members) in blocks_of(targets) {
            let rank = targets[members[0]].rank;
            let name = |i: &usize| targets[*i].path.clone();
            if members.iter().any(|i| targets[*i].rank != rank) {
                return Err(Error::Config(format!(
                    "RepLoRA shares one rank per block, but the targets of layer {layer:?} ({}) have different ranks",
                    members.iter().map(name).collect::<Vec<_>>().join(", ")
                )));
            }
            let (d_ins, d_outs) = widths(targets, &members);
            let shape = (rank, d_ins.clone(), d_outs.clone());
            let generator = if opts.shared_generators && !generators.is_empty() {
                if first_shape.as_ref() != Some(&shape) {
                    return Err(Error::Config(format!(
                        "replora.shared_generators needs the same target shapes in every block; layer {layer:?} has rank {rank}, d_in {d_ins:?}, d_out {d_outs:?}, the first block {first_shape:?}"
                    )));
                }
                0
            } else {
                let [shape_a, shape_b] = generator_shapes(opts, rank, &d_ins, &d_outs);
                let a = Generator::init(&shape_a, rank, OutputInit::LoraA(config.init_lora_weights), init);
                let b = Generator::init(&shape_b, rank, OutputInit::Zero, init);
                generators.push(GeneratorPair { a, b });
                first_shape.get_or_insert(shape);
                generators.len() - 1
            };
            blocks.push(RepLoraBlock::init(opts, rank, &d_ins, &d_outs, members, generator, init));
        }
        Ok(RepLoraState { blocks, generators })
    }

    /// Each block's generators run once per pass, however many linears they feed.
    fn deltas(state: &RepLoraState, opts: &RepLoraConfig, pass: &Pass, out: &mut Deltas) {
        for block in &state.blocks {
            let (d_ins, d_outs) = widths(pass.targets, &block.targets);
            let factors = block.generate(&state.generators[block.generator], opts, &d_ins, &d_outs);
            for (&i, (a, b)) in block.targets.iter().zip(factors) {
                let t = &pass.targets[i];
                out.map.insert(t.path.clone(), LinearDelta { a, b, scale: t.scale, dropout: pass.dropout, magnitude: None });
            }
        }
    }

    /// Per block the seeds (`2 r` diagonal, `r (d_a + d_b)` full) plus the generators `g_A`,
    /// `g_B` (`d_seed h + h + h d_gen + d_gen` each, `d_seed h + h d_gen` without biases, plus 1
    /// for a learned output scale), once per block or once in all when shared.
    fn param_count(opts: &RepLoraConfig, targets: &[Target]) -> usize {
        let mut total = 0;
        for (n, (_, members)) in blocks_of(targets).into_iter().enumerate() {
            let rank = targets[members[0]].rank;
            let (d_ins, d_outs) = widths(targets, &members);
            let (da, db) = seed_widths(opts.seed_kind, rank, &d_ins, &d_outs);
            total += match opts.seed_kind {
                SeedKind::Diagonal => 2 * rank,
                SeedKind::Full => rank * (da + db),
            };
            if n == 0 || !opts.shared_generators {
                total += generator_shapes(opts, rank, &d_ins, &d_outs).iter().map(Generator::param_count).sum::<usize>();
            }
        }
        total
    }

    /// `blocks.<i>.seed_A` / `seed_B`, `generators.<g>.<A|B>.<hidden|out>.<weight|bias>` (and `.scale`).
    fn map_named<V: NamedParams>(state: RepLoraState, _: &[Target], v: &mut V) -> Result<RepLoraState> {
        let blocks = state
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                Ok(RepLoraBlock {
                    seed_a: v.param(&format!("blocks.{i}.seed_A"), b.seed_a)?,
                    seed_b: v.param(&format!("blocks.{i}.seed_B"), b.seed_b)?,
                    ..b
                })
            })
            .collect::<Result<_>>()?;
        let generators = state
            .generators
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                Ok(GeneratorPair { a: g.a.map_named(v, &format!("generators.{i}.A"))?, b: g.b.map_named(v, &format!("generators.{i}.B"))? })
            })
            .collect::<Result<_>>()?;
        Ok(RepLoraState { blocks, generators })
    }

    fn size_settings(opts: &RepLoraConfig) -> Vec<SizeSetting<RepLoraConfig>> {
        vec![SizeSetting { flag: "--hidden", key: "replora.hidden", value: opts.hidden, set: |c, v| c.hidden = v }]
    }

    /// The generators at `generator_lr_multiplier` x the rate, when it is not 1.
    fn lr_group(state: &RepLoraState, opts: &RepLoraConfig) -> Option<LrGroup> {
        let multiplier = opts.generator_lr_multiplier;
        (multiplier != 1.0 && !state.generators.is_empty()).then(|| state.generator_params(multiplier))
    }

    /// The seeds: the shared input of every generator, so decay would shrink all updates at once.
    fn decay_exempt(state: &RepLoraState) -> Vec<burn::module::ParamId> {
        state.blocks.iter().flat_map(|b| [b.seed_a.id, b.seed_b.id]).collect()
    }

    /// `generator_grad_norm`, `seed_grad_norm` and, with tanh generators, `tanh_saturated` (the
    /// fraction of hidden units, over every seed row of every block, with `|pre-activation| > 3`).
    fn diagnostics(state: &RepLoraState, opts: &RepLoraConfig, grads: &GradientsParams, out: &mut Map<String, Value>) {
        let generators = state.generator_params(1.0);
        let seeds: Vec<ParamId> = state.blocks.iter().flat_map(|b| [b.seed_a.id, b.seed_b.id]).collect();
        let fields = [
            ("generator_grad_norm", grad_norm(grads, &generators.matrices, &generators.vectors)),
            ("seed_grad_norm", grad_norm(grads, &seeds, &[])),
            ("tanh_saturated", state.tanh_saturated(opts)),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                out.insert(key.into(), v.into());
            }
        }
    }
}
