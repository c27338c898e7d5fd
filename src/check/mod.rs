//! `--verify` and `--bench`: the original and the optimised model run side
//! by side in one runtime (tract or ONNX Runtime), on the same samples.
//!
//! The original decides what can be checked: when the runtime cannot run
//! it, the check is skipped and says why; when the original runs and the
//! optimised model does not, that is an error of the rewrite.
//!
//! The data come in shape groups (see `data::Dataset::groups`): each group
//! loads both models pinned to its shapes, one group at a time, and streams
//! its samples from disk, so judging 10 000 images holds one in memory.
//! Metrics aggregate over every group (output agreement, and task accuracy
//! when labels are given); the bench runs on the largest group (its first
//! [`BENCH_SAMPLES`] samples).

use crate::calibrate::Calibration;
use crate::data::{Accuracy, Dataset};
use crate::exec;
use crate::ir::Model;
use crate::report::{Accuracies, BenchReport, RuntimeReport, VerifyReport};
use crate::runtime::{
    self, ort, Engine, InputShapes, OutputMetrics, Refusal, Runner, RuntimeError, Sample,
};
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, BTreeSet};

mod floor;
pub use floor::{nudged, FLOOR_TIMES};

/// What to check and how.
pub struct Settings {
    pub verify: bool,
    pub bench: bool,
    /// Largest allowed max_rel_err per output (`None`: measure only).
    pub tolerance: Option<f64>,
    /// The tolerance is the exact pipelines' default, not the user's: an
    /// output over it still passes within [`FLOOR_TIMES`] × the model's own
    /// rounding floor (see `floor.rs`), measured when one is over.
    pub floor: bool,
    pub warmup: usize,
    pub runs: usize,
    /// ONNX Runtime's intra-op threads.
    pub threads: usize,
}

/// Bytes of samples and of the original's outputs verification keeps to
/// run the two models one after the other (see `check_in`).
const KEPT_BUDGET: usize = 256 << 20;

/// Bytes of some tensors (a sample's inputs, a run's outputs).
fn tensor_bytes<'t>(tensors: impl Iterator<Item = (&'t str, &'t runtime::Tensor)>) -> usize {
    tensors
        .map(|(_, t)| t.len() * t.elem_type().size_of())
        .sum()
}

/// Samples the bench cycles through (held in memory).
pub const BENCH_SAMPLES: usize = 32;

/// What the models are judged on: data on disk, or samples in memory (random).
pub enum Judged<'a> {
    Data(&'a Dataset),
    Memory(&'a Calibration),
}

impl Judged<'_> {
    fn groups(&self) -> Vec<(InputShapes, Vec<usize>)> {
        match self {
            Judged::Data(d) => d.groups(),
            Judged::Memory(c) => c.groups.clone(),
        }
    }

    fn sample(&self, i: usize) -> Result<Sample> {
        match self {
            Judged::Data(d) => d.sample(i),
            Judged::Memory(c) => Ok(c.samples[i].clone()),
        }
    }

    fn labels(&self, i: usize) -> Option<&[i64]> {
        match self {
            Judged::Data(d) => d.labels(i),
            Judged::Memory(_) => None,
        }
    }

    /// Where the samples come from, for the report.
    pub fn describe(&self) -> String {
        match self {
            Judged::Data(d) => d.describe(),
            Judged::Memory(c) => c.source.clone(),
        }
    }
}

/// Verifies and/or times `optimised` against `original` in `engine` on
/// `data`'s samples.
pub fn check(
    engine: Engine,
    original: &Model,
    optimised: &Model,
    data: &Judged,
    settings: &Settings,
) -> Result<RuntimeReport> {
    Check {
        engine,
        original,
        loaded: None,
        optimised,
        data,
        settings,
    }
    .run()
}

