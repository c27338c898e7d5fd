//! The passes, one per file, registered in one alphabetical list.
//!
//! Each file opens with a doc comment: what the pass does, why, before →
//! after, options. Passes match on `&Graph` and change it only through
//! `ir::Patch`; they do no IO.

pub use crate::ir::constant_value;
pub use lift_constants::constant_inputs;

use crate::ir::memo::TensorMemo;
use crate::ir::patch::{rewrite_model, Rule, RuleContext};
use crate::ir::Model;
use crate::pipeline::{OptionInfo, Options, Pass, PassContext};
use anyhow::Result;
use std::sync::Arc;

/// A pass that is only its rules: it applies them to a fixpoint in every
/// graph (subgraphs included) and reports how many patches applied, under
/// `count`. Such a pass's `build` is `|_| RulePass::boxed(RULES, "fused")`
/// (see [`PassInfo::exact`]).
pub(crate) struct RulePass {
    rules: &'static [Rule],
    count: &'static str,
    /// Lent to the rules (`RuleContext::memo`) by a composite pass that owns it.
    memo: Option<Arc<TensorMemo>>,
}

impl RulePass {
    pub fn boxed(rules: &'static [Rule], count: &'static str) -> Result<Box<dyn Pass>> {
        Ok(Box::new(RulePass {
            rules,
            count,
            memo: None,
        }))
    }

    /// The same pass, whose rules see `memo`.
    pub fn with_memo(
        rules: &'static [Rule],
        count: &'static str,
        memo: Arc<TensorMemo>,
    ) -> Box<dyn Pass> {
        Box::new(RulePass {
            rules,
            count,
            memo: Some(memo),
        })
    }
}

impl Pass for RulePass {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let mut ctx = RuleContext::for_model(model, None);
        ctx.memo = self.memo.clone();
        let applied = rewrite_model(model, &ctx, self.rules)?;
        Ok(serde_json::json!({ self.count: applied }))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DataUse {
    None,
    /// Uses `--inputs` when given, works from the weights alone otherwise.
    IfGiven,
    /// Fits to `--inputs` when given, and runs the model on samples to time
    /// it: without `--inputs`, on random ones (timing needs no real data).
    Runs,
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

impl PassInfo {
    /// An exact pass with no options that uses no data, as most are: a
    /// rule-only pass is `PassInfo::exact(name, summary, |_|
    /// RulePass::boxed(RULES, "fused"))`.
    pub const fn exact(
        name: &'static str,
        summary: &'static str,
        build: fn(&Options) -> Result<Box<dyn Pass>>,
    ) -> PassInfo {
        PassInfo {
            name,
            summary,
            exact: true,
            data: DataUse::None,
            options: &[],
            build,
        }
    }

    /// The same pass, with these options (its `pass_options!` table).
    pub const fn with_options(mut self, options: &'static [OptionInfo]) -> PassInfo {
        self.options = options;
        self
    }
}

/// Declares the pass modules and lists their `INFO`s in [`PASSES`].
macro_rules! registry {
    ($($pass:ident,)*) => {
        $(pub(crate) mod $pass;)*

        /// Every pass, in alphabetical order.
        pub const PASSES: &[PassInfo] = &[$($pass::INFO,)*];
    };
}

// The registry: adding a pass is its file and one line here.
registry! {
    cse,
    dce,
    eliminate,
    fold_constants,
    fold_shapes,
    fuse,
    fuse_activation,
    fuse_bias,
    fuse_bn,
    fuse_cast,
    fuse_concat,
    fuse_gemm,
    fuse_pad,
    fuse_parallel_matmul,
    fuse_reshape,
    fuse_scale,
    fuse_slice,
    fuse_transpose,
    infer_shapes,
    lift_constants,
    prune,
    prune_channels,
    quant,
    raise_opset,
    strip_debug,
    svd,
}

#[cfg(test)]
mod filetests;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod toolkit;

/// The README's table of pass options, generated from the declarations
/// (`pass_options!`) so that the two cannot drift: a test compares it with
/// the README and rewrites it when `UPDATE_README=1`.
pub fn options_table() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| pass | option | default | meaning |\n|---|---|---|---|\n");
    for p in PASSES {
        for (k, o) in p.options.iter().enumerate() {
            let pass = if k == 0 {
                format!("`{}`", p.name)
            } else {
                String::new()
            };
            let default = match o.default {
                "" => "(unset)".to_string(),
                d => format!("`{}`", cell(d)),
            };
            out.push_str(&format!(
                "| {pass} | `{}` | {default} | {} |\n",
                o.name,
                cell(o.help)
            ));
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- options: generated from the pass declarations; UPDATE_README=1 cargo test --lib readme -->\n";
    const END: &str = "<!-- /options -->";

    /// The README's options table is the registry's, and its pass table
    /// names every registered pass once and nothing else.
    #[test]
    fn readme_matches_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find(BEGIN).expect("README has the options markers") + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README closes the options table");
        let want = options_table();
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                readme[start..end],
                want,
                "README's options table is stale: UPDATE_README=1 cargo test --lib readme"
            );
        }
        // The descriptive table: the rows "| `name` | ..." above the options.
        let section = &readme[readme.find("## Passes").unwrap()..start];
        let mut listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        listed.sort_unstable();
        let registered: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        assert_eq!(
            listed, registered,
            "README's pass table and the registry differ"
        );
    }
}
