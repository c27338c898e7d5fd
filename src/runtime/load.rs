//! Loading an ONNX model into tract, pinning its input shapes, running it.

use super::inputs::Sample;
use super::tensor::{ElemType, Tensor};
use super::{catch_tract_panic, refusal, Refusal};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTensor, TValue, TVec,
    TypedRunnableModel, TypedSimpleState,
};

/// Concrete input shapes given by the user, by input name.
///
/// Parsed from command-line strings of the form `NAME=1,3,224,224`
/// (see [`InputShapes::parse_one`]). The last `=` separates the name from
/// the dims, so names containing `=` still work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShapes(BTreeMap<String, Vec<usize>>);

impl InputShapes {
    /// No shape given.
    pub fn new() -> InputShapes {
        InputShapes::default()
    }

    /// Parses one `NAME=d1,d2,...` string. Dims are non-negative integers;
    /// spaces around them are allowed. A scalar input needs no pinning, so an
    /// empty dim list is rejected as a likely mistake.
    pub fn parse_one(s: &str) -> Result<(String, Vec<usize>)> {
        let usage = "expected NAME=DIM,DIM,... (for example input=1,3,224,224)";
        let (name, dims) = s
            .rsplit_once('=')
            .ok_or_else(|| anyhow!("bad input shape {s:?}: no '='; {usage}"))?;
        let name = name.trim();
        if name.is_empty() {
            bail!("bad input shape {s:?}: empty input name; {usage}");
        }
        if dims.trim().is_empty() {
            bail!("bad input shape {s:?}: no dims after '='; {usage}");
        }
        let dims = dims
            .split(',')
            .map(|d| {
                let d = d.trim();
                d.parse::<usize>().map_err(|_| {
                    anyhow!("bad input shape {s:?}: {d:?} is not a non-negative integer; {usage}")
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok((name.to_string(), dims))
    }

    /// Parses several `NAME=d1,d2,...` strings; giving a name twice is an error.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<InputShapes> {
        let mut shapes = InputShapes::new();
        for s in specs {
            let (name, dims) = InputShapes::parse_one(s.as_ref())?;
            if shapes.0.contains_key(&name) {
                bail!("input shape for {name:?} given twice");
            }
            shapes.0.insert(name, dims);
        }
        Ok(shapes)
    }

    /// Sets (or replaces) the shape of one input.
    pub fn insert(&mut self, name: impl Into<String>, dims: Vec<usize>) {
        self.0.insert(name.into(), dims);
    }

    /// The shape given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).map(|v| v.as_slice())
    }

    /// Whether no shape is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, dims)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl std::str::FromStr for InputShapes {
    type Err = anyhow::Error;
    /// One `NAME=dims` pair; several separated by `;` are accepted too.
    fn from_str(s: &str) -> Result<InputShapes> {
        let parts: Vec<&str> = s.split(';').filter(|p| !p.trim().is_empty()).collect();
        InputShapes::parse(&parts)
    }
}

/// A dimension as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (`dim_param`, e.g. `batch`).
    Symbolic(String),
    /// Neither value nor name.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// One input of a loaded model: name, element type and the concrete shape
/// it was pinned to (plus the shape the file declares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub elem_type: ElemType,
    /// The concrete shape the model was loaded with; samples must match it.
    pub shape: Vec<usize>,
    /// The shape declared in the ONNX file, possibly symbolic.
    pub declared: Vec<Dim>,
}

/// The inputs an ONNX model declares, without loading it into tract: name,
/// element type, declared dims, and the shape it would be pinned to with
/// `shapes` (symbolic dims at 1). Lets the data pin symbolic dims before
/// the model is loaded.
pub fn declared_inputs(bytes: &[u8], shapes: &InputShapes) -> Result<Vec<InputSpec>> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| anyhow!("not a valid ONNX model (protobuf decoding failed): {e:#}"))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("not a valid ONNX model: it has no graph"))?;
    Ok(input_specs(graph, shapes)?.0)
}

/// The outputs of one run, in the model's output order (then the extra
/// outputs requested at load time).
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    entries: Vec<(String, Tensor)>,
}

