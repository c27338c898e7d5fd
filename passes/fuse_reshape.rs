//! # fuse-reshape
//!
//! **What:** collapses chains of shape-only operators. A `Reshape` or
//! `Flatten` of a `Reshape`, `Flatten`, `Unsqueeze` or `Squeeze` reads the
//! original value directly (one Reshape or Flatten instead of two; tf2onnx
//! writes `Reshape → Unsqueeze → Reshape` before every 1-D Conv); an
//! `Unsqueeze` or `Squeeze` of a constant-shape `Reshape` is one Reshape
//! (the 1s inserted into, or taken out of, its shape); `Squeeze(Unsqueeze(x, a), a)`
//! is `x`; `Unsqueeze(Squeeze(x, a), a)` is `x` when the squeezed dims of `x`
//! are known to be 1. Both axes forms are read (`axes` attribute before
//! opset 13, input from 13). Subgraphs included.
//!
//! **Why:** exporters reshape step by step (`[N,C,H,W] → [N,C,HW] → [N,HW,C]`
//! around a Transpose, Flatten then Reshape before a MatMul, Unsqueeze then
//! Squeeze around a 4-D-only op); each step is a node, and in ONNX Runtime
//! often a copy. Only the last shape matters, as the data order never changes.
//!
//! ```text
//! a = Reshape(x: f32[2,3,4], [6, 4])            y = Reshape(x, [6, 2, -1])
//! y = Reshape(a, [0, 2, -1])              →
//!
//! a = Unsqueeze(x, [0])                         (uses of y use x)
//! y = Squeeze(a, [0])                     →
//! ```
//! A `0` in the outer shape copies a dim of the *intermediate* value; it is
//! rewritten to that dim when the inner shape gives it as a literal, kept
//! when the inner shape also copied it from `x`, and taken from the
//! intermediate's known type otherwise; when none of these says, the chain
//! stays. (`-1` needs nothing: the element count is the same.) An
//! Unsqueeze/Squeeze's dims are read from its known type only. With
//! `allowzero=1` a 0 is a literal 0 and is kept. Above, the intermediate's dim
//! 0 is the literal 6.
//! A Flatten of a reshaped value becomes `Reshape(x, [P, -1])` (or
//! `[-1, Q]`) when the product `P` of the leading (`Q` of the trailing)
//! intermediate dims is known.
//!
//! **Examples that run:** `passes/testdata/fuse-reshape/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext, Src};
use crate::ir::{Attribute, Graph, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::toolkit::{pair, Pair};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-reshape",
    "collapse Reshape/Flatten chains and cancelling Squeeze/Unsqueeze pairs",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Reshape", "reshape-of-reshape", reshape_of_reshape),
    Rule::on("Flatten", "flatten-of-reshape", flatten_of_reshape),
    Rule::on("Squeeze", "squeeze-unsqueeze", squeeze_unsqueeze),
    Rule::on("Unsqueeze", "unsqueeze-squeeze", unsqueeze_squeeze),
    Rule::on("Unsqueeze", "unsqueeze-of-reshape", squeeze_of_reshape),
    Rule::on("Squeeze", "squeeze-of-reshape", squeeze_of_reshape),
];

fn const_ints(g: &Graph, outlet: Option<Outlet>) -> Option<Vec<i64>> {
    g.const_tensor(outlet?)?.to_i64().ok()
}

/// A shape-only producer whose output has the same elements, in the same
/// order, as its input `x`.
enum Inner {
    /// `Reshape(x, shape)`, `shape` constant.
    Reshape { shape: Vec<i64>, allowzero: bool },
    /// `Flatten(x, axis)`: `[prod(x[..axis]), prod(x[axis..])]`.
    Flatten { axis: i64 },
    /// `Unsqueeze` or `Squeeze` of x, whose output has rank `rank` when
    /// known: its dims are read from its known type only.
    Squeeze { rank: Option<usize> },
}

