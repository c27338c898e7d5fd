//! Per-operator rules of ONNX's schemas, for default-domain operators:
//! arity and attributes against the schema the model's opset selects
//! (`schema`), then ranges — axes within rank, positive strides, kernels
//! and dilations, If branches that produce the node's outputs, constant
//! shapes that would size an absurd allocation. Each rule returns the broken
//! rule as a sentence; `mod.rs` adds the node.

use super::ranks::Ranks;
use super::schema::{self, Kind, Repeat, Schema};
use super::{element_count_within, MAX_COMPUTED_ELEMENTS, MAX_RANK};
use crate::ir::{AttrValue, Graph, NodeId, Operator};
use std::collections::HashSet;

type Rule = Result<(), String>;

pub fn check(g: &Graph, id: NodeId, op: &Operator, s: &Schema, opset: i64, ranks: &Ranks) -> Rule {
    arity(g, id, op, s)?;
    attributes(op, s, opset)?;
    let rank = |k: usize| g.input(id, k).and_then(|o| ranks.of(g, o));
    let t = op.op_type.as_str();
    match t {
        "Conv" | "ConvTranspose" | "ConvInteger" | "MaxPool" | "AveragePool" | "LpPool"
        | "MaxUnpool" | "DeformConv" => {
            window(op, rank(0))?;
            // A weight of one spatial dim per input spatial dim.
            if matches!(t, "Conv" | "ConvTranspose" | "ConvInteger") {
                if let (Some(x), Some(w)) = (rank(0), rank(1)) {
                    if x != w {
                        return Err(format!("its weight has rank {w}, its input rank {x}"));
                    }
                }
            }
        }
        "QLinearConv" => window(op, rank(0))?,
        "Flatten" => axis(op, rank(0), 0, 1)?,
        "Concat" | "Softmax" | "LogSoftmax" | "Hardmax" | "Gather" | "GatherElements"
        | "ArgMax" | "ArgMin" | "Split" | "LayerNormalization" | "Compress" | "TopK"
        | "LpNormalization" | "ScatterElements" | "Scatter" | "Unique" | "QuantizeLinear"
        | "DequantizeLinear" => axis(op, rank(0), 0, 0)?,
        "OneHot" => axis(op, rank(0), 1, 1)?,
        "Squeeze" | "Unsqueeze" | "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp"
        | "ReduceMax" | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSum"
        | "ReduceSumSquare" => axes(g, id, op, rank(0), ranks)?,
        "Transpose" => perm(op, rank(0))?,
        "If" => if_branches(op, g.node(id).outputs.len())?,
        "Loop" | "Scan" if op.attr("body").is_none() => return Err("has no body".into()),
        "Loop" => loop_body(op, g.node(id).outputs.len())?,
        "Scan" => {
            let n = op.attr_int("num_scan_inputs", 0);
            if n < 1 || n as usize > op.arity {
                return Err(format!(
                    "num_scan_inputs={n} must be in [1, {}] (its inputs)",
                    op.arity
                ));
            }
            // Scan 8 takes an (optional) sequence_lens before its states.
            let before = usize::from(s.since == 8);
            scan_body(op, n as usize, before, g.node(id).outputs.len())?;
        }
        "Constant" => {
            let values = op.attributes.iter().filter(|a| a.ref_attr_name.is_none());
            if values.count() != 1 {
                return Err("must hold exactly one value attribute".into());
            }
        }
        "ConstantOfShape" | "Expand" => {
            let k = if t == "Expand" { 1 } else { 0 };
            if let Some(shape) = g.input(id, k).and_then(|o| ranks.values(g, o)) {
                element_count_within(shape, MAX_COMPUTED_ELEMENTS)
                    .map_err(|e| format!("its shape input: {e}"))?;
            }
        }
        "Tile" => {
            if let Some(reps) = g.input(id, 1).and_then(|o| ranks.values(g, o)) {
                element_count_within(reps, MAX_COMPUTED_ELEMENTS)
                    .map_err(|e| format!("its repeats input: {e}"))?;
            }
        }
        "Reshape" => {
            if let Some(shape) = g.input(id, 1).and_then(|o| ranks.values(g, o)) {
                if shape.iter().any(|&d| d < -1) || shape.iter().filter(|&&d| d == -1).count() > 1 {
                    return Err(format!(
                        "shape {shape:?}: dims must be >= -1, with at most one -1"
                    ));
                }
            }
        }
        "Cast" => {
            let to = op.attr_int("to", 1);
            if !(1..=23).contains(&to) {
                return Err(format!("to={to} is not an ONNX element type"));
            }
        }
        "Gemm" => {
            for name in ["transA", "transB"] {
                flag(op, name)?;
            }
            for k in 0..2 {
                if let Some(r) = rank(k).filter(|&r| r != 2) {
                    return Err(format!("input {k} has rank {r}, Gemm takes rank 2"));
                }
            }
        }
        "Pad" => {
            // Since opset 11 an input, before an attribute (`paddings` in 1).
            let pads = g.input(id, 1).and_then(|o| ranks.values(g, o)).or_else(|| {
                ["pads", "paddings"]
                    .iter()
                    .find_map(|n| Some(op.attr_ints(n)?.to_vec()))
            });
            if let Some(p) = pads {
                padding_within(&p)?;
                // A begin and an end a padded axis: every axis, unless
                // opset 18's `axes` input names them (found by fuzzing: 4
                // pads for a rank-3 input, inside an If branch).
                if let (Some(r), None) = (rank(0), g.input(id, 3)) {
                    if p.len() != 2 * r {
                        return Err(format!(
                            "{} pads for an input of rank {r}: 2 × {r} needed",
                            p.len()
                        ));
                    }
                }
            }
        }
        // Its optional outputs come all or none: onnx's schema lists the
        // output counts allowed, not a range (found by fuzzing: 2 outputs).
        "BatchNormalization" if s.since >= 6 => {
            let (n, all) = (g.node(id).outputs.len(), if s.since >= 14 { 3 } else { 5 });
            if n != 1 && n != all {
                return Err(format!(
                    "it has {n} outputs: 1 or {all} (BatchNormalization-{})",
                    s.since
                ));
            }
        }
        "DepthToSpace" | "SpaceToDepth" => positive_int(op, "blocksize")?,
        "LRN" => positive_int(op, "size")?,
        _ => {}
    }
    if t.starts_with("Reduce") || t == "ArgMax" || t == "ArgMin" {
        flag(op, "keepdims")?;
    }
    Ok(())
}

