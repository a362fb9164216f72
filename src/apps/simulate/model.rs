//! The attention-head mixture of experts, the three fitted parameterizations
//! (LoRA, RepLoRA-linear, RepLoRA-nonlinear), the data generator and the
//! hand-written loss gradient.

use super::linalg::Mat;
use super::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity,
    Tanh,
}

impl Act {
    fn f(self, x: f64) -> f64 {
        match self {
            Act::Identity => x,
            Act::Tanh => x.tanh(),
        }
    }
    fn df(self, x: f64) -> f64 {
        match self {
            Act::Identity => 1.0,
            Act::Tanh => 1.0 - x.tanh().powi(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ModelKind {
    /// Independent factors B_Q, A_Q, B_V, A_V.
    Lora,
    /// Shared diagonal seeds through bias-free linear generators.
    RepLinear,
    /// Shared diagonal seeds through bias-free tanh generators.
    RepNonlinear,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::Lora, ModelKind::RepLinear, ModelKind::RepNonlinear];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Lora => "LoRA",
            ModelKind::RepLinear => "RepLoRA-linear",
            ModelKind::RepNonlinear => "RepLoRA-nonlinear",
        }
    }

    fn act(self) -> Act {
        match self {
            ModelKind::RepNonlinear => Act::Tanh,
            _ => Act::Identity,
        }
    }
}

/// Frozen weights of the head: W_Q, W_K, W_V, all d x d.
#[derive(Clone, Debug)]
pub struct Base {
    pub wq: Mat,
    pub wk: Mat,
    pub wv: Mat,
}

impl Base {
    /// Entries N(0, 1/d), so that scores are O(1) after the 1/sqrt(d) scaling.
    pub fn random(d: usize, rng: &mut Rng) -> Self {
        let s = 1.0 / (d as f64).sqrt();
        let mut m = || Mat::from_vec(d, d, rng.normal_vec(d * d, s));
        Base { wq: m(), wk: m(), wv: m() }
    }
}

/// Low-rank factors: B_Q (d x r), A_Q (r x d), B_V (d x r), A_V (r x d).
#[derive(Clone, Debug)]
pub struct Factors {
    pub bq: Mat,
    pub aq: Mat,
    pub bv: Mat,
    pub av: Mat,
}

impl Factors {
    /// The updates (B_Q A_Q, B_V A_V): all that the head's output depends on.
    pub fn deltas(&self) -> (Mat, Mat) {
        (self.bq.matmul(&self.aq), self.bv.matmul(&self.av))
    }
}

/// Shapes of one fitted (or true) model; params are packed in a flat vector.
/// LoRA: `[B_Q, A_Q, B_V, A_V]` (row-major). RepLoRA: `[a, b, W1_A, W2_A, W1_B, W2_B]`
/// with seeds `A = diag(a)`, `B = diag(b)` and generators
/// `g(s e_i) = W2 act(W1 s e_i)` (W1: h x r, W2: 2d x h, no biases so that a zero
/// seed gives a zero row and a rank-r truth embeds in a rank-(r+1) fit).
/// Row i of `g_A(A)` is split into row i of A_Q and of A_V, row i of `g_B(B)`
/// into column i of B_Q and of B_V (spec section 3, `seed = diagonal`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub kind: ModelKind,
    pub d: usize,
    pub r: usize,
    pub h: usize,
}

impl Layout {
    pub fn num_params(&self) -> usize {
        let (d, r, h) = (self.d, self.r, self.h);
        match self.kind {
            ModelKind::Lora => 4 * d * r,
            _ => 2 * r + 2 * (h * r + 2 * d * h),
        }
    }

    /// Random parameters: the law used both for the truth's generators and for
    /// every restart's initial point (seeds are redrawn by the caller for the truth).
    pub fn random_params(&self, rng: &mut Rng) -> Vec<f64> {
        let (d, r, h) = (self.d, self.r, self.h);
        match self.kind {
            ModelKind::Lora => rng.normal_vec(4 * d * r, 0.5),
            _ => {
                let mut p = rng.normal_vec(2 * r, 1.0);
                p.extend(rng.normal_vec(h * r, 1.0));
                p.extend(rng.normal_vec(2 * d * h, 1.0 / (h as f64).sqrt()));
                p.extend(rng.normal_vec(h * r, 1.0));
                p.extend(rng.normal_vec(2 * d * h, 1.0 / ((h * d) as f64).sqrt()));
                p
            }
        }
    }

