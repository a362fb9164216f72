//! Speed of the quantized products `x Wᵀ` at decoding's row counts (1 and 8 rows of `x`) and
//! at a prompt's or a training batch's (128), per block format, on the shapes of a small
//! decoder's MLP (`[2048, 640]`: gate/up; `[640, 2048]`: down), and of the same product on the
//! f32 matrix (`f32`). Prints one line per case: the fastest product of many and the median's
//! time, GB/s of the weight's bytes in memory (and of its GGUF file bytes) at the fastest, and
//! GFLOP/s.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example quantized_products`. Q4_K and Q6_K,
//! whose rows must be whole 256-value super-blocks, skip the 640-wide shape, as llama.cpp does.

use std::time::Instant;

use half::f16;
use replora::kernels::quantized::product_wt;
use replora::kernels::sgemm::{Mat, product};
use replora::quantization::{BlockFormat, QuantizedMatrix};

/// Random stored blocks of `format` with every code bit random and scales near 1/128; 16-bit
/// floats of random sign and mantissa, below 1 (random bits would hold NaNs and subnormals).
fn matrix(format: BlockFormat, rows: usize, cols: usize) -> QuantizedMatrix {
    let (per_block, block_bytes) = format.stored_block();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    if format.is_16_bit_float() {
        let values: Vec<f32> = (0..rows * cols).map(|_| (byte() as f32 - 127.5) / 128.0).collect();
        return QuantizedMatrix::quantize(format, rows, cols, &values, "bench").expect("finite values");
    }
    let scales_at: &[usize] = match format {
        BlockFormat::Q4_1 | BlockFormat::Q4_K => &[0, 2],
        BlockFormat::Q6_K => &[208],
        _ => &[0],
    };
    let mut data = Vec::with_capacity(rows * cols / per_block * block_bytes);
    for _ in 0..rows * cols / per_block {
        let mut block: Vec<u8> = (0..block_bytes).map(|_| byte()).collect();
        for &at in scales_at {
            block[at..at + 2].copy_from_slice(&f16::from_f32(1.0 / 128.0).to_le_bytes());
        }
        data.extend(block);
    }
    QuantizedMatrix::from_blocks(format, rows, cols, &data, "bench").expect("valid blocks")
}

fn main() {
    for (rows, cols) in [(2048usize, 640usize), (640, 2048)] {
        for format in BlockFormat::ALL {
            let (per_block, block_bytes) = format.stored_block();
            if !cols.is_multiple_of(per_block) {
                continue;
            }
            let w = matrix(format, rows, cols);
            let file_bytes = rows * cols / per_block * block_bytes;
            for batch in [1, 8, 128] {
                let x = input(batch, cols);
                let (best, median, sink) = timed(batch, &|| product_wt(&x, batch, &w)[0]);
                report(&format.to_string(), [rows, cols], batch, (best, median), w.size_bytes(), file_bytes, sink);
            }
        }
        // The same products on the f32 matrix, as an f32 base runs them.
        let dense = matrix(BlockFormat::Q8_0, rows, cols).dequantize();
        for batch in [1, 8, 128] {
            let x = input(batch, cols);
            let f32_product = || product(batch, rows, cols, Mat::rows(&x, cols), Mat::rows(&dense, cols).t())[0];
            let (best, median, sink) = timed(batch, &f32_product);
            report("f32", [rows, cols], batch, (best, median), 4 * rows * cols, 4 * rows * cols, sink);
        }
    }
}

fn input(batch: usize, cols: usize) -> Vec<f32> {
    (0..batch * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect()
}

/// The fastest and the median time of many products (on a shared machine the others catch a
/// neighbour), and a sum of their first outputs that keeps them from being optimized away.
fn timed(batch: usize, product: &dyn Fn() -> f32) -> (f64, f64, f32) {
    let calls = if batch > 8 { 100 } else { 2000 };
    let mut times = Vec::with_capacity(calls);
    let mut sink = 0f32;
    for _ in 0..calls {
        let start = Instant::now();
        sink += product();
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[0], times[calls / 2], sink)
}

fn report(
    format: &str,
    [rows, cols]: [usize; 2],
    batch: usize,
    (best, median): (f64, f64),
    memory_bytes: usize,
    file_bytes: usize,
    sink: f32,
) {
    println!(
        "{{\"format\": \"{format}\", \"shape\": [{rows}, {cols}], \"rows_of_x\": {batch}, \"best_us\": {:.1}, \"median_us\": {:.1}, \"memory_bytes\": {memory_bytes}, \"file_bytes\": {file_bytes}, \"gb_per_s\": {:.1}, \"file_gb_per_s\": {:.1}, \"gflop_per_s\": {:.1}, \"finite\": {}}}",
        best * 1e6,
        median * 1e6,
        memory_bytes as f64 / best / 1e9,
        file_bytes as f64 / best / 1e9,
        2.0 * (batch * rows * cols) as f64 / best / 1e9,
        sink.is_finite(),
    );
}