impl Inner {
    /// The shape-only producer `mid` of node `id`'s first input, what it
    /// does, and its input `x`: `(inner, mid, x)`.
    fn below(g: &Graph, id: NodeId) -> Option<(Inner, Outlet, Outlet)> {
        let mid = g.input(id, 0)?;
        let op = g.op(mid.node)?;
        let x = g.input(mid.node, 0)?;
        let inner = if op.is("Reshape") {
            Inner::Reshape {
                shape: const_ints(g, g.input(mid.node, 1))?,
                allowzero: op.attr_int("allowzero", 0) == 1,
            }
        } else if op.is("Flatten") {
            Inner::Flatten {
                axis: op.attr_int("axis", 1),
            }
        } else if op.is("Unsqueeze") || op.is("Squeeze") {
            Inner::Squeeze {
                rank: g.known_rank(mid),
            }
        } else {
            return None;
        };
        Some((inner, mid, x))
    }

    fn rank(&self) -> Option<usize> {
        match self {
            Inner::Reshape { shape, .. } => Some(shape.len()),
            Inner::Flatten { .. } => Some(2),
            Inner::Squeeze { rank } => *rank,
        }
    }

    /// Dim `i` of the intermediate value `mid`, when something says it:
    /// a literal of the shape, else the known type of `mid`, else (for a
    /// copying 0 of the shape, or a Flatten) the known dims of `x`.
    fn dim(&self, g: &Graph, x: Outlet, mid: Outlet, i: usize) -> Option<i64> {
        if let Inner::Reshape { shape, .. } = self {
            if shape.get(i).is_some_and(|&s| s > 0) {
                return Some(shape[i]);
            }
        }
        if let Some(d) = g.known_dims(mid).and_then(|d| d.get(i).copied().flatten()) {
            return Some(d);
        }
        let xd = g.known_dims(x)?;
        match self {
            Inner::Reshape { shape, allowzero } => {
                (shape.get(i) == Some(&0) && !allowzero).then(|| xd.get(i).copied().flatten())?
            }
            Inner::Flatten { axis } => {
                let axis = if *axis < 0 {
                    axis + xd.len() as i64
                } else {
                    *axis
                };
                let axis = usize::try_from(axis).ok().filter(|&a| a <= xd.len())?;
                let part = if i == 0 { &xd[..axis] } else { &xd[axis..] };
                part.iter().copied().product::<Option<i64>>()
            }
            Inner::Squeeze { .. } => None,
        }
    }

    /// Does a copying 0 at position `i` mean the same for `x` as for `mid`?
    /// (The inner shape copied `x`'s dim `i` itself.)
    fn copies_x(&self, i: usize) -> bool {
        matches!(self, Inner::Reshape { shape, allowzero: false } if shape.get(i) == Some(&0))
    }
}

/// `Reshape(R(x), s) = Reshape(x, s')` for `R` a Reshape or Flatten: both
/// keep the element order, so only the last shape matters. `s'` is `s` with
/// each copying 0 made explicit: the intermediate's dim, or left 0 when that
/// dim was itself copied from `x`.
fn reshape_of_reshape(
    _: &RuleContext,
    g: &Graph,
    id: NodeId,
    op: &Operator,
) -> Result<Option<Patch>> {
    let Some((inner, mid, x)) = Inner::below(g, id) else {
        return Ok(None);
    };
    let Some(shape_in) = g.input(id, 1) else {
        return Ok(None);
    };
    let Some(shape) = const_ints(g, Some(shape_in)) else {
        return Ok(None);
    };
    let allowzero = op.attr_int("allowzero", 0) == 1;
    let mut resolved = shape.clone();
    for (i, s) in resolved.iter_mut().enumerate() {
        if *s != 0 || allowzero || inner.copies_x(i) {
            continue;
        }
        match inner.dim(g, x, mid, i) {
            Some(d) if d > 0 => *s = d,
            _ => return Ok(None),
        }
    }
    let mut patch = Patch::new("");
    patch.skip_inner(g, id, mid, x);
    if resolved != shape {
        let name = format!("{}.fused", g.outlet_name(shape_in));
        let dims = vec![resolved.len() as i64];
        let c = patch.add_const(&name, Tensor::from_i64(dims, &resolved));
        patch.rewire(id, 1, Some(c));
    }
    Ok(Some(patch))
}