    fn rep_slices<'a>(&self, p: &'a [f64]) -> [&'a [f64]; 6] {
        let (d, r, h) = (self.d, self.r, self.h);
        let sizes = [r, r, h * r, 2 * d * h, h * r, 2 * d * h];
        let mut out = [&p[0..0]; 6];
        let mut off = 0;
        for (o, s) in out.iter_mut().zip(sizes) {
            *o = &p[off..off + s];
            off += s;
        }
        out
    }

    /// Materializes the low-rank factors from the parameters.
    pub fn factors(&self, p: &[f64]) -> Factors {
        assert_eq!(p.len(), self.num_params());
        let (d, r, h) = (self.d, self.r, self.h);
        if self.kind == ModelKind::Lora {
            let dr = d * r;
            return Factors {
                bq: Mat::from_vec(d, r, p[0..dr].to_vec()),
                aq: Mat::from_vec(r, d, p[dr..2 * dr].to_vec()),
                bv: Mat::from_vec(d, r, p[2 * dr..3 * dr].to_vec()),
                av: Mat::from_vec(r, d, p[3 * dr..4 * dr].to_vec()),
            };
        }
        let [a, b, w1a, w2a, w1b, w2b] = self.rep_slices(p);
        let act = self.kind.act();
        let mut f = Factors { bq: Mat::zeros(d, r), aq: Mat::zeros(r, d), bv: Mat::zeros(d, r), av: Mat::zeros(r, d) };
        for i in 0..r {
            let oa = generate(a[i], i, w1a, w2a, r, h, act);
            let ob = generate(b[i], i, w1b, w2b, r, h, act);
            for c in 0..d {
                f.aq[(i, c)] = oa[c];
                f.av[(i, c)] = oa[d + c];
                f.bq[(c, i)] = ob[c];
                f.bv[(c, i)] = ob[d + c];
            }
        }
        f
    }

    /// Chain rule from gradients w.r.t. the factors to gradients w.r.t. the params.
    pub fn backprop(&self, p: &[f64], g: &Factors) -> Vec<f64> {
        let (d, r, h) = (self.d, self.r, self.h);
        if self.kind == ModelKind::Lora {
            return [g.bq.a.as_slice(), &g.aq.a, &g.bv.a, &g.av.a].concat();
        }
        let [a, b, w1a, w2a, w1b, w2b] = self.rep_slices(p);
        let act = self.kind.act();
        let mut out = vec![0.0; p.len()];
        let offs = [0, r, 2 * r, 2 * r + h * r, 2 * r + h * r + 2 * d * h, 2 * r + 2 * h * r + 2 * d * h];
        for i in 0..r {
            let ga: Vec<f64> = (0..d).map(|c| g.aq[(i, c)]).chain((0..d).map(|c| g.av[(i, c)])).collect();
            let gb: Vec<f64> = (0..d).map(|c| g.bq[(c, i)]).chain((0..d).map(|c| g.bv[(c, i)])).collect();
            for (seed, w1, w2, gout, o_seed, o_w1, o_w2) in
                [(a[i], w1a, w2a, &ga, offs[0], offs[2], offs[3]), (b[i], w1b, w2b, &gb, offs[1], offs[4], offs[5])]
            {
                for k in 0..h {
                    let z = seed * w1[k * r + i];
                    let t = act.f(z);
                    let mut gt = 0.0;
                    for o in 0..2 * d {
                        out[o_w2 + o * h + k] += gout[o] * t;
                        gt += w2[o * h + k] * gout[o];
                    }
                    let gz = gt * act.df(z);
                    out[o_seed + i] += w1[k * r + i] * gz;
                    out[o_w1 + k * r + i] += seed * gz;
                }
            }
        }
        out
    }
}

