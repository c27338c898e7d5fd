//! Choosing the runtime: tract (built in) or ONNX Runtime (loaded at run
//! time), behind one type so that verify, bench and capture do not care.

use super::inputs::Sample;
use super::load::{InputShapes, InputSpec, Model, Outputs};
use super::ort::{self, Session as OrtSession};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A runtime that runs models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// tract, built into onnx-opt.
    Tract,
    /// ONNX Runtime, the shared library found by [`ort::library_path`].
    Ort,
}

impl FromStr for Engine {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Engine> {
        match s.trim() {
            "tract" => Ok(Engine::Tract),
            "ort" | "onnxruntime" => Ok(Engine::Ort),
            other => bail!("unknown runtime {other:?}: expected tract or ort"),
        }
    }
}

impl Engine {
    /// A comma-separated list (`tract,ort`), in order, without repeats.
    pub fn parse_list(s: &str) -> Result<Vec<Engine>> {
        let mut out = vec![];
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let e: Engine = part.parse()?;
            if !out.contains(&e) {
                out.push(e);
            }
        }
        if out.is_empty() {
            bail!("no runtime given: expected tract, ort or tract,ort");
        }
        Ok(out)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Tract => "tract",
            Engine::Ort => "ort",
        })
    }
}

/// A model loaded in one runtime.
pub enum Runner {
    Tract(Model),
    Ort(OrtSession),
}

impl Runner {
    /// Loads model bytes in `engine` with `extra_outputs` exposed; `options`
    /// are ONNX Runtime's session settings (tract runs on one thread).
    pub fn load(
        engine: Engine,
        bytes: &[u8],
        shapes: &InputShapes,
        extra_outputs: &[String],
        options: &ort::Options,
    ) -> Result<Runner> {
        Ok(match engine {
            Engine::Tract => Runner::Tract(Model::load(bytes, shapes, extra_outputs)?),
            Engine::Ort => Runner::Ort(OrtSession::load(
                bytes,
                None,
                shapes,
                extra_outputs,
                options,
            )?),
        })
    }

    pub fn engine(&self) -> Engine {
        match self {
            Runner::Tract(_) => Engine::Tract,
            Runner::Ort(_) => Engine::Ort,
        }
    }

    pub fn inputs(&self) -> &[InputSpec] {
        match self {
            Runner::Tract(m) => m.inputs(),
            Runner::Ort(s) => s.inputs(),
        }
    }

    /// Names of the model's own outputs (without the extra ones).
    pub fn model_output_names(&self) -> &[String] {
        match self {
            Runner::Tract(m) => m.model_output_names(),
            Runner::Ort(s) => s.model_output_names(),
        }
    }

    /// Input dims that were symbolic and set to 1.
    pub fn defaulted_dims(&self) -> &[String] {
        match self {
            Runner::Tract(m) => m.defaulted_dims(),
            Runner::Ort(s) => s.defaulted_dims(),
        }
    }

    pub fn run(&self, sample: &Sample) -> Result<Outputs> {
        match self {
            Runner::Tract(m) => m.run(sample),
            Runner::Ort(s) => s.run(sample),
        }
    }

    /// Runs every sample, keeping order (tract in parallel, ONNX Runtime in turn).
    pub fn run_many(&self, samples: &[Sample]) -> Result<Vec<Outputs>> {
        match self {
            Runner::Tract(m) => m.run_many(samples),
            Runner::Ort(s) => s.run_many(samples),
        }
    }
}
