//! Dense row-major matrices for tiny dimensions, plus a one-sided Jacobi SVD.

#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat { rows, cols, a: vec![0.0; rows * cols] }
    }

    pub fn from_vec(rows: usize, cols: usize, a: Vec<f64>) -> Self {
        assert_eq!(a.len(), rows * cols);
        Mat { rows, cols, a }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Mat::zeros(n, n);
        for i in 0..n {
            m[(i, i)] = 1.0;
        }
        m
    }

    pub fn matmul(&self, o: &Mat) -> Mat {
        assert_eq!(self.cols, o.rows);
        let mut m = Mat::zeros(self.rows, o.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let v = self[(i, k)];
                for j in 0..o.cols {
                    m.a[i * o.cols + j] += v * o.a[k * o.cols + j];
                }
            }
        }
        m
    }

    pub fn t(&self) -> Mat {
        let mut m = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                m[(j, i)] = self[(i, j)];
            }
        }
        m
    }

    pub fn add(&self, o: &Mat) -> Mat {
        assert_eq!((self.rows, self.cols), (o.rows, o.cols));
        Mat::from_vec(self.rows, self.cols, self.a.iter().zip(&o.a).map(|(x, y)| x + y).collect())
    }

    pub fn sub(&self, o: &Mat) -> Mat {
        self.add(&o.scale(-1.0))
    }

    pub fn scale(&self, s: f64) -> Mat {
        Mat::from_vec(self.rows, self.cols, self.a.iter().map(|x| x * s).collect())
    }

    pub fn frob(&self) -> f64 {
        self.a.iter().map(|x| x * x).sum::<f64>().sqrt()
    }
}

impl std::ops::Index<(usize, usize)> for Mat {
    type Output = f64;
    fn index(&self, (i, j): (usize, usize)) -> &f64 {
        &self.a[i * self.cols + j]
    }
}

impl std::ops::IndexMut<(usize, usize)> for Mat {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut f64 {
        &mut self.a[i * self.cols + j]
    }
}

/// One singular triplet: `m = sum_k sigma_k u_k v_k^T`.
#[derive(Clone, Debug)]
pub struct Triplet {
    pub sigma: f64,
    pub u: Vec<f64>,
    pub v: Vec<f64>,
}

/// Singular value decomposition by one-sided Jacobi rotations, triplets sorted
/// by decreasing singular value (all `cols` of them, zeros included).
pub fn svd(m: &Mat) -> Vec<Triplet> {
    let (r, c) = (m.rows, m.cols);
    let mut u = m.clone();
    let mut v = Mat::identity(c);
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..c {
            for q in p + 1..c {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..r {
                    alpha += u[(i, p)] * u[(i, p)];
                    beta += u[(i, q)] * u[(i, q)];
                    gamma += u[(i, p)] * u[(i, q)];
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                for mat in [&mut u, &mut v] {
                    for i in 0..mat.rows {
                        let (x, y) = (mat[(i, p)], mat[(i, q)]);
                        mat[(i, p)] = cs * x - sn * y;
                        mat[(i, q)] = sn * x + cs * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut out: Vec<Triplet> = (0..c)
        .map(|k| {
            let col: Vec<f64> = (0..r).map(|i| u[(i, k)]).collect();
            let sigma = col.iter().map(|x| x * x).sum::<f64>().sqrt();
            let uk = if sigma > 0.0 { col.iter().map(|x| x / sigma).collect() } else { col };
            Triplet { sigma, u: uk, v: (0..c).map(|i| v[(i, k)]).collect() }
        })
        .collect();
    out.sort_by(|a, b| b.sigma.total_cmp(&a.sigma));
    out
}
