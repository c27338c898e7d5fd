//! `quant{format=qop}`: layers lowered to QLinear operators for tract's
//! int8 kernels (the one quantized form tract runs faster than float:
//! QDQ graphs run in f32 there, 1.4–1.5x slower than float), with
//! activations kept in uint8 from one quantized layer to the next.
//!
//! ```text
//! y = Conv(x, W, b) [→ Relu]   →  yq = QLinearConv(xq, s_x, z_x, Wq int8, s_W, 0, s_y, z_y, bq int32)
//! y = Gemm(x[N,K], W, b) / MatMul  →  the same as a 1×1 QLinearConv on x as a [1, K, N, 1] image
//! ```
//!
//! Weights get one symmetric scale per tensor (tract's int8 kernels fuse
//! requantization only then); the bias becomes int32 on the grid
//! `s_x·s_W`, which QLinearMatMul has no input for: that is why a Gemm or
//! MatMul is lowered to a 1×1 QLinearConv (a QLinearMatMul with the bias
//! added in float between layers ran slower than float in tract). A Relu
//! that is a layer's only reader disappears: the output grid's zero point
//! at 0 clamps negatives exactly as it did. Values enter int8 once
//! (`QuantizeLinear`, with a Transpose+Unsqueeze into the column layout for
//! Gemm/MatMul) and leave once (`DequantizeLinear`) where a float operator
//! or a graph output reads them.

use super::{in_subgraphs, int8_bytes, Act, Grids, Layer, Quant};
use crate::calibrate::Calibration;
use crate::ir::patch::Src;
use crate::ir::{
    Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor, TensorData,
};
use crate::passes::toolkit::timing;
use crate::pipeline::PassContext;
use crate::quantize;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

impl Quant {
    /// `format=qop`: lower what can be lowered to QLinearConv (see `qop.rs`);
    /// with `measure`, kept only where it runs faster in tract than `given`.
    pub(super) fn run_qop(
        &self,
        model: &mut Model,
        given: Model,
        cx: &PassContext,
        layers: Vec<Layer>,
        mut report: Vec<serde_json::Value>,
        opset_raised: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let data = cx.data.as_ref().context(
            "quant needs calibration samples (the CLI provides --inputs or random ones)",
        )?;
        let g = &model.graph;
        let mut lowered = vec![];
        for layer in &layers {
            match lowering(g, layer, self.weight_bits().of(layer), self.max_weight_err) {
                Ok(l) => lowered.push(l),
                Err(why) => {
                    report.push(json!({ "layer": layer.name, "op": layer.op, "kept": why }))
                }
            }
        }
        if lowered.is_empty() {
            // Nothing to lower: the model goes back as it came.
            *model = given;
            return Ok(self.given_back("float (no layer to quantize)", report, json!({})));
        }
        let (grids, _) = self.calibrate(model, data, &values(g, &lowered), Act::U8, None)?;
        let (patch, mut entries, enters, leaves) = lower(&model.graph, &lowered, &grids)?;
        let float = model.clone();
        patch
            .apply(&mut model.graph)
            .context("lowering to QLinear operators")?;
        // Calibrated in ONNX Runtime: tract cannot run the given model, so
        // there is nothing to time against there (nakdimon's Loops).
        let untimed = (data.engine.get() == Some(&crate::runtime::Engine::Ort))
            .then_some("tract cannot run the given model");
        let measured = match self.measure && untimed.is_none() {
            true => Some(self.time_qop(data, &float, model)?),
            false => None,
        };
        if let Some((false, measured)) = &measured {
            // int8 does not pay in tract on this CPU: the model goes back.
            *model = given;
            report.extend(lowered.iter().map(|l| {
                json!({ "layer": l.name(), "kept": "float: the int8 model ran slower in tract" })
            }));
            let also = json!({ "measured": measured });
            return Ok(self.given_back("float (int8 did not pay in tract)", report, also));
        }
        let bytes_after = int8_bytes(&model.graph);
        entries.extend(report);
        Ok(json!({
            "target": self.target.name(),
            "format": "qop",
            "opset_raised": opset_raised,
            "activations": "uint8 asymmetric, kept between lowered layers",
            "method": self.method.name(),
            "calibration": format!("{} ({} samples)", data.source, data.samples.len()),
            "measured": match measured {
                Some((_, m)) => m,
                None => timing::not_timed(self.measure, cx, untimed.unwrap_or_default()),
            },
            "layers_quantized": lowered.len(),
            "left_in_subgraphs": in_subgraphs(&model.graph, &self.ops),
            "enter_int8": enters,
            "leave_int8": leaves,
            "weight_bytes": { "after": bytes_after },
            "layers": entries,
        }))
    }

