//! All adapter parameters of one model in one module: what the optimizer trains and files store.

use std::collections::HashMap;

use burn::module::Param;
use burn::prelude::*;

use super::bottleneck::Bottleneck;
use super::config::{AdapterConfig, Method};
use super::init::Init;
use super::linear::{AdaptedLinear, Deltas, LinearDelta};
use super::lora::LoraFactors;
use super::prefix::Prefix;
use super::replora::{Generator, GeneratorPair, OutputInit, RepLoraBlock, generator_shapes};
use super::target::{Target, select_targets};
use crate::error::{Error, Result};

/// The adapter of one linear. LoRA and DoRA own their factors; RepLoRA's come from a block;
/// a bottleneck adapter owns its down and up projections.
#[derive(Module, Debug)]
pub struct TargetAdapter {
    #[module(skip)]
    pub target: Target,
    pub factors: Option<LoraFactors>,
    /// DoRA's magnitude vector `m`, `[d_out]`.
    pub magnitude: Option<Param<Tensor<1>>>,
    pub bottleneck: Option<Bottleneck>,
}

/// Every trainable adapter tensor of a model, plus the config that built it.
#[derive(Module, Debug)]
pub struct AdapterSet {
    pub targets: Vec<TargetAdapter>,
    pub blocks: Vec<RepLoraBlock>,
    pub generators: Vec<GeneratorPair>,
    /// Prefix tuning's keys and values for every target (key projection).
    pub prefix: Option<Prefix>,
    #[module(skip)]
    pub config: AdapterConfig,
}

impl AdapterSet {
    /// Builds the adapters `config` asks for on the given linears.
    pub fn new(config: &AdapterConfig, linears: &[&AdaptedLinear]) -> Result<Self> {
        let shapes: Vec<_> = linears.iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        let targets = select_targets(config, &shapes)?;
        super::count::check_memory(config, &targets)?;
        let device = linears[0].weight.device();
        let mut init = Init::new(config.seed, &device);
        let weights: HashMap<&str, &AdaptedLinear> = linears.iter().map(|l| (l.path.as_str(), *l)).collect();
        let targets: Vec<TargetAdapter> = targets
            .into_iter()
            .map(|target| {
                let factors = matches!(config.method, Method::Lora | Method::Dora)
                    .then(|| LoraFactors::init(target.d_in, target.d_out, target.rank, config.init_lora_weights, &mut init));
                // DoRA starts with m = ||W0||: with B = 0 the rescaling is the identity.
                let magnitude = (config.method == Method::Dora).then(|| {
                    let w = weights[target.path.as_str()].weight.val();
                    let norm = w.square().sum_dim(0).sqrt().squeeze_dim::<1>(0);
                    Param::from_tensor(Tensor::from_data(norm.into_data(), &device))
                });
                let bottleneck = (config.method == Method::Houlsby)
                    .then(|| Bottleneck::init(target.d_out, config.bottleneck.width(target.d_out), &mut init));
                TargetAdapter { target, factors, magnitude, bottleneck }
            })
            .collect();
        let (blocks, generators) = match config.method {
            Method::Replora => build_replora(config, &targets, &mut init)?,
            _ => (vec![], vec![]),
        };
        let prefix = match config.method {
            Method::Prefix => {
                let anchors: Vec<Target> = targets.iter().map(|t| t.target.clone()).collect();
                check_one_per_layer(&anchors, linears)?;
                Some(Prefix::init(&config.prefix, &anchors, &mut init))
            }
            _ => None,
        };
        Ok(Self { targets, blocks, generators, prefix, config: config.clone() })
    }

    /// An adapter set with no targets (full fine-tuning keeps one so the model type is the same).
    pub fn empty() -> Self {
        Self { targets: vec![], blocks: vec![], generators: vec![], prefix: None, config: AdapterConfig::default() }
    }

    /// RepLoRA's generator parameters with their learning-rate multiplier, when it is not 1.
    pub fn generator_lr_group(&self) -> Option<crate::training::LrGroup> {
        let multiplier = self.config.replora.generator_lr_multiplier;
        if self.config.method != Method::Replora || multiplier == 1.0 || self.generators.is_empty() {
            return None;
        }
        Some(self.generator_params(multiplier))
    }

