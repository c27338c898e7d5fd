//! # fold-constants
//!
//! **What:** evaluates, once, every operator whose inputs are all constant,
//! and `Shape`/`Size` of values whose shape is statically known; their
//! results become initializers. Subgraphs included.
//!
//! **Why:** exporters build weights and shapes with arithmetic
//! (`ConstantOfShape`, `Shape → Gather → Concat → Reshape`); folded, the
//! runtime does less, and the weight-rewriting passes see plain weights.
//!
//! ```text
//! s = Shape(x: f32[1,8,16,16])                  init c: i64[2] = [8, 256]
//! c = Concat(Gather(s, 1), k)            →      y = Reshape(x, c)
//! y = Reshape(x, c)
//! ```
//! Evaluation runs in tract, so folding computes exactly what the runtime
//! would; a constant region is evaluated as one model (one load, not one per
//! node), node by node only when tract refuses the region. Never folded: random ops, `DequantizeLinear` (it would undo
//! quantized weights), ops with subgraphs or outside the ONNX domain, and
//! results larger than `max-mb`. Initializers left unused are for `dce`.
//!
//! Nor are results much larger than what they are made from
//! (`ConstantOfShape`, `Expand`, `Tile` of a small constant): a folded
//! 512×512×3×3 weight costs 9 MiB of file for nothing, since runtimes fold
//! such nodes when they load the model (onnxsim does fold them, and turns
//! onnx's 10 KiB caffe2 test models into 100 MiB files). The report lists
//! how many were left, with the bytes they would have added. The default
//! (1 KiB) folds everything the unlimited pass folds on every suite model
//! but onnx's caffe2 test models, whose weights are all `ConstantOfShape`.
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them).

use crate::ir::{DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::PassInfo;
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::{ensure, Result};
use serde_json::json;
use std::collections::{HashMap, HashSet};

pub const INFO: PassInfo = PassInfo::exact(
    "fold-constants",
    "evaluate constant-only subgraphs and static Shape/Size once, in tract",
    build,
)
.with_options(Opts::TABLE);

crate::pass_options! {
    struct Opts {
        max_mb: f64 = "max-mb", "64", "largest folded result in MiB";
        max_growth_kb: f64 = "max-growth-kb", "1",
            "largest growth in KiB of a folded result over the constants it is computed from";
    }
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let Opts {
        max_mb,
        max_growth_kb,
    } = Opts::parse(options)?;
    ensure!(max_mb > 0.0, "max-mb must be positive");
    ensure!(max_growth_kb >= 0.0, "max-growth-kb must be >= 0");
    Ok(Box::new(FoldConstants {
        max_bytes: (max_mb * 1024.0 * 1024.0) as usize,
        max_growth: (max_growth_kb * 1024.0) as usize,
    }))
}

struct FoldConstants {
    max_bytes: usize,
    max_growth: usize,
}

/// What folding left computed because its result would grow the model.
#[derive(Default)]
struct Unfolded {
    nodes: usize,
    bytes: usize,
}

/// Besides random ops: folding would undo quantized weights, or lift constants.
const NEVER_FOLD: &[&str] = &["DequantizeLinear", "Constant"];

impl Pass for FoldConstants {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let (mut folded, mut skipped, mut large) = (0, vec![], Unfolded::default());
        let context = model.clone_header();
        model.graph.visit_graphs_mut(&mut |g| {
            let (patch, n) = self.fold(&context, g, &mut skipped, &mut large)?;
            folded += n;
            patch.apply(g)
        })?;
        skipped.sort();
        skipped.dedup();
        Ok(json!({
            "folded_values": folded,
            "not_evaluable": skipped,
            "left_to_grow": { "nodes": large.nodes, "bytes": large.bytes },
        }))
    }
}

