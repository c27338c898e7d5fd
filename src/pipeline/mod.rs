//! Runs passes in order. Every pass and option is checked before the model is
//! touched; the verifier runs after every pass; each pass is timed and its
//! effect on size recorded for the report.

mod options;
mod spec;

pub use options::{OptionInfo, Options};
pub use spec::{parse_pipeline, PassSpec};

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
                let pass = (info.build)(&Options::new(info.name, info.options, &spec.options)?)?;
                Ok(Step {
                    info,
                    options: spec.options,
                    pass,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Pipeline { steps })
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
            DataUse::Required => 2,
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

    fn run_checked(
        &self,
        model: &mut Model,
        cx: &PassContext,
        on_step: &mut dyn FnMut(&str),
        check: bool,
    ) -> Result<Vec<PassReport>> {
        let mut reports = vec![];
        // One step's `after` is the next one's `before`.
        let mut before = model.stats();
        for step in &self.steps {
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