    /// Every parameter of RepLoRA's generators, as a group trained at `multiplier` x the rate.
    pub fn generator_params(&self, multiplier: f64) -> crate::training::LrGroup {
        let gens = || self.generators.iter().flat_map(|p| [&p.a, &p.b]);
        crate::training::LrGroup {
            multiplier,
            matrices: gens().flat_map(|g| [g.hidden_weight.id, g.out_weight.id]).collect(),
            vectors: gens().flat_map(|g| [&g.hidden_bias, &g.out_bias, &g.scale]).flatten().map(|b| b.id).collect(),
        }
    }

    /// The deltas for one forward pass; `training` switches LoRA dropout on.
    pub fn deltas(&self, training: bool) -> Deltas {
        let dropout = self.config.lora_dropout;
        let delta = |t: &Target, a, b, magnitude| LinearDelta { a, b, scale: t.scale, dropout, magnitude };
        let mut map = HashMap::new();
        let mut bottlenecks = HashMap::new();
        for t in &self.targets {
            if let Some(f) = &t.factors {
                let magnitude = t.magnitude.as_ref().map(|m| m.val());
                map.insert(t.target.path.clone(), delta(&t.target, f.a.val(), f.b.val(), magnitude));
            }
            if let Some(b) = &t.bottleneck {
                bottlenecks.insert(t.target.path.clone(), b.delta(self.config.bottleneck.activation, dropout));
            }
        }
        let mut prefixes = HashMap::new();
        if let Some(prefix) = &self.prefix {
            for (t, kv) in self.targets.iter().zip(prefix.split(self.targets.iter().map(|t| t.target.d_out))) {
                prefixes.insert(t.target.path.clone(), kv);
            }
        }
        let opts = &self.config.replora;
        for block in &self.blocks {
            let (d_ins, d_outs) = self.block_widths(block);
            let factors = block.generate(&self.generators[block.generator], opts, &d_ins, &d_outs);
            for (&i, (a, b)) in block.targets.iter().zip(factors) {
                let t = &self.targets[i].target;
                map.insert(t.path.clone(), delta(t, a, b, None));
            }
        }
        Deltas { map, bottlenecks, prefixes, training }
    }

    fn block_widths(&self, block: &RepLoraBlock) -> (Vec<usize>, Vec<usize>) {
        block.targets.iter().map(|&i| (self.targets[i].target.d_in, self.targets[i].target.d_out)).unzip()
    }

    /// The plain LoRA (or DoRA) adapter this one computes: RepLoRA's generated factors are
    /// evaluated once and stored as `A`, `B`; generators and seeds are dropped. Bottleneck
    /// adapters and prefixes have no such form.
    pub fn to_lora(&self) -> Result<Self> {
        self.config.method.check_mergeable("written as LoRA")?;
        let deltas = self.deltas(false);
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let d = deltas.get(&t.target.path).expect("every target has a delta");
                let leaf = |x: &Tensor<2>| Param::from_tensor(x.clone().detach());
                TargetAdapter {
                    target: t.target.clone(),
                    factors: Some(LoraFactors { a: leaf(&d.a), b: leaf(&d.b) }),
                    magnitude: d.magnitude.as_ref().map(|m| Param::from_tensor(m.clone().detach())),
                    bottleneck: None,
                }
            })
            .collect();
        let method = if self.config.method == Method::Dora { Method::Dora } else { Method::Lora };
        let config = AdapterConfig { method, ..self.config.clone() };
        Ok(Self { targets, blocks: vec![], generators: vec![], prefix: None, config })
    }

    /// Number of trainable adapter parameters (counted from the tensors).
    pub fn trainable_params(&self) -> usize {
        self.num_params()
    }

    pub fn target_paths(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.target.path.as_str()).collect()
    }
}