/// Output row of a bias-free generator for input `seed * e_i`: `W2 act(seed * W1[:, i])`.
fn generate(seed: f64, i: usize, w1: &[f64], w2: &[f64], r: usize, h: usize, act: Act) -> Vec<f64> {
    let t: Vec<f64> = (0..h).map(|k| act.f(seed * w1[k * r + i])).collect();
    w2.chunks(h).map(|row| row.iter().zip(&t).map(|(w, t)| w * t).sum()).collect()
}

/// A ground truth drawn from the RepLoRA class with generators `act` and
/// `r_fit` seed slots, of which the first `r_true` get |a_i|, |b_i| in [0.5, 1.5]
/// (away from zero so the rank is exactly r_true) and the rest are zero.
/// Returns the truth's parameters (in `Layout { kind: act, r: r_fit, .. }`) and factors.
pub fn draw_truth(d: usize, r_true: usize, r_fit: usize, h: usize, act: ModelKind, rng: &mut Rng) -> (Vec<f64>, Factors) {
    let layout = Layout { kind: act, d, r: r_fit, h };
    let mut p = layout.random_params(rng);
    for (k, s) in p.iter_mut().take(2 * r_fit).enumerate() {
        let mag = 0.5 + rng.uniform();
        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        *s = if k % r_fit < r_true { sign * mag } else { 0.0 };
    }
    let f = layout.factors(&p);
    (p, f)
}

/// n samples of N tokens in R^d: `x` and `y` are n x N x d, row-major.
#[derive(Clone, Debug)]
pub struct Data {
    pub n: usize,
    pub tokens: usize,
    pub d: usize,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Data {
    /// The first `m` samples (the data are i.i.d., so a prefix is a random subsample).
    pub fn prefix(&self, m: usize) -> Data {
        let m = m.min(self.n);
        let len = m * self.tokens * self.d;
        Data { n: m, tokens: self.tokens, d: self.d, x: self.x[..len].to_vec(), y: self.y[..len].to_vec() }
    }
}

/// Draws X ~ N(0, I) and Y = f(X) + noise * N(0, I) from the head with updates `truth`.
pub fn generate_data(base: &Base, truth: &Factors, n: usize, tokens: usize, noise: f64, rng: &mut Rng) -> Data {
    let d = base.wq.rows;
    let x = rng.normal_vec(n * tokens * d, 1.0);
    let (dq, dv) = truth.deltas();
    let head = Head::new(base, &dq, &dv);
    let mut y = vec![0.0; x.len()];
    let mut scratch = Scratch::new(tokens, d);
    let stride = tokens * d;
    for s in 0..n {
        head.forward(&x[s * stride..(s + 1) * stride], &mut scratch);
        for (k, yk) in y[s * stride..(s + 1) * stride].iter_mut().enumerate() {
            *yk = scratch.f[k] + noise * rng.normal();
        }
    }
    Data { n, tokens, d, x, y }
}

/// The head with the updates applied: `M = (W_Q + dQ) W_K^T / sqrt(d)`, `V = W_V + dV`.
struct Head {
    d: usize,
    m: Mat,
    v: Mat,
}

struct Scratch {
    q: Vec<f64>,
    vt: Vec<f64>,
    p: Vec<f64>,
    f: Vec<f64>,
}

impl Scratch {
    fn new(tokens: usize, d: usize) -> Self {
        Scratch { q: vec![0.0; tokens * d], vt: vec![0.0; tokens * d], p: vec![0.0; tokens * tokens], f: vec![0.0; tokens * d] }
    }
}

impl Head {
    fn new(base: &Base, dq: &Mat, dv: &Mat) -> Self {
        let d = base.wq.rows;
        let m = base.wq.add(dq).matmul(&base.wk.t()).scale(1.0 / (d as f64).sqrt());
        Head { d, m, v: base.wv.add(dv) }
    }

