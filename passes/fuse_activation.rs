//! # fuse-activation
//!
//! **What:** replaces activation and normalisation subgraphs, written out in
//! primitive operators, by the one ONNX operator that computes them, when the
//! opset the rules may emit (`RuleContext::opset`) has it. Subgraphs included.
//!
//! | pattern | operator | opset |
//! |---|---|---|
//! | `x * HardSigmoid(x, α=1/6, β=½)`, `Mul(x, Clip(x + 3, 0, 6)) / 6` (or `* (1/6)`), `x * (Clip(x + 3, 0, 6) / 6)` | `HardSwish(x)` | 14 |
//! | `Clip(x + 3, 0, 6) / 6` (or `* (1/6)`) | `HardSigmoid(x, α=1/6, β=½)` | 6 |
//! | `0.5 · x · (1 + Erf(x / √2))`, with `/ √2` or `· (1/√2)`, the ½ applied to `x`, to `1 + Erf`, or last (`· 0.5` or `/ 2`) | `Gelu(x)` | 20 |
//! | `ReduceMean → Sub → Pow(2) → ReduceMean → Add(ε) → Sqrt → Div [→ Mul(γ)] [→ Add(β)]` over the last axis | `LayerNormalization(x, γ, β, ε)` | 17 |
//!
//! **Why:** PaddlePaddle, older PyTorch exports and hand-written graphs spell
//! these out; each primitive is a kernel launch and a round trip through
//! memory in ONNX Runtime / TensorRT, while the fused operator is one kernel.
//!
//! ```text
//! a = Add(x, 3)
//! c = Clip(a, 0, 6)                       →      y = HardSwish(x)
//! m = Mul(x, c)
//! y = Div(m, 6)
//! ```
//! A pattern matches only when its constants are the exact values (3, 6, 0,
//! 0.5, 1, 2; the nearest float, within 1e-6 relative, for 1/6, √2 and 1/√2),
//! scalars that do not widen the result's rank, and when every intermediate
//! value has no other consumer and is no graph output. LayerNormalization
//! needs f32 (its statistics are computed in f32), ε and γ/β constant, and the
//! normalised size known (from the type of `x`, or from γ/β); a missing γ/β
//! becomes ones/zeros. The result is the same up to float rounding (well
//! within 1e-5 relative). Patterns left because the opset is too old are
//! counted in the report (`hardswish_needs_opset_14`, ...); at opset 6–13
//! `x * (Clip(x + 3, 0, 6) / 6)` still becomes `x * HardSigmoid(x)`.
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them).

use crate::ir::patch::{rewrite_to_fixpoint, Rule, RuleContext, Src};
use crate::ir::{
    AttrValue, Attribute, DataType, DimValue, Graph, Model, NodeId, Operator, Outlet, Patch,
    Tensor, TypeKind,
};
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::{ensure, Result};
use serde_json::json;

pub const INFO: PassInfo = PassInfo {
    name: "fuse-activation",
    summary:
        "fuse written-out HardSwish, HardSigmoid, Gelu and LayerNormalization into their ONNX ops",
    exact: true,
    data: DataUse::None,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    /// Shared with `fuse`, which passes it on.
    pub(crate) struct Opts {
        target_opset: i64 = "target-opset", "0",
            "emit no op newer than this opset (0: the model's own); for older runtimes";
    }
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let Opts {
        target_opset: target,
    } = Opts::parse(options)?;
    ensure!(target >= 0, "target-opset must be >= 0");
    Ok(Box::new(FuseActivation {
        target: (target > 0).then_some(target),
    }))
}

struct FuseActivation {
    target: Option<i64>,
}

/// HardSwish before HardSigmoid: both start at the same Clip, and HardSwish
/// takes the longer pattern.
pub const RULES: &[Rule] = &[
    Rule::any("hardswish", hardswish),
    Rule::any("hardsigmoid", hardsigmoid),
    Rule::any("gelu", gelu),
    Rule::any("layer-norm", layer_norm),
];

impl Pass for FuseActivation {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let ctx = RuleContext::for_model(model, self.target);
        let mut fused = [0usize; 4];
        let mut waiting = Waiting::default();
        model.graph.visit_graphs_mut(&mut |g| {
            // Rule by rule (in RULES order), to count each one's patches.
            for (count, rule) in fused.iter_mut().zip(RULES) {
                *count += rewrite_to_fixpoint(&ctx, g, std::slice::from_ref(rule))?;
            }
            waiting.count(&ctx, g);
            Ok(())
        })?;
        Ok(json!({
            "hardswish": fused[0],
            "hardsigmoid": fused[1],
            "gelu": fused[2],
            "layer_norm": fused[3],
            "hardswish_needs_opset_14": waiting.hardswish,
            "gelu_needs_opset_20": waiting.gelu,
            "layer_norm_needs_opset_17": waiting.layer_norm,
        }))
    }
}

