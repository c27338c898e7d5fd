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
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::{
    IntoRunnable, TValue, TVec, TractResult, TypedModel, TypedRunnableModel, TypedSimpleState,
};
use tract_onnx::tract_hir::infer::Factoid;

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

/// Where a graph is cut: for each piece, its nodes, the values it reads from
/// outside, the initializers it needs, what it writes for later, what it
/// frees.
struct Cut<'a> {
    nodes: Vec<Vec<&'a pb::NodeProto>>,
    reads: Vec<Vec<String>>,
    constants: Vec<Vec<String>>,
    writes: Vec<Vec<String>>,
    frees: Vec<Vec<String>>,
}

impl<'a> Cut<'a> {
    /// `None` when the graph has a single piece, reads a value before it is
    /// computed, or returns a value no node computes and no input is.
    ///
    /// A value computed from constants and shapes alone (a `Constant` node,
    /// a Cast of an initializer, `Shape → Gather → Concat`) is never passed
    /// from piece to piece: the piece that reads it computes it again (and
    /// reads what a Shape there reads), since tract wants some inputs
    /// constant (BatchNorm's parameters, a Reshape's shape).
    fn of(
        graph: &'a pb::GraphProto,
        inputs: &[String],
        returned: &[String],
        piece_nodes: usize,
    ) -> Option<Cut<'a>> {
        let all: Vec<&pb::NodeProto> = graph.node.iter().collect();
        let ranges: Vec<std::ops::Range<usize>> = (0..all.len())
            .step_by(piece_nodes)
            .map(|start| start..(start + piece_nodes).min(all.len()))
            .collect();
        if ranges.len() < 2 {
            return None;
        }
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        // The node computing each value, and which nodes compute constants.
        let mut producer: HashMap<&str, usize> = HashMap::new();
        let mut constant = vec![false; all.len()];
        for (i, node) in all.iter().enumerate() {
            let plain = node
                .attribute
                .iter()
                .all(|a| a.g.is_none() && a.graphs.is_empty());
            // Shape and Size depend on their input's shape only, which
            // every piece knows: tract folds them where they are computed.
            let of_shape = matches!(node.op_type.as_str(), "Shape" | "Size");
            constant[i] = plain
                && !node.op_type.starts_with("Random")
                && (of_shape
                    || node.input.iter().filter(|s| !s.is_empty()).all(|s| {
                        initializers.contains(s.as_str())
                            || producer.get(s.as_str()).is_some_and(|&p| constant[p])
                    }));
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(out, i);
            }
        }
        let piece_of = |i: usize| i / piece_nodes;
        let inputs: HashSet<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let mut last_read: HashMap<&str, usize> = HashMap::new();
        let mut cut = Cut {
            nodes: vec![],
            reads: vec![],
            constants: vec![],
            writes: vec![vec![]; ranges.len()],
            frees: vec![vec![]; ranges.len()],
        };
        for (k, range) in ranges.iter().enumerate() {
            let (mut reads, mut consts, mut pulled) = (Vec::new(), Vec::new(), Vec::new());
            let mut seen = HashSet::new();
            // Nodes to visit: the piece's own, then constants it pulls in.
            let mut todo: Vec<(usize, bool)> = range.clone().rev().map(|i| (i, false)).collect();
            while let Some((i, is_pulled)) = todo.pop() {
                let node = all[i];
                let mut used: Vec<&str> = node.input.iter().map(|s| s.as_str()).collect();
                subgraph_reads(node, &mut used);
                for (ix, name) in used.into_iter().enumerate() {
                    if name.is_empty() || !seen.insert(name) {
                        continue;
                    }
                    match producer.get(name) {
                        Some(&p) if p >= range.start && !is_pulled => {
                            if p >= i {
                                return None; // read before it is computed
                            }
                        }
                        Some(&p) if constant[p] => {
                            pulled.push(p);
                            todo.push((p, true));
                        }
                        Some(&p) if piece_of(p) < k => {
                            last_read.insert(name, k);
                            reads.push(name.to_string());
                        }
                        Some(_) => return None,
                        None if inputs.contains(name) => {
                            last_read.insert(name, k);
                            reads.push(name.to_string());
                        }
                        None if initializers.contains(name) => consts.push(name.to_string()),
                        // A subgraph's own value, not the outer graph's.
                        None if ix >= node.input.len() => {}
                        None => return None,
                    }
                }
            }
            pulled.sort_unstable();
            pulled.dedup();
            let nodes = pulled
                .into_iter()
                .chain(range.clone())
                .map(|i| all[i])
                .collect();
            cut.nodes.push(nodes);
            cut.reads.push(reads);
            cut.constants.push(consts);
        }
        let returned_set: HashSet<&str> = returned.iter().map(|s| s.as_str()).collect();
        for name in returned {
            match producer.get(name.as_str()) {
                Some(&p) => {
                    let at = piece_of(p);
                    if !cut.writes[at].contains(name) {
                        cut.writes[at].push(name.clone());
                    }
                }
                None if inputs.contains(name.as_str()) => {} // there from the start
                None => return None,
            }
        }
        // Read by a later piece: written by its own. In file order, so the
        // pieces' outputs are deterministic.
        for (i, node) in all.iter().enumerate() {
            let k = piece_of(i);
            for name in &node.output {
                let later = last_read.get(name.as_str()).is_some_and(|&at| at > k);
                if later && !cut.writes[k].contains(name) {
                    cut.writes[k].push(name.clone());
                }
            }
        }
        for (k, reads) in cut.reads.iter().enumerate() {
            for name in reads {
                if last_read[name.as_str()] == k && !returned_set.contains(name.as_str()) {
                    cut.frees[k].push(name.clone());
                }
            }
        }
        Some(cut)
    }
}

