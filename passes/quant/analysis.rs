//! Which layers to quantize, and which activations get a Q→DQ pair (the
//! plan: graph only, an ordered map, so the same model gives the same patch).

use super::*;
use std::collections::{BTreeSet, HashMap};

impl Quant {
    /// The layers to quantize in graph order, and a report entry for each
    /// operator of a chosen type left in float (and why).
    /// (`min_k`: see the option.)
    pub(super) fn candidates(
        &self,
        g: &Graph,
        min_k: usize,
    ) -> (Vec<Layer>, Vec<serde_json::Value>) {
        let fed = fed_by_layers(g);
        select_layers(g, &self.ops, |id, name| {
            let mut layer = self.layer(g, id, name)?;
            if layer.k > 0 && layer.k < min_k {
                return Err(format!(
                    "each output sums {} products, under min-k={min_k}: int8 does not pay",
                    layer.k
                ));
            }
            layer.first = layer.acts.iter().all(|(_, v)| !fed.contains(&v.node));
            Ok(layer)
        })
    }

    fn layer(&self, g: &Graph, id: NodeId, name: &str) -> std::result::Result<Layer, String> {
        let op = g.op(id).expect("an operator");
        let is_float = |o: Outlet| {
            g.known_type(o).is_none_or(|t| match t.kind {
                TypeKind::Tensor { elem, .. } => elem.is_none_or(|e| e == DataType::FLOAT),
                _ => false,
            })
        };
        let float_const = |slot: usize| {
            g.input(id, slot)
                .and_then(|o| g.const_tensor(o).map(|t| (o, t)))
                .filter(|(_, t)| t.dtype == DataType::FLOAT)
        };
        let (x, w) = match (g.input(id, 0), g.input(id, 1)) {
            (Some(x), Some(w)) => (x, w),
            _ => return Err("missing input".into()),
        };
        if g.node(id).outputs.len() != 1 {
            return Err("more than one output".into());
        }
        let wname = g.outlet_name(w);
        if self
            .exclude
            .iter()
            .any(|p| name_matches(p, name) || name_matches(p, wname))
        {
            return Err("excluded (exclude option)".into());
        }
        if g.const_tensor(x).is_some() {
            return Err("first input is a constant".into());
        }
        if !is_float(x) {
            return Err("input is not f32".into());
        }
        let weight = float_const(1);
        let dims: Vec<usize> = weight
            .map(|(_, t)| t.dims.iter().map(|&d| d.max(0) as usize).collect())
            .unwrap_or_default();
        let (axis, k) = match (op.op_type.as_str(), weight) {
            ("Conv", Some(_)) if dims.len() >= 3 => (0, dims[1..].iter().product()),
            ("ConvTranspose", Some(_)) if dims.len() >= 3 => {
                let groups = op.attr_int("group", 1).max(1) as usize;
                (1, dims[0] / groups * dims[2..].iter().product::<usize>())
            }
            ("Gemm", Some(_)) if dims.len() == 2 => {
                if op.attr_int("transA", 0) != 0 && g.known_rank(x).is_none() {
                    return Err("transA on an input of unknown rank".into());
                }
                if op.attr_int("transB", 0) != 0 {
                    (0, dims[1])
                } else {
                    (1, dims[0])
                }
            }
            ("MatMul", Some(_)) if dims.len() >= 2 => (dims.len() - 1, dims[dims.len() - 2]),
            ("MatMul", None) if g.const_tensor(w).is_none() && is_float(w) => {
                // Two activations (attention): both quantized, no weight.
                let k = g
                    .known_dims(w)
                    .and_then(|d| d.iter().rev().nth(1).copied().flatten())
                    .map_or(0, |d| d.max(0) as usize);
                return Ok(Layer {
                    node: id,
                    name: name.into(),
                    op: op.op_type.clone(),
                    acts: vec![(0, x), (1, w)],
                    weight: None,
                    k,
                    first: false,
                });
            }
            (_, Some(_)) => return Err(format!("weight of rank {}", dims.len())),
            (_, None) => return Err("weight is not an f32 constant".into()),
        };
        Ok(Layer {
            node: id,
            name: name.into(),
            op: op.op_type.clone(),
            acts: vec![(0, x)],
            weight: weight.map(|(o, _)| (1, o, axis)),
            k,
            first: false,
        })
    }