/// Patterns left unfused because `ctx.opset` lacks their operator.
#[derive(Default)]
struct Waiting {
    hardswish: usize,
    gelu: usize,
    layer_norm: usize,
}

impl Waiting {
    fn count(&mut self, ctx: &RuleContext, g: &Graph) {
        for id in g.node_ids() {
            if ctx.opset < 14
                && (match_hardswish(g, id).is_some() || match_x_hardsigmoid(g, id).is_some())
            {
                self.hardswish += 1;
            }
            if ctx.opset < 20 && match_gelu(g, id).is_some() {
                self.gelu += 1;
            }
            if ctx.opset < 17 && match_layer_norm(g, id).is_some() {
                self.layer_norm += 1;
            }
        }
    }
}

/// A matched pattern: its input `x`, the nodes it replaces, and the value
/// the fused operator takes over.
struct Fusion {
    x: Outlet,
    nodes: Vec<NodeId>,
    out: Outlet,
}

impl Fusion {
    /// Adds `op` (named after the last matched node, its output taking the
    /// pattern's output name) to `patch`, moves every use over and removes the pattern.
    fn replace(
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

// HardSwish(x) = x · max(0, min(1, x/6 + 1/2)) = x · HardSigmoid(x, 1/6, 1/2)
//              = x · Clip(x + 3, 0, 6) / 6
fn hardswish(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    if ctx.opset < 14 {
        return Ok(None);
    }
    let Some(f) = match_hardswish(g, id).or_else(|| match_x_hardsigmoid(g, id)) else {
        return Ok(None);
    };
    let op = Operator::new("HardSwish", 1, vec![]);
    Ok(Some(f.replace(
        g,
        Patch::new(""),
        op,
        vec![Some(f.x.into())],
    )))
}

// HardSigmoid(x, 1/6, 1/2) = max(0, min(1, x/6 + 1/2)) = Clip(x + 3, 0, 6) / 6
fn hardsigmoid(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    // The HardSwish rule takes the Clip when a Mul by x follows.
    if ctx.opset < 6 || (ctx.opset >= 14 && match_hardswish(g, id).is_some()) {
        return Ok(None);
    }
    let Some(f) = match_hardsigmoid(g, id) else {
        return Ok(None);
    };
    let op = Operator::new(
        "HardSigmoid",
        1,
        vec![
            Attribute::float("alpha", 1.0 / 6.0),
            Attribute::float("beta", 0.5),
        ],
    );
    Ok(Some(f.replace(
        g,
        Patch::new(""),
        op,
        vec![Some(f.x.into())],
    )))
}

// Gelu(x) = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
fn gelu(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    if ctx.opset < 20 {
        return Ok(None);
    }
    let Some(f) = match_gelu(g, id) else {
        return Ok(None);
    };
    let op = Operator::new("Gelu", 1, vec![]);
    Ok(Some(f.replace(
        g,
        Patch::new(""),
        op,
        vec![Some(f.x.into())],
    )))
}

// LayerNormalization(x, γ, β, ε, axis=-1)
//   = (x - mean(x)) / sqrt(mean((x - mean(x))²) + ε) · γ + β,   means over the last axis
fn layer_norm(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    if ctx.opset < 17 {
        return Ok(None);
    }
    let Some(ln) = match_layer_norm(g, id) else {
        return Ok(None);
    };
    let mut patch = Patch::new("");
    let mut param = |given: Option<Outlet>, values: Vec<f32>, name: &str| -> Src {
        match given {
            Some(o) => o.into(),
            None => patch.add_const(name, Tensor::from_f32(vec![values.len() as i64], &values)),
        }
    };
    let base = g.outlet_name(ln.fusion.out).to_string();
    let scale = param(ln.scale, ln.scale_values, &format!("{base}.scale"));
    let bias = param(ln.bias, ln.bias_values, &format!("{base}.bias"));
    let op = Operator::new(
        "LayerNormalization",
        3,
        vec![
            Attribute::int("axis", -1),
            Attribute::float("epsilon", ln.epsilon),
        ],
    );
    let inputs = vec![Some(ln.fusion.x.into()), Some(scale), Some(bias)];
    Ok(Some(ln.fusion.replace(g, patch, op, inputs)))
}

// ---- matchers (read-only; shared by the rules and the opset report) ----

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
fn match_hardswish(g: &Graph, clip: NodeId) -> Option<Fusion> {
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
        let m = g.sole_user(h).filter(|&m| mul_partner(g, m, h) == Some(x))?;
        return Some(Fusion {
            x,
            nodes: vec![add, clip, u, m],
            out: Outlet::new(m, 0),
        });
    }
    None
}

/// At the HardSigmoid: `x · HardSigmoid(x, 1/6, 1/2)`.
fn match_x_hardsigmoid(g: &Graph, hs: NodeId) -> Option<Fusion> {
    let op = g.op(hs)?;
    let alpha = op.attr_float("alpha", 0.2) as f64;
    if !op.is("HardSigmoid") || !near(alpha, SIXTH) || op.attr_float("beta", 0.5) != 0.5 {
        return None;
    }
    let x = g.input(hs, 0)?;
    let h = Outlet::new(hs, 0);
    let m = g.sole_user(h).filter(|&m| mul_partner(g, m, h) == Some(x))?;
    Some(Fusion {
        x,
        nodes: vec![hs, m],
        out: Outlet::new(m, 0),
    })
}

/// At the Clip: `Clip(x + 3, 0, 6) / 6` (or `· 1/6`).
fn match_hardsigmoid(g: &Graph, clip: NodeId) -> Option<Fusion> {
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
fn match_gelu(g: &Graph, erf: NodeId) -> Option<Fusion> {
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
        let m2 = g.sole_user(m1o).filter(|&m2| mul_partner(g, m2, m1o) == Some(x))?;
        return Some(fusion(m2, m2));
    }
    None
}

struct LayerNormMatch {
    fusion: Fusion,
    epsilon: f32,
    /// The γ/β constants when usable as they are (shape `[D]`).
    scale: Option<Outlet>,
    bias: Option<Outlet>,
    /// Their values expanded to `[D]`, for a new constant otherwise.
    scale_values: Vec<f32>,
    bias_values: Vec<f32>,
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
fn match_layer_norm(g: &Graph, rm1: NodeId) -> Option<LayerNormMatch> {
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
    let sqrt =
        g.sole_user(Outlet::new(add, 0)).filter(|&s| g.op(s).is_some_and(|o| o.is("Sqrt")))?;
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

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::{check, rewrite};

    const PASS: &str = "fuse-activation";

    fn scalar(b: &mut ModelBuilder, name: &str, v: f32) -> Outlet {
        b.init(name, Tensor::from_f32(vec![], &[v]))
    }

    /// Input `x: f32[2, 3, 4, 4]`, spread to about [-5, 5] (so HardSwish's
    /// clipped regions are reached), at `opset`.
    fn spread_input(opset: i64) -> (ModelBuilder, Outlet) {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4, 4]);
        let five = scalar(&mut b, "five", 5.0);
        let x = b.op("Mul", &[x, five], vec![], "spread");
        (b, x)
    }