impl Outputs {
    /// Builds outputs from `(name, tensor)` pairs (mostly for tests).
    pub fn new(entries: Vec<(String, Tensor)>) -> Outputs {
        Outputs { entries }
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no output.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Output names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// `(name, tensor)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// A model loaded, typed and optimised by tract, ready to run.
///
/// `Model` is `Send + Sync`; [`Model::run`] can be called from several
/// threads at once.
#[derive(Debug, Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<InputSpec>,
    output_names: Vec<String>,
    model_outputs: usize,
    defaulted: Vec<String>,
}

impl Model {
    /// Loads an ONNX model from its bytes.
    ///
    /// * Output shapes and `value_info` in the file are ignored (tract fails
    ///   on symbolic ones once the inputs are pinned).
    /// * Every input gets a concrete shape: from `shapes` if given there,
    ///   else the declared dims, with symbolic or unknown dims set to 1.
    /// * `extra_outputs` names intermediate tensors to return as additional
    ///   outputs after the model's own (e.g. for activation statistics).
    ///   A name that already is a model output is not repeated.
    ///
    /// Models with external data need [`Model::load_with_dir`].
    pub fn load(bytes: &[u8], shapes: &InputShapes, extra_outputs: &[String]) -> Result<Model> {
        Model::load_with_dir(bytes, None, shapes, extra_outputs)
    }

    /// Like [`Model::load`], with the directory that external data paths are
    /// relative to (the model file's directory).
    pub fn load_with_dir(
        bytes: &[u8],
        model_dir: Option<&Path>,
        shapes: &InputShapes,
        extra_outputs: &[String],
    ) -> Result<Model> {
        let framework = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        let proto = framework
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| anyhow!("not a valid ONNX model (protobuf decoding failed): {e:#}"))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("not a valid ONNX model: it has no graph"))?;

        precheck(&proto, graph, &framework, model_dir)?;
        check_extra_outputs(graph, extra_outputs)?;
        let (inputs, pin_notes) = input_specs(graph, shapes)?;

        let dir = match model_dir {
            Some(d) => Some(
                d.to_str()
                    .ok_or_else(|| anyhow!("model directory {d:?} is not valid UTF-8"))?,
            ),
            None => None,
        };
        let cannot = |e: anyhow::Error| -> anyhow::Error {
            Refusal::TractCannotRun.because(anyhow!("{e:#}{}", defaulted_note(&pin_notes)))
        };

        let plan = catch_tract_panic("loading the model", || {
            let parsed = framework.parse(&proto, dir)?;
            if !parsed.unresolved_inputs.is_empty() {
                bail!(
                    "tensors used but never produced: {}",
                    parsed.unresolved_inputs.join(", ")
                );
            }
            let mut model = parsed.model;
            let sources = model.input_outlets()?.to_vec();
            if sources.len() != inputs.len() {
                bail!(
                    "tract sees {} inputs, the file declares {}",
                    sources.len(),
                    inputs.len()
                );
            }
            for (ix, (outlet, spec)) in sources.iter().zip(&inputs).enumerate() {
                let node_name = &model.node(outlet.node).name;
                if node_name != &spec.name {
                    bail!(
                        "input #{ix} is {node_name:?} in tract, {:?} in the file",
                        spec.name
                    );
                }
                let fact = InferenceFact::dt_shape(spec.elem_type.to_datum(), spec.shape.clone());
                model.set_input_fact(ix, fact)?;
            }
            if !extra_outputs.is_empty() {
                let mut outlets = model.output_outlets()?.to_vec();
                let mut seen: HashSet<&str> =
                    graph.output.iter().map(|o| o.name.as_str()).collect();
                for name in extra_outputs {
                    if !seen.insert(name.as_str()) {
                        continue;
                    }
                    let outlet = parsed
                        .outlets_by_name
                        .get(name)
                        .ok_or_else(|| anyhow!("tract has no tensor {name:?}"))?;
                    outlets.push(*outlet);
                }
                model.select_output_outlets(&outlets)?;
            }
            // tract's optimiser is quadratic in the node count (each patch
            // it applies scans every node name: 10 s for a 1,000-node chain,
            // minutes for 10,000), its typing pass is not: long models run
            // as typed, without tract's rewrites (the same results, slower
            // per run).
            let typed = if node_count(graph) <= OPTIMIZE_UP_TO_NODES {
                model.into_optimized()?
            } else {
                model.into_typed()?
            };
            typed.into_runnable()
        });
        let plan = match plan {
            Ok(p) => p,
            // A caught panic is already a refusal.
            Err(e) if refusal(&e).is_some() => return Err(e),
            Err(e) => return Err(cannot(e)),
        };

