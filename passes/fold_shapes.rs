//! # fold-shapes
//!
//! **What:** resolves `Reshape` shapes computed at run time from `Shape`
//! (through Slice, Gather, Concat, Cast, Unsqueeze/Squeeze; see
//! `ir::shape_value`). A Reshape to the shape its input already has, dim for
//! dim (symbolic dims included), is removed; otherwise a computed shape whose
//! elements are all known numbers, dims the Reshape copies from its own input
//! at the same position, and at most one other dim becomes a constant: a
//! number stays, a copied dim becomes `0`, the one other dim becomes `-1`.
//! Subgraphs included.
//!
//! Any other integer value computed from shapes (`Gather(Shape(x), 1)`,
//! `Unsqueeze`, `Concat`, `Mul` of dims, ...) whose every element is a known
//! number becomes that constant, though the shape it was read from has
//! symbolic dims elsewhere (an LSTM state's `[2, batch, 512]` read from a
//! `[width, 1, 2048]` input); `fold-constants` only folds Shape of fully
//! static values.
//!
//! **Why:** exporters with a dynamic batch (jax2tf, tf2onnx, torch.onnx)
//! build every Reshape's target from `Shape(x)`; the shape arithmetic is
//! extra nodes and keeps ONNX Runtime and TensorRT from planning memory
//! statically. Once the shape is a constant, the arithmetic is dead.
//!
//! ```text
//! s = Shape(bytes: [N, 2048])                   y = Reshape(x, [-1, 512, 256])
//! n = Slice(s, [0], [1], [0])             →
//! t = Concat(n, [512], [256])
//! y = Reshape(x, t)
//! ```
//! Identities used: `Reshape(x, s) = x` when `s[i]` is `x`'s dim `i` for
//! every `i` (a `0` copying it with `allowzero=0`; at most one `-1`, the
//! rest matching); `Reshape(x, s) = Reshape(x, s')` where `s'[i] = 0` when
//! `s[i]` is `x`'s dim `i` (`allowzero=0`), and `s'[j] = -1` for the single
//! other dim `j` when every remaining element is a known positive number
//! (then `-1` infers exactly `s[j]` whenever the original Reshape is valid).
//! And `v = c` for an integer value `v` that `ir::shape_value` shows holds
//! the numbers `c` whatever the symbolic dims are.
//! Dims are equal only when certainly the same number: the same known value,
//! the same `dim_param`, or the same dim of the same value; never two
//! unknown dims.
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::shape_value::{dims, shape_value, SymInt};
use crate::ir::{DataType, Graph, NodeId, Operator, Outlet, Patch, Tensor, TensorData};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fold-shapes",
    "remove Reshapes to a computed shape equal to the input's; make computed Reshape shapes, and shape values known in full, constant",
    |_| RulePass::boxed(RULES, "folded"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Reshape", "reshape-same", reshape_same),
    Rule::on("Reshape", "reshape-const", reshape_const),
    Rule::any("known-value", known_value),
];

/// The operators `shape_value` follows (constants aside).
const SHAPE_OPS: &[&str] = &[
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Mul",
    "Add",
    "Sub",
    "Identity",
];

/// The integer element type of `v`: its known type, or what the operators
/// that compute it from a `Shape` say.
fn int_type(g: &Graph, v: Outlet, depth: usize) -> Option<DataType> {
    if let Some(t) = g.known_type(v).and_then(|t| t.tensor_elem()) {
        return Some(t);
    }
    let op = g.op(v.node)?;
    match op.op_type.as_str() {
        "Shape" => Some(DataType::INT64),
        "Cast" => Some(DataType(op.attr_int("to", 0) as i32)),
        _ => int_type(g, g.input(v.node, 0)?, depth.checked_sub(1)?),
    }
}