    /// The activations to quantize for `layers`: their inputs, and then
    /// by target (with `flow`): for trt both inputs of residual Adds they
    /// feed; for ort the outputs of those layers (after a Relu or Clip that
    /// is their only reader, which a zero point at the bottom of the range
    /// makes free) and every operator int8 can flow through (see
    /// [`flow_ort`]), so that ONNX Runtime finds whole `DQ → op → Q`
    /// groups to run as int8 kernels.
    ///
    /// Values in `lossy` (their grids lose too much) stay float: nothing
    /// int8 flows through reads or writes them.
    pub(super) fn plan(
        &self,
        g: &Graph,
        layers: &[Layer],
        flow: bool,
        lossy: &BTreeSet<String>,
    ) -> ActPlan {
        let mut plan = Planner {
            g,
            pairs: ActPlan::new(),
            lossy,
        };
        if self.weight_only {
            return plan.pairs;
        }
        for layer in layers {
            for &(slot, v) in &layer.acts {
                plan.read(v, (layer.node, slot));
            }
        }
        match self.target {
            Target::Ort => flow_ort(g, layers, flow, &mut plan),
            Target::Trt | Target::Tract if flow => residual_adds(g, layers, &mut plan),
            _ => {}
        }
        plan.pairs
    }
}

/// The operators that are layers (of a type in [`LAYER_OPS`], quantized
/// or not) or read what one computes, directly or through others.
fn fed_by_layers(g: &Graph) -> std::collections::HashSet<NodeId> {
    let mut fed = std::collections::HashSet::new();
    for id in g.op_order().unwrap_or_default() {
        let Some(op) = g.op(id) else { continue };
        if LAYER_OPS.contains(&op.op_type.as_str())
            || g.inputs(id).iter().flatten().any(|v| fed.contains(&v.node))
        {
            fed.insert(id);
        }
    }
    fed
}

/// ONNX Runtime's int8 groups, grown from the quantized layers in
/// graph order: an operator ONNX Runtime runs in int8 on quantized
/// inputs and output (`QLINEAR`) joins when one of its inputs already
/// carries a grid (its float constant inputs are stored in int8 too);
/// an operator that only moves or selects values (`MOVE`) passes its
/// input's grid on to its output, unchanged so that `DQ → op → Q` is
/// dropped, when an int8 operator reads that output.
fn flow_ort(g: &Graph, layers: &[Layer], flow: bool, plan: &mut Planner) {
    let order = g.op_order().unwrap_or_default();
    let mut int8: BTreeSet<NodeId> = layers.iter().map(|l| l.node).collect();
    // Values that carry (or may carry) a grid: the root value whose grid they use.
    let mut carried: HashMap<Outlet, Outlet> = HashMap::new();
    for layer in layers {
        for &(_, v) in &layer.acts {
            carried.insert(v, v);
        }
        let y = output_of(g, layer.node);
        carried.insert(y, y);
    }
    let mut moved: Vec<NodeId> = vec![];
    if flow {
        for &id in &order {
            let Some(op) = g.op(id) else { continue };
            if int8.contains(&id) || !op.is_default_domain() {
                continue;
            }
            let kind = op.op_type.as_str();
            if QLINEAR.contains(&kind) && g.node(id).outputs.len() == 1 {
                let inputs = if kind == "Add" || kind == "Mul" || kind == "Concat" {
                    op.arity
                } else {
                    1
                };
                let ins: Option<Vec<Outlet>> = (0..inputs).map(|s| g.input(id, s)).collect();
                let Some(ins) = ins.filter(|i| !i.is_empty()) else {
                    continue;
                };
                let all_f32 = ins
                    .iter()
                    .chain([&Outlet::new(id, 0)])
                    .all(|&v| is_f32(g, v));
                let acts: Vec<Outlet> = ins
                    .iter()
                    .copied()
                    .filter(|&v| g.const_tensor(v).is_none())
                    .collect();
                let keeps_grid = acts
                    .iter()
                    .chain([&output_of(g, id)])
                    .all(|&v| !plan.is_lossy(v));
                if all_f32 && keeps_grid && acts.iter().any(|v| carried.contains_key(v)) {
                    int8.insert(id);
                    for v in acts {
                        carried.entry(v).or_insert(v);
                    }
                    let y = output_of(g, id);
                    carried.insert(y, y);
                }
            } else if MOVE.contains(&kind) {
                let Some(x) = g.input(id, 0) else { continue };
                let ys = outputs(g, id);
                if let Some(&root) = carried.get(&x) {
                    if is_f32(g, x) && ys.iter().all(|&y| is_f32(g, y) && !plan.is_lossy(y)) {
                        for y in ys {
                            carried.insert(y, root);
                        }
                        moved.push(id);
                    }
                }
            }
        }
    }
    // A moved value is kept in int8 when an int8 operator, or a kept
    // move, reads it (latest first, so a chain of moves is seen whole).
    let mut kept: BTreeSet<NodeId> = BTreeSet::new();
    for &id in moved.iter().rev() {
        let read_in_int8 = outputs(g, id).into_iter().any(|y| {
            g.consumers(y)
                .iter()
                .any(|(c, _)| int8.contains(c) || kept.contains(c))
        });
        if read_in_int8 {
            kept.insert(id);
        }
    }
    for &id in &int8 {
        if !layers.iter().any(|l| l.node == id) {
            for (slot, v) in g.inputs(id).into_iter().enumerate() {
                let Some(v) = v else { continue };
                if g.const_tensor(v).is_some() {
                    plan.constant(v, (id, slot));
                } else {
                    plan.read(v, (id, slot));
                }
            }
        }
        plan.output(output_of(g, id));
    }
    for &id in &kept {
        let x = g.input(id, 0).expect("a moved value has an input");
        plan.read(x, (id, 0));
        for y in outputs(g, id) {
            plan.output(y);
            let root = g.outlet_name(carried[&y]).to_string();
            plan.share(y, root);
        }
    }
}

