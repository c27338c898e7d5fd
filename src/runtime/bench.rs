//! Timing two models against each other.

use super::catch_tract_panic;
use super::inputs::Sample;
use super::load::Model;
use super::ort::{Prepared, Session as OrtSession};
use super::Refusal;
use super::Runner;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tract_onnx::prelude::{TValue, TVec};

/// Wall-clock statistics of one model's timed runs, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub runs: usize,
    pub median_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
}

/// Result of [`bench`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub warmup: usize,
    pub runs: usize,
    pub a: Timing,
    pub b: Timing,
    /// a.median_ms / b.median_ms: above 1 means `b` is faster.
    pub speedup: f64,
    /// The median of a/b over the runs made back to back: a load spike on a
    /// shared machine slows both of a pair, so this moves less than
    /// `speedup` does; with the 10th and 90th percentiles of those ratios.
    #[serde(default)]
    pub paired_speedup: f64,
    #[serde(default)]
    pub paired_spread: [f64; 2],
}

/// Timed runs never exceed this many, however fast the model.
pub const MAX_TIMED_RUNS: usize = 2000;

/// How many timed runs a model that takes `per_run_ms` a run needs to run
/// `target_ms` in all: at least `least`, at most [`MAX_TIMED_RUNS`] (or
/// `least` when that is more). A fast model timed over a few runs is timed
/// over a millisecond, within one hiccup of a shared machine.
pub fn runs_for(per_run_ms: f64, target_ms: f64, least: usize) -> usize {
    let wanted = (target_ms / per_run_ms.max(1e-4)).ceil() as usize;
    wanted.min(MAX_TIMED_RUNS).max(least)
}

/// Times `a` against `b` in this process, each in the runtime it was
/// loaded in (both in the same one).
///
/// Both models run the same samples (cycling through `samples`). After
/// `warmup` untimed iterations, `runs` timed iterations each run `a` once
/// and `b` once, alternating which goes first so that neither always runs
/// on a warm or a cold cache. Inputs are converted before timing, so only
/// the runtime's execution is timed.
pub fn bench(
    a: &Runner,
    b: &Runner,
    samples: &[Sample],
    warmup: usize,
    runs: usize,
) -> Result<BenchResult> {
    match (a, b) {
        (Runner::Tract(a), Runner::Tract(b)) => bench_tract(a, b, samples, warmup, runs),
        (Runner::Ort(a), Runner::Ort(b)) => bench_ort(a, b, samples, warmup, runs),
        _ => bail!("bench compares two models in the same runtime"),
    }
}

/// [`bench`] in tract: each model reuses one execution state.
pub fn bench_tract(
    a: &Model,
    b: &Model,
    samples: &[Sample],
    warmup: usize,
    runs: usize,
) -> Result<BenchResult> {
    check_counts(samples, runs)?;
    let inputs_a = prepare(a, samples).context("preparing inputs of model a")?;
    let inputs_b = prepare(b, samples).context("preparing inputs of model b")?;
    catch_tract_panic("benchmarking", || {
        let mut state_a = a.spawn()?;
        let mut state_b = b.spawn()?;
        let time = |state: &mut super::load::State, inputs: &TVec<TValue>| -> Result<f64> {
            let start = Instant::now();
            let out = state
                .run(inputs.clone())
                .map_err(|e| Refusal::TractCannotRun.because(anyhow!("running failed: {e:#}")))?;
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            drop(out);
            Ok(elapsed)
        };
        alternate(
            samples.len(),
            warmup,
            runs,
            |k| time(&mut state_a, &inputs_a[k]),
            |k| time(&mut state_b, &inputs_b[k]),
        )
    })
}

