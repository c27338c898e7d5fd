//! Dims of values, carried forward in topological order where ONNX's shape
//! inference fixes them, so that a declared shape its inputs contradict is
//! refused as onnx's checker refuses it (`Inferred shape and existing shape
//! differ`): an input whose batch was changed to 64 while the graph output
//! still says 1, a Transpose whose declared result has the wrong rank.
//!
//! Only what follows for certain is computed, dim by dim: shape-keeping
//! operators, broadcasting, MatMul/Gemm, convolutions and pools without
//! `ceil_mode`, Flatten, Reshape/Expand/ConstantOfShape/Tile with constant
//! shapes, Transpose, Concat, reductions, Squeeze/Unsqueeze, Gather, Shape.
//! An unknown dim (symbolic, negative, or not computed) is never refused.
//! Besides a declared shape, two rules of the inference are refused on
//! their own: dims that do not broadcast, and a MatMul whose inner dims differ.

use super::ranks::const_values;
use super::schema::Schema;
use crate::ir::{AttrValue, Graph, NodeId, Operator, Outlet};
use std::collections::HashMap;

/// A value's dims: each a number, or `None` when unknown.
pub type Dims = Vec<Option<i64>>;

#[derive(Default)]
pub struct Shapes {
    found: HashMap<Outlet, Dims>,
}

/// Operators whose first output has the dims of their first input.
const SAME_AS_FIRST: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "DequantizeLinear",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "QuantizeLinear",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
];

/// Operators broadcasting all their inputs (numpy rules) from the opsets
/// where they do (before, some took a `broadcast` attribute).
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

impl Shapes {
    /// A value's dims: the declared ones, each unknown dim filled in from
    /// what was carried forward.
    pub fn of(&self, g: &Graph, outlet: Outlet) -> Option<Dims> {
        let declared = g.known_dims(outlet);
        match (declared, self.found.get(&outlet)) {
            (Some(d), Some(f)) if d.len() == f.len() => {
                Some(d.iter().zip(f).map(|(d, f)| d.or(*f)).collect())
            }
            (Some(d), _) => Some(d),
            (None, f) => f.cloned(),
        }
    }

    /// Computes the dims of node `id`'s outputs, refuses a declared shape
    /// they contradict, and records them.
    pub fn check(
        &mut self,
        g: &Graph,
        id: NodeId,
        op: &Operator,
        s: &Schema,
    ) -> Result<(), String> {
        let input = |k: usize| g.input(id, k).and_then(|o| self.of(g, o));
        let made = infer(g, id, op, s, &input)?;
        for (k, dims) in made.into_iter().enumerate() {
            let Some(dims) = dims else { continue };
            let outlet = Outlet::new(id, k);
            let Some(value) = g.node(id).outputs.get(k).filter(|v| !v.name.is_empty()) else {
                continue;
            };
            if let Some(declared) = g.known_dims(outlet) {
                let differ = declared.len() != dims.len()
                    || declared
                        .iter()
                        .zip(&dims)
                        .any(|(d, m)| matches!((d, m), (Some(d), Some(m)) if d != m));
                if differ {
                    return Err(format!(
                        "output {k} '{}' is declared {}, but its inputs make it {}",
                        value.name,
                        show(&declared),
                        show(&dims)
                    ));
                }
            }
            self.found.insert(outlet, dims);
        }
        Ok(())
    }
}

/// `[1, ?, 8]`.
pub fn show(dims: &[Option<i64>]) -> String {
    let each: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", each.join(", "))
}

