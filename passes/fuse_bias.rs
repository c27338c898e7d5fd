//! # fuse-bias
//!
//! **What:** folds a constant `Add` after a `Conv`, `ConvTranspose` or `Gemm`
//! into its bias, and a constant `Mul` (either operand) or `Div` (constant
//! divisor) into its weights and bias, when the constant is the same for
//! every position of an output channel: a scalar, or per channel
//! (`[1,C,1,1]`, `[C,1,1]` for a 2-D Conv; `[N]`, `[1,N]` for Gemm).
//! Subgraphs included.
//!
//! **Why:** exporters write biases and scales as separate element-wise nodes
//! (a bias-free Conv and an Add; a Mul by a folded normalisation); folded,
//! ONNX Runtime and TensorRT run one kernel, and the weights stay the only
//! place the constants live.
//!
//! ```text
//! y = Conv(x, w, b)                             y = Conv(x, w·k, b·k + c)
//! z = Mul(y, k: [1,C,1,1])                →
//! u = Add(z, c: [1,C,1,1])                      (u's uses now read y)
//! ```
//! Broadcasting is checked exactly, right-aligned as ONNX does: every axis of
//! the constant but the channel axis (1) must be 1, and it may not have more
//! axes than the output. So a `[C]` constant after a Conv is *not* per
//! channel (it varies along the last, spatial axis) and stays, as does any
//! constant that varies along a spatial or batch axis. A `Div` by a constant
//! with a zero, and non-finite constants, are left alone. The Conv/Gemm output
//! must have no other use and not be a graph output; its weights must be f32
//! initializers (copied when shared with another node). Arithmetic is in f64.
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{DataType, Graph, NodeId, Operator, Outlet, Patch};
use crate::passes::toolkit::{remove_dead_consts, sole_use, Kind, Producer};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-bias",
    "fold a per-channel constant Add/Mul/Div into the preceding Conv/ConvTranspose/Gemm",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Add", "add", add),
    Rule::on("Mul", "mul", mul),
    Rule::on("Div", "div", div),
];

/// For the binary op `id` (`op_type`): the producer feeding it, its single
/// use being this op, and the constant on the other side expanded to one
/// value per output channel. `y_slot` restricts the producer's input slot
/// (Div: the dividend only).
fn match_binary(
    ctx: &RuleContext,
    g: &Graph,
    id: NodeId,
    op_type: &str,
    y_slots: &[usize],
) -> Option<(Producer, Outlet, Vec<f64>)> {
    let op = g.op(id)?;
    // Broadcasting (multidirectional) in Add/Mul/Div is opset 7+.
    if !op.is(op_type) || ctx.opset < 7 || g.node(id).outputs.len() != 1 {
        return None;
    }
    y_slots.iter().find_map(|&slot| {
        let y = g.input(id, slot)?;
        let c = g.const_tensor(g.input(id, 1 - slot)?)?;
        let producer = Producer::analyse(g, y.node, false)?;
        if !sole_use(g, y, id) || c.dtype != DataType::FLOAT {
            return None;
        }
        let values = per_channel(&c.dims, producer.out_rank, producer.channels)?;
        let c_values = c.to_f32().ok()?;
        let expanded: Vec<f64> = values.iter().map(|&i| f64::from(c_values[i])).collect();
        expanded
            .iter()
            .all(|v| v.is_finite())
            .then_some((producer, y, expanded))
    })
}

/// For a constant of `dims` broadcast (right-aligned) against an output of
/// rank `out_rank` with `channels` on axis 1, the constant's index for each
/// channel; `None` when the constant varies along another axis or would
/// enlarge the output.
fn per_channel(dims: &[i64], out_rank: usize, channels: usize) -> Option<Vec<usize>> {
    if dims.len() > out_rank {
        return None;
    }
    let pad = out_rank - dims.len();
    let at = |axis: usize| if axis < pad { 1 } else { dims[axis - pad] };
    if (0..out_rank).any(|axis| axis != 1 && at(axis) != 1) {
        return None;
    }
    match at(1) {
        1 => Some(vec![0; channels]),
        c if c == channels as i64 => Some((0..channels).collect()),
        _ => None,
    }
}

/// Replaces `id` (whose input `y` is the producer's output) by the producer
/// with y ↦ s·y + t folded in.
fn fold(
    ctx: &RuleContext,
    g: &Graph,
    id: NodeId,
    producer: &Producer,
    y: Outlet,
    s: &[f64],
    t: &[f64],
) -> Patch {
    let mut patch = Patch::new("");
    producer.fold_affine(ctx, g, &mut patch, s, t);
    patch.shunt(Outlet::new(id, 0), y);
    patch.remove(id);
    remove_dead_consts(g, &mut patch, id);
    patch
}

fn bias_kinds(p: &Producer) -> bool {
    matches!(
        p.kind,
        Kind::Conv | Kind::ConvTranspose { .. } | Kind::Gemm { .. }
    )
}

