//! Dense linear algebra for the lossy passes, on faer: low-rank factors of a
//! layer's weight matrix, plain or fitted to the layer's inputs.
//!
//! Matrices are f64 (weights arrive as f32; sums over thousands of products
//! want the headroom). Layouts: a layer is `y = x·M` with `M [K, N]`, rows the
//! input features and columns the outputs, whatever the operator stores.

use anyhow::{ensure, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

/// A row-major `rows × cols` f32 buffer as a matrix.
pub fn from_rows(rows: usize, cols: usize, data: &[f32]) -> Mat<f64> {
    debug_assert_eq!(data.len(), rows * cols);
    Mat::from_fn(rows, cols, |i, j| f64::from(data[i * cols + j]))
}

/// A matrix as a row-major f32 buffer.
pub fn to_rows(m: MatRef<'_, f64>) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        out.extend((0..m.ncols()).map(|j| m[(i, j)] as f32));
    }
    out
}

/// Columns per block of a parallel product. Fixed, so that results do not
/// depend on the number of threads: each block is one sequential product,
/// and faer's own parallel products split their sums by thread count
/// (measured: other bytes with `RAYON_NUM_THREADS=1` than with 2).
const BLOCK: usize = 64;

/// Runs `f` on column blocks `[c0, c1)` of an `n`-column result, in
/// parallel when there is enough `work`, and returns the blocks in order.
fn by_blocks(n: usize, work: usize, f: impl Fn(usize, usize) -> Mat<f64> + Sync) -> Vec<Mat<f64>> {
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(BLOCK)
        .map(|c0| (c0, (c0 + BLOCK).min(n)))
        .collect();
    if work > 1 << 22 {
        blocks.par_iter().map(|&(c0, c1)| f(c0, c1)).collect()
    } else {
        blocks.iter().map(|&(c0, c1)| f(c0, c1)).collect()
    }
}

fn product(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    out
}

/// `a · b`: column blocks in parallel, the same bytes whatever the thread count.
pub fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let n = b.ncols();
    let blocks = by_blocks(n, a.nrows() * a.ncols() * n, |c0, c1| {
        product(a, b.subcols(c0, c1 - c0))
    });
    let mut out = Mat::zeros(a.nrows(), n);
    for (k, block) in blocks.iter().enumerate() {
        out.as_mut()
            .subcols_mut(k * BLOCK, block.ncols())
            .copy_from(block);
    }
    out
}

/// `zᵀz`, computing only its lower triangle (about half the work of the
/// product): `self_adjoint_eigen(Side::Lower)` reads nothing else.
fn gram_lower(z: MatRef<'_, f64>) -> Mat<f64> {
    let n = z.ncols();
    // Block [c0, c1) of columns: rows c0.. of zᵀ·z[:, c0..c1].
    let blocks = by_blocks(n, z.nrows() * n * n / 2, |c0, c1| {
        product(z.subcols(c0, n - c0).transpose(), z.subcols(c0, c1 - c0))
    });
    let mut out = Mat::zeros(n, n);
    for (k, block) in blocks.iter().enumerate() {
        let c0 = k * BLOCK;
        out.as_mut()
            .submatrix_mut(c0, c0, n - c0, block.ncols())
            .copy_from(block);
    }
    out
}

/// The right singular vectors of `z [p, N]` and its singular values,
/// largest first.
pub struct Spectrum {
    /// Singular values, descending (`min(p, N)` of them).
    pub sigma: Vec<f64>,
    /// `V [N, min(p, N)]`: column i belongs to `sigma[i]`.
    pub v: Mat<f64>,
}

impl Spectrum {
    /// Σσ², which is ‖z‖²_F.
    pub fn total_energy(&self) -> f64 {
        self.sigma.iter().map(|s| s * s).sum()
    }

    /// Fraction of the energy the first `r` values keep.
    pub fn energy(&self, r: usize) -> f64 {
        let total = self.total_energy();
        if total == 0.0 {
            return 1.0;
        }
        self.sigma[..r.min(self.sigma.len())]
            .iter()
            .map(|s| s * s)
            .sum::<f64>()
            / total
    }

    /// The smallest rank keeping at least `fraction` of the energy.
    pub fn rank_for_energy(&self, fraction: f64) -> usize {
        let total = self.total_energy();
        let mut kept = 0.0;
        for (r, s) in self.sigma.iter().enumerate() {
            if kept >= fraction * total {
                return r.max(1);
            }
            kept += s * s;
        }
        self.sigma.len()
    }
}

