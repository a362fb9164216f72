//! Tests of the simulation machinery (not of the hoped-for result).

use super::linalg::{Mat, svd};
use super::model::{self, Base, Layout, ModelKind, generate_data, loss_grad_deltas, objective};
use super::rng::Rng;
use super::*;

fn small_args() -> SimulateArgs {
    SimulateArgs {
        quick: false,
        seed: 7,
        out: PathBuf::from("unused"),
        replicates: Some(2),
        n_min: 40,
        n_max: Some(80),
        grid_points: Some(2),
        d: 3,
        tokens: 3,
        rank: 1,
        fit_rank: None,
        overspecified: false,
        hidden: 3,
        truth: TruthAct::Tanh,
        generators: Generators::Learned,
        noise: 0.3,
        models: ModelKind::ALL.to_vec(),
        restarts: 2,
        screen_size: 40,
        screen_iters: 10,
        max_iters: 20,
        threads: None,
    }
}

#[test]
fn gradients_match_central_finite_differences() {
    let mut rng = Rng::new(11);
    let (d, r, h) = (3, 2, 3);
    let base = Base::random(d, &mut rng);
    let (_, truth) = model::draw_truth(d, 1, 1, h, ModelKind::RepNonlinear, &mut rng);
    let data = generate_data(&base, &truth, 5, 3, 0.5, &mut rng);
    for kind in ModelKind::ALL {
        let layout = Layout { kind, d, r, h };
        let p = layout.random_params(&mut rng);
        let (_, g) = objective(&base, &data, &layout, &p);
        let eps = 1e-6;
        for k in 0..p.len() {
            let (mut hi, mut lo) = (p.clone(), p.clone());
            hi[k] += eps;
            lo[k] -= eps;
            let fd = (objective(&base, &data, &layout, &hi).0 - objective(&base, &data, &layout, &lo).0) / (2.0 * eps);
            assert!((fd - g[k]).abs() < 1e-7 * (1.0 + fd.abs()), "{kind:?} param {k}: analytic {} vs fd {fd}", g[k]);
        }
    }
}

#[test]
fn data_generator_matches_direct_formula() {
    let mut rng = Rng::new(5);
    let (d, nt) = (4, 3);
    let base = Base::random(d, &mut rng);
    let (_, truth) = model::draw_truth(d, 2, 2, 4, ModelKind::RepNonlinear, &mut rng);
    let clean = generate_data(&base, &truth, 50, nt, 0.0, &mut Rng::new(9));
    let noisy = generate_data(&base, &truth, 50, nt, 0.2, &mut Rng::new(9));
    let wq = base.wq.add(&truth.bq.matmul(&truth.aq));
    let wv = base.wv.add(&truth.bv.matmul(&truth.av));
    let score = wq.matmul(&base.wk.t()).scale(1.0 / (d as f64).sqrt());
    let mut resid = Vec::new();
    for s in 0..clean.n {
        let x = Mat::from_vec(nt, d, clean.x[s * nt * d..(s + 1) * nt * d].to_vec());
        let logits = x.matmul(&score).matmul(&x.t()); // [i][j] = x_i^T W_Q' W_K^T x_j / sqrt(d)
        let values = x.matmul(&wv); // row j = (W_V'^T x_j)^T
        for i in 0..nt {
            let z: f64 = (0..nt).map(|j| logits[(i, j)].exp()).sum();
            for c in 0..d {
                let y: f64 = (0..nt).map(|j| logits[(i, j)].exp() / z * values[(j, c)]).sum();
                let k = s * nt * d + i * d + c;
                assert!((clean.y[k] - y).abs() < 1e-12, "sample {s} token {i} coord {c}");
                resid.push(noisy.y[k] - y);
            }
        }
    }
    let (m, _) = stats::mean_se(&resid);
    let sd = (resid.iter().map(|e| e * e).sum::<f64>() / resid.len() as f64).sqrt();
    assert!(m.abs() < 0.03 && (sd - 0.2).abs() < 0.02, "noise mean {m}, sd {sd}");
}

#[test]
fn generators_match_direct_formula() {
    let (d, r, h) = (2, 2, 3);
    let layout = Layout { kind: ModelKind::RepNonlinear, d, r, h };
    let p = layout.random_params(&mut Rng::new(3));
    let f = layout.factors(&p);
    let (a, b) = (&p[0..r], &p[r..2 * r]);
    let w1a = &p[2 * r..2 * r + h * r];
    let w2a = &p[2 * r + h * r..2 * r + h * r + 2 * d * h];
    let w1b = &p[2 * r + h * r + 2 * d * h..2 * r + 2 * h * r + 2 * d * h];
    let w2b = &p[2 * r + 2 * h * r + 2 * d * h..];
    for i in 0..r {
        for o in 0..2 * d {
            let ga: f64 = (0..h).map(|k| w2a[o * h + k] * (a[i] * w1a[k * r + i]).tanh()).sum();
            let gb: f64 = (0..h).map(|k| w2b[o * h + k] * (b[i] * w1b[k * r + i]).tanh()).sum();
            let (fa, fb) = if o < d { (f.aq[(i, o)], f.bq[(o, i)]) } else { (f.av[(i, o - d)], f.bv[(o - d, i)]) };
            assert!((fa - ga).abs() < 1e-14 && (fb - gb).abs() < 1e-14);
        }
    }
}