impl FoldConstants {
    /// Sweeps in topological order: constants propagate, so a whole constant
    /// region folds at once; only values used outside it are kept.
    fn fold(
        &self,
        model: &Model,
        g: &Graph,
        skipped: &mut Vec<String>,
        large: &mut Unfolded,
    ) -> Result<(Patch, usize)> {
        let mut values: HashMap<Outlet, Tensor> = HashMap::new();
        let mut open: Vec<NodeId> = g
            .op_order()?
            .into_iter()
            .filter(|&id| g.op(id).is_some_and(foldable))
            .collect();
        // Each sweep gathers the nodes tract must evaluate into one region,
        // evaluated as one model. A size check that needs values computed in
        // the region (`Expand` of a computed shape) waits for the next sweep,
        // and so does what reads it.
        while !open.is_empty() {
            let (region, waiting) = self.sweep(g, &open, &mut values, large);
            if region.is_empty() {
                break;
            }
            let known = |o: Outlet| values.get(&o).or_else(|| g.const_tensor(o));
            // A region tract refuses is evaluated node by node: only the
            // nodes it cannot evaluate are left out.
            let evaluated = crate::exec::evaluate_nodes(model, g, &region, &known).ok();
            for (k, &id) in region.iter().enumerate() {
                // An input refused by the size checks: the node stays.
                let Some(args) = self.args(g, id, &values) else {
                    continue;
                };
                let results = match &evaluated {
                    Some(all) => all[k].clone(),
                    None => match crate::exec::evaluate_node(model, g, id, &args) {
                        Ok(r) => r,
                        Err(_) => {
                            skipped.push(g.op(id).expect("operators").op_type.clone());
                            continue;
                        }
                    },
                };
                self.keep(g, id, results, &mut values, large);
            }
            open = waiting;
        }
        // Keep the values used by a node that stays, or by a graph output.
        let mut patch = Patch::new("fold-constants");
        let mut kept: Vec<(Outlet, Tensor)> = values
            .iter()
            .filter(|(o, _)| {
                g.is_graph_output(**o)
                    || g.consumers(**o)
                        .iter()
                        .any(|(user, _)| !folded_node(g, *user, &values))
            })
            .map(|(o, t)| (*o, t.clone()))
            .collect();
        kept.sort_by_key(|(o, _)| *o);
        let count = kept.len();
        for (outlet, tensor) in kept {
            let name = g.outlet_name(outlet).to_string();
            let init = patch.add_const(&name, tensor);
            patch.shunt(outlet, init);
        }
        // A folded node is used only by other folded nodes once its kept
        // values are shunted: remove them together, so the new constants keep
        // their names.
        let mut folded: Vec<NodeId> = values.keys().map(|o| o.node).collect();
        folded.sort();
        folded.dedup();
        for id in folded.into_iter().filter(|&id| folded_node(g, id, &values)) {
            patch.remove(id);
        }
        Ok((patch, count))
    }

    /// One sweep over the `open` nodes, in topological order: folds what
    /// needs no tract (static shapes, integer casts), refuses what is known
    /// to be too large, and returns the nodes for tract to evaluate (their
    /// inputs constant or computed by earlier ones) and the nodes that must
    /// wait for those values.
    fn sweep(
        &self,
        g: &Graph,
        open: &[NodeId],
        values: &mut HashMap<Outlet, Tensor>,
        large: &mut Unfolded,
    ) -> (Vec<NodeId>, Vec<NodeId>) {
        let (mut region, mut waiting) = (vec![], vec![]);
        let (mut in_region, mut waits) = (HashSet::new(), HashSet::new());
        for &id in open {
            if let Some(t) = static_shape_op(g, id) {
                self.keep(g, id, vec![Some(t)], values, large);
                continue;
            }
            let inputs = g.inputs(id);
            if inputs.iter().all(Option::is_none) {
                continue;
            }
            let from = inputs.iter().flatten().map(|o| {
                if values.contains_key(o) || g.const_tensor(*o).is_some() {
                    Source::Known
                } else if in_region.contains(&o.node) {
                    Source::Region
                } else if waits.contains(&o.node) {
                    Source::Waiting
                } else {
                    Source::Never
                }
            });
            let op = g.op(id).expect("operators");
            let all_known = match from.max().unwrap_or(Source::Known) {
                Source::Never => continue,
                Source::Region if !grows_by_its_arguments(op) => false,
                Source::Region | Source::Waiting => {
                    waits.insert(id);
                    waiting.push(id);
                    continue;
                }
                Source::Known => true,
            };
            if all_known {
                let args = self.args(g, id, values).expect("every input is known");
                let made_from: usize = args.iter().flatten().map(|t| t.byte_len()).sum();
                let limit = self
                    .max_bytes
                    .min(made_from.saturating_add(self.max_growth));
                if let Some(bytes) = filled_bytes(op, &args).filter(|&b| b > limit) {
                    // Known before evaluating: never allocate what is refused.
                    if bytes <= self.max_bytes {
                        large.nodes += 1;
                        large.bytes += bytes - made_from;
                    }
                    continue;
                }
                if let Some(t) = cast_to_i64(op, &args) {
                    self.keep(g, id, vec![Some(t)], values, large);
                    continue;
                }
            }
            in_region.insert(id);
            region.push(id);
        }
        (region, waiting)
    }

