//! Timing where the model will run. Whether a lossy rewrite pays depends on
//! the runtime's kernels and the CPU (int8 with or without VNNI; channel
//! counts on or off ONNX Runtime's convolution blocks of 8 or 16), so the
//! passes that make such rewrites time what they made against the model
//! they were given, in the target runtime (ONNX Runtime; tract for
//! `quant{target=tract}`), and keep the fastest: never a model slower than
//! the given one.

use crate::calibrate::Calibration;
use crate::ir::Model;
use crate::pipeline::PassContext;
use crate::runtime::{BenchResult, Engine};
use anyhow::{Context, Result};

/// Timed runs per candidate (after warm-up), alternated with the given model.
pub(crate) const RUNS: usize = 15;

/// A candidate other than the first (the pass's preferred form) is kept
/// only when it is this much faster than the one kept so far, and any
/// candidate only when it is this much faster than the given model: noise
/// must not decide.
pub(crate) const MARGIN: f64 = 1.03;

/// How the timing was done, for the reports.
pub(crate) fn cost_model(engine: Engine) -> String {
    let runtime = match engine {
        Engine::Ort => "ONNX Runtime",
        Engine::Tract => "tract",
    };
    use crate::calibrate::{DECISIVE_GAP, LEAST_RUNS, MAX_TIMED_MS, MIN_TIMED_MS};
    let (least, most) = (MIN_TIMED_MS / 1e3, MAX_TIMED_MS / 1e3);
    format!(
        "measured in {runtime} (1 thread, alternated runs, median; at least {RUNS} runs and \
         {least} s a model, at most {most} s past {LEAST_RUNS} runs; a gap of {DECISIVE_GAP}x \
         over {least} s in the warm-up decides)"
    )
}

/// Whether ONNX Runtime's library is found: without it, nothing is timed.
pub(crate) fn ort_installed() -> bool {
    crate::runtime::ort::environment().is_ok()
}

/// The samples to time on: `cx`'s, when `measure` asks for timing and ONNX
/// Runtime is installed.
pub(crate) fn samples(measure: bool, cx: &PassContext) -> Option<&Calibration> {
    cx.data.as_ref().filter(|_| measure && ort_installed())
}

/// The report's `cost_model` when nothing was timed, and why; `nothing`
/// says why there was nothing to time.
pub(crate) fn not_timed(measure: bool, cx: &PassContext, nothing: &str) -> serde_json::Value {
    let why = match () {
        _ if !measure => "not asked: measure=false",
        _ if cx.data.is_none() => "no samples to time on",
        _ if !ort_installed() => "ONNX Runtime is not installed",
        _ => nothing,
    };
    serde_json::json!({ "cost_model": format!("static ({why})") })
}

/// The candidate to keep, given each one's speedup over the given model (the
/// first is preferred): `None` keeps the given model.
pub(crate) fn fastest(speedups: &[f64]) -> Option<usize> {
    let mut chosen = 0;
    for (i, &s) in speedups.iter().enumerate().skip(1) {
        if s > speedups[chosen] * MARGIN {
            chosen = i;
        }
    }
    speedups
        .get(chosen)
        .is_some_and(|&s| s >= MARGIN)
        .then_some(chosen)
}

/// Times every candidate against `given` in `engine` on `data`'s samples
/// (each model loaded once, runs alternated in this process).
pub(crate) fn time_in(
    engine: Engine,
    data: &Calibration,
    given: &Model,
    candidates: &[Model],
) -> Result<Vec<BenchResult>> {
    let base = data
        .load_model(Some(engine), given)
        .with_context(|| format!("loading the given model in {engine}"))?;
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let loaded = data
                .load_model(Some(engine), c)
                .with_context(|| format!("loading candidate {i} in {engine}"))?;
            data.time_loaded(&base, &loaded, RUNS)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fastest;

    #[test]
    fn the_first_candidate_is_kept_unless_another_is_clearly_faster() {
        let cases: [(&[f64], Option<usize>); 6] = [
            (&[1.5, 1.52], Some(0)),
            (&[1.5, 1.6], Some(1)),
            (&[1.2, 1.3, 1.5], Some(2)),
            (&[1.02], None),
            (&[0.8, 1.01], None),
            (&[], None),
        ];
        for (speedups, want) in cases {
            assert_eq!(fastest(speedups), want, "{speedups:?}");
        }
    }
}
