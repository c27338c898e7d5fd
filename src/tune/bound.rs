//! How sure a count is: the one-sided Clopper–Pearson upper bound on a
//! rate, from `x` events in `n` trials.
//!
//! tune uses it on the rows a lossy candidate lost against the original
//! (pooled over the folds): 0 lost rows of 30 still allow a true loss of
//! 9.5% at 95% confidence, so a 1-point `--max-drop` needs about 300 rows
//! judged without a loss before a lossy model is handed out.

/// Confidence of the bounds tune states.
pub const CONFIDENCE: f64 = 0.95;

/// The smallest rate p with P(X ≤ x | n, p) ≤ 1 − `confidence`: the exact
/// (Clopper–Pearson) one-sided upper bound on the rate of `x` events seen
/// in `n` trials.
pub fn upper(x: usize, n: usize, confidence: f64) -> f64 {
    let alpha = 1.0 - confidence;
    if n == 0 || x >= n {
        return 1.0;
    }
    if x == 0 {
        return 1.0 - alpha.powf(1.0 / n as f64);
    }
    // The binomial CDF falls as p grows: bisect between x/n and 1.
    let (mut lo, mut hi) = (x as f64 / n as f64, 1.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if cdf(x, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// P(X ≤ x) for X ~ Binomial(n, p), summed in log space.
fn cdf(x: usize, n: usize, p: f64) -> f64 {
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64;
    let mut sum = 0.0;
    for i in 0..=x {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        sum += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bounds() {
        // no event in 30: 1 - 0.05^(1/30); the "rule of three" says about 3/n
        assert!((upper(0, 30, 0.95) - 0.0950).abs() < 1e-3);
        assert!((upper(0, 300, 0.95) - 0.00994).abs() < 1e-4);
        // 1 in 10 (tables: 0.394), 5 in 100 (0.1024)
        assert!(
            (upper(1, 10, 0.95) - 0.3942).abs() < 1e-3,
            "{}",
            upper(1, 10, 0.95)
        );
        assert!(
            (upper(5, 100, 0.95) - 0.1024).abs() < 1e-3,
            "{}",
            upper(5, 100, 0.95)
        );
        assert_eq!(upper(4, 4, 0.95), 1.0);
        assert_eq!(upper(0, 0, 0.95), 1.0);
        // more data, tighter bound
        assert!(upper(10, 1000, 0.95) < upper(1, 100, 0.95));
    }
}
