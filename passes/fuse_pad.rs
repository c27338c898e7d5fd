//! # fuse-pad
//!
//! **What:** a zero `Pad` of the spatial axes feeding a `Conv` becomes part
//! of the Conv's own `pads`; likewise for `AveragePool` when it counts
//! padding in its divisor (`count_include_pad=1`). Both Pad forms are read:
//! `pads`/`value` attributes (opset < 11) and `pads`/`constant_value`/`axes`
//! inputs (opset ≥ 11, `axes` from 18). Subgraphs included.
//!
//! **Why:** exporters from frameworks with asymmetric or "same" padding
//! (TensorFlow, Paddle) emit an explicit Pad before the Conv; as a separate
//! node it is a full copy of the activation, while the Conv pads for free.
//!
//! ```text
//! p = Pad(x, [0,0,1,2, 0,0,1,2])                y = Conv(x, w) {pads=[1,3,1,3]}
//! y = Conv(p, w) {pads=[0,1,0,1]}         →
//! ```
//! Fused only when: mode is `constant` and the value is 0 (or absent); the
//! batch and channel axes are not padded and no amount is negative (a
//! crop); the Pad's output has no other use; the consumer's `auto_pad` is
//! `NOTSET`. `MaxPool` is never fused (it pads with -∞, not 0), nor is an
//! AveragePool that leaves padding out of its divisor.
//!
//! **Examples that run:** `passes/testdata/fuse-pad/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{AttrValue, Attribute, Graph, NodeId, Operator, Outlet, Patch, TypeKind};
use crate::passes::{PassInfo, RulePass};
use anyhow::{anyhow, Context, Result};

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-pad",
    "fold a zero Pad into the following Conv's (or AveragePool's) pads",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Conv", "pad-conv", pad_conv),
    Rule::on("AveragePool", "pad-avgpool", pad_avgpool),
];

fn const_ints(g: &Graph, outlet: Option<Outlet>) -> Option<Vec<i64>> {
    g.const_tensor(outlet?)?.to_i64().ok()
}

fn rank_of(g: &Graph, outlet: Outlet) -> Option<usize> {
    match g.known_type(outlet)?.kind {
        TypeKind::Tensor {
            shape: Some(dims), ..
        } => Some(dims.len()),
        _ => None,
    }
}

/// The pads a zero, constant-mode Pad adds to each axis of a tensor of rank
/// `rank`, as `[begin_0.., end_0..]`; `None` when the Pad is not that.
fn zero_pads(g: &Graph, pad: NodeId, rank: usize) -> Option<Vec<i64>> {
    let op = g.op(pad)?;
    let mode = match op.attr("mode").map(|a| &a.value) {
        None => "constant".to_string(),
        Some(AttrValue::String(s)) => String::from_utf8_lossy(s).into_owned(),
        Some(_) => return None,
    };
    if mode != "constant" {
        return None;
    }
    let inputs = g.inputs(pad);
    let (pads, zero) = if let Some(pads) = op.attr_ints("pads") {
        // Pad-2: attributes. (Pad-1's `paddings` is not read.)
        (pads.to_vec(), op.attr_float("value", 0.0) == 0.0)
    } else {
        let pads = const_ints(g, inputs.get(1).copied().flatten())?;
        let zero = match inputs.get(2).copied().flatten() {
            None => true,
            Some(v) => {
                let t = g.const_tensor(v)?;
                // An integer zero or a float zero (-0 included: a Conv sums
                // from +0, and +0 + -0 = +0).
                t.numel() <= 1
                    && match t.dtype.is_float() {
                        true => t.to_f32().ok()?.iter().all(|&v| v == 0.0),
                        false => t.to_i64().ok()?.iter().all(|&v| v == 0),
                    }
            }
        };
        match inputs.get(3).copied().flatten() {
            None => (pads, zero),
            Some(axes) => {
                // Pad-18: pads for the listed axes only.
                let axes = const_ints(g, Some(axes))?;
                if pads.len() != 2 * axes.len() {
                    return None;
                }
                let mut full = vec![0; 2 * rank];
                for (k, &a) in axes.iter().enumerate() {
                    let a = if a < 0 { a + rank as i64 } else { a };
                    let a = usize::try_from(a).ok().filter(|&a| a < rank)?;
                    full[a] = pads[k];
                    full[rank + a] = pads[axes.len() + k];
                }
                (full, zero)
            }
        }
    };
    (zero && pads.len() == 2 * rank).then_some(pads)
}

