//! # eliminate
//!
//! **What:** removes operators that compute nothing at inference time:
//! `Identity`; `Dropout` (inference mode, mask unused); `Transpose` with the
//! identity permutation; `Cast` to the type the value already has; `Reshape`
//! to the shape the value already has; the initial states of an `LSTM`,
//! `GRU` or `RNN` that are all zeros (a zero constant, a `ConstantOfShape`
//! of zero, or slices, reshapes and concatenations of those), which the
//! operator assumes when they are left out. Subgraphs included.
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
//! `Transpose(x, perm=[0..n)) = x`; `Cast(x: T, to=T) = x`; `Reshape(x: S, S) = x`;
//! `LSTM(x, w, r, b, l, h0 = 0, c0 = 0) = LSTM(x, w, r, b, l)` (ONNX: "if not
//! specified, assumed to be 0"; likewise GRU's and RNN's `initial_h`). A
//! zero state of the wrong shape would have failed the original; it is
//! dropped all the same (no valid run changes).
//! A node whose output is a graph output is kept when its input cannot take
//! over the output's name (a graph input, say).
//!
//! **Examples that run:** `passes/testdata/eliminate/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{AttrValue, DataType, Graph, NodeId, Operator, Patch};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "eliminate",
    "remove Identity, inference Dropout and no-op Transpose/Cast/Reshape",
    |_| RulePass::boxed(RULES, "removed"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Identity", "identity", identity),
    Rule::on("Dropout", "dropout", dropout),
    Rule::on("Transpose", "transpose", transpose),
    Rule::on("Cast", "cast", cast),
    Rule::on("Reshape", "reshape", reshape),
    Rule::on("LSTM", "zero-state", zero_state),
    Rule::on("GRU", "zero-state", zero_state),
    Rule::on("RNN", "zero-state", zero_state),
];

/// The initial-state inputs of the recurrent operators: `initial_h` (slot
/// 5), and LSTM's `initial_c` (slot 6).
fn state_slots(op: &Operator) -> &'static [usize] {
    if op.is("LSTM") {
        &[5, 6]
    } else {
        &[5]
    }
}

/// `v` is all zeros: a constant whose elements are all +0 or -0 (or 0), a
/// `ConstantOfShape` of zero (its default value), or values only moved,
/// selected or repeated from all-zero data (`Slice`, `Reshape`, `Transpose`,
/// `Expand`…; PyTorch slices one zero tensor into a GRU's per-layer states),
/// or a `Concat` of all-zero parts.
fn all_zeros(g: &Graph, v: crate::ir::Outlet) -> bool {
    all_zeros_within(g, v, 8)
}

/// Ops whose output elements all come from their input 0's elements.
const MOVES_DATA: &[&str] = &[
    "Slice",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Flatten",
    "Identity",
    "Gather",
    "Tile",
    "Cast",
];

fn all_zeros_within(g: &Graph, v: crate::ir::Outlet, depth: usize) -> bool {
    let zero = |t: &crate::ir::Tensor| match t.dtype {
        DataType::FLOAT => t.to_f32().is_ok_and(|v| v.iter().all(|&x| x == 0.0)),
        _ => t.to_i64().is_ok_and(|v| v.iter().all(|&x| x == 0)),
    };
    if let Some(t) = g.const_tensor(v) {
        return t.numel() > 0 && zero(t);
    }
    let Some(op) = g.op(v.node).filter(|op| op.is_default_domain()) else {
        return false;
    };
    let zeros_in = |slot| {
        depth > 0
            && g.input(v.node, slot)
                .is_some_and(|x| all_zeros_within(g, x, depth - 1))
    };
    if op.is("ConstantOfShape") {
        match op.attr("value").map(|a| &a.value) {
            None => true,
            Some(AttrValue::Tensor(t)) => zero(t),
            Some(_) => false,
        }
    } else if MOVES_DATA.iter().any(|&k| op.is(k)) {
        v.slot == 0 && zeros_in(0)
    } else if op.is("Concat") {
        op.arity > 0 && (0..op.arity).all(zeros_in)
    } else {
        false
    }
}