#[test]
fn every_estimator_recovers_truth_without_noise() {
    let mut rng = Rng::new(21);
    let (d, h) = (3, 3);
    let base = Base::random(d, &mut rng);
    let (truth_p, truth) = model::draw_truth(d, 1, 1, h, ModelKind::RepNonlinear, &mut rng);
    let data = generate_data(&base, &truth, 300, 3, 0.0, &mut rng);
    let opts = FitOpts { restarts: 4, screen_size: 300, screen_iters: 60, max_iters: 400 };
    for (kind, frozen) in [
        (ModelKind::Lora, None),
        (ModelKind::RepLinear, None),
        (ModelKind::RepNonlinear, None),
        (ModelKind::RepNonlinear, Some(truth_p.as_slice())),
    ] {
        let layout = Layout { kind, d, r: 1, h };
        let res = fit::fit(&base, &data, &layout, &opts, 99, frozen);
        let fitted = layout.factors(&res.params);
        let (err, _, _) = metrics::gauge_error(&fitted, &truth);
        let vor = metrics::voronoi_loss(&fitted, &truth, 1);
        assert!(err < 1e-4 && vor < 1e-3, "{kind:?} frozen={}: error {err}, Voronoi {vor}, loss {}", frozen.is_some(), res.loss);
    }
}

#[test]
fn loss_is_zero_at_truth_and_positive_elsewhere() {
    let mut rng = Rng::new(2);
    let base = Base::random(3, &mut rng);
    let (_, truth) = model::draw_truth(3, 1, 1, 3, ModelKind::RepLinear, &mut rng);
    let data = generate_data(&base, &truth, 20, 2, 0.0, &mut rng);
    let (dq, dv) = truth.deltas();
    assert!(loss_grad_deltas(&base, &data, &dq, &dv, false).0 < 1e-28);
    assert!(loss_grad_deltas(&base, &data, &dq.scale(1.1), &dv, false).0 > 1e-6);
}

#[test]
fn svd_reconstructs_and_sorts() {
    let mut rng = Rng::new(4);
    let m = Mat::from_vec(4, 2, rng.normal_vec(8, 1.0)).matmul(&Mat::from_vec(2, 4, rng.normal_vec(8, 1.0)));
    let t = svd(&m);
    assert!(t.windows(2).all(|w| w[0].sigma >= w[1].sigma) && t[2].sigma < 1e-12);
    let mut rec = Mat::zeros(4, 4);
    for tr in &t {
        for i in 0..4 {
            for j in 0..4 {
                rec[(i, j)] += tr.sigma * tr.u[i] * tr.v[j];
            }
        }
    }
    assert!(rec.sub(&m).frob() < 1e-12);
    let uv: f64 = t[0].u.iter().zip(&t[1].u).map(|(a, b)| a * b).sum();
    assert!(uv.abs() < 1e-12);
}

#[test]
fn voronoi_loss_is_zero_only_at_truth() {
    let mut rng = Rng::new(8);
    let (_, truth) = model::draw_truth(4, 1, 2, 3, ModelKind::RepNonlinear, &mut rng);
    assert!(metrics::voronoi_loss(&truth, &truth, 1) < 1e-10);
    let mut off = truth.clone();
    off.aq[(0, 0)] += 0.1;
    let (g, _, _) = metrics::gauge_error(&off, &truth);
    let v = metrics::voronoi_loss(&off, &truth, 1);
    assert!(g > 0.01 && v > 0.01, "gauge {g}, voronoi {v}");
}

#[test]
fn slope_fit_recovers_known_slopes() {
    let ns: Vec<f64> = log_grid(100, 100_000, 7).into_iter().map(|n| n as f64).collect();
    assert_eq!((ns[0], ns[6]), (100.0, 100_000.0));
    assert!((stats::t975(19) - 2.093).abs() < 2e-3 && (stats::t975(4) - 2.776).abs() < 2e-2);
    let mut rng = Rng::new(1);
    for true_slope in [-0.5, -0.25] {
        let errs: Vec<Vec<f64>> =
            (0..20).map(|_| ns.iter().map(|n| 3.0 * n.powf(true_slope) * (0.2 * rng.normal()).exp()).collect()).collect();
        let s = stats::loglog_slope(&ns, &errs);
        assert!((s.slope - true_slope).abs() < 0.03, "{s:?}");
        assert!(s.ci_low < true_slope && true_slope < s.ci_high && s.ci_high - s.ci_low < 0.1, "{s:?}");
    }
}

#[test]
fn same_seed_gives_same_csv_for_any_thread_count() {
    let args = small_args();
    let cfg = args.config().unwrap();
    let bar = ProgressBar::hidden();
    let csv = |threads: usize, cfg: &Config| {
        let dir = std::env::temp_dir().join(format!("replora-sim-test-{}-{threads}-{}", std::process::id(), cfg.seed));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.csv");
        write_csv(&path, &simulate_records(cfg, threads, &bar)).unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        s
    };
    let one = csv(1, &cfg);
    assert_eq!(one.lines().count(), 1 + 3 * 2 * 2);
    assert_eq!(one, csv(2, &cfg));
    assert_eq!(one, csv(3, &cfg));
    let other = Config { seed: 8, ..cfg };
    assert_ne!(one, csv(2, &other));
}
