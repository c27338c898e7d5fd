//! # prune-channels
//!
//! **What:** structured pruning. Removes whole output channels (Conv and
//! ConvTranspose filters, Gemm/MatMul columns) with the smallest L1 (or L2)
//! norm, to a target `ratio`, and rewrites every consumer so the tensors are
//! physically smaller: the next Conv's input channels (or Gemm/MatMul rows),
//! BatchNorm parameters, biases, per-channel constants of Add/Mul/…,
//! depthwise filters and their `group` count, Concat offsets, Split sizes,
//! value_info dims.
//!
//! **Why:** zeros do not speed up dense kernels (measured: unstructured
//! zeros leave tract's and ONNX Runtime's speed unchanged, while removing
//! half the output channels runs 1.6–2x faster); a Conv with half the
//! channels does half the work, and so does the Conv after it. This is not
//! exact: outputs change, by how much depends on the model (the report says
//! what was removed; `--verify` measures it). Each group keeps a multiple
//! of 16 or 8 channels (`align`), the counts ONNX Runtime's blocked
//! convolution kernels take: unaligned counts made pruned CNNs slower there
//! than unpruned ones (`kept_count`). A group whose rounded count strays
//! from the ratio by more than an eighth of its channels is left alone.
//!
//! **Measured, not assumed** (`measure`): which counts pay depends on the
//! CPU (ONNX Runtime's block is 8 with AVX2, 16 with AVX-512, where a group
//! of 32 kept at 24 ran slower than unpruned). With ONNX Runtime installed,
//! the pruned model, and the same in whole blocks of 16 (`align=16`, which
//! both blocks divide), are timed there against the given model
//! (`toolkit::timing`, on `--inputs` or random samples) and the fastest is
//! kept, the given model included: the pass never hands back a model slower
//! than it was given. The report gives each form's speedup, and the options
//! that give the kept one without timing, for byte-identical reruns.
//!
//! ```text
//! y = Conv(x, w: f32[16,3,3,3], b: f32[16])        y = Conv(x, w': f32[8,3,3,3], b': f32[8])
//! r = Relu(y)                                 →    r = Relu(y)
//! z = Conv(r, v: f32[32,16,3,3])                   z = Conv(r, v': f32[32,8,3,3])
//!
//! p, q = Split(r) {axis=1, split=[6, 10]}     →    p, q = Split(r) {axis=1, split=[3, 5]}
//! ```
//!
//! **Dependency analysis.** Every layer with constant weights starts a
//! *channel space* (its output channels). The pass follows each tensor's
//! channel axis through the graph: unary and pooling ops keep it; elementwise
//! binary ops (residual `Add`, squeeze-excite `Mul`) tie the spaces of their
//! operands into one group, pruned with one set of kept indices; Concat on the
//! channel axis lays spaces side by side (offsets follow); a depthwise Conv
//! carries its input's space through. A Split on the channel axis cuts the
//! spaces it covers into *parts* (ranges of a layer's output channels) at its
//! boundaries, and each output is the parts of its range: a part is pruned on
//! its own (with whatever its output is tied to), so one layer's channels may
//! be pruned in one part and kept in another that reaches something not
//! followed. Cutting a space cuts its whole group the same way (channel `i` of
//! every member stays tied), and tying two layouts whose spaces differ cuts
//! both at each other's boundaries. The new sizes are written in the Split's
//! own form: its `split` attribute (before opset 13) or `split` input (an
//! int64 constant, from 13); without sizes (equal parts, or `num_outputs` at
//! opset 18) the node is kept as it is when the new parts are still what that
//! form gives, else the sizes are added, as the attribute before opset 13
//! and as an input from 13. A group is left alone, and reported with
//! the reason, when any of its tensors reaches something the pass cannot
//! follow exactly (Reshape, Transpose, Slice, a Split with non-constant
//! sizes, a grouped but not depthwise Conv, a graph output, a subgraph, a
//! non-constant weight). The importance of channel `c` of a group is the sum,
//! over the group's layers (or parts of them), of the norm of the weights
//! producing `c` divided by that layer's mean norm (layers of different
//! scales weigh the same); ties keep the lower index. The report names a part
//! by its layer and range of output channels, as in `conv[0:6]`.
//!
//! Weights in `Constant` nodes (paddle exports) are lifted to initializers
//! first (`lift-constants`). Only the main graph is pruned.
//!
//! **Refit:** with calibration data (`--inputs`), every layer whose input
//! channels shrank (Conv with `group=1`, Gemm, MatMul) is refitted, in graph
//! order, by ridge least squares: its weights (and bias) W minimise
//! ‖A·W − Y‖² + λ‖W − W₀‖², where A is its input in the pruned model so far
//! (im2col patches for a Conv), Y its output in the original model (the
//! teacher) on the output channels it keeps, W₀ its pruned weights and
//! λ = `ridge`·trace(AᵀA)/d. A layer with fewer than twice as many data
//! rows as weights per output is not refitted, nor kept when the fit is no
//! better than W₀ on the data. Without `--inputs` (or with `refit=false`) the result is
//! unrefitted and the report says so. The errors the report gives for each
//! refit are measured on the calibration data itself; judge the model on
//! held-out data (`--verify-inputs`).
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them); at least one channel of a group is kept.

