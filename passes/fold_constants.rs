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
//! Evaluation runs each node in tract, so folding computes exactly what the
//! runtime would. Never folded: random ops, `DequantizeLinear` (it would undo
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
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::{ensure, Result};
use serde_json::json;
use std::collections::HashMap;

pub const INFO: PassInfo = PassInfo {
    name: "fold-constants",
    summary: "evaluate constant-only subgraphs and static Shape/Size once, in tract",
    exact: true,
    data: DataUse::None,
    options: Opts::TABLE,
    build,
};

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
    /// One sweep in topological order: constants propagate, so a whole
    /// constant region folds at once; only values used outside it are kept.
    fn fold(
        &self,
        model: &Model,
        g: &Graph,
        skipped: &mut Vec<String>,
        large: &mut Unfolded,
    ) -> Result<(Patch, usize)> {
        let mut values: HashMap<Outlet, Tensor> = HashMap::new();
        for id in g.op_order()? {
            let op = g.op(id).expect("operators");
            if !op.is_default_domain()
                || op.has_subgraphs()
                || op.is_random()
                || NEVER_FOLD.contains(&op.op_type.as_str())
            {
                continue;
            }
            let results = if let Some(t) = static_shape_op(g, id) {
                vec![Some(t)]
            } else {
                let inputs = g.inputs(id);
                if inputs.iter().all(Option::is_none) {
                    continue;
                }
                let args: Option<Vec<Option<&Tensor>>> = inputs
                    .iter()
                    .map(|o| match o {
                        None => Some(None),
                        Some(o) => values.get(o).or_else(|| g.const_tensor(*o)).map(Some),
                    })
                    .collect();
                let Some(args) = args else { continue };
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
                    vec![Some(t)]
                } else {
                    match crate::exec::evaluate_node(model, g, id, &args) {
                        Ok(r) => r,
                        Err(_) => {
                            skipped.push(op.op_type.clone());
                            continue;
                        }
                    }
                }
            };
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
mod tests {
    use super::*;
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, TensorData};

    /// The integer casts folded without tract give what tract gives, bit
    /// for bit (storage included), for every integer type and edge values.
    #[test]
    fn integer_casts_to_i64_match_tract() {
        let cases: Vec<(DataType, Vec<i64>, Vec<u8>)> = vec![
            (DataType(2), vec![3], vec![0, 7, 255]),
            (DataType(3), vec![3], vec![0x80, 0x7f, 0xff]),
            (DataType(4), vec![2], vec![0xff, 0xff, 1, 0]),
            (DataType(5), vec![2], vec![0x00, 0x80, 0xff, 0x7f]),
            (DataType(6), vec![], (-5i32).to_le_bytes().to_vec()),
            (
                DataType(6),
                vec![2],
                [i32::MIN, i32::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        ];
        for (dtype, dims, raw) in cases {
            for data in [TensorData::Raw(raw.clone().into()), typed(dtype, &raw)] {
                let t = Tensor::new(dtype, dims.clone(), data);
                let mut b = ModelBuilder::new(13);
                let c = b.init("c", t.clone());
                let y = b.op("Cast", &[c], vec![Attribute::int("to", 7)], "y");
                b.output(y, DataType::INT64);
                let m = b.build().unwrap();
                let op = m.graph.op(y.node).unwrap();
                let ours = cast_to_i64(op, &[Some(&t)]).expect("folded natively");
                let tract = crate::exec::evaluate_node(&m, &m.graph, y.node, &[Some(&t)]).unwrap();
                assert_eq!(Some(ours), tract[0], "{dtype:?} {dims:?} {raw:?}");
            }
        }
        for dtype in [DataType(7), DataType(12), DataType(9), DataType(1)] {
            let t = Tensor::new(dtype, vec![], TensorData::Raw(vec![0; 8].into()));
            let op = Operator::new("Cast", 1, vec![Attribute::int("to", 7)]);
            assert_eq!(cast_to_i64(&op, &[Some(&t)]), None, "{dtype:?}");
        }
    }

    /// The size an `Expand` or `Tile` is refused by before it is evaluated
    /// is the size of what tract computes, for broadcasts of every kind.
    #[test]
    fn spread_bytes_are_what_tract_computes() {
        let cases: [(&str, DataType, Vec<i64>, Vec<i64>); 7] = [
            ("Expand", DataType::FLOAT, vec![3, 1], vec![2, 1, 4]),
            ("Expand", DataType::FLOAT, vec![1, 4], vec![3, 1]),
            ("Expand", DataType::INT64, vec![2], vec![5, 1, 1]),
            ("Expand", DataType(10), vec![1], vec![]),
            ("Expand", DataType::UINT8, vec![1, 3], vec![0, 3]),
            ("Tile", DataType::FLOAT, vec![2, 3], vec![4, 1]),
            ("Tile", DataType::INT64, vec![2], vec![0]),
        ];
        for (op_type, dtype, dims, by) in cases {
            let n: i64 = dims.iter().product();
            let raw = vec![1u8; n as usize * dtype.size_of().unwrap()];
            let x = Tensor::new(dtype, dims.clone(), TensorData::Raw(raw.into()));
            let by = Tensor::from_i64(vec![by.len() as i64], &by);
            let mut b = ModelBuilder::new(13);
            let (xo, bo) = (b.init("x", x.clone()), b.init("by", by.clone()));
            let y = b.op(op_type, &[xo, bo], vec![], "y");
            b.output(y, dtype);
            let m = b.build().unwrap();
            let op = m.graph.op(y.node).unwrap();
            let args = [Some(&x), Some(&by)];
            let tract = crate::exec::evaluate_node(&m, &m.graph, y.node, &args).unwrap();
            let tract = tract[0].as_ref().unwrap();
            assert_eq!(
                filled_bytes(op, &args),
                Some(tract.byte_len()),
                "{op_type} {dims:?}"
            );
        }
        // Dims that do not broadcast: left to tract, which refuses them.
        let x = Tensor::from_f32(vec![3], &[1.0; 3]);
        let by = Tensor::from_i64(vec![1], &[2]);
        let expand = Operator::new("Expand", 2, vec![]);
        assert_eq!(spread_bytes(&expand, &[Some(&x), Some(&by)]), None);
    }

    /// A `ConstantOfShape` that would write 256 KiB into the file from an
    /// 16-byte shape stays computed; a small one folds, and so does what
    /// is computed from it.
    #[test]
    fn results_much_larger_than_their_sources_stay_computed() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[256, 256]);
        let big_shape = b.init("big_shape", Tensor::from_i64(vec![2], &[256, 256]));
        let small_shape = b.init("small_shape", Tensor::from_i64(vec![1], &[256]));
        let one = Tensor::from_f32(vec![1], &[1.0]);
        let fill = vec![Attribute::new("value", crate::ir::AttrValue::Tensor(one))];
        let big = b.op("ConstantOfShape", &[big_shape], fill.clone(), "big");
        let small = b.op("ConstantOfShape", &[small_shape], fill, "small");
        let two = b.op("Add", &[small, small], vec![], "two");
        let y = b.op("Mul", &[x, big], vec![], "y");
        let z = b.op("Mul", &[y, two], vec![], "z");
        b.output(z, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = crate::passes::testing::check("fold-constants__growth", &m, "fold-constants");
        let ops: Vec<_> = after
            .graph
            .node_ids()
            .filter_map(|id| after.graph.op(id))
            .map(|o| o.op_type.as_str())
            .collect();
        assert_eq!(
            ops.iter().filter(|&&o| o == "ConstantOfShape").count(),
            1,
            "{ops:?}"
        );
        assert!(!ops.contains(&"Add"), "{ops:?}");
        // The limit is an option.
        let all = crate::passes::testing::rewrite(&m, "fold-constants{max-growth-kb=256}");
        assert!(all
            .graph
            .node_ids()
            .filter_map(|id| all.graph.op(id))
            .all(|o| o.op_type != "ConstantOfShape"));
    }

    /// The typed storage ONNX uses for the same elements.
    fn typed(dtype: DataType, raw: &[u8]) -> TensorData {
        let t = Tensor::new(dtype, vec![], TensorData::Raw(raw.to_vec().into()));
        let n = match dtype.0 {
            2 | 3 => 1,
            4 | 5 => 2,
            _ => 4,
        };
        let v: Vec<i64> = Tensor {
            dims: vec![(raw.len() / n) as i64],
            ..t
        }
        .to_i64()
        .unwrap();
        TensorData::Int32(v.iter().map(|&x| x as i32).collect())
    }
}