/// The spectrum of `z [p, N]` through the eigendecomposition of its smaller
/// Gram matrix (`zᵀz`, N×N, or `zzᵀ`, p×p): one matrix product and a
/// symmetric eigensolver of side `min(p, N)`, far cheaper than an SVD of a
/// tall matrix. Squaring loses the smallest singular values to rounding
/// (below ~1e-8 of the largest); a rank cut never keeps those.
pub fn spectrum(z: MatRef<'_, f64>) -> Result<Spectrum> {
    let (p, n) = (z.nrows(), z.ncols());
    ensure!(p > 0 && n > 0, "empty matrix");
    let wide = p < n;
    let gram = if wide {
        gram_lower(z.transpose())
    } else {
        gram_lower(z)
    };
    // Sequential: faer's parallel eigensolver splits work by thread count.
    faer::set_global_parallelism(Par::Seq);
    let eig = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| anyhow::anyhow!("eigendecomposition failed: {e:?}"))?;
    // Eigenvalues come in nondecreasing order: reverse.
    let k = gram.nrows();
    let values = eig.S().column_vector();
    let vectors = eig.U();
    let sigma: Vec<f64> = (0..k).rev().map(|i| values[i].max(0.0).sqrt()).collect();
    let order: Vec<usize> = (0..k).rev().collect();
    let v = if wide {
        // zzᵀ = UΣ²Uᵀ, so V = zᵀUΣ⁻¹ (columns for σ = 0 stay zero).
        let u = Mat::from_fn(p, k, |i, j| vectors[(i, order[j])]);
        let mut v = mul(z.transpose(), u.as_ref());
        let floor = sigma[0] * 1e-12;
        for (j, &s) in sigma.iter().enumerate() {
            let scale = if s > floor { 1.0 / s } else { 0.0 };
            for i in 0..n {
                v[(i, j)] *= scale;
            }
        }
        v
    } else {
        Mat::from_fn(n, k, |i, j| vectors[(i, order[j])])
    };
    Ok(Spectrum { sigma, v })
}

/// Rank-`r` factors `a [K, r]`, `b [r, N]` of `m [K, N]` that keep its
/// action on the subspace spanned by the first `r` columns of `v`:
/// `a·b = m·V_r·V_rᵀ`. With `v` from the spectrum of `m` this is the
/// truncated SVD (a = U_r·√Σ_r, b = √Σ_r·V_rᵀ); with `v` from the spectrum
/// of `x·m` (the layer's outputs on data) it is the rank-r map closest to
/// `m` on that data. Columns of `a` and rows of `b` are balanced (equal
/// norms), so neither factor's values dwarf the other's in f32.
pub fn factors(m: MatRef<'_, f64>, v: MatRef<'_, f64>, r: usize) -> (Mat<f64>, Mat<f64>) {
    let v_r = v.subcols(0, r);
    let mut a = mul(m, v_r);
    let mut b = v_r.transpose().to_owned();
    for j in 0..r {
        let norm = (0..a.nrows())
            .map(|i| a[(i, j)] * a[(i, j)])
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let d = norm.sqrt();
            for i in 0..a.nrows() {
                a[(i, j)] /= d;
            }
            for i in 0..b.ncols() {
                b[(j, i)] *= d;
            }
        }
    }
    (a, b)
}