use crate::ir::{DataType, DimValue, Graph, Model, NodeId, Outlet, Patch, Tensor, TypeKind};
use crate::passes::toolkit::timing;
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{List, Options, Pass, PassContext, Pipeline};
use crate::runtime::Engine;
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;

mod analysis;
mod follow;
mod plan;
mod refit;
mod rewrite;
#[cfg(test)]
mod tests;

#[cfg(test)]
use plan::{alignment, kept_count, strays};
pub(crate) use rewrite::channel_norms;
use rewrite::split_sizes;

pub const INFO: PassInfo = PassInfo {
    name: "prune-channels",
    summary: "structured pruning: remove whole output channels by norm and shrink every consumer",
    exact: false,
    data: DataUse::Runs,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    struct Opts {
        ratio: f64 = "ratio", "0.3", "fraction of each group's channels to remove, in [0, 1)";
        norm: String = "norm", "l1", "channel importance: l1 or l2 norm of its weights";
        skip: List = "skip", "",
            "leave groups alone whose layer names contain one of these (a|b)";
        min_channels: usize = "min-channels", "8", "leave groups with fewer channels alone";
        align: List = "align", "16|8",
            "keep a multiple of these many channels per group, the nearest to the ratio: the largest that is at most a quarter of the group, else the smallest; a group it moves more than an eighth of its channels from the ratio is left alone (ONNX Runtime's blocked kernels want 8 or 16; 1: the exact ratio)";
        measure: bool = "measure", "true",
            "with ONNX Runtime installed, time the pruned model there (also in whole blocks of 16) against the given one and keep the fastest, the given one included";
        refit: bool = "refit", "true",
            "with --inputs, refit the layers after pruned ones by least squares";
        ridge: f64 = "ridge", "0.01",
            "refit regularisation (>= 0), relative to the mean feature energy";
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Norm {
    L1,
    L2,
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let o = Opts::parse(options)?;
    let ratio = o.ratio;
    ensure!(
        (0.0..1.0).contains(&ratio),
        "ratio={ratio} is outside [0, 1)"
    );
    let norm = match o.norm.as_str() {
        "l1" => Norm::L1,
        "l2" => Norm::L2,
        other => bail!("norm='{other}' is not valid (l1 or l2)"),
    };
    let mut align = o
        .align
        .iter()
        .map(|a| match a.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => bail!("align='{a}' is not valid (whole numbers >= 1, a|b)"),
        })
        .collect::<Result<Vec<usize>>>()?;
    align.sort_unstable_by(|a, b| b.cmp(a));
    align.dedup();
    ensure!(!align.is_empty(), "align is empty (1: the exact ratio)");
    let ridge = o.ridge;
    ensure!(
        ridge.is_finite() && ridge >= 0.0,
        "ridge={ridge} must be a number >= 0"
    );
    Ok(Box::new(PruneChannels {
        ratio,
        norm,
        refit: o.refit,
        measure: o.measure,
        ridge,
        skip: o.skip.0,
        min_channels: o.min_channels,
        align,
        lift: Pipeline::parse("lift-constants")?,
    }))
}

struct PruneChannels {
    ratio: f64,
    norm: Norm,
    refit: bool,
    measure: bool,
    ridge: f64,
    skip: Vec<String>,
    min_channels: usize,
    /// Channel multiples, largest first.
    align: Vec<usize>,
    lift: Pipeline,
}

impl Pass for PruneChannels {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        // Timed in ONNX Runtime when asked, with samples to time on and the
        // library found; the model as it came is then kept to hand back.
        let timed_data = timing::samples(self.measure, cx);
        let given = timed_data.map(|_| model.clone());
        self.lift.run_nested(model, cx)?;
        let g = &model.graph;
        let mut a = Analysis::default();
        for id in g.op_order()? {
            a.visit(g, id);
        }
        for out in &g.outputs {
            if let Some(l) = a.layouts.get(&out.outlet).cloned() {
                let reason = format!("reaches graph output {}", g.outlet_name(out.outlet));
                a.block_layout(&l, &reason);
            }
        }
        // Groups (of leaf spaces), ordered by their root, the lowest space
        // index: spaces are numbered in graph order, parts as they are cut
        // (deterministic).
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for s in 0..a.spaces.len() {
            if a.spaces[s].parts.is_empty() {
                groups.entry(a.find(s)).or_default().push(s);
            }
        }
        let opset = model.opset("").context("no default-domain opset")?;
        // The plan asked for, and, to be timed beside it, whole blocks of 16
        // only: the multiple both of ONNX Runtime's blocks divide.
        let mut plans = vec![self.plan(g, &a, &groups, &self.align)?];
        if timed_data.is_some() && self.align != [16] {
            let blocks = self.plan(g, &a, &groups, &[16])?;
            if blocks.kept != plans[0].kept && !blocks.kept.is_empty() {
                plans.push(blocks);
            }
        }
        let mut pruned_models = vec![];
        for plan in &plans {
            let mut m = model.clone();
            a.rewrite(g, &plan.kept, opset)?.apply(&mut m.graph)?;
            pruned_models.push(m);
        }
        let (chosen, measured) = match (timed_data, &given) {
            (Some(data), Some(given)) if !plans[0].kept.is_empty() => {
                let timed = timing::time_in(Engine::Ort, data, given, &pruned_models)
                    .context("timing the pruned model in ONNX Runtime")?;
                self.choose(&plans, &timed)
            }
            _ => (
                Some(0),
                timing::not_timed(self.measure, cx, "nothing to time: no group is pruned"),
            ),
        };
        let Some(chosen) = chosen else {
            // Pruning does not pay where the model runs: handed back as it came.
            *model = given.context("a timed run keeps the given model")?;
            let plan = &plans[0];
            return Ok(json!({
                "ratio": self.ratio,
                "kept": "the given model: no pruned form was faster in ONNX Runtime",
                "measured": measured,
                "groups_pruned": 0,
                "channels_before": plan.before,
                "channels_after": plan.before,
                "would_prune": plan.pruned,
                "left_alone": plan.left,
            }));
        };
        let plan = plans.swap_remove(chosen);
        let pruned_model = pruned_models.swap_remove(chosen);
        // Layers whose input channels shrink: the refit candidates.
        let layers: Vec<Layer> = a
            .consumers
            .iter()
            .filter(|c| a.indices(&c.segs, &plan.kept).len() != a.size(&c.segs))
            .map(|c| Layer {
                node: c.node,
                kept_out: match c.out_space {
                    Some(s) => a.indices(&[s], &plan.kept),
                    None => (0..c.outputs).collect(),
                },
            })
            .collect();
        let data = cx.data.as_ref().filter(|d| !d.random);
        // The unpruned model (constants lifted) is the refit's teacher.
        let teacher = std::mem::replace(model, pruned_model);
        let (refit, refit_reason, refit_layers) = match data {
            Some(data) if self.refit && !layers.is_empty() => {
                let r = refit::refit(&teacher, model, data, &layers, self.ridge)?;
                let n = r.iter().filter(|e| e["refit"] == true).count();
                let why = format!(
                    "{n} of {} layers after pruned ones refitted by ridge least squares on {} sample(s) from {}; rel_err_* are on that same data",
                    layers.len(),
                    data.samples.len(),
                    data.source
                );
                (n > 0, why, r)
            }
            _ if !self.refit => (false, "refit=false: unrefitted".to_string(), vec![]),
            _ if layers.is_empty() => (false, "no layer to refit".to_string(), vec![]),
            _ => (
                false,
                "no --inputs: the result is unrefitted (accuracy is that of the pruned weights)"
                    .to_string(),
                vec![],
            ),
        };
        Ok(json!({
            "ratio": self.ratio,
            "norm": if self.norm == Norm::L1 { "l1" } else { "l2" },
            "measured": measured,
            "groups_pruned": plan.pruned.len(),
            "groups_left": plan.left.len(),
            "channels_before": plan.before,
            "channels_after": plan.after,
            "pruned": plan.pruned,
            "left_alone": plan.left,
            "refit": refit,
            "refit_reason": refit_reason,
            "refit_layers": refit_layers,
        }))
    }
}