/// Adds the spatial part of `pads` (full-rank Pad amounts) to the `pads`
/// attribute of `op`, a Conv or AveragePool over input rank `rank`. `None`
/// when the batch or channel axis is padded, an amount is negative, or the
/// consumer chooses its own padding (`auto_pad`); an error when a sum
/// overflows (amounts from the file, unbounded).
fn merged(op: &Operator, pads: &[i64], rank: usize) -> Option<Result<Operator>> {
    let auto_pad = match op.attr("auto_pad").map(|a| &a.value) {
        None => true,
        Some(AttrValue::String(s)) => s.as_ref() == b"NOTSET",
        Some(_) => false,
    };
    let spatial = rank.checked_sub(2).filter(|&s| s > 0)?;
    let [n0, c0] = [pads[0], pads[1]];
    let [n1, c1] = [pads[rank], pads[rank + 1]];
    if !auto_pad || [n0, c0, n1, c1] != [0; 4] || pads.iter().any(|&p| p < 0) {
        return None;
    }
    let own = match op.attr_ints("pads") {
        Some(p) if p.len() == 2 * spatial => p.to_vec(),
        Some(_) => return None,
        None => vec![0; 2 * spatial],
    };
    let new: Option<Vec<i64>> = (0..2 * spatial)
        .map(|i| {
            let (side, axis) = (i / spatial, i % spatial);
            own[i].checked_add(pads[side * rank + 2 + axis])
        })
        .collect();
    let Some(new) = new else {
        return Some(Err(anyhow!(
            "pads {own:?} plus the Pad's {pads:?} overflow 64 bits"
        )));
    };
    let mut op = op.clone();
    op.set_attr(Attribute::ints("pads", &new));
    Some(Ok(op))
}

/// The fusion for a consumer `id` (already known to be a Conv, or an
/// AveragePool counting padding) reading a Pad on its data input.
fn fuse_into(g: &Graph, id: NodeId, rank_hint: Option<usize>) -> Result<Option<Patch>> {
    let merge = || -> Option<(Result<Operator>, Outlet, Outlet)> {
        let op = g.op(id)?;
        let mid = g.input(id, 0)?;
        if !g.op(mid.node)?.is("Pad") || g.consumers(mid) != [(id, 0)] || g.is_graph_output(mid) {
            return None;
        }
        let x = g.input(mid.node, 0)?;
        let rank = rank_hint
            .or_else(|| rank_of(g, x))
            .or_else(|| rank_of(g, mid))?;
        let pads = zero_pads(g, mid.node, rank)?;
        Some((merged(op, &pads, rank)?, mid, x))
    };
    let Some((op, mid, x)) = merge() else {
        return Ok(None);
    };
    let op = op.with_context(|| format!("node {}", g.node(id).label()))?;
    let mut patch = Patch::new("");
    patch.update(id, op);
    patch.rewire(id, 0, Some(x.into()));
    patch.remove(mid.node);
    Ok(Some(patch))
}

/// `Conv(Pad(x, p, 0), w) {pads=q} = Conv(x, w) {pads=q+p}` when `p` pads
/// only spatial axes, by non-negative amounts: Conv's own padding is zeros
/// around the input, so both read the same zero-extended input.
fn pad_conv(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    // The weight's rank is the input's, and is known far more often.
    let rank = g.input(id, 1).and_then(|w| rank_of(g, w));
    fuse_into(g, id, rank)
}