    /// The constant arguments of `id`, one per declared slot (`None` for
    /// omitted ones); `None` when an input is not constant.
    fn args<'v>(
        &self,
        g: &'v Graph,
        id: NodeId,
        values: &'v HashMap<Outlet, Tensor>,
    ) -> Option<Vec<Option<&'v Tensor>>> {
        g.inputs(id)
            .iter()
            .map(|o| match o {
                None => Some(None),
                Some(o) => values.get(o).or_else(|| g.const_tensor(*o)).map(Some),
            })
            .collect()
    }

    /// Records the results of `id` that pass the size limits.
    fn keep(
        &self,
        g: &Graph,
        id: NodeId,
        results: Vec<Option<Tensor>>,
        values: &mut HashMap<Outlet, Tensor>,
        large: &mut Unfolded,
    ) {
        let made_from: usize = g
            .inputs(id)
            .iter()
            .flatten()
            .filter_map(|o| values.get(o).or_else(|| g.const_tensor(*o)))
            .map(|t| t.byte_len())
            .sum();
        for (slot, t) in results.into_iter().enumerate() {
            let Some(t) = t.filter(|t| t.byte_len() <= self.max_bytes) else {
                continue;
            };
            if t.byte_len() > made_from.saturating_add(self.max_growth) {
                large.nodes += 1;
                large.bytes += t.byte_len() - made_from;
                continue;
            }
            values.insert(Outlet::new(id, slot), t);
        }
    }
}

/// Where a node's inputs come from in a sweep, in the order that decides
/// what the node does: the last one any input has.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A constant, or a value folded before.
    Known,
    /// Computed by a node of this sweep's region.
    Region,
    /// Computed by a node that waits for the next sweep.
    Waiting,
    /// Not constant.
    Never,
}

/// An operator folding may evaluate: deterministic, in the ONNX domain,
/// without subgraphs.
fn foldable(op: &Operator) -> bool {
    op.is_default_domain()
        && !op.has_subgraphs()
        && !op.is_random()
        && !NEVER_FOLD.contains(&op.op_type.as_str())
}

/// Operators whose result size [`filled_bytes`] reads from their arguments
/// before evaluating them.
fn grows_by_its_arguments(op: &Operator) -> bool {
    op.is("ConstantOfShape") || op.is("Expand") || op.is("Tile")
}