/// The dims of each output, where known.
fn infer(
    g: &Graph,
    id: NodeId,
    op: &Operator,
    s: &Schema,
    input: &dyn Fn(usize) -> Option<Dims>,
) -> Result<Vec<Option<Dims>>, String> {
    let t = op.op_type.as_str();
    let konst = |k: usize| g.input(id, k).and_then(|o| const_values(g, o));
    let one = |d: Option<Dims>| Ok(vec![d]);
    if SAME_AS_FIRST.contains(&t) {
        // Dropout's mask and MaxPool-like second outputs share the dims;
        // BatchNormalization's and LayerNormalization's others do not.
        let d = input(0);
        return Ok(match t {
            "Dropout" => vec![d.clone(), d],
            _ => vec![d],
        });
    }
    if BROADCAST.contains(&t) && s.since >= 8 {
        let all: Option<Vec<Dims>> = (0..op.arity).map(input).collect();
        return match all {
            Some(all) => broadcast(&all).map(|d| vec![Some(d)]),
            None => one(None),
        };
    }
    match t {
        "MatMul" => match (input(0), input(1)) {
            (Some(a), Some(b)) => matmul(&a, &b).map(|d| vec![d]),
            _ => one(None),
        },
        "Gemm" => {
            let pick = |d: Option<Dims>, trans: bool, k: usize| {
                d.filter(|d| d.len() == 2)
                    .and_then(|d| d[if trans { 1 - k } else { k }])
            };
            let m = pick(input(0), op.attr_int("transA", 0) != 0, 0);
            let n = pick(input(1), op.attr_int("transB", 0) != 0, 1);
            one(Some(vec![m, n]))
        }
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
            let Some(x) = input(0).filter(|x| x.len() >= 3) else {
                return one(None);
            };
            let channels = if t == "Conv" {
                input(1).and_then(|w| w.first().copied().flatten())
            } else {
                x[1]
            };
            let kernel: Option<Vec<Option<i64>>> = match op.attr_ints("kernel_shape") {
                Some(k) => Some(k.iter().map(|&v| Some(v)).collect()),
                None if t == "Conv" => input(1)
                    .filter(|w| w.len() == x.len())
                    .map(|w| w[2..].to_vec()),
                None => None,
            };
            let spatial = kernel
                .filter(|k| k.len() == x.len() - 2)
                .and_then(|k| window_dims(op, &x[2..], &k));
            let mut out = vec![x[0], channels];
            match spatial {
                Some(sp) => out.extend(sp),
                None => out.extend(std::iter::repeat_n(None, x.len() - 2)),
            }
            let out = Some(out);
            Ok(if t == "MaxPool" {
                vec![out.clone(), out]
            } else {
                vec![out]
            })
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            one(input(0).filter(|x| x.len() >= 2).map(|x| {
                let mut out = vec![x[0], x[1]];
                out.extend(std::iter::repeat_n(Some(1), x.len() - 2));
                out
            }))
        }
        "Flatten" => one(input(0).and_then(|x| {
            let r = x.len() as i64;
            let axis = op.attr_int("axis", 1);
            let axis = if axis < 0 { axis + r } else { axis };
            (0..=r).contains(&axis).then(|| {
                let (a, b) = x.split_at(axis as usize);
                vec![product(a), product(b)]
            })
        })),
        "Reshape" => one(konst(1).and_then(|shape| reshape(input(0), &shape, op))),
        "ConstantOfShape" => one(konst(0).map(|v| v.into_iter().map(Some).collect())),
        "Expand" => match (input(0), konst(1)) {
            (Some(x), Some(shape)) => {
                broadcast(&[x, shape.into_iter().map(Some).collect()]).map(|d| vec![Some(d)])
            }
            _ => one(None),
        },
        "Tile" => one(match (input(0), konst(1)) {
            (Some(x), Some(reps)) if reps.len() == x.len() => Some(
                x.iter()
                    .zip(reps)
                    .map(|(d, r)| d.and_then(|d| d.checked_mul(r)))
                    .collect(),
            ),
            _ => None,
        }),
        "Transpose" => one(input(0).and_then(|x| {
            let perm: Vec<i64> = match op.attr_ints("perm") {
                Some(p) => p.to_vec(),
                None => (0..x.len() as i64).rev().collect(),
            };
            perm.iter()
                .map(|&p| usize::try_from(p).ok().and_then(|p| x.get(p).copied()))
                .collect()
        })),
        "Concat" => {
            let all: Option<Vec<Dims>> = (0..op.arity).map(input).collect();
            one(all.and_then(|all| concat(&all, op.attr_int("axis", 0))))
        }
        "Shape" => one(input(0).map(|x| {
            let r = x.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
            let start = clamp(op.attr_int("start", 0));
            let end = clamp(op.attr_int("end", r));
            vec![Some((end - start).max(0))]
        })),
        "Size" => one(Some(vec![])),
        "Constant" => one(constant_dims(op)),
        t if t.starts_with("Reduce") || t == "ArgMax" || t == "ArgMin" => {
            one(input(0).and_then(|x| reduce(op, &x, konst(1), op.arity > 1)))
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = op
                .attr_ints("axes")
                .map(<[i64]>::to_vec)
                .or_else(|| konst(1));
            one(input(0).and_then(|x| squeeze(t == "Unsqueeze", &x, axes, op.arity > 1)))
        }
        "Gather" => one(match (input(0), input(1)) {
            (Some(data), Some(indices)) => {
                let r = data.len() as i64;
                let axis = op.attr_int("axis", 0);
                let axis = if axis < 0 { axis + r } else { axis };
                (0..r).contains(&axis).then(|| {
                    let a = axis as usize;
                    let mut out = data[..a].to_vec();
                    out.extend(indices);
                    out.extend_from_slice(&data[a + 1..]);
                    out
                })
            }
            _ => None,
        }),
        _ => Ok(vec![]),
    }
}

