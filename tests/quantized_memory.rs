//! A training step on a packed base off the fused CPU path (a GPU's path) holds no widened f32
//! copy of a frozen matrix between its forward and backward passes: backward widens the packed
//! copy again. Alone in its own binary, because it reads the process's resident memory.

use burn::prelude::*;
use burn::tensor::TensorData;
use replora::adapters::FrozenBlocks;
use replora::kernels;
use replora::quantization::{BlockFormat, QuantizedMatrix};

/// This process's resident memory in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Eight products through a 4096 x 4096 Q8_0 matrix (64 MiB widened) leave the graph holding
/// less than two widened copies (47 MiB measured, the allocator's spare included), where burn's
/// own product keeps all eight (512 MiB measured); the input's gradient equals the one through
/// the widened matrix.
#[test]
fn a_tracked_product_keeps_no_widened_matrix_for_backward() {
    const N: usize = 4096;
    const WIDENED: u64 = (N * N * 4) as u64;
    let weights: Vec<f32> = (0..N * N).map(|i| ((i * 37 % 101) as f32 - 50.0) / (40.0 * N as f32).sqrt()).collect();
    let matrix = QuantizedMatrix::quantize(BlockFormat::Q8_0, N, N, &weights, "w").unwrap();
    drop(weights);
    let device = Device::flex().autodiff();
    let frozen = FrozenBlocks::new(matrix, &device);
    let inputs: Vec<f32> = (0..2 * N).map(|i| ((i * 11 % 29) as f32 - 14.0) / 7.0).collect();
    let x = Tensor::<2>::from_data(TensorData::new(inputs, [2, N]), &device).require_grad();
    let (held, dx) = kernels::with_fallback(|| {
        frozen.product(x.clone()); // puts the packed copy on the device
        let before = resident_bytes();
        let mut y = x.clone();
        for _ in 0..8 {
            y = frozen.product(y);
        }
        let held = resident_bytes().saturating_sub(before);
        let grads = y.sum().backward();
        (held, x.grad(&grads).unwrap())
    });
    assert!(held < 2 * WIDENED, "the forward pass holds {} MiB for backward", held >> 20);

    let dense = frozen.matrix.dequantize();
    let w = Tensor::<2>::from_data(TensorData::new(dense, [N, N]), &device.clone().inner());
    let mut dy = Tensor::<2>::ones([2, N], &device.inner());
    for _ in 0..8 {
        dy = dy.matmul(w.clone());
    }
    let (ours, reference) = (dx.into_data().try_to_vec::<f32>().unwrap(), dy.into_data().try_to_vec::<f32>().unwrap());
    let largest = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-4 * largest, "the gradient differs by {worst} (largest {largest})");
}
