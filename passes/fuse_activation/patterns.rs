//! The matchers of `fuse-activation`: each reads the graph from one node of
//! a written-out pattern and returns what it matched ([`Fusion`]: the input,
//! the nodes to remove, the value the fused operator takes over), or `None`.
//! Read-only; the rules and the report of patterns waiting for a newer
//! opset share them.

use crate::ir::patch::Src;
use crate::ir::{AttrValue, DataType, DimValue, Graph, NodeId, Operator, Outlet, Patch, TypeKind};

/// A matched pattern: its input `x`, the nodes it replaces, and the value
/// the fused operator takes over.
pub(super) struct Fusion {
    pub(super) x: Outlet,
    pub(super) nodes: Vec<NodeId>,
    pub(super) out: Outlet,
}

impl Fusion {
    /// Adds `op` (named after the last matched node, its output taking the
    /// pattern's output name) to `patch`, moves every use over and removes the pattern.
    pub(super) fn replace(
        &self,
        g: &Graph,
        mut patch: Patch,
        op: Operator,
        inputs: Vec<Option<Src>>,
    ) -> Patch {
        let last = g.node(self.out.node);
        let i = patch.add_op(last.name.clone(), op, inputs, &[g.outlet_name(self.out)]);
        patch.shunt(self.out, Patch::out(i, 0));
        for &n in &self.nodes {
            patch.remove(n);
        }
        patch
    }
}

const SIXTH: f64 = 1.0 / 6.0;

/// Equal to `target`, an irrational constant, up to float rounding.
fn near(v: f64, target: f64) -> bool {
    ((v - target) / target).abs() <= 1e-6
}

/// The value of a one-element float constant, when broadcasting it against
/// `x` cannot widen the rank (a scalar, or `x` known to have at least its rank).
fn scalar(g: &Graph, c: Outlet, x: Outlet) -> Option<f64> {
    let t = g.const_tensor(c)?;
    if t.numel() != 1 || !(t.dims.is_empty() || g.known_rank(x).is_some_and(|r| r >= t.dims.len()))
    {
        return None;
    }
    t.to_f32().ok().map(|v| v[0] as f64)
}

/// Both inputs of the two-input ONNX operator `op_type`.
fn binary(g: &Graph, id: NodeId, op_type: &str) -> Option<(Outlet, Outlet)> {
    if !g.op(id)?.is(op_type) {
        return None;
    }
    match g.inputs(id).as_slice() {
        [Some(a), Some(b)] => Some((*a, *b)),
        _ => None,
    }
}

/// `op_type(v, c)` with `c` a scalar constant (either side when commutative,
/// else on the right): `v` and the value of `c`.
fn with_const(g: &Graph, id: NodeId, op_type: &str, commutative: bool) -> Option<(Outlet, f64)> {
    let (a, b) = binary(g, id, op_type)?;
    if let Some(c) = scalar(g, b, a) {
        return Some((a, c));
    }
    if commutative {
        return scalar(g, a, b).map(|c| (b, c));
    }
    None
}

/// For `Mul(a, b)` with `known` one of its inputs: the other one.
fn mul_partner(g: &Graph, id: NodeId, known: Outlet) -> Option<Outlet> {
    match binary(g, id, "Mul")? {
        (a, b) if a == known => Some(b),
        (a, b) if b == known => Some(a),
        _ => None,
    }
}

/// `id` is `v / k` or `v · (1/k)`, `k` one of 2 (halving) or 6 (a sixth).
fn divides(g: &Graph, id: NodeId, v: Outlet, k: f64) -> bool {
    let div = with_const(g, id, "Div", false).is_some_and(|(u, c)| u == v && c == k);
    div || with_const(g, id, "Mul", true)
        .is_some_and(|(u, c)| u == v && (c == 1.0 / k || (k == 6.0 && near(c, SIXTH))))
}