    /// Output tokens `f_i = sum_j softmax_j(x_i^T M x_j) V^T x_j` into `s.f`.
    fn forward(&self, x: &[f64], s: &mut Scratch) {
        let d = self.d;
        let n_tok = x.len() / d;
        for i in 0..n_tok {
            let xi = &x[i * d..(i + 1) * d];
            for b in 0..d {
                let (mut q, mut v) = (0.0, 0.0);
                for a in 0..d {
                    q += xi[a] * self.m.a[a * d + b];
                    v += xi[a] * self.v.a[a * d + b];
                }
                s.q[i * d + b] = q;
                s.vt[i * d + b] = v;
            }
        }
        for i in 0..n_tok {
            let qi = &s.q[i * d..(i + 1) * d];
            let row = &mut s.p[i * n_tok..(i + 1) * n_tok];
            for j in 0..n_tok {
                row[j] = qi.iter().zip(&x[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum();
            }
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut z = 0.0;
            for v in row.iter_mut() {
                *v = (*v - mx).exp();
                z += *v;
            }
            for v in row.iter_mut() {
                *v /= z;
            }
            let fi = &mut s.f[i * d..(i + 1) * d];
            fi.fill(0.0);
            for j in 0..n_tok {
                let pij = row[j];
                for c in 0..d {
                    fi[c] += pij * s.vt[j * d + c];
                }
            }
        }
    }
}

/// Least-squares loss `L = 1/(2n) sum_s sum_i ||f_i(X_s) - y_{s,i}||^2` and, if
/// asked, its gradients w.r.t. dQ = B_Q A_Q and dV = B_V A_V.
pub fn loss_grad_deltas(base: &Base, data: &Data, dq: &Mat, dv: &Mat, grad: bool) -> (f64, Mat, Mat) {
    let d = data.d;
    let nt = data.tokens;
    let head = Head::new(base, dq, dv);
    let mut s = Scratch::new(nt, d);
    let (mut gm, mut gv) = (Mat::zeros(d, d), Mat::zeros(d, d));
    let mut loss = 0.0;
    let inv_n = 1.0 / data.n as f64;
    let (mut gf, mut dvt, mut w) = (vec![0.0; nt * d], vec![0.0; nt * d], vec![0.0; d]);
    let mut dp = vec![0.0; nt];
    let stride = nt * d;
    for smp in 0..data.n {
        let x = &data.x[smp * stride..(smp + 1) * stride];
        let y = &data.y[smp * stride..(smp + 1) * stride];
        head.forward(x, &mut s);
        for k in 0..stride {
            let r = s.f[k] - y[k];
            loss += r * r;
            gf[k] = r * inv_n;
        }
        if !grad {
            continue;
        }
        dvt.fill(0.0);
        for i in 0..nt {
            let p = &s.p[i * nt..(i + 1) * nt];
            let gfi = &gf[i * d..(i + 1) * d];
            let mut mean = 0.0;
            for j in 0..nt {
                let vj = &s.vt[j * d..(j + 1) * d];
                dp[j] = gfi.iter().zip(vj).map(|(a, b)| a * b).sum();
                mean += p[j] * dp[j];
                for c in 0..d {
                    dvt[j * d + c] += p[j] * gfi[c];
                }
            }
            // w_i = sum_j dL/ds_ij x_j; then dL/dM += x_i w_i^T.
            w.fill(0.0);
            for j in 0..nt {
                let ds = p[j] * (dp[j] - mean);
                for b in 0..d {
                    w[b] += ds * x[j * d + b];
                }
            }
            for a in 0..d {
                let xa = x[i * d + a];
                for b in 0..d {
                    gm.a[a * d + b] += xa * w[b];
                }
            }
        }
        for j in 0..nt {
            for a in 0..d {
                let xa = x[j * d + a];
                for c in 0..d {
                    gv.a[a * d + c] += xa * dvt[j * d + c];
                }
            }
        }
    }
    let gq = gm.matmul(&base.wk).scale(1.0 / (d as f64).sqrt());
    (0.5 * loss * inv_n, gq, gv)
}

/// Loss and gradient w.r.t. the flat parameter vector of `layout`.
pub fn objective(base: &Base, data: &Data, layout: &Layout, p: &[f64]) -> (f64, Vec<f64>) {
    let f = layout.factors(p);
    let (dq, dv) = f.deltas();
    let (loss, gq, gv) = loss_grad_deltas(base, data, &dq, &dv, true);
    let gf = Factors { bq: gq.matmul(&f.aq.t()), aq: f.bq.t().matmul(&gq), bv: gv.matmul(&f.av.t()), av: f.bv.t().matmul(&gv) };
    (loss, layout.backprop(p, &gf))
}
