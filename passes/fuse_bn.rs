//! # fuse-bn
//!
//! **What:** folds an inference `BatchNormalization` (opset 7+, constant
//! scale, B, mean and var) into the weights and bias of the operator that
//! produces its input: `Conv` (grouped and depthwise included),
//! `ConvTranspose` (any group), `Gemm` (any `transB`, `alpha`, `beta`, and
//! bias `C` shape) and `MatMul` with a constant 2-D weight and an input of
//! known rank 2, which becomes a `Gemm` carrying the new bias. Subgraphs included.
//!
//! **Why:** exporters keep BatchNorm as its own node after every convolution;
//! at inference it is a per-channel affine map, so folded into the weights it
//! costs nothing, and ONNX Runtime / TensorRT run one kernel instead of two.
//!
//! ```text
//! y = Conv(x, w, b) {group=g}                 y = Conv(x, w', b') {group=g}
//! z = BatchNormalization(y, γ, β, μ, σ²)  →   (z's uses now read y)
//! ```
//! with `s = γ/√(σ²+ε)`, `w'[o] = w[o]·s[o]` for every output channel `o`,
//! and `b' = (b−μ)·s + β` (`b = 0` when the Conv has no bias). Arithmetic is
//! in f64, written as f32, so outputs change only by rounding.
//!
//! The BatchNorm is folded only when its input has no other use and is not a
//! graph output, its other outputs are unused, it is not in training mode
//! (`training_mode=1`) and is per-channel (`spatial=0` is left alone), and the
//! weights are f32 initializers. A weight initializer shared with another node
//! is copied, not changed. `MatMul` becomes `Gemm` rather than `MatMul + Add`:
//! the fold needs the rank to be 2 anyway (BatchNorm's channel axis is 1,
//! MatMul's output features are the last axis), and then one `Gemm` is one
//! node where the alternative is two. Initializers left unused are removed when
//! only the fused nodes used them.
//!
//! The parameters may also be `ConstantOfShape` of a constant shape (at most
//! 65536 elements, read without running it), and a Conv's weight
//! `ConstantOfShape(shape)` or `Expand(c, shape)` with `c` one value per
//! output channel: onnx's caffe2 test models compute every weight so, and
//! `fold-constants` leaves them computed rather than write megabytes of one
//! number into the file. The folded weight is then `Expand(c·s, shape)`,
//! never materialised: `w'[o] = c[o]·s[o]` over the whole of channel `o`,
//! the same numbers a materialised fold gives.
//!
//! The per-channel affine fold here (`fold_affine`) is shared with `fuse-bias`.
//!
//! **Examples that run:** `passes/testdata/fuse-bn/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::memo::TensorMemo;
use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{Graph, Model, NodeId, Operator, Outlet, Patch};
use crate::passes::toolkit::{remove_dead_consts, small_const, sole_use, Producer};
use crate::passes::{PassInfo, RulePass};
use crate::pipeline::Pass;
use anyhow::Result;
use std::sync::Arc;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-bn",
    "fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[Rule::on("BatchNormalization", "batchnorm", batchnorm)];

// BN(y) = s·(y − μ) + β = s·y + (β − μ·s), s = γ/√(σ²+ε), per channel (axis 1).
// With y = P(x) one of the producers of `fold_affine`, s·y + t = P'(x).
fn batchnorm(ctx: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    if ctx.opset < 7 {
        return Ok(None);
    }
    if op.attr_int("training_mode", 0) != 0 || op.attr_int("spatial", 1) == 0 {
        return Ok(None);
    }
    let node = g.node(id);
    if (1..node.outputs.len()).any(|slot| g.is_used(Outlet::new(id, slot))) {
        return Ok(None);
    }
    let Some(y) = g.input(id, 0) else {
        return Ok(None);
    };
    let Some(producer) = Producer::analyse(g, y.node, true) else {
        return Ok(None);
    };
    if !sole_use(g, y, id) {
        return Ok(None);
    }
    let channels = producer.channels;
    let params: Option<Vec<Vec<f64>>> = (1..5)
        .map(|slot| {
            let t = small_const(g, g.input(id, slot)?)?;
            let v = t.to_f32().ok()?;
            (v.len() == channels).then(|| v.into_iter().map(f64::from).collect())
        })
        .collect();
    let Some(params) = params else {
        return Ok(None);
    };
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let eps = f64::from(op.attr_float("epsilon", 1e-5));
    let s: Vec<f64> = (0..channels)
        .map(|c| gamma[c] / (var[c] + eps).sqrt())
        .collect();
    let t: Vec<f64> = (0..channels).map(|c| beta[c] - mean[c] * s[c]).collect();
    if s.iter().chain(&t).any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let mut patch = Patch::new("");
    producer.fold_affine(ctx, g, &mut patch, &s, &t);
    patch.shunt(Outlet::new(id, 0), y);
    patch.remove(id);
    remove_dead_consts(g, &mut patch, id);
    Ok(Some(patch))
}