/// Inputs and outputs as many as the schema allows, none of its single
/// (required) ones omitted.
fn arity(g: &Graph, id: NodeId, op: &Operator, s: &Schema) -> Rule {
    let outputs = &g.node(id).outputs;
    let range = |(lo, hi): (usize, usize)| match (lo, hi) {
        (lo, schema::N) => format!("at least {lo}"),
        (lo, hi) if lo == hi => format!("{lo}"),
        (lo, hi) => format!("{lo} to {hi}"),
    };
    if op.arity < s.inputs.0 || op.arity > s.inputs.1 {
        return Err(format!(
            "has {} inputs, ONNX allows {}",
            op.arity,
            range(s.inputs)
        ));
    }
    let single = |p: Option<&schema::Param>| p.is_some_and(|p| p.repeat == Repeat::Single);
    if let Some(k) =
        (0..op.arity).find(|&k| single(s.formal_inputs.get(k)) && g.input(id, k).is_none())
    {
        return Err(format!("input {k} is required but omitted"));
    }
    if outputs.len() < s.outputs.0 || outputs.len() > s.outputs.1 {
        return Err(format!(
            "has {} outputs, ONNX allows {}",
            outputs.len(),
            range(s.outputs)
        ));
    }
    let omitted = |k: usize| outputs[k].name.is_empty();
    if let Some(k) = (0..outputs.len()).find(|&k| single(s.formal_outputs.get(k)) && omitted(k)) {
        return Err(format!("output {k} is required but omitted"));
    }
    Ok(())
}

