//! ONNX Runtime: the only part of onnx-opt that sees the `ort` crate.
//!
//! The shared library is loaded at run time (the `load-dynamic` feature), so
//! a build needs nothing installed and a run that never asks for ONNX Runtime
//! never looks for it. The library is [`library_path`]: `ORT_DYLIB_PATH`, else
//! the `libonnxruntime.so.*` inside an `onnxruntime` Python package (the
//! active virtualenv, `./.venv`, then `python3`'s). It is loaded once per
//! process ([`environment`]).
//!
//! Sessions use the settings of a deployment: graph optimisation level all,
//! sequential execution, CPU, `threads` intra-op threads. Inputs and outputs
//! are the runtime's [`Sample`] and [`Outputs`], so comparing and timing are
//! shared with tract.

mod maps;
mod profile;

pub use profile::{parse as parse_profile, NodeTime, Profile};

use super::inputs::Sample;
use super::load::{decode_edges, input_specs, InputShapes, InputSpec, ModelEdges, Outputs};
use super::tensor::{ElemType, Tensor};
use super::Refusal;
use anyhow::{anyhow, bail, Context, Result};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tract_onnx::pb;

/// Prefix of every error that comes from ONNX Runtime being absent.
pub const ORT_UNAVAILABLE: &str = "ONNX Runtime is not available";

/// How to get the library, for error messages.
const HOW_TO_GET: &str = "install it with `pip install onnxruntime` (onnx-opt finds the library \
    inside the package of the active virtualenv or ./.venv) or set ORT_DYLIB_PATH to a \
    libonnxruntime shared library (1.22 or newer)";

/// Session settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Intra-op threads (1 = one core, as a per-core benchmark wants).
    pub threads: usize,
    /// Write ONNX Runtime's profile (a JSON trace) under this path prefix.
    pub profile: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: 1,
            profile: None,
        }
    }
}

/// The ONNX Runtime library this process uses: `ORT_DYLIB_PATH`, else the
/// one inside an installed `onnxruntime` Python package.
pub fn library_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "{ORT_UNAVAILABLE}: ORT_DYLIB_PATH is {}, which is not a file; {HOW_TO_GET}",
                p.display()
            );
        }
        return Ok(p);
    }
    python_package_library().ok_or_else(|| {
        anyhow!("{ORT_UNAVAILABLE}: no ONNX Runtime library found (ORT_DYLIB_PATH is not set and no onnxruntime Python package was found); {HOW_TO_GET}")
    })
}

/// `onnxruntime/capi/libonnxruntime.so.*` in the active virtualenv, in
/// `./.venv`, or in the package `python3` imports. Only locates a file:
/// nothing of Python runs onnx-opt's models.
fn python_package_library() -> Option<PathBuf> {
    let mut site_dirs = vec![];
    for venv in [
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        Some(PathBuf::from(".venv")),
    ]
    .into_iter()
    .flatten()
    {
        let lib = venv.join("lib");
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("site-packages"))
            .collect();
        pythons.sort();
        site_dirs.extend(pythons);
    }
    let found = site_dirs
        .iter()
        .find_map(|d| library_in(&d.join("onnxruntime")));
    found.or_else(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        library_in(Path::new(dir.trim()))
    })
}

/// The newest `capi/libonnxruntime.so.X.Y.Z` (or `.dylib`) of a package folder.
fn library_in(package: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") || n.ends_with(".dylib"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

/// The process's ONNX Runtime environment, loading the library on first use.
/// A failure is remembered: the library is looked for once.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path().map_err(|e| format!("{e:#}"))?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "{ORT_UNAVAILABLE}: loading {} failed: {e}; {HOW_TO_GET}",
                path.display()
            )
        })?;
        builder
            .with_name("onnx-opt")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("{ORT_UNAVAILABLE}: {} did not start: {e}", path.display()))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// A sample turned into ONNX Runtime values, in input order.
pub(crate) type Prepared = Vec<(String, DynValue)>;

/// A model in an ONNX Runtime session, ready to run.
pub struct Session {
    session: Mutex<ort::session::Session>,
    inputs: Vec<InputSpec>,
    output_names: Vec<String>,
    model_outputs: usize,
    defaulted: Vec<String>,
}

