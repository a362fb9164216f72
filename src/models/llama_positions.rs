//! What a LLaMA-style decoder layer attends with besides its input: the rotary tables and the
//! attention mask of its kind of layer (global, or sliding-window with a RoPE base of its own in
//! Gemma 3), and the key/value cache of generation.

use burn::prelude::*;

use super::llama_config::LlamaConfig;

/// The rotary tables and additive mask of one kind of layer, for the current positions.
pub(super) struct Positions {
    /// `[t, rotary_dim]` each (the head dimension, but for a partial rotary embedding).
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
    /// `[batch, 1, t, keys]`: 0 where a query may look, very negative elsewhere.
    pub mask: Tensor<4>,
}

impl Positions {
    /// Positions `offset..offset + t` of `b` rows for the global layers (`sliding: false`) or the
    /// sliding-window ones; `padding` (`[b, keys]`, 1 for real tokens) hides padded keys.
    pub fn new(c: &LlamaConfig, sliding: bool, b: usize, t: usize, offset: usize, padding: Option<Tensor<2>>, device: &Device) -> Self {
        let (cos, sin) = rope_tables(c.rotary_dim(), c.rope_base(sliding), offset, t, device);
        let window = if sliding { c.sliding_window } else { None };
        Self { cos, sin, mask: causal_mask(b, t, offset, window, padding, device) }
    }
}

/// Cached keys and values of every layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub(super) layers: Vec<Option<LayerKv>>,
    /// Tokens already processed.
    pub len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }
}

/// One layer's keys and values: buffers `[batch, kv_heads, capacity, head_dim]` whose first
/// `len` positions are filled. A new position is written in place (burn writes into a buffer
/// nobody else holds) instead of the whole cache being copied by a concatenation each step,
/// which at batch 8 moved some 120 MB per generated token; the capacity doubles when full.
#[derive(Clone, Debug)]
pub(super) struct LayerKv {
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

impl LayerKv {
    /// Appends `k` and `v` (`[batch, kv_heads, t, head_dim]`, `past` the cache so far) and
    /// returns the cache with every position, and views of all its keys and values.
    pub(super) fn append(past: Option<Self>, k: Tensor<4>, v: Tensor<4>) -> (Self, Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = k.dims();
        let mut cache = past.unwrap_or_else(|| {
            let empty = || Tensor::zeros([b, h, 0, d], &k.device());
            Self { k: empty(), v: empty(), len: 0 }
        });
        let end = cache.len + t;
        if end > cache.k.dims()[2] {
            let grown = |old: Tensor<4>| {
                Tensor::zeros([b, h, end.next_power_of_two(), d], &k.device())
                    .slice_assign([0..b, 0..h, 0..cache.len, 0..d], old.slice([0..b, 0..h, 0..cache.len, 0..d]))
            };
            cache.k = grown(cache.k);
            cache.v = grown(cache.v);
        }
        let (new, all) = ([0..b, 0..h, cache.len..end, 0..d], [0..b, 0..h, 0..end, 0..d]);
        cache.k = cache.k.slice_assign(new.clone(), k);
        cache.v = cache.v.slice_assign(new, v);
        cache.len = end;
        let (k, v) = (cache.k.clone().slice(all.clone()), cache.v.clone().slice(all));
        (cache, k, v)
    }
}

/// `cos` and `sin` of the rotary angles for positions `offset..offset + t`, `[t, head_dim]`,
/// laid out for `rotate_half` (each frequency twice: first half, second half).
pub(super) fn rope_tables(d: usize, base: f64, offset: usize, t: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for p in offset..offset + t {
        for i in 0..d {
            let freq = base.powf(-((2 * (i % (d / 2))) as f64) / d as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [t, d]), device);
    (table(cos), table(sin))
}

/// The additive mask `[b, 1, t, offset + t]`: query `i` (at position `offset + i`) sees keys
/// `0..=offset + i` that are not padding, and with a sliding `window` only the last `window` of
/// them (itself included).
fn causal_mask(b: usize, t: usize, offset: usize, window: Option<usize>, padding: Option<Tensor<2>>, device: &Device) -> Tensor<4> {
    let keys = offset + t;
    let mut values = vec![0f32; t * keys];
    for i in 0..t {
        let seen = window.map_or(0, |w| (offset + i + 1).saturating_sub(w))..=offset + i;
        for k in (0..keys).filter(|k| !seen.contains(k)) {
            values[i * keys + k] = f32::MIN;
        }
    }
    let causal = Tensor::<2>::from_data(TensorData::new(values, [t, keys]), device).reshape([1, 1, t, keys]);
    match padding {
        // f32::MIN + f32::MIN is -inf; softmax still gives exactly 0 there as long as a row has a
        // real key, which every row has (its own position, or the first real token).
        Some(mask) => causal + mask.neg().add_scalar(1.0).mul_scalar(f32::MIN).reshape([b, 1, 1, keys]),
        None => causal,
    }
}