/// [`bench`] in ONNX Runtime: one session per model.
pub fn bench_ort(
    a: &OrtSession,
    b: &OrtSession,
    samples: &[Sample],
    warmup: usize,
    runs: usize,
) -> Result<BenchResult> {
    check_counts(samples, runs)?;
    let prepare =
        |m: &OrtSession| -> Result<Vec<_>> { samples.iter().map(|s| m.prepare(s)).collect() };
    let inputs_a = prepare(a).context("preparing inputs of model a")?;
    let inputs_b = prepare(b).context("preparing inputs of model b")?;
    let time = |m: &OrtSession, inputs: &Prepared| -> Result<f64> {
        let start = Instant::now();
        m.run_prepared(inputs, false)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    alternate(
        samples.len(),
        warmup,
        runs,
        |k| time(a, &inputs_a[k]),
        |k| time(b, &inputs_b[k]),
    )
}

fn check_counts(samples: &[Sample], runs: usize) -> Result<()> {
    if samples.is_empty() {
        bail!("bench needs at least one sample");
    }
    if runs == 0 {
        bail!("bench needs at least one timed run");
    }
    Ok(())
}

/// The timing loop shared by the runtimes: `time_a(k)` / `time_b(k)` run
/// sample `k` once and return milliseconds.
fn alternate(
    samples: usize,
    warmup: usize,
    runs: usize,
    mut time_a: impl FnMut(usize) -> Result<f64>,
    mut time_b: impl FnMut(usize) -> Result<f64>,
) -> Result<BenchResult> {
    let mut times_a = Vec::with_capacity(runs);
    let mut times_b = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let k = i % samples;
        let (ta, tb) = if i % 2 == 0 {
            let ta = time_a(k)?;
            (ta, time_b(k)?)
        } else {
            let tb = time_b(k)?;
            (time_a(k)?, tb)
        };
        if i >= warmup {
            times_a.push(ta);
            times_b.push(tb);
        }
    }
    let ratios: Vec<f64> = times_a
        .iter()
        .zip(&times_b)
        .map(|(a, b)| if *b > 0.0 { a / b } else { 1.0 })
        .collect();
    let r = timing(ratios);
    let p10 =
        r.sorted[((0.1 * r.sorted.len() as f64).ceil() as usize).clamp(1, r.sorted.len()) - 1];
    let a = timing(times_a).stats;
    let b = timing(times_b).stats;
    let speedup = if b.median_ms > 0.0 {
        a.median_ms / b.median_ms
    } else {
        1.0
    };
    Ok(BenchResult {
        warmup,
        runs,
        a,
        b,
        speedup,
        paired_speedup: r.stats.median_ms,
        paired_spread: [p10, r.stats.p90_ms],
    })
}

fn prepare(model: &Model, samples: &[Sample]) -> Result<Vec<TVec<TValue>>> {
    samples
        .iter()
        .map(|s| {
            model
                .prepare(s)
                .with_context(|| format!("sample {}", s.source()))
        })
        .collect()
}

/// Statistics of non-empty `times`, and the values sorted.
struct Sorted {
    stats: Timing,
    sorted: Vec<f64>,
}

fn timing(mut times: Vec<f64>) -> Sorted {
    times.sort_by(|x, y| x.total_cmp(y));
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    // nearest rank: the smallest value with at least 90% of values <= it
    let p90 = times[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    let stats = Timing {
        runs: n,
        median_ms: median,
        p90_ms: p90,
        min_ms: times[0],
        mean_ms: times.iter().sum::<f64>() / n as f64,
    };
    Sorted {
        stats,
        sorted: times,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_stats() {
        let t = timing(vec![5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]).stats;
        assert_eq!(t.runs, 10);
        assert_eq!(t.median_ms, 5.5);
        assert_eq!(t.p90_ms, 9.0);
        assert_eq!(t.min_ms, 1.0);
        assert_eq!(t.mean_ms, 5.5);
        let t = timing(vec![2.0]).stats;
        assert_eq!((t.median_ms, t.p90_ms), (2.0, 2.0));
    }

    #[test]
    fn paired_ratios_see_through_a_spike_on_both() {
        // b is twice as fast; a load spike slows runs 3..9 of both fivefold
        let load = |k: usize| if (3..9).contains(&k) { 5.0 } else { 1.0 };
        let r = alternate(100, 0, 10, |k| Ok(2.0 * load(k)), |k| Ok(load(k))).unwrap();
        assert_eq!(r.paired_speedup, 2.0);
        assert_eq!(r.paired_spread, [2.0, 2.0]);
        // a spike on one run of one model widens the spread, not the median
        let r = alternate(
            100,
            0,
            10,
            |_| Ok(2.0),
            |k| Ok(if k == 3 { 20.0 } else { 1.0 }),
        )
        .unwrap();
        assert_eq!(r.paired_speedup, 2.0);
        assert_eq!(r.paired_spread, [0.1, 2.0]);
    }
}

#[cfg(test)]
mod model_tests {
    use super::super::load::InputShapes;
    use super::super::testutil::mlp;
    use super::*;

    #[test]
    fn bench_two_models() {
        let a = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let b = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let samples: Vec<Sample> = (0..3)
            .map(|i| Sample::random(a.inputs(), i).unwrap())
            .collect();
        let r = bench_tract(&a, &b, &samples, 2, 7).unwrap();
        assert_eq!((r.runs, r.a.runs, r.b.runs, r.warmup), (7, 7, 7, 2));
        assert!(r.a.min_ms > 0.0 && r.a.median_ms <= r.a.p90_ms);
        assert!(r.speedup > 0.0 && r.speedup.is_finite());
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["a"]["median_ms"].is_f64());
        assert!(bench_tract(&a, &b, &[], 0, 1).is_err());
        assert!(bench_tract(&a, &b, &samples, 0, 0).is_err());
        let wrong = Sample::new("w");
        let e = format!("{:#}", bench_tract(&a, &b, &[wrong], 0, 1).unwrap_err());
        assert!(e.contains("model a") && e.contains("missing"), "{e}");
    }
}
