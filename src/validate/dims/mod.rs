//! Dims of values, carried forward in topological order where ONNX's shape
//! inference fixes them, so that a declared shape its inputs contradict is
//! refused as onnx's checker refuses it (`Inferred shape and existing shape
//! differ`): an input whose batch was changed to 64 while the graph output
//! still says 1, a Transpose whose declared result has the wrong rank.
//!
//! Only what follows for certain is computed, dim by dim: shape-keeping
//! operators, broadcasting, MatMul/Gemm, convolutions and pools without
//! `ceil_mode`, Flatten, Reshape/Expand/ConstantOfShape/Tile with constant
//! shapes (Expand/ConstantOfShape: the rank alone from a computed shape of
//! known length), Transpose, Concat, reductions, Squeeze/Unsqueeze, Gather,
//! Shape. A subgraph sees the values it captures with the dims they have
//! outside. An unknown dim (symbolic, -1, or not computed) is never refused.
//! Besides a declared shape, three rules of the inference are refused on
//! their own: dims that do not broadcast, a MatMul whose inner dims differ,
//! and a Reshape whose shape cannot hold its input's element count.
//!
//! The parts: this file holds [`Shapes`] and `infer`, which picks the rule
//! of each operator; `ops.rs` the rules that take more than a line
//! (broadcasting, MatMul, windows, Reshape, Concat, reductions, Squeeze).

mod ops;

use super::ranks::const_values;
use super::schema::Schema;
use super::MAX_RANK;
use crate::ir::op_kinds::{BROADCAST, SAME_DIMS};
use crate::ir::{Graph, NodeId, Operator, Outlet};
use ops::{
    broadcast, concat, constant_dims, matmul, product, reduce, reshape, squeeze, window_dims,
};
use std::collections::HashMap;

/// A value's dims: each a number, or `None` when unknown.
pub type Dims = Vec<Option<i64>>;

#[derive(Default)]
pub struct Shapes {
    found: HashMap<Outlet, Dims>,
}

/// Broadcasting bitwise operators, besides [`BROADCAST`].
const BITWISE: &[&str] = &["BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"];

impl Shapes {
    /// Records the dims of a value the graph does not compute (a capture).
    pub fn learn(&mut self, outlet: Outlet, dims: Dims) {
        self.found.insert(outlet, dims);
    }

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

/// The dims a computed shape makes when only its length is known (a
/// `Cast` of a `Concat` of shape values): that many unknown dims, which
/// still fix the rank (rank rules such as Gemm's then apply), as in onnx's
/// inference of Expand and ConstantOfShape.
fn unknown_of_length(shape: Option<Dims>) -> Option<Dims> {
    match shape?[..] {
        [Some(n)] if (0..=MAX_RANK as i64).contains(&n) => Some(vec![None; n as usize]),
        _ => None,
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
    if SAME_DIMS.contains(&t) {
        // Dropout's mask and MaxPool-like second outputs share the dims;
        // BatchNormalization's and LayerNormalization's others do not.
        let d = input(0);
        return Ok(match t {
            "Dropout" => vec![d.clone(), d],
            _ => vec![d],
        });
    }
    // Before opset 7, the binary ones broadcast only with `broadcast=1`
    // (onto the first input, whose dims the output has); without it both
    // inputs have one shape (ONNX's inference then gives the first input's
    // dims, where tract broadcasts: found by `benches/fuzz.rs`).
    if BROADCAST.contains(&t) && s.since < 7 && op.arity == 2 {
        let (a, b) = (input(0), input(1));
        if let (Some(a), Some(b)) = (&a, &b) {
            let differ = a.len() != b.len()
                || a.iter()
                    .zip(b)
                    .any(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x != y));
            if differ && op.attr_int("broadcast", 0) == 0 {
                return Err(format!(
                    "its inputs' dims {} and {} differ: before opset 7 they must be one \
                     shape, unless broadcast=1",
                    show(a),
                    show(b)
                ));
            }
        }
        return one(a);
    }
    // Numpy broadcasting from version 7 (Add, Mul, And, Equal...; Max,
    // Min, Sum and Mean from 8: their version 6, taken before, is the
    // legacy rule above). A `>= 8` here let Add-7, which serves opsets 7 to
    // 12, through with dims that do not broadcast (found by fuzzing).
    if (BROADCAST.contains(&t) || BITWISE.contains(&t)) && s.since >= 7 {
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
            let (a, b) = (input(0), input(1));
            let (trans_a, trans_b) = (op.attr_int("transA", 0) != 0, op.attr_int("transB", 0) != 0);
            let (m, n) = (pick(a.clone(), trans_a, 0), pick(b.clone(), trans_b, 1));
            let (k_a, k_b) = (pick(a.clone(), trans_a, 1), pick(b.clone(), trans_b, 0));
            if let (Some(x), Some(y)) = (k_a, k_b) {
                if x == y {
                    return one(Some(vec![m, n]));
                }
                return Err(format!(
                    "its inputs {} and {} do not multiply: inner dims {x} and {y} differ",
                    show(&a.unwrap_or_default()),
                    show(&b.unwrap_or_default())
                ));
            }
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
                .map(|k| window_dims(op, &x[2..], &k))
                .transpose()?
                .flatten();
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
        // A computed shape of known length says the rank here too, but
        // onnx's inference does not use it, and exporters declare such
        // outputs wrongly (ddddocr's CRNN: [1, seqlen] for a rank-3 value;
        // its checker and ONNX Runtime accept the model).
        "Reshape" => match konst(1) {
            Some(shape) => reshape(input(0), &shape, op).map(|d| vec![d]),
            None => one(None),
        },
        "ConstantOfShape" => one(konst(0)
            .map(|v| v.into_iter().map(Some).collect())
            .or_else(|| unknown_of_length(input(0)))),
        "Expand" => {
            let shape = konst(1)
                .map(|v| v.into_iter().map(Some).collect())
                .or_else(|| unknown_of_length(input(1)));
            match (input(0), shape) {
                (Some(x), Some(shape)) => broadcast(&[x, shape]).map(|d| vec![Some(d)]),
                _ => one(None),
            }
        }
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
