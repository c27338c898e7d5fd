//! Rank inference without running anything: a value's rank from its type,
//! else from what its producer does to the ranks of its inputs. Exporters
//! often leave intermediate values untyped; `raise-opset` needs ranks to
//! convert axis-dependent operators.

use super::{constant::constant_value, op_kinds::BROADCAST, Graph, Outlet, Tensor};
use anyhow::Result;
use std::collections::HashMap;

/// How far [`len`] follows producers.
const MAX_DEPTH: usize = 16;

/// The known ranks of a graph's values.
pub type Ranks = HashMap<Outlet, i64>;

/// The rank of every value of `g` where known: from its type, else from
/// what its producer does to the ranks of its inputs (see [`rank`]).
pub fn ranks(g: &Graph) -> Result<Ranks> {
    let mut ranks = Ranks::new();
    for id in g.topo_order()? {
        for slot in 0..g.node(id).outputs.len() {
            let v = Outlet::new(id, slot);
            if let Some(r) = rank(g, v, &ranks) {
                ranks.insert(v, r);
            }
        }
    }
    Ok(ranks)
}

/// A value's rank: from its type, else from what its producer does to the
/// ranks of its inputs (`ranks`: elementwise and broadcasting ops, MatMul,
/// Reshape to a shape of known length, Squeeze/Unsqueeze, Transpose,
/// Flatten, Gemm, Concat, Reduce ops, constants). Exporters often leave
/// intermediate values untyped.
pub fn rank(g: &Graph, v: Outlet, ranks: &Ranks) -> Option<i64> {
    if let Some(r) = g.known_rank(v) {
        return Some(r as i64);
    }
    if let Some(t) = constant(g, v) {
        return Some(t.dims.len() as i64);
    }
    let op = g.op(v.node)?;
    if !op.is_default_domain() || (v.slot != 0 && !op.is("Split")) {
        return None;
    }
    let input = |slot: usize| g.input(v.node, slot).and_then(|o| ranks.get(&o).copied());
    const SAME: &[&str] = &[
        "Abs",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Conv",
        "ConvTranspose",
        "Dropout",
        "Elu",
        "Erf",
        "Exp",
        "Floor",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "InstanceNormalization",
        "LayerNormalization",
        "LeakyRelu",
        "Log",
        "LogSoftmax",
        "LRN",
        "AveragePool",
        "MaxPool",
        "Neg",
        "Not",
        "PRelu",
        "Reciprocal",
        "Relu",
        "Resize",
        "Round",
        "Selu",
        "Sigmoid",
        "Sign",
        "Sin",
        "Cos",
        "Softmax",
        "Softplus",
        "Softsign",
        "Sqrt",
        "Tanh",
        "Transpose",
        "Pad",
        "Slice",
        "Tile",
        "CumSum",
        "Split",
    ];
    let t = op.op_type.as_str();
    if SAME.contains(&t) {
        return input(0);
    }
    if BROADCAST.contains(&t) {
        return (0..op.arity).map(input).try_fold(0, |m, r| Some(m.max(r?)));
    }
    match t {
        "MatMul" => match (input(0)?, input(1)?) {
            (a, b) if a >= 2 && b >= 2 => Some(a.max(b)),
            (1, b) if b >= 2 => Some(b - 1),
            (a, 1) if a >= 2 => Some(a - 1),
            _ => None,
        },
        "Gemm" | "Flatten" => Some(2),
        "Concat" => (0..op.arity).find_map(input),
        "Reshape" => len(g, g.input(v.node, 1)?, ranks, MAX_DEPTH),
        "Shape" => Some(1),
        "Squeeze" | "Unsqueeze" => {
            let axes = match op.attr_ints("axes") {
                Some(axes) => axes.len() as i64,
                None => constant(g, g.input(v.node, 1)?)?.numel() as i64,
            };
            Some(input(0)? + if t == "Squeeze" { -axes } else { axes })
        }
        _ if t.starts_with("Reduce") && g.input(v.node, 1).is_none() => {
            if op.attr_int("keepdims", 1) == 1 {
                return input(0);
            }
            Some(input(0)? - op.attr_ints("axes")?.len() as i64)
        }
        _ => None,
    }
}

/// A constant: an initializer or a `Constant` node.
fn constant(g: &Graph, v: Outlet) -> Option<Tensor> {
    match g.const_tensor(v) {
        Some(t) => Some(t.clone()),
        None => constant_value(g, v.node),
    }
}

/// The length of a 1-D value (a shape being computed), as far as known.
fn len(g: &Graph, v: Outlet, ranks: &Ranks, depth: usize) -> Option<i64> {
    if let Some(dims) = g.known_dims(v) {
        return match dims.as_slice() {
            [d] => *d,
            _ => None,
        };
    }
    if let Some(t) = constant(g, v) {
        return (t.dims.len() == 1).then(|| t.dims[0]);
    }
    let depth = depth.checked_sub(1)?;
    let op = g.op(v.node)?;
    if !op.is_default_domain() || v.slot != 0 {
        return None;
    }
    let input = |slot: usize| g.input(v.node, slot);
    match op.op_type.as_str() {
        "Cast" | "Identity" | "Abs" | "Neg" => len(g, input(0)?, ranks, depth),
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (
                len(g, input(0)?, ranks, depth)?,
                len(g, input(1)?, ranks, depth)?,
            );
            (a == b || b == 1).then_some(a.max(b))
        }
        "Concat" => (0..op.arity).try_fold(0, |n, s| Some(n + len(g, input(s)?, ranks, depth)?)),
        "Shape" => {
            let r = *ranks.get(&input(0)?)?;
            let at = |b: i64| {
                if b < 0 {
                    (b + r).clamp(0, r)
                } else {
                    b.clamp(0, r)
                }
            };
            let (start, end) = (at(op.attr_int("start", 0)), at(op.attr_int("end", r)));
            Some((end - start).max(0))
        }
        "Slice" => {
            let n = len(g, input(0)?, ranks, depth)?;
            let ints = |s: usize| constant(g, input(s)?)?.to_i64().ok();
            let (starts, ends) = (ints(1)?, ints(2)?);
            let steps = match input(4) {
                Some(_) => ints(4)?,
                None => vec![1],
            };
            if starts.len() != 1 || ends.len() != 1 || steps != [1] {
                return None;
            }
            let at = |b: i64| {
                if b < 0 {
                    (b + n).clamp(0, n)
                } else {
                    b.clamp(0, n)
                }
            };
            Some((at(ends[0]) - at(starts[0])).max(0))
        }
        "Unsqueeze" => {
            // A scalar made 1-D.
            let axes = op
                .attr_ints("axes")
                .map(<[i64]>::len)
                .or_else(|| Some(constant(g, input(1)?)?.numel()))?;
            (axes == 1 && *ranks.get(&input(0)?)? == 0).then_some(1)
        }
        _ => None,
    }
}
