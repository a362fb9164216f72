//! Every fused kernel's hand-written backward pass against central finite differences of its
//! own forward pass, in f32 on the flex backend (where the kernels engage; the f64 gradient tests
//! in tests/gradients.rs run burn's ops instead). Each check also proves the fused path ran.

use burn::prelude::*;

use super::{Kernel, attention, fused_calls, gelu, layer_norm, linear, rms_norm, rope, silu, softmax_last, swiglu};

/// Deterministic values in about [-1, 1], varied by `seed`.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 + seed * 53) % 97) as f32 / 48.0 - 1.0).collect()
}

/// A kernel applied to flat inputs of the given lengths (the closure reshapes them), with its
/// output flattened.
struct Case {
    kernel: Kernel,
    lengths: Vec<usize>,
    f: Box<dyn Fn(&[Tensor<1>]) -> Tensor<1>>,
}

/// `sum(f(inputs) * r)` for a fixed `r`, and (on an autodiff device) its gradients.
fn loss(case: &Case, inputs: &[Vec<f32>], tracked: bool) -> (f32, Option<Vec<Vec<f32>>>) {
    let device = &if tracked { Device::flex().autodiff() } else { Device::flex() };
    let tensors: Vec<Tensor<1>> = inputs
        .iter()
        .map(|v| {
            let t = Tensor::<1>::from_floats(v.as_slice(), device);
            if tracked { t.require_grad() } else { t }
        })
        .collect();
    let y = (case.f)(&tensors);
    let r = Tensor::<1>::from_floats(values(y.dims()[0], 99).as_slice(), device);
    let loss = (y * r).sum();
    let value = loss.clone().into_data().try_into_vec_as::<f32>().unwrap()[0];
    let grads = tracked.then(|| {
        let grads = loss.backward();
        tensors.iter().map(|t| t.grad(&grads).map_or(vec![0.0; t.dims()[0]], |g| g.into_data().try_into_vec_as::<f32>().unwrap())).collect()
    });
    (value, grads)
}

/// Checks every input entry's gradient; returns the worst error relative to max(1, |gradient|).
fn check(name: &str, case: Case) -> f32 {
    let inputs: Vec<Vec<f32>> = case.lengths.iter().enumerate().map(|(i, &n)| values(n, i + 1)).collect();
    let before = fused_calls(case.kernel);
    let (_, grads) = loss(&case, &inputs, true);
    assert!(fused_calls(case.kernel) > before, "{name}: the fused {:?} kernel did not engage", case.kernel);
    let grads = grads.unwrap();
    let eps = 1e-2f32;
    let mut worst = 0f32;
    for (input, grad) in grads.iter().enumerate() {
        for i in 0..inputs[input].len() {
            let at = |delta: f32| {
                let mut moved = inputs.clone();
                moved[input][i] += delta;
                loss(&case, &moved, false).0
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let err = (fd - grad[i]).abs() / grad[i].abs().max(1.0);
            assert!(err < 5e-3, "{name}: d loss / d input {input}[{i}]: fused backward {}, finite difference {fd}", grad[i]);
            worst = worst.max(err);
        }
    }
    worst
}

fn case(kernel: Kernel, lengths: &[usize], f: impl Fn(&[Tensor<1>]) -> Tensor<1> + 'static) -> Case {
    Case { kernel, lengths: lengths.to_vec(), f: Box::new(f) }
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n: usize = t.dims().iter().product();
    t.reshape([n])
}

#[test]
fn elementwise_and_softmax_backward_match_finite_differences() {
    let shape = [2, 3, 5];
    let cases = [
        ("gelu", case(Kernel::Gelu, &[30], move |t| flat(gelu(t[0].clone().reshape(shape) * 2.0)))),
        ("silu", case(Kernel::Silu, &[30], move |t| flat(silu(t[0].clone().reshape(shape) * 2.0)))),
        ("softmax", case(Kernel::Softmax, &[30], move |t| flat(softmax_last(t[0].clone().reshape(shape) * 2.0)))),
        ("swiglu", case(Kernel::SwiGlu, &[30, 30], move |t| flat(swiglu(t[0].clone().reshape(shape) * 2.0, t[1].clone().reshape(shape))))),
    ];
    for (name, c) in cases {
        let worst = check(name, c);
        eprintln!("{name}: worst relative error {worst:.1e}");
    }
}

#[test]
fn linear_and_norm_backward_match_finite_differences() {
    let cases = [
        (
            "linear",
            case(Kernel::Linear, &[24, 20, 5], |t| {
                flat(linear(t[0].clone().reshape([2, 3, 4]), t[1].clone().reshape([4, 5]), Some(t[2].clone())))
            }),
        ),
        (
            "layer_norm",
            case(Kernel::Norm, &[24, 6, 6], |t| {
                flat(layer_norm(t[0].clone().reshape([2, 2, 6]) * 3.0, t[1].clone() + 1.0, Some(t[2].clone()), 1e-5))
            }),
        ),
        ("rms_norm", case(Kernel::Norm, &[24, 6], |t| flat(rms_norm(t[0].clone().reshape([2, 2, 6]) * 3.0, t[1].clone() + 1.0, 1e-5)))),
    ];
    for (name, c) in cases {
        let worst = check(name, c);
        eprintln!("{name}: worst relative error {worst:.1e}");
    }
}

#[test]
fn rope_and_attention_backward_match_finite_differences() {
    let rotary = case(Kernel::Rope, &[48], |t| {
        let device = t[0].device();
        let angles = Tensor::<1>::from_floats(values(12, 7).as_slice(), &device).reshape([3, 4]) * 3.0;
        let angles = Tensor::cat(vec![angles.clone(), angles], 1);
        flat(rope(t[0].clone().reshape([2, 3, 8]), &angles.clone().cos(), &angles.sin()))
    });
    // Grouped-query: 4 query heads read 2 key/value heads; the last key is masked for batch 1.
    let grouped = case(Kernel::Attention, &[2 * 4 * 3 * 4, 2 * 2 * 5 * 4, 2 * 2 * 5 * 4], |t| {
        let device = t[0].device();
        let mut mask = vec![0f32; 2 * 5];
        mask[9] = -1e9;
        let bias = Tensor::<1>::from_floats(mask.as_slice(), &device).reshape([2, 1, 1, 5]);
        let (q, k, v) = (t[0].clone().reshape([2, 4, 3, 4]), t[1].clone().reshape([2, 2, 5, 4]), t[2].clone().reshape([2, 2, 5, 4]));
        flat(attention(&q, &k, &v, &bias).expect("flex f32 attention"))
    });
    for (name, c) in [("rope", rotary), ("attention", grouped)] {
        let worst = check(name, c);
        eprintln!("{name}: worst relative error {worst:.1e}");
    }
}