/// Numpy broadcasting; two known dims other than 1 that differ are refused.
fn broadcast(all: &[Dims]) -> Result<Dims, String> {
    let rank = all.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // Dim i of the result, counted from the right in each input.
        let at = |d: &Dims| (rank - i <= d.len()).then(|| d[d.len() - (rank - i)]);
        let mut known: Option<i64> = None;
        let mut all_ones = true;
        for d in all.iter().filter_map(at) {
            match d {
                Some(1) => {}
                Some(v) => {
                    all_ones = false;
                    if known.is_some_and(|k| k != v) {
                        return Err(format!(
                            "its inputs' dims {} do not broadcast (dim {v} against {})",
                            all.iter()
                                .map(|d| show(d))
                                .collect::<Vec<_>>()
                                .join(" and "),
                            known.unwrap_or_default()
                        ));
                    }
                    known = Some(v);
                }
                None => all_ones = false,
            }
        }
        out.push(known.or(all_ones.then_some(1)));
    }
    Ok(out)
}

/// `[..., M, K] x [..., K, N] -> [..., M, N]`, a 1-D operand promoted and its
/// dim dropped again; inner dims that differ are refused.
fn matmul(a: &Dims, b: &Dims) -> Result<Option<Dims>, String> {
    if a.is_empty() || b.is_empty() {
        return Ok(None);
    }
    let k_a = a[a.len() - 1];
    let k_b = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
    if let (Some(x), Some(y)) = (k_a, k_b) {
        if x != y {
            return Err(format!(
                "its inputs {} and {} do not multiply: inner dims {x} and {y} differ",
                show(a),
                show(b)
            ));
        }
    }
    let batch_a = if a.len() > 2 {
        a[..a.len() - 2].to_vec()
    } else {
        vec![]
    };
    let batch_b = if b.len() > 2 {
        b[..b.len() - 2].to_vec()
    } else {
        vec![]
    };
    let mut out = broadcast(&[batch_a, batch_b])?;
    if a.len() >= 2 {
        out.push(a[a.len() - 2]);
    }
    if b.len() >= 2 {
        out.push(b[b.len() - 1]);
    }
    Ok(Some(out))
}

/// The product of dims, when all are known (and it fits).
fn product(dims: &[Option<i64>]) -> Option<i64> {
    dims.iter()
        .try_fold(1i64, |acc, d| d.and_then(|d| acc.checked_mul(d)))
}

/// Spatial output dims of a convolution or pool (no `ceil_mode`): per dim
/// `floor((in + pads - dilation·(kernel-1) - 1) / stride) + 1`, or
/// `ceil(in / stride)` under `auto_pad` SAME_*.
fn window_dims(op: &Operator, x: &[Option<i64>], kernel: &[Option<i64>]) -> Option<Dims> {
    if op.attr_int("ceil_mode", 0) != 0 {
        return None;
    }
    let n = x.len();
    let list = |name: &str, default: i64, len: usize| -> Option<Vec<i64>> {
        match op.attr_ints(name) {
            Some(v) if v.len() == len => Some(v.to_vec()),
            Some(_) => None,
            None => Some(vec![default; len]),
        }
    };
    let strides = list("strides", 1, n)?;
    let dilations = list("dilations", 1, n)?;
    let pads = list("pads", 0, 2 * n)?;
    let auto_pad = match op.attr("auto_pad").map(|a| &a.value) {
        Some(AttrValue::String(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => "NOTSET".into(),
    };
    if strides.iter().chain(&dilations).any(|&v| v <= 0) {
        return None;
    }
    let dims = (0..n)
        .map(|i| {
            let d = x[i]?;
            let stride = strides[i] as i128;
            let made = match auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => (d as i128 + stride - 1) / stride,
                "NOTSET" | "VALID" | "" => {
                    let k = kernel[i]? as i128;
                    let pad = if auto_pad == "VALID" {
                        0
                    } else {
                        pads[i] as i128 + pads[i + n] as i128
                    };
                    let span = dilations[i] as i128 * (k - 1) + 1;
                    let room = d as i128 + pad - span;
                    if room < 0 {
                        return None;
                    }
                    room / stride + 1
                }
                _ => return None,
            };
            i64::try_from(made).ok()
        })
        .collect();
    Some(dims)
}

/// Reshape to a constant shape: 0 copies the input's dim (unless
/// `allowzero`), one -1 takes what is left.
fn reshape(x: Option<Dims>, shape: &[i64], op: &Operator) -> Option<Dims> {
    let allowzero = op.attr_int("allowzero", 0) != 0;
    let mut out: Dims = shape
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0 if !allowzero => x.as_ref().and_then(|x| x.get(i).copied().flatten()),
            v if v >= 0 => Some(v),
            _ => None,
        })
        .collect();
    if let Some(hole) = shape.iter().position(|&v| v == -1) {
        let total = x.as_ref().and_then(|x| product(x));
        let rest = product(
            &out.iter()
                .enumerate()
                .filter(|&(i, _)| i != hole)
                .map(|(_, d)| *d)
                .collect::<Vec<_>>(),
        );
        out[hole] = match (total, rest) {
            (Some(t), Some(r)) if r > 0 && t % r == 0 => Some(t / r),
            _ => None,
        };
    }
    Some(out)
}