/// `v = c`: an integer value computed from shapes whose every element is a
/// known number, whatever the symbolic dims, becomes that constant.
fn known_value(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    if !op.is_default_domain() || !SHAPE_OPS.contains(&op.op_type.as_str()) {
        return Ok(None);
    }
    let out = Outlet::new(id, 0);
    let Some(value) = shape_value(g, out) else {
        return Ok(None);
    };
    let Some(numbers) = value
        .elems
        .iter()
        .map(|e| match e {
            SymInt::Known(n) => Some(*n),
            _ => None,
        })
        .collect::<Option<Vec<i64>>>()
    else {
        return Ok(None);
    };
    let dims = if value.scalar {
        vec![]
    } else {
        vec![numbers.len() as i64]
    };
    let tensor = match int_type(g, out, 32) {
        Some(DataType::INT64) => Tensor::from_i64(dims, &numbers),
        Some(DataType::INT32) => {
            let v = numbers
                .iter()
                .map(|&n| i32::try_from(n).ok())
                .collect::<Option<_>>();
            let Some(v) = v else { return Ok(None) };
            Tensor::new(DataType::INT32, dims, TensorData::Int32(v))
        }
        _ => return Ok(None),
    };
    let mut patch = Patch::new("");
    let c = patch.add_const(g.outlet_name(out), tensor);
    patch.shunt(out, c);
    patch.remove(id);
    Ok(Some(patch))
}

/// A Reshape (opset ≥ 5 input form): its data input, its shape input, what
/// the shape holds, and `allowzero`.
fn reshape(g: &Graph, id: NodeId) -> Option<(Outlet, Outlet, Vec<SymInt>, bool)> {
    let op = g.op(id)?;
    if !op.is("Reshape") {
        return None;
    }
    let (x, s) = (g.input(id, 0)?, g.input(id, 1)?);
    let value = shape_value(g, s)?;
    if value.scalar {
        return None;
    }
    Some((x, s, value.elems, op.attr_int("allowzero", 0) == 1))
}

/// `Reshape(x, s) = x` when every `s[i]` is `x`'s dim `i` (or a copying 0),
/// with at most one `-1`. Needs `x`'s rank, not its dims to be numbers.
fn reshape_same(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    let Some((x, _, shape, allowzero)) = reshape(g, id) else {
        return Ok(None);
    };
    let Some(xd) = dims(g, x) else {
        return Ok(None);
    };
    let minus_one = shape.iter().filter(|&e| *e == SymInt::Known(-1)).count();
    let same = shape.len() == xd.len()
        && minus_one <= 1
        && shape.iter().zip(&xd).all(|(s, d)| {
            s == d || *s == SymInt::Known(-1) || (*s == SymInt::Known(0) && !allowzero)
        });
    let out = Outlet::new(id, 0);
    if !same || (g.is_graph_output(out) && !g.can_take_name(x)) {
        return Ok(None);
    }
    let mut patch = Patch::new("");
    patch.shunt(out, x);
    patch.remove(id);
    Ok(Some(patch))
}

