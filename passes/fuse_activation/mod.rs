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

mod patterns;
#[cfg(test)]
mod tests;

use crate::ir::patch::{rewrite_to_fixpoint, Rule, RuleContext, Src};
use crate::ir::{Attribute, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::PassInfo;
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::{ensure, Result};
use patterns::{
    match_gelu, match_hardsigmoid, match_hardswish, match_layer_norm, match_x_hardsigmoid,
};
use serde_json::json;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-activation",
    "fuse written-out HardSwish, HardSigmoid, Gelu and LayerNormalization into their ONNX ops",
    build,
)
.with_options(Opts::TABLE);

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
