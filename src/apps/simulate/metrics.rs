//! Error metrics between a fitted and the true pair of low-rank updates.

use super::linalg::{Mat, Triplet, svd};
use super::model::Factors;

/// Gauge-invariant error `||B_Q A_Q - B*_Q A*_Q||_F + ||B_V A_V - B*_V A*_V||_F`,
/// returned with its Q and V parts.
pub fn gauge_error(fit: &Factors, truth: &Factors) -> (f64, f64, f64) {
    let (fq, fv) = fit.deltas();
    let (tq, tv) = truth.deltas();
    let (eq, ev) = (fq.sub(&tq).frob(), fv.sub(&tv).frob());
    (eq + ev, eq, ev)
}

/// Voronoi-type loss over the fitted atoms, in the form of the paper's analysis
/// (Ho and Nguyen's Voronoi losses for mixtures of experts).
///
/// Formula implemented, for each target t in {Q, V} and summed:
///
/// ```text
/// atoms      dT = sum_k sigma_k u_k v_k^T            (SVD, top r_fit fitted / r_true true)
/// location   theta_k = (u_k, v_k),  dist(theta, theta*) = min_{s=+-1} ||(s u - u*, s v - v*)||_2
/// cells      V_j = { k : j = argmin_l dist(theta_k, theta*_l) }
/// D_t = sum_j | sum_{k in V_j} sigma_k - sigma*_j |                         (mass per cell)
///     + sum_{j : |V_j| = 1} sigma_k dist(theta_k, theta*_j)                 (exact-fitted atoms)
///     + sum_{j : |V_j| > 1} sum_{k in V_j} sigma_k dist(theta_k, theta*_j)^2 (over-fitted atoms)
/// ```
///
/// Why this form: the paper's atoms carry a mixing weight and a location, and
/// a true atom approximated by several fitted atoms is charged with squared
/// distances. Raw factors (B, A) are not identifiable (B S, S^-1 A gives the
/// same head for any invertible S), so their atoms would measure where the
/// optimizer drifted, not what the data determine. The singular triplets of
/// each update are the canonical rank-one atoms of that update: the singular
/// value plays the weight, the (sign-free) pair of singular vectors the
/// location. Q and V are treated as separate measures because LoRA pairs its
/// Q and V components only by an arbitrary index.
pub fn voronoi_loss(fit: &Factors, truth: &Factors, r_true: usize) -> f64 {
    let (fq, fv) = fit.deltas();
    let (tq, tv) = truth.deltas();
    let r_fit = fit.aq.rows;
    voronoi_one(&fq, &tq, r_fit, r_true) + voronoi_one(&fv, &tv, r_fit, r_true)
}

fn atom_dist(a: &Triplet, b: &Triplet) -> f64 {
    let d = |s: f64| {
        let du: f64 = a.u.iter().zip(&b.u).map(|(x, y)| (s * x - y).powi(2)).sum();
        let dv: f64 = a.v.iter().zip(&b.v).map(|(x, y)| (s * x - y).powi(2)).sum();
        (du + dv).sqrt()
    };
    d(1.0).min(d(-1.0))
}

fn voronoi_one(fit: &Mat, truth: &Mat, r_fit: usize, r_true: usize) -> f64 {
    let fa: Vec<Triplet> = svd(fit).into_iter().take(r_fit).collect();
    let ta: Vec<Triplet> = svd(truth).into_iter().take(r_true).collect();
    let mut cells: Vec<Vec<(f64, f64)>> = vec![Vec::new(); ta.len()];
    for a in &fa {
        let (j, dist) = ta
            .iter()
            .enumerate()
            .map(|(j, t)| (j, atom_dist(a, t)))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .expect("truth has at least one atom");
        cells[j].push((a.sigma, dist));
    }
    let mut loss = 0.0;
    for (cell, t) in cells.iter().zip(&ta) {
        loss += (cell.iter().map(|c| c.0).sum::<f64>() - t.sigma).abs();
        let power = if cell.len() == 1 { 1 } else { 2 };
        loss += cell.iter().map(|(s, dist)| s * dist.powi(power)).sum::<f64>();
    }
    loss
}