/// `Flatten(R(x), 0) = Flatten(x, 0)` (both `[1, n]`);
/// `Flatten(Flatten(x, a), 1) = Flatten(x, a)` (a 2-D value flattens to itself);
/// otherwise `Flatten(R(x), k) = Reshape(x, [P, -1])` with `P` the product
/// of the intermediate's first `k` dims, or `Reshape(x, [-1, Q])` with `Q`
/// the product of the rest, when known and positive.
fn flatten_of_reshape(
    ctx: &RuleContext,
    g: &Graph,
    id: NodeId,
    op: &Operator,
) -> Result<Option<Patch>> {
    let Some((inner, mid, x)) = Inner::below(g, id) else {
        return Ok(None);
    };
    let Some(rank) = inner.rank() else {
        return Ok(None);
    };
    let axis = op.attr_int("axis", 1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    let Some(axis) = usize::try_from(axis).ok().filter(|&a| a <= rank) else {
        return Ok(None);
    };
    let mut patch = Patch::new("");
    match (&inner, axis) {
        (_, 0) => {
            let mut op = op.clone();
            op.set_attr(Attribute::int("axis", 0));
            patch.update(id, op);
            patch.rewire(id, 0, Some(x.into()));
        }
        (Inner::Flatten { .. }, 1) => return Ok(Patch::bypass(g, id, mid)),
        _ => {
            // Reshape with a shape input exists from opset 5.
            if ctx.opset < 5 {
                return Ok(None);
            }
            let product = |range: std::ops::Range<usize>| -> Option<i64> {
                range
                    .map(|i| inner.dim(g, x, mid, i))
                    .product::<Option<i64>>()
                    .filter(|&p| p > 0)
            };
            let shape = match (product(0..axis), product(axis..rank)) {
                (Some(p), _) => [p, -1],
                (None, Some(q)) => [-1, q],
                (None, None) => return Ok(None),
            };
            replace_by_reshape(&mut patch, g, id, x, &shape, vec![]);
        }
    }
    if g.sole_user(mid).is_some() {
        patch.remove(mid.node);
    }
    Ok(Some(patch))
}

/// The `axes` of a Squeeze/Unsqueeze: the attribute (opset < 13) or the
/// constant second input (opset ≥ 13). `Some(None)`: no axes given;
/// `None`: axes not known.
fn axes(g: &Graph, id: NodeId) -> Option<Option<Vec<i64>>> {
    let op = g.op(id)?;
    if let Some(a) = op.attr_ints("axes") {
        return Some(Some(a.to_vec()));
    }
    match g.input(id, 1) {
        None => Some(None),
        Some(o) => const_ints(g, Some(o)).map(Some),
    }
}

/// `axes` as a sorted set of non-negative axes of a rank-`rank` tensor;
/// `None` when out of range, repeated, or negative with `rank` unknown.
fn normalized(axes: &[i64], rank: Option<usize>) -> Option<Vec<usize>> {
    let mut out = axes
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + rank? as i64 } else { a };
            usize::try_from(a)
                .ok()
                .filter(|&a| rank.is_none_or(|r| a < r))
        })
        .collect::<Option<Vec<usize>>>()?;
    out.sort_unstable();
    let n = out.len();
    out.dedup();
    (out.len() == n).then_some(out)
}

/// `Squeeze(Unsqueeze(x, a), a) = x`: the inserted dims are 1 and are
/// removed again. Axes of both refer to the same rank, `rank(x) + |a|`.
fn squeeze_unsqueeze(
    _: &RuleContext,
    g: &Graph,
    id: NodeId,
    _: &Operator,
) -> Result<Option<Patch>> {
    let Some(Pair { mid, x, .. }) = pair(g, id, "Unsqueeze") else {
        return Ok(None);
    };
    let (Some(Some(sq)), Some(Some(unsq))) = (axes(g, id), axes(g, mid.node)) else {
        return Ok(None);
    };
    let rank = g.known_dims(x).map(|d| d.len() + unsq.len());
    let (Some(sq), Some(unsq)) = (normalized(&sq, rank), normalized(&unsq, rank)) else {
        return Ok(None);
    };
    Ok((sq == unsq)
        .then(|| Patch::collapse_pair(g, id, mid, x))
        .flatten())
}