/// Attributes the schema at this opset defines (names starting with `__`
/// are implementation details, which ONNX lets pass), each of its kind, once,
/// and the required ones present.
fn attributes(op: &Operator, s: &Schema, opset: i64) -> Rule {
    let mut seen = HashSet::new();
    for a in &op.attributes {
        if !seen.insert(a.name.as_str()) {
            return Err(format!("attribute {} is given twice", a.name));
        }
        let Some(spec) = s.attr(&a.name) else {
            if a.name.starts_with("__") {
                continue;
            }
            return Err(format!(
                "attribute {} is not one ONNX defines for {} at opset {opset}",
                a.name, op.op_type
            ));
        };
        if a.ref_attr_name.is_some() {
            continue;
        }
        let got = match &a.value {
            AttrValue::Float(_) => Kind::Float,
            AttrValue::Int(_) => Kind::Int,
            AttrValue::String(_) => Kind::String,
            AttrValue::Tensor(_) => Kind::Tensor,
            AttrValue::Graph(_) => Kind::Graph,
            AttrValue::SparseTensor(_) => Kind::SparseTensor,
            AttrValue::Type(_) => Kind::Type,
            AttrValue::Ints(_) => Kind::Ints,
            AttrValue::Strings(_) => Kind::Strings,
            AttrValue::Tensors(_) => Kind::Tensors,
            AttrValue::Graphs(_) => Kind::Graphs,
            AttrValue::SparseTensors(_) => Kind::SparseTensors,
            AttrValue::Types(_) => Kind::Types,
            // An empty list has no telling type in a file without one.
            AttrValue::Floats(v) if v.is_empty() && spec.kind == Kind::Ints => Kind::Ints,
            AttrValue::Floats(_) => Kind::Floats,
            AttrValue::None => {
                return Err(format!(
                    "attribute {} must be {:?}, not empty",
                    a.name, spec.kind
                ))
            }
        };
        if got != spec.kind {
            return Err(format!(
                "attribute {} must be {:?}, not {got:?}",
                a.name, spec.kind
            ));
        }
    }
    if let Some(missing) = s
        .attrs
        .iter()
        .find(|a| a.required && !seen.contains(a.name))
    {
        return Err(format!("attribute {} is required", missing.name));
    }
    Ok(())
}

/// Windowed operators (convolutions, pools): kernel, strides and dilations
/// positive, pads >= 0, and their lengths agree with each other and the
/// input's spatial rank.
/// Padding alone sizes an output (and tract walks every padded position of
/// a window before allocating it: Conv pads of 2^62 ran for hours, found by
/// fuzzing): at most [`MAX_COMPUTED_ELEMENTS`] padded positions an axis.
/// `pads` lists every axis's begin, then every axis's end, as ONNX does.
fn padding_within(pads: &[i64]) -> Rule {
    let half = pads.len() / 2;
    for axis in 0..half {
        let sum = pads[axis].max(0).saturating_add(pads[axis + half].max(0));
        if sum as u64 > MAX_COMPUTED_ELEMENTS {
            return Err(format!(
                "pads={pads:?}: {sum} padded positions on axis {axis}, more than \
                 {MAX_COMPUTED_ELEMENTS} (onnx-opt's limit)"
            ));
        }
    }
    Ok(())
}