// P(x) + c = P'(x) with bias' = bias + c, c constant per output channel.
fn add(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    Ok(match match_binary(ctx, g, id, "Add", &[0, 1]) {
        Some((p, y, c)) if bias_kinds(&p) => {
            Some(fold(ctx, g, id, &p, y, &vec![1.0; p.channels], &c))
        }
        _ => None,
    })
}

// P(x)·k = P'(x) with w'[o] = w[o]·k[o], bias'[o] = bias[o]·k[o], k per output channel.
fn mul(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    Ok(match match_binary(ctx, g, id, "Mul", &[0, 1]) {
        Some((p, y, k)) if bias_kinds(&p) => {
            Some(fold(ctx, g, id, &p, y, &k, &vec![0.0; p.channels]))
        }
        _ => None,
    })
}

// P(x)/k = P(x)·(1/k) for k ≠ 0, k per output channel (a constant dividend is not this).
fn div(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    Ok(match match_binary(ctx, g, id, "Div", &[0]) {
        Some((p, y, k)) if bias_kinds(&p) && k.iter().all(|&v| v != 0.0) => {
            let inv: Vec<f64> = k.iter().map(|v| 1.0 / v).collect();
            Some(fold(ctx, g, id, &p, y, &inv, &vec![0.0; p.channels]))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::per_channel;
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Tensor};
    use crate::passes::testing::{check, op_types as ops};
    use crate::passes::testing::{init, values};

    #[test]
    fn broadcasting_is_exact() {
        // Conv output rank 4, 8 channels.
        assert_eq!(per_channel(&[1, 8, 1, 1], 4, 8), Some((0..8).collect()));
        assert_eq!(per_channel(&[8, 1, 1], 4, 8), Some((0..8).collect()));
        assert_eq!(per_channel(&[], 4, 8), Some(vec![0; 8]));
        assert_eq!(per_channel(&[1, 1, 1, 1], 4, 8), Some(vec![0; 8]));
        assert_eq!(per_channel(&[8], 4, 8), None, "[C] varies along W");
        assert_eq!(per_channel(&[1, 8, 1, 5], 4, 8), None);
        assert_eq!(per_channel(&[2, 8, 1, 1], 4, 8), None, "varies along batch");
        assert_eq!(per_channel(&[1, 1, 8, 1, 1], 4, 8), None, "adds an axis");
        assert_eq!(per_channel(&[1, 4, 1, 1], 4, 8), None);
        // Gemm output rank 2, 8 features.
        assert_eq!(per_channel(&[8], 2, 8), Some((0..8).collect()));
        assert_eq!(per_channel(&[1, 8], 2, 8), Some((0..8).collect()));
        assert_eq!(per_channel(&[3, 1], 2, 8), None, "varies along rows");
    }

    /// Conv (4 channels, maybe no bias), then `op(y, c)` or `op(c, y)`.
    fn conv_then(op: &str, c_dims: &[i64], c: Vec<f32>, const_first: bool, bias: bool) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 5, 5]);
        let mut ins = vec![x, init(&mut b, "w", &[4, 3, 3, 3], 21)];
        if bias {
            ins.push(init(&mut b, "b", &[4], 22));
        }
        let y = b.op("Conv", &ins, vec![Attribute::int("group", 1)], "y");
        let c = b.init("c", Tensor::from_f32(c_dims.to_vec(), &c));
        let ins = if const_first { [c, y] } else { [y, c] };
        let z = b.op(op, &ins, vec![], "z");
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn conv_add_mul_div() {
        let per_c = values(30, 4, 0.5, 2.0);
        let cases = [
            (
                "add-1c11",
                "Add",
                vec![1, 4, 1, 1],
                per_c.clone(),
                false,
                true,
            ),
            (
                "add-c11-no-bias",
                "Add",
                vec![4, 1, 1],
                per_c.clone(),
                true,
                false,
            ),
            ("add-scalar", "Add", vec![], vec![0.25], false, true),
            ("mul-scalar", "Mul", vec![], vec![-1.5], true, true),
            (
                "mul-per-channel",
                "Mul",
                vec![1, 4, 1, 1],
                per_c.clone(),
                false,
                true,
            ),
            (
                "mul-no-bias",
                "Mul",
                vec![4, 1, 1],
                per_c.clone(),
                false,
                false,
            ),
            (
                "div-per-channel",
                "Div",
                vec![1, 4, 1, 1],
                per_c.clone(),
                false,
                true,
            ),
        ];
        for (name, op, dims, c, const_first, bias) in cases {
            let name = format!("fuse-bias__conv-{name}");
            let model = conv_then(op, &dims, c, const_first, bias);
            let out = check(&name, &model, "fuse-bias");
            assert_eq!(ops(&out), ["Conv"], "{name}");
        }
    }

    #[test]
    fn conv_not_folded() {
        // The conv output is [2, 4, 3, 3].
        let cases = [
            // [C] broadcasts along the last (spatial) axis.
            (
                "add-c-is-spatial",
                "Add",
                vec![3],
                values(31, 3, -1.0, 1.0),
                false,
            ),
            (
                "add-spatial",
                "Add",
                vec![1, 1, 3, 3],
                values(32, 9, -1.0, 1.0),
                false,
            ),
            (
                "mul-along-w",
                "Mul",
                vec![1, 4, 1, 3],
                values(33, 12, 0.5, 2.0),
                false,
            ),
            (
                "add-batch",
                "Add",
                vec![2, 4, 1, 1],
                values(34, 8, 0.5, 2.0),
                false,
            ),
            (
                "div-const-dividend",
                "Div",
                vec![1, 4, 1, 1],
                values(35, 4, 0.5, 2.0),
                true,
            ),
        ];
        for (name, op, dims, c, const_first) in cases {
            let name = format!("fuse-bias__conv-{name}");
            let out = check(
                &name,
                &conv_then(op, &dims, c, const_first, true),
                "fuse-bias",
            );
            assert_eq!(ops(&out), ["Conv", op], "{name}");
        }
        // Outputs are infinite either way; only the graph is compared.
        let by_zero = conv_then("Div", &[1, 4, 1, 1], vec![1.0, 0.0, 2.0, 3.0], false, true);
        let out = crate::passes::testing::rewrite(&by_zero, "fuse-bias");
        assert_eq!(ops(&out), ["Conv", "Div"]);
        // The conv output used twice.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 4, 4]);
        let w = init(&mut b, "w", &[4, 3, 1, 1], 35);
        let y = b.op("Conv", &[x, w], vec![], "y");
        let c = b.init(
            "c",
            Tensor::from_f32(vec![1, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0]),
        );
        let z = b.op("Add", &[y, c], vec![], "z");
        let r = b.op("Mul", &[y, z], vec![], "r");
        b.output(r, DataType::FLOAT);
        let out = crate::passes::testing::rewrite(&b.build().unwrap(), "fuse-bias");
        assert_eq!(ops(&out), ["Conv", "Add", "Mul"]);
    }

    #[test]
    fn conv_transpose_grouped_mul() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 3, 3]);
        // group 2: w [C_in=4, C_out/group=3, 2, 2], 6 output channels.
        let w = init(&mut b, "w", &[4, 3, 2, 2], 36);
        let y = b.op(
            "ConvTranspose",
            &[x, w],
            vec![Attribute::int("group", 2)],
            "y",
        );
        let k = b.init(
            "k",
            Tensor::from_f32(vec![6, 1, 1], &values(37, 6, 0.5, 2.0)),
        );
        let z = b.op("Mul", &[y, k], vec![], "z");
        let c = b.init(
            "c",
            Tensor::from_f32(vec![1, 6, 1, 1], &values(38, 6, -1.0, 1.0)),
        );
        let u = b.op("Add", &[z, c], vec![], "u");
        b.output(u, DataType::FLOAT);
        let out = check(
            "fuse-bias__conv-transpose-group-2",
            &b.build().unwrap(),
            "fuse-bias",
        );
        assert_eq!(ops(&out), ["ConvTranspose"]);
    }

    #[test]
    fn gemm() {
        // (name, transB, C dims, op, constant dims, folds)
        type Case<'a> = (&'a str, bool, Option<&'a [i64]>, &'a str, &'a [i64], bool);
        let cases: [Case; 7] = [
            ("add-n-transB-1", true, Some(&[4]), "Add", &[4], true),
            ("add-1xn-transB-0-no-c", false, None, "Add", &[1, 4], true),
            ("mul-n-c-mx1", false, Some(&[3, 1]), "Mul", &[4], true),
            ("mul-scalar-transB-1", true, Some(&[1, 4]), "Mul", &[], true),
            ("div-1xn", false, Some(&[4]), "Div", &[1, 4], true),
            ("add-mx1", true, Some(&[4]), "Add", &[3, 1], false),
            ("mul-mxn", true, Some(&[4]), "Mul", &[3, 4], false),
        ];
        for (name, trans_b, c_dims, op, k_dims, folds) in cases {
            let mut b = ModelBuilder::new(13);
            let x = b.input("x", DataType::FLOAT, &[3, 5]);
            let w_dims = if trans_b { [4, 5] } else { [5, 4] };
            let mut ins = vec![x, init(&mut b, "w", &w_dims, 40)];
            if let Some(d) = c_dims {
                ins.push(init(&mut b, "c", d, 41));
            }
            let attrs = vec![
                Attribute::int("transB", trans_b as i64),
                Attribute::float("alpha", 0.5),
                Attribute::float("beta", 2.0),
            ];
            let y = b.op("Gemm", &ins, attrs, "y");
            let n = k_dims.iter().product::<i64>() as usize;
            let k = b.init(
                "k",
                Tensor::from_f32(k_dims.to_vec(), &values(42, n, 0.5, 2.0)),
            );
            let z = b.op(op, &[y, k], vec![], "z");
            b.output(z, DataType::FLOAT);
            let model = b.build().unwrap();
            let name = format!("fuse-bias__gemm-{name}");
            if folds {
                let out = check(&name, &model, "fuse-bias");
                assert_eq!(ops(&out), ["Gemm"], "{name}");
            } else {
                let out = crate::passes::testing::rewrite(&model, "fuse-bias");
                assert_eq!(ops(&out), ["Gemm", op], "{name}");
            }
        }
    }
}
