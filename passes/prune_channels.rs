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
//! **Why:** zeros do not speed up dense kernels (tract, ONNX Runtime: see
//! FACTS.md); a Conv with half the channels does half the work, and so does
//! the Conv after it. This is not exact: outputs change, by how much depends
//! on the model (the report says what was removed; `--verify` measures it).
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
//! **Options:** `ratio=0.3` (fraction of each group's channels removed, in
//! [0, 1); at least one channel is kept), `norm=l1` (`l1` or `l2`),
//! `skip=` (`a|b`: leave groups alone whose layer names contain one of
//! these), `min-channels=8` (leave groups with fewer channels alone),
//! `refit=true`, `ridge=0.01` (≥ 0).

use crate::ir::{DataType, DimValue, Graph, Model, NodeId, Outlet, Patch, Tensor, TypeKind};
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{OptionInfo, Options, Pass, PassContext, Pipeline};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;

pub const INFO: PassInfo = PassInfo {
    name: "prune-channels",
    summary: "structured pruning: remove whole output channels by norm and shrink every consumer",
    exact: false,
    data: DataUse::IfGiven,
    options: &[
        OptionInfo {
            name: "ratio",
            default: "0.3",
            help: "fraction of each group's channels to remove, in [0, 1)",
        },
        OptionInfo {
            name: "norm",
            default: "l1",
            help: "channel importance: l1 or l2 norm of its weights",
        },
        OptionInfo {
            name: "skip",
            default: "",
            help: "leave groups alone whose layer names contain one of these (a|b)",
        },
        OptionInfo {
            name: "min-channels",
            default: "8",
            help: "leave groups with fewer channels alone",
        },
        OptionInfo {
            name: "refit",
            default: "true",
            help: "with --inputs, refit the layers after pruned ones by least squares",
        },
        OptionInfo {
            name: "ridge",
            default: "0.01",
            help: "refit regularisation (>= 0), relative to the mean feature energy",
        },
    ],
    build,
};

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Norm {
    L1,
    L2,
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let ratio: f64 = options.get("ratio")?;
    ensure!(
        (0.0..1.0).contains(&ratio),
        "pass 'prune-channels': ratio={ratio} is outside [0, 1)"
    );
    let norm = match options.get::<String>("norm")?.as_str() {
        "l1" => Norm::L1,
        "l2" => Norm::L2,
        other => bail!("pass 'prune-channels': norm='{other}' is not valid (l1 or l2)"),
    };
    let ridge: f64 = options.get("ridge")?;
    ensure!(
        ridge.is_finite() && ridge >= 0.0,
        "pass 'prune-channels': ridge={ridge} must be a number >= 0"
    );
    Ok(Box::new(PruneChannels {
        ratio,
        norm,
        refit: options.get("refit")?,
        ridge,
        skip: options.list("skip")?,
        min_channels: options.get("min-channels")?,
        lift: Pipeline::parse("lift-constants")?,
    }))
}

struct PruneChannels {
    ratio: f64,
    norm: Norm,
    refit: bool,
    ridge: f64,
    skip: Vec<String>,
    min_channels: usize,
    lift: Pipeline,
}