/// `Unsqueeze(Squeeze(x, a), a) = x` when `x`'s dims at `a` are 1 (known,
/// not just promised by the model being valid). Without axes, Squeeze
/// removes every dim that is 1, so every dim of `x` must then be known.
fn unsqueeze_squeeze(
    _: &RuleContext,
    g: &Graph,
    id: NodeId,
    _: &Operator,
) -> Result<Option<Patch>> {
    let Some(Pair { mid, x, .. }) = pair(g, id, "Squeeze") else {
        return Ok(None);
    };
    let (Some(sq), Some(Some(unsq))) = (axes(g, mid.node), axes(g, id)) else {
        return Ok(None);
    };
    let Some(xd) = g.known_dims(x) else {
        return Ok(None);
    };
    let sq = match sq {
        Some(sq) => normalized(&sq, Some(xd.len())),
        None if xd.iter().all(Option::is_some) => {
            Some((0..xd.len()).filter(|&i| xd[i] == Some(1)).collect())
        }
        None => None,
    };
    let (Some(sq), Some(unsq)) = (sq, normalized(&unsq, Some(xd.len()))) else {
        return Ok(None);
    };
    let ones = sq.iter().all(|&i| xd[i] == Some(1));
    Ok((ones && sq == unsq)
        .then(|| Patch::collapse_pair(g, id, mid, x))
        .flatten())
}

/// `Unsqueeze(Reshape(x, s), a) = Reshape(x, s')` with `s'` = `s` with a 1
/// inserted at each axis of `a`; `Squeeze(Reshape(x, s), a) = Reshape(x,
/// s')` with the axes of `a` taken out of `s`, each a literal 1 there. `s`
/// constant, without a copying 0 (which would copy another dim of `x`
/// once moved; with `allowzero=1` a 0 is a literal and moves freely).
fn squeeze_of_reshape(
    ctx: &RuleContext,
    g: &Graph,
    id: NodeId,
    op: &Operator,
) -> Result<Option<Patch>> {
    let Some(Pair { mid, x, inner }) = pair(g, id, "Reshape") else {
        return Ok(None);
    };
    let Some(shape) = const_ints(g, g.input(mid.node, 1)) else {
        return Ok(None);
    };
    let allowzero = inner.attr_int("allowzero", 0) == 1;
    if ctx.opset < 5 || (!allowzero && shape.contains(&0)) {
        return Ok(None);
    }
    let Some(Some(axes)) = axes(g, id) else {
        return Ok(None);
    };
    let unsqueeze = op.is("Unsqueeze");
    let rank = shape.len() + if unsqueeze { axes.len() } else { 0 };
    let Some(axes) = normalized(&axes, Some(rank)) else {
        return Ok(None);
    };
    let new_shape: Vec<i64> = if unsqueeze {
        let mut rest = shape.iter();
        let inserted = (0..rank)
            .map(|i| {
                if axes.contains(&i) {
                    Some(1)
                } else {
                    rest.next().copied()
                }
            })
            .collect::<Option<Vec<i64>>>();
        let Some(inserted) = inserted else {
            return Ok(None);
        };
        inserted
    } else {
        if axes.iter().any(|&a| shape[a] != 1) {
            return Ok(None);
        }
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .collect()
    };
    let mut patch = Patch::new("");
    replace_by_reshape(&mut patch, g, id, x, &new_shape, inner.attributes.clone());
    if g.sole_user(mid).is_some() {
        patch.remove(mid.node);
    }
    Ok(Some(patch))
}