/// Prefix tuning puts one prefix in every layer, anchored at one linear (its key projection).
fn check_one_per_layer(targets: &[Target], linears: &[&AdaptedLinear]) -> Result<()> {
    let mut layers: Vec<usize> = linears.iter().filter_map(|l| super::target::layer_index(&l.path)).collect();
    layers.dedup();
    let anchored: Vec<Option<usize>> = targets.iter().map(|t| t.layer).collect();
    if anchored != layers.iter().map(|&l| Some(l)).collect::<Vec<_>>() {
        return Err(Error::Config(format!(
            "prefix tuning puts a prefix in every layer (0..{}), anchored at its key projection, so its targets must be one key projection per layer (the default); got {:?}",
            layers.len(),
            targets.iter().map(|t| t.path.as_str()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Groups RepLoRA targets into blocks by layer index and creates seeds and generators.
fn build_replora(config: &AdapterConfig, targets: &[TargetAdapter], init: &mut Init) -> Result<(Vec<RepLoraBlock>, Vec<GeneratorPair>)> {
    let mut groups: Vec<(Option<usize>, Vec<usize>)> = vec![];
    for (i, t) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(layer, _)| *layer == t.target.layer) {
            Some((_, members)) => members.push(i),
            None => groups.push((t.target.layer, vec![i])),
        }
    }
    let opts = &config.replora;
    let mut blocks = vec![];
    let mut generators: Vec<GeneratorPair> = vec![];
    let mut first_shape = None;
    for (layer, members) in groups {
        let rank = targets[members[0]].target.rank;
        let name = |i: &usize| targets[*i].target.path.clone();
        if members.iter().any(|i| targets[*i].target.rank != rank) {
            return Err(Error::Config(format!(
                "RepLoRA shares one rank per block, but the targets of layer {layer:?} ({}) have different ranks",
                members.iter().map(name).collect::<Vec<_>>().join(", ")
            )));
        }
        let d_ins: Vec<usize> = members.iter().map(|i| targets[*i].target.d_in).collect();
        let d_outs: Vec<usize> = members.iter().map(|i| targets[*i].target.d_out).collect();
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
    Ok((blocks, generators))
}

/// Something applied to every adapter parameter together with its stable file name
/// (saving records them, loading replaces them).
pub trait NamedParams {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>>;
}

impl AdapterSet {
    /// Passes every parameter through `v` under its file name: `<path>.lora_A` / `.lora_B`
    /// (burn layout), `<path>.magnitude`, `<path>.adapter.<down|up>.<weight|bias>` (burn
    /// layout), `blocks.<i>.seed_A` / `seed_B`, `generators.<g>.<A|B>.<hidden|out>.<weight|bias>` (and `.scale`),
    /// `prefix.embedding` and `prefix.mlp.<hidden|out>.<weight|bias>`.
    pub fn map_named<V: NamedParams>(self, v: &mut V) -> Result<Self> {
        let targets = self
            .targets
            .into_iter()
            .map(|t| {
                let p = t.target.path.clone();
                let factors = match t.factors {
                    Some(f) => Some(LoraFactors { a: v.param(&format!("{p}.lora_A"), f.a)?, b: v.param(&format!("{p}.lora_B"), f.b)? }),
                    None => None,
                };
                let magnitude = t.magnitude.map(|m| v.param(&format!("{p}.magnitude"), m)).transpose()?;
                let bottleneck = match t.bottleneck {
                    Some(b) => Some(Bottleneck {
                        down_weight: v.param(&format!("{p}.adapter.down.weight"), b.down_weight)?,
                        down_bias: v.param(&format!("{p}.adapter.down.bias"), b.down_bias)?,
                        up_weight: v.param(&format!("{p}.adapter.up.weight"), b.up_weight)?,
                        up_bias: v.param(&format!("{p}.adapter.up.bias"), b.up_bias)?,
                    }),
                    None => None,
                };
                Ok(TargetAdapter { target: t.target, factors, magnitude, bottleneck })
            })
            .collect::<Result<_>>()?;
        let blocks = self
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
        fn generator<V: NamedParams>(v: &mut V, g: Generator, prefix: String) -> Result<Generator> {
            Ok(Generator {
                hidden_weight: v.param(&format!("{prefix}.hidden.weight"), g.hidden_weight)?,
                hidden_bias: g.hidden_bias.map(|b| v.param(&format!("{prefix}.hidden.bias"), b)).transpose()?,
                out_weight: v.param(&format!("{prefix}.out.weight"), g.out_weight)?,
                out_bias: g.out_bias.map(|b| v.param(&format!("{prefix}.out.bias"), b)).transpose()?,
                scale: g.scale.map(|s| v.param(&format!("{prefix}.scale"), s)).transpose()?,
            })
        }
        let generators = self
            .generators
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                Ok(GeneratorPair { a: generator(v, g.a, format!("generators.{i}.A"))?, b: generator(v, g.b, format!("generators.{i}.B"))? })
            })
            .collect::<Result<_>>()?;
        let prefix = match self.prefix {
            Some(p) => Some(Prefix {
                embedding: v.param("prefix.embedding", p.embedding)?,
                mlp: p.mlp.map(|m| generator(v, m, "prefix.mlp".into())).transpose()?,
            }),
            None => None,
        };
        Ok(Self { targets, blocks, generators, prefix, config: self.config })
    }
}