fn concat(all: &[Dims], axis: i64) -> Option<Dims> {
    let first = all.first()?;
    let r = first.len();
    if all.iter().any(|d| d.len() != r) {
        return None;
    }
    let axis = if axis < 0 { axis + r as i64 } else { axis };
    let axis = usize::try_from(axis).ok().filter(|&a| a < r)?;
    Some(
        (0..r)
            .map(|i| {
                if i == axis {
                    all.iter()
                        .try_fold(0i64, |acc, d| d[i].and_then(|v| acc.checked_add(v)))
                } else {
                    all.iter().find_map(|d| d[i])
                }
            })
            .collect(),
    )
}

/// Reductions (`axes` attribute or constant input; none: every axis, or
/// none with `noop_with_empty_axes`) and ArgMax/ArgMin (`axis`).
fn reduce(
    op: &Operator,
    x: &Dims,
    axes_input: Option<Vec<i64>>,
    has_axes_input: bool,
) -> Option<Dims> {
    let r = x.len() as i64;
    let keep = op.attr_int("keepdims", 1) != 0;
    let axes: Vec<i64> = if matches!(op.op_type.as_str(), "ArgMax" | "ArgMin") {
        vec![op.attr_int("axis", 0)]
    } else if let Some(a) = op.attr_ints("axes") {
        a.to_vec()
    } else if has_axes_input {
        axes_input?
    } else {
        vec![]
    };
    if axes.is_empty() && op.attr_int("noop_with_empty_axes", 0) != 0 {
        return Some(x.clone());
    }
    let mut reduced = vec![axes.is_empty(); x.len()];
    for a in axes {
        let a = if a < 0 { a + r } else { a };
        *reduced.get_mut(usize::try_from(a).ok()?)? = true;
    }
    Some(
        x.iter()
            .zip(reduced)
            .filter_map(|(&d, red)| match (red, keep) {
                (true, true) => Some(Some(1)),
                (true, false) => None,
                (false, _) => Some(d),
            })
            .collect(),
    )
}

fn squeeze(
    unsqueeze: bool,
    x: &Dims,
    axes: Option<Vec<i64>>,
    has_axes_input: bool,
) -> Option<Dims> {
    if unsqueeze {
        let axes = axes?;
        let r = (x.len() + axes.len()) as i64;
        let mut at = vec![false; r as usize];
        for a in axes {
            let a = if a < 0 { a + r } else { a };
            *at.get_mut(usize::try_from(a).ok()?)? = true;
        }
        let mut rest = x.iter();
        return at
            .into_iter()
            .map(|new| {
                if new {
                    Some(Some(1))
                } else {
                    rest.next().copied()
                }
            })
            .collect();
    }
    match axes {
        Some(axes) => {
            let r = x.len() as i64;
            let mut drop = vec![false; x.len()];
            for a in axes {
                let a = if a < 0 { a + r } else { a };
                *drop.get_mut(usize::try_from(a).ok()?)? = true;
            }
            Some(
                x.iter()
                    .zip(drop)
                    .filter(|(_, d)| !d)
                    .map(|(&v, _)| v)
                    .collect(),
            )
        }
        // Without axes every dim of 1 goes: known only when every dim is.
        None if !has_axes_input && x.iter().all(Option::is_some) => {
            Some(x.iter().filter(|d| **d != Some(1)).copied().collect())
        }
        None => None,
    }
}

fn constant_dims(op: &Operator) -> Option<Dims> {
    let a = op.attributes.iter().find(|a| a.ref_attr_name.is_none())?;
    match &a.value {
        AttrValue::Tensor(t) => Some(t.dims.iter().map(|&d| Some(d)).collect()),
        AttrValue::Float(_) | AttrValue::Int(_) | AttrValue::String(_) => Some(vec![]),
        AttrValue::Floats(v) => Some(vec![Some(v.len() as i64)]),
        AttrValue::Ints(v) => Some(vec![Some(v.len() as i64)]),
        AttrValue::Strings(v) => Some(vec![Some(v.len() as i64)]),
        _ => None,
    }
}
