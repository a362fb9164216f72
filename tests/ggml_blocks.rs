//! ggml's Q5_0, Q4_K and Q6_K blocks, read from GGUF and kept quantized: their values are
//! gguf-py's bit for bit (`tests/fixtures/ggml-blocks.gguf`, written by
//! `tests/python/make_ggml_blocks.py`), the products on them equal the products of their
//! dequantized matrices, and a decoder whose GGUF mixes them (as llama.cpp's Q4_K_M files do)
//! runs on its stored blocks, widens and merges.

use std::path::Path;

use burn::prelude::*;
use half::{bf16, f16};
use replora::adapters::{Adaptable, AdapterConfig, Deltas, Method, PeftModel, TargetModules};
use replora::kernels::quantized::{product_w, product_wt};
use replora::kernels::{Kernel, fused_calls};
use replora::models::llama::Llama;
use replora::quantization::{BlockFormat, QuantizedMatrix};
use replora::tasks::choice_model::{CausalLm, LmBatch, LmSequence};
use replora::training::Objective;
use replora::weights::gguf::Gguf;

const NEW_FORMATS: [BlockFormat; 3] = [BlockFormat::Q5_0, BlockFormat::Q4_K, BlockFormat::Q6_K];

fn fixture() -> Gguf {
    Gguf::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ggml-blocks.gguf")).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Both ways a GGUF tensor of each format is read (kept in blocks and dequantized, or widened
/// to f32 at load) give gguf-py's values, signed zeros included.
#[test]
fn dequantized_blocks_are_gguf_py_values_bit_for_bit() {
    let g = fixture();
    for format in NEW_FORMATS {
        let name = format.name();
        let expected = g.tensor(&format!("{name}.dequantized")).unwrap();
        let widened = g.tensor(name).unwrap();
        assert_eq!(widened.shape, expected.shape, "{name}");
        assert_eq!(bits(&widened.data), bits(&expected.data), "{name}: widened at load");
        let kept = g.quantized(g.info(name).unwrap()).expect("a quantized matrix").unwrap();
        assert_eq!((kept.format, kept.rows, kept.cols), (format, expected.shape[0], expected.shape[1]));
        assert_eq!(bits(&kept.dequantize()), bits(&expected.data), "{name}: kept in blocks");
    }
}

/// A deterministic byte stream (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// A scale of either sign, 1/256 to 1/64.
    fn scale(&mut self) -> [u8; 2] {
        let magnitude = (1.0 + (self.next() % 1000) as f32 / 333.0) / 256.0;
        f16::from_f32(if self.next().is_multiple_of(2) { magnitude } else { -magnitude }).to_le_bytes()
    }
}

/// Random stored blocks of `format` for a `[rows, cols]` matrix, every code bit random.
fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QuantizedMatrix {
    let mut rng = Rng(seed);
    let (per_block, block_bytes) = format.stored_block();
    let scales_at: &[usize] = match format {
        BlockFormat::Q4_1 | BlockFormat::Q4_K => &[0, 2],
        BlockFormat::Q6_K => &[208],
        _ => &[0],
    };
    let mut data = vec![];
    for _ in 0..rows * cols / per_block {
        let mut block = rng.bytes(block_bytes);
        for &at in scales_at {
            block[at..at + 2].copy_from_slice(&rng.scale());
        }
        data.extend(block);
    }
    QuantizedMatrix::from_blocks(format, rows, cols, &data, "random").unwrap()
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((((i * 53 + seed * 7) % 97) as f32) - 48.0) / 31.0).collect()
}

/// `a bᵀ` in f64, `a` `[m, k]`, `b` `[n, k]`.
fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[j * k + p] as f64).sum::<f64>() as f32;
        }
    }
    c
}

fn assert_close(ours: &[f32], exact: &[f32], what: &str) {
    assert_eq!(ours.len(), exact.len());
    let scale = exact.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 2e-5 * scale, "{what}: worst difference {worst} at scale {scale}");
}