impl Session {
    /// Loads an ONNX model from its bytes, with `extra_outputs` (values of
    /// the main graph) returned after the model's own outputs. Inputs get
    /// concrete shapes as in tract: `shapes`, else the declared dims with
    /// symbolic ones set to 1. External data paths are relative to
    /// `model_dir` (the working directory when `None`).
    pub fn load(
        bytes: &[u8],
        model_dir: Option<&Path>,
        shapes: &InputShapes,
        extra_outputs: &[String],
        options: &Options,
    ) -> Result<Session> {
        let env = environment()?;
        let edges = decode_edges(bytes)?;
        let (inputs, defaulted) = input_specs(&edges.input, &edges.initializer_names(), shapes)?;
        let mut output_names: Vec<String> = edges.output.iter().map(|o| o.name.clone()).collect();
        let model_outputs = output_names.len();
        let mut added = vec![];
        for name in extra_outputs {
            if !output_names.contains(name) {
                output_names.push(name.clone());
                // A graph output without a type: ONNX Runtime infers it.
                added.push(pb::ValueInfoProto {
                    name: name.clone(),
                    ..Default::default()
                });
            }
        }
        // The caller's bytes as they are, or, with outputs added, followed
        // by a message that adds them (never a decoded copy of the model).
        let with_outputs;
        let bytes = if added.is_empty() {
            bytes
        } else {
            with_outputs = [bytes, &ModelEdges::adding_outputs(added)].concat();
            &with_outputs[..]
        };
        let failed = |e: ort::Error| Refusal::OrtCannotLoad.because(anyhow!("{e}"));
        let mut builder = ort::session::Session::builder(env)
            .map_err(failed)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| failed(e.into()))?
            .with_intra_threads(options.threads.max(1))
            .map_err(|e| failed(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| failed(e.into()))?
            .with_parallel_execution(false)
            .map_err(|e| failed(e.into()))?
            // Every failure comes back as an error we report with its
            // context; ONNX Runtime's own log line of it would say it twice.
            .with_log_level(ort::logging::LogLevel::Fatal)
            .map_err(|e| failed(e.into()))?;
        if let Some(prefix) = &options.profile {
            builder = builder
                .with_profiling(prefix)
                .map_err(|e| failed(e.into()))?;
        }
        if let Some(dir) = model_dir {
            // External data is read from `dir`, in place: no copy of the
            // model is written anywhere.
            let dir = dir
                .to_str()
                .with_context(|| format!("the folder {} is not valid UTF-8", dir.display()))?;
            builder = builder
                .with_config_entry("session.model_external_initializers_file_folder_path", dir)
                .map_err(|e| failed(e.into()))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(failed)?;
        Ok(Session {
            session: Mutex::new(session),
            inputs,
            output_names,
            model_outputs,
            defaulted,
        })
    }

    /// The model's inputs, in the file's order, with their pinned shapes.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Names of all outputs: the model's own, then the extra ones.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Names of the model's own outputs.
    pub fn model_output_names(&self) -> &[String] {
        &self.output_names[..self.model_outputs]
    }

    /// Input dims that were symbolic and set to 1.
    pub fn defaulted_dims(&self) -> &[String] {
        &self.defaulted
    }

    /// Checks a sample and turns it into ONNX Runtime values.
    pub(crate) fn prepare(&self, sample: &Sample) -> Result<Prepared> {
        sample
            .check(&self.inputs)
            .with_context(|| format!("sample {}", sample.source()))?;
        self.inputs
            .iter()
            .map(|spec| {
                let t = sample
                    .get(&spec.name)
                    .ok_or_else(|| anyhow!("sample has no input {:?}", spec.name))?;
                Ok((spec.name.clone(), to_ort(t)?))
            })
            .collect()
    }

    /// Runs prepared inputs and returns the outputs, or only runs them
    /// (for timing) when `collect` is false.
    pub(crate) fn run_prepared(
        &self,
        inputs: &[(String, DynValue)],
        collect: bool,
    ) -> Result<Option<Outputs>> {
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow!("an ONNX Runtime session was poisoned by a failed run"))?;
        let feed: Vec<(&str, &DynValue)> = inputs.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut outputs = session
            .run(feed)
            .map_err(|e| anyhow!("ONNX Runtime failed running the model: {e}"))?;
        if !collect {
            return Ok(None);
        }
        let entries = self
            .output_names
            .iter()
            .map(|name| {
                let v = outputs
                    .remove(name.as_str())
                    .ok_or_else(|| anyhow!("ONNX Runtime returned no output {name:?}"))?;
                Ok((
                    name.clone(),
                    from_ort(v).with_context(|| format!("output {name:?}"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Outputs::new(entries)))
    }

    /// Runs the model on one sample.
    pub fn run(&self, sample: &Sample) -> Result<Outputs> {
        let inputs = self.prepare(sample)?;
        self.run_prepared(&inputs, true)?
            .ok_or_else(|| anyhow!("no outputs collected"))
    }

    /// Runs the model on every sample, in order.
    pub fn run_many(&self, samples: &[Sample]) -> Result<Vec<Outputs>> {
        samples.iter().map(|s| self.run(s)).collect()
    }

    /// Ends profiling and returns the profile file ONNX Runtime wrote.
    pub fn end_profiling(&self) -> Result<PathBuf> {
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow!("an ONNX Runtime session was poisoned by a failed run"))?;
        let file = session
            .end_profiling()
            .map_err(|e| anyhow!("ONNX Runtime could not end profiling: {e}"))?;
        Ok(PathBuf::from(file))
    }
}

macro_rules! to_ort_typed {
    ($t:ty, $tensor:expr, $shape:expr) => {{
        let data: Vec<$t> = $tensor.to_vec::<$t>()?;
        ort::value::Tensor::from_array(($shape, data.into_boxed_slice()))
            .map(|t| t.into_dyn())
            .map_err(|e| anyhow!("creating an ONNX Runtime tensor: {e}"))
    }};
}

fn to_ort(t: &Tensor) -> Result<DynValue> {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    match t.elem_type() {
        ElemType::F32 => to_ort_typed!(f32, t, shape),
        ElemType::F64 => to_ort_typed!(f64, t, shape),
        ElemType::F16 => to_ort_typed!(tract_onnx::prelude::f16, t, shape),
        ElemType::I8 => to_ort_typed!(i8, t, shape),
        ElemType::U8 => to_ort_typed!(u8, t, shape),
        ElemType::I16 => to_ort_typed!(i16, t, shape),
        ElemType::U16 => to_ort_typed!(u16, t, shape),
        ElemType::I32 => to_ort_typed!(i32, t, shape),
        ElemType::U32 => to_ort_typed!(u32, t, shape),
        ElemType::I64 => to_ort_typed!(i64, t, shape),
        ElemType::U64 => to_ort_typed!(u64, t, shape),
        ElemType::Bool => to_ort_typed!(bool, t, shape),
    }
}

macro_rules! from_ort_typed {
    ($t:ty, $value:expr, $make:path) => {{
        let (shape, data) = $value
            .try_extract_tensor::<$t>()
            .map_err(|e| anyhow!("reading an ONNX Runtime tensor: {e}"))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        $make(&shape, data)
    }};
}

fn from_ort(v: DynValue) -> Result<Tensor> {
    let Some(ty) = v.dtype().tensor_type() else {
        return maps::as_tensor(&v);
    };
    match ty {
        TensorElementType::Float32 => from_ort_typed!(f32, v, Tensor::from_f32),
        TensorElementType::Float64 => from_ort_typed!(f64, v, Tensor::from_f64),
        TensorElementType::Float16 => {
            from_ort_typed!(tract_onnx::prelude::f16, v, Tensor::from_f16)
        }
        TensorElementType::Int8 => from_ort_typed!(i8, v, Tensor::from_i8),
        TensorElementType::Uint8 => from_ort_typed!(u8, v, Tensor::from_u8),
        TensorElementType::Int16 => from_ort_typed!(i16, v, Tensor::from_i16),
        TensorElementType::Uint16 => from_ort_typed!(u16, v, Tensor::from_u16),
        TensorElementType::Int32 => from_ort_typed!(i32, v, Tensor::from_i32),
        TensorElementType::Uint32 => from_ort_typed!(u32, v, Tensor::from_u32),
        TensorElementType::Int64 => from_ort_typed!(i64, v, Tensor::from_i64),
        TensorElementType::Uint64 => from_ort_typed!(u64, v, Tensor::from_u64),
        TensorElementType::Bool => from_ort_typed!(bool, v, Tensor::from_bool),
        TensorElementType::String => maps::strings_as_tensor(&v),
        other => bail!("element type {other:?} is not supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::Model;
    use super::super::testutil::{mlp, mlp_row};
    use super::*;

    /// Needs the library (scripts/test points ORT_DYLIB_PATH at the
    /// onnxruntime wheel's; `cargo test` in the repository finds ./.venv's).
    fn session(extra: &[String]) -> Session {
        Session::load(
            &mlp(),
            None,
            &InputShapes::new(),
            extra,
            &Options::default(),
        )
        .expect("ONNX Runtime loads the MLP (is the library installed? see scripts/test)")
    }

    #[test]
    fn runs_like_tract_and_exposes_intermediate_values() {
        let tract = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let s = session(&[]);
        assert_eq!(s.inputs(), tract.inputs());
        let sample = Sample::random(s.inputs(), 3).unwrap();
        let ours = s.run(&sample).unwrap();
        let theirs = tract.run(&sample).unwrap();
        let metrics = crate::runtime::compare(&theirs, &ours).unwrap();
        assert!(metrics.iter().all(|m| m.max_rel_err < 1e-5), "{metrics:?}");
        let x = sample.iter().next().unwrap().1.to_f32_vec().unwrap();
        let y = ours.iter().next().unwrap().1.to_f32_vec().unwrap();
        let want = mlp_row(&x);
        assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));

        let names = tract.output_names().to_vec();
        let hidden = "pre".to_string();
        let s = session(std::slice::from_ref(&hidden));
        assert_eq!(s.model_output_names(), &names[..]);
        let out = s.run(&sample).unwrap();
        assert_eq!(out.len(), names.len() + 1);
        assert!(out.get("pre").is_some());
    }

    #[test]
    fn a_wrong_sample_or_model_is_an_error() {
        let s = session(&[]);
        let e = format!("{:#}", s.run(&Sample::new("empty")).unwrap_err());
        assert!(e.contains("missing"), "{e}");
        let e = Session::load(b"junk", None, &InputShapes::new(), &[], &Options::default());
        assert!(format!("{:#}", e.err().unwrap()).contains("not a valid ONNX model"));
    }
}