// LSTM/GRU/RNN(…, initial_h = 0, initial_c = 0) = the same without them (0 is the default).
fn zero_state(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    if !op.is_default_domain() {
        return Ok(None);
    }
    let zeros: Vec<usize> = state_slots(op)
        .iter()
        .copied()
        .filter(|&slot| g.input(id, slot).is_some_and(|v| all_zeros(g, v)))
        .collect();
    if zeros.is_empty() {
        return Ok(None);
    }
    let mut patch = Patch::new("");
    for &slot in &zeros {
        patch.rewire(id, slot, None);
    }
    // Trailing omitted inputs are dropped from the arity.
    let mut arity = op.arity;
    while arity > 0 && (zeros.contains(&(arity - 1)) || g.input(id, arity - 1).is_none()) {
        arity -= 1;
    }
    if arity != op.arity {
        let mut new_op = op.clone();
        new_op.arity = arity;
        patch.update(id, new_op);
    }
    Ok(Some(patch))
}

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
    Ok((from == Some(to))
        .then(|| Patch::bypass(g, id, input))
        .flatten())
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

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{AttrValue, Attribute, DataType, Model, Tensor};
    use crate::passes::testing::{check, init, op_types, rewrite};

    /// The arity of the operator that computes `value`.
    fn arity(m: &Model, value: &str) -> usize {
        let g = &m.graph;
        g.op(g.find_value(value).unwrap().node).unwrap().arity
    }

    /// x: f32[5, 1, 3] → LSTM (hidden 4) whose initial_h is a
    /// ConstantOfShape of `fill` and initial_c a constant `c0`. (Batch 1:
    /// tract 0.23 fails on an LSTM of batch 2, states given or not.)
    fn lstm(fill: f32, c0: f32, op: &str) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[5, 1, 3]);
        let gates = if op == "LSTM" { 4 } else { 3 };
        let w = init(&mut b, "w", &[1, gates * 4, 3], 61);
        let r = init(&mut b, "r", &[1, gates * 4, 4], 62);
        let bias = init(&mut b, "b", &[1, gates * 8], 63);
        let shape = b.init("shape", Tensor::from_i64(vec![3], &[1, 1, 4]));
        let value = Tensor::from_f32(vec![1], &[fill]);
        let attrs = vec![Attribute::new("value", AttrValue::Tensor(value))];
        let h0 = b.op("ConstantOfShape", &[shape], attrs, "h0");
        let c0 = b.init("c0", Tensor::from_f32(vec![1, 1, 4], &[c0; 4]));
        let mut ins = vec![Some(x), Some(w), Some(r), Some(bias), None, Some(h0)];
        if op == "LSTM" {
            ins.push(Some(c0));
        }
        let hidden = vec![Attribute::int("hidden_size", 4)];
        let outs = b.op_n(op, &ins, hidden, &["y", "y_h", "y_c"][..ins.len() - 4]);
        for o in outs {
            b.output(o, DataType::FLOAT);
        }
        b.build().unwrap()
    }

    #[test]
    fn zero_initial_states_are_dropped() {
        let after = check(
            "eliminate__lstm-zero-states",
            &lstm(0.0, -0.0, "LSTM"),
            "eliminate,dce",
        );
        assert_eq!(op_types(&after), ["LSTM"]);
        assert_eq!(arity(&after, "y"), 4);
        let after = check(
            "eliminate__gru-zero-state",
            &lstm(0.0, 0.0, "GRU"),
            "eliminate,dce",
        );
        assert_eq!(op_types(&after), ["GRU"]);
        // A non-zero state stays; the zero one beside it goes.
        let after = rewrite(&lstm(0.5, 0.0, "LSTM"), "eliminate,dce");
        assert_eq!(op_types(&after), ["ConstantOfShape", "LSTM"]);
        assert_eq!(arity(&after, "y"), 6);
    }

    /// PyTorch's two-layer GRU: one zero tensor made from the input's shape
    /// (Shape → Gather → Concat → ConstantOfShape), sliced into each
    /// layer's initial state. The slices are zeros too.
    #[test]
    fn sliced_zero_states_are_dropped() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[5, 1, 3]);
        let w = init(&mut b, "w", &[1, 12, 3], 61);
        let r = init(&mut b, "r", &[1, 12, 4], 62);
        let shape = b.op("Shape", &[x], vec![], "shape");
        let i1 = b.init("i1", Tensor::from_i64(vec![1], &[1]));
        let batch = b.op(
            "Gather",
            &[shape, i1],
            vec![Attribute::int("axis", 0)],
            "batch",
        );
        let two = b.init("two", Tensor::from_i64(vec![1], &[2]));
        let four = b.init("four", Tensor::from_i64(vec![1], &[4]));
        let dims = b.op(
            "Concat",
            &[two, batch, four],
            vec![Attribute::int("axis", 0)],
            "dims",
        );
        let zeros = b.op("ConstantOfShape", &[dims], vec![], "zeros");
        let (s0, s1) = (
            b.init("s0", Tensor::from_i64(vec![1], &[0])),
            b.init("s1", Tensor::from_i64(vec![1], &[1])),
        );
        let h0 = b.op("Slice", &[zeros, s0, s1, s0], vec![], "h0");
        let ins = [Some(x), Some(w), Some(r), None, None, Some(h0)];
        let outs = b.op_n(
            "GRU",
            &ins,
            vec![Attribute::int("hidden_size", 4)],
            &["y", "y_h"],
        );
        for o in outs {
            b.output(o, DataType::FLOAT);
        }
        let model = b.build().unwrap();
        let after = check("eliminate__gru-sliced-zero-state", &model, "eliminate,dce");
        assert_eq!(op_types(&after), ["GRU"]);
        assert_eq!(arity(&after, "y"), 3);
    }
}