fn window(op: &Operator, rank: Option<usize>) -> Rule {
    let list = |name| op.attr_ints(name).map(|v| v.to_vec());
    let kernel = list("kernel_shape");
    if kernel.is_none()
        && matches!(
            op.op_type.as_str(),
            "MaxPool" | "AveragePool" | "LpPool" | "MaxUnpool"
        )
    {
        return Err("kernel_shape is required".into());
    }
    if let Some(r) = rank {
        if r < 3 {
            return Err(format!("its input has rank {r}, at least 3 is needed"));
        }
    }
    let spatial = kernel.as_ref().map(Vec::len).or(rank.map(|r| r - 2));
    if let (Some(k), Some(r)) = (&kernel, rank) {
        if k.len() != r - 2 {
            return Err(format!(
                "kernel_shape has {} dims, its input has {} spatial dims",
                k.len(),
                r - 2
            ));
        }
    }
    for name in ["kernel_shape", "strides", "dilations"] {
        if let Some(v) = list(name) {
            // A window over no spatial dim: the input has rank >= 3.
            if v.is_empty() {
                return Err(format!("{name} is empty"));
            }
            if v.iter().any(|&x| x <= 0) {
                return Err(format!("{name}={v:?}: every entry must be > 0"));
            }
            if spatial.is_some_and(|s| s != v.len()) {
                return Err(format!(
                    "{name} has {} entries, {} spatial dims",
                    v.len(),
                    spatial.unwrap_or(0)
                ));
            }
        }
    }
    if let Some(p) = list("pads") {
        if p.iter().any(|&x| x < 0) {
            return Err(format!("pads={p:?}: every entry must be >= 0"));
        }
        if spatial.is_some_and(|s| 2 * s != p.len()) {
            return Err(format!(
                "pads has {} entries, twice the {} spatial dims are needed",
                p.len(),
                spatial.unwrap_or(0)
            ));
        }
        padding_within(&p)?;
    }
    if op.attr("group").is_some() && op.attr_int("group", 1) < 1 {
        return Err(format!("group={} must be >= 1", op.attr_int("group", 1)));
    }
    Ok(())
}

/// `axis` within [-rank - extra_low, rank - 1 + extra_high] (Flatten allows
/// `rank`, OneHot one past each end); without a rank, within ±MAX_RANK.
fn axis(op: &Operator, rank: Option<usize>, extra_low: i64, extra_high: i64) -> Rule {
    let Some(AttrValue::Int(a)) = op.attr("axis").map(|a| &a.value) else {
        return Ok(());
    };
    let r = rank.unwrap_or(MAX_RANK) as i64;
    let (lo, hi) = (-r - extra_low, r - 1 + extra_high);
    if *a < lo || *a > hi {
        let of = match rank {
            Some(r) => format!("its input's rank {r}"),
            None => format!("any rank up to {MAX_RANK}"),
        };
        return Err(format!("axis={a} is outside [{lo}, {hi}] for {of}"));
    }
    Ok(())
}

/// `axes` (attribute, or constant second input since opsets 13/18) within
/// rank and without repeats. Unsqueeze's axes index its output.
fn axes(g: &Graph, id: NodeId, op: &Operator, rank: Option<usize>, ranks: &Ranks) -> Rule {
    let given = op
        .attr_ints("axes")
        .map(|v| v.to_vec())
        .or_else(|| g.input(id, 1).and_then(|o| ranks.values(g, o)));
    let Some(axes) = given else {
        return Ok(());
    };
    let r = match (rank, op.op_type.as_str()) {
        (Some(r), "Unsqueeze") => r + axes.len(),
        (Some(r), _) => r,
        (None, _) => MAX_RANK,
    } as i64;
    for &a in &axes {
        if a < -r || a >= r {
            let of = match rank {
                Some(_) => format!("rank {r}"),
                None => format!("any rank up to {MAX_RANK}"),
            };
            return Err(format!(
                "axes={axes:?}: {a} is outside [{}, {}] for {of}",
                -r,
                r - 1
            ));
        }
    }
    let normalised: HashSet<i64> = axes.iter().map(|&a| a.rem_euclid(r)).collect();
    if normalised.len() != axes.len() {
        return Err(format!("axes={axes:?} names an axis twice"));
    }
    Ok(())
}

