//! Loading an ONNX model into tract, pinning its input shapes, running it.
//!
//! The parts: this file holds [`Model`] (load, run) and [`Outputs`];
//! `pieces/` long models, loaded and run in pieces;
//! `shapes.rs` the inputs (the user's [`InputShapes`], the declared
//! [`Dim`]s and the pinned [`InputSpec`]s); `precheck.rs` what is refused
//! before tract sees the model (local functions, unsupported operators,
//! external data without a directory, unknown extra outputs); `tests.rs`.

mod pieces;
mod precheck;
mod shapes;
#[cfg(test)]
mod tests;

use super::inputs::Sample;
use super::tensor::Tensor;
use super::{catch_tract_panic, refusal, Refusal};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::{
    InferenceFact, InferenceModelExt, IntoRunnable, IntoTensor, TValue, TVec, TractResult,
    TypedModel, TypedRunnableModel, TypedSimpleState,
};

use pieces::{Pieces, PIECE_NODES};
use precheck::{check_extra_outputs, precheck, visit_graph};
pub use shapes::{declared_inputs, spelled, Dim, InputShapes, InputSpec};
pub(in crate::runtime) use shapes::{
    decode_edges, decode_model, graph_of, graph_of_mut, input_specs, ModelEdges,
};

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

    /// The output that holds class scores, for accuracy and agreement: the
    /// first float output with at least two values in its last dim, else the
    /// first output. Most classifiers return their scores first; those
    /// skl2onnx converts return the labels first (int64 or string) and the
    /// probabilities second.
    pub fn scores(&self) -> Option<(&str, &Tensor)> {
        let scores =
            |t: &Tensor| t.elem_type().is_float() && t.shape().last().is_some_and(|&c| c >= 2);
        self.iter()
            .find(|(_, t)| scores(t))
            .or_else(|| self.iter().next())
    }
}

/// A model loaded, typed and optimised by tract, ready to run.
///
/// `Model` is `Send + Sync`; [`Model::run`] can be called from several
/// threads at once.
#[derive(Debug, Clone)]
pub struct Model {
    plan: Plan,
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

    /// [`Model::load_with_dir`] of bytes the caller no longer needs: they
    /// are freed once decoded, so that a large model's load holds fewer
    /// copies of it.
    pub fn load_owned(
        bytes: Vec<u8>,
        model_dir: Option<&Path>,
        shapes: &InputShapes,
        extra_outputs: &[String],
    ) -> Result<Model> {
        Model::load_cut(Cow::Owned(bytes), model_dir, shapes, extra_outputs, None)
    }

    /// Like [`Model::load`], with the directory that external data paths are
    /// relative to (the model file's directory).
    pub fn load_with_dir(
        bytes: &[u8],
        model_dir: Option<&Path>,
        shapes: &InputShapes,
        extra_outputs: &[String],
    ) -> Result<Model> {
        Model::load_cut(Cow::Borrowed(bytes), model_dir, shapes, extra_outputs, None)
    }

    /// [`Model::load`] in pieces of `piece_nodes` nodes, whatever the
    /// model's length (`load` cuts only long models, see `pieces/`): to
    /// check on any model that its pieces compute what it does. An error
    /// when the model cannot be cut.
    pub fn load_in_pieces(
        bytes: &[u8],
        shapes: &InputShapes,
        extra_outputs: &[String],
        piece_nodes: usize,
    ) -> Result<Model> {
        Model::load_cut(
            Cow::Borrowed(bytes),
            None,
            shapes,
            extra_outputs,
            Some(piece_nodes),
        )
    }

