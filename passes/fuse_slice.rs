//! # fuse-slice
//!
//! **What:** merges `Slice(Slice(x))` into one Slice of `x` when both have
//! constant starts, ends, axes and steps (inputs from opset 10, attributes
//! before). Axes only one of them slices are concatenated, whatever their
//! bounds and steps; an axis both slice is merged when both steps are 1 and
//! `x`'s dim there is known (bounds are then normalised to plain offsets).
//! An inner Slice used elsewhere stays; the outer one reads `x`. Subgraphs
//! included.
//!
//! **Why:** exporters slice one axis at a time (PyTorch's `x[:, :129][..., 1:]`
//! is two Slices); each is a kernel and a copy in ONNX Runtime / TensorRT.
//!
//! ```text
//! a = Slice(x: [N,258,5], [0], [129], [1])         y = Slice(x, [0, 1], [129, INT_MAX], [1, 2], [1, 1])
//! y = Slice(a, [1], [INT_MAX], [2])           →
//! ```
//! Identities used: for disjoint axes, `Slice(Slice(x, A), B) = Slice(x, A ∪ B)`
//! (each axis is sliced by one of them, independently). For one axis of
//! length `d`, steps 1: the inner slice is `[s1, e1)` with both clamped to
//! `[0, d]` after adding `d` to a negative bound; the outer, on length
//! `l = max(e1 - s1, 0)`, is `[s2, e2)` likewise clamped to `[0, l]`; together
//! `[s1 + s2, s1 + max(s2, e2))`. Negative axes are normalised with `x`'s
//! rank, and the merge is skipped when it is unknown.
//!
//! **Examples that run:** `passes/testdata/fuse-slice/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::shape_value::clamp;
use crate::ir::{Attribute, Graph, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-slice",
    "merge Slice(Slice(x)) with constant parameters into one Slice",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[Rule::on("Slice", "slice-of-slice", slice_of_slice)];

/// One slice of one axis: `[start, end)` by `step`, as written.
#[derive(Clone, Copy, PartialEq, Debug)]
struct AxisSlice {
    axis: i64,
    start: i64,
    end: i64,
    step: i64,
}

/// A Slice's data input and constant parameters; `attrs`: the opset < 10
/// attribute form.
struct SliceParams {
    x: Outlet,
    axes: Vec<AxisSlice>,
    attrs: bool,
}

fn const_ints(g: &Graph, o: Option<Outlet>) -> Option<Vec<i64>> {
    let t = g.const_tensor(o?)?;
    (t.dims.len() == 1).then(|| t.to_i64().ok())?
}

impl SliceParams {
    fn of(g: &Graph, id: NodeId) -> Option<SliceParams> {
        let op = g.op(id)?;
        if !op.is("Slice") {
            return None;
        }
        let x = g.input(id, 0)?;
        let attrs = op.attr_ints("starts").is_some();
        let (starts, ends, axes, steps) = if attrs {
            let a = |n: &str| op.attr_ints(n).map(<[i64]>::to_vec);
            (a("starts")?, a("ends")?, a("axes"), None)
        } else {
            let opt = |slot| match g.input(id, slot) {
                None => Some(None),
                Some(o) => const_ints(g, Some(o)).map(Some),
            };
            let (s, e) = (
                const_ints(g, g.input(id, 1))?,
                const_ints(g, g.input(id, 2))?,
            );
            (s, e, opt(3)?, opt(4)?)
        };
        let n = starts.len();
        let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; n]);
        if ends.len() != n || axes.len() != n || steps.len() != n || steps.contains(&0) {
            return None;
        }
        let axes = (0..n)
            .map(|i| AxisSlice {
                axis: axes[i],
                start: starts[i],
                end: ends[i],
                step: steps[i],
            })
            .collect();
        Some(SliceParams { x, axes, attrs })
    }
}

