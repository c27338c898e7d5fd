//! # eliminate
//!
//! **What:** removes operators that compute nothing at inference time:
//! `Identity`; `Dropout` (inference mode, mask unused); `Transpose` with the
//! identity permutation; `Cast` to the type the value already has; `Reshape`
//! to the shape the value already has. Subgraphs included.
//!
//! **Why:** exporters emit them freely; each one is a kernel launch and a copy
//! in ONNX Runtime / TensorRT, and they hide patterns from the fusion passes.
//!
//! ```text
//! a = Conv(x, w)                               a = Conv(x, w)
//! b = Identity(a)                         →
//! y = Relu(b)                                  y = Relu(a)
//! ```
//! Identity rules used: `Identity(x) = x`; `Dropout(x) = x` when not training;
//! `Transpose(x, perm=[0..n)) = x`; `Cast(x: T, to=T) = x`; `Reshape(x: S, S) = x`.
//! A node whose output is a graph output is kept when its input cannot take
//! over the output's name (a graph input, say).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{AttrValue, DataType, Graph, NodeId, Outlet, Patch};
use crate::passes::{DataUse, PassInfo, RulePass};
use crate::pipeline::{Options, Pass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo {
    name: "eliminate",
    summary: "remove Identity, inference Dropout and no-op Transpose/Cast/Reshape",
    exact: true,
    data: DataUse::None,
    options: &[],
    build,
};

fn build(_: &Options) -> Result<Box<dyn Pass>> {
    Ok(Box::new(RulePass {
        rules: RULES,
        count: "removed",
    }))
}

pub const RULES: &[(&str, Rule)] = &[
    ("identity", identity),
    ("dropout", dropout),
    ("transpose", transpose),
    ("cast", cast),
    ("reshape", reshape),
];

/// Replaces node `id` (one used output) by the value `input`.
fn bypass(g: &Graph, id: NodeId, input: Outlet) -> Option<Patch> {
    let node = g.node(id);
    let out = Outlet::new(id, 0);
    if (1..node.outputs.len()).any(|slot| g.is_used(Outlet::new(id, slot))) {
        return None;
    }
    if g.is_graph_output(out) && !g.can_take_name(input) {
        return None;
    }
    let mut patch = Patch::new("");
    patch.shunt(out, input);
    patch.remove(id);
    Some(patch)
}

fn identity(_: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    Ok(match g.input(id, 0) {
        Some(input) if op.is("Identity") => bypass(g, id, input),
        _ => None,
    })
}

fn dropout(_: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    let Some(input) = g.input(id, 0).filter(|_| op.is("Dropout")) else {
        return Ok(None);
    };
    // training_mode (opset 12+): absent, or a constant false.
    let inference = match g.input(id, 2) {
        None => true,
        Some(o) => g
            .const_tensor(o)
            .and_then(|t| t.to_i64().ok())
            .is_some_and(|v| v.iter().all(|&x| x == 0)),
    };
    Ok(if inference {
        bypass(g, id, input)
    } else {
        None
    })
}

fn transpose(_: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    let Some(input) = g.input(id, 0).filter(|_| op.is("Transpose")) else {
        return Ok(None);
    };
    let identity_perm = match op.attr("perm").map(|a| &a.value) {
        Some(AttrValue::Ints(perm)) => perm.iter().enumerate().all(|(i, &p)| p == i as i64),
        _ => false,
    };
    Ok(if identity_perm {
        bypass(g, id, input)
    } else {
        None
    })
}

fn cast(_: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    let Some(input) = g.input(id, 0).filter(|_| op.is("Cast")) else {
        return Ok(None);
    };
    let to = match op.attr("to").map(|a| &a.value) {
        Some(AttrValue::Int(to)) => DataType(*to as i32),
        _ => return Ok(None),
    };
    let from = g.known_type(input).and_then(|t| t.tensor_elem());
    Ok(if from == Some(to) {
        bypass(g, id, input)
    } else {
        None
    })
}

fn reshape(_: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    let Some(input) = g.input(id, 0).filter(|_| op.is("Reshape")) else {
        return Ok(None);
    };
    let Some(dims) = g.known_type(input).and_then(|t| t.static_dims()) else {
        return Ok(None);
    };
    let Some(shape) = g
        .input(id, 1)
        .and_then(|o| g.const_tensor(o))
        .and_then(|t| t.to_i64().ok())
    else {
        return Ok(None);
    };
    let allowzero = matches!(
        op.attr("allowzero").map(|a| &a.value),
        Some(AttrValue::Int(1))
    );
    let exact = |i: usize| shape[i] == dims[i] || (shape[i] == 0 && !allowzero);
    // One -1 is inferred, and equals the input's dim when every other dim matches.
    let same = shape.len() == dims.len()
        && (0..dims.len()).all(|i| exact(i) || shape[i] == -1)
        && shape.iter().filter(|&&s| s == -1).count() <= 1;
    Ok(if same { bypass(g, id, input) } else { None })
}