/// Every output of node `id`.
fn outputs(g: &Graph, id: NodeId) -> Vec<Outlet> {
    (0..g.node(id).outputs.len())
        .map(|i| Outlet::new(id, i))
        .collect()
}

/// Operators ONNX Runtime runs in int8 when their inputs and output are
/// quantized (QLinearAdd, QLinearMul, QLinearConcat, QLinearAveragePool,
/// QLinearGlobalAveragePool, QLinearLeakyRelu, QLinearSigmoid). Not
/// Softmax, though ONNX Runtime has QLinearSoftmax: tract 0.23 computes
/// `DQ → Softmax → Q` wrongly (a relative error of 1.97 where float's is
/// 0.14 on this module's `head` test model), and outputs are checked in
/// tract too; a Softmax reads float values.
const QLINEAR: &[&str] = &[
    "Add",
    "AveragePool",
    "Concat",
    "GlobalAveragePool",
    "LeakyRelu",
    "Mul",
    "Sigmoid",
];

/// Operators that only move or select values: on int8 values with the
/// same grid in and out, ONNX Runtime drops their `DQ`/`Q` and runs them
/// on int8 as they are (a Split's outputs each on its input's grid).
const MOVE: &[&str] = &[
    "Expand",
    "Flatten",
    "Gather",
    "MaxPool",
    "Reshape",
    "Resize",
    "Slice",
    "Split",
    "Squeeze",
    "Tile",
    "Transpose",
    "Unsqueeze",
];

/// Int8 may flow through operators of this type.
pub(super) fn flows_through(op_type: &str) -> bool {
    QLINEAR.contains(&op_type) || MOVE.contains(&op_type)
}

/// Input `slot` of `op` carries the values int8 flows through (not shapes,
/// indices, scales or a Resize's roi).
pub(super) fn is_data(op: &Operator, slot: usize) -> bool {
    QLINEAR.contains(&op.op_type.as_str()) || slot == 0
}