/// One check: [`check`]'s arguments, with the original maybe already loaded.
#[derive(Clone, Copy)]
pub struct Check<'a> {
    pub engine: Engine,
    pub original: &'a Model,
    /// The original as the caller loaded it, taken instead of compiling it
    /// again for a group of the same shapes in the same runtime. Only a
    /// tract model is taken: ONNX Runtime sessions here get `--threads`.
    pub loaded: Option<Loaded<'a>>,
    pub optimised: &'a Model,
    pub data: &'a Judged<'a>,
    pub settings: &'a Settings,
}

/// The original as the caller already loaded it (`exec::load_any` or
/// `exec::load_in`, no extra outputs), pinned to `shapes`.
#[derive(Clone, Copy)]
pub struct Loaded<'a> {
    pub shapes: &'a InputShapes,
    pub runner: &'a Runner,
}

impl Check<'_> {
    /// Runs the check; a runtime that cannot run the original skips it
    /// (see [`skips`]).
    pub fn run(self) -> Result<RuntimeReport> {
        let engine = self.engine;
        let loaded = self
            .loaded
            .filter(|l| engine == Engine::Tract && l.runner.engine() == Engine::Tract);
        match check_in(Check { loaded, ..self }) {
            Err(e) if skips(&e) => Ok(skipped(engine, &e, self.settings)),
            r => r,
        }
    }
}

/// Whether `error` says the runtime cannot run the original model, which
/// skips the check. tract refusing the model (an operator it lacks) does;
/// tract panicking on it does not: the model may be broken (the CLI lets
/// ONNX Runtime check such a model instead, when the user named no runtime).
pub fn skips(error: &anyhow::Error) -> bool {
    matches!(
        runtime::refusal(error),
        Some(Refusal::TractCannotRun | Refusal::OrtCannotLoad)
    )
}

/// The report of a check that could not run because the runtime cannot
/// run the original model (`error` says why, see [`skips`]).
pub fn skipped(engine: Engine, error: &anyhow::Error, settings: &Settings) -> RuntimeReport {
    RuntimeReport {
        runtime: engine,
        verify: Some(VerifyReport {
            runtime: engine,
            ok: None,
            tolerance: settings.tolerance,
            inputs: String::new(),
            samples: 0,
            groups: 0,
            outputs: vec![],
            rounding_floor: None,
            accuracy: None,
            skipped: Some(format!("{error:#}")),
            asked: settings.verify,
        }),
        bench: None,
    }
}

/// The two models loaded in one runtime, pinned to one group's shapes.
struct Pair<'a> {
    before: Original<'a>,
    after: Runner,
}

/// The original, compiled here or taken as the caller loaded it.
enum Original<'a> {
    Compiled(Runner),
    Loaded(&'a Runner),
}

impl Pair<'_> {
    fn before(&self) -> &Runner {
        self.before.runner()
    }
}

