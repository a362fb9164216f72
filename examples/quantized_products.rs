//! Speed of the quantized products `x Wᵀ` at decoding's row counts, per block format, on the
//! shapes of a small decoder's MLP (`[2048, 640]`: gate/up; `[640, 2048]`: down). Prints one
//! line per case: GB/s of the weight's in-memory bytes read (and of its GGUF file bytes) by
//! the fastest of 2000 products (and the median's time).
//!
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 RAYON_NUM_THREADS=1 cargo run --example quantized_products`
//! (the crate optimized, its dependencies as the dev profile builds them; `--release` builds
//! all of them again). Q4_K and Q6_K, whose rows must be whole 256-value super-blocks, skip
//! the 640-wide shape, as llama.cpp does.

use std::time::Instant;

use half::f16;
use replora::kernels::quantized::product_wt;
use replora::quantization::{BlockFormat, QuantizedMatrix};

/// Random stored blocks of `format` with every code bit random and scales near 1/128.
fn matrix(format: BlockFormat, rows: usize, cols: usize) -> QuantizedMatrix {
    let (per_block, block_bytes) = format.stored_block();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
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
    QuantizedMatrix::from_blocks(format, rows, cols, data, "bench").expect("valid blocks")
}

fn main() {
    // The fastest of many single products: on a shared machine the others catch a neighbour.
    let calls = 2000;
    for (rows, cols) in [(2048usize, 640usize), (640, 2048)] {
        for format in BlockFormat::ALL {
            let (per_block, block_bytes) = format.stored_block();
            if !cols.is_multiple_of(per_block) {
                continue;
            }
            let w = matrix(format, rows, cols);
            let file_bytes = rows * cols / per_block * block_bytes;
            for batch in [1, 8] {
                let x: Vec<f32> = (0..batch * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
                let mut times = Vec::with_capacity(calls);
                let mut sink = 0f32;
                for _ in 0..calls {
                    let start = Instant::now();
                    sink += product_wt(&x, batch, &w)[0];
                    times.push(start.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let (best, median) = (times[0], times[calls / 2]);
                println!(
                    "{{\"format\": \"{format}\", \"shape\": [{rows}, {cols}], \"rows_of_x\": {batch}, \"best_us\": {:.1}, \"median_us\": {:.1}, \"memory_bytes\": {}, \"file_bytes\": {file_bytes}, \"gb_per_s\": {:.1}, \"file_gb_per_s\": {:.1}, \"finite\": {}}}",
                    best * 1e6,
                    median * 1e6,
                    w.size_bytes(),
                    w.size_bytes() as f64 / best / 1e9,
                    file_bytes as f64 / best / 1e9,
                    sink.is_finite(),
                );
            }
        }
    }
}