        let mut output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let model_outputs = output_names.len();
        for name in extra_outputs {
            if !output_names.contains(name) {
                output_names.push(name.clone());
            }
        }
        if plan.model().output_outlets()?.len() != output_names.len() {
            return Err(Refusal::TractCannotRun.because(anyhow!(
                "tract returns {} outputs, expected {}",
                plan.model().output_outlets()?.len(),
                output_names.len()
            )));
        }
        Ok(Model {
            plan,
            inputs,
            output_names,
            model_outputs,
            defaulted: pin_notes,
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

    /// Input dims that were symbolic or unknown and not given in the
    /// [`InputShapes`], so were set to 1, as `name[axis] (symbol)` strings.
    /// Worth a warning: a model may load and run with them and still compute
    /// nonsense (an image model fed 1x1 images).
    pub fn defaulted_dims(&self) -> &[String] {
        &self.defaulted
    }

    /// Names of the model's own outputs (without the extra ones).
    pub fn model_output_names(&self) -> &[String] {
        &self.output_names[..self.model_outputs]
    }

    /// Checks a sample against the input specs and turns it into tract values.
    pub(crate) fn prepare(&self, sample: &Sample) -> Result<TVec<TValue>> {
        sample.check(&self.inputs)?;
        self.inputs
            .iter()
            .map(|spec| {
                sample
                    .get(&spec.name)
                    .map(|t| t.tvalue())
                    .ok_or_else(|| anyhow!("sample has no input {:?}", spec.name))
            })
            .collect()
    }

    /// Runs prepared inputs (no checks) and returns tract's raw outputs.
    pub(crate) fn run_prepared(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        catch_tract_panic("running the model", || {
            self.plan.run(inputs).map_err(|e| {
                Refusal::TractCannotRun.because(anyhow!(
                    "running failed: {e:#}{}",
                    defaulted_note(&self.defaulted)
                ))
            })
        })
    }

    /// A reusable execution state (for timing loops).
    pub(crate) fn spawn(&self) -> Result<TypedSimpleState> {
        self.plan
            .spawn()
            .map_err(|e| Refusal::TractCannotRun.because(e))
    }

    /// Runs the model on one sample. The sample must hold exactly the
    /// model's inputs with their pinned shapes and element types.
    pub fn run(&self, sample: &Sample) -> Result<Outputs> {
        let inputs = self
            .prepare(sample)
            .with_context(|| format!("sample {}", sample.source()))?;
        let raw = self.run_prepared(inputs)?;
        let entries = raw
            .into_iter()
            .zip(&self.output_names)
            .map(|(v, name)| {
                let t = Tensor::from_tract(v.into_tensor())
                    .with_context(|| format!("output {name:?}"))?;
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Outputs { entries })
    }

    /// Runs the model on several samples in parallel (rayon), keeping order.
    pub fn run_many(&self, samples: &[Sample]) -> Result<Vec<Outputs>> {
        samples.par_iter().map(|s| self.run(s)).collect()
    }
}

/// Models with more nodes than this (subgraphs included) are not optimised
/// by tract when loaded (see `Model::load_with_dir`).
const OPTIMIZE_UP_TO_NODES: usize = 2_000;

fn node_count(graph: &pb::GraphProto) -> usize {
    let mut n = 0;
    visit_graph(graph, &mut |_| n += 1);
    n
}

/// A note for error messages when symbolic dims were set to 1 ("" if none).
fn defaulted_note(defaulted: &[String]) -> String {
    if defaulted.is_empty() {
        String::new()
    } else {
        format!(
            "\n(note: symbolic input dims were set to 1: {}; \
             pin them with --input-shape NAME=DIM,...)",
            defaulted.join(", ")
        )
    }
}

/// Refuses up front what tract would refuse with a less helpful message.
fn precheck(
    proto: &pb::ModelProto,
    graph: &pb::GraphProto,
    framework: &tract_onnx::Onnx,
    model_dir: Option<&Path>,
) -> Result<()> {
    let functions: HashSet<(&str, &str)> = proto
        .functions
        .iter()
        .map(|f| {
            (
                f.domain.as_deref().unwrap_or(""),
                f.name.as_deref().unwrap_or(""),
            )
        })
        .collect();
    let mut unsupported = BTreeSet::new();
    let mut local = BTreeSet::new();
    let mut external = Vec::new();
    visit_graph(graph, &mut |node| {
        if functions.contains(&(node.domain.as_str(), node.op_type.as_str())) {
            local.insert(node.op_type.clone());
        } else if !framework.op_register.0.contains_key(&node.op_type) {
            let domain = if node.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", node.domain)
            };
            unsupported.insert(format!("{}{domain}", node.op_type));
        }
    });
    visit_initializers(graph, &mut |t| {
        if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
            external.push(t.name.clone());
        }
    });
    if !local.is_empty() {
        return Err(Refusal::TractCannotRun.because(anyhow!(
            "it calls local functions ({}), which tract does not inline; inline them first",
            local.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if !unsupported.is_empty() {
        return Err(Refusal::TractCannotRun.because(anyhow!(
            "unsupported operator(s): {}",
            unsupported.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if !external.is_empty() && model_dir.is_none() {
        bail!(
            "the model keeps {} tensor(s) in external data files (e.g. {:?}); \
             load it from its file so their directory is known",
            external.len(),
            external[0]
        );
    }
    Ok(())
}

/// Checks that every extra output names a tensor of the main graph.
fn check_extra_outputs(graph: &pb::GraphProto, extra_outputs: &[String]) -> Result<()> {
    let mut known: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    known.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(|o| o.as_str())),
    );
    let unknown: Vec<&str> = extra_outputs
        .iter()
        .map(|s| s.as_str())
        .filter(|s| s.is_empty() || !known.contains(s))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown tensor name(s) requested as extra outputs: {} \
             (not an input, initializer or node output of the main graph)",
            unknown
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Calls `f` on every node of `graph` and of its subgraphs.
fn visit_graph(graph: &pb::GraphProto, f: &mut dyn FnMut(&pb::NodeProto)) {
    for node in &graph.node {
        f(node);
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                visit_graph(g, f);
            }
            for g in &attr.graphs {
                visit_graph(g, f);
            }
        }
    }
}

/// Calls `f` on every initializer (and Constant value) of `graph` and its subgraphs.
fn visit_initializers(graph: &pb::GraphProto, f: &mut dyn FnMut(&pb::TensorProto)) {
    graph.initializer.iter().for_each(&mut *f);
    for node in &graph.node {
        for attr in &node.attribute {
            if let Some(t) = &attr.t {
                f(t);
            }
            if let Some(g) = &attr.g {
                visit_initializers(g, f);
            }
            for g in &attr.graphs {
                visit_initializers(g, f);
            }
        }
    }
}

/// The graph inputs that are not initializers, with their pinned shapes,
/// and notes on which symbolic dims were set to 1.
pub(super) fn input_specs(
    graph: &pb::GraphProto,
    shapes: &InputShapes,
) -> Result<(Vec<InputSpec>, Vec<String>)> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut specs = Vec::new();
    let mut notes = Vec::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
    {
        let name = &input.name;
        let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t,
            None => {
                return Err(Refusal::TractCannotRun.because(anyhow!(
                    "input {name:?} has no tensor type \
                     (sequence, map and optional inputs are not supported)"
                )))
            }
        };
        let elem_type = ElemType::from_onnx(tensor_type.elem_type)
            .map_err(|e| Refusal::TractCannotRun.because(e.context(format!("input {name:?}"))))?;
        let declared: Option<Vec<Dim>> = tensor_type.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                        usize::try_from(*v).map(Dim::Fixed).unwrap_or(Dim::Unknown)
                    }
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                        if !p.is_empty() && p != "?" =>
                    {
                        Dim::Symbolic(p.clone())
                    }
                    _ => Dim::Unknown,
                })
                .collect()
        });
        let shape = match (shapes.get(name), &declared) {
            (Some(given), Some(declared)) => {
                if given.len() != declared.len() {
                    bail!(
                        "input shape for {name:?} has {} dims, the model declares {} ({})",
                        given.len(),
                        declared.len(),
                        fmt_dims(declared)
                    );
                }
                for (ix, (g, d)) in given.iter().zip(declared).enumerate() {
                    if let Dim::Fixed(d) = d {
                        if g != d {
                            bail!(
                                "input shape for {name:?} sets dim {ix} to {g}, \
                                 the model fixes it to {d} ({})",
                                fmt_dims(declared)
                            );
                        }
                    }
                }
                given.to_vec()
            }
            (Some(given), None) => given.to_vec(),
            (None, Some(declared)) => declared
                .iter()
                .enumerate()
                .map(|(ix, d)| match d {
                    Dim::Fixed(n) => *n,
                    other => {
                        notes.push(format!("{name}[{ix}] ({other})"));
                        1
                    }
                })
                .collect(),
            (None, None) => bail!(
                "input {name:?} has no declared shape; give it with --input-shape {name}=DIM,..."
            ),
        };
        specs.push(InputSpec {
            name: name.clone(),
            elem_type,
            shape,
            declared: declared.unwrap_or_default(),
        });
    }
    let known: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for (name, _) in shapes.iter() {
        if !known.contains(name) {
            bail!(
                "input shape given for {name:?}, which is not an input of the model (inputs: {})",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok((specs, notes))
}

fn fmt_dims(dims: &[Dim]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn shapes(specs: &[&str]) -> InputShapes {
        InputShapes::parse(specs).unwrap()
    }

    fn err_of<T: fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn parse_input_shapes() {
        let s = shapes(&["x=1,3,224,224", "input:0 = 2, 5"]);
        assert_eq!(s.get("x"), Some(&[1, 3, 224, 224][..]));
        assert_eq!(s.get("input:0"), Some(&[2, 5][..]));
        assert_eq!(
            InputShapes::parse_one("a=b=4").unwrap(),
            ("a=b".to_string(), vec![4])
        );
        for bad in ["x", "x=", "=1,2", "x=1,,2", "x=1,-2", "x=1x2", "x=a"] {
            let e = err_of(InputShapes::parse_one(bad));
            assert!(
                e.contains("bad input shape") && e.contains("NAME=DIM"),
                "{bad}: {e}"
            );
        }
        assert!(err_of(InputShapes::parse(&["x=1", "x=2"])).contains("twice"));
        let s: InputShapes = "x=1,2;y=3".parse().unwrap();
        assert_eq!(s.iter().count(), 2);
    }

    #[test]
    fn load_and_run_mlp() {
        let m = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        assert_eq!(
            m.inputs(),
            &[InputSpec {
                name: "x".into(),
                elem_type: ElemType::F32,
                shape: vec![1, 4],
                declared: vec![Dim::Symbolic("batch".into()), Dim::Fixed(4)],
            }]
        );
        assert_eq!(m.output_names(), &["y".to_string()]);
        assert_eq!(m.defaulted_dims(), &["x[0] (batch)".to_string()]);
        let s = Sample::random(m.inputs(), 7).unwrap();
        let out = m.run(&s).unwrap();
        let x = s.get("x").unwrap().to_f32_vec().unwrap();
        let y = out.get("y").unwrap();
        assert_eq!(y.shape(), &[1, 3]);
        let want = mlp_row(&x);
        for (g, w) in y.to_f32_vec().unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn pinned_batch_and_extra_outputs() {
        let extra = vec![
            "mm".to_string(),
            "y".to_string(),
            "mm".to_string(),
            "W".to_string(),
        ];
        let m = Model::load(&mlp(), &shapes(&["x=5,4"]), &extra).unwrap();
        assert_eq!(m.inputs()[0].shape, vec![5, 4]);
        assert!(m.defaulted_dims().is_empty());
        assert_eq!(m.output_names(), &["y", "mm", "W"]);
        assert_eq!(m.model_output_names(), &["y"]);
        let s = Sample::random(m.inputs(), 1).unwrap();
        let out = m.run(&s).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out.get("y").unwrap().shape(), &[5, 3]);
        assert_eq!(out.get("mm").unwrap().shape(), &[5, 3]);
        assert_eq!(out.get("W").unwrap().shape(), &[4, 3]);
        let x = s.get("x").unwrap().to_f32_vec().unwrap();
        let y = out.get("y").unwrap().to_f32_vec().unwrap();
        for r in 0..5 {
            let want = mlp_row(&x[r * 4..r * 4 + 4]);
            for j in 0..3 {
                assert!((y[r * 3 + j] - want[j]).abs() < 1e-5);
            }
        }
        // several samples in parallel give the same as one by one
        let samples: Vec<Sample> = (0..4)
            .map(|i| Sample::random(m.inputs(), i).unwrap())
            .collect();
        let many = m.run_many(&samples).unwrap();
        for (s, o) in samples.iter().zip(&many) {
            assert_eq!(&m.run(s).unwrap(), o);
        }
    }

    #[test]
    fn bad_loads_give_clear_errors() {
        let e = err_of(Model::load(b"not a model at all", &InputShapes::new(), &[]));
        assert!(e.contains("not a valid ONNX model"), "{e}");
        let e = err_of(Model::load(
            &mlp(),
            &InputShapes::new(),
            &["nope".to_string()],
        ));
        assert!(
            e.contains("unknown tensor name") && e.contains("\"nope\""),
            "{e}"
        );
        let e = err_of(Model::load(&mlp(), &shapes(&["z=1,4"]), &[]));
        assert!(e.contains("\"z\"") && e.contains("inputs: x"), "{e}");
        let e = err_of(Model::load(&mlp(), &shapes(&["x=1,4,1"]), &[]));
        assert!(e.contains("has 3 dims") && e.contains("[batch, 4]"), "{e}");
        let e = err_of(Model::load(&mlp(), &shapes(&["x=1,5"]), &[]));
        assert!(e.contains("fixes it to 4"), "{e}");
    }

    #[test]
    fn unsupported_operator() {
        let g = graph(
            vec![node("FrobnicateX", &["x"], &["y"])],
            vec![value_info("x", FLOAT, Some(&["2"]))],
            vec![value_info("y", FLOAT, None)],
            vec![],
        );
        let e = err_of(Model::load(
            &encode(&model_proto(g)),
            &InputShapes::new(),
            &[],
        ));
        assert!(
            e.starts_with("tract cannot run this model") && e.contains("FrobnicateX"),
            "{e}"
        );
    }

    #[test]
    fn local_function_is_refused() {
        let g = graph(
            vec![pb::NodeProto {
                domain: "local".into(),
                ..node("MyFn", &["x"], &["y"])
            }],
            vec![value_info("x", FLOAT, Some(&["2"]))],
            vec![value_info("y", FLOAT, None)],
            vec![],
        );
        let mut p = model_proto(g);
        p.functions.push(pb::FunctionProto {
            name: Some("MyFn".into()),
            domain: Some("local".into()),
            input: vec!["a".into()],
            output: vec!["b".into()],
            node: vec![node("Relu", &["a"], &["b"])],
            ..Default::default()
        });
        let e = err_of(Model::load(&encode(&p), &InputShapes::new(), &[]));
        assert!(
            e.contains("local functions (MyFn)") && e.contains("inline"),
            "{e}"
        );
    }

    #[test]
    fn external_data_needs_a_directory() {
        let g = graph(
            vec![node("Add", &["x", "W"], &["y"])],
            vec![value_info("x", FLOAT, Some(&["2"]))],
            vec![value_info("y", FLOAT, None)],
            vec![pb::TensorProto {
                name: "W".into(),
                dims: vec![2],
                data_type: FLOAT,
                data_location: Some(pb::tensor_proto::DataLocation::External as i32),
                external_data: vec![pb::StringStringEntryProto {
                    key: "location".into(),
                    value: "w.bin".into(),
                }],
                ..Default::default()
            }],
        );
        let bytes = encode(&model_proto(g));
        let e = err_of(Model::load(&bytes, &InputShapes::new(), &[]));
        assert!(e.contains("external data"), "{e}");
        // with a directory, the data is read from it
        let dir = std::env::temp_dir().join(format!("rt-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(dir.join("w.bin"), w).unwrap();
        let m = Model::load_with_dir(&bytes, Some(&dir), &InputShapes::new(), &[]).unwrap();
        let s = Sample::new("t").with("x", Tensor::from_f32(&[2], &[1.0, 1.0]).unwrap());
        let y = m.run(&s).unwrap().get("y").unwrap().to_f32_vec().unwrap();
        assert_eq!(y, vec![2.5, -1.0]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn symbolic_dim_set_to_one_is_reported_when_typing_fails() {
        // Reshape [batch, 4] -> [2, 4]: only batch = 2 works.
        let g = graph(
            vec![node("Reshape", &["x", "s"], &["y"])],
            vec![value_info("x", FLOAT, Some(&["batch", "4"]))],
            vec![value_info("y", FLOAT, Some(&["2", "4"]))],
            vec![i64_tensor("s", &[2], &[2, 4])],
        );
        let bytes = encode(&model_proto(g));
        let e = err_of(Model::load(&bytes, &InputShapes::new(), &[]));
        assert!(e.starts_with("tract cannot run this model"), "{e}");
        assert!(
            e.contains("x[0] (batch)") && e.contains("--input-shape"),
            "{e}"
        );
        let m = Model::load(&bytes, &shapes(&["x=2,4"]), &[]).unwrap();
        assert_eq!(m.inputs()[0].shape, vec![2, 4]);
    }

    #[test]
    fn if_with_branches_of_different_shapes() {
        let branch = |name: &str, data: &[f32]| pb::GraphProto {
            name: name.into(),
            node: vec![pb::NodeProto {
                attribute: vec![pb::AttributeProto {
                    name: "value".into(),
                    r#type: 4,
                    t: Some(f32_tensor("", &[data.len() as i64], data)),
                    ..Default::default()
                }],
                ..node("Constant", &[], &[&format!("{name}_out")])
            }],
            output: vec![value_info(&format!("{name}_out"), FLOAT, None)],
            ..Default::default()
        };
        let g = graph(
            vec![pb::NodeProto {
                attribute: vec![
                    pb::AttributeProto {
                        name: "then_branch".into(),
                        r#type: 5,
                        g: Some(branch("then", &[1.0, 2.0])),
                        ..Default::default()
                    },
                    pb::AttributeProto {
                        name: "else_branch".into(),
                        r#type: 5,
                        g: Some(branch("else", &[1.0, 2.0, 3.0])),
                        ..Default::default()
                    },
                ],
                ..node("If", &["c"], &["y"])
            }],
            vec![value_info("c", BOOL, Some(&[]))],
            vec![value_info("y", FLOAT, None)],
            vec![],
        );
        let r = Model::load(&encode(&model_proto(g)), &InputShapes::new(), &[]);
        match r {
            Err(e) => {
                assert_eq!(refusal(&e), Some(Refusal::TractCannotRun), "{e:#}");
                eprintln!("If with different branch shapes: {e:#}");
            }
            Ok(m) => {
                // if tract ever learns this, both branches must at least run
                for seed in 0..4 {
                    m.run(&Sample::random(m.inputs(), seed).unwrap()).unwrap();
                }
            }
        }
    }

    #[test]
    fn int_inputs_and_gather() {
        // embedding lookup: y = E[ids], ids: [1, 6] int64 in [0, 10)
        let e: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let g = graph(
            vec![node("Gather", &["E", "ids"], &["y"])],
            vec![value_info("ids", INT64, Some(&["1", "6"]))],
            vec![value_info("y", FLOAT, Some(&["1", "6", "2"]))],
            vec![f32_tensor("E", &[10, 2], &e)],
        );
        let m = Model::load(&encode(&model_proto(g)), &InputShapes::new(), &[]).unwrap();
        assert_eq!(m.inputs()[0].elem_type, ElemType::I64);
        let s = Sample::random(m.inputs(), 3).unwrap();
        let ids = s.get("ids").unwrap().to_f32_vec().unwrap();
        assert!(ids
            .iter()
            .all(|&i| (0.0..10.0).contains(&i) && i.fract() == 0.0));
        let y = m.run(&s).unwrap().get("y").unwrap().to_f32_vec().unwrap();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(y[2 * k], 2.0 * id);
            assert_eq!(y[2 * k + 1], 2.0 * id + 1.0);
        }
    }

    #[test]
    fn run_checks_the_sample() {
        let m = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let e = err_of(m.run(&Sample::new("empty")));
        assert!(e.contains("\"x\" is missing"), "{e}");
        let s = Sample::new("wrong-type").with("x", Tensor::from_i64(&[1, 4], &[1; 4]).unwrap());
        let e = err_of(m.run(&s));
        assert!(
            e.contains("expected float32, got int64") && e.contains("wrong-type"),
            "{e}"
        );
        let s = Sample::new("wrong-shape").with("x", Tensor::from_f32(&[2, 4], &[0.0; 8]).unwrap());
        let e = err_of(m.run(&s));
        assert!(e.contains("expected shape [1, 4], got [2, 4]"), "{e}");
        assert!(e.contains("--input-shape x=2,4"), "{e}");
        let s = Sample::random(m.inputs(), 0)
            .unwrap()
            .with("extra", Tensor::from_f32(&[1], &[0.0]).unwrap());
        let e = err_of(m.run(&s));
        assert!(e.contains("\"extra\" is not an input"), "{e}");
    }

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
        check::<Sample>();
        check::<Outputs>();
    }
}
