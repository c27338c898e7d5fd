//! Runs passes in order. Every pass and option is checked before the model is
//! touched; the verifier runs after every pass; each pass is timed and its
//! effect on size recorded for the report.

mod options;
mod spec;

pub use options::{List, OptionInfo, Options};
pub use spec::{format_pipeline, parse_pipeline, PassSpec};

use crate::calibrate::Calibration;
use crate::ir::{verify::verify, Model};
use crate::passes::{DataUse, PassInfo, PASSES};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// A configured pass, ready to run. Passes do no IO.
pub trait Pass: Send + Sync {
    /// Rewrites the model; returns pass-specific details for the report.
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value>;
}

/// What a pass may use besides the model.
#[derive(Default)]
pub struct PassContext {
    /// Calibration samples for the passes that fit to data
    /// ([`PassInfo::data`]): `--inputs`, or random ones (flagged as such) when
    /// a pass requires samples; `None` otherwise.
    pub data: Option<Calibration>,
}

pub struct Step {
    pub info: &'static PassInfo,
    pub options: BTreeMap<String, String>,
    pass: Box<dyn Pass>,
}

pub struct Pipeline {
    pub steps: Vec<Step>,
}

#[derive(Serialize, Debug)]
pub struct PassReport {
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub ms: f64,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub params_before: usize,
    pub params_after: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
    pub details: serde_json::Value,
}

pub fn find_pass(name: &str) -> Result<&'static PassInfo> {
    match PASSES.iter().find(|p| p.name == name) {
        Some(p) => Ok(p),
        None => {
            let valid: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
            bail!(
                "unknown pass '{name}'; valid passes: {} (see `onnx-opt passes`)",
                valid.join(", ")
            )
        }
    }
}

impl Pipeline {
    /// Parses and checks a pass list; nothing runs yet.
    pub fn parse(text: &str) -> Result<Pipeline> {
        let steps = parse_pipeline(text)?
            .into_iter()
            .map(|spec| {
                let info = find_pass(&spec.name)?;
                // Errors from a pass's options name no pass: this says which.
                let pass = Options::new(info.options, &spec.options)
                    .and_then(|o| (info.build)(&o))
                    .with_context(|| format!("pass '{}'", info.name))?;
                Ok(Step {
                    info,
                    options: spec.options,
                    pass,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Pipeline { steps })
    }

    /// The same pipeline with every step of pass `name` run by `make()`
    /// instead: a composite pass lends its parts what it owns this way
    /// (`fuse` its memo to `fuse-bn`).
    pub fn with_pass(mut self, name: &str, make: impl Fn() -> Box<dyn Pass>) -> Pipeline {
        for step in self.steps.iter_mut().filter(|s| s.info.name == name) {
            step.pass = make();
        }
        self
    }

    /// True when every pass changes outputs by rounding only.
    pub fn is_exact(&self) -> bool {
        self.steps.iter().all(|s| s.info.exact)
    }

    /// How much the passes need calibration data: the most any one needs.
    pub fn data_use(&self) -> DataUse {
        let need = |d: DataUse| match d {
            DataUse::None => 0,
            DataUse::IfGiven => 1,
            DataUse::Runs => 2,
            DataUse::Required => 3,
        };
        self.steps
            .iter()
            .map(|s| s.info.data)
            .max_by_key(|&d| need(d))
            .unwrap_or(DataUse::None)
    }

    pub fn run(
        &self,
        model: &mut Model,
        cx: &PassContext,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<Vec<PassReport>> {
        self.run_checked(model, cx, on_step, true)
    }

    /// For composite passes (`fuse`): the steps inside one pass are verified
    /// in debug builds (every test) but not in release, where the pipeline
    /// verifies after the composite pass as after any other (a `fuse` run
    /// verified after each of its ~30 steps spent 13% of its time there).
    pub fn run_nested(&self, model: &mut Model, cx: &PassContext) -> Result<Vec<PassReport>> {
        self.run_checked(model, cx, &mut |_| {}, cfg!(debug_assertions))
    }

    /// [`Pipeline::run_nested`], for a pipeline run again and again (`fuse`'s
    /// rounds): `known_clean` is what the last run returned, when the model
    /// has not changed since (same [`Graph::last_edit`]). Returns the reports
    /// and the first step after which nothing changed. Passes are functions
    /// of the model: a step that changed nothing on a model changes nothing
    /// on that model again. So when the steps before the known clean tail
    /// change nothing, the model is the one the tail already ran on and the
    /// tail is skipped: same result, less work (a confirming round of `fuse`
    /// runs 4 of its 14 steps on PP-OCRv4 rec).
    ///
    /// [`Graph::last_edit`]: crate::ir::Graph::last_edit
    pub fn run_nested_again(
        &self,
        model: &mut Model,
        cx: &PassContext,
        known_clean: Option<usize>,
    ) -> Result<(Vec<PassReport>, usize)> {
        // (first step of the clean tail so far, last edit seen)
        let mut state = (0, model.graph.last_edit());
        let note = |state: &mut (usize, u64), k: usize, model: &Model| {
            // Steps before k have run.
            let now = model.graph.last_edit();
            if now != state.1 {
                *state = (k, now);
            }
        };
        let mut stop = |k: usize, model: &Model| {
            note(&mut state, k, model);
            known_clean.is_some_and(|tail| k >= tail) && state.0 == 0
        };
        let reports = self.run_steps(model, cx, &mut |_| {}, cfg!(debug_assertions), &mut stop)?;
        if reports.len() == self.steps.len() {
            note(&mut state, reports.len(), model);
        }
        let clean_from = state.0;
        Ok((reports, clean_from))
    }

    fn run_checked(
        &self,
        model: &mut Model,
        cx: &PassContext,
        on_step: &mut dyn FnMut(&str),
        check: bool,
    ) -> Result<Vec<PassReport>> {
        self.run_steps(model, cx, on_step, check, &mut |_, _| false)
    }

    /// Runs the steps in order until `stop(k, model)` says not to run step k.
    fn run_steps(
        &self,
        model: &mut Model,
        cx: &PassContext,
        on_step: &mut dyn FnMut(&str),
        check: bool,
        stop: &mut dyn FnMut(usize, &Model) -> bool,
    ) -> Result<Vec<PassReport>> {
        let mut reports = vec![];
        // One step's `after` is the next one's `before`.
        let mut before = model.stats();
        for (k, step) in self.steps.iter().enumerate() {
            if stop(k, model) {
                break;
            }
            let name = step.info.name;
            on_step(name);
            let start = Instant::now();
            let details = step
                .pass
                .run(model, cx)
                .with_context(|| format!("pass {name}"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if check {
                verify(model).with_context(|| {
                    format!("pass {name} left an invalid graph (a bug: please report it)")
                })?;
            }
            let after = model.stats();
            reports.push(PassReport {
                name: name.to_string(),
                options: step.options.clone(),
                ms,
                nodes_before: before.nodes,
                nodes_after: after.nodes,
                params_before: before.params,
                params_after: after.params,
                bytes_before: before.bytes,
                bytes_after: after.bytes,
                details,
            });
            before = after;
        }
        Ok(reports)
    }
}