    /// Times the lowered model against `float` in tract: whether it is
    /// clearly faster (tract's int8 kernels pay on some CPUs and cost on
    /// others: mlp-lowrank ran 1.16x faster on an AVX-512 VNNI Xeon, 40x
    /// slower on an AVX2 EPYC), and the report.
    fn time_qop(
        &self,
        data: &Calibration,
        float: &Model,
        lowered: &Model,
    ) -> Result<(bool, serde_json::Value)> {
        let engine = crate::runtime::Engine::Tract;
        let t = timing::time_in(engine, data, float, std::slice::from_ref(lowered))
            .context("timing the int8 model in tract")?;
        let pays = timing::fastest(&[t[0].speedup]).is_some();
        Ok((
            pays,
            json!({
                "cost_model": timing::cost_model(engine),
                "float_ms": t[0].a.median_ms,
                "forms": [{ "form": "qop", "ms": t[0].b.median_ms, "speedup": t[0].speedup }],
                "kept": if pays { "qop" } else { "float" },
                "same_without_timing": if pays { "measure=false" } else { "leave quant out of --passes" },
            }),
        ))
    }
}

/// The int8 form of a float value.
#[derive(Clone, Copy, Debug)]
struct Int8 {
    q: Src,
    scale: Src,
    zero: Src,
    layout: Layout,
    /// For columns of an N-D value: its leading dims (all but the last),
    /// to give the float value back its shape.
    lead: Option<Src>,
}

/// How a lowered layer lays out its activations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Layout {
    /// As the Conv's own `[N, C, spatial…]`.
    Image,
    /// A `[N, K]` matrix as a `[1, K, N, 1]` image (a MatMul as a 1×1 Conv).
    Columns,
}

/// A layer ready to lower.
pub(super) struct Lowering {
    node: NodeId,
    name: String,
    layout: Layout,
    x: Outlet,
    /// The rank of `x`.
    rank: usize,
    /// The float value the lowered layer stands for: its output, or the
    /// Relu after it.
    out: Outlet,
    relu: Option<NodeId>,
    /// `[M, K/group, k…]` as a Conv weight, and its dims.
    weight: Vec<f32>,
    dims: Vec<i64>,
    weight_value: Outlet,
    /// The weight on its per-tensor int8 grid (set by [`lowering`]).
    quantized: Option<quantize::QuantizedWeight>,
    bias: Option<Vec<f32>>,
    attributes: Vec<Attribute>,
}