/// The channel axis of a tensor: which channel spaces lie along `axis`, side by side.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    rank: usize,
    axis: usize,
    segs: Vec<usize>,
}

/// A space of channels: one layer's output channels, or a range of them
/// once a Split (or a tie with another layout) has cut the space in parts.
struct Space {
    size: usize,
    source: NodeId,
    /// The output-channel axis of its weight (input 1).
    weight_axis: usize,
    /// Where the range starts among the source's output channels, and how
    /// many output channels the source has.
    start: usize,
    whole: usize,
    /// The parts it was cut into, side by side (none: a leaf). Only leaves
    /// belong to groups; a cut space stands for its parts wherever it is used.
    parts: Vec<usize>,
}

/// A layer whose input channels were pruned, to refit.
struct Layer {
    node: NodeId,
    /// The output channels it keeps (indices into the unpruned output).
    kept_out: Vec<usize>,
}

/// A layer reading pruned channels: its input channel spaces, the space of
/// its own output channels (if any), and how many output channels it had.
struct Consumer {
    node: NodeId,
    segs: Vec<usize>,
    out_space: Option<usize>,
    outputs: usize,
}

/// Feeds input `slot` of `node` from a new initializer: it takes the old
/// one's name when nothing else uses it, else a new name.
fn replace_input(g: &Graph, patch: &mut Patch, node: NodeId, slot: usize, tensor: Tensor) {
    let o = g.input(node, slot).expect("an input");
    let name = g.outlet_name(o).to_string();
    let src = if g.sole_user(o).is_some() {
        patch.remove(o.node);
        patch.add_const(&name, tensor)
    } else {
        patch.add_const(&format!("{name}_refit"), tensor)
    };
    patch.rewire(node, slot, Some(src));
}