/// Folding BatchNorm weights ahead of time. `fuse` knows the types only
/// once tract has inferred them, and `fuse-bn` runs after; meanwhile the
/// main thread waits. It spends the wait computing the folds `fuse-bn` will
/// most likely make (Conv producers need no types) into a memo it owns and
/// lends to its `fuse-bn` ([`with_memo`]); `fold_affine` then takes a kept
/// weight instead of computing it again. A scaled weight is a function of
/// the source weights, the producer kind and the scales, the memo's key, so
/// a kept fold is the one computed on time: the output does not depend on
/// what was kept (PP-OCRv4 rec: `fuse-bn` 0.8 ms → ~0.1 ms after the types
/// arrive).
///
/// Computes, one BatchNormalization of the main graph at a time while
/// `waiting()`, the folds `fuse-bn` would make on `model`, into `memo`
/// (kept only while the memo keeps).
pub(crate) fn fold_ahead(memo: &Arc<TensorMemo>, model: &Model, mut waiting: impl FnMut() -> bool) {
    let g = &model.graph;
    let mut ctx = RuleContext::for_model(model, None);
    ctx.memo = Some(memo.clone());
    for id in g.node_ids() {
        if !waiting() {
            return;
        }
        if let Some(op) = g.op(id).filter(|op| op.is("BatchNormalization")) {
            let _ = batchnorm(&ctx, g, id, op);
        }
    }
}

