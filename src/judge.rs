//! Judging a result against the original on data: `--verify` (output
//! agreement, and task accuracy when labels are given) and `--bench`.
//!
//! The data come in shape groups (see `data::Dataset::groups`): each group
//! loads both models pinned to its shapes, one group at a time, and streams
//! its samples from disk, so judging 10 000 images holds one in memory.
//! Metrics aggregate over every group; the bench runs on the largest group
//! (its first [`BENCH_SAMPLES`] samples).

use crate::calibrate::Calibration;
use crate::data::{Accuracy, Dataset, TopK};
use crate::exec;
use crate::ir::Model;
use crate::runtime::{self, BenchResult, InputShapes, OutputMetrics, Sample};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;

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

/// What judging found.
pub struct Verdict {
    /// Per output, aggregated over every sample of every group.
    pub outputs: Vec<OutputMetrics>,
    pub samples: usize,
    pub groups: usize,
    /// Outputs that were all zeros on some sample (they check little).
    pub silent: BTreeSet<String>,
    /// Top-k accuracy of (original, result) when labels were given.
    pub accuracy: Option<(TopK, TopK)>,
    /// Symbolic dims that nothing pinned, set to 1.
    pub defaulted: Vec<String>,
    pub bench: Option<BenchResult>,
}

/// Loads `model` pinned to `shapes`; an `optimised` model that tract
/// refuses while it runs the original is an error of the rewrite.
fn load(model: &Model, shapes: &InputShapes, optimised: bool) -> Result<runtime::Model> {
    if !optimised {
        return exec::load(model, shapes, &[]).context("original model");
    }
    exec::load(model, shapes, &[]).map_err(|e| {
        // Not "tract cannot run": the CLI skips verification on that prefix.
        let why = format!("{e:#}").replace(runtime::TRACT_CANNOT_RUN, "tract refused it");
        anyhow!("the optimised model does not load in tract, though the original does: {why}")
    })
}

/// Runs `original` and `optimised` on `data`: compares outputs when
/// `verify`, times them when `bench` is `Some((warmup, runs))`.
pub fn judge(
    original: &Model,
    optimised: &Model,
    data: &Judged,
    verify: bool,
    bench: Option<(usize, usize)>,
) -> Result<Verdict> {
    let groups = data.groups();
    let mut per_group = Vec::new();
    let mut samples = 0;
    let mut silent = BTreeSet::new();
    let mut acc = (Accuracy::default(), Accuracy::default());
    let mut defaulted = BTreeSet::new();
    if verify {
        for (shapes, members) in &groups {
            let before = load(original, shapes, false)?;
            let after = load(optimised, shapes, true)?;
            defaulted.extend(before.defaulted_dims().iter().cloned());
            let mut per_sample = Vec::new();
            for &i in members {
                let s = data.sample(i)?;
                let reference = before.run(&s)?;
                let got = after.run(&s)?;
                for (name, t) in reference.iter() {
                    if t.to_f32_vec().is_ok_and(|v| v.iter().all(|&x| x == 0.0)) {
                        silent.insert(name.to_string());
                    }
                }
                if let Some(labels) = data.labels(i) {
                    let first = |o: &runtime::Outputs| -> Result<Vec<f32>> {
                        o.iter()
                            .next()
                            .context("the model has no output")?
                            .1
                            .to_f32_vec()
                    };
                    let at = || format!("{}: accuracy", s.source());
                    acc.0.add(&first(&reference)?, labels).with_context(at)?;
                    acc.1.add(&first(&got)?, labels).with_context(at)?;
                }
                per_sample.push(runtime::compare(&reference, &got)?);
            }
            samples += per_sample.len();
            per_group.push(runtime::aggregate(&per_sample)?);
        }
    }
    let outputs = if verify {
        runtime::aggregate(&same_shapes(per_group))?
    } else {
        vec![]
    };
    let bench = match bench {
        Some((warmup, runs)) => {
            let (shapes, members) = groups
                .iter()
                .max_by_key(|(_, m)| m.len())
                .context("no samples to bench on")?;
            let before = load(original, shapes, false)?;
            let after = load(optimised, shapes, true)?;
            defaulted.extend(before.defaulted_dims().iter().cloned());
            let samples = members
                .iter()
                .take(BENCH_SAMPLES)
                .map(|&i| data.sample(i))
                .collect::<Result<Vec<_>>>()?;
            Some(runtime::bench(&before, &after, &samples, warmup, runs)?)
        }
        None => None,
    };
    Ok(Verdict {
        outputs,
        samples,
        groups: groups.len(),
        silent,
        accuracy: acc.0.result().zip(acc.1.result()),
        defaulted: defaulted.into_iter().collect(),
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