    /// Loads whole, or in pieces when the model is long, or in pieces of
    /// `pieces` nodes when given.
    fn load_cut(
        bytes: Cow<[u8]>,
        model_dir: Option<&Path>,
        shapes: &InputShapes,
        extra_outputs: &[String],
        pieces: Option<usize>,
    ) -> Result<Model> {
        let framework = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        let proto = decode_model(&bytes)?;
        let graph = graph_of(&proto);

        precheck(&proto, graph, &framework, model_dir)?;
        check_extra_outputs(graph, extra_outputs)?;
        let initializers = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let (inputs, pin_notes) = input_specs(&graph.input, &initializers, shapes)?;

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

        let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
        let facts: Vec<InferenceFact> = inputs
            .iter()
            .map(|i| InferenceFact::dt_shape(i.elem_type.to_datum(), i.shape.clone()))
            .collect();
        // tract's optimiser is quadratic in the node count (each patch it
        // applies scans every node name: 10 s for a 1,000-node chain, minutes
        // for 10,000), its typing pass is too, more gently: long models are
        // cut into pieces, each optimised (see `pieces/`); one that cannot
        // be cut runs whole, typed only (the same results, slower per run).
        let long = node_count(graph) > OPTIMIZE_UP_TO_NODES;
        let own: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        // The bytes are decoded: an owned copy goes now, and the decoded
        // model once tract has parsed it, before tract's optimiser packs the
        // weights again (three copies of a model's weights at once, not five).
        drop(bytes);
        let own_outputs = &own;
        let plan = catch_tract_panic("loading the model", move || {
            if long || pieces.is_some() {
                let size = pieces.unwrap_or(PIECE_NODES);
                let cut = Pieces::load(&proto, dir, &names, &facts, extra_outputs, size)?;
                match cut {
                    Some(cut) => return Ok(Plan::Pieces(Arc::new(cut))),
                    None if pieces.is_some() => bail!("the model cannot be cut into pieces"),
                    None => {}
                }
            }
            let parsed = framework.parse(&proto, dir)?;
            drop(proto);
            let compiled = compile(parsed, &names, &facts, own_outputs, extra_outputs, !long)?;
            Ok(Plan::Whole(compiled))
        });
        let plan = match plan {
            Ok(p) => p,
            // A caught panic is already a refusal.
            Err(e) if refusal(&e).is_some() => return Err(e),
            Err(e) => return Err(cannot(e)),
        };
        let mut output_names = own;
        let model_outputs = output_names.len();
        for name in extra_outputs {
            if !output_names.contains(name) {
                output_names.push(name.clone());
            }
        }
        if plan.outputs() != output_names.len() {
            return Err(Refusal::TractCannotRun.because(anyhow!(
                "tract returns {} outputs, expected {}",
                plan.outputs(),
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
    pub(crate) fn spawn(&self) -> Result<State> {
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

/// A model tract can run: whole, or in pieces (a long one, see `pieces/`).
#[derive(Debug, Clone)]
enum Plan {
    Whole(Arc<TypedRunnableModel>),
    Pieces(Arc<Pieces>),
}

impl Plan {
    fn outputs(&self) -> usize {
        match self {
            Plan::Whole(plan) => plan.model().outputs.len(),
            Plan::Pieces(pieces) => pieces.outputs(),
        }
    }

    fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        match self {
            Plan::Whole(plan) => plan.run(inputs),
            Plan::Pieces(pieces) => pieces.run(inputs),
        }
    }

    fn spawn(&self) -> TractResult<State> {
        Ok(match self {
            Plan::Whole(plan) => State::Whole(plan.spawn()?),
            Plan::Pieces(pieces) => State::Pieces(pieces.clone(), pieces.spawn()?),
        })
    }
}

/// A reusable execution state of a [`Model`] (for timing loops).
pub(crate) enum State {
    Whole(TypedSimpleState),
    Pieces(Arc<Pieces>, Vec<TypedSimpleState>),
}

impl State {
    pub(crate) fn run(&mut self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        match self {
            State::Whole(state) => state.run(inputs),
            State::Pieces(pieces, states) => pieces.run_in(states, inputs),
        }
    }
}

/// tract's runnable form of a parsed model: its inputs, which must be
/// `names` in order, pinned to `facts`; `extra_outputs` returned after its
/// own outputs (`own_outputs`; a name that already is one is not repeated);
/// optimised by tract when `optimize`, else only typed.
fn compile(
    parsed: tract_onnx::model::ParseResult,
    names: &[String],
    facts: &[InferenceFact],
    own_outputs: &[String],
    extra_outputs: &[String],
    optimize: bool,
) -> TractResult<Arc<TypedRunnableModel>> {
    let typed = typed(parsed, names, facts, own_outputs, extra_outputs)?;
    if optimize {
        typed.into_optimized()?.into_runnable()
    } else {
        typed.into_runnable()
    }
}

/// [`compile`]'s first step: the parsed model typed by tract, not yet
/// optimised.
fn typed(
    parsed: tract_onnx::model::ParseResult,
    names: &[String],
    facts: &[InferenceFact],
    own_outputs: &[String],
    extra_outputs: &[String],
) -> TractResult<TypedModel> {
    if !parsed.unresolved_inputs.is_empty() {
        bail!(
            "tensors used but never produced: {}",
            parsed.unresolved_inputs.join(", ")
        );
    }
    let mut model = parsed.model;
    let sources = model.input_outlets()?.to_vec();
    if sources.len() != names.len() {
        bail!(
            "tract sees {} inputs, the file declares {}",
            sources.len(),
            names.len()
        );
    }
    for (ix, ((outlet, name), fact)) in sources.iter().zip(names).zip(facts).enumerate() {
        let node_name = &model.node(outlet.node).name;
        if node_name != name {
            bail!("input #{ix} is {node_name:?} in tract, {name:?} in the file");
        }
        model.set_input_fact(ix, fact.clone())?;
    }
    if !extra_outputs.is_empty() {
        let mut outlets = model.output_outlets()?.to_vec();
        let mut seen: HashSet<&str> = own_outputs.iter().map(|o| o.as_str()).collect();
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
    model.into_typed()
}

/// Models with more nodes than this (subgraphs included) are loaded in
/// pieces, or whole without tract's optimiser (see `Model::load_with_dir`).
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