/// `fuse-bn` whose folds are taken from `memo` when kept there.
pub(crate) fn with_memo(memo: Arc<TensorMemo>) -> Box<dyn Pass> {
    RulePass::with_memo(RULES, "fused", memo)
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::check;
    use crate::passes::testing::{init, values};

    /// BatchNormalization over `c` channels with realistic statistics.
    fn bn(b: &mut ModelBuilder, y: Outlet, c: i64, eps: Option<f32>, seed: u64) -> Outlet {
        let n = c as usize;
        let mut t = |name: &str, lo, hi, k| {
            let v = values(seed * 10 + k, n, lo, hi);
            b.init(name, Tensor::from_f32(vec![c], &v))
        };
        let gamma = t("bn.scale", 0.5, 2.0, 1);
        let beta = t("bn.bias", -1.0, 1.0, 2);
        let mean = t("bn.mean", -3.0, 3.0, 3);
        let var = t("bn.var", 0.01, 4.0, 4);
        let attrs = eps.map(|e| vec![Attribute::float("epsilon", e)]);
        b.op(
            "BatchNormalization",
            &[y, gamma, beta, mean, var],
            attrs.unwrap_or_default(),
            "z",
        )
    }

    fn conv_bn(group: i64, c_in: i64, c_out: i64, bias: bool, eps: Option<f32>) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, c_in, 6, 6]);
        let mut ins = vec![x, init(&mut b, "w", &[c_out, c_in / group, 3, 3], 1)];
        if bias {
            ins.push(init(&mut b, "b", &[c_out], 2));
        }
        let attrs = vec![
            Attribute::int("group", group),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        let y = b.op("Conv", &ins, attrs, "y");
        let z = bn(&mut b, y, c_out, eps, 3);
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    /// onnx's caffe2 test models: a Conv whose weight (and bias) are
    /// `ConstantOfShape`, or an `Expand` of one value per output channel,
    /// and a BatchNorm with a `ConstantOfShape` variance.
    fn spread_conv_bn(expand: bool) -> Model {
        let mut b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 5, 5]);
        let fill = |v: f32| {
            let t = Tensor::from_f32(vec![1], &[v]);
            vec![Attribute::new("value", crate::ir::AttrValue::Tensor(t))]
        };
        let w_shape = b.init("w_shape", Tensor::from_i64(vec![4], &[6, 4, 3, 3]));
        let w = if expand {
            let c = b.init(
                "c",
                Tensor::from_f32(vec![6, 1, 1, 1], &values(71, 6, -0.1, 0.1)),
            );
            b.op("Expand", &[c, w_shape], vec![], "w")
        } else {
            b.op("ConstantOfShape", &[w_shape], fill(0.02), "w")
        };
        let c_shape = b.init("c_shape", Tensor::from_i64(vec![1], &[6]));
        let bias = b.op("ConstantOfShape", &[c_shape], fill(0.25), "bias");
        let attrs = vec![Attribute::ints("pads", &[1, 1, 1, 1])];
        let y = b.op("Conv", &[x, w, bias], attrs, "y");
        let gamma = b.init("gamma", Tensor::from_f32(vec![6], &values(72, 6, 0.5, 2.0)));
        let beta = b.init("beta", Tensor::from_f32(vec![6], &values(73, 6, -1.0, 1.0)));
        let mean = b.init("mean", Tensor::from_f32(vec![6], &values(74, 6, -0.1, 0.1)));
        let var = b.op("ConstantOfShape", &[c_shape], fill(0.5), "var");
        let z = b.op(
            "BatchNormalization",
            &[y, gamma, beta, mean, var],
            vec![],
            "z",
        );
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn spread_weights_fold_without_materialising() {
        for (expand, name) in [(false, "constant-of-shape"), (true, "expand")] {
            let name = format!("fuse-bn__spread-weight-{name}");
            let after = check(&name, &spread_conv_bn(expand), "fuse-bn,dce");
            assert_eq!(count(&after, "BatchNormalization"), 0, "{name}");
            assert_eq!(count(&after, "Expand"), 1, "{name}");
            // Nothing of the weight's size was written.
            let largest = after
                .graph
                .node_ids()
                .filter_map(|id| after.graph.const_tensor(crate::ir::Outlet::new(id, 0)))
                .map(|t| t.numel())
                .max();
            assert_eq!(largest, Some(6), "{name}");
        }
    }

    fn count(m: &Model, op: &str) -> usize {
        m.graph
            .node_ids()
            .filter(|&id| m.graph.op(id).is_some_and(|o| o.is(op)))
            .count()
    }

    #[test]
    fn conv_with_bias() {
        let out = check("fuse-bn__conv", &conv_bn(1, 3, 4, true, None), "fuse-bn");
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn conv_without_bias_large_eps() {
        let out = check(
            "fuse-bn__conv-no-bias-eps-0.1",
            &conv_bn(1, 3, 4, false, Some(0.1)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn grouped_conv_small_eps() {
        let out = check(
            "fuse-bn__grouped-conv-eps-1e-9",
            &conv_bn(2, 4, 6, true, Some(1e-9)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn depthwise_conv() {
        let out = check(
            "fuse-bn__depthwise-conv",
            &conv_bn(4, 4, 4, false, Some(1e-3)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn conv_transpose_grouped() {
        for (group, bias) in [(1, true), (2, false), (3, true)] {
            // w: [C_in, C_out/group, k, k]; 6 input channels, 3 per group out.
            let (c_in, c_out) = (6, 3 * group);
            let mut b = ModelBuilder::new(13);
            let x = b.input("x", DataType::FLOAT, &[1, c_in, 5, 5]);
            let mut ins = vec![x, init(&mut b, "w", &[c_in, c_out / group, 3, 3], 4)];
            if bias {
                ins.push(init(&mut b, "b", &[c_out], 5));
            }
            let attrs = vec![
                Attribute::int("group", group),
                Attribute::ints("strides", &[2, 2]),
            ];
            let y = b.op("ConvTranspose", &ins, attrs, "y");
            let z = bn(&mut b, y, c_out, Some(1e-3), 6);
            b.output(z, DataType::FLOAT);
            let name = format!("fuse-bn__conv-transpose-group-{group}");
            let out = check(&name, &b.build().unwrap(), "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 0, "{name}");
        }
    }

    fn gemm_bn(trans_b: bool, c: Option<&[i64]>, alpha: f32, beta: f32) -> Model {
        let (k, n) = (5, 4);
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, k]);
        let w_dims = if trans_b { [n, k] } else { [k, n] };
        let mut ins = vec![x, init(&mut b, "w", &w_dims, 7)];
        if let Some(dims) = c {
            ins.push(init(&mut b, "c", dims, 8));
        }
        let attrs = vec![
            Attribute::int("transB", trans_b as i64),
            Attribute::float("alpha", alpha),
            Attribute::float("beta", beta),
        ];
        let y = b.op("Gemm", &ins, attrs, "y");
        let z = bn(&mut b, y, n, Some(1e-4), 9);
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn gemm_trans_b_and_bias_shapes() {
        let cases: [(&str, bool, Option<&[i64]>); 6] = [
            ("transB-0-c-n", false, Some(&[4])),
            ("transB-1-c-n", true, Some(&[4])),
            ("transB-1-c-1xn", true, Some(&[1, 4])),
            ("transB-0-c-mx1", false, Some(&[3, 1])),
            ("transB-0-c-scalar", false, Some(&[])),
            ("transB-1-no-c", true, None),
        ];
        for (name, trans_b, c) in cases {
            let name = format!("fuse-bn__gemm-{name}");
            let out = check(&name, &gemm_bn(trans_b, c, 0.7, 1.3), "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 0, "{name}");
        }
    }

    #[test]
    fn matmul_becomes_gemm() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, 5]);
        let w = init(&mut b, "w", &[5, 4], 10);
        let y = b.op("MatMul", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 11);
        b.output(z, DataType::FLOAT);
        let out = check("fuse-bn__matmul", &b.build().unwrap(), "fuse-bn");
        assert_eq!(count(&out, "Gemm"), 1);
    }

    #[test]
    fn shared_weight_is_copied() {
        // Two convs share w; each BN folds into its own copy.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 4, 4]);
        let w = init(&mut b, "w", &[4, 4, 1, 1], 16);
        let y = b.op("Conv", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 17);
        let y2 = b.op("Conv", &[z, w], vec![], "y2");
        let n = 4;
        let v = |k| Tensor::from_f32(vec![n], &values(k, n as usize, 0.5, 2.0));
        let ins = [y2, b.init("s2", v(18)), b.init("b2", v(19))];
        let ins = [
            ins[0],
            ins[1],
            ins[2],
            b.init("m2", v(20)),
            b.init("v2", v(21)),
        ];
        let z2 = b.op("BatchNormalization", &ins, vec![], "z2");
        b.output(z2, DataType::FLOAT);
        let out = check("fuse-bn__shared-weight", &b.build().unwrap(), "fuse-bn");
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn not_folded() {
        // The conv output is also a graph output.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 4, 4]);
        let w = init(&mut b, "w", &[4, 3, 1, 1], 12);
        let y = b.op("Conv", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 13);
        let r = b.op("Relu", &[y], vec![], "r");
        b.output(z, DataType::FLOAT);
        b.output(r, DataType::FLOAT);
        let used_twice = b.build().unwrap();
        // MatMul whose input rank is unknown: BN's channel axis may not be
        // MatMul's output features.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4, 4]);
        let x = b.op("Identity", &[x], vec![], "x1");
        let w = init(&mut b, "w", &[4, 4], 14);
        let y = b.op("MatMul", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 15);
        b.output(z, DataType::FLOAT);
        let unknown_rank = b.build().unwrap();
        for (name, model) in [
            ("fuse-bn__conv-used-twice", used_twice),
            ("fuse-bn__matmul-unknown-rank", unknown_rank),
        ] {
            let out = check(name, &model, "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 1, "{name}");
        }
    }
}
