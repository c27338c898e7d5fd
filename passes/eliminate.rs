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
use crate::ir::{AttrValue, DataType, Graph, NodeId, Operator, Patch};
use crate::passes::{DataUse, PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo {
    name: "eliminate",
    summary: "remove Identity, inference Dropout and no-op Transpose/Cast/Reshape",
    exact: true,
    data: DataUse::None,
    options: &[],
    build: |_| RulePass::boxed(RULES, "removed"),
};

pub const RULES: &[Rule] = &[
    Rule::on("Identity", "identity", identity),
    Rule::on("Dropout", "dropout", dropout),
    Rule::on("Transpose", "transpose", transpose),
    Rule::on("Cast", "cast", cast),
    Rule::on("Reshape", "reshape", reshape),
];

fn identity(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    Ok(g.input(id, 0).and_then(|input| Patch::bypass(g, id, input)))
}

fn dropout(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    let Some(input) = g.input(id, 0) else {
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
    Ok(inference.then(|| Patch::bypass(g, id, input)).flatten())
}

fn transpose(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    let Some(input) = g.input(id, 0) else {
        return Ok(None);
    };
    let identity_perm = match op.attr("perm").map(|a| &a.value) {
        Some(AttrValue::Ints(perm)) => perm.iter().enumerate().all(|(i, &p)| p == i as i64),
        _ => false,
    };
    Ok(identity_perm.then(|| Patch::bypass(g, id, input)).flatten())
}

fn cast(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    let Some(input) = g.input(id, 0) else {
        return Ok(None);
    };
    let to = match op.attr("to").map(|a| &a.value) {
        Some(AttrValue::Int(to)) => DataType(*to as i32),
        _ => return Ok(None),
    };
    let from = g.known_type(input).and_then(|t| t.tensor_elem());
    Ok((from == Some(to)).then(|| Patch::bypass(g, id, input)).flatten())
}

fn reshape(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    let Some(input) = g.input(id, 0) else {
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
    Ok(same.then(|| Patch::bypass(g, id, input)).flatten())
}
