//! Means, standard errors and log-log slope fits with t confidence intervals.

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Slope {
    pub slope: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Mean and standard error of the mean (sd / sqrt(len)).
pub fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom
/// (Cornish-Fisher expansion around the normal quantile; exact to ~1e-3 for df >= 3).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1 => 12.706,
        2 => 4.303,
        _ => {
            let z: f64 = 1.959_963_985;
            let v = df as f64;
            z + (z.powi(3) + z) / (4.0 * v)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
                + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
        }
    }
}

/// OLS slope of `ys` on `xs`.
pub fn ols_slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// Log-log slope of error against n. `errs[r][k]` is replicate r's error at `ns[k]`
/// (one ground truth per replicate, shared across the grid). Each replicate gets
/// its own OLS slope of log(err) on log(n); replicates are independent, so the
/// estimate is their mean with a t interval. This respects the correlation
/// between grid points of one replicate, which a pooled OLS would ignore.
pub fn loglog_slope(ns: &[f64], errs: &[Vec<f64>]) -> Slope {
    let lx: Vec<f64> = ns.iter().map(|n| n.ln()).collect();
    let slopes: Vec<f64> = errs.iter().map(|row| ols_slope(&lx, &row.iter().map(|e| e.max(1e-300).ln()).collect::<Vec<_>>())).collect();
    let (m, se) = mean_se(&slopes);
    let t = t975(slopes.len().saturating_sub(1));
    Slope { slope: m, se, ci_low: m - t * se, ci_high: m + t * se }
}
