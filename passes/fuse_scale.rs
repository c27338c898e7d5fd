//! # fuse-scale
//!
//! **What:** folds a constant `Mul` (either operand) or `Div` (constant
//! divisor) on the *input* of a `Conv`, `ConvTranspose`, `Gemm` or `MatMul`
//! into its constant weights: a scalar for all four, one value per input
//! channel for a `Conv` (`[1,C,1,1]`, `[C,1,1]` for a 2-D Conv) and one per
//! row of a `MatMul`'s weight (`[K]`, the last axis of its input). And a
//! constant `Mul` of a constant `Mul` becomes one, when one of the two
//! constants is a single number (`Mul(Mul(x, a), 10) = Mul(x, 10·a)`:
//! tf2onnx's `log10(x)·10` is `Mul(Mul(Log(x), 1/ln 10), 10)`).
//! Subgraphs included.
//!
//! **Why:** `fuse-bias` folds what comes *after* a layer; exporters also
//! scale what goes in: the `·0.5` that ends an Erf-GELU
//! (`x·0.5·(1+erf(x/√2))`) before a projection, a `/6` ending a hard-swish
//! written out before a Conv, a normalisation scale in front of the first
//! layer. Folded, the element-wise kernel and its pass over the activation go.
//!
//! ```text
//! h = Mul(g, 0.5)                                y = Conv(g, w·0.5, b)
//! y = Conv(h, w, b)                       →
//! ```
//! Identities used: linearity in the input, `Conv(s·x, W) = Conv(x, s·W)`
//! for a scalar `s` (zero padding pads `s·x` with `0 = s·0`, so padding does
//! not break it), and per input channel
//! `Conv(x·k[c], W)[o] = Σ_c W[o, c]·k[c]·x[c] = Conv(x, W·k[c over axis 1])`
//! (group `G`: input channel `c` is `W`'s axis-1 index `c mod C/G` of the
//! output channels of group `c div C/G`); `ConvTranspose(s·x, W) =
//! ConvTranspose(x, s·W)`; `Gemm(s·A, B) = Gemm(A, s·B)`; `MatMul(x·k, W) =
//! MatMul(x, diag(k)·W)` with `k` along `x`'s last axis (`W`'s rows). The
//! bias is not scaled. `x / k = x·(1/k)` for `k ≠ 0`. Outputs move by
//! rounding only (the product is rounded once, in f64 to f32).
//! `(x·a)·b = x·(a·b)` (the product of constants computed in f64, rounded
//! once to f32; broadcasting is associative, and with one of `a`, `b` a
//! single number `a·b` is no larger than the other).
//!
//! Left alone: a scaled value with another use or that is a graph output
//! (the Mul stays, nothing is saved); weights that are not f32 initializers
//! (a weight shared with another node is copied); a constant that would
//! broadcast `x` to a larger shape; non-finite scales, division by zero.
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{DataType, Graph, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::toolkit::{remove_dead_consts, replace_const, sole_use};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-scale",
    "fold a constant Mul/Div on the input of a Conv/ConvTranspose/Gemm/MatMul into its weights",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[
    Rule::on("Conv", "conv", layer),
    Rule::on("ConvTranspose", "conv-transpose", layer),
    Rule::on("Gemm", "gemm", layer),
    Rule::on("MatMul", "matmul", layer),
    Rule::on("Mul", "mul-of-mul", mul_of_mul),
];

/// `Mul(x, c)` or `Mul(c, x)` with `c` an f32 constant and `x` not one:
/// (x, c).
fn const_mul(g: &Graph, id: NodeId) -> Option<(Outlet, &Tensor)> {
    let op = g.op(id)?;
    if !op.is("Mul") || !op.is_default_domain() {
        return None;
    }
    [0, 1].into_iter().find_map(|slot| {
        let x = g.input(id, slot)?;
        let c = g.const_tensor(g.input(id, 1 - slot)?)?;
        (c.dtype == DataType::FLOAT && g.const_tensor(x).is_none()).then_some((x, c))
    })
}

// (x·a)·b = x·(a·b), one of a, b a single number.
fn mul_of_mul(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    let Some((h, b)) = const_mul(g, id) else {
        return Ok(None);
    };
    let Some((x, a)) = const_mul(g, h.node).filter(|_| sole_use(g, h, id)) else {
        return Ok(None);
    };
    let (Ok(av), Ok(bv)) = (a.to_f32(), b.to_f32()) else {
        return Ok(None);
    };
    let (big, small, scalar) = match (av.len(), bv.len()) {
        (_, 1) => (a, &av, bv[0]),
        (1, _) => (b, &bv, av[0]),
        _ => return Ok(None),
    };
    let rank = a.dims.len().max(b.dims.len());
    let mut dims = vec![1; rank - big.dims.len()];
    dims.extend(&big.dims);
    let values: Vec<f32> = small
        .iter()
        .map(|&v| (f64::from(v) * f64::from(scalar)) as f32)
        .collect();
    if !values.iter().all(|v| v.is_finite()) {
        return Ok(None);
    }
    let mut patch = Patch::new("");
    let c = patch.add_const(
        &format!("{}.scale", g.outlet_name(h)),
        Tensor::from_f32_vec(dims, values),
    );
    let mut op = g.op(id).expect("a Mul").clone();
    op.arity = 2;
    patch.update(id, op);
    patch.rewire(id, 0, Some(x.into()));
    patch.rewire(id, 1, Some(c));
    patch.remove(h.node);
    remove_dead_consts(g, &mut patch, h.node);
    remove_dead_consts(g, &mut patch, id);
    Ok(Some(patch))
}

/// The scale on the layer's input: the Mul/Div node, the value it scales
/// and the constant (already inverted for a Div).
struct Scale {
    node: NodeId,
    x: Outlet,
    dims: Vec<i64>,
    values: Vec<f64>,
}

/// `h = Mul(x, k)`, `Mul(k, x)` or `Div(x, k)` with `k` a finite f32
/// constant (non-zero for a Div), `h` read only by `user`.
fn scale_of(g: &Graph, h: Outlet, user: NodeId) -> Option<Scale> {
    let op = g.op(h.node)?;
    if !op.is_default_domain() || !sole_use(g, h, user) || g.node(h.node).outputs.len() != 1 {
        return None;
    }
    let slots: &[usize] = match op.op_type.as_str() {
        "Mul" => &[0, 1],
        "Div" => &[0],
        _ => return None,
    };
    slots.iter().find_map(|&slot| {
        let x = g.input(h.node, slot)?;
        let k = g.const_tensor(g.input(h.node, 1 - slot)?)?;
        if k.dtype != DataType::FLOAT || g.const_tensor(x).is_some() {
            return None;
        }
        let mut values: Vec<f64> = k.to_f32().ok()?.into_iter().map(f64::from).collect();
        if op.is("Div") {
            if values.contains(&0.0) {
                return None;
            }
            values.iter_mut().for_each(|v| *v = 1.0 / *v);
        }
        (values.iter().all(|v| v.is_finite()) && !values.is_empty()).then_some(Scale {
            node: h.node,
            x,
            dims: k.dims.clone(),
            values,
        })
    })
}

/// For each weight element (flat index), the index into the scale; `None`
/// when the scale does not fold into this layer's weight.
fn scale_index(
    g: &Graph,
    op: &Operator,
    w: &Tensor,
    s: &Scale,
) -> Option<Box<dyn Fn(usize) -> usize>> {
    let x_rank = g.known_rank(s.x);
    let scalar = s.values.len() == 1;
    // The constant may not add axes to x (which would change the output).
    let fits_rank = |rank: Option<usize>| match rank {
        Some(r) => s.dims.len() <= r,
        None => s.dims.len() <= 1,
    };
    match op.op_type.as_str() {
        "Conv" | "ConvTranspose" if w.dims.len() >= 3 => {
            let rank = w.dims.len();
            if s.dims.len() > rank {
                return None;
            }
            if scalar {
                return Some(Box::new(|_| 0));
            }
            if !op.is("Conv") {
                return None;
            }
            // Per input channel: every axis but 1 of the constant is 1.
            let pad = rank - s.dims.len();
            let at = |axis: usize| if axis < pad { 1 } else { s.dims[axis - pad] };
            let group = op.attr_int("group", 1);
            let per_group = w.dims[1];
            if group < 1 || (0..rank).any(|a| a != 1 && at(a) != 1) {
                return None;
            }
            // `group` is from the file: a product past i64 is no model.
            if Some(at(1)) != per_group.checked_mul(group) || w.dims[0] % group != 0 {
                return None;
            }
            // w[o, j, ...] reads input channel (o div (M/G))·(C/G) + j.
            let (m_per_group, per_group) = ((w.dims[0] / group) as usize, per_group as usize);
            let inner: usize = w.dims[2..].iter().product::<i64>() as usize;
            Some(Box::new(move |i| {
                let (o, j) = (i / (per_group * inner), (i / inner) % per_group);
                (o / m_per_group) * per_group + j
            }))
        }
        // A is 2-D, transposed or not: a scalar scales it all.
        "Gemm" if w.dims.len() == 2 && scalar => {
            fits_rank(Some(2)).then(|| Box::new(|_: usize| 0usize) as Box<dyn Fn(usize) -> usize>)
        }
        "MatMul" if w.dims.len() == 2 => {
            if scalar {
                return fits_rank(x_rank)
                    .then(|| Box::new(|_: usize| 0usize) as Box<dyn Fn(usize) -> usize>);
            }
            // Along x's last axis (K, W's rows): [K] or [1, ..., 1, K].
            let (k, n) = (w.dims[0], w.dims[1] as usize);
            let last = *s.dims.last()?;
            let ones = s.dims[..s.dims.len() - 1].iter().all(|&d| d == 1);
            (last == k && ones && fits_rank(x_rank))
                .then(|| Box::new(move |i: usize| i / n) as Box<dyn Fn(usize) -> usize>)
        }
        _ => None,
    }
}

// Layer(x·k, W) = Layer(x, W·k), k scalar or per input channel (see the module doc).
fn layer(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    if !op.is_default_domain() || g.node(id).outputs.len() != 1 {
        return Ok(None);
    }
    let (Some(h), Some(w_out)) = (g.input(id, 0), g.input(id, 1)) else {
        return Ok(None);
    };
    let Some(w) = g.const_tensor(w_out).filter(|w| w.dtype == DataType::FLOAT) else {
        return Ok(None);
    };
    let Some(s) = scale_of(g, h, id) else {
        return Ok(None);
    };
    let Some(index) = scale_index(g, op, w, &s) else {
        return Ok(None);
    };
    let Ok(mut values) = w.to_f32() else {
        return Ok(None);
    };
    for (i, v) in values.iter_mut().enumerate() {
        *v = (f64::from(*v) * s.values[index(i)]) as f32;
    }
    let mut patch = Patch::new("");
    let label = g.node(id).label();
    let tensor = Tensor::from_f32_vec(w.dims.clone(), values);
    replace_const(g, &mut patch, id, 1, &format!("{label}.weight"), tensor);
    patch.rewire(id, 0, Some(s.x.into()));
    patch.remove(s.node);
    remove_dead_consts(g, &mut patch, s.node);
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Tensor};
    use crate::passes::testing::{check, init, op_types as ops, rewrite, values};

    const PASS: &str = "fuse-scale";

    /// x: f32[2, 4, 5, 5] → op(x, k) (or op(k, x)) → Conv (3×3, pads 1, group).
    fn scaled_conv(op: &str, k_dims: &[i64], k: Vec<f32>, const_first: bool, group: i64) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4, 5, 5]);
        let k = b.init("k", Tensor::from_f32(k_dims.to_vec(), &k));
        let ins = if const_first { [k, x] } else { [x, k] };
        let h = b.op(op, &ins, vec![], "h");
        let w = init(&mut b, "w", &[6, 4 / group, 3, 3], 51);
        let bias = init(&mut b, "b", &[6], 52);
        let attrs = vec![
            Attribute::int("group", group),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        let y = b.op("Conv", &[h, w, bias], attrs, "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn a_group_past_i64_is_left_alone() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4, 5, 5]);
        let k = b.init(
            "k",
            Tensor::from_f32(vec![1, 4, 1, 1], &values(53, 4, 0.5, 2.0)),
        );
        let h = b.op("Mul", &[x, k], vec![], "h");
        let w = b.init("w", Tensor::from_f32(vec![0, 4, 3, 3], &[]));
        // 4 · 2^62 input channels: not a model, and no product to trust.
        let y = b.op("Conv", &[h, w], vec![Attribute::int("group", 1 << 62)], "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        assert_eq!(ops(&rewrite(&m, PASS)), ops(&m));
    }

    #[test]
    fn conv_input_scales_fold() {
        let per_c = values(53, 4, 0.5, 2.0);
        let cases = [
            ("mul-scalar", "Mul", vec![], vec![0.5], false, 1),
            ("mul-scalar-first", "Mul", vec![1], vec![-1.5], true, 1),
            ("div-scalar", "Div", vec![], vec![6.0], false, 1),
            (
                "mul-per-channel",
                "Mul",
                vec![1, 4, 1, 1],
                per_c.clone(),
                false,
                1,
            ),
            (
                "mul-per-channel-group-2",
                "Mul",
                vec![4, 1, 1],
                per_c.clone(),
                false,
                2,
            ),
            (
                "div-per-channel-group-2",
                "Div",
                vec![1, 4, 1, 1],
                per_c.clone(),
                false,
                2,
            ),
        ];
        for (name, op, dims, k, first, group) in cases {
            let name = format!("fuse-scale__conv-{name}");
            let out = check(&name, &scaled_conv(op, &dims, k, first, group), PASS);
            assert_eq!(ops(&out), ["Conv"], "{name}");
        }
    }

    #[test]
    fn conv_input_scales_that_stay() {
        let cases = [
            // [C] broadcasts along W; a per-position scale; one that adds an axis.
            ("Mul", vec![4], values(54, 4, 0.5, 2.0)),
            ("Mul", vec![1, 1, 5, 5], values(55, 25, 0.5, 2.0)),
            ("Mul", vec![1, 1, 1, 1, 1], vec![2.0]),
            ("Div", vec![], vec![0.0]),
        ];
        for (op, dims, k) in cases {
            let m = scaled_conv(op, &dims, k, false, 1);
            assert_eq!(ops(&rewrite(&m, PASS)), [op, "Conv"], "{dims:?}");
        }
        // A constant dividend is not a scale.
        let m = scaled_conv("Div", &[], vec![2.0], true, 1);
        assert_eq!(ops(&rewrite(&m, PASS)), ["Div", "Conv"]);
    }

    #[test]
    fn gelu_half_into_matmul_and_gemm() {
        // y = MatMul(x·0.5·(1 + erf(x/√2)), W): the GELU's last ·0.5 folds.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 8]);
        let sqrt2 = b.init(
            "sqrt2",
            Tensor::from_f32(vec![], &[std::f32::consts::SQRT_2]),
        );
        let one = b.init("one", Tensor::from_f32(vec![], &[1.0]));
        let half = b.init("half", Tensor::from_f32(vec![], &[0.5]));
        let d = b.op("Div", &[x, sqrt2], vec![], "d");
        let e = b.op("Erf", &[d], vec![], "e");
        let a = b.op("Add", &[e, one], vec![], "a");
        let m = b.op("Mul", &[x, a], vec![], "m");
        let h = b.op("Mul", &[m, half], vec![], "h");
        let w = init(&mut b, "w", &[8, 4], 56);
        let y = b.op("MatMul", &[h, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        let out = check("fuse-scale__gelu-matmul", &b.build().unwrap(), PASS);
        assert_eq!(ops(&out), ["Div", "Erf", "Add", "Mul", "MatMul"]);

        // MatMul per K: k: [8] along x's last axis; Gemm scalar (transB).
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, 8]);
        let k = b.init("k", Tensor::from_f32(vec![8], &values(57, 8, 0.5, 2.0)));
        let h = b.op("Mul", &[x, k], vec![], "h");
        let w = init(&mut b, "w", &[8, 4], 58);
        let y = b.op("MatMul", &[h, w], vec![], "y");
        let s = b.init("s", Tensor::from_f32(vec![1], &[0.25]));
        let h2 = b.op("Mul", &[y, s], vec![], "h2");
        let w2 = init(&mut b, "w2", &[5, 4], 59);
        let attrs = vec![Attribute::int("transB", 1)];
        let z = b.op("Gemm", &[h2, w2], attrs, "z");
        b.output(z, DataType::FLOAT);
        let out = check("fuse-scale__matmul-per-k-gemm", &b.build().unwrap(), PASS);
        assert_eq!(ops(&out), ["MatMul", "Gemm"]);
    }

    #[test]
    fn scale_of_scale() {
        // y = (Exp(x)·(1/ln 10))·10 (tf2onnx's log10 with Exp for Log, which
        // random inputs would make NaN); z = (x·k[4])·0.5 with k first.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4]);
        let ln10 = b.init(
            "inv_ln10",
            Tensor::from_f32(vec![], &[std::f32::consts::LOG10_E]),
        );
        let ten = b.init("ten", Tensor::from_f32(vec![1, 1], &[10.0]));
        let l = b.op("Exp", &[x], vec![], "l");
        let m = b.op("Mul", &[l, ln10], vec![], "m");
        let y = b.op("Mul", &[ten, m], vec![], "y");
        let k = b.init("k", Tensor::from_f32(vec![4], &values(61, 4, 0.5, 2.0)));
        let half = b.init("half", Tensor::from_f32(vec![], &[0.5]));
        let xk = b.op("Mul", &[k, x], vec![], "xk");
        let z = b.op("Mul", &[xk, half], vec![], "z");
        b.output(y, DataType::FLOAT);
        b.output(z, DataType::FLOAT);
        let out = check("fuse-scale__mul-of-mul", &b.build().unwrap(), PASS);
        assert_eq!(ops(&out), ["Exp", "Mul", "Mul"]);
    }

    #[test]
    fn shared_scaled_value_stays() {
        // h is read twice: the Mul stays (folding would save nothing).
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 5, 5]);
        let k = b.init("k", Tensor::from_f32(vec![], &[0.5]));
        let h = b.op("Mul", &[x, k], vec![], "h");
        let w = init(&mut b, "w", &[6, 4, 1, 1], 60);
        let y = b.op("Conv", &[h, w], vec![], "y");
        let r = b.op("Relu", &[h], vec![], "r");
        b.output(y, DataType::FLOAT);
        b.output(r, DataType::FLOAT);
        let out = rewrite(&b.build().unwrap(), PASS);
        assert_eq!(ops(&out), ["Mul", "Conv", "Relu"]);
    }
}
