//! Seeded splits of `--inputs` into calibration and judgement samples, so
//! that no sample is both fitted to and judged on: `--holdout F` (one
//! split) and the k folds of `tune`'s cross-validation.

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
    let order = shuffled(n, seed ^ 0x0068_6f6c_646f_7574);
    let mut out = order[..held].to_vec();
    let mut keep = order[held..].to_vec();
    out.sort_unstable();
    keep.sort_unstable();
    Ok((keep, out))
}

/// `n` of the positions `0..len`, evenly spread (all of them when `n >= len`):
/// a subset that still covers the whole of ordered data.
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

/// Splits sample indices `0..n` into `k` folds of sizes differing by at
/// most one, by a seeded shuffle; each fold keeps dataset order. Fold `i`
/// is judged by a model calibrated on the others.
pub fn folds(n: usize, k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k < 2 {
        bail!("--folds must be at least 2, got {k}");
    }
    if n < k {
        bail!("{k} folds need at least {k} samples, the data has {n}");
    }
    let mut folds = vec![vec![]; k];
    for (rank, i) in shuffled(n, seed ^ 0x666f_6c64_7321).into_iter().enumerate() {
        folds[rank % k].push(i);
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    Ok(folds)
}

/// `0..n` in a Fisher-Yates order seeded by `seed`.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_subset_covers_the_whole_of_the_data() {
        assert_eq!(spread(1000, 4), vec![0, 250, 500, 750]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        let picked = spread(3000, 300);
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "distinct, in order");
        assert!(*picked.last().unwrap() >= 2990, "reaches the last samples");
    }

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

    #[test]
    fn folds_partition_evenly() {
        let f = folds(11, 3, 7).unwrap();
        let sizes: Vec<usize> = f.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 3]);
        let mut all: Vec<usize> = f.concat();
        all.sort_unstable();
        assert_eq!(all, (0..11).collect::<Vec<_>>());
        assert!(f.iter().all(|x| x.windows(2).all(|w| w[0] < w[1])));
        assert_eq!(folds(11, 3, 7).unwrap(), f);
        assert_ne!(folds(11, 3, 8).unwrap(), f);
        assert!(folds(2, 3, 0).is_err());
        assert!(folds(10, 1, 0).is_err());
    }
}
