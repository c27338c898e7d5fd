//! `--verify` and `--bench`: the original and the optimised model run side
//! by side in one runtime (tract or ONNX Runtime), on the same samples.
//!
//! The original decides what can be checked: when the runtime cannot run
//! it, the check is skipped and says why; when the original runs and the
//! optimised model does not, that is an error of the rewrite.

use crate::calibrate::Calibration;
use crate::exec;
use crate::ir::Model;
use crate::report::{BenchReport, RuntimeReport, VerifyReport};
use crate::runtime::{self, ort, Engine};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;

/// What to check and how.
pub struct Settings {
    pub verify: bool,
    pub bench: bool,
    /// Largest allowed max_rel_err per output (`None`: measure only).
    pub tolerance: Option<f64>,
    pub warmup: usize,
    pub runs: usize,
    /// ONNX Runtime's intra-op threads.
    pub threads: usize,
}

/// Prefix of the message of a check skipped because the runtime cannot run
/// the original model.
const CANNOT_RUN_ORIGINAL: [&str; 2] = [runtime::TRACT_CANNOT_RUN, ort::ORT_CANNOT_LOAD];

/// Verifies and/or times `optimised` against `original` in `engine` on
/// `data`'s samples.
pub fn check(
    engine: Engine,
    original: &Model,
    optimised: &Model,
    data: &Calibration,
    settings: &Settings,
) -> Result<RuntimeReport> {
    match check_in(engine, original, optimised, data, settings) {
        Err(e) => skipped(engine, &e, settings),
        ok => ok,
    }
}

/// The report of a check that could not run because the runtime cannot
/// run the original model (`error` says why); any other error is returned.
pub fn skipped(
    engine: Engine,
    error: &anyhow::Error,
    settings: &Settings,
) -> Result<RuntimeReport> {
    let why = format!("{error:#}");
    if !CANNOT_RUN_ORIGINAL.iter().any(|p| why.contains(p)) {
        return Err(anyhow!("{why}"));
    }
    Ok(RuntimeReport {
        runtime: engine,
        verify: Some(VerifyReport {
            runtime: engine,
            ok: None,
            tolerance: settings.tolerance,
            inputs: String::new(),
            samples: 0,
            outputs: vec![],
            skipped: Some(why),
        }),
        bench: None,
    })
}

fn check_in(
    engine: Engine,
    original: &Model,
    optimised: &Model,
    data: &Calibration,
    settings: &Settings,
) -> Result<RuntimeReport> {
    let (samples, shapes) = (&data.samples, &data.shapes);
    let options = ort::Options {
        threads: settings.threads,
        profile: None,
    };
    let before =
        exec::load_in(engine, original, shapes, &[], &options).context("original model")?;
    if !before.defaulted_dims().is_empty() {
        eprintln!(
            "warning: symbolic dims set to 1 for running: {} (pin them with --input-shape)",
            before.defaulted_dims().join(", ")
        );
    }
    // The original runs, so the optimised model must too: a failure here is
    // an error of the rewrite, never a reason to skip verification.
    let after = exec::load_in(engine, optimised, shapes, &[], &options).map_err(|e| {
        let e = format!("{e:#}")
            .replace(runtime::TRACT_CANNOT_RUN, "tract refused it")
            .replace(ort::ORT_CANNOT_LOAD, "ONNX Runtime refused it");
        anyhow!("the optimised model does not load in {engine}, though the original does: {e}")
    })?;
    let verify = if settings.verify {
        let mut silent = BTreeSet::new();
        let per_sample = samples
            .iter()
            .map(|s| {
                let reference = before.run(s).context("original model")?;
                for (name, t) in reference.iter() {
                    if t.to_f32_vec().is_ok_and(|v| v.iter().all(|&x| x == 0.0)) {
                        silent.insert(name.to_string());
                    }
                }
                runtime::compare(&reference, &after.run(s).context("optimised model")?)
            })
            .collect::<Result<Vec<_>>>()?;
        if !silent.is_empty() {
            eprintln!(
                "warning: the original model outputs only zeros for {} on these inputs, so they \
                 check little there: give realistic data with --inputs",
                silent.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let outputs = runtime::aggregate(&per_sample)?;
        let ok = settings
            .tolerance
            .map(|t| outputs.iter().all(|o| o.max_rel_err <= t));
        Some(VerifyReport {
            runtime: engine,
            ok,
            tolerance: settings.tolerance,
            inputs: data.source.clone(),
            samples: samples.len(),
            outputs,
            skipped: None,
        })
    } else {
        None
    };
    let bench = if settings.bench {
        let result = runtime::bench(
            &before,
            &after,
            samples,
            settings.warmup,
            settings.runs.max(1),
        )?;
        // tract runs single-threaded here.
        let threads = match engine {
            Engine::Tract => 1,
            Engine::Ort => settings.threads.max(1),
        };
        Some(BenchReport::new(engine, threads, &result))
    } else {
        None
    };
    Ok(RuntimeReport {
        runtime: engine,
        verify,
        bench,
    })
}