/// Replaces node `id` by `Reshape(x, shape)` (with `attributes`), which
/// takes its name and its output's.
fn replace_by_reshape(
    patch: &mut Patch,
    g: &Graph,
    id: NodeId,
    x: Outlet,
    shape: &[i64],
    attributes: Vec<Attribute>,
) {
    let out = Outlet::new(id, 0);
    let name = g.outlet_name(out).to_string();
    let dims = vec![shape.len() as i64];
    let c = patch.add_const(&format!("{name}.shape"), Tensor::from_i64(dims, shape));
    let reshape = Operator::new("Reshape", 2, attributes);
    let node = g.node(id).name.clone();
    let r = patch.add_op(node, reshape, vec![Some(x.into()), Some(c)], &[&name]);
    patch.shunt(out, Src::New { index: r, slot: 0 });
    patch.remove(id);
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{
        diff::model_diff, Attribute, DataType, Model, Outlet, Tensor, TypeInfo, ValueInfo,
    };
    use crate::passes::testing::{check, op_types, rewrite};

    const PASS: &str = "fuse-reshape";

    fn shape(b: &mut ModelBuilder, name: &str, s: &[i64]) -> Outlet {
        b.init(name, Tensor::from_i64(vec![s.len() as i64], s))
    }

    fn unchanged(m: &Model) {
        assert_eq!(model_diff(m, &rewrite(m, PASS)), "no change\n");
    }

    /// x: f32[2,3,4] → Reshape(s1) → Reshape(s2) → Relu → y.
    /// tf2onnx before a 1-D Conv: x: f32[2, 12] → Reshape [-1, 12, 1] →
    /// Unsqueeze [-3] → Reshape `s` → Relu.
    fn tf2onnx_conv1d(s: &[i64]) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 12]);
        let s1 = shape(&mut b, "s1", &[-1, 12, 1]);
        let a = b.op("Reshape", &[x, s1], vec![], "a");
        let axes = shape(&mut b, "axes", &[-3]);
        let u = b.op("Unsqueeze", &[a, axes], vec![], "u");
        let s2 = shape(&mut b, "s2", s);
        let r = b.op("Reshape", &[u, s2], vec![], "r");
        let y = b.op("Relu", &[r], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn reshape_of_unsqueeze_of_reshape() {
        let m = tf2onnx_conv1d(&[-1, 1, 1, 12]);
        let after = check("fuse-reshape__unsqueeze-chain", &m, &format!("{PASS},dce"));
        assert_eq!(op_types(&after), ["Reshape", "Relu"]);
        // A copying 0 needs the Unsqueeze's dims, which no type says here:
        // only the Unsqueeze joins the first Reshape.
        let after = rewrite(&tf2onnx_conv1d(&[0, 1, 1, 12]), PASS);
        assert_eq!(op_types(&after), ["Reshape", "Reshape", "Relu"]);
    }

    #[test]
    fn squeeze_of_reshape_is_one_reshape() {
        // Reshape [-1, 12] → Unsqueeze [-1] = Reshape [-1, 12, 1]; then a
        // Squeeze of axis 2 (a literal 1) = Reshape [-1, 12].
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s = shape(&mut b, "s", &[-1, 12]);
        let a = b.op("Reshape", &[x, s], vec![], "a");
        let axes = shape(&mut b, "axes", &[-1]);
        let u = b.op("Unsqueeze", &[a, axes], vec![], "u");
        let y = b.op("Relu", &[u], vec![], "y");
        let two = shape(&mut b, "two", &[2]);
        let q = b.op("Squeeze", &[u, two], vec![], "q");
        b.output(y, DataType::FLOAT);
        b.output(q, DataType::FLOAT);
        let model = b.build().unwrap();
        let after = check(
            "fuse-reshape__squeeze-of-reshape",
            &model,
            &format!("{PASS},dce"),
        );
        assert_eq!(op_types(&after), ["Reshape", "Reshape", "Relu"]);
    }

    fn reshapes(s1: &[i64], s2: &[i64]) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s1 = shape(&mut b, "s1", s1);
        let a = b.op("Reshape", &[x, s1], vec![], "a");
        let s2 = shape(&mut b, "s2", s2);
        let r = b.op("Reshape", &[a, s2], vec![], "r");
        let y = b.op("Relu", &[r], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn reshape_of_reshape() {
        // 0 copies the intermediate's literal 6; -1 needs nothing.
        let after = check(
            "fuse-reshape__reshape-reshape",
            &reshapes(&[6, 4], &[0, 2, -1]),
            PASS,
        );
        assert_eq!(after.graph.op_count(), 2);
        // 0 in both copies x's dim 0 and stays 0.
        let after = check(
            "fuse-reshape__reshape-reshape-copy",
            &reshapes(&[0, 12], &[0, -1, 3]),
            PASS,
        );
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn zero_of_unknown_intermediate_dim_stays() {
        // a = Reshape(x, [-1, 4]): its dim 0 is not known without types.
        unchanged(&reshapes(&[-1, 4], &[0, 2, 2]));
        // Known from the intermediate's type (as infer-shapes records it), it fuses.
        let mut m = reshapes(&[-1, 4], &[0, 2, 2]);
        let a = m.graph.find_value("a").unwrap();
        m.graph.node_mut(a.node).outputs[0].info = Some(ValueInfo {
            ty: Some(TypeInfo::tensor(DataType::FLOAT, &[6, 4])),
            ..ValueInfo::default()
        });
        let after = check("fuse-reshape__reshape-reshape-typed", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn reshape_shared_inner_stays() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s1 = shape(&mut b, "s1", &[6, 4]);
        let a = b.op("Reshape", &[x, s1], vec![], "a");
        let s2 = shape(&mut b, "s2", &[4, 6]);
        let r = b.op("Reshape", &[a, s2], vec![], "r");
        let n = b.op("Neg", &[a], vec![], "n");
        b.output(r, DataType::FLOAT);
        b.output(n, DataType::FLOAT);
        let after = check("fuse-reshape__shared-inner", &b.build().unwrap(), PASS);
        assert_eq!(after.graph.op_count(), 3);
    }

    #[test]
    fn flatten_chains() {
        // Reshape(Flatten(x, 2)): the 0 is Flatten's leading dim 2·3 = 6.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let f = b.op("Flatten", &[x], vec![Attribute::int("axis", 2)], "f");
        let s = shape(&mut b, "s", &[0, 2, 2]);
        let r = b.op("Reshape", &[f, s], vec![], "r");
        b.output(r, DataType::FLOAT);
        let after = check("fuse-reshape__flatten-reshape", &b.build().unwrap(), PASS);
        assert_eq!(after.graph.op_count(), 1);

        // Flatten(Reshape(x, [4, 3, 2]), 1) = Reshape(x, [4, -1]).
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s = shape(&mut b, "s", &[4, 3, 2]);
        let r = b.op("Reshape", &[x, s], vec![], "r");
        let f = b.op("Flatten", &[r], vec![], "f");
        let y = b.op("Relu", &[f], vec![], "y");
        b.output(y, DataType::FLOAT);
        let after = check("fuse-reshape__reshape-flatten", &b.build().unwrap(), PASS);
        assert_eq!(after.graph.op_count(), 2);

        // Flatten(Flatten(x, 2), 1) = Flatten(x, 2).
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let f = b.op("Flatten", &[x], vec![Attribute::int("axis", 2)], "f");
        let g = b.op("Flatten", &[f], vec![], "g");
        let y = b.op("Relu", &[g], vec![], "y");
        b.output(y, DataType::FLOAT);
        let after = check("fuse-reshape__flatten-flatten", &b.build().unwrap(), PASS);
        assert_eq!(after.graph.op_count(), 2);
    }

    /// x: f32[dims] → `first`(axes) → `second`(axes) → Relu → y, axes as
    /// attributes before opset 13 and as inputs from 13.
    fn pair(opset: i64, dims: &[i64], first: &str, second: &str, axes: &[i64]) -> Model {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, dims);
        let op = |b: &mut ModelBuilder, ty: &str, input, out: &str| {
            if opset < 13 {
                b.op(ty, &[input], vec![Attribute::ints("axes", axes)], out)
            } else {
                let a = shape(b, &format!("{out}.axes"), axes);
                b.op(ty, &[input, a], vec![], out)
            }
        };
        let a = op(&mut b, first, x, "a");
        let s = op(&mut b, second, a, "s");
        let y = b.op("Relu", &[s], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn squeeze_of_unsqueeze_vanishes() {
        for opset in [11, 13] {
            let m = pair(opset, &[2, 3], "Unsqueeze", "Squeeze", &[0, -1]);
            let name = format!("fuse-reshape__squeeze-unsqueeze-opset{opset}");
            assert_eq!(check(&name, &m, PASS).graph.op_count(), 1);
        }
    }

    #[test]
    fn unsqueeze_of_squeeze_needs_known_ones() {
        for opset in [11, 13] {
            let m = pair(opset, &[1, 3, 1], "Squeeze", "Unsqueeze", &[0, 2]);
            let name = format!("fuse-reshape__unsqueeze-squeeze-opset{opset}");
            assert_eq!(check(&name, &m, PASS).graph.op_count(), 1);
        }
    }
}
