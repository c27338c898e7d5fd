//! Long models loaded in pieces. tract's loading is quadratic in the node
//! count (each constant it adds is compared with every node, each patch of
//! its optimiser scans every name): a 10,000-node chain took 9 s to load
//! whole, typed only, and ran 28 times slower so than optimised. Cut every
//! [`PIECE_NODES`] nodes of the file's order (ONNX's order is topological),
//! each piece is a model of its own, optimised, whose inputs are values
//! earlier pieces compute, pinned to the shapes tract typed them with there;
//! run one after the other they compute what the whole model does. Pieces
//! are typed in order and optimised in parallel.
//!
//! A model that cannot be cut this way (its nodes out of order, a returned
//! value that is an initializer, a value whose shape tract leaves symbolic)
//! is loaded whole.

use super::super::tensor::ElemType;
use super::{typed, InferenceFact};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::{
    IntoRunnable, TValue, TVec, TractResult, TypedModel, TypedRunnableModel, TypedSimpleState,
};
use tract_onnx::tract_hir::infer::Factoid;

mod cut;
use cut::Cut;

/// Nodes per piece. Short enough that tract's optimiser, quadratic in the
/// node count, runs on each (a long model then runs as fast as an optimised
/// one: 23 ms a run for a 10,000-node chain where typed only it took 644),
/// long enough that the pieces' fixed costs stay small. On that chain,
/// `fuse --verify` took 3.3 s with pieces of 50, 5.1 s of 100, 24 s of
/// 1,000 and 18 s loaded whole, typed only (release build, one run each).
pub(super) const PIECE_NODES: usize = 50;

/// A model cut into pieces that run in turn.
#[derive(Debug)]
pub(crate) struct Pieces {
    pieces: Vec<Piece>,
    /// The model's inputs, in order: the values a run starts with.
    inputs: Vec<String>,
    /// What a run returns: the model's outputs, then the extra ones.
    returned: Vec<String>,
}

#[derive(Debug)]
struct Piece {
    plan: Arc<TypedRunnableModel>,
    /// Values it reads (model inputs or earlier pieces' outputs), in its
    /// input order.
    reads: Vec<String>,
    /// Values it computes that a later piece reads or a run returns.
    writes: Vec<String>,
    /// Values read for the last time here and not returned: dropped after.
    frees: Vec<String>,
}

impl Pieces {
    /// `proto` (whose inputs are `names`, pinned to `facts`) in pieces of
    /// `piece_nodes` nodes returning its outputs then `extra_outputs`, or
    /// `None` when it cannot be cut (see the module's comment).
    pub(super) fn load(
        proto: &pb::ModelProto,
        dir: Option<&str>,
        names: &[String],
        facts: &[InferenceFact],
        extra_outputs: &[String],
        piece_nodes: usize,
    ) -> Result<Option<Pieces>> {
        let graph = proto.graph.as_ref().context("the model has no graph")?;
        let mut returned: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        for name in extra_outputs {
            if !returned.contains(name) {
                returned.push(name.clone());
            }
        }
        let Some(cut) = Cut::of(graph, names, &returned, piece_nodes.max(1)) else {
            return Ok(None);
        };
        let mut typer = Typer {
            proto,
            graph,
            dir,
            cut: &cut,
            initializers: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            declared: graph.input.iter().map(|i| (i.name.as_str(), i)).collect(),
            known: names.iter().cloned().zip(facts.iter().cloned()).collect(),
            framework: tract_onnx::onnx()
                .with_ignore_output_shapes(true)
                .with_ignore_value_info(true),
            next: 0,
        };
        // Typing a piece needs the facts of the piece before; optimising it
        // (most of the load: 85% on a 10,000-node chain) needs only the
        // piece. So a window of pieces is optimised in parallel while the
        // next window is typed, and at most two windows wait typed.
        let window = 4 * rayon::current_num_threads();
        let mut pieces = Vec::with_capacity(cut.nodes.len());
        let Some(mut batch) = typer.type_pieces(window)? else {
            return Ok(None);
        };
        while !batch.is_empty() {
            let this = std::mem::take(&mut batch);
            let (optimised, following) = rayon::join(
                || optimise(this, cut.nodes.len()),
                || typer.type_pieces(window),
            );
            pieces.extend(optimised?);
            let Some(following) = following? else {
                return Ok(None);
            };
            batch = following;
        }
        Ok(Some(Pieces {
            pieces,
            inputs: names.to_vec(),
            returned,
        }))
    }

    /// How many values a run returns.
    pub(super) fn outputs(&self) -> usize {
        self.returned.len()
    }