/// Both products, at every row count of the dot path (1-8) and past it (the widened `gemm`),
/// on odd shapes (67 rows, odd block counts) and on the fixture's wide-ranged blocks, equal the
/// products of the dequantized matrix.
#[test]
fn products_on_new_blocks_equal_the_dequantized_products() {
    let g = fixture();
    for format in NEW_FORMATS {
        let odd_cols = if format == BlockFormat::Q5_0 { 5 * 32 } else { 3 * 256 };
        let from_file = g.quantized(g.info(format.name()).unwrap()).unwrap().unwrap();
        for w in [random_matrix(format, 67, odd_cols, 7), from_file] {
            let (out, cols) = (w.rows, w.cols);
            let dense = w.dequantize();
            let wt: Vec<f32> = (0..cols * out).map(|i| dense[(i % out) * cols + i / out]).collect(); // [cols, out]
            for rows in [1, 2, 3, 7, 8, 9, 40] {
                let x = values(rows * cols, rows);
                let what = format!("{format} [{out}, {cols}]");
                assert_close(&product_wt(&x, rows, &w), &reference(&x, &dense, rows, out, cols), &format!("{what} x Wᵀ, {rows} rows"));
                let dy = values(rows * out, rows + 1);
                assert_close(&product_w(&dy, rows, &w), &reference(&dy, &wt, rows, cols, out), &format!("{what} dy W, {rows} rows"));
            }
        }
    }
}

/// Off the fused path (what a GPU runs), every block format goes to the device as codes packed
/// into 32-bit words and widens there to the host's values exactly: the product with the
/// identity is the dequantized matrix (each output one weight times 1, plus zeros), on random
/// blocks whose every code and scale bit is random, Q8_0's -128 codes included.
#[test]
fn off_the_fused_path_every_format_widens_on_the_device_to_the_host_values() {
    use replora::adapters::FrozenBlocks;
    let device = Device::flex();
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1].into_iter().chain(NEW_FORMATS) {
        let cols = if format == BlockFormat::Q5_0 { 5 * 32 } else { 256 };
        let w = random_matrix(format, 67, cols, 11);
        let frozen = FrozenBlocks::new(w.clone(), &device);
        let identity = Tensor::<2>::from_data(TensorData::new(identity(cols), [cols, cols]), &device);
        let widened = replora::kernels::with_fallback(|| frozen.product(identity)).transpose();
        let widened = widened.into_data().try_into_vec_as::<f32>().unwrap();
        let dense = w.dequantize();
        let first_difference = widened.iter().zip(&dense).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "{format}: a widened value differs");
        let (dtype, bytes) = frozen.resident().expect("the product put the matrix on the device");
        assert_eq!(dtype, burn::tensor::DType::I32, "{format}");
        let bits_per_code = if matches!(format, BlockFormat::Q4_1 | BlockFormat::Q4_K | BlockFormat::Q4_0) { 4 } else { 8 };
        let scales = match format {
            BlockFormat::Q4_1 | BlockFormat::Q4_K | BlockFormat::Q6_K => 2, // with offsets, or per 16
            _ => 1,
        };
        assert_eq!(bytes, w.rows * cols * bits_per_code / 8 + w.rows * cols / 32 * scales * 4, "{format}: bytes on the device");
    }
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect()
}

/// A 36-byte-aligned GGUF writer, enough for a LLaMA config and its tensors.
#[derive(Default)]
struct GgufWriter {
    kv: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    tensors: u64,
}