/// The bytes a `ConstantOfShape` of a constant shape would fill, read from
/// its arguments before evaluating it (overflow counts as too large).
fn filled_bytes(op: &Operator, args: &[Option<&Tensor>]) -> Option<usize> {
    if op.is("Expand") || op.is("Tile") {
        return spread_bytes(op, args);
    }
    if !op.is("ConstantOfShape") {
        return None;
    }
    let dims = args.first().copied().flatten()?.to_i64().ok()?;
    let elem = match op.attr("value").map(|a| &a.value) {
        Some(crate::ir::AttrValue::Tensor(value)) => value.dtype.size_of()?,
        _ => 4, // float32 zero by default
    };
    dims.iter()
        .try_fold(elem, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .or(Some(usize::MAX))
}

/// The bytes of `Expand(x, shape)` (numpy broadcasting) or `Tile(x,
/// repeats)`, from the dims of `x` and the shape or repeats: what tract's
/// result would hold. `None` when the arguments are not valid (tract then
/// says so, and the node is skipped as before). Evaluating a large spread
/// only to refuse it cost most of `fuse` on onnx's caffe2 test models
/// (light-resnet50: 0.96 s of 1.4 s in a debug build).
fn spread_bytes(op: &Operator, args: &[Option<&Tensor>]) -> Option<usize> {
    let [Some(x), Some(by)] = args else {
        return None;
    };
    let by = by.to_i64().ok()?;
    let elem = x.dtype.size_of()?;
    let dims: Vec<i64> = if op.is("Tile") {
        if by.len() != x.dims.len() || by.iter().any(|&r| r < 0) {
            return None;
        }
        x.dims
            .iter()
            .zip(&by)
            .map(|(&d, &r)| d.checked_mul(r))
            .collect::<Option<_>>()?
    } else {
        let rank = x.dims.len().max(by.len());
        let at = |v: &[i64], axis: usize| (axis + v.len()).checked_sub(rank).map_or(1, |k| v[k]);
        (0..rank)
            .map(|axis| match (at(&x.dims, axis), at(&by, axis)) {
                (a, b) if a == b || b == 1 => Some(a),
                (1, b) if b >= 0 => Some(b),
                _ => None,
            })
            .collect::<Option<_>>()?
    };
    dims.iter()
        .try_fold(elem, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .or(Some(usize::MAX))
}

/// `Cast` of an integer constant to int64 (paddle's shape arithmetic casts
/// each `fill_constant`): a sign or zero extension, computed here as tract
/// computes it (the test compares), without loading a model into tract.
fn cast_to_i64(op: &Operator, args: &[Option<&Tensor>]) -> Option<Tensor> {
    if !op.is("Cast") || op.attr_int("to", 0) != i64::from(DataType::INT64.0) {
        return None;
    }
    // uint8, int8, uint16, int16, int32. Not int64 or uint32: tract's
    // results differ at the extremes there (i64::MIN gives 0, u32::MAX -1),
    // and folding must give what tract gives.
    let [Some(t)] = args else { return None };
    if !matches!(t.dtype.0, 2..=6) {
        return None;
    }
    Some(Tensor::from_i64(t.dims.clone(), &t.to_i64().ok()?))
}

/// Every used output of `id` has a folded value.
fn folded_node(g: &Graph, id: NodeId, values: &HashMap<Outlet, Tensor>) -> bool {
    let node = g.node(id);
    (0..node.outputs.len()).all(|slot| {
        let o = Outlet::new(id, slot);
        values.contains_key(&o) || !g.is_used(o)
    })
}

/// `Shape(x)` / `Size(x)` when x's shape is statically known.
fn static_shape_op(g: &Graph, id: NodeId) -> Option<Tensor> {
    let op = g.op(id)?;
    if !(op.is("Shape") || op.is("Size")) {
        return None;
    }
    let dims = g.known_type(g.input(id, 0)?)?.static_dims()?;
    if op.op_type == "Size" {
        let size = dims.iter().try_fold(1i64, |n, &d| n.checked_mul(d))?;
        return Some(Tensor::from_i64(vec![], &[size]));
    }
    let rank = dims.len() as i64;
    let clamp = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
    let int_attr = |name: &str| match op.attr(name).map(|a| &a.value) {
        Some(crate::ir::AttrValue::Int(v)) => Some(*v),
        _ => None,
    };
    let (start, end) = (
        clamp(int_attr("start").unwrap_or(0)),
        clamp(int_attr("end").unwrap_or(rank)),
    );
    let slice = if start < end {
        &dims[start..end]
    } else {
        &[][..]
    };
    Some(Tensor::from_i64(vec![slice.len() as i64], slice))
}

#[cfg(test)]
mod tests;