/// The values whose grids lose more than `max_err` of them.
pub(super) fn lossy(grids: &Grids, max_err: f64) -> BTreeSet<String> {
    grids
        .iter()
        .filter(|(_, c)| c.err > max_err)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Why `layer` stays float when it reads or (on ort) writes a lossy value.
pub(super) fn reads_lossy(
    g: &Graph,
    layer: &Layer,
    target: Target,
    grids: &Grids,
    max_err: f64,
) -> Option<String> {
    let output = (target == Target::Ort).then(|| output_of(g, layer.node));
    layer
        .acts
        .iter()
        .map(|&(_, v)| v)
        .chain(output)
        .find_map(|v| {
            let name = g.outlet_name(v);
            grids.get(name).filter(|c| c.err > max_err).map(|c| {
                format!(
                    "{name} loses {:.0}% on an 8-bit grid (max-act-err={max_err})",
                    c.err * 100.0
                )
            })
        })
}

/// `v` is known to be an f32 tensor.
fn is_f32(g: &Graph, v: Outlet) -> bool {
    g.known_type(v).is_some_and(
        |t| matches!(t.kind, TypeKind::Tensor { elem: Some(e), .. } if e == DataType::FLOAT),
    )
}

/// An operator's output, or the Relu (or Clip) right after it when that is
/// its only reader: a zero point at the bottom of the range is the Relu,
/// which ONNX Runtime then drops.
pub(super) fn output_of(g: &Graph, id: NodeId) -> Outlet {
    let y = Outlet::new(id, 0);
    match g.consumers(y).as_slice() {
        [(r, 0)]
            if !g.is_graph_output(y)
                && g.op(*r).is_some_and(|op| op.is("Relu") || op.is("Clip")) =>
        {
            Outlet::new(*r, 0)
        }
        _ => y,
    }
}

/// Both inputs of the residual Adds the layers feed (TensorRT fuses the
/// Add into the layer when both are quantized).
fn residual_adds(g: &Graph, layers: &[Layer], plan: &mut Planner) {
    let outputs: Vec<Outlet> = layers.iter().map(|l| output_of(g, l.node)).collect();
    for id in g.node_ids() {
        let Some(op) = g.op(id) else { continue };
        if !op.is("Add") {
            continue;
        }
        let (Some(a), Some(b)) = (g.input(id, 0), g.input(id, 1)) else {
            continue;
        };
        let activation = |v: Outlet| g.const_tensor(v).is_none();
        if activation(a)
            && activation(b)
            && !plan.is_lossy(a)
            && !plan.is_lossy(b)
            && (outputs.contains(&a) || outputs.contains(&b))
            && g.known_dims(a).is_some()
            && g.known_dims(a) == g.known_dims(b)
        {
            plan.read(a, (id, 0));
            plan.read(b, (id, 1));
        }
    }
}

/// Builds the plan: which inputs read each value's dequantized copy.
struct Planner<'g> {
    g: &'g Graph,
    pairs: ActPlan,
    lossy: &'g BTreeSet<String>,
}

impl Planner<'_> {
    fn is_lossy(&self, v: Outlet) -> bool {
        self.lossy.contains(self.g.outlet_name(v))
    }

    fn entry(&mut self, v: Outlet, grid: GridFrom) -> &mut Pair {
        self.pairs
            .entry(self.g.outlet_name(v).to_string())
            .or_insert_with(|| Pair {
                value: v,
                readers: vec![],
                graph_output: false,
                grid,
            })
    }

    /// `reader` reads `v`'s dequantized copy.
    fn read(&mut self, v: Outlet, reader: (NodeId, usize)) {
        let e = self.entry(v, GridFrom::Calibrated);
        if !e.readers.contains(&reader) {
            e.readers.push(reader);
            e.readers.sort();
        }
    }

    /// A constant `reader` reads in int8.
    fn constant(&mut self, v: Outlet, reader: (NodeId, usize)) {
        self.entry(v, GridFrom::Constant);
        self.read(v, reader);
    }

    /// Every reader of `v` (and the graph output it is) reads its
    /// dequantized copy, but a Softmax (see [`QLINEAR`]).
    fn output(&mut self, v: Outlet) {
        for reader in self.g.consumers(v) {
            if !self.g.op(reader.0).is_some_and(|op| op.is("Softmax")) {
                self.read(v, reader);
            }
        }
        if self.g.is_graph_output(v) {
            self.entry(v, GridFrom::Calibrated).graph_output = true;
        }
    }

    /// `v`, when quantized (a Split's output no int8 operator reads is
    /// not), is quantized on the grid of the value named `root`.
    fn share(&mut self, v: Outlet, root: String) {
        if let Some(pair) = self.pairs.get_mut(self.g.outlet_name(v)) {
            pair.grid = GridFrom::SameAs(root);
        }
    }
}