/// `Reshape(x, s) = Reshape(x, s')` with `s'` constant: numbers kept, `x`'s
/// own dims copied with `0` (`allowzero=0`), one other dim inferred with
/// `-1` when every other element is a positive number.
fn reshape_const(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    let Some((x, s, shape, allowzero)) = reshape(g, id) else {
        return Ok(None);
    };
    if g.const_tensor(s).is_some() {
        return Ok(None);
    }
    let xd = dims(g, x);
    let mut out: Vec<Option<i64>> = shape
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            SymInt::Known(n) => Some(*n),
            _ if !allowzero && xd.as_ref().and_then(|d| d.get(i)) == Some(e) => Some(0),
            _ => None,
        })
        .collect();
    // One element that is not a number, the rest positive numbers: `-1`
    // says it, copied dim or not (tract 0.23 loses the types after a
    // Reshape of a rank-1 value by a copying 0 into rank 3: basic-pitch).
    let unknown: Vec<usize> = (0..shape.len())
        .filter(|&i| !matches!(shape[i], SymInt::Known(_)))
        .collect();
    if let [j] = unknown[..] {
        if out
            .iter()
            .enumerate()
            .all(|(i, n)| i == j || n.is_some_and(|n| n > 0))
        {
            out[j] = None;
        }
    }
    let open: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
    match open[..] {
        [] => {}
        [j] if out.iter().flatten().all(|&n| n > 0) => out[j] = Some(-1),
        _ => return Ok(None),
    }
    let values: Vec<i64> = out.into_iter().flatten().collect();
    let mut patch = Patch::new("");
    let name = format!("{}.folded", g.outlet_name(s));
    let c = patch.add_const(&name, Tensor::from_i64(vec![values.len() as i64], &values));
    patch.rewire(id, 1, Some(c));
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::{f32_type, ModelBuilder};
    use crate::ir::{diff::model_diff, Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::{check, rewrite};

    const PASS: &str = "fold-shapes";

    fn ints(b: &mut ModelBuilder, name: &str, v: &[i64]) -> Outlet {
        b.init(name, Tensor::from_i64(vec![v.len() as i64], v))
    }

    fn unchanged(m: &Model) {
        assert_eq!(model_diff(m, &rewrite(m, PASS)), "no change\n");
    }

    /// bytes: f32[`bytes`], x: f32[`x`] (tract runs symbols as 1);
    /// y = Relu(Reshape(x, Cast(Concat(Slice(Cast(Shape(bytes), i32), [0], [1]), tail), i64))).
    fn magika_like(bytes: &[&str], x: &[&str], tail: &[i64]) -> Model {
        let mut b = ModelBuilder::new(15);
        let by = b.input("bytes", DataType::FLOAT, &[2, 8]);
        let xi = b.input("x", DataType::FLOAT, &[2, 4, 4]);
        let s = b.op("Shape", &[by], vec![], "s");
        let s32 = b.op("Cast", &[s], vec![Attribute::int("to", 6)], "s32");
        let (z, one) = (ints(&mut b, "z", &[0]), ints(&mut b, "one", &[1]));
        let n = b.op("Slice", &[s32, z, one, z], vec![], "n");
        let t = b.init(
            "tail",
            Tensor::new(
                DataType::INT32,
                vec![tail.len() as i64],
                crate::ir::TensorData::Int32(tail.iter().map(|&v| v as i32).collect()),
            ),
        );
        let cat = b.op("Concat", &[n, t], vec![Attribute::int("axis", 0)], "cat");
        let shape = b.op("Cast", &[cat], vec![Attribute::int("to", 7)], "shape");
        let r = b.op("Reshape", &[xi, shape], vec![], "r");
        let y = b.op("Relu", &[r], vec![], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(bytes));
        m.graph.inputs[1].info.ty = Some(f32_type(x));
        m
    }

    #[test]
    fn same_symbolic_shape_is_removed() {
        // bytes' dim 0 and x's dim 0 are both N: the Reshape changes nothing.
        let m = magika_like(&["N", "8"], &["N", "4", "4"], &[4, 4]);
        let after = check("fold-shapes__same-symbol", &m, &format!("{PASS},dce"));
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn computed_shape_becomes_constant() {
        // x: [N, 16] reshaped to [N, 2, 8]: N is the one dim not a number: [-1, 2, 8].
        let m = magika_like(&["N", "8"], &["N", "16"], &[2, 8]);
        let after = check("fold-shapes__copied-symbol", &m, &format!("{PASS},dce"));
        assert_eq!(after.graph.op_count(), 2);
        // Another symbol M: the one open dim, [-1, 4, 4].
        let m = magika_like(&["M", "8"], &["N", "16"], &[4, 4]);
        let after = check("fold-shapes__minus-one", &m, &format!("{PASS},dce"));
        assert_eq!(after.graph.op_count(), 2);
        // Into [N, 4, 4] the same [-1, 4, 4] is then x's own shape (a valid
        // run has M·16 = N·16): removed.
        let m = magika_like(&["M", "8"], &["N", "4", "4"], &[4, 4]);
        let after = check("fold-shapes__minus-one-same", &m, &format!("{PASS},dce"));
        assert_eq!(after.graph.op_count(), 1);
    }

    /// x: f32[N, ?, 4]; y = Reshape(x, Concat(Slice(Shape(x), [0], [2]), tail)).
    fn own_dims(tail: &[i64]) -> Model {
        let mut b = ModelBuilder::new(15);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s = b.op("Shape", &[x], vec![], "s");
        let (z, two) = (ints(&mut b, "z", &[0]), ints(&mut b, "two", &[2]));
        let head = b.op("Slice", &[s, z, two], vec![], "head");
        let k = ints(&mut b, "tail", tail);
        let cat = b.op("Concat", &[head, k], vec![Attribute::int("axis", 0)], "cat");
        let r = b.op("Reshape", &[x, cat], vec![], "r");
        let y = b.op("Relu", &[r], vec![], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["N", "?", "4"]));
        m
    }

    #[test]
    fn own_dims_are_copied() {
        // [N, dim1(x), 4] is x's shape, the unknown dim included: removed.
        let after = check(
            "fold-shapes__own-shape",
            &own_dims(&[4]),
            &format!("{PASS},dce"),
        );
        assert_eq!(after.graph.op_count(), 1);
        // [N, dim1(x), 2, 2]: x's own dims become copying 0s: [0, 0, 2, 2].
        let after = check(
            "fold-shapes__copied-dims",
            &own_dims(&[2, 2]),
            &format!("{PASS},dce"),
        );
        assert_eq!(after.graph.op_count(), 2);
    }

    /// x: f32[?, ?, 4]; o: f32[`o`]; y = Reshape(x, Concat(Shape(o), [4])).
    fn open_dims(o: &[&str], allowzero: i64) -> Model {
        let mut b = ModelBuilder::new(15);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let oi = b.input("o", DataType::FLOAT, &[2, 3]);
        let s = b.op("Shape", &[oi], vec![], "s");
        let k = ints(&mut b, "k", &[4]);
        let cat = b.op("Concat", &[s, k], vec![Attribute::int("axis", 0)], "cat");
        let attrs = vec![Attribute::int("allowzero", allowzero)];
        let y = b.op("Reshape", &[x, cat], attrs, "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["?", "?", "4"]));
        m.graph.inputs[1].info.ty = Some(f32_type(o));
        m
    }

    #[test]
    fn known_elements_of_a_symbolic_shape_become_constant() {
        // x: f32[N, 2, 4]; the state [1, dim1(x), dim2(x)] = [1, 2, 4] is
        // known though N is not: the Shape/Gather/Unsqueeze/Concat go.
        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[3, 2, 4]);
        let s = b.op("Shape", &[x], vec![], "s");
        let i1 = b.init("i1", Tensor::from_i64(vec![], &[1]));
        let i2 = b.init("i2", Tensor::from_i64(vec![], &[2]));
        let d1 = b.op("Gather", &[s, i1], vec![], "d1");
        let d2 = b.op("Gather", &[s, i2], vec![], "d2");
        let ax = vec![Attribute::ints("axes", &[0])];
        let u1 = b.op("Unsqueeze", &[d1], ax.clone(), "u1");
        let u2 = b.op("Unsqueeze", &[d2], ax, "u2");
        let one = ints(&mut b, "one", &[1]);
        let cat = b.op(
            "Concat",
            &[one, u1, u2],
            vec![Attribute::int("axis", 0)],
            "cat",
        );
        let zeros = b.op("ConstantOfShape", &[cat], vec![], "zeros");
        let y = b.op("Add", &[x, zeros], vec![], "y");
        // N itself stays computed.
        let i0 = b.init("i0", Tensor::from_i64(vec![], &[0]));
        let n = b.op("Gather", &[s, i0], vec![], "n");
        b.output(y, DataType::FLOAT);
        b.output(n, DataType::INT64);
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["N", "2", "4"]));
        let after = check("fold-shapes__known-value", &m, &format!("{PASS},dce"));
        assert_eq!(
            crate::passes::testing::op_types(&after),
            ["Shape", "ConstantOfShape", "Add", "Gather"]
        );
    }

    #[test]
    fn unknown_or_two_open_dims_stay() {
        // Unknown dims of o and of x are not known to be equal: two open dims.
        unchanged(&open_dims(&["?", "?"], 0));
        // An unnamed (empty) dim_param is no symbol either.
        unchanged(&open_dims(&["", ""], 0));
        // [M, P, 4]: two dims not of x and not numbers: no constant says it.
        unchanged(&open_dims(&["M", "P"], 0));
        unchanged(&open_dims(&["M", "P"], 1));
    }

    #[test]
    fn allowzero_keeps_dims_literal() {
        // allowzero=1: x's own dims are not written as copying 0s, so
        // [N, dim1(x), 2, 2] has two open dims and stays. (To x's exact
        // shape, [N, dim1(x), 4], it is still a no-op: see the next check.)
        let mut m = own_dims(&[2, 2]);
        let r = m.graph.find_value("r").unwrap();
        let op = m.graph.node_mut(r.node).as_op_mut().unwrap();
        op.set_attr(Attribute::int("allowzero", 1));
        unchanged(&m);
        let mut m = own_dims(&[4]);
        let r = m.graph.find_value("r").unwrap();
        let op = m.graph.node_mut(r.node).as_op_mut().unwrap();
        op.set_attr(Attribute::int("allowzero", 1));
        assert_eq!(rewrite(&m, PASS).graph.op_count(), m.graph.op_count() - 1);
    }
}