/// The relative error ‖z − z·V_r·V_rᵀ‖_F / ‖z‖_F of projecting the rows of
/// `z` on the first `r` columns of the orthonormal `v`, without forming the
/// product: the projection is orthogonal, so the error's square is
/// ‖z‖² − ‖z·V_r‖². With `z = m` it is the weight error of [`factors`], with
/// `z = x·m` the output error on `x` (checked against a direct computation in
/// the tests).
pub fn projection_error(z: MatRef<'_, f64>, v: MatRef<'_, f64>, r: usize) -> f64 {
    let total = z.squared_norm_l2();
    if total == 0.0 {
        return 0.0;
    }
    let kept = mul(z, v.subcols(0, r)).squared_norm_l2();
    ((total - kept).max(0.0) / total).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ‖x·(m − a·b)‖_F / ‖x·m‖_F computed directly: the relative error of the
    /// factored layer's outputs on the rows of `x` (or of the weights, with
    /// `x = None`), which [`projection_error`] must equal.
    fn relative_error(
        x: Option<MatRef<'_, f64>>,
        m: MatRef<'_, f64>,
        a: MatRef<'_, f64>,
        b: MatRef<'_, f64>,
    ) -> f64 {
        let (reference, approx) = match x {
            Some(x) => (mul(x, m), mul(mul(x, a).as_ref(), b)),
            None => (m.to_owned(), mul(a, b)),
        };
        let norm = reference.norm_l2();
        if norm == 0.0 {
            return 0.0;
        }
        (reference - approx).norm_l2() / norm
    }

    /// A K×N matrix with singular values `sigma` (deterministic bases).
    fn with_spectrum(k: usize, n: usize, sigma: &[f64]) -> Mat<f64> {
        let q = |rows: usize, seed: f64| {
            let g = Mat::from_fn(rows, sigma.len(), |i, j| {
                ((i * 7 + j * 13) as f64 * 0.37 + seed).sin()
            });
            g.qr().compute_thin_Q()
        };
        let (u, v) = (q(k, 0.1), q(n, 0.7));
        let s = Mat::from_fn(sigma.len(), sigma.len(), |i, j| {
            if i == j {
                sigma[i]
            } else {
                0.0
            }
        });
        mul(mul(u.as_ref(), s.as_ref()).as_ref(), v.transpose())
    }

    #[test]
    fn spectrum_finds_the_singular_values_tall_and_wide() {
        let sigma = [9.0, 4.0, 1.0, 0.5];
        for (k, n) in [(12, 6), (6, 12)] {
            let m = with_spectrum(k, n, &sigma);
            let s = spectrum(m.as_ref()).unwrap();
            for (got, want) in s.sigma.iter().zip(sigma) {
                assert!((got - want).abs() < 1e-9, "{k}x{n}: {:?}", s.sigma);
            }
            assert!(s.sigma[4..].iter().all(|&x| x < 1e-6), "{:?}", s.sigma);
            assert_eq!(s.rank_for_energy(0.99), 3);
            assert!((s.energy(2) - 97.0 / 98.25).abs() < 1e-12);
        }
    }

    #[test]
    fn truncated_factors_are_the_best_rank_r_approximation() {
        let m = with_spectrum(10, 8, &[5.0, 3.0, 0.1]);
        let s = spectrum(m.as_ref()).unwrap();
        let (a, b) = factors(m.as_ref(), s.v.as_ref(), 2);
        assert_eq!((a.nrows(), a.ncols(), b.nrows(), b.ncols()), (10, 2, 2, 8));
        // Eckart–Young: the error is the dropped singular value.
        let err = relative_error(None, m.as_ref(), a.as_ref(), b.as_ref());
        let expected = 0.1 / (25.0f64 + 9.0 + 0.01).sqrt();
        assert!((err - expected).abs() < 1e-9, "{err} vs {expected}");
        let cheap = projection_error(m.as_ref(), s.v.as_ref(), 2);
        assert!((cheap - err).abs() < 1e-12, "{cheap} vs {err}");
        // Balanced: column norms of a equal row norms of b.
        for j in 0..2 {
            let na = a.col(j).norm_l2();
            let nb = b.row(j).norm_l2();
            assert!((na - nb).abs() < 1e-9, "{na} {nb}");
        }
    }

    #[test]
    fn fitting_to_data_beats_the_plain_svd_on_that_data() {
        let m = with_spectrum(8, 8, &[4.0, 3.0, 2.0, 1.0, 0.5]);
        // Inputs that only excite a few directions of the input space.
        let x = Mat::from_fn(40, 8, |i, j| {
            if j < 3 {
                ((i * 3 + j) as f64).cos()
            } else {
                0.01 * ((i + j) as f64).sin()
            }
        });
        let plain = spectrum(m.as_ref()).unwrap();
        let fitted = spectrum(mul(x.as_ref(), m.as_ref()).as_ref()).unwrap();
        let err = |v: &Mat<f64>| {
            let (a, b) = factors(m.as_ref(), v.as_ref(), 2);
            relative_error(Some(x.as_ref()), m.as_ref(), a.as_ref(), b.as_ref())
        };
        let (e_plain, e_fitted) = (err(&plain.v), err(&fitted.v));
        let xm = mul(x.as_ref(), m.as_ref());
        for v in [&plain.v, &fitted.v] {
            let cheap = projection_error(xm.as_ref(), v.as_ref(), 2);
            assert!((cheap - err(v)).abs() < 1e-9, "{cheap} vs {}", err(v));
        }
        assert!(e_fitted < e_plain, "fitted {e_fitted} plain {e_plain}");
        // And its error is what its spectrum predicts.
        let predicted = (1.0 - fitted.energy(2)).sqrt();
        assert!(
            (e_fitted - predicted).abs() < 1e-9,
            "{e_fitted} vs {predicted}"
        );
    }
}
