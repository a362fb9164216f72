//! A small transformer stack with grouped-query attention, built from seeded random weights:
//! the model the adapter invariants are checked on.
#![allow(dead_code)]

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use replora::adapters::init::Init;
use replora::adapters::{Adaptable, AdaptedLinear, Deltas};

#[derive(Module, Debug)]
pub struct TinyLayer {
    pub q_proj: AdaptedLinear,
    pub k_proj: AdaptedLinear,
    pub v_proj: AdaptedLinear,
    pub o_proj: AdaptedLinear,
    pub up_proj: AdaptedLinear,
    pub down_proj: AdaptedLinear,
}

#[derive(Module, Debug)]
pub struct TinyModel {
    pub layers: Vec<TinyLayer>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

fn linear(init: &mut Init, path: String, d_in: usize, d_out: usize) -> AdaptedLinear {
    let w: Param<Tensor<2>> = init.uniform([d_in, d_out], 0.5);
    let b: Param<Tensor<1>> = init.uniform([d_out], 0.1);
    AdaptedLinear::new(path, w.val(), Some(b.val()))
}

impl TinyModel {
    /// `layers` blocks of hidden width `heads * head_dim`, value width `kv_heads * head_dim`.
    pub fn new(layers: usize, heads: usize, kv_heads: usize, head_dim: usize, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, device);
        let d = heads * head_dim;
        let kv = kv_heads * head_dim;
        let layers = (0..layers)
            .map(|i| {
                let p = |n: &str| format!("model.layers.{i}.{n}");
                TinyLayer {
                    q_proj: linear(&mut init, p("self_attn.q_proj"), d, d),
                    k_proj: linear(&mut init, p("self_attn.k_proj"), d, kv),
                    v_proj: linear(&mut init, p("self_attn.v_proj"), d, kv),
                    o_proj: linear(&mut init, p("self_attn.o_proj"), d, d),
                    up_proj: linear(&mut init, p("mlp.up_proj"), d, 2 * d),
                    down_proj: linear(&mut init, p("mlp.down_proj"), 2 * d, d),
                }
            })
            .collect();
        Self { layers, heads, kv_heads, head_dim }
    }

    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`.
    pub fn forward(&self, mut x: Tensor<3>, deltas: &Deltas) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        for layer in &self.layers {
            let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
            let q = heads(layer.q_proj.forward(x.clone(), deltas), h);
            let k = heads(layer.k_proj.forward(x.clone(), deltas), kvh);
            let v = heads(layer.v_proj.forward(x.clone(), deltas), kvh);
            let (k, v) = match deltas.prefix(&layer.k_proj.path) {
                Some(prefix) => prefix.prepend(k, v),
                None => (k, v),
            };
            let (k, v) = (k.repeat_dim(1, h / kvh), v.repeat_dim(1, h / kvh));
            let att = softmax(q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()), 3);
            let ctx = att.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
            x = x.clone() + layer.o_proj.forward(ctx, deltas);
            x = x.clone() + layer.down_proj.forward(gelu(layer.up_proj.forward(x, deltas)), deltas);
        }
        x
    }
}

impl Adaptable for TinyModel {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        self.layers.iter().flat_map(|l| [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.up_proj, &l.down_proj]).collect()
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let layers = self
            .layers
            .into_iter()
            .map(|l| TinyLayer {
                q_proj: f(l.q_proj),
                k_proj: f(l.k_proj),
                v_proj: f(l.v_proj),
                o_proj: f(l.o_proj),
                up_proj: f(l.up_proj),
                down_proj: f(l.down_proj),
            })
            .collect();
        Self { layers, ..self }
    }
}

/// Seeded input `[batch, tokens, hidden]`.
pub fn input(model: &TinyModel, batch: usize, tokens: usize, seed: u64, device: &Device) -> Tensor<3> {
    let p: Param<Tensor<3>> = Init::new(seed, device).uniform([batch, tokens, model.hidden()], 1.0);
    p.val().detach()
}

/// Host copy of a tensor, for exact comparisons.
pub fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_into_vec_as::<f32>().unwrap()
}

/// max |a - b| / max(max |b|, 1e-12).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max).max(1e-12);
    diff / scale
}
