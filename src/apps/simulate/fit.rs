//! Least squares by L-BFGS with multi-start: every restart runs a short
//! L-BFGS on a screening subsample, the best one is polished on all data.
//! Every model gets the same restarts, iterations and screening size.

use super::model::{Base, Data, Layout, objective};
use super::rng::Rng;

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FitOpts {
    pub restarts: usize,
    pub screen_size: usize,
    pub screen_iters: usize,
    pub max_iters: usize,
}

#[derive(Clone, Debug)]
pub struct FitResult {
    pub params: Vec<f64>,
    pub loss: f64,
    pub iters: usize,
    pub evals: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimizes `f` from `x0` by L-BFGS (memory 10) with a backtracking Armijo line search.
pub fn lbfgs(f: &mut dyn FnMut(&[f64]) -> (f64, Vec<f64>), x0: Vec<f64>, max_iters: usize) -> FitResult {
    const MEM: usize = 10;
    let mut x = x0;
    let (mut fx, mut g) = f(&x);
    let mut evals = 1;
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut iters = 0;
    while iters < max_iters && fx.is_finite() {
        if g.iter().all(|v| v.abs() < 1e-13) {
            break;
        }
        // Two-loop recursion for d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = hist.last().map_or(1.0 / dot(&g, &g).sqrt().max(1.0), |(s, y, _)| dot(s, y) / dot(y, y));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 || !slope.is_finite() {
            hist.clear();
            dir = g.iter().map(|v| -v / dot(&g, &g).sqrt().max(1.0)).collect();
            slope = dot(&g, &dir);
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            let xn: Vec<f64> = x.iter().zip(&dir).map(|(a, b)| a + step * b).collect();
            let (fnew, gnew) = f(&xn);
            evals += 1;
            if fnew.is_finite() && fnew <= fx + 1e-4 * step * slope {
                accepted = Some((xn, fnew, gnew));
                break;
            }
            step *= 0.5;
        }
        iters += 1;
        let Some((xn, fnew, gnew)) = accepted else { break };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
            if hist.len() == MEM {
                hist.remove(0);
            }
            hist.push((s, y, 1.0 / sy));
        }
        let done = (fx - fnew) <= 1e-12 * fx.abs().max(1e-300);
        x = xn;
        fx = fnew;
        g = gnew;
        if done {
            break;
        }
    }
    FitResult { params: x, loss: fx, iters, evals }
}

/// Fits `layout` to `data` by multi-start least squares; `seed` drives the initial points.
/// With `frozen = Some(p)` (RepLoRA only) the generator weights are held at those of
/// `p` and only the 2r seeds are fitted.
pub fn fit(base: &Base, data: &Data, layout: &Layout, opts: &FitOpts, seed: u64, frozen: Option<&[f64]>) -> FitResult {
    let mut rng = Rng::new(seed);
    let n_seeds = 2 * layout.r;
    let objective = |d: &Data, p: &[f64]| {
        let (l, mut g) = objective(base, d, layout, p);
        if frozen.is_some() {
            g[n_seeds..].fill(0.0);
        }
        (l, g)
    };
    let screen = data.prefix(opts.screen_size.max(1));
    let mut best: Option<FitResult> = None;
    let (mut iters, mut evals) = (0, 0);
    for _ in 0..opts.restarts.max(1) {
        let mut x0 = layout.random_params(&mut rng);
        if let Some(t) = frozen {
            x0[n_seeds..].copy_from_slice(&t[n_seeds..]);
        }
        let r = lbfgs(&mut |p| objective(&screen, p), x0, opts.screen_iters);
        iters += r.iters;
        evals += r.evals;
        if best.as_ref().is_none_or(|b| r.loss < b.loss || !b.loss.is_finite()) {
            best = Some(r);
        }
    }
    let start = best.expect("at least one restart").params;
    let r = lbfgs(&mut |p| objective(data, p), start, opts.max_iters);
    FitResult { params: r.params, loss: r.loss, iters: iters + r.iters, evals: evals + r.evals }
}