impl Pass for PruneChannels {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
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
        let mut kept: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let (mut pruned, mut left) = (vec![], vec![]);
        let (mut before_total, mut after_total) = (0, 0);
        for (&root, members) in &groups {
            let size = a.spaces[root].size;
            let layers: Vec<String> = members.iter().map(|&s| a.label(g, s)).collect();
            before_total += size;
            let keep = ((size as f64) * (1.0 - self.ratio)).round().max(1.0) as usize;
            let reason = if let Some(r) = &a.blocked[root] {
                Some(r.clone())
            } else if let Some(p) = self
                .skip
                .iter()
                .find(|p| layers.iter().any(|l| l.contains(p.as_str())))
            {
                Some(format!("skipped (matches '{p}')"))
            } else if size < self.min_channels {
                Some(format!("fewer than min-channels={}", self.min_channels))
            } else if keep >= size {
                Some("ratio removes no channel".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                after_total += size;
                left.push(json!({ "layers": layers, "channels": size, "reason": reason }));
                continue;
            }
            let score = a.scores(g, members, self.norm)?;
            let mut order: Vec<usize> = (0..size).collect();
            // Highest score first; ties keep the lower index.
            order.sort_by(|&x, &y| score[y].total_cmp(&score[x]).then(x.cmp(&y)));
            let mut keep_idx = order[..keep].to_vec();
            keep_idx.sort_unstable();
            after_total += keep;
            pruned.push(json!({ "layers": layers, "channels": size, "kept": keep }));
            kept.insert(root, keep_idx);
        }
        let opset = model.opset("").context("no default-domain opset")?;
        let patch = a.rewrite(g, &kept, opset)?;
        // Layers whose input channels shrink: the refit candidates.
        let layers: Vec<Layer> = a
            .consumers
            .iter()
            .filter(|c| a.indices(&c.segs, &kept).len() != a.size(&c.segs))
            .map(|c| Layer {
                node: c.node,
                kept_out: match c.out_space {
                    Some(s) => a.indices(&[s], &kept),
                    None => (0..c.outputs).collect(),
                },
            })
            .collect();
        let data = cx.data.as_ref().filter(|d| !d.random);
        let teacher = (self.refit && data.is_some() && !layers.is_empty()).then(|| model.clone());
        patch.apply(&mut model.graph)?;
        let (refit, refit_reason, refit_layers) = match (teacher, data) {
            (Some(teacher), Some(data)) => {
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
            "groups_pruned": pruned.len(),
            "groups_left": left.len(),
            "channels_before": before_total,
            "channels_after": after_total,
            "pruned": pruned,
            "left_alone": left,
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
    let src = if g.consumers(o).len() == 1 && !g.is_graph_output(o) {
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

const UNARY: &[&str] = &[
    "Relu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Clip",
    "Identity",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Erf",
    "Gelu",
    "Mish",
    "Cast",
    "Floor",
    "Ceil",
    "Round",
    "Reciprocal",
    "ThresholdedRelu",
    "Dropout",
];
const POOLS: &[&str] = &[
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
];
const BINARY: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu",
];

impl Analysis {
    fn find(&self, mut s: usize) -> usize {
        while self.parent[s] != s {
            s = self.parent[s];
        }
        s
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (root, child) = (ra.min(rb), ra.max(rb));
        self.parent[child] = root;
        if self.blocked[root].is_none() {
            self.blocked[root] = self.blocked[child].take();
        }
    }

    fn size(&self, segs: &[usize]) -> usize {
        segs.iter().map(|&s| self.spaces[s].size).sum()
    }

    fn new_space(&mut self, space: Space) -> usize {
        let s = self.spaces.len();
        self.spaces.push(space);
        self.parent.push(s);
        self.blocked.push(None);
        s
    }

    /// The leaf spaces of `segs`, side by side.
    fn leaves(&self, segs: &[usize]) -> Vec<usize> {
        let mut out = vec![];
        for &s in segs {
            if self.spaces[s].parts.is_empty() {
                out.push(s);
            } else {
                out.extend(self.leaves(&self.spaces[s].parts));
            }
        }
        out
    }

    /// The offsets between the leaves of `segs` (their inner boundaries).
    fn boundaries(&self, segs: &[usize]) -> Vec<usize> {
        let mut out = vec![];
        let mut offset = 0;
        for s in self.leaves(segs) {
            if offset > 0 {
                out.push(offset);
            }
            offset += self.spaces[s].size;
        }
        out
    }

    /// Cuts every leaf of the group of leaf `leaf` in two, at `at` channels:
    /// the group becomes two groups (channel i of a member is still tied to
    /// channel i of the others), which inherit its reason to be left alone.
    fn cut_group(&mut self, leaf: usize, at: usize) {
        let root = self.find(leaf);
        let members: Vec<usize> = (0..self.spaces.len())
            .filter(|&s| self.spaces[s].parts.is_empty() && self.find(s) == root)
            .collect();
        let blocked = self.blocked[root].clone();
        let mut firsts = vec![];
        let mut seconds = vec![];
        for m in members {
            let sp = &self.spaces[m];
            let (size, source, weight_axis, start, whole) =
                (sp.size, sp.source, sp.weight_axis, sp.start, sp.whole);
            let part = |start, size| Space {
                size,
                source,
                weight_axis,
                start,
                whole,
                parts: vec![],
            };
            let a = part(start, at);
            let b = part(start + at, size - at);
            let (a, b) = (self.new_space(a), self.new_space(b));
            self.spaces[m].parts = vec![a, b];
            firsts.push(a);
            seconds.push(b);
        }
        for half in [firsts, seconds] {
            for &x in &half[1..] {
                self.union(half[0], x);
            }
            let r = self.find(half[0]);
            self.blocked[r] = blocked.clone();
        }
    }

    /// Cuts leaves (with their groups) until each of `offsets` is a
    /// boundary between two leaves of `segs`.
    fn refine(&mut self, segs: &[usize], offsets: &[usize]) {
        for &o in offsets {
            loop {
                let mut start = 0;
                let mut inside = None;
                for s in self.leaves(segs) {
                    let size = self.spaces[s].size;
                    if start < o && o < start + size {
                        inside = Some((s, o - start));
                        break;
                    }
                    start += size;
                }
                match inside {
                    Some((s, at)) => self.cut_group(s, at),
                    None => break,
                }
            }
        }
    }

    /// The leaves of `segs` covering channels `from..to` (boundaries, after `refine`).
    fn range(&self, segs: &[usize], from: usize, to: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut start = 0;
        for s in self.leaves(segs) {
            let end = start + self.spaces[s].size;
            if from <= start && end <= to {
                out.push(s);
            }
            start = end;
        }
        out
    }

    /// Ties two layouts of the same size channel by channel: both are cut
    /// at each other's boundaries, then their leaves are tied pairwise.
    fn tie(&mut self, a: &[usize], b: &[usize]) {
        debug_assert_eq!(self.size(a), self.size(b));
        loop {
            let (ba, bb) = (self.boundaries(a), self.boundaries(b));
            if ba == bb {
                break;
            }
            let mut all: Vec<usize> = ba.into_iter().chain(bb).collect();
            all.sort_unstable();
            all.dedup();
            self.refine(a, &all);
            self.refine(b, &all);
        }
        for (x, y) in self.leaves(a).into_iter().zip(self.leaves(b)) {
            self.union(x, y);
        }
    }

    fn block_layout(&mut self, l: &Layout, reason: &str) {
        for s in self.leaves(&l.segs) {
            let r = self.find(s);
            if self.blocked[r].is_none() {
                self.blocked[r] = Some(reason.to_string());
            }
        }
    }

    fn visit(&mut self, g: &Graph, id: NodeId) {
        let laden: Vec<Layout> = g
            .inputs(id)
            .into_iter()
            .flatten()
            .chain(g.implicit_inputs(id))
            .filter_map(|o| self.layouts.get(&o).cloned())
            .collect();
        let op = g.op(id).expect("an operator");
        match self.follow(g, id) {
            Ok(f) => {
                for (a, b) in f.unions {
                    self.tie(&a, &b);
                }
                let mut outputs = f.outputs;
                if let Some((segs, n)) = f.consumer {
                    self.consumers.push(Consumer {
                        node: id,
                        segs,
                        out_space: f.new_space.map(|_| self.spaces.len()),
                        outputs: n,
                    });
                }
                if let Some((size, weight_axis)) = f.new_space {
                    let s = self.new_space(Space {
                        size,
                        source: id,
                        weight_axis,
                        start: 0,
                        whole: size,
                        parts: vec![],
                    });
                    for (_, l) in outputs.iter_mut() {
                        l.segs = vec![s];
                    }
                }
                for (slot, axis, segs) in f.cuts {
                    let segs = if segs.is_empty() {
                        vec![self.spaces.len() - 1]
                    } else {
                        segs
                    };
                    self.cuts.entry((id, slot)).or_default().push((axis, segs));
                }
                if let Some(segs) = f.group {
                    self.groups.insert(id, segs);
                }
                if let Some((l, sizes)) = f.split {
                    // Output i is the range of channels from offset o_i.
                    let ends: Vec<usize> = sizes
                        .iter()
                        .scan(0, |end, &n| {
                            *end += n;
                            Some(*end)
                        })
                        .collect();
                    self.refine(&l.segs, &ends[..ends.len() - 1]);
                    let mut parts = vec![];
                    for (i, &end) in ends.iter().enumerate() {
                        let segs = self.range(&l.segs, end - sizes[i], end);
                        let layout = Layout {
                            segs: segs.clone(),
                            ..l.clone()
                        };
                        outputs.push((i, layout));
                        parts.push(segs);
                    }
                    self.splits.insert(id, parts);
                }
                for (slot, l) in outputs {
                    self.layouts.insert(Outlet::new(id, slot), l);
                }
            }
            Err(e) => {
                let reason = format!("{} {}: {e}", op.op_type, g.node(id).label());
                for l in &laden {
                    self.block_layout(l, &reason);
                }
            }
        }
    }

    /// How channels flow through node `id`. An error means: not followed
    /// (the caller leaves the spaces of its inputs alone).
    fn follow(&self, g: &Graph, id: NodeId) -> Result<Follow> {
        let op = g.op(id).expect("an operator");
        let ins = g.inputs(id);
        let lay = |slot: usize| {
            ins.get(slot)
                .copied()
                .flatten()
                .and_then(|o| self.layouts.get(&o))
        };
        let any_laden = ins.iter().flatten().any(|o| self.layouts.contains_key(o));
        ensure!(
            g.implicit_inputs(id)
                .iter()
                .all(|o| !self.layouts.contains_key(o)),
            "used inside a subgraph"
        );
        if !op.is_default_domain() {
            ensure!(!any_laden, "operator of another domain");
            return Ok(Follow::default());
        }
        let konst = |slot: usize| {
            ins.get(slot)
                .copied()
                .flatten()
                .and_then(|o| g.const_tensor(o))
        };
        let f32_const = |slot: usize| -> Result<&Tensor> {
            let t = konst(slot).context("weights are not a constant")?;
            ensure!(t.dtype == DataType::FLOAT, "weights are not f32");
            Ok(t)
        };
        let only_output = || -> Result<()> {
            ensure!(
                (1..g.node(id).outputs.len()).all(|s| !g.is_used(Outlet::new(id, s))),
                "a second output is used"
            );
            Ok(())
        };
        let mut f = Follow::default();
        let t = op.op_type.as_str();
        match t {
            "Conv" | "ConvTranspose" => {
                only_output()?;
                let w = f32_const(1)?;
                ensure!(w.dims.len() >= 3, "weight rank below 3");
                if let Some(b) = ins.get(2).copied().flatten() {
                    ensure!(
                        g.const_tensor(b)
                            .is_some_and(|b| b.dtype == DataType::FLOAT),
                        "bias is not an f32 constant"
                    );
                }
                let group = op.attr_int("group", 1);
                let (w_in, w_out) = if t == "Conv" { (1, 0) } else { (0, 1) };
                let c_in = if t == "Conv" {
                    w.dims[1] * group
                } else {
                    w.dims[0]
                };
                if let Some(l) = lay(0) {
                    ensure!(l.axis == 1, "channels not on axis 1");
                    ensure!(self.size(&l.segs) as i64 == c_in, "input channels mismatch");
                }
                if group == 1 {
                    let m = w.dims[w_out] as usize;
                    if let Some(l) = lay(0) {
                        f.cuts.push((1, w_in, l.segs.clone()));
                        if t == "Conv" {
                            f.consumer = Some((l.segs.clone(), m));
                        }
                    }
                    f.new_space = Some((m, w_out));
                    f.cuts.push((1, w_out, vec![]));
                    if ins.get(2).copied().flatten().is_some() {
                        f.cuts.push((2, 0, vec![]));
                    }
                    let rank = w.dims.len();
                    f.outputs.push((
                        0,
                        Layout {
                            rank,
                            axis: 1,
                            segs: vec![],
                        },
                    ));
                } else if t == "Conv" && w.dims[1] == 1 && w.dims[0] == group {
                    // Depthwise: output channel c is input channel c.
                    if let Some(l) = lay(0) {
                        f.cuts.push((1, 0, l.segs.clone()));
                        if ins.get(2).copied().flatten().is_some() {
                            f.cuts.push((2, 0, l.segs.clone()));
                        }
                        f.group = Some(l.segs.clone());
                        f.outputs.push((0, l.clone()));
                    }
                } else {
                    ensure!(lay(0).is_none(), "grouped (not depthwise) convolution");
                }
            }
            "Gemm" => {
                let b = konst(1);
                let Some(b) = b.filter(|b| b.dtype == DataType::FLOAT && b.dims.len() == 2) else {
                    ensure!(!any_laden, "B is not an f32 2-D constant");
                    return Ok(f);
                };
                ensure!(lay(1).is_none(), "channels reach B");
                let trans_b = op.attr_int("transB", 0) != 0;
                let (k_axis, n_axis) = if trans_b { (1, 0) } else { (0, 1) };
                if let Some(l) = lay(0) {
                    ensure!(op.attr_int("transA", 0) == 0, "transA=1");
                    ensure!(l.rank == 2 && l.axis == 1, "input channels not on axis 1");
                    ensure!(
                        self.size(&l.segs) as i64 == b.dims[k_axis],
                        "input channels mismatch"
                    );
                    f.cuts.push((1, k_axis, l.segs.clone()));
                    f.consumer = Some((l.segs.clone(), b.dims[n_axis] as usize));
                }
                let n = b.dims[n_axis];
                if let Some(c) = ins.get(2).copied().flatten() {
                    ensure!(lay(2).is_none(), "channels reach C");
                    let c = g.const_tensor(c).context("C is not a constant")?;
                    ensure!(c.dtype == DataType::FLOAT, "C is not f32");
                    match c.dims.last() {
                        Some(&d) if d == n => f.cuts.push((2, c.dims.len() - 1, vec![])),
                        Some(&1) | None => {}
                        _ => bail!("C does not broadcast per column"),
                    }
                }
                f.new_space = Some((n as usize, n_axis));
                f.cuts.push((1, n_axis, vec![]));
                f.outputs.push((
                    0,
                    Layout {
                        rank: 2,
                        axis: 1,
                        segs: vec![],
                    },
                ));
            }
            "MatMul" => {
                let b = konst(1).filter(|b| b.dtype == DataType::FLOAT && b.dims.len() == 2);
                let Some(b) = b else {
                    ensure!(!any_laden, "B is not an f32 2-D constant");
                    return Ok(f);
                };
                let rank = match lay(0) {
                    Some(l) => {
                        ensure!(l.axis + 1 == l.rank, "channels not on the last axis");
                        ensure!(
                            self.size(&l.segs) as i64 == b.dims[0],
                            "input channels mismatch"
                        );
                        f.cuts.push((1, 0, l.segs.clone()));
                        f.consumer = Some((l.segs.clone(), b.dims[1] as usize));
                        Some(l.rank)
                    }
                    None => ins[0].and_then(|a| g.known_rank(a)),
                };
                if let Some(rank) = rank.filter(|&r| r >= 2) {
                    f.new_space = Some((b.dims[1] as usize, 1));
                    f.cuts.push((1, 1, vec![]));
                    let layout = Layout {
                        rank,
                        axis: rank - 1,
                        segs: vec![],
                    };
                    f.outputs.push((0, layout));
                }
            }
            "BatchNormalization" => {
                only_output()?;
                if let Some(l) = lay(0) {
                    ensure!(l.axis == 1, "channels not on axis 1");
                    for slot in 1..5 {
                        let p = f32_const(slot)?;
                        ensure!(p.numel() == self.size(&l.segs), "parameter size mismatch");
                        f.cuts.push((slot, 0, l.segs.clone()));
                    }
                    f.outputs.push((0, l.clone()));
                }
            }
            _ if UNARY.contains(&t) || POOLS.contains(&t) => {
                only_output()?;
                for o in ins.iter().skip(1).flatten() {
                    ensure!(!self.layouts.contains_key(o), "channels reach a parameter");
                    let scalar = g
                        .known_dims(*o)
                        .is_some_and(|d| d.iter().all(|&x| x == Some(1)));
                    ensure!(scalar, "a parameter is not a scalar");
                }
                if let Some(l) = lay(0) {
                    ensure!(!POOLS.contains(&t) || l.axis == 1, "channels not on axis 1");
                    f.outputs.push((0, l.clone()));
                }
            }
            "Resize" | "Upsample" => {
                if let Some(l) = lay(0) {
                    ensure!(
                        ins.iter()
                            .skip(1)
                            .all(|o| o.is_none_or(|o| !self.layouts.contains_key(&o))),
                        "channels reach a parameter"
                    );
                    ensure!(ins.get(3).copied().flatten().is_none(), "Resize by sizes");
                    let slot = if t == "Upsample" || ins.len() == 2 {
                        1
                    } else {
                        2
                    };
                    let scales = konst(slot).context("scales are not a constant")?.to_f32()?;
                    ensure!(scales.get(l.axis) == Some(&1.0), "scales the channel axis");
                    f.outputs.push((0, l.clone()));
                }
            }
            "Pad" => {
                if let Some(l) = lay(0) {
                    ensure!(
                        ins.iter()
                            .skip(1)
                            .all(|o| o.is_none_or(|o| !self.layouts.contains_key(&o))),
                        "channels reach a parameter"
                    );
                    ensure!(ins.get(3).copied().flatten().is_none(), "Pad with axes");
                    let pads = match op.attr_ints("pads") {
                        Some(p) => p.to_vec(),
                        None => konst(1).context("pads are not a constant")?.to_i64()?,
                    };
                    ensure!(
                        pads.len() == 2 * l.rank && pads[l.axis] == 0 && pads[l.axis + l.rank] == 0,
                        "pads the channel axis"
                    );
                    f.outputs.push((0, l.clone()));
                }
            }
            "Flatten" => {
                if let Some(l) = lay(0) {
                    ensure!(
                        op.attr_int("axis", 1) == 1 && l.axis == 1,
                        "flattens the channel axis with others"
                    );
                    let dims = ins[0]
                        .and_then(|o| g.known_dims(o))
                        .context("unknown input dims")?;
                    ensure!(
                        dims.len() == l.rank && dims[2..].iter().all(|&d| d == Some(1)),
                        "flattens the channel axis with spatial dims"
                    );
                    f.outputs.push((
                        0,
                        Layout {
                            rank: 2,
                            axis: 1,
                            segs: l.segs.clone(),
                        },
                    ));
                }
            }
            "Concat" => {
                if any_laden {
                    let ls: Vec<&Layout> = ins
                        .iter()
                        .map(|o| o.and_then(|o| self.layouts.get(&o)))
                        .collect::<Option<_>>()
                        .context("an input has no channel map")?;
                    let first = ls[0];
                    let axis = op.attr_int("axis", 0);
                    let axis = if axis < 0 {
                        axis + first.rank as i64
                    } else {
                        axis
                    } as usize;
                    ensure!(
                        ls.iter()
                            .all(|l| l.rank == first.rank && l.axis == first.axis),
                        "inputs differ in channel axis"
                    );
                    if axis == first.axis {
                        let segs = ls.iter().flat_map(|l| l.segs.iter().copied()).collect();
                        f.outputs.push((
                            0,
                            Layout {
                                rank: first.rank,
                                axis,
                                segs,
                            },
                        ));
                    } else {
                        for l in &ls[1..] {
                            self.check_same(first, l)?;
                            f.unions.push((first.segs.clone(), l.segs.clone()));
                        }
                        f.outputs.push((0, first.clone()));
                    }
                }
            }
            "Split" => {
                if let Some(l) = lay(0) {
                    ensure!(
                        ins.iter()
                            .skip(1)
                            .all(|o| o.is_none_or(|o| !self.layouts.contains_key(&o))),
                        "channels reach a parameter"
                    );
                    let axis = op.attr_int("axis", 0);
                    let axis = if axis < 0 { axis + l.rank as i64 } else { axis };
                    let n = g.node(id).outputs.len();
                    if axis != l.axis as i64 {
                        // Along another axis: every part keeps all the channels.
                        f.outputs.extend((0..n).map(|i| (i, l.clone())));
                    } else {
                        let sizes = split_sizes(g, id, self.size(&l.segs))?;
                        f.split = Some((l.clone(), sizes));
                    }
                }
            }
            _ if BINARY.contains(&t) => {
                if !any_laden {
                    return Ok(f);
                }
                let first = ins
                    .iter()
                    .flatten()
                    .find_map(|o| self.layouts.get(o))
                    .expect("laden");
                let from_end = first.rank - first.axis;
                let mut rank = 0;
                for o in ins.iter().flatten() {
                    let r = match self.layouts.get(o) {
                        Some(l) => l.rank,
                        None => g.known_rank(*o).context("an operand of unknown rank")?,
                    };
                    rank = rank.max(r);
                }
                for (slot, o) in ins.iter().enumerate() {
                    let Some(o) = *o else { continue };
                    if let Some(l) = self.layouts.get(&o) {
                        ensure!(
                            l.rank - l.axis == from_end,
                            "operands differ in channel axis"
                        );
                        self.check_same(first, l)?;
                        f.unions.push((first.segs.clone(), l.segs.clone()));
                        continue;
                    }
                    let dims = g.known_dims(o).context("an operand of unknown shape")?;
                    let Some(p) = dims.len().checked_sub(from_end) else {
                        continue;
                    };
                    match dims[p] {
                        Some(1) => {}
                        Some(d)
                            if d as usize == self.size(&first.segs)
                                && g.const_tensor(o)
                                    .is_some_and(|c| c.dtype == DataType::FLOAT) =>
                        {
                            f.cuts.push((slot, p, first.segs.clone()));
                        }
                        _ => {
                            bail!("an operand along the channels is not a per-channel f32 constant")
                        }
                    }
                }
                f.outputs.push((
                    0,
                    Layout {
                        rank,
                        axis: rank - from_end,
                        segs: first.segs.clone(),
                    },
                ));
            }
            _ => {
                ensure!(!any_laden, "not followed by this pass");
            }
        }
        Ok(f)
    }

    /// Two layouts tied channel by channel must have as many channels (their
    /// spaces may differ: `tie` cuts them to match).
    fn check_same(&self, a: &Layout, b: &Layout) -> Result<()> {
        ensure!(
            self.size(&a.segs) == self.size(&b.segs),
            "operands have different channel counts"
        );
        Ok(())
    }

    /// A space's layer, with the range of its output channels when a part.
    fn label(&self, g: &Graph, s: usize) -> String {
        let sp = &self.spaces[s];
        let name = g.node(sp.source).label();
        if sp.size == sp.whole {
            name
        } else {
            format!("{name}[{}:{}]", sp.start, sp.start + sp.size)
        }
    }

    /// Per-channel importance of a group: Σ over its layers of norm / mean norm.
    fn scores(&self, g: &Graph, members: &[usize], norm: Norm) -> Result<Vec<f64>> {
        let size = self.spaces[members[0]].size;
        let mut total = vec![0.0; size];
        for &s in members {
            let sp = &self.spaces[s];
            let w = g
                .input(sp.source, 1)
                .and_then(|o| g.const_tensor(o))
                .context("a weight vanished")?;
            let n = channel_norms(&w.to_f32()?, &w.dims, sp.weight_axis, norm);
            let mean = n.iter().sum::<f64>() / n.len().max(1) as f64;
            for (t, v) in total.iter_mut().zip(&n[sp.start..sp.start + sp.size]) {
                *t += if mean > 0.0 { v / mean } else { 0.0 };
            }
        }
        Ok(total)
    }

    /// The indices kept along an axis made of `segs` side by side.
    fn indices(&self, segs: &[usize], kept: &BTreeMap<usize, Vec<usize>>) -> Vec<usize> {
        let mut out = vec![];
        let mut offset = 0;
        for s in self.leaves(segs) {
            let size = self.spaces[s].size;
            match kept.get(&self.find(s)) {
                Some(k) => out.extend(k.iter().map(|&i| offset + i)),
                None => out.extend(offset..offset + size),
            }
            offset += size;
        }
        out
    }

    fn rewrite(&self, g: &Graph, kept: &BTreeMap<usize, Vec<usize>>, opset: i64) -> Result<Patch> {
        let mut patch = Patch::new("prune-channels");
        let mut replaced: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (&(node, slot), cuts) in &self.cuts {
            let o = g.input(node, slot).expect("a cut input exists");
            let t = g.const_tensor(o).expect("a cut input is constant");
            let mut values = t.to_f32()?;
            let mut dims = t.dims.clone();
            let mut changed = false;
            for (axis, segs) in cuts {
                let idx = self.indices(segs, kept);
                ensure!(
                    dims[*axis] as usize == self.size(segs),
                    "node {}: input {slot} has {} channels on axis {axis}, the analysis says {}",
                    g.node(node).label(),
                    dims[*axis],
                    self.size(segs)
                );
                if idx.len() == dims[*axis] as usize {
                    continue;
                }
                values = take(&values, &dims, *axis, &idx);
                dims[*axis] = idx.len() as i64;
                changed = true;
            }
            if !changed {
                continue;
            }
            let name = g.outlet_name(o).to_string();
            let uses = g.consumers(o).len();
            let new = if uses == 1 && !g.is_graph_output(o) {
                patch.remove(o.node);
                patch.add_const(&name, Tensor::from_f32(dims, &values))
            } else {
                *replaced.entry(o.node).or_default() += 1;
                if replaced[&o.node] == uses && !g.is_graph_output(o) {
                    patch.remove(o.node);
                }
                patch.add_const(&format!("{name}_pruned"), Tensor::from_f32(dims, &values))
            };
            patch.rewire(node, slot, Some(new));
        }
        for (&node, parts) in &self.splits {
            let old: Vec<usize> = parts.iter().map(|p| self.size(p)).collect();
            let new: Vec<usize> = parts.iter().map(|p| self.indices(p, kept).len()).collect();
            if new == old {
                continue;
            }
            let mut op = g.op(node).expect("an operator").clone();
            let sizes: Vec<i64> = new.iter().map(|&n| n as i64).collect();
            let tensor = || Tensor::from_i64(vec![sizes.len() as i64], &sizes);
            if op.attr_ints("split").is_some() {
                op.set_attr(crate::ir::Attribute::ints("split", &sizes));
                patch.update(node, op);
            } else if let Some(o) = g.input(node, 1) {
                let name = g.outlet_name(o).to_string();
                let uses = g.consumers(o).len();
                *replaced.entry(o.node).or_default() += 1;
                if replaced[&o.node] == uses && !g.is_graph_output(o) {
                    patch.remove(o.node);
                }
                let name = if uses == 1 {
                    name
                } else {
                    format!("{name}_pruned")
                };
                let src = patch.add_const(&name, tensor());
                patch.rewire(node, 1, Some(src));
            } else {
                // No sizes: keep that form when it still gives the new parts.
                let total: usize = new.iter().sum();
                let by_form = match op.attr("num_outputs") {
                    Some(_) => split_sizes_of(total, new.len(), true),
                    None => split_sizes_of(total, new.len(), false),
                };
                if by_form.as_deref() == Some(&new[..]) {
                    continue;
                }
                if opset < 13 {
                    op.set_attr(crate::ir::Attribute::ints("split", &sizes));
                } else {
                    op.attributes.retain(|a| a.name != "num_outputs");
                    op.arity = op.arity.max(2);
                    let name = format!("{}_split", g.node(node).label());
                    let src = patch.add_const(&name, tensor());
                    patch.rewire(node, 1, Some(src));
                }
                patch.update(node, op);
            }
        }
        for (&node, segs) in &self.groups {
            let n = self.indices(segs, kept).len();
            if n != self.size(segs) {
                let mut op = g.op(node).expect("an operator").clone();
                op.set_attr(crate::ir::Attribute::int("group", n as i64));
                patch.update(node, op);
            }
        }
        for (&outlet, l) in &self.layouts {
            let n = self.indices(&l.segs, kept).len();
            if n == self.size(&l.segs) {
                continue;
            }
            let info = g.node(outlet.node).outputs[outlet.slot].info.as_ref();
            let Some(mut ty) = info.and_then(|i| i.ty.clone()) else {
                continue;
            };
            if let TypeKind::Tensor {
                shape: Some(dims), ..
            } = &mut ty.kind
            {
                if let Some(d) = dims.get_mut(l.axis) {
                    if matches!(d.value, DimValue::Known(_)) {
                        d.value = DimValue::Known(n as i64);
                        patch.set_type(outlet, ty);
                    }
                }
            }
        }
        Ok(patch)
    }
}

/// The channels of each output of Split `id` along an axis of `total`
/// channels: the `split` attribute (before opset 13), the `split` input (an
/// int64 constant, from opset 13), `num_outputs` (opset 18: parts of
/// ⌈total / n⌉, the last one smaller), or equal parts.
fn split_sizes(g: &Graph, id: NodeId, total: usize) -> Result<Vec<usize>> {
    let op = g.op(id).expect("an operator");
    let n = g.node(id).outputs.len();
    let sizes: Vec<i64> = if let Some(s) = op.attr_ints("split") {
        s.to_vec()
    } else if let Some(o) = g.input(id, 1) {
        let t = g
            .const_tensor(o)
            .context("split sizes are not a constant")?;
        t.to_i64()?
    } else {
        let num_outputs = op.attr("num_outputs").is_some();
        if num_outputs {
            let parts = op.attr_int("num_outputs", 0);
            ensure!(parts as usize == n, "num_outputs differs from the outputs");
        }
        let sizes = split_sizes_of(total, n, num_outputs)
            .with_context(|| format!("{total} channels do not split in {n} parts"))?;
        sizes.into_iter().map(|x| x as i64).collect()
    };
    ensure!(sizes.len() == n, "split sizes differ from the outputs");
    ensure!(sizes.iter().all(|&x| x > 0), "an empty part");
    ensure!(
        sizes.iter().sum::<i64>() == total as i64,
        "split sizes do not add up to the {total} channels"
    );
    Ok(sizes.into_iter().map(|x| x as usize).collect())
}

/// The parts a Split without sizes makes of `total` channels in `n`: equal
/// parts, or with `num_outputs` (opset 18) parts of ⌈total / n⌉ and a smaller
/// last one. None when that form cannot make `n` non-empty parts.
fn split_sizes_of(total: usize, n: usize, num_outputs: bool) -> Option<Vec<usize>> {
    if n == 0 {
        return None;
    }
    if !num_outputs {
        return (total % n == 0).then(|| vec![total / n; n]);
    }
    let chunk = total.div_ceil(n);
    let last = total.checked_sub(chunk * (n - 1)).filter(|&l| l > 0)?;
    Some(
        (0..n)
            .map(|i| if i + 1 < n { chunk } else { last })
            .collect(),
    )
}

/// The norm of each slice along `axis` of a tensor of `dims`.
pub(crate) fn channel_norms(values: &[f32], dims: &[i64], axis: usize, norm: Norm) -> Vec<f64> {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let mut out = vec![0.0f64; d];
    for (i, &v) in values.iter().enumerate() {
        let c = (i / inner.max(1)) % d;
        let v = f64::from(v);
        out[c] += match norm {
            Norm::L1 => v.abs(),
            Norm::L2 => v * v,
        };
    }
    if norm == Norm::L2 {
        out.iter_mut().for_each(|x| *x = x.sqrt());
    }
    out
}

/// The slices `idx` (in order) along `axis` of a tensor of `dims`.
pub(crate) fn take(values: &[f32], dims: &[i64], axis: usize, idx: &[usize]) -> Vec<f32> {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let outer: usize = dims[..axis].iter().product::<i64>() as usize;
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let start = (o * d + i) * inner;
            out.extend_from_slice(&values[start..start + inner]);
        }
    }
    out
}

/// Least-squares refit of the layers after pruned ones (see the module doc).
mod refit {
    use super::Layer;
    use crate::calibrate::Calibration;
    use crate::ir::{Graph, Model, NodeId, Patch, Tensor};
    use crate::runtime;
    use anyhow::{bail, ensure, Context, Result};
    use faer::linalg::solvers::Solve;
    use faer::{Mat, Side};
    use serde_json::json;

    /// Rows kept for one fit (output positions over all samples), taken
    /// evenly: enough to fit a layer, bounded in time and memory.
    const MAX_ROWS: usize = 8192;

    /// The fit problem of one layer: features A (rows × d), targets Y
    /// (rows × m), the current weights W0 (d × m) that the ridge pulls toward.
    struct Problem {
        a: Mat<f64>,
        y: Mat<f64>,
        w0: Mat<f64>,
    }

    /// Refits each layer in `layers` (in graph order) so that, on `data`, its
    /// output in `model` reproduces its output in `teacher` (the unpruned
    /// model), restricted to the output channels it keeps. Returns one report
    /// entry per layer.
    pub(super) fn refit(
        teacher: &Model,
        model: &mut Model,
        data: &Calibration,
        layers: &[Layer],
        ridge: f64,
    ) -> Result<Vec<serde_json::Value>> {
        let outputs: Vec<String> = layers
            .iter()
            .map(|l| {
                teacher
                    .graph
                    .outlet_name(crate::ir::Outlet::new(l.node, 0))
                    .to_string()
            })
            .collect();
        let targets = data.capture(teacher, &outputs).context(
            "capturing the unpruned model's layer outputs (refit=false prunes without refitting)",
        )?;
        // faer uses rayon's current pool: one thread keeps every sum in one
        // order, so the bytes do not depend on the machine's core count.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        let mut report = vec![];
        for (layer, target) in layers.iter().zip(&targets) {
            let g = &model.graph;
            let label = g.node(layer.node).label();
            let x_name = g
                .outlet_name(g.input(layer.node, 0).context("no input")?)
                .to_string();
            let inputs = data
                .capture(model, std::slice::from_ref(&x_name))
                .with_context(|| format!("node {label}: capturing its input"))?;
            let problem = match problem(g, layer, &inputs[0], target) {
                Ok(p) if p.a.nrows() < 2 * p.a.ncols() => {
                    let why = format!(
                        "{} data rows for {} weights per output: too few to fit (give more --inputs samples)",
                        p.a.nrows(),
                        p.a.ncols()
                    );
                    report.push(json!({ "layer": label, "refit": false, "reason": why }));
                    continue;
                }
                Ok(p) => p,
                Err(e) => {
                    report.push(
                        json!({ "layer": label, "refit": false, "reason": format!("{e:#}") }),
                    );
                    continue;
                }
            };
            let w = pool
                .install(|| solve(&problem, ridge))
                .with_context(|| format!("node {label}: least squares"))?;
            let err = |w: &Mat<f64>| {
                let r = &problem.a * w - &problem.y;
                r.norm_l2() / problem.y.norm_l2().max(f64::MIN_POSITIVE)
            };
            let (before, after) = pool.install(|| (err(&problem.w0), err(&w)));
            if !(after.is_finite() && after < before) {
                report.push(json!({ "layer": label, "refit": false,
                    "reason": "the fit is no better than the pruned weights", "rel_err": before }));
                continue;
            }
            let patch = write(g, layer, &w)?;
            patch.apply(&mut model.graph)?;
            report.push(json!({
                "layer": label,
                "refit": true,
                "rows": problem.a.nrows(),
                "features": problem.a.ncols(),
                "rel_err_before": before,
                "rel_err_after": after,
            }));
        }
        Ok(report)
    }

    /// (G + λI)·W = Aᵀ·Y + λ·W0, G = AᵀA, λ = ridge · trace(G) / d.
    fn solve(p: &Problem, ridge: f64) -> Result<Mat<f64>> {
        let at = p.a.transpose();
        let mut gram = at * &p.a;
        let d = gram.nrows();
        let trace: f64 = (0..d).map(|i| gram[(i, i)]).sum();
        let lambda = (ridge * trace / d.max(1) as f64).max(1e-12);
        for i in 0..d {
            gram[(i, i)] += lambda;
        }
        let mut rhs = at * &p.y;
        for j in 0..rhs.ncols() {
            for i in 0..d {
                rhs[(i, j)] += lambda * p.w0[(i, j)];
            }
        }
        let llt = gram
            .llt(Side::Lower)
            .map_err(|e| anyhow::anyhow!("not positive definite: {e:?}"))?;
        Ok(llt.solve(&rhs))
    }

    fn f32s(g: &Graph, node: NodeId, slot: usize) -> Result<Option<(Vec<i64>, Vec<f32>)>> {
        let Some(o) = g.input(node, slot) else {
            return Ok(None);
        };
        let t = g.const_tensor(o).context("weights are not constant")?;
        Ok(Some((t.dims.clone(), t.to_f32()?)))
    }

    /// Rows `0, step, 2·step, …` of `total`, at most MAX_ROWS.
    fn rows(total: usize) -> Vec<usize> {
        let step = total.div_ceil(MAX_ROWS).max(1);
        (0..total).step_by(step).collect()
    }

    fn problem(
        g: &Graph,
        layer: &Layer,
        inputs: &[runtime::Tensor],
        targets: &[runtime::Tensor],
    ) -> Result<Problem> {
        let op = g.op(layer.node).expect("an operator");
        let (wd, w) = f32s(g, layer.node, 1)?.context("no weight")?;
        let bias = f32s(g, layer.node, 2)?;
        let keep = &layer.kept_out;
        match op.op_type.as_str() {
            "Conv" => {
                ensure!(wd.len() == 4, "only 2-D convolutions are refitted");
                let auto = op.attr("auto_pad").map(|a| format!("{:?}", a.value));
                ensure!(
                    auto.is_none_or(|s| s.contains("NOTSET")),
                    "auto_pad is not refitted"
                );
                let (m, c, kh, kw) = (
                    wd[0] as usize,
                    wd[1] as usize,
                    wd[2] as usize,
                    wd[3] as usize,
                );
                let pads = op.attr_ints("pads").map_or(vec![0; 4], <[i64]>::to_vec);
                let st = op.attr_ints("strides").map_or(vec![1; 2], <[i64]>::to_vec);
                let dl = op
                    .attr_ints("dilations")
                    .map_or(vec![1; 2], <[i64]>::to_vec);
                ensure!(
                    pads.len() == 4 && st.len() == 2 && dl.len() == 2,
                    "unexpected attributes"
                );
                let nb = usize::from(bias.is_some());
                let d = c * kh * kw + nb;
                // Positions (sample, n, oh, ow) over all samples.
                let mut pos = vec![];
                for (s, (x, y)) in inputs.iter().zip(targets).enumerate() {
                    let (xs, ys) = (x.shape(), y.shape());
                    ensure!(
                        xs.len() == 4 && ys.len() == 4 && xs[1] == c,
                        "unexpected shapes"
                    );
                    for n in 0..ys[0] {
                        for oh in 0..ys[2] {
                            for ow in 0..ys[3] {
                                pos.push((s, n, oh, ow));
                            }
                        }
                    }
                }
                let pick = rows(pos.len());
                let xv: Vec<Vec<f32>> = inputs
                    .iter()
                    .map(|t| t.to_f32_vec())
                    .collect::<Result<_>>()?;
                let yv: Vec<Vec<f32>> = targets
                    .iter()
                    .map(|t| t.to_f32_vec())
                    .collect::<Result<_>>()?;
                let mut a = Mat::<f64>::zeros(pick.len(), d);
                let mut yt = Mat::<f64>::zeros(pick.len(), keep.len());
                for (r, &p) in pick.iter().enumerate() {
                    let (s, n, oh, ow) = pos[p];
                    let (xs, ys) = (inputs[s].shape(), targets[s].shape());
                    let (h, wi) = (xs[2] as i64, xs[3] as i64);
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let ih = oh as i64 * st[0] - pads[0] + i as i64 * dl[0];
                                let iw = ow as i64 * st[1] - pads[1] + j as i64 * dl[1];
                                if ih >= 0 && ih < h && iw >= 0 && iw < wi {
                                    let at = ((n * xs[1] + ci) * xs[2] + ih as usize) * xs[3]
                                        + iw as usize;
                                    a[(r, (ci * kh + i) * kw + j)] = f64::from(xv[s][at]);
                                }
                            }
                        }
                    }
                    if nb == 1 {
                        a[(r, d - 1)] = 1.0;
                    }
                    for (k, &o) in keep.iter().enumerate() {
                        let at = ((n * ys[1] + o) * ys[2] + oh) * ys[3] + ow;
                        yt[(r, k)] = f64::from(yv[s][at]);
                    }
                }
                let per = c * kh * kw;
                let w0 = Mat::from_fn(d, m, |f, mo| {
                    if f < per {
                        f64::from(w[mo * per + f])
                    } else {
                        f64::from(bias.as_ref().expect("nb = 1").1[mo])
                    }
                });
                Ok(Problem { a, y: yt, w0 })
            }
            "Gemm" | "MatMul" => {
                let gemm = op.op_type == "Gemm";
                let trans_b = gemm && op.attr_int("transB", 0) != 0;
                if gemm {
                    ensure!(
                        op.attr_float("alpha", 1.0) == 1.0 && op.attr_float("beta", 1.0) == 1.0,
                        "alpha or beta is not 1"
                    );
                }
                let (k, m) = if trans_b {
                    (wd[1] as usize, wd[0] as usize)
                } else {
                    (wd[0] as usize, wd[1] as usize)
                };
                let bias = if gemm { bias } else { None };
                if let Some((bd, _)) = &bias {
                    ensure!(
                        bd.iter().product::<i64>() as usize == m,
                        "C is not one value per column"
                    );
                }
                let nb = usize::from(bias.is_some());
                let d = k + nb;
                let mut pos = vec![];
                for (s, (x, y)) in inputs.iter().zip(targets).enumerate() {
                    ensure!(x.shape().last() == Some(&k), "unexpected shapes");
                    let n = x.shape().iter().product::<usize>() / k.max(1);
                    ensure!(
                        y.shape().iter().product::<usize>() / n.max(1)
                            == *y.shape().last().unwrap_or(&0),
                        "unexpected shapes"
                    );
                    pos.extend((0..n).map(|r| (s, r)));
                }
                let pick = rows(pos.len());
                let xv: Vec<Vec<f32>> = inputs
                    .iter()
                    .map(|t| t.to_f32_vec())
                    .collect::<Result<_>>()?;
                let yv: Vec<Vec<f32>> = targets
                    .iter()
                    .map(|t| t.to_f32_vec())
                    .collect::<Result<_>>()?;
                let mut a = Mat::<f64>::zeros(pick.len(), d);
                let mut yt = Mat::<f64>::zeros(pick.len(), keep.len());
                for (r, &p) in pick.iter().enumerate() {
                    let (s, row) = pos[p];
                    let ycols = *targets[s].shape().last().expect("rank checked");
                    for f in 0..k {
                        a[(r, f)] = f64::from(xv[s][row * k + f]);
                    }
                    if nb == 1 {
                        a[(r, d - 1)] = 1.0;
                    }
                    for (j, &o) in keep.iter().enumerate() {
                        yt[(r, j)] = f64::from(yv[s][row * ycols + o]);
                    }
                }
                let w0 = Mat::from_fn(d, m, |f, mo| {
                    if f < k {
                        f64::from(if trans_b {
                            w[mo * k + f]
                        } else {
                            w[f * m + mo]
                        })
                    } else {
                        f64::from(bias.as_ref().expect("nb = 1").1[mo])
                    }
                });
                Ok(Problem { a, y: yt, w0 })
            }
            other => bail!("{other} is not refitted"),
        }
    }

    /// The patch writing the fitted weights (and bias) back in the layer's layout.
    fn write(g: &Graph, layer: &Layer, w: &Mat<f64>) -> Result<Patch> {
        let op = g.op(layer.node).expect("an operator");
        let (wd, _) = f32s(g, layer.node, 1)?.context("no weight")?;
        let bias = if op.op_type == "MatMul" {
            None
        } else {
            f32s(g, layer.node, 2)?
        };
        let m = w.ncols();
        let d = w.nrows() - usize::from(bias.is_some());
        let values: Vec<f32> = match op.op_type.as_str() {
            "Gemm" if op.attr_int("transB", 0) == 0 => {
                (0..d * m).map(|i| w[(i / m, i % m)] as f32).collect()
            }
            "MatMul" => (0..d * m).map(|i| w[(i / m, i % m)] as f32).collect(),
            // Conv [M, C, kh, kw] and Gemm transB [N, K]: row o is column o of w.
            _ => (0..d * m).map(|i| w[(i % d, i / d)] as f32).collect(),
        };
        let mut patch = Patch::new("prune-channels refit");
        super::replace_input(g, &mut patch, layer.node, 1, Tensor::from_f32(wd, &values));
        if let Some((bd, _)) = bias {
            let b: Vec<f32> = (0..m).map(|o| w[(d, o)] as f32).collect();
            super::replace_input(g, &mut patch, layer.node, 2, Tensor::from_f32(bd, &b));
        }
        Ok(patch)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, NodeId, Outlet, Tensor};
    use crate::passes::fuse_bn::tests::{init, values};
    use crate::passes::testing::check_inexact;
    use crate::pipeline::Pipeline;

    fn conv(b: &mut ModelBuilder, x: Outlet, w: (&str, &[i64]), group: i64, out: &str) -> Outlet {
        let seed = out.bytes().map(u64::from).sum::<u64>() * 7 + w.1[1] as u64;
        let wt = init(b, w.0, w.1, seed);
        let bias = init(b, &format!("{}.b", w.0), &[w.1[0]], seed + 1);
        let attrs = vec![
            Attribute::int("group", group),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        b.op("Conv", &[x, wt, bias], attrs, out)
    }

    /// Residual Add through a depthwise Conv, BatchNorm, a per-channel Mul,
    /// a Concat of two groups, a last Conv reaching the graph output.
    pub(super) fn tied() -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
        let a = conv(&mut b, x, ("wa", &[8, 4, 3, 3]), 1, "a");
        let p = |b: &mut ModelBuilder, n: &str, k: u64, lo, hi| {
            b.init(n, Tensor::from_f32(vec![8], &values(k, 8, lo, hi)))
        };
        let bn_in = [
            a,
            p(&mut b, "g", 1, 0.5, 2.0),
            p(&mut b, "be", 2, -1.0, 1.0),
            p(&mut b, "mu", 3, -1.0, 1.0),
            p(&mut b, "var", 4, 0.5, 2.0),
        ];
        let n = b.op("BatchNormalization", &bn_in, vec![], "bn");
        let r = b.op("Relu", &[n], vec![], "r");
        let d = conv(&mut b, r, ("wd", &[8, 1, 3, 3]), 8, "dw");
        let c2 = conv(&mut b, r, ("wb", &[8, 8, 3, 3]), 1, "b");
        let s = b.op("Add", &[d, c2], vec![], "s");
        let k = b.init(
            "k",
            Tensor::from_f32(vec![1, 8, 1, 1], &values(5, 8, 0.5, 1.5)),
        );
        let m = b.op("Mul", &[s, k], vec![], "m");
        let c = conv(&mut b, x, ("wc", &[8, 4, 3, 3]), 1, "c");
        let cat = b.op("Concat", &[m, c], vec![Attribute::int("axis", 1)], "cat");
        let e = conv(&mut b, cat, ("we", &[6, 16, 3, 3]), 1, "e");
        b.output(e, DataType::FLOAT);
        b.build().unwrap()
    }

    fn weight_dims(m: &Model, node: &str) -> Vec<i64> {
        let g = &m.graph;
        let id = g
            .node_ids()
            .find(|&id| g.op(id).is_some() && g.node(id).label() == node)
            .unwrap_or_else(|| panic!("no node {node}"));
        g.const_tensor(g.input(id, 1).unwrap())
            .unwrap()
            .dims
            .clone()
    }

    fn node(m: &Model, name: &str) -> NodeId {
        let g = &m.graph;
        g.node_ids()
            .find(|&id| g.op(id).is_some() && g.node(id).label() == name)
            .unwrap()
    }

    #[test]
    fn tied_groups_shrink_consistently() {
        let passes = "prune-channels{ratio=0.5,min-channels=4}";
        let (out, _) = check_inexact("prune-channels__tied", &tied(), passes);
        // {a, b} are tied through the residual Add (and dw follows a): 8 -> 4.
        assert_eq!(weight_dims(&out, "a"), [4, 4, 3, 3]);
        assert_eq!(weight_dims(&out, "b"), [4, 4, 3, 3]);
        assert_eq!(weight_dims(&out, "dw"), [4, 1, 3, 3]);
        let dw = out.graph.op(node(&out, "dw")).unwrap().attr_int("group", 0);
        assert_eq!(dw, 4);
        assert_eq!(weight_dims(&out, "c"), [4, 4, 3, 3]);
        // e reads both halves of the Concat: 4 + 4 input channels; its own
        // output is the graph output, left alone.
        assert_eq!(weight_dims(&out, "e"), [6, 8, 3, 3]);
    }

    /// A Conv whose output channels in `zero` have zero weights and bias.
    fn zeroed_conv(
        b: &mut ModelBuilder,
        x: Outlet,
        dims: &[i64],
        group: i64,
        zero: &[usize],
        out: &str,
    ) -> Outlet {
        let n = dims.iter().product::<i64>() as usize;
        let per = n / dims[0] as usize;
        let mut w = values(dims[1] as u64 + n as u64, n, -1.0, 1.0);
        let mut bias = values(n as u64, dims[0] as usize, -1.0, 1.0);
        for &c in zero {
            w[c * per..(c + 1) * per].iter_mut().for_each(|v| *v = 0.0);
            bias[c] = 0.0;
        }
        let w = b.init(&format!("{out}.w"), Tensor::from_f32(dims.to_vec(), &w));
        let bias = b.init(&format!("{out}.b"), Tensor::from_f32(vec![dims[0]], &bias));
        let attrs = vec![
            Attribute::int("group", group),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        b.op("Conv", &[x, w, bias], attrs, out)
    }

    #[test]
    fn removing_dead_channels_changes_nothing() {
        // Channels whose weights and bias are zero are the ones pruned, and
        // they are dead (Relu(0) = 0, depthwise of 0 with bias 0 = 0): the
        // output must not move, which checks every index through residual
        // Add, depthwise Conv, Concat offsets and the consumer's input slices.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
        let dead = [1, 3, 4, 6];
        let a = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &dead, "a");
        let r = b.op("Relu", &[a], vec![], "r");
        let d = zeroed_conv(&mut b, r, &[8, 1, 3, 3], 8, &dead, "dw");
        let c2 = zeroed_conv(&mut b, r, &[8, 8, 3, 3], 1, &dead, "b");
        let s = b.op("Add", &[d, c2], vec![], "s");
        let c = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[0, 2, 5, 7], "c");
        let cat = b.op("Concat", &[c, s], vec![Attribute::int("axis", 1)], "cat");
        let e = zeroed_conv(&mut b, cat, &[4, 16, 3, 3], 1, &[], "e");
        b.output(e, DataType::FLOAT);
        let model = b.build().unwrap();
        let passes = "prune-channels{ratio=0.5,min-channels=4}";
        let (out, err) = check_inexact("prune-channels__dead-channels", &model, passes);
        assert!(err <= 1e-5, "max_rel_err {err:e}");
        assert_eq!(weight_dims(&out, "e"), [4, 8, 3, 3]);
    }

    #[test]
    fn unfollowed_uses_leave_the_group_alone() {
        // a's output is reshaped: its channels cannot be followed; b is free.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
        let a = conv(&mut b, x, ("wa", &[8, 4, 3, 3]), 1, "a");
        let shape = b.init("shape", Tensor::from_i64(vec![2], &[1, -1]));
        let flat = b.op("Reshape", &[a, shape], vec![], "flat");
        let c = conv(&mut b, a, ("wb", &[8, 8, 3, 3]), 1, "b");
        let r = b.op("Relu", &[c], vec![], "r");
        let e = conv(&mut b, r, ("we", &[2, 8, 3, 3]), 1, "e");
        b.output(flat, DataType::FLOAT);
        b.output(e, DataType::FLOAT);
        let model = b.build().unwrap();
        let passes = "prune-channels{ratio=0.25,min-channels=4}";
        let (out, _) = check_inexact("prune-channels__reshape-blocks", &model, passes);
        assert_eq!(weight_dims(&out, "a"), [8, 4, 3, 3]);
        assert_eq!(weight_dims(&out, "b"), [6, 8, 3, 3]);
        assert_eq!(weight_dims(&out, "e"), [2, 6, 3, 3]);
        let mut m = model.clone();
        let report = Pipeline::parse(passes)
            .unwrap()
            .run(&mut m, &Default::default(), &mut |_| {})
            .unwrap();
        let left = report[0].details["left_alone"].to_string();
        assert!(left.contains("Reshape flat"), "{left}");
    }

    /// How a Split gives its sizes.
    #[derive(Clone, Copy, Debug)]
    enum Sizes {
        /// The `split` attribute (before opset 13).
        Attr,
        /// The `split` input (from opset 13).
        Input,
        /// None: equal parts.
        Equal,
        /// `num_outputs` (opset 18).
        NumOutputs,
    }

    /// Split (along the channels) of `x` into `sizes`, in the given form.
    fn split(
        b: &mut ModelBuilder,
        x: Outlet,
        sizes: &[i64],
        form: Sizes,
        out: &str,
    ) -> Vec<Outlet> {
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("{out}{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let axis = Attribute::int("axis", 1);
        let (inputs, attrs) = match form {
            Sizes::Attr => (vec![Some(x)], vec![axis, Attribute::ints("split", sizes)]),
            Sizes::Input => {
                let s = b.init(
                    &format!("{out}_sizes"),
                    Tensor::from_i64(vec![sizes.len() as i64], sizes),
                );
                (vec![Some(x), Some(s)], vec![axis])
            }
            Sizes::Equal => (vec![Some(x)], vec![axis]),
            Sizes::NumOutputs => {
                let n = Attribute::int("num_outputs", sizes.len() as i64);
                (vec![Some(x)], vec![axis, n])
            }
        };
        b.op_n("Split", &inputs, attrs, &names)
    }

    /// What a Split says of its sizes: `attr [..]`, `input [..]`, `equal`, `num_outputs n`.
    fn split_form(m: &Model) -> String {
        let g = &m.graph;
        let id = g
            .node_ids()
            .find(|&id| g.op(id).is_some_and(|op| op.op_type == "Split"))
            .expect("a Split");
        let op = g.op(id).unwrap();
        if let Some(s) = op.attr_ints("split") {
            return format!("attr {s:?}");
        }
        if let Some(o) = g.input(id, 1) {
            return format!("input {:?}", g.const_tensor(o).unwrap().to_i64().unwrap());
        }
        match op.attr("num_outputs") {
            Some(_) => format!("num_outputs {}", op.attr_int("num_outputs", 0)),
            None => "equal".to_string(),
        }
    }

    /// Conv a (16 channels) → Relu → Split along the channels into `sizes`;
    /// part 0 is added to Conv d's output (a tie with part of a's channels),
    /// each part feeds a Conv; with `exposed`, the last part is also a graph
    /// output (its channels must stay).
    fn split_model(opset: i64, sizes: &[i64], form: Sizes, exposed: bool) -> Model {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
        let a = conv(&mut b, x, ("wa", &[16, 4, 3, 3]), 1, "a");
        let r = b.op("Relu", &[a], vec![], "r");
        let parts = split(&mut b, r, sizes, form, "part");
        let d = conv(&mut b, x, ("wd", &[sizes[0], 4, 3, 3]), 1, "d");
        let s = b.op("Add", &[parts[0], d], vec![], "s");
        let mut ins = vec![s];
        ins.extend(&parts[1..]);
        for (i, p) in ins.into_iter().enumerate() {
            let c = sizes[i];
            let name = format!("c{i}");
            let y = conv(&mut b, p, (&format!("w{name}"), &[3, c, 3, 3]), 1, &name);
            b.output(y, DataType::FLOAT);
        }
        if exposed {
            b.output(*parts.last().unwrap(), DataType::FLOAT);
        }
        b.build().unwrap()
    }

    /// (snapshot, opset, sizes, form, last part exposed, the Split after,
    /// a's and d's filters after).
    type SplitRow = (
        &'static str,
        i64,
        &'static [i64],
        Sizes,
        bool,
        &'static str,
        i64,
        i64,
    );

    #[test]
    fn split_parts_shrink_and_sizes_follow_the_opset() {
        let rows: &[SplitRow] = &[
            (
                "split-attr-opset12",
                12,
                &[6, 10],
                Sizes::Attr,
                false,
                "attr [3, 5]",
                8,
                3,
            ),
            (
                "split-input-opset13",
                13,
                &[6, 10],
                Sizes::Input,
                false,
                "input [3, 5]",
                8,
                3,
            ),
            (
                "split-equal-stays-equal",
                13,
                &[8, 8],
                Sizes::Equal,
                false,
                "equal",
                8,
                4,
            ),
            (
                "split-equal-attr-opset12",
                12,
                &[8, 8],
                Sizes::Equal,
                true,
                "attr [4, 8]",
                12,
                4,
            ),
            (
                "split-equal-input-opset13",
                13,
                &[8, 8],
                Sizes::Equal,
                true,
                "input [4, 8]",
                12,
                4,
            ),
            (
                "split-num-outputs-opset18",
                18,
                &[8, 8],
                Sizes::NumOutputs,
                true,
                "input [4, 8]",
                12,
                4,
            ),
            (
                "split-three-parts",
                13,
                &[4, 4, 8],
                Sizes::Input,
                true,
                "input [2, 2, 8]",
                12,
                2,
            ),
        ];
        let passes = "prune-channels{ratio=0.5,min-channels=2}";
        for &(name, opset, sizes, form, exposed, want, a_out, d_out) in rows {
            let model = split_model(opset, sizes, form, exposed);
            let (out, _) = check_inexact(&format!("prune-channels__{name}"), &model, passes);
            assert_eq!(split_form(&out), want, "{name}");
            assert_eq!(weight_dims(&out, "a")[0], a_out, "{name}");
            assert_eq!(weight_dims(&out, "d")[0], d_out, "{name}");
            for (i, &c) in sizes.iter().enumerate() {
                let kept = if exposed && i + 1 == sizes.len() {
                    c
                } else {
                    c / 2
                };
                assert_eq!(weight_dims(&out, &format!("c{i}"))[1], kept, "{name} c{i}");
            }
            // Never an op form the opset lacks.
            let op = out.graph.op(node(&out, "part0")).unwrap();
            assert_eq!(
                op.attr("split").is_some(),
                opset < 13 && want.starts_with("attr"),
                "{name}"
            );
            assert_eq!(
                op.attr("num_outputs").is_some(),
                want.starts_with("num_outputs"),
                "{name}"
            );
        }
    }

    #[test]
    fn split_dead_channels_are_removed_exactly() {
        // Concat(a, e) is cut by the Split inside a: part 0 is a[0:6], tied
        // to d by an Add; part 1 is a[6:8] then e. The zero (dead) channels
        // are the ones pruned: outputs must not move, in either form.
        for (opset, form) in [(12, Sizes::Attr), (13, Sizes::Input)] {
            let mut b = ModelBuilder::new(opset);
            let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
            let a = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[1, 3, 4, 7], "a");
            let e = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[0, 2, 5, 6], "e");
            let cat = b.op("Concat", &[a, e], vec![Attribute::int("axis", 1)], "cat");
            let parts = split(&mut b, cat, &[6, 10], form, "part");
            let d = zeroed_conv(&mut b, x, &[6, 3, 3, 3], 1, &[1, 3, 4], "d");
            let s = b.op("Add", &[parts[0], d], vec![], "s");
            let c0 = zeroed_conv(&mut b, s, &[4, 6, 3, 3], 1, &[], "c0");
            let c1 = zeroed_conv(&mut b, parts[1], &[4, 10, 3, 3], 1, &[], "c1");
            b.output(c0, DataType::FLOAT);
            b.output(c1, DataType::FLOAT);
            let model = b.build().unwrap();
            let passes = "prune-channels{ratio=0.5,min-channels=2}";
            let out = crate::passes::testing::rewrite(&model, passes);
            let err = crate::passes::testing::max_rel_err(&model, &out);
            assert!(err <= 1e-5, "opset {opset}: max_rel_err {err:e}");
            // a[0:6] with d: 6 -> 3; a[6:8]: 2 -> 1; e: 8 -> 4.
            assert_eq!(weight_dims(&out, "a")[0], 4, "opset {opset}");
            assert_eq!(weight_dims(&out, "d")[0], 3, "opset {opset}");
            assert_eq!(weight_dims(&out, "e")[0], 4, "opset {opset}");
            assert_eq!(weight_dims(&out, "c0")[1], 3, "opset {opset}");
            assert_eq!(weight_dims(&out, "c1")[1], 5, "opset {opset}");
            let want = if opset < 13 {
                "attr [3, 5]"
            } else {
                "input [3, 5]"
            };
            assert_eq!(split_form(&out), want);
        }
    }

    #[test]
    fn a_tie_cuts_the_other_side_to_match() {
        // Add(Concat(a, b), c): c is cut in two parts, tied to a and to b.
        // The dead channels are the ones pruned: outputs must not move.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
        let a = zeroed_conv(&mut b, x, &[4, 3, 3, 3], 1, &[1, 3], "a");
        let bb = zeroed_conv(&mut b, x, &[4, 3, 3, 3], 1, &[0, 2], "b");
        let c = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[1, 3, 4, 6], "c");
        let cat = b.op("Concat", &[a, bb], vec![Attribute::int("axis", 1)], "cat");
        let s = b.op("Add", &[cat, c], vec![], "s");
        let e = zeroed_conv(&mut b, s, &[4, 8, 3, 3], 1, &[], "e");
        b.output(e, DataType::FLOAT);
        let model = b.build().unwrap();
        let mut out = model.clone();
        let report = Pipeline::parse("prune-channels{ratio=0.5,min-channels=2}")
            .unwrap()
            .run(&mut out, &Default::default(), &mut |_| {})
            .unwrap();
        let err = crate::passes::testing::max_rel_err(&model, &out);
        assert!(err <= 1e-5, "max_rel_err {err:e}");
        assert_eq!(weight_dims(&out, "c")[0], 4);
        assert_eq!(weight_dims(&out, "e")[1], 4);
        let pruned = report[0].details["pruned"].to_string();
        assert!(
            pruned.contains("c[0:4]") && pruned.contains("c[4:8]"),
            "{pruned}"
        );
    }

    #[test]
    fn split_sizes_that_are_not_constant_leave_the_group_alone() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
        let sizes = b.input("sizes", DataType::INT64, &[2]);
        let a = conv(&mut b, x, ("wa", &[16, 4, 3, 3]), 1, "a");
        let parts = b.op_n(
            "Split",
            &[Some(a), Some(sizes)],
            vec![Attribute::int("axis", 1)],
            &["p0", "p1"],
        );
        for (i, p) in parts.into_iter().enumerate() {
            let y = conv(
                &mut b,
                p,
                (&format!("w{i}"), &[3, 8, 3, 3]),
                1,
                &format!("c{i}"),
            );
            b.output(y, DataType::FLOAT);
        }
        let mut m = b.build().unwrap();
        let report = Pipeline::parse("prune-channels{ratio=0.5,min-channels=2}")
            .unwrap()
            .run(&mut m, &Default::default(), &mut |_| {})
            .unwrap();
        let left = report[0].details["left_alone"].to_string();
        assert!(
            left.contains("Split p0: split sizes are not a constant"),
            "{left}"
        );
        assert_eq!(weight_dims(&m, "a"), [16, 4, 3, 3]);
    }

    #[test]
    fn same_input_same_output() {
        let passes = "prune-channels{ratio=0.4,min-channels=2,norm=l2}";
        let a = crate::passes::testing::rewrite(&tied(), passes);
        let b = crate::passes::testing::rewrite(&tied(), passes);
        assert_eq!(
            crate::onnx::encode(&a).unwrap(),
            crate::onnx::encode(&b).unwrap()
        );
    }

    #[test]
    fn bad_options_are_clear_errors() {
        for (passes, want) in [
            ("prune-channels{ratio=1}", "outside [0, 1)"),
            ("prune-channels{ratio=-0.1}", "outside [0, 1)"),
            ("prune-channels{ratio=half}", "ratio='half' is not valid"),
            ("prune-channels{norm=l3}", "norm='l3' is not valid"),
            ("prune-channels{min-channels=-1}", "min-channels='-1'"),
        ] {
            let err = Pipeline::parse(passes).err().expect(passes);
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{passes}: {msg}");
        }
    }
}