/// The two slices of one axis of length `len` (steps 1) as one.
fn merge_axis(inner: AxisSlice, outer: AxisSlice, len: Option<i64>) -> Option<AxisSlice> {
    if inner.step != 1 || outer.step != 1 {
        return None;
    }
    let d = len?;
    let (s1, e1) = (clamp(inner.start, d), clamp(inner.end, d));
    let l = (e1 - s1).max(0);
    let (s2, e2) = (clamp(outer.start, l), clamp(outer.end, l));
    Some(AxisSlice {
        axis: inner.axis,
        start: s1 + s2,
        end: s1 + s2.max(e2),
        step: 1,
    })
}

/// `Slice(Slice(x, A), B) = Slice(x, A ∪ B)` for disjoint axes; an axis both
/// slice (steps 1, dim known) merges into one range.
fn slice_of_slice(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    let Some(outer) = SliceParams::of(g, id) else {
        return Ok(None);
    };
    let mid = outer.x;
    let Some(inner) = SliceParams::of(g, mid.node).filter(|_| mid.slot == 0) else {
        return Ok(None);
    };
    if inner.attrs != outer.attrs {
        return Ok(None);
    }
    let xd = g.known_dims(inner.x);
    let rank = xd.as_ref().map(|d| d.len() as i64);
    let norm = |a: &AxisSlice| -> Option<AxisSlice> {
        let axis = if a.axis < 0 { a.axis + rank? } else { a.axis };
        (axis >= 0 && rank.is_none_or(|r| axis < r)).then_some(AxisSlice { axis, ..*a })
    };
    let (Some(a), Some(b)) = (
        inner.axes.iter().map(norm).collect::<Option<Vec<_>>>(),
        outer.axes.iter().map(norm).collect::<Option<Vec<_>>>(),
    ) else {
        return Ok(None);
    };
    let mut merged = a.clone();
    for o in &b {
        match merged.iter().position(|m| m.axis == o.axis) {
            None => merged.push(*o),
            Some(k) => {
                let len = xd.as_ref().and_then(|d| d[o.axis as usize]);
                let Some(m) = merge_axis(merged[k], *o, len) else {
                    return Ok(None);
                };
                merged[k] = m;
            }
        }
    }
    let field = |f: fn(&AxisSlice) -> i64| merged.iter().map(f).collect::<Vec<i64>>();
    let (starts, ends, axes, steps) = (
        field(|a| a.start),
        field(|a| a.end),
        field(|a| a.axis),
        field(|a| a.step),
    );
    let mut patch = Patch::new("");
    let mut op = op.clone();
    if outer.attrs {
        op.set_attr(Attribute::ints("starts", &starts));
        op.set_attr(Attribute::ints("ends", &ends));
        op.set_attr(Attribute::ints("axes", &axes));
        patch.update(id, op);
    } else {
        op.arity = 5;
        patch.update(id, op);
        let name = g.outlet_name(Outlet::new(id, 0)).to_string();
        let n = vec![merged.len() as i64];
        for (slot, (part, v)) in [
            ("starts", &starts),
            ("ends", &ends),
            ("axes", &axes),
            ("steps", &steps),
        ]
        .into_iter()
        .enumerate()
        {
            let c = patch.add_const(&format!("{name}.{part}"), Tensor::from_i64(n.clone(), v));
            patch.rewire(id, slot + 1, Some(c));
        }
    }
    patch.skip_inner(g, id, mid, inner.x);
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::{merge_axis, AxisSlice};
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::check;

    const PASS: &str = "fuse-slice";
    const MAX: i64 = i64::MAX;

    fn ints(b: &mut ModelBuilder, name: &str, v: &[i64]) -> Outlet {
        b.init(name, Tensor::from_i64(vec![v.len() as i64], v))
    }

    /// `[starts, ends, axes, steps]` of one Slice (empty axes/steps: omitted).
    type Params<'a> = [&'a [i64]; 4];

    /// x: f32[dims] → Slice(p1) → Slice(p2) → Relu → y; `shared`: the inner
    /// slice is also a graph output.
    fn slices(opset: i64, dims: &[i64], p1: Params, p2: Params, shared: bool) -> Model {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, dims);
        let slice = |b: &mut ModelBuilder, input, p: Params, out: &str| {
            if opset < 10 {
                let mut attrs = vec![
                    Attribute::ints("starts", p[0]),
                    Attribute::ints("ends", p[1]),
                ];
                if !p[2].is_empty() {
                    attrs.push(Attribute::ints("axes", p[2]));
                }
                return b.op("Slice", &[input], attrs, out);
            }
            let mut inputs = vec![input];
            for (k, part) in p.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
                inputs.push(ints(b, &format!("{out}.{k}"), part));
            }
            b.op("Slice", &inputs, vec![], out)
        };
        let a = slice(&mut b, x, p1, "a");
        let s = slice(&mut b, a, p2, "s");
        let y = b.op("Relu", &[s], vec![], "y");
        b.output(y, DataType::FLOAT);
        if shared {
            b.output(a, DataType::FLOAT);
        }
        b.build().unwrap()
    }

    #[test]
    fn disjoint_axes_concatenate() {
        // The silero STFT: [0:129] on axis 1, then [1:] on axis 2.
        let m = slices(
            13,
            &[2, 258, 5],
            [&[0], &[129], &[1], &[1]],
            [&[1], &[MAX], &[2], &[1]],
            false,
        );
        let after = check("fuse-slice__disjoint", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
        // Negative axis, bounds and a step -2 on another axis: no dims needed.
        let m = slices(
            13,
            &[2, 6, 5],
            [&[-1], &[-7], &[-2], &[-2]],
            [&[1], &[MAX], &[-1], &[]],
            false,
        );
        let after = check("fuse-slice__disjoint-negative", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
        // Attribute form (opset 9), axes omitted in the inner one (all of
        // them); axis 1 is in both: [0, 6) then [2, -1) → [2, 5).
        let m = slices(
            9,
            &[4, 6],
            [&[1, 0], &[3, 6], &[], &[]],
            [&[2], &[-1], &[1], &[]],
            false,
        );
        let after = check("fuse-slice__disjoint-opset9", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn same_axis_merges_with_known_dim() {
        // [1:-1] then [-3:MAX] on a dim of 10: [1, 9), then [5, 8) of its 8 → [6, 9).
        let m = slices(
            13,
            &[10, 3],
            [&[1], &[-1], &[0], &[]],
            [&[-3], &[MAX], &[0], &[]],
            false,
        );
        let after = check("fuse-slice__same-axis", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
        // Outer beyond the inner's length: empty, and still exact.
        let m = slices(
            13,
            &[10, 3],
            [&[2], &[4], &[0], &[]],
            [&[5], &[7], &[0], &[]],
            false,
        );
        assert_eq!(
            check("fuse-slice__same-axis-empty", &m, PASS)
                .graph
                .op_count(),
            2
        );
    }

    #[test]
    fn merge_axis_arithmetic() {
        let a = |start, end| AxisSlice {
            axis: 0,
            start,
            end,
            step: 1,
        };
        assert_eq!(merge_axis(a(1, -1), a(-3, MAX), Some(10)), Some(a(6, 9)));
        assert_eq!(merge_axis(a(-100, 100), a(2, -2), Some(10)), Some(a(2, 8)));
        assert_eq!(
            merge_axis(a(i64::MIN, MAX), a(i64::MIN, 3), Some(10)),
            Some(a(0, 3))
        );
        // Empty inner: anything after it is empty.
        assert_eq!(merge_axis(a(6, 2), a(0, 5), Some(10)), Some(a(6, 6)));
        assert_eq!(merge_axis(a(1, 5), a(0, 5), None), None);
    }

    #[test]
    fn shared_inner_is_kept() {
        let m = slices(
            13,
            &[2, 8, 5],
            [&[0], &[4], &[1], &[]],
            [&[1], &[3], &[2], &[]],
            true,
        );
        let after = check("fuse-slice__shared-inner", &m, PASS);
        assert_eq!(after.graph.op_count(), 3);
    }
}