    /// Runs the pieces in turn on the model's inputs, in order.
    pub(super) fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.go(inputs, |piece, values| piece.plan.run(values))
    }

    /// One execution state per piece (for timing loops).
    pub(super) fn spawn(&self) -> TractResult<Vec<TypedSimpleState>> {
        self.pieces.iter().map(|p| p.plan.spawn()).collect()
    }

    /// [`Pieces::run`] with the states of [`Pieces::spawn`].
    pub(super) fn run_in(
        &self,
        states: &mut [TypedSimpleState],
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let mut states = states.iter_mut();
        self.go(inputs, |_, values| {
            states.next().expect("a state per piece").run(values)
        })
    }

    fn go(
        &self,
        inputs: TVec<TValue>,
        mut run: impl FnMut(&Piece, TVec<TValue>) -> TractResult<TVec<TValue>>,
    ) -> TractResult<TVec<TValue>> {
        let mut values: HashMap<&str, TValue> =
            self.inputs.iter().map(|n| n.as_str()).zip(inputs).collect();
        for piece in &self.pieces {
            let reads = piece
                .reads
                .iter()
                .map(|r| values[r.as_str()].clone())
                .collect();
            let written = run(piece, reads)?;
            for (name, value) in piece.writes.iter().zip(written) {
                values.insert(name, value);
            }
            for name in &piece.frees {
                values.remove(name.as_str());
            }
        }
        Ok(self
            .returned
            .iter()
            .map(|r| values[r.as_str()].clone())
            .collect())
    }
}

/// A piece typed by tract, not yet optimised: its index, its model, and
/// the piece it becomes without its plan.
struct Typed {
    k: usize,
    model: TypedModel,
    reads: Vec<String>,
    writes: Vec<String>,
    frees: Vec<String>,
}

/// Optimises typed pieces in parallel (`of` pieces in all, for errors).
fn optimise(batch: Vec<Typed>, of: usize) -> Result<Vec<Piece>> {
    batch
        .into_par_iter()
        .map(|t| {
            let plan = t
                .model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .with_context(|| format!("piece {} of {of}", t.k))?;
            Ok(Piece {
                plan,
                reads: t.reads,
                writes: t.writes,
                frees: t.frees,
            })
        })
        .collect()
}

/// Types the pieces of a cut in order, each with the facts the pieces
/// before it gave its inputs.
struct Typer<'a> {
    proto: &'a pb::ModelProto,
    graph: &'a pb::GraphProto,
    dir: Option<&'a str>,
    cut: &'a Cut<'a>,
    initializers: HashMap<&'a str, &'a pb::TensorProto>,
    declared: HashMap<&'a str, &'a pb::ValueInfoProto>,
    /// The facts of the values typed so far, by name.
    known: HashMap<String, InferenceFact>,
    framework: tract_onnx::Onnx,
    /// The next piece to type.
    next: usize,
}

impl Typer<'_> {
    /// The next pieces that compute something (up to `count`; none when
    /// all are typed), or `None` when a value's shape is symbolic: it
    /// cannot pin the next piece's input.
    fn type_pieces(&mut self, count: usize) -> Result<Option<Vec<Typed>>> {
        let cut = self.cut;
        let mut batch = Vec::with_capacity(count);
        while batch.len() < count && self.next < cut.nodes.len() {
            let k = self.next;
            self.next += 1;
            let (reads, writes) = (&cut.reads[k], &cut.writes[k]);
            if writes.is_empty() {
                continue; // nothing it computes is read or returned
            }
            let input = |name: &String| match self.declared.get(name.as_str()) {
                Some(&info) => info.clone(),
                None => typed_input(name, &self.known[name]),
            };
            let piece = pb::ModelProto {
                ir_version: self.proto.ir_version,
                opset_import: self.proto.opset_import.clone(),
                graph: Some(pb::GraphProto {
                    name: format!("{}_piece{k}", self.graph.name),
                    node: cut.nodes[k].iter().map(|&n| n.clone()).collect(),
                    input: reads.iter().map(input).collect(),
                    output: writes
                        .iter()
                        .map(|name| pb::ValueInfoProto {
                            name: name.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    initializer: cut.constants[k]
                        .iter()
                        .map(|name| self.initializers[name.as_str()].clone())
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let read_facts: Vec<InferenceFact> =
                reads.iter().map(|r| self.known[r].clone()).collect();
            let parsed = self.framework.parse(&piece, self.dir)?;
            let model = typed(parsed, reads, &read_facts, writes, &[])
                .with_context(|| format!("piece {k} of {}", cut.nodes.len()))?;
            for (ix, name) in writes.iter().enumerate() {
                let fact = model.output_fact(ix)?;
                let Some(shape) = fact.shape.as_concrete() else {
                    return Ok(None);
                };
                let pinned = InferenceFact::dt_shape(fact.datum_type, shape.to_vec());
                self.known.insert(name.clone(), pinned);
            }
            batch.push(Typed {
                k,
                model,
                reads: reads.clone(),
                writes: writes.clone(),
                frees: cut.frees[k].clone(),
            });
        }
        Ok(Some(batch))
    }
}

/// A graph input for `name`, typed by `fact` (pinned again after parsing;
/// the element type only has to parse).
fn typed_input(name: &str, fact: &InferenceFact) -> pb::ValueInfoProto {
    let elem_type = fact
        .datum_type
        .concretize()
        .and_then(|dt| ElemType::from_datum(dt).ok())
        .unwrap_or(ElemType::F32)
        .onnx_code();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