/// `AveragePool(Pad(x, p, 0)) {pads=q, count_include_pad=1} =
/// AveragePool(x) {pads=q+p, count_include_pad=1}`: padded zeros add nothing
/// to a window's sum and, counted in the divisor either way, the same to
/// its count. With `count_include_pad=0` the divisor would shrink.
fn pad_avgpool(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    if op.attr_int("count_include_pad", 0) != 1 {
        return Ok(None);
    }
    fuse_into(g, id, None)
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{AttrValue, Attribute, DataType, Model, Tensor};
    use crate::passes::testing::{check, rewrite_err};

    const PASS: &str = "fuse-pad";

    fn weights(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect()
    }

    fn string(name: &str, v: &str) -> Attribute {
        Attribute::new(name, AttrValue::String(v.as_bytes().to_vec().into()))
    }

    struct Case {
        opset: i64,
        pads: [i64; 8],
        value: f32,
        mode: &'static str,
        consumer: &'static str,
        attrs: Vec<Attribute>,
    }

    impl Default for Case {
        fn default() -> Case {
            Case {
                opset: 13,
                pads: [0, 0, 1, 2, 0, 0, 1, 2],
                value: 0.0,
                mode: "constant",
                consumer: "Conv",
                attrs: vec![Attribute::ints("pads", &[0, 1, 0, 1])],
            }
        }
    }

    /// x: f32[1,2,6,7] → Pad → Conv 3×3 (or the consumer) → y.
    fn model(c: Case) -> Model {
        let mut b = ModelBuilder::new(c.opset);
        let x = b.input("x", DataType::FLOAT, &[1, 2, 6, 7]);
        let mut pad_attrs = vec![string("mode", c.mode)];
        let p = if c.opset < 11 {
            pad_attrs.push(Attribute::ints("pads", &c.pads));
            pad_attrs.push(Attribute::float("value", c.value));
            b.op("Pad", &[x], pad_attrs, "p")
        } else {
            let pads = b.init("pads", Tensor::from_i64(vec![8], &c.pads));
            let v = b.init("value", Tensor::from_f32(vec![], &[c.value]));
            b.op("Pad", &[x, pads, v], pad_attrs, "p")
        };
        let y = if c.consumer == "Conv" {
            let w = b.init("w", Tensor::from_f32(vec![3, 2, 3, 3], &weights(54)));
            b.op("Conv", &[p, w], c.attrs, "y")
        } else {
            b.op(c.consumer, &[p], c.attrs, "y")
        };
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn into_conv_pads_opset13() {
        let after = check("fuse-pad__conv-opset13", &model(Case::default()), PASS);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn into_conv_pads_opset10_attributes() {
        let m = model(Case {
            opset: 10,
            ..Case::default()
        });
        let after = check("fuse-pad__conv-opset10", &m, PASS);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn into_conv_without_pads() {
        let m = model(Case {
            opset: 11,
            attrs: vec![Attribute::ints("strides", &[2, 2])],
            ..Case::default()
        });
        let after = check("fuse-pad__conv-strided", &m, PASS);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn into_average_pool_counting_pads() {
        let m = model(Case {
            consumer: "AveragePool",
            attrs: vec![
                Attribute::ints("kernel_shape", &[3, 3]),
                Attribute::int("count_include_pad", 1),
            ],
            ..Case::default()
        });
        let after = check("fuse-pad__avgpool", &m, PASS);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn pads_whose_sum_overflows_are_an_error_naming_the_node() {
        let m = model(Case {
            attrs: vec![Attribute::ints("pads", &[0, i64::MAX, 0, 1])],
            ..Case::default()
        });
        let e = rewrite_err(&m, PASS);
        assert!(e.contains("node y") && e.contains("overflow"), "{e}");
    }
}