/// Appends every name the subgraphs of `node` read (their own values too:
/// the caller keeps those of the outer graph).
fn subgraph_reads<'a>(node: &'a pb::NodeProto, used: &mut Vec<&'a str>) {
    for attr in &node.attribute {
        for g in attr.g.iter().chain(&attr.graphs) {
            for inner in &g.node {
                used.extend(inner.input.iter().map(|s| s.as_str()));
                subgraph_reads(inner, used);
            }
            used.extend(g.output.iter().map(|o| o.name.as_str()));
        }
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
mod tests {
    use super::super::super::testutil::*;
    use super::*;
    use crate::runtime::load::compile;
    use crate::runtime::{ElemType, Tensor};
    use tract_onnx::prelude::IntoTensor;

    /// y = a chain of `blocks` (MatMul 4×4, Add, Relu) on x: [1, 4], with a
    /// skip connection from the first block's output into the last Add and
    /// an If whose branch reads a value of the outer graph.
    fn long_model(blocks: usize) -> pb::ModelProto {
        let (mut nodes, mut inits) = (vec![], vec![]);
        let mut x = "x".to_string();
        for b in 0..blocks {
            let w: Vec<f32> = (0..16)
                .map(|i| ((i * 7 + b * 3) % 11) as f32 / 11.0 - 0.4)
                .collect();
            inits.push(f32_tensor(&format!("w{b}"), &[4, 4], &w));
            inits.push(f32_tensor(&format!("b{b}"), &[4], &[0.1, -0.2, 0.05, 0.0]));
            let (m, a, r) = (format!("m{b}"), format!("a{b}"), format!("r{b}"));
            nodes.push(node("MatMul", &[&x, &format!("w{b}")], &[&m]));
            let bias = if b + 1 == blocks {
                "r0".to_string()
            } else {
                format!("b{b}")
            };
            nodes.push(node("Add", &[&m, &bias], &[&a]));
            nodes.push(node("Relu", &[&a], &[&r]));
            x = r;
        }
        // If(cond) then Neg(r1) else r1 (the branches read r1 from outside).
        let branch = |op: &str, out: &str| pb::GraphProto {
            name: out.into(),
            node: vec![node(op, &["r1"], &[out])],
            output: vec![value_info(out, FLOAT, None)],
            ..Default::default()
        };
        inits.push(pb::TensorProto {
            name: "cond".into(),
            data_type: 9,
            dims: vec![],
            raw_data: vec![1],
            ..Default::default()
        });
        nodes.push(pb::NodeProto {
            attribute: vec![
                pb::AttributeProto {
                    name: "then_branch".into(),
                    r#type: 5,
                    g: Some(branch("Neg", "t")),
                    ..Default::default()
                },
                pb::AttributeProto {
                    name: "else_branch".into(),
                    r#type: 5,
                    g: Some(branch("Identity", "e")),
                    ..Default::default()
                },
            ],
            ..node("If", &["cond"], &["branched"])
        });
        nodes.push(node("Add", &[&x, "branched"], &["y"]));
        model_proto(graph(
            nodes,
            vec![value_info("x", FLOAT, Some(&["1", "4"]))],
            vec![value_info("y", FLOAT, None)],
            inits,
        ))
    }

    fn pinned() -> (Vec<String>, Vec<InferenceFact>) {
        let fact = InferenceFact::dt_shape(ElemType::F32.to_datum(), vec![1, 4]);
        (vec!["x".to_string()], vec![fact])
    }

    fn whole(proto: &pb::ModelProto, extra: &[String]) -> Arc<TypedRunnableModel> {
        let (names, facts) = pinned();
        let parsed = tract_onnx::onnx().parse(proto, None).unwrap();
        compile(parsed, &names, &facts, &["y".to_string()], extra, true).unwrap()
    }

    fn input() -> TVec<TValue> {
        let x = Tensor::from_f32(&[1, 4], &[0.5, -1.0, 2.0, 0.25]).unwrap();
        std::iter::once(x.tvalue()).collect()
    }

    fn floats(v: &TValue) -> Vec<f32> {
        let t = Tensor::from_tract(v.clone().into_tensor()).unwrap();
        t.to_f32_vec().unwrap()
    }

    #[test]
    fn pieces_compute_what_the_whole_model_does() {
        let proto = long_model(12);
        let extra = ["a5".to_string(), "x".to_string(), "m0".to_string()];
        let (names, facts) = pinned();
        for piece_nodes in [1, 5, 7, 20] {
            let pieces = Pieces::load(&proto, None, &names, &facts, &extra, piece_nodes)
                .unwrap()
                .unwrap_or_else(|| panic!("{piece_nodes} nodes a piece: not cut"));
            assert_eq!(pieces.outputs(), 4);
            let got = pieces.run(input()).unwrap();
            let want = whole(&proto, &extra).run(input()).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (floats(g), floats(w));
                for (a, b) in g.iter().zip(&w) {
                    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{g:?} vs {w:?}");
                }
            }
            // The reusable states give the same.
            let mut states = pieces.spawn().unwrap();
            let again = pieces.run_in(&mut states, input()).unwrap();
            assert_eq!(again.len(), got.len());
            for (a, b) in again.iter().zip(&got) {
                assert_eq!(floats(a), floats(b));
            }
        }
    }

    #[test]
    fn what_cannot_be_cut_is_not() {
        let (names, facts) = pinned();
        let y = ["y".to_string()];
        // One piece only.
        let proto = long_model(2);
        assert!(Cut::of(proto.graph.as_ref().unwrap(), &names, &y, 100).is_none());
        // A node reading a value computed after it.
        let mut proto = long_model(4);
        proto.graph.as_mut().unwrap().node.swap(0, 3);
        assert!(Cut::of(proto.graph.as_ref().unwrap(), &names, &y, 2).is_none());
        // An initializer asked for as an output.
        let proto = long_model(4);
        let extra = ["w1".to_string()];
        assert!(Pieces::load(&proto, None, &names, &facts, &extra, 2)
            .unwrap()
            .is_none());
    }

    #[test]
    fn values_are_freed_after_their_last_read() {
        let proto = long_model(6);
        let (names, _) = pinned();
        let cut = Cut::of(proto.graph.as_ref().unwrap(), &names, &["y".to_string()], 3).unwrap();
        // Each block's Relu output is read by the next block only, except
        // r0 (read by the last block's Add, node 16 of 20: piece 5 of 7) and
        // r1 (the If's branches).
        let freed: Vec<&String> = cut.frees.iter().flatten().collect();
        assert!(freed.iter().any(|n| *n == "r2"), "{freed:?}");
        let r0_freed_in = cut.frees.iter().position(|f| f.iter().any(|n| n == "r0"));
        assert_eq!(r0_freed_in, Some(16 / 3));
        // The last piece (the If, then y's Add) reads r1 for the If's
        // branches, and writes only y.
        assert!(cut.reads.last().unwrap().contains(&"r1".to_string()));
        assert_eq!(cut.writes.last().unwrap(), &["y".to_string()]);
    }
}