/// A constant input to cut: (node, slot) → cuts along (axis, spaces side by side).
type Cuts = BTreeMap<(NodeId, usize), Vec<(usize, Vec<usize>)>>;

#[derive(Default)]
struct Analysis {
    spaces: Vec<Space>,
    parent: Vec<usize>,
    /// Per space (read at the root): why its group must be left alone.
    blocked: Vec<Option<String>>,
    layouts: BTreeMap<Outlet, Layout>,
    cuts: Cuts,
    /// Depthwise Convs whose `group` follows the channels of these spaces.
    groups: BTreeMap<NodeId, Vec<usize>>,
    /// Layers reading channel spaces, in graph order.
    consumers: Vec<Consumer>,
    /// Splits along the channel axis: the spaces of each output.
    splits: BTreeMap<NodeId, Vec<Vec<usize>>>,
}

/// What following one node yields: its output layouts and the cuts it needs.
#[derive(Default)]
struct Follow {
    /// (output slot, layout); the segments are filled in when the node
    /// starts a new space.
    outputs: Vec<(usize, Layout)>,
    /// (input slot, axis, spaces side by side); no spaces = the new space.
    cuts: Vec<(usize, usize, Vec<usize>)>,
    /// Layouts whose spaces are tied, segment by segment.
    unions: Vec<(Vec<usize>, Vec<usize>)>,
    /// The node starts a space: (channels, output-channel axis of its weight).
    new_space: Option<(usize, usize)>,
    /// A depthwise Conv: its `group` follows these spaces.
    group: Option<Vec<usize>>,
    /// Input spaces and output channel count of a layer reading channels.
    consumer: Option<(Vec<usize>, usize)>,
    /// A Split along the channel axis: the input layout and the part sizes.
    split: Option<(Layout, Vec<usize>)>,
}