impl Lowering {
    /// The layer's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// How `layer` would lower, or why it stays float.
pub(super) fn lowering(
    g: &Graph,
    layer: &Layer,
    bits: u32,
    max_weight_err: f64,
) -> std::result::Result<Lowering, String> {
    let mut l = lowering_form(g, layer)?;
    let dims: Vec<usize> = l.dims.iter().map(|&d| d as usize).collect();
    let q = quantize::quantize_weight(&l.weight, &dims, None, bits).map_err(|e| e.to_string())?;
    if q.rel_err > max_weight_err {
        return Err(format!(
            "per-tensor int8 weights lose {:.3} (relative L2) > max-weight-err={max_weight_err}: format=qdq's per-channel scales keep it",
            q.rel_err
        ));
    }
    l.quantized = Some(q);
    Ok(l)
}

fn lowering_form(g: &Graph, layer: &Layer) -> std::result::Result<Lowering, String> {
    let op = g.op(layer.node).expect("an operator");
    let (_, w, _) = layer.weight.ok_or("no constant weight")?;
    let x = layer.acts[0].1;
    let t = g.const_tensor(w).expect("a constant weight");
    let values = t.to_f32().map_err(|e| e.to_string())?;
    let const_f32 = |slot: usize| -> std::result::Result<Option<Vec<f32>>, String> {
        match g.input(layer.node, slot) {
            None => Ok(None),
            Some(o) => match g.const_tensor(o) {
                Some(t) if t.dtype == DataType::FLOAT => {
                    t.to_f32().map(Some).map_err(|e| e.to_string())
                }
                _ => Err("bias is not an f32 constant".into()),
            },
        }
    };
    let y = Outlet::new(layer.node, 0);
    let relu = match g.consumers(y).as_slice() {
        [(r, 0)] if !g.is_graph_output(y) && g.op(*r).is_some_and(|op| op.is("Relu")) => Some(*r),
        _ => None,
    };
    let out = relu.map_or(y, |r| Outlet::new(r, 0));
    let base = Lowering {
        node: layer.node,
        name: layer.name.clone(),
        layout: Layout::Image,
        x,
        rank: g.known_rank(x).unwrap_or(0),
        out,
        relu,
        weight: values,
        dims: t.dims.clone(),
        weight_value: w,
        quantized: None,
        bias: None,
        attributes: vec![],
    };
    match op.op_type.as_str() {
        "Conv" if matches!(t.dims.len(), 3 | 4) => Ok(Lowering {
            bias: const_f32(2)?,
            attributes: op.attributes.clone(),
            ..base
        }),
        "Gemm" | "MatMul" if t.dims.len() == 2 => {
            match g.known_rank(x) {
                Some(2) => {}
                Some(r) if r > 2 && op.is("MatMul") => {}
                _ => return Err("input of unknown rank, or Gemm input not 2-D".into()),
            }
            let gemm = op.is("Gemm");
            if gemm
                && (op.attr_int("transA", 0) != 0
                    || op.attr_float("alpha", 1.0) != 1.0
                    || op.attr_float("beta", 1.0) != 1.0)
            {
                return Err("Gemm with transA, alpha or beta".into());
            }
            let (k, m) = (t.dims[0] as usize, t.dims[1] as usize);
            let trans_b = gemm && op.attr_int("transB", 0) != 0;
            // As a Conv weight [M, K, 1, 1]: rows are output features.
            let (m, k, weight) = if trans_b {
                (k, m, base.weight.clone())
            } else {
                let w = &base.weight;
                (m, k, (0..m * k).map(|i| w[(i % k) * m + i / k]).collect())
            };
            let bias = if gemm { const_f32(2)? } else { None };
            if bias.as_ref().is_some_and(|b| b.len() != m) {
                return Err("bias is not one value per output".into());
            }
            Ok(Lowering {
                layout: Layout::Columns,
                weight,
                dims: vec![m as i64, k as i64, 1, 1],
                bias,
                attributes: vec![Attribute::ints("kernel_shape", &[1, 1])],
                ..base
            })
        }
        other => Err(format!(
            "{other} with a weight of rank {} has no QLinear form here",
            t.dims.len()
        )),
    }
}

/// The float values whose ranges the lowering needs: inputs and outputs.
pub(super) fn values(g: &Graph, lowered: &[Lowering]) -> Vec<String> {
    let mut names: Vec<String> = lowered
        .iter()
        .flat_map(|l| {
            [
                g.outlet_name(l.x).to_string(),
                g.outlet_name(l.out).to_string(),
            ]
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The patch lowering every layer, and a report entry per layer.
pub(super) fn lower(
    g: &Graph,
    lowered: &[Lowering],
    grids: &Grids,
) -> Result<(Patch, Vec<serde_json::Value>, usize, usize)> {
    let mut patch = Patch::new("quant: qop");
    let grid = |v: Outlet| {
        let name = g.outlet_name(v);
        grids
            .get(name)
            .map(|c| c.grid)
            .with_context(|| format!("value {name} was not calibrated"))
    };
    let mut int8: BTreeMap<Outlet, Int8> = BTreeMap::new();
    let readers_lowered: HashSet<(NodeId, Outlet, Layout)> =
        lowered.iter().map(|l| (l.node, l.x, l.layout)).collect();
    let (mut entries, mut enters, mut leaves) = (vec![], 0, 0);
    for l in lowered {
        let xname = g.outlet_name(l.x).to_string();
        let xgrid = grid(l.x)?;
        let x = match int8.get(&l.x) {
            Some(form) if form.layout == l.layout => *form,
            _ => {
                let (src, lead) = match l.layout {
                    Layout::Image => (Src::from(l.x), None),
                    Layout::Columns => to_columns(&mut patch, l.x, l.rank, &xname),
                };
                let (s, z) = grid_consts(&mut patch, &xname, &xgrid);
                let q = patch.add_op(
                    Some(format!("{xname}_QuantizeLinear")),
                    Operator::new("QuantizeLinear", 3, vec![]),
                    vec![Some(src), Some(s), Some(z)],
                    &[&format!("{xname}_quantized")],
                );
                enters += 1;
                let form = Int8 {
                    q: Patch::out(q, 0),
                    scale: s,
                    zero: z,
                    layout: l.layout,
                    lead,
                };
                int8.insert(l.x, form);
                form
            }
        };
        let (xq, xs, xz) = (x.q, x.scale, x.zero);
        let qw = l.quantized.as_ref().expect("quantized by lowering()");
        let ws = qw.scales[0];
        let wname = g.outlet_name(l.weight_value).to_string();
        let wq = patch.add_const(
            &format!("{wname}_quantized"),
            Tensor::new(
                DataType::INT8,
                l.dims.clone(),
                TensorData::Raw(qw.q.iter().map(|&v| v as u8).collect::<Vec<u8>>().into()),
            ),
        );
        let wsrc = patch.add_const(&format!("{wname}_scale"), Tensor::from_f32(vec![], &[ws]));
        let wz = patch.add_const(
            &format!("{wname}_zero_point"),
            Tensor::new(DataType::INT8, vec![], TensorData::Raw(vec![0u8].into())),
        );
        let outname = g.outlet_name(l.out).to_string();
        let ygrid = grid(l.out)?;
        let (ys, yz) = grid_consts(&mut patch, &outname, &ygrid);
        let mut inputs = vec![
            Some(xq),
            Some(xs),
            Some(xz),
            Some(wq),
            Some(wsrc),
            Some(wz),
            Some(ys),
            Some(yz),
        ];
        if let Some(b) = &l.bias {
            // int32 on the accumulator's grid s_x·s_W.
            let step = xgrid.scale as f64 * ws as f64;
            let bq: Vec<u8> = b
                .iter()
                .map(|&v| {
                    (v as f64 / step)
                        .round()
                        .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                })
                .flat_map(i32::to_le_bytes)
                .collect();
            inputs.push(Some(patch.add_const(
                &format!("{}_bias_quantized", l.name),
                Tensor::new(
                    DataType::INT32,
                    vec![b.len() as i64],
                    TensorData::Raw(bq.into()),
                ),
            )));
        }
        let node = patch.add_op(
            Some(l.name.clone()),
            Operator::new("QLinearConv", inputs.len(), l.attributes.clone()),
            inputs,
            &[&format!("{outname}_quantized")],
        );
        let y = Int8 {
            q: Patch::out(node, 0),
            scale: ys,
            zero: yz,
            layout: l.layout,
            lead: x.lead,
        };
        int8.insert(l.out, y);
        // Float readers (and graph outputs) get the value back once.
        let float_readers = g
            .consumers(l.out)
            .into_iter()
            .any(|(n, _)| !readers_lowered.contains(&(n, l.out, l.layout)));
        if float_readers || g.is_graph_output(l.out) {
            let dq = patch.add_op(
                Some(format!("{outname}_DequantizeLinear")),
                Operator::new("DequantizeLinear", 3, vec![]),
                vec![Some(Patch::out(node, 0)), Some(ys), Some(yz)],
                &[&format!("{outname}_dequantized")],
            );
            let back = match l.layout {
                Layout::Image => Patch::out(dq, 0),
                Layout::Columns => {
                    from_columns(&mut patch, Patch::out(dq, 0), y.lead, l.dims[0], &outname)
                }
            };
            patch.shunt(l.out, back);
            leaves += 1;
        }
        patch.remove(l.node);
        if let Some(r) = l.relu {
            patch.remove(r);
        }
        // The float weight and bias go when nothing else reads them.
        for v in std::iter::once(l.weight_value).chain(g.input(l.node, 2)) {
            if g.consumers(v).iter().all(|(n, _)| *n == l.node) && !g.is_graph_output(v) {
                patch.remove(v.node);
            }
        }
        entries.push(json!({
            "layer": l.name,
            "as": match l.layout { Layout::Image => "QLinearConv", Layout::Columns => "QLinearConv 1x1 on [1,K,N,1]" },
            "relu_folded": l.relu.is_some(),
            "weight": { "name": wname, "scale": ws, "rel_err": qw.rel_err },
            "input": { "value": xname, "scale": xgrid.scale, "zero_point": xgrid.zero_point },
            "output": { "value": outname, "scale": ygrid.scale, "zero_point": ygrid.zero_point },
        }));
    }
    Ok((patch, entries, enters, leaves))
}

fn grid_consts(patch: &mut Patch, name: &str, grid: &quantize::Grid) -> (Src, Src) {
    let s = patch.add_const(
        &format!("{name}_scale"),
        Tensor::from_f32(vec![], &[grid.scale]),
    );
    let z = patch.add_const(
        &format!("{name}_zero_point"),
        Tensor::new(
            DataType::UINT8,
            vec![],
            TensorData::Raw(vec![grid.zero_point as u8].into()),
        ),
    );
    (s, z)
}

/// `[…, K]` → `[1, K, N, 1]` (N the product of the leading dims), and
/// for an input of rank > 2 its leading dims.
fn to_columns(patch: &mut Patch, x: Outlet, rank: usize, name: &str) -> (Src, Option<Src>) {
    let (rows, lead) = if rank > 2 {
        let shape = patch.add_op(
            Some(format!("{name}_Shape")),
            Operator::new("Shape", 1, vec![]),
            vec![Some(Src::from(x))],
            &[&format!("{name}_shape")],
        );
        let start = patch.add_const(
            &format!("{name}_lead_start"),
            Tensor::from_i64(vec![1], &[0]),
        );
        let end = patch.add_const(
            &format!("{name}_lead_end"),
            Tensor::from_i64(vec![1], &[-1]),
        );
        let lead = patch.add_op(
            Some(format!("{name}_lead_Slice")),
            Operator::new("Slice", 3, vec![]),
            vec![Some(Patch::out(shape, 0)), Some(start), Some(end)],
            &[&format!("{name}_lead")],
        );
        let flat = patch.add_op(
            Some(format!("{name}_Flatten")),
            Operator::new("Flatten", 1, vec![Attribute::int("axis", rank as i64 - 1)]),
            vec![Some(Src::from(x))],
            &[&format!("{name}_flat")],
        );
        (Patch::out(flat, 0), Some(Patch::out(lead, 0)))
    } else {
        (Src::from(x), None)
    };
    let t = patch.add_op(
        Some(format!("{name}_to_columns_Transpose")),
        Operator::new("Transpose", 1, vec![Attribute::ints("perm", &[1, 0])]),
        vec![Some(rows)],
        &[&format!("{name}_transposed")],
    );
    let axes = patch.add_const(&format!("{name}_axes"), Tensor::from_i64(vec![2], &[0, 3]));
    let u = patch.add_op(
        Some(format!("{name}_to_columns_Unsqueeze")),
        Operator::new("Unsqueeze", 2, vec![]),
        vec![Some(Patch::out(t, 0)), Some(axes)],
        &[&format!("{name}_columns")],
    );
    (Patch::out(u, 0), lead)
}

/// `[1, M, N, 1]` → `[N, M]`, or `[lead…, M]` when the input had leading dims.
fn from_columns(patch: &mut Patch, y: Src, lead: Option<Src>, m: i64, name: &str) -> Src {
    let axes = patch.add_const(&format!("{name}_axes"), Tensor::from_i64(vec![2], &[0, 3]));
    let s = patch.add_op(
        Some(format!("{name}_to_rows_Squeeze")),
        Operator::new("Squeeze", 2, vec![]),
        vec![Some(y), Some(axes)],
        &[&format!("{name}_rows_transposed")],
    );
    let t = patch.add_op(
        Some(format!("{name}_to_rows_Transpose")),
        Operator::new("Transpose", 1, vec![Attribute::ints("perm", &[1, 0])]),
        vec![Some(Patch::out(s, 0))],
        &[&format!("{name}_rows")],
    );
    let Some(lead) = lead else {
        return Patch::out(t, 0);
    };
    let last = patch.add_const(&format!("{name}_last_dim"), Tensor::from_i64(vec![1], &[m]));
    let shape = patch.add_op(
        Some(format!("{name}_shape_Concat")),
        Operator::new("Concat", 2, vec![Attribute::int("axis", 0)]),
        vec![Some(lead), Some(last)],
        &[&format!("{name}_shape")],
    );
    let r = patch.add_op(
        Some(format!("{name}_Reshape")),
        Operator::new("Reshape", 2, vec![]),
        vec![Some(Patch::out(t, 0)), Some(Patch::out(shape, 0))],
        &[&format!("{name}_reshaped")],
    );
    Patch::out(r, 0)
}