impl GgufWriter {
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn kv(&mut self, key: &str, kind: u32, value: &[u8]) {
        Self::string(&mut self.kv, key);
        self.kv.extend(kind.to_le_bytes());
        self.kv.extend(value);
        self.kv_count += 1;
    }
    fn u32(&mut self, key: &str, v: u32) {
        self.kv(key, 4, &v.to_le_bytes());
    }
    /// A tensor of ggml type `kind` (its id) with GGUF `dims` (fastest first).
    fn tensor(&mut self, name: &str, dims: &[u64], kind: u32, bytes: &[u8]) {
        Self::string(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| self.infos.extend(d.to_le_bytes()));
        self.infos.extend(kind.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.data.resize(self.data.len().div_ceil(32) * 32, 0);
        self.tensors += 1;
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(self.tensors.to_le_bytes());
        b.extend(self.kv_count.to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.infos);
        b.resize(b.len().div_ceil(32) * 32, 0);
        b.extend(&self.data);
        b
    }
}

/// ggml's id of each format.
fn ggml_id(format: BlockFormat) -> u32 {
    match format {
        BlockFormat::Q4_0 => 2,
        BlockFormat::Q4_1 => 3,
        BlockFormat::Q5_0 => 6,
        BlockFormat::Q8_0 => 8,
        BlockFormat::Q4_K => 12,
        BlockFormat::Q6_K => 14,
        BlockFormat::F16 => 1,
        BlockFormat::Bf16 => 30,
    }
}

/// A one-layer LLaMA (hidden 256, 2 heads of 128, 1 KV head, intermediate 512) laid out as
/// llama.cpp's Q4_K_M files lay out small models: Q5_0 q/gate (rows not whole 256 super-blocks
/// there), Q8_0 v and embedding, Q4_K attention output, Q6_K down projection; and, as in F16
/// and BF16 files, an F16 k and a BF16 up projection.
fn q4_k_m_llama(path: &Path) {
    let (hidden, inter, vocab) = (256u64, 512u64, 48u64);
    let mut w = GgufWriter::default();
    w.kv("general.architecture", 8, &[&5u64.to_le_bytes()[..], b"llama"].concat());
    for (key, v) in [
        ("llama.block_count", 1),
        ("llama.embedding_length", hidden as u32),
        ("llama.feed_forward_length", inter as u32),
        ("llama.attention.head_count", 2),
        ("llama.attention.head_count_kv", 1),
        ("llama.vocab_size", vocab as u32),
    ] {
        w.u32(key, v);
    }
    w.kv("llama.attention.layer_norm_rms_epsilon", 6, &1e-5f32.to_le_bytes());
    let norm: Vec<u8> = (0..hidden).flat_map(|i| (1.0 + (i % 5) as f32 / 10.0).to_le_bytes()).collect();
    w.tensor("output_norm.weight", &[hidden], 0, &norm);
    w.tensor("blk.0.attn_norm.weight", &[hidden], 0, &norm);
    w.tensor("blk.0.ffn_norm.weight", &[hidden], 0, &norm);
    let matrices = [
        ("token_embd.weight", hidden, vocab, BlockFormat::Q8_0),
        ("blk.0.attn_q.weight", hidden, hidden, BlockFormat::Q5_0),
        ("blk.0.attn_k.weight", hidden, 128, BlockFormat::F16),
        ("blk.0.attn_v.weight", hidden, 128, BlockFormat::Q8_0),
        ("blk.0.attn_output.weight", hidden, hidden, BlockFormat::Q4_K),
        ("blk.0.ffn_gate.weight", hidden, inter, BlockFormat::Q5_0),
        ("blk.0.ffn_up.weight", hidden, inter, BlockFormat::Bf16),
        ("blk.0.ffn_down.weight", inter, hidden, BlockFormat::Q6_K),
    ];
    let mut rng = Rng(99);
    for (name, cols, rows, format) in matrices {
        let (per_block, block_bytes) = format.stored_block();
        let mut data = vec![];
        if format.is_16_bit_float() {
            // 16-bit weights of about 0.05, either sign.
            for _ in 0..rows * cols {
                let v = (rng.next() % 2001) as f32 / 10_000.0 - 0.1;
                data.extend(if format == BlockFormat::F16 { f16::from_f32(v).to_le_bytes() } else { bf16::from_f32(v).to_le_bytes() });
            }
            w.tensor(name, &[cols, rows], ggml_id(format), &data);
            continue;
        }
        for _ in 0..rows * cols / per_block as u64 {
            let mut block = rng.bytes(block_bytes);
            // Scales giving weights of about 0.05.
            let (at, d) = match format {
                BlockFormat::Q6_K => (208, 5e-5),
                BlockFormat::Q4_K => (0, 3e-4),
                BlockFormat::Q8_0 => (0, 5e-4),
                _ => (0, 4e-3),
            };
            block[at..at + 2].copy_from_slice(&f16::from_f32(d * (1.0 + (rng.next() % 100) as f32 / 100.0)).to_le_bytes());
            if format == BlockFormat::Q4_K {
                block[2..4].copy_from_slice(&f16::from_f32(0.001).to_le_bytes());
            }
            data.extend(block);
        }
        w.tensor(name, &[cols, rows], ggml_id(format), &data);
    }
    std::fs::write(path, w.bytes()).unwrap();
}

fn logits(m: &Llama, deltas: &Deltas, device: &Device) -> Vec<f32> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 17, 3, 29, 11, 8, 40, 47], [1, 8]), device);
    m.logits(m.forward(ids, None, None, deltas)).into_data().try_into_vec_as::<f32>().unwrap()
}

fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// The decoder holds each matrix in the file's format, gives the logits of its f32 widening
/// (`--quantize none`, whose weights are bit for bit those the file widens to at load), trains
/// LoRA on the blocks and merges into f32 weights with the same logits.
#[test]
fn a_q4_k_m_style_decoder_runs_on_its_blocks_widens_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    q4_k_m_llama(&path);
    let device = Device::flex().autodiff();
    let gguf = Gguf::open(&path).unwrap();
    let stored = Llama::from_gguf(&gguf, &path, &device).unwrap();
    let formats: Vec<Option<BlockFormat>> = stored.linears().iter().map(|l| l.weight.format()).collect();
    for format in [BlockFormat::Q5_0, BlockFormat::Q4_K, BlockFormat::Q6_K, BlockFormat::Q8_0, BlockFormat::F16, BlockFormat::Bf16] {
        assert!(formats.contains(&Some(format)), "no {format} linear: {formats:?}");
    }
    assert!(formats.iter().all(Option::is_some), "a linear was widened at load: {formats:?}");
    let held = replora::models::Family::Llama.info(path.to_str().unwrap(), Default::default(), &device).unwrap().weights_held;
    assert!(held.starts_with("linear weights: 1 bf16, 1 f16, 1 q4_k, 2 q5_0, 1 q6_k, 1 q8_0, "), "{held}");
    let widened = stored.clone().converted(None).unwrap();
    let config = replora::models::llama::LlamaConfig::from_value(gguf.llama_config().unwrap(), &path).unwrap();
    let from_f32 = Llama::from_tensors(config, &mut gguf.llama_tensors().unwrap(), &path, &device).unwrap();
    let weights = |m: &Llama| -> Vec<Vec<u32>> {
        let mut all: Vec<Vec<u32>> =
            m.linears().iter().map(|l| bits(&l.weight.dense().into_data().try_into_vec_as::<f32>().unwrap())).collect();
        all.push(bits(&m.embed_tokens.dense().into_data().try_into_vec_as::<f32>().unwrap()));
        all
    };
    assert!(weights(&widened) == weights(&from_f32), "the blocks widened after loading and the f32 tensors read from the file differ");
    let before = fused_calls(Kernel::QuantizedLinear);
    let ours = logits(&stored, &Deltas::none(), &device);
    assert_eq!(fused_calls(Kernel::QuantizedLinear) - before, 8, "7 linears and the tied head did not all run on their blocks");
    let reference = logits(&widened, &Deltas::none(), &device);
    let diff = relative_diff(&ours, &reference);
    assert!(diff < 1e-5, "stored blocks vs f32: logits differ by {diff} (relative)");

    let lora = AdapterConfig {
        method: Method::Lora.defaults(),
        r: 4,
        target_modules: TargetModules::Names(vec!["o_proj".into(), "down_proj".into(), "up_proj".into()]),
        seed: 3,
        ..Default::default()
    };
    let mut model = CausalLm { decoder: PeftModel::new(stored, &lora).unwrap() };
    let mut optim = burn::optim::AdamWConfig::new().init();
    let batch = LmBatch::pad(&[&LmSequence { tokens: vec![5, 17, 3, 29, 11, 8], answer_start: 4 }], 0);
    for _ in 0..3 {
        let loss = model.loss(&batch, &device);
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let peft = model.decoder;
    let note = replora::adapters::widening_note(&peft.model);
    assert!(note.contains("bf16, f16, q4_k, q5_0, q6_k, q8_0 weights"), "{note}");
    let unmerged = logits(&peft.model, &peft.deltas(), &device);
    let merged = peft.merge().unwrap();
    let f32_paths: Vec<&str> = merged.model.linears().iter().filter(|l| l.weight.format().is_none()).map(|l| l.path.as_str()).collect();
    assert_eq!(f32_paths.len(), 3, "the 3 adapted linears become f32: {f32_paths:?}");
    let diff = relative_diff(&logits(&merged.model, &merged.deltas(), &device), &unmerged);
    assert!(diff < 1e-5, "merged logits differ by {diff}");
}