/// A Clip's bounds, from its inputs (opset 11+) or its attributes (before).
fn clip_bounds(g: &Graph, clip: NodeId, x: Outlet) -> Option<(Option<f64>, Option<f64>)> {
    let op = g.op(clip)?;
    let bound = |slot: usize, name: &str| -> Option<Option<f64>> {
        match g.input(clip, slot).filter(|_| slot < op.arity) {
            Some(c) => scalar(g, c, x).map(Some),
            None => Some(match op.attr(name).map(|a| &a.value) {
                Some(AttrValue::Float(v)) => Some(*v as f64),
                _ => None,
            }),
        }
    };
    Some((bound(1, "min")?, bound(2, "max")?))
}

/// `Clip(x + 3, 0, 6)` at the Clip: `x` and the Add.
fn match_shifted_relu6(g: &Graph, clip: NodeId) -> Option<(Outlet, NodeId)> {
    if !g.op(clip)?.is("Clip") {
        return None;
    }
    let a = g.input(clip, 0)?;
    let (x, three) = with_const(g, a.node, "Add", true)?;
    let clip_out = Outlet::new(clip, 0);
    if three != 3.0 || g.sole_user(a) != Some(clip) {
        return None;
    }
    match clip_bounds(g, clip, clip_out)? {
        (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Some((x, a.node)),
        _ => None,
    }
}

/// At the Clip: `Mul(x, Clip(x + 3, 0, 6)) / 6` (or `· 1/6`), or `x · (Clip(x + 3, 0, 6) / 6)`.
pub(super) fn match_hardswish(g: &Graph, clip: NodeId) -> Option<Fusion> {
    let (x, add) = match_shifted_relu6(g, clip)?;
    let c = Outlet::new(clip, 0);
    let u = g.sole_user(c)?;
    if mul_partner(g, u, c) == Some(x) {
        let m = Outlet::new(u, 0);
        let d = g.sole_user(m).filter(|&d| divides(g, d, m, 6.0))?;
        return Some(Fusion {
            x,
            nodes: vec![add, clip, u, d],
            out: Outlet::new(d, 0),
        });
    }
    if divides(g, u, c, 6.0) {
        let h = Outlet::new(u, 0);
        let m = g
            .sole_user(h)
            .filter(|&m| mul_partner(g, m, h) == Some(x))?;
        return Some(Fusion {
            x,
            nodes: vec![add, clip, u, m],
            out: Outlet::new(m, 0),
        });
    }
    None
}

/// At the HardSigmoid: `x · HardSigmoid(x, 1/6, 1/2)`.
pub(super) fn match_x_hardsigmoid(g: &Graph, hs: NodeId) -> Option<Fusion> {
    let op = g.op(hs)?;
    let alpha = op.attr_float("alpha", 0.2) as f64;
    if !op.is("HardSigmoid") || !near(alpha, SIXTH) || op.attr_float("beta", 0.5) != 0.5 {
        return None;
    }
    let x = g.input(hs, 0)?;
    let h = Outlet::new(hs, 0);
    let m = g
        .sole_user(h)
        .filter(|&m| mul_partner(g, m, h) == Some(x))?;
    Some(Fusion {
        x,
        nodes: vec![hs, m],
        out: Outlet::new(m, 0),
    })
}

/// At the Clip: `Clip(x + 3, 0, 6) / 6` (or `· 1/6`).
pub(super) fn match_hardsigmoid(g: &Graph, clip: NodeId) -> Option<Fusion> {
    let (x, add) = match_shifted_relu6(g, clip)?;
    let c = Outlet::new(clip, 0);
    let d = g.sole_user(c).filter(|&d| divides(g, d, c, 6.0))?;
    Some(Fusion {
        x,
        nodes: vec![add, clip, d],
        out: Outlet::new(d, 0),
    })
}

/// At the Erf: `0.5 · x · (1 + Erf(x / √2))` in its usual arrangements.
pub(super) fn match_gelu(g: &Graph, erf: NodeId) -> Option<Fusion> {
    if !g.op(erf)?.is("Erf") {
        return None;
    }
    let s = g.input(erf, 0)?;
    if g.sole_user(s) != Some(erf) {
        return None;
    }
    let x = match with_const(g, s.node, "Div", false) {
        Some((x, c)) if near(c, std::f64::consts::SQRT_2) => x,
        _ => match with_const(g, s.node, "Mul", true) {
            Some((x, c)) if near(c, std::f64::consts::FRAC_1_SQRT_2) => x,
            _ => return None,
        },
    };
    let e = Outlet::new(erf, 0);
    let a = g.sole_user(e)?;
    if with_const(g, a, "Add", true) != Some((e, 1.0)) {
        return None;
    }
    let ao = Outlet::new(a, 0);
    let m1 = g.sole_user(ao)?;
    let other = mul_partner(g, m1, ao)?;
    let m1o = Outlet::new(m1, 0);
    let fusion = |last: NodeId, extra: NodeId| Fusion {
        x,
        nodes: vec![s.node, erf, a, m1, extra],
        out: Outlet::new(last, 0),
    };
    if other == x {
        // (x · (1 + erf)) · 0.5
        let m2 = g.sole_user(m1o).filter(|&m2| divides(g, m2, m1o, 2.0))?;
        return Some(fusion(m2, m2));
    }
    if g.op(other.node).is_some() && divides(g, other.node, x, 2.0) {
        // (x · 0.5) · (1 + erf)
        return (g.sole_user(other) == Some(m1)).then(|| fusion(m1, other.node));
    }
    if scalar(g, other, ao) == Some(0.5) {
        // x · ((1 + erf) · 0.5)
        let m2 = g
            .sole_user(m1o)
            .filter(|&m2| mul_partner(g, m2, m1o) == Some(x))?;
        return Some(fusion(m2, m2));
    }
    None
}

pub(super) struct LayerNormMatch {
    pub(super) fusion: Fusion,
    pub(super) epsilon: f32,
    /// The γ/β constants when usable as they are (shape `[D]`).
    pub(super) scale: Option<Outlet>,
    pub(super) bias: Option<Outlet>,
    /// Their values expanded to `[D]`, for a new constant otherwise.
    pub(super) scale_values: Vec<f32>,
    pub(super) bias_values: Vec<f32>,
}

/// `ReduceMean(x, axes=[-1], keepdims=1)`, axes as attribute or constant input: `x`.
fn mean_last_axis(g: &Graph, id: NodeId) -> Option<Outlet> {
    let op = g.op(id)?;
    if !op.is("ReduceMean") || op.attr_int("keepdims", 1) != 1 {
        return None;
    }
    let x = g.input(id, 0)?;
    let axes = match op.attr_ints("axes") {
        Some(axes) => axes.to_vec(),
        None => g.const_tensor(g.input(id, 1)?)?.to_i64().ok()?,
    };
    match axes.as_slice() {
        [-1] => Some(x),
        [a] if g.known_rank(x) == Some(*a as usize + 1) => Some(x),
        _ => None,
    }
}

/// `v · t` (Mul) or `v + t` (Add) with `t` a float constant: `t`'s outlet.
fn const_partner(g: &Graph, id: NodeId, op_type: &str, v: Outlet) -> Option<Outlet> {
    let (a, b) = binary(g, id, op_type)?;
    let t = match (a, b) {
        (a, b) if a == v => b,
        (a, b) if b == v => a,
        _ => return None,
    };
    (g.const_tensor(t)?.dtype == DataType::FLOAT).then_some(t)
}

/// At the first ReduceMean: the written-out LayerNormalization over the last axis.
pub(super) fn match_layer_norm(g: &Graph, rm1: NodeId) -> Option<LayerNormMatch> {
    let x = mean_last_axis(g, rm1)?;
    let mean = Outlet::new(rm1, 0);
    let sub = g.sole_user(mean)?;
    if binary(g, sub, "Sub")? != (x, mean) {
        return None;
    }
    let d = Outlet::new(sub, 0);
    let users = g.consumers(d);
    if users.len() != 2 || g.is_graph_output(d) {
        return None;
    }
    let is_square = |p: NodeId| with_const(g, p, "Pow", false) == Some((d, 2.0));
    let (pow, div) = match (users[0].0, users[1].0) {
        (p, q) if is_square(p) => (p, q),
        (q, p) if is_square(p) => (p, q),
        _ => return None,
    };
    let rm2 = g.sole_user(Outlet::new(pow, 0))?;
    let var = Outlet::new(rm2, 0);
    if mean_last_axis(g, rm2) != Some(Outlet::new(pow, 0)) {
        return None;
    }
    let add = g.sole_user(var)?;
    let (a, b) = binary(g, add, "Add")?;
    let eps = if a == var { b } else { a };
    let eps_t = g.const_tensor(eps)?;
    if eps_t.dtype != DataType::FLOAT || scalar(g, eps, var).is_none() {
        return None;
    }
    let epsilon = eps_t.to_f32().ok()?[0];
    let sqrt = g
        .sole_user(Outlet::new(add, 0))
        .filter(|&s| g.op(s).is_some_and(|o| o.is("Sqrt")))?;
    if g.sole_user(Outlet::new(sqrt, 0)) != Some(div)
        || binary(g, div, "Div")? != (d, Outlet::new(sqrt, 0))
    {
        return None;
    }
    let mut nodes = vec![rm1, sub, pow, rm2, add, sqrt, div];
    let mut out = Outlet::new(div, 0);
    let mut affine = |op_type: &str| -> Option<Outlet> {
        let next = g.sole_user(out)?;
        let t = const_partner(g, next, op_type, out)?;
        nodes.push(next);
        out = Outlet::new(next, 0);
        Some(t)
    };
    let gamma = affine("Mul");
    let beta = affine("Add");
    // The normalised size D: from x's type, else from γ/β.
    let last_dim = |o: Outlet| g.const_tensor(o).and_then(|t| t.dims.last().copied());
    let dim = match g.known_type(x).map(|t| t.kind) {
        Some(TypeKind::Tensor {
            shape: Some(dims), ..
        }) => match dims.last().map(|d| &d.value) {
            Some(DimValue::Known(n)) => Some(*n),
            _ => None,
        },
        _ => None,
    };
    let dim = dim
        .or_else(|| gamma.and_then(last_dim).filter(|&n| n > 1))
        .or_else(|| beta.and_then(last_dim).filter(|&n| n > 1))?;
    let x_rank = g.known_rank(x);
    // γ/β as [D]: values along the last axis only, not widening x's rank.
    let expand = |o: Option<Outlet>, default: f32| -> Option<(Option<Outlet>, Vec<f32>)> {
        let Some(o) = o else {
            return Some((None, vec![default; dim as usize]));
        };
        let t = g.const_tensor(o)?;
        let leading_ones = t.dims.iter().rev().skip(1).all(|&n| n == 1);
        let fits = t.dims.len() <= 1 || x_rank.is_some_and(|r| r >= t.dims.len());
        if !leading_ones || !fits {
            return None;
        }
        let v = t.to_f32().ok()?;
        match v.len() as i64 {
            n if n == dim && t.dims == [dim] => Some((Some(o), v)),
            n if n == dim => Some((None, v)),
            1 => Some((None, vec![v[0]; dim as usize])),
            _ => None,
        }
    };
    let (scale, scale_values) = expand(gamma, 1.0)?;
    let (bias, bias_values) = expand(beta, 0.0)?;
    Some(LayerNormMatch {
        fusion: Fusion { x, nodes, out },
        epsilon,
        scale,
        bias,
        scale_values,
        bias_values,
    })
}
