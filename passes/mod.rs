//! The passes, one per file, registered in one alphabetical list.
//!
//! Each file opens with a doc comment: what the pass does, why, before →
//! after, options. Passes match on `&Graph` and change it only through
//! `ir::Patch`; they do no IO.

mod cse;
mod dce;
mod eliminate;
mod fold_constants;
mod fold_shapes;
mod fuse;
pub(crate) mod fuse_activation;
mod fuse_bias;
mod fuse_bn;
mod fuse_cast;
mod fuse_gemm;
mod fuse_pad;
mod fuse_reshape;
mod fuse_slice;
mod fuse_transpose;
pub(crate) mod infer_shapes;
mod lift_constants;
mod prune;
mod prune_channels;
mod quant;
pub(crate) mod raise_opset;
mod svd;

pub use lift_constants::{constant_inputs, constant_value};

use crate::ir::patch::{rewrite_model, Rule, RuleContext};
use crate::ir::Model;
use crate::pipeline::{OptionInfo, Options, Pass, PassContext};
use anyhow::Result;

/// A pass that applies its rules to a fixpoint in every graph (subgraphs
/// included) and reports how many patches applied, under `count`.
pub(crate) struct RulePass {
    pub rules: &'static [(&'static str, Rule)],
    pub count: &'static str,
}

impl Pass for RulePass {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let ctx = RuleContext::for_model(model, None);
        let applied = rewrite_model(model, &ctx, self.rules)?;
        Ok(serde_json::json!({ self.count: applied }))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DataUse {
    None,
    /// Uses `--inputs` when given, works from the weights alone otherwise.
    IfGiven,
    /// Needs samples: without `--inputs`, random ones (with a warning).
    Required,
}

pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Changes outputs by floating-point rounding at most.
    pub exact: bool,
    /// Whether it fits to calibration data (`--inputs`), which the CLI then
    /// loads before the passes run and hands over in
    /// [`crate::pipeline::PassContext::data`].
    pub data: DataUse,
    pub options: &'static [OptionInfo],
    pub build: fn(&Options) -> Result<Box<dyn Pass>>,
}

pub const PASSES: &[PassInfo] = &[
    cse::INFO,
    dce::INFO,
    eliminate::INFO,
    fold_constants::INFO,
    fold_shapes::INFO,
    fuse::INFO,
    fuse_activation::INFO,
    fuse_bias::INFO,
    fuse_bn::INFO,
    fuse_cast::INFO,
    fuse_gemm::INFO,
    fuse_pad::INFO,
    fuse_reshape::INFO,
    fuse_slice::INFO,
    fuse_transpose::INFO,
    infer_shapes::INFO,
    lift_constants::INFO,
    prune::INFO,
    prune_channels::INFO,
    quant::INFO,
    raise_opset::INFO,
    svd::INFO,
];

#[cfg(test)]
pub(crate) mod testing;

/// `*` matches any run of characters; otherwise the whole name must match.
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The operators of the types in `ops` (default domain, main graph, in
/// graph order) that `layer` accepts, and a report entry
/// `{layer, op, kept: why}` for each it turns down. A layer is named after
/// its node, or its first output when the node has no name.
pub(crate) fn select_layers<L>(
    g: &crate::ir::Graph,
    ops: &[String],
    mut layer: impl FnMut(crate::ir::NodeId, &str) -> std::result::Result<L, String>,
) -> (Vec<L>, Vec<serde_json::Value>) {
    let (mut layers, mut report) = (vec![], vec![]);
    let Ok(order) = g.op_order() else {
        return (layers, report);
    };
    for id in order {
        let Some(op) = g.op(id) else { continue };
        if !op.is_default_domain() || !ops.contains(&op.op_type) {
            continue;
        }
        let name = match g.node(id).name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => g.outlet_name(crate::ir::Outlet::new(id, 0)).to_string(),
        };
        match layer(id, &name) {
            Ok(l) => layers.push(l),
            Err(why) => {
                report.push(serde_json::json!({ "layer": name, "op": op.op_type, "kept": why }))
            }
        }
    }
    (layers, report)
}