    /// `Clip(x + 3, 0, 6)` (bounds as inputs, or attributes before opset 11).
    fn relu6_shifted(b: &mut ModelBuilder, x: Outlet, opset: i64, three: f32) -> Outlet {
        let three = scalar(b, "three", three);
        let a = b.op("Add", &[x, three], vec![], "add3");
        if opset < 11 {
            let bounds = vec![Attribute::float("min", 0.0), Attribute::float("max", 6.0)];
            b.op("Clip", &[a], bounds, "clip")
        } else {
            let lo = scalar(b, "zero", 0.0);
            let hi = scalar(b, "six", 6.0);
            b.op("Clip", &[a, lo, hi], vec![], "clip")
        }
    }

    /// PaddlePaddle's HardSwish: `Div(Mul(x, Clip(x + 3, 0, 6)), 6)`.
    fn paddle_hardswish(opset: i64, three: f32) -> Model {
        let (mut b, x) = spread_input(opset);
        let c = relu6_shifted(&mut b, x, opset, three);
        let m = b.op("Mul", &[x, c], vec![], "mul");
        let six = scalar(&mut b, "six_div", 6.0);
        let y = b.op("Div", &[m, six], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    fn ops(model: &Model, op_type: &str) -> usize {
        let g = &model.graph;
        g.node_ids()
            .filter(|&n| g.op(n).is_some_and(|op| op.is(op_type)))
            .count()
    }

    #[test]
    fn paddle_hardswish_fuses_at_opset_14() {
        let after = check(
            "fuse-activation__hardswish_paddle",
            &paddle_hardswish(14, 3.0),
            PASS,
        );
        assert_eq!(ops(&after, "HardSwish"), 1);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn hardswish_variants_fuse() {
        // Mul(x, Clip(x + 3, 0, 6)) · (1/6), and x · (Clip(x + 3, 0, 6) / 6).
        let (mut b, x) = spread_input(14);
        let c = relu6_shifted(&mut b, x, 14, 3.0);
        let m = b.op("Mul", &[c, x], vec![], "mul");
        let sixth = scalar(&mut b, "sixth", 1.0 / 6.0);
        let y1 = b.op("Mul", &[sixth, m], vec![], "y1");
        let three = scalar(&mut b, "three_b", 3.0);
        let a = b.op("Add", &[three, x], vec![], "add3_b");
        let (lo, hi) = (scalar(&mut b, "zero_b", 0.0), scalar(&mut b, "six_b", 6.0));
        let c = b.op("Clip", &[a, lo, hi], vec![], "clip_b");
        let six = scalar(&mut b, "six_div", 6.0);
        let h = b.op("Div", &[c, six], vec![], "hsig_b");
        let y2 = b.op("Mul", &[x, h], vec![], "y2");
        // x · HardSigmoid(x, 1/6, 1/2)
        let hs = b.op(
            "HardSigmoid",
            &[x],
            vec![
                Attribute::float("alpha", 1.0 / 6.0),
                Attribute::float("beta", 0.5),
            ],
            "hsig_c",
        );
        let y3 = b.op("Mul", &[hs, x], vec![], "y3");
        for y in [y1, y2, y3] {
            b.output(y, DataType::FLOAT);
        }
        let model = b.build().unwrap();
        let after = check("fuse-activation__hardswish_variants", &model, PASS);
        assert_eq!(ops(&after, "HardSwish"), 3);
        assert_eq!(after.graph.op_count(), 4);
    }

    #[test]
    fn hardsigmoid_form_fuses_alone_and_before_opset_14() {
        // Clip(x + 3, 0, 6) / 6, Clip bounds as attributes (opset 10), not followed by x·.
        let (mut b, x) = spread_input(10);
        let c = relu6_shifted(&mut b, x, 10, 3.0);
        let six = scalar(&mut b, "six_div", 6.0);
        let y = b.op("Div", &[c, six], vec![], "y");
        b.output(y, DataType::FLOAT);
        let after = check(
            "fuse-activation__hardsigmoid_clip_attributes",
            &b.build().unwrap(),
            PASS,
        );
        assert_eq!(ops(&after, "HardSigmoid"), 1);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn opset_13_leaves_hardswish_but_takes_its_hardsigmoid() {
        // Div(Mul(x, Clip), 6) has no HardSigmoid inside: left whole, and counted.
        let model = paddle_hardswish(13, 3.0);
        let after = rewrite(&model, PASS);
        assert_eq!(after.graph.op_count(), model.graph.op_count());
        let details = details_of(&model);
        assert_eq!(details["hardswish_needs_opset_14"], 1);
        assert_eq!(details["hardswish"], 0);
        // x · (Clip(x + 3, 0, 6) / 6) becomes x · HardSigmoid(x), counted as waiting.
        let (mut b, x) = spread_input(12);
        let c = relu6_shifted(&mut b, x, 12, 3.0);
        let six = scalar(&mut b, "six_div", 6.0);
        let h = b.op("Div", &[c, six], vec![], "hsig");
        let y = b.op("Mul", &[x, h], vec![], "y");
        b.output(y, DataType::FLOAT);
        let model = b.build().unwrap();
        let after = check("fuse-activation__hardswish_opset_12", &model, PASS);
        assert_eq!(ops(&after, "HardSigmoid"), 1);
        assert_eq!(ops(&after, "HardSwish"), 0);
        assert_eq!(details_of(&model)["hardswish_needs_opset_14"], 1);
    }

    #[test]
    fn wrong_constants_and_shared_intermediates_block_hardswish() {
        for three in [3.1, -3.0] {
            let model = paddle_hardswish(14, three);
            let after = rewrite(&model, PASS);
            assert_eq!(ops(&after, "HardSwish"), 0, "Add {three}");
            assert_eq!(after.graph.op_count(), model.graph.op_count());
        }
        // Clip's max 5 instead of 6.
        let (mut b, x) = spread_input(14);
        let three = scalar(&mut b, "three", 3.0);
        let a = b.op("Add", &[x, three], vec![], "add3");
        let (lo, hi) = (scalar(&mut b, "zero", 0.0), scalar(&mut b, "five_b", 5.0));
        let c = b.op("Clip", &[a, lo, hi], vec![], "clip");
        let m = b.op("Mul", &[x, c], vec![], "mul");
        let six = scalar(&mut b, "six_div", 6.0);
        let y = b.op("Div", &[m, six], vec![], "y");
        b.output(y, DataType::FLOAT);
        let model = b.build().unwrap();
        assert_eq!(
            rewrite(&model, PASS).graph.op_count(),
            model.graph.op_count()
        );
        // The Clip output also a graph output: used twice.
        let (mut b, x) = spread_input(14);
        let c = relu6_shifted(&mut b, x, 14, 3.0);
        let m = b.op("Mul", &[x, c], vec![], "mul");
        let six = scalar(&mut b, "six_div", 6.0);
        let y = b.op("Div", &[m, six], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.output(c, DataType::FLOAT);
        let model = b.build().unwrap();
        let after = rewrite(&model, PASS);
        assert_eq!(after.graph.op_count(), model.graph.op_count());
    }

    /// Gelu in three arrangements: `(x·(1+erf(x/√2)))·0.5`, `(x·0.5)·(1+erf(x·(1/√2)))`,
    /// `x·((1+erf(x/√2))·0.5)`.
    fn gelus(opset: i64, sqrt2: f32) -> Model {
        let (mut b, x) = spread_input(opset);
        let one = scalar(&mut b, "one", 1.0);
        let half = scalar(&mut b, "half", 0.5);
        let root2 = scalar(&mut b, "sqrt2", sqrt2);
        let inv_root2 = scalar(&mut b, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
        let one_plus_erf = |b: &mut ModelBuilder, k: &str, by_mul: bool| {
            let s = if by_mul {
                b.op("Mul", &[x, inv_root2], vec![], &format!("{k}.scale"))
            } else {
                b.op("Div", &[x, root2], vec![], &format!("{k}.scale"))
            };
            let e = b.op("Erf", &[s], vec![], &format!("{k}.erf"));
            b.op("Add", &[one, e], vec![], &format!("{k}.add"))
        };
        let a = one_plus_erf(&mut b, "a", false);
        let m = b.op("Mul", &[x, a], vec![], "a.mul");
        let ya = b.op("Mul", &[m, half], vec![], "ya");
        let bb = one_plus_erf(&mut b, "b", true);
        let h = b.op("Mul", &[half, x], vec![], "b.half");
        let yb = b.op("Mul", &[h, bb], vec![], "yb");
        let c = one_plus_erf(&mut b, "c", false);
        let h = b.op("Mul", &[c, half], vec![], "c.half");
        let yc = b.op("Mul", &[h, x], vec![], "yc");
        for y in [ya, yb, yc] {
            b.output(y, DataType::FLOAT);
        }
        b.build().unwrap()
    }

    #[test]
    fn gelu_fuses_at_opset_20() {
        let after = check(
            "fuse-activation__gelu",
            &gelus(20, std::f32::consts::SQRT_2),
            PASS,
        );
        assert_eq!(ops(&after, "Gelu"), 3);
        assert_eq!(after.graph.op_count(), 4);
    }

    #[test]
    fn gelu_needs_opset_20_and_exact_constants() {
        let model = gelus(19, std::f32::consts::SQRT_2);
        assert_eq!(
            rewrite(&model, PASS).graph.op_count(),
            model.graph.op_count()
        );
        assert_eq!(details_of(&model)["gelu_needs_opset_20"], 3);
        // √2 written as 1.41: only the arrangement scaling by 1/√2 fuses.
        let after = rewrite(&gelus(20, 1.41), PASS);
        assert_eq!(ops(&after, "Gelu"), 1);
    }

    #[test]
    fn target_opset_keeps_newer_ops_out() {
        let model = gelus(20, std::f32::consts::SQRT_2);
        for passes in ["fuse-activation{target-opset=19}", "fuse{target-opset=19}"] {
            let after = rewrite(&model, passes);
            assert_eq!(ops(&after, "Gelu"), 0, "{passes}");
        }
        // Under `fuse`, CSE first merges what the three arrangements share.
        assert!(ops(&rewrite(&model, "fuse{target-opset=20}"), "Gelu") >= 1);
    }

    #[test]
    fn transformer_at_opset_13_is_left_alone() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/transformer.onnx");
        let model = crate::onnx::load(std::path::Path::new(path)).unwrap();
        let model = rewrite(&model, "lift-constants");
        let after = rewrite(&model, PASS);
        assert_eq!(after.graph.op_count(), model.graph.op_count());
        let details = details_of(&model);
        assert_eq!(details["gelu_needs_opset_20"], 1);
        assert_eq!(details["layer_norm_needs_opset_17"], 2);
    }

    /// LayerNorm over the last axis of `x: f32[2, 4, 8]`, spelt out, with
    /// ReduceMean axes as attribute (opset < 18) or input.
    fn layer_norm_model(opset: i64, gamma: bool, beta: bool, exponent: f32) -> Model {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[2, 4, 8]);
        let mean = |b: &mut ModelBuilder, v: Outlet, name: &str| {
            if opset < 18 {
                b.op(
                    "ReduceMean",
                    &[v],
                    vec![Attribute::ints("axes", &[-1])],
                    name,
                )
            } else {
                let axes = b.init(&format!("{name}.axes"), Tensor::from_i64(vec![1], &[-1]));
                b.op("ReduceMean", &[v, axes], vec![], name)
            }
        };
        let mu = mean(&mut b, x, "mean");
        let d = b.op("Sub", &[x, mu], vec![], "sub");
        let two = scalar(&mut b, "two", exponent);
        let sq = b.op("Pow", &[d, two], vec![], "pow");
        let var = mean(&mut b, sq, "var");
        let eps = scalar(&mut b, "eps", 1e-5);
        let ve = b.op("Add", &[var, eps], vec![], "add_eps");
        let sd = b.op("Sqrt", &[ve], vec![], "sqrt");
        let mut y = b.op("Div", &[d, sd], vec![], "div");
        let values: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.25).collect();
        if gamma {
            let g = b.init("gamma", Tensor::from_f32(vec![8], &values));
            y = b.op("Mul", &[y, g], vec![], "mul_gamma");
        }
        if beta {
            let bias: Vec<f32> = values.iter().map(|v| v - 1.0).collect();
            let bt = b.init("beta", Tensor::from_f32(vec![1, 8], &bias));
            y = b.op("Add", &[bt, y], vec![], "y");
        }
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn layer_norm_fuses_at_opset_17_and_18() {
        let after = check(
            "fuse-activation__layer_norm_opset_17",
            &layer_norm_model(17, true, true, 2.0),
            PASS,
        );
        assert_eq!(ops(&after, "LayerNormalization"), 1);
        assert_eq!(after.graph.op_count(), 1);
        let after = check(
            "fuse-activation__layer_norm_opset_18_no_affine",
            &layer_norm_model(18, false, false, 2.0),
            PASS,
        );
        assert_eq!(ops(&after, "LayerNormalization"), 1);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn layer_norm_needs_opset_17_and_square() {
        let model = layer_norm_model(16, true, true, 2.0);
        assert_eq!(
            rewrite(&model, PASS).graph.op_count(),
            model.graph.op_count()
        );
        assert_eq!(details_of(&model)["layer_norm_needs_opset_17"], 1);
        let model = layer_norm_model(17, true, true, 3.0);
        assert_eq!(
            rewrite(&model, PASS).graph.op_count(),
            model.graph.op_count()
        );
        // x - mean also a graph output: used three times.
        let mut model = layer_norm_model(17, true, true, 2.0);
        let sub = model.graph.find_value("sub").unwrap();
        let info = model.graph.outputs[0].info.clone();
        model
            .graph
            .outputs
            .push(crate::ir::GraphOutput { outlet: sub, info });
        assert_eq!(
            rewrite(&model, PASS).graph.op_count(),
            model.graph.op_count()
        );
    }

    /// The pass's report on a copy of `model`.
    fn details_of(model: &Model) -> serde_json::Value {
        let mut m = model.clone();
        let pipeline = crate::pipeline::Pipeline::parse(PASS).unwrap();
        let reports = pipeline
            .run(&mut m, &Default::default(), &mut |_| {})
            .unwrap();
        reports[0].details.clone()
    }
}