#[cfg(test)]
mod refit_tests {
    use crate::calibrate::Calibration;
    use crate::passes::testing::max_rel_err;
    use crate::pipeline::{PassContext, Pipeline};
    use crate::runtime::InputShapes;

    #[test]
    fn refit_brings_outputs_closer_to_the_unpruned_model() {
        let model = super::tests::tied();
        // The samples max_rel_err compares on (seeds 0, 1, 2), as if given by --inputs.
        let mut data = Calibration::load(&model, &InputShapes::new(), None, 0, 3).unwrap();
        data.random = false;
        let cx = PassContext { data: Some(data) };
        let run = |passes: &str, cx: &PassContext| {
            let mut m = model.clone();
            let r = Pipeline::parse(passes)
                .unwrap()
                .run(&mut m, cx, &mut |_| {})
                .unwrap();
            (m, r[0].details.clone())
        };
        let passes = "prune-channels{ratio=0.5,min-channels=4}";
        let (plain, d) = run(passes, &PassContext::default());
        assert_eq!(d["refit"], false);
        assert!(
            d["refit_reason"].as_str().unwrap().contains("no --inputs"),
            "{d}"
        );
        let (refit, d) = run(passes, &cx);
        assert_eq!(d["refit"], true, "{d}");
        let (again, _) = run(passes, &cx);
        let bytes = |m: &crate::ir::Model| crate::onnx::encode(m).unwrap();
        assert_eq!(bytes(&refit), bytes(&again), "same data, same bytes");
        let (e0, e1) = (max_rel_err(&model, &plain), max_rel_err(&model, &refit));
        assert!(e1 < e0, "refit {e1:e} vs unrefitted {e0:e}");
    }
}