fn perm(op: &Operator, rank: Option<usize>) -> Rule {
    let Some(p) = op.attr_ints("perm") else {
        return Ok(());
    };
    let mut sorted = p.to_vec();
    sorted.sort_unstable();
    if sorted.iter().enumerate().any(|(k, &v)| v != k as i64) {
        return Err(format!("perm={p:?} is not a permutation of 0..{}", p.len()));
    }
    if let Some(r) = rank.filter(|&r| r != p.len()) {
        return Err(format!(
            "perm={p:?} has {} entries, its input has rank {r}",
            p.len()
        ));
    }
    Ok(())
}

/// Both branches present, each producing as many values as the node has outputs.
fn if_branches(op: &Operator, outputs: usize) -> Rule {
    for name in ["then_branch", "else_branch"] {
        let Some(AttrValue::Graph(branch)) = op.attr(name).map(|a| &a.value) else {
            return Err(format!("{name} is missing"));
        };
        if branch.outputs.len() != outputs {
            return Err(format!(
                "{name} produces {} values, the node has {outputs} outputs",
                branch.outputs.len()
            ));
        }
    }
    Ok(())
}

/// A Loop body takes the iteration number, the condition and the N
/// loop-carried values, and gives the condition, N values and K scanned
/// outputs: one output more than the node has.
fn loop_body(op: &Operator, outputs: usize) -> Rule {
    let Some(AttrValue::Graph(body)) = op.attr("body").map(|a| &a.value) else {
        return Err("body is not a graph".into());
    };
    if body.outputs.len() != outputs + 1 {
        return Err(format!(
            "its body has {} outputs; the node's {outputs} outputs need {}",
            body.outputs.len(),
            outputs + 1
        ));
    }
    Ok(())
}

/// A Scan body takes N states and M = `num_scan_inputs` scanned slices, as
/// the node does (after its `before` other inputs), and gives N states and
/// K scanned outputs, as the node does; the axes and directions lists, when
/// given, have one entry per scanned input (M) or output (K).
fn scan_body(op: &Operator, m: usize, before: usize, node_outputs: usize) -> Rule {
    let Some(AttrValue::Graph(body)) = op.attr("body").map(|a| &a.value) else {
        return Err("body is not a graph".into());
    };
    let (inputs, outputs) = (body.inputs.len(), body.outputs.len());
    if op.arity != before + inputs {
        return Err(format!(
            "the node has {} inputs, its body {inputs}",
            op.arity.saturating_sub(before)
        ));
    }
    if outputs != node_outputs {
        return Err(format!(
            "its body has {outputs} outputs, the node has {node_outputs}"
        ));
    }
    if m > inputs {
        return Err(format!(
            "num_scan_inputs={m} exceeds the {inputs} inputs of its body"
        ));
    }
    let states = inputs - m;
    if outputs < states {
        return Err(format!(
            "its body has {outputs} outputs, fewer than its {states} state inputs"
        ));
    }
    let k = outputs - states;
    for (name, want) in [
        ("scan_input_axes", m),
        ("scan_input_directions", m),
        ("scan_output_axes", k),
        ("scan_output_directions", k),
    ] {
        if let Some(AttrValue::Ints(v)) = op.attr(name).map(|a| &a.value) {
            if v.len() != want {
                return Err(format!("{name} has {} entries, not {want}", v.len()));
            }
        }
    }
    Ok(())
}

/// An INT attribute that is 0 or 1.
fn flag(op: &Operator, name: &str) -> Rule {
    let v = op.attr_int(name, 0);
    if v != 0 && v != 1 {
        return Err(format!("{name}={v} must be 0 or 1"));
    }
    Ok(())
}

fn positive_int(op: &Operator, name: &str) -> Rule {
    match op.attr(name).map(|a| &a.value) {
        Some(AttrValue::Int(v)) if *v <= 0 => Err(format!("{name}={v} must be > 0")),
        _ => Ok(()),
    }
}
