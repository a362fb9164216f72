//! Element-wise f32 math written so that the compiler can vectorize it: no calls into libm,
//! no branches (selects only), and a runtime switch to AVX2/FMA code where the CPU has it.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortize scheduling, small enough to balance.
pub(super) const CHUNK: usize = 16 * 1024;

/// 1.5 * 2^23: adding it to a float below 2^22 in magnitude rounds it to an integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` with about 1 ulp error (Cephes `expf`: range reduction by ln 2, degree-5 minimax).
/// Below -87.3 it is 0 (no subnormals), so a masked score of -inf gets exactly no weight.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let mantissa = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n: build 2^n directly in the exponent field.
    let exponent = (shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23;
    let y = mantissa * f32::from_bits(exponent as u32);
    if underflow { 0.0 } else { y }
}

/// Sixteen running lanes, so that reductions vectorize without reassociation by the compiler.
const LANES: usize = 16;

/// The sum of `a[i] * b[i]`.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The sum of the elements.
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element (-inf for an empty slice).
#[inline(always)]
pub fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// The standard normal CDF `Phi(x)` and `exp(-x^2 / 2)`, which its derivative reuses.
/// `Phi` uses Abramowitz & Stegun 7.1.26 for erfc (absolute error <= 1.5e-7 / 2), computed
/// from the tail so that it stays relatively accurate for very negative x; in f32 the absolute
/// error is below 3e-7 (f32 rounding alone: 6e-8).
#[inline(always)]
pub fn normal_cdf(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let gauss = exp(-0.5 * x * x);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let tail = 0.5 * poly * gauss;
    (if x < 0.0 { tail } else { 1.0 - tail }, gauss)
}

/// The logistic function; `exp`'s clamp keeps it finite for any input.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `1 / sqrt(2 pi)`: the standard normal density at 0.
pub const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `out[i] = f(a[i])` over all elements, in parallel chunks, with AVX2 code where available.
pub fn map(a: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Copy) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| simd(|| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a))));
}

/// `b[i] = f(a[i], b[i])` in place, like [`map`].
pub fn update(a: &[f32], b: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync + Copy) {
    assert_eq!(a.len(), b.len());
    b.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(b, a)| simd(|| b.iter_mut().zip(a).for_each(|(b, &a)| *b = f(a, *b))));
}

/// Runs `body` compiled for AVX2 + FMA when the CPU has them (checked once, cached by std).
#[inline(always)]
pub fn simd(body: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected on this CPU.
        return unsafe { with_avx2(body) };
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2(body: impl FnOnce()) {
    body()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm() {
        let mut worst = 0f32;
        for i in -8700..=8000 {
            let x = i as f32 * 0.01 + 0.003;
            let (ours, exact) = (exp(x), (x as f64).exp() as f32);
            worst = worst.max(((ours - exact) / exact).abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) == 0.0 && exp(f32::NEG_INFINITY) == 0.0 && exp(f32::NAN).is_nan());
    }

    #[test]
    fn reductions() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let close = |x: f32, y: f32| (x - y).abs() < 1e-5;
        assert!(close(dot(&a, &b), a.iter().zip(&b).map(|(a, b)| a * b).sum()));
        assert!(close(sum(&a), a.iter().sum()));
        assert_eq!(max(&a), a.iter().cloned().fold(f32::MIN, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn normal_cdf_is_close_to_erf() {
        let (mut worst_cdf, mut worst_gauss) = (0f64, 0f64);
        for i in -10000..=10000 {
            let x = (i as f32 * 0.001) as f64;
            let exact = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let (cdf, gauss) = normal_cdf(x as f32);
            worst_cdf = worst_cdf.max((cdf as f64 - exact).abs());
            worst_gauss = worst_gauss.max((gauss as f64 - (-0.5 * x * x).exp()).abs());
        }
        // A&S's own bound is 7.5e-8 on Phi; f32 evaluation of the polynomial adds about as much.
        assert!(worst_cdf < 3e-7 && worst_gauss < 1e-7, "Phi error {worst_cdf}, exp error {worst_gauss}");
    }
}
