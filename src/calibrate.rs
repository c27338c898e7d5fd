//! Calibration data for the passes that fit to data (low-rank fits,
//! quantization ranges, refitting after pruning): the samples, and a way to
//! see any intermediate value of a model on them.
//!
//! The CLI builds a [`Calibration`] from `--inputs` (or seeded random inputs,
//! with a warning) before the passes run; passes receive it through
//! `pipeline::Context`. Running goes through `exec`, like everything else.

use crate::exec;
use crate::ir::Model;
use crate::runtime::{self, InputShapes, Sample};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Samples to calibrate on.
pub struct Calibration {
    pub samples: Vec<Sample>,
    /// Input shapes used to run (pinned by the user or by the data).
    pub shapes: InputShapes,
    /// Where the samples come from: a path, or `random, seed N`.
    pub source: String,
    /// The samples are random noise, not data: fits to them are weak.
    pub random: bool,
}

impl Calibration {
    /// Samples from `inputs` (a .npz or a folder, see `runtime::load_samples`),
    /// or `count` seeded random samples when `inputs` is `None`. Dims not in
    /// `shapes` take the data's shapes.
    pub fn load(
        model: &Model,
        shapes: &InputShapes,
        inputs: Option<&Path>,
        seed: u64,
        count: usize,
    ) -> Result<Calibration> {
        let mut shapes = shapes.clone();
        if let Some(path) = inputs {
            for (name, dims) in runtime::sample_shapes(path)?.iter() {
                if shapes.get(name).is_none() {
                    shapes.insert(name, dims.to_vec());
                }
            }
        }
        let rt = exec::load(model, &shapes, &[])?;
        let (samples, source) = match inputs {
            Some(path) => (
                runtime::load_samples(path, rt.inputs())?,
                path.display().to_string(),
            ),
            None => (
                (0..count.max(1) as u64)
                    .map(|k| Sample::random(rt.inputs(), seed + k))
                    .collect::<Result<Vec<_>>>()?,
                format!("random, seed {seed}"),
            ),
        };
        if samples.is_empty() {
            bail!("no input samples found in {source}");
        }
        Ok(Calibration {
            samples,
            shapes,
            source,
            random: inputs.is_none(),
        })
    }

    /// Runs `model` on every sample and returns, for each name in `values`
    /// (values of the main graph), its tensor on each sample:
    /// `result[value][sample]`.
    pub fn capture(&self, model: &Model, values: &[String]) -> Result<Vec<Vec<runtime::Tensor>>> {
        if values.is_empty() {
            return Ok(vec![]);
        }
        let rt = exec::load(model, &self.shapes, values)
            .context("loading the model to capture calibration values")?;
        let mut captured: Vec<Vec<runtime::Tensor>> = vec![vec![]; values.len()];
        for outputs in rt.run_many(&self.samples)? {
            // By name through a map: thousands of values are captured at once
            // on long models, and `Outputs::get` is a linear search.
            let by_name: HashMap<&str, &runtime::Tensor> = outputs.iter().collect();
            for (name, slot) in values.iter().zip(captured.iter_mut()) {
                let t = by_name
                    .get(name.as_str())
                    .with_context(|| format!("calibration value {name} was not produced"))?;
                slot.push((*t).clone());
            }
        }
        Ok(captured)
    }
}
