//! Speed target of the `svd` pass's linear algebra (`cargo bench --bench svd_factor`):
//! an 8192×1024 weight with the decaying spectrum of trained layers
//! (σ_i ∝ (1 + i/16)^-1.2) must factor — spectrum, rank for energy 0.9,
//! rank-r factors and their error — in well under a second (target < 1 s).
//!
//! Prints the median of 5 runs and each step's share; exits non-zero on a FAIL.

use faer::Mat;
use onnx_opt::linalg;
use std::process::ExitCode;
use std::time::Instant;

const K: usize = 8192;
const N: usize = 1024;
const RUNS: usize = 5;

/// A deterministic pseudo-random value in [-1, 1).
fn noise(i: usize, j: usize, seed: u64) -> f64 {
    let mut z = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((j as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// U·diag(σ)·Vᵀ with orthonormal U [K,N], V [N,N] from QR of noise.
fn weight() -> Mat<f64> {
    let u = Mat::from_fn(K, N, |i, j| noise(i, j, 1))
        .qr()
        .compute_thin_Q();
    let v = Mat::from_fn(N, N, |i, j| noise(i, j, 2))
        .qr()
        .compute_thin_Q();
    let us = Mat::from_fn(K, N, |i, j| u[(i, j)] * (1.0 + j as f64 / 16.0).powf(-1.2));
    linalg::mul(us.as_ref(), v.transpose())
}

fn main() -> ExitCode {
    let m = weight();
    let mut totals = vec![];
    let (mut t_spectrum, mut t_factors, mut t_error) = (0.0, 0.0, 0.0);
    let mut rank = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let s = linalg::spectrum(m.as_ref()).expect("spectrum");
        let t1 = start.elapsed().as_secs_f64();
        rank = s.rank_for_energy(0.9);
        let (a, b) = linalg::factors(m.as_ref(), s.v.as_ref(), rank);
        let t2 = start.elapsed().as_secs_f64();
        let err = linalg::projection_error(m.as_ref(), s.v.as_ref(), rank);
        assert_eq!((a.ncols(), b.nrows()), (rank, rank));
        let t3 = start.elapsed().as_secs_f64();
        assert!(err < 0.4, "error {err}");
        totals.push(t3 * 1e3);
        t_spectrum += t1;
        t_factors += t2 - t1;
        t_error += t3 - t2;
    }
    totals.sort_by(f64::total_cmp);
    let median = totals[RUNS / 2];
    let all = t_spectrum + t_factors + t_error;
    println!(
        "factor {K}x{N} at energy 0.9 (rank {rank}): median {median:.0} ms of {RUNS} \
         (spectrum {:.0}%, factors {:.0}%, error {:.0}%); target < 1000 ms: {}",
        100.0 * t_spectrum / all,
        100.0 * t_factors / all,
        100.0 * t_error / all,
        if median < 1000.0 { "PASS" } else { "FAIL" }
    );
    if median < 1000.0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
