//! `--holdout F`: one seeded split of `--inputs` into calibration and
//! judgement samples, so that no sample is both fitted to and judged on.

use crate::runtime::SplitMix64;
use anyhow::{bail, Result};

/// Splits sample indices `0..n` into (calibration, held out): a fraction
/// `fraction` of them, at least one, chosen by a Fisher-Yates shuffle
/// seeded by `seed`; each part keeps dataset order.
pub fn holdout(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        bail!("--holdout must be between 0 and 1 (exclusive), got {fraction}");
    }
    if n < 2 {
        bail!("--holdout needs at least 2 samples to split, the data has {n}");
    }
    let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed ^ 0x0068_6f6c_646f_7574);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut out = order[..held].to_vec();
    let mut keep = order[held..].to_vec();
    out.sort_unstable();
    keep.sort_unstable();
    Ok((keep, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_complete_seeded() {
        let (a, b) = holdout(100, 0.25, 3).unwrap();
        assert_eq!((a.len(), b.len()), (75, 25));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(holdout(100, 0.25, 3).unwrap(), (a.clone(), b.clone()));
        assert_ne!(holdout(100, 0.25, 4).unwrap().1, b);
        // small sets still keep one sample on each side
        assert_eq!(holdout(2, 0.01, 0).unwrap().1.len(), 1);
        assert_eq!(holdout(2, 0.99, 0).unwrap().0.len(), 1);
        assert!(holdout(1, 0.5, 0).is_err());
        assert!(holdout(10, 1.0, 0).is_err());
    }
}