impl<'a> Pair<'a> {
    /// `check`'s two models, pinned to `shapes`.
    fn load(check: Check<'a>, shapes: &InputShapes) -> Result<Pair<'a>> {
        let before = Original::load(check, shapes)?;
        let after = load_optimised(check, shapes)?;
        Ok(Pair { before, after })
    }
}

impl<'a> Original<'a> {
    /// `check`'s original pinned to `shapes`: the caller's when it was
    /// loaded at those shapes, else compiled here.
    fn load(check: Check<'a>, shapes: &InputShapes) -> Result<Original<'a>> {
        Ok(match check.loaded.filter(|l| l.shapes == shapes) {
            Some(l) => Original::Loaded(l.runner),
            None => Original::Compiled(
                exec::load_in(check.engine, check.original, shapes, &[], &options(check))
                    .context("original model")?,
            ),
        })
    }

    fn runner(&self) -> &Runner {
        match self {
            Original::Compiled(r) => r,
            Original::Loaded(r) => r,
        }
    }
}

/// `check`'s optimised model pinned to `shapes`. The original runs, so the
/// optimised model must too: a failure here is an error of the rewrite,
/// never a reason to skip verification.
fn load_optimised(check: Check, shapes: &InputShapes) -> Result<Runner> {
    exec::load_in(check.engine, check.optimised, shapes, &[], &options(check))
        .map_err(|e| of_the_rewrite(check.engine, "load", &e))
}

fn options(check: Check) -> ort::Options {
    ort::Options {
        threads: check.settings.threads,
        profile: None,
    }
}

/// An error of the optimised model where the original works: never
/// mistaken for "the runtime cannot run the original" (which skips).
fn of_the_rewrite(engine: Engine, what: &str, e: &anyhow::Error) -> anyhow::Error {
    let e = RuntimeError::of_the_rewrite(e);
    anyhow!("the optimised model does not {what} in {engine}, though the original does: {e}")
}

fn check_in(check: Check) -> Result<RuntimeReport> {
    let Check {
        engine,
        data,
        settings,
        ..
    } = check;
    let groups = data.groups();
    let mut defaulted = BTreeSet::new();
    // The bench runs on the largest group; verification keeps that group's
    // models for it, so that nothing is compiled twice.
    let bench_group = groups
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, members))| members.len())
        .map(|(k, _)| k);
    // Both models on `shapes`, noting the dims the runtime defaulted.
    let load_pair = |shapes: &InputShapes, defaulted: &mut BTreeSet<String>| -> Result<Pair> {
        let pair = Pair::load(check, shapes)?;
        defaulted.extend(pair.before().defaulted_dims().iter().cloned());
        Ok(pair)
    };
    let mut kept = None;
    let verify = if settings.verify {
        let mut per_group = Vec::new();
        let mut samples = 0;
        let mut silent = BTreeSet::new();
        let mut acc = (Accuracy::default(), Accuracy::default());
        for (k, (shapes, members)) in groups.iter().enumerate() {
            let keep = settings.bench && Some(k) == bench_group;
            let before = Original::load(check, shapes)?;
            defaulted.extend(before.runner().defaulted_dims().iter().cloned());
            // One model at a time where nothing needs both (the bench
            // does): the samples and the original's outputs are kept, up to
            // KEPT_BUDGET bytes, and the original is dropped before the
            // optimised model loads, so a large model's check holds one copy
            // of its weights, not two. Past the budget, both run in turn on
            // each sample.
            let mut before = Some(before);
            let mut after: Option<Runner> = None;
            let mut pending: Vec<(usize, Sample, runtime::Outputs)> = vec![];
            let mut held = 0;
            let mut per_sample = Vec::new();
            // Runs the optimised model on the pending samples and compares.
            let mut settle =
                |after: &Runner, pending: &mut Vec<(usize, Sample, runtime::Outputs)>| {
                    for (i, s, reference) in pending.drain(..) {
                        let got = after
                            .run(&s)
                            .map_err(|e| of_the_rewrite(engine, "run", &e))?;
                        if let Some(labels) = data.labels(i) {
                            let scores = |o: &runtime::Outputs| -> Result<Vec<f32>> {
                                o.scores()
                                    .context("the model has no output")?
                                    .1
                                    .to_f32_vec()
                            };
                            let at = || format!("{}: accuracy", s.source());
                            acc.0.add(&scores(&reference)?, labels).with_context(at)?;
                            acc.1.add(&scores(&got)?, labels).with_context(at)?;
                        }
                        per_sample.push(runtime::compare(&reference, &got)?);
                    }
                    anyhow::Ok(())
                };
            for &i in members {
                let s = data.sample(i)?;
                let original = before.as_ref().expect("dropped after the last sample");
                let reference = original.runner().run(&s).context("original model")?;
                for (name, t) in reference.iter() {
                    if t.to_f32_vec().is_ok_and(|v| v.iter().all(|&x| x == 0.0)) {
                        silent.insert(name.to_string());
                    }
                }
                held += tensor_bytes(s.iter()) + tensor_bytes(reference.iter());
                pending.push((i, s, reference));
                if after.is_none() && (keep || held > KEPT_BUDGET) {
                    after = Some(load_optimised(check, shapes)?);
                }
                if let Some(after) = &after {
                    settle(after, &mut pending)?;
                }
            }
            if after.is_none() {
                if !keep {
                    before = None; // its weights go before the optimised model's come
                }
                after = Some(load_optimised(check, shapes)?);
            }
            let after = after.expect("loaded");
            settle(&after, &mut pending)?;
            samples += per_sample.len();
            per_group.push(runtime::aggregate(&per_sample)?);
            if let (true, Some(before)) = (keep, before) {
                kept = Some(Pair { before, after });
            }
        }
        if !silent.is_empty() {
            eprintln!(
                "warning: the original model outputs only zeros for {} on these inputs, so they \
                 check little there: give realistic data with --inputs",
                silent.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let outputs = runtime::aggregate(&same_shapes(per_group))?;
        let over = |o: &OutputMetrics, t: f64| o.max_rel_err.is_nan() || o.max_rel_err > t;
        let mut floors = None;
        let ok = match settings.tolerance {
            Some(t) if settings.floor && outputs.iter().any(|o| over(o, t)) => {
                let floor: BTreeMap<String, f64> = floor::rounding_floor(check, &groups)
                    .context("measuring the model's rounding floor")?
                    .into_iter()
                    .map(|f| (f.name, f.max_rel_err))
                    .collect();
                let ok = outputs.iter().all(|o| {
                    let f = floor.get(&o.name).copied().unwrap_or(0.0);
                    !over(o, t.max(FLOOR_TIMES * f))
                });
                floors = Some(floor);
                Some(ok)
            }
            t => t.map(|t| outputs.iter().all(|o| !over(o, t))),
        };
        Some(VerifyReport {
            runtime: engine,
            ok,
            tolerance: settings.tolerance,
            inputs: data.describe(),
            samples,
            groups: groups.len(),
            outputs,
            rounding_floor: floors,
            accuracy: acc
                .0
                .result()
                .zip(acc.1.result())
                .map(|(before, after)| Accuracies { before, after }),
            skipped: None,
            asked: true,
        })
    } else {
        None
    };
    let bench = if settings.bench {
        let (shapes, members) = &groups[bench_group.context("no samples to bench on")?];
        let pair = match kept.take() {
            Some(pair) => pair,
            None => load_pair(shapes, &mut defaulted)?,
        };
        let samples = members
            .iter()
            .take(BENCH_SAMPLES)
            .map(|&i| data.sample(i))
            .collect::<Result<Vec<_>>>()?;
        let result = runtime::bench(
            pair.before(),
            &pair.after,
            &samples,
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
    if !defaulted.is_empty() {
        eprintln!(
            "warning: symbolic dims set to 1 for running: {} (pin them with --input-shape)",
            defaulted.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(RuntimeReport {
        runtime: engine,
        verify,
        bench,
    })
}

/// Gives each output one shape across groups, 0 on the axes where the
/// groups differ (a text line's width), so the groups' metrics aggregate.
fn same_shapes(mut per_group: Vec<Vec<OutputMetrics>>) -> Vec<Vec<OutputMetrics>> {
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    for m in per_group.iter().flatten() {
        match shapes.iter_mut().find(|(n, _)| *n == m.name) {
            Some((_, s)) if s.len() == m.shape.len() => {
                for (a, b) in s.iter_mut().zip(&m.shape) {
                    if a != b {
                        *a = 0;
                    }
                }
            }
            Some(_) => {}
            None => shapes.push((m.name.clone(), m.shape.clone())),
        }
    }
    for m in per_group.iter_mut().flatten() {
        if let Some((_, s)) = shapes.iter().find(|(n, _)| *n == m.name) {
            if s.len() == m.shape.len() {
                m.shape = s.clone();
            }
        }
    }
    per_group
}
