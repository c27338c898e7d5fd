//! # quant
//!
//! **What:** int8 quantization, `θq = round(θ/Δ)·Δ`, calibrated on data.
//! Weights of Conv, ConvTranspose, Gemm and MatMul become int8 initializers
//! with one symmetric scale per output channel (zero point 0, range
//! [-127, 127]) on the consumer's output-channel axis (Conv 0,
//! ConvTranspose 1, Gemm 0 with `transB` and 1 without, MatMul the last),
//! read through `DequantizeLinear`. The activations those layers read (and
//! the two inputs of a residual Add) get a per-tensor
//! `QuantizeLinear → DequantizeLinear` pair whose scale comes from
//! calibration (MinMax, Percentile or Entropy over `--inputs`).
//!
//! **Why:** this QDQ form is what TensorRT's explicit quantization and ONNX
//! Runtime's int8 kernels take: the file is ~4× smaller and int8 layers run
//! several times faster there. It is lossy: the report gives every layer's
//! weight error, activation ranges and (with `fallback`) its measured
//! effect on the model's outputs, and `--verify` measures the model's.
//!
//! ```text
//! y = Conv(x, W[O,I,k,k], b)    →  xq = QuantizeLinear(x, s_x, 0); x' = DequantizeLinear(xq, s_x, 0)
//!                                  W' = DequantizeLinear(Wq int8[O,I,k,k], s_W[O], 0[O], axis=0)
//!                                  y = Conv(x', W', b)          (bias stays float)
//! ```
//!
//! **TensorRT's rules, kept by default (`act=s8`):** activations symmetric
//! int8 (zero point 0, scale = amax/127), weights symmetric per channel,
//! scales and zero points initializers, bias float, opset ≥ 13 (a model
//! below is raised to 14 first, see `raise-opset`, and its activation
//! patterns fused, so that a written-out HardSwish becomes one operator
//! between int8 layers; the report says so).
//! `act=u8` gives ONNX Runtime's preferred form instead: asymmetric uint8
//! activations, with a pair also on each quantized layer's output (after a
//! following Relu, which a zero point of 0 then absorbs), so that ONNX
//! Runtime finds complete `DQ → op → Q` groups and runs them as QLinear
//! kernels rather than in float.
//!
//! **Where int8 does not pay:** a layer whose outputs each sum fewer than
//! `min-k` products (depthwise 3×3: 9) costs more in quantize, dequantize
//! and layout changes than int8 saves in ONNX Runtime, and loses the most
//! accuracy; it stays float (reported). Measured on PP-OCRv4
//! (benches/quant.py): every layer in int8 made the mobile classifier 0.72×
//! as fast as float, as slow as onnxruntime's own quantizer; from K ≥ 64 it
//! is 1.47× faster; on det the error falls from 0.25 to 0.05 (u8) and from
//! 0.46 to 0.05 (s8). `min-k=0` quantizes every layer. `fallback=K` measures each
//! layer's sensitivity (the model's output error with only that layer
//! quantized, on the calibration samples, in tract) and keeps the K most
//! sensitive in float.
//!
//! **For tract:** `format=qop` lowers the same layers to QLinearConv with
//! per-tensor weights and uint8 activations kept from layer to layer
//! (`qop.rs`): the one quantized form tract runs faster than float.
//!
//! BatchNormalization is folded first (`fuse-bn`), weights held in
//! `Constant` nodes are lifted (`lift-constants`); only the main graph is
//! quantized. Options: declared once in `Opts` below (`onnx-opt passes` and the
//! README list them).

use crate::calibrate::Calibration;
use crate::ir::patch::Src;
use crate::ir::{
    Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor, TensorData,
    TypeKind,
};
use crate::passes::{name_matches, select_layers, DataUse, PassInfo};
use crate::pipeline::{List, Options, Pass, PassContext, Pipeline};
use crate::quantize::{self, Grid, Method};
use anyhow::{bail, ensure, Context, Result};

mod analysis;
mod calibrate;
mod qop;
mod rewrite;
#[cfg(test)]
mod tests;

use rayon::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

pub const INFO: PassInfo = PassInfo {
    name: "quant",
    summary: "int8 quantization (QDQ for TensorRT / ONNX Runtime), calibrated on --inputs",
    exact: false,
    data: DataUse::Required,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    struct Opts {
        format: String = "format", "qdq",
            "qdq: QuantizeLinear/DequantizeLinear pairs (TensorRT, ONNX Runtime); qop: QLinearConv with u8 activations kept between layers and per-tensor weights (tract's int8 kernels)";
        act: String = "act", "s8",
            "activations: s8 (symmetric, TensorRT) or u8 (asymmetric, ONNX Runtime; also quantizes layer outputs)";
        method: String = "method", "minmax",
            "activation ranges: minmax, percentile or entropy (KL)";
        percentile: f64 = "percentile", "99.999",
            "for method=percentile: clip |x| at this percentile of the calibration values";
        bits: u32 = "bits", "8",
            "weight bits, 2..=8 (stored in int8); activations are 8-bit";
        per_channel: bool = "per-channel", "true",
            "one weight scale per output channel (false: one per tensor)";
        ops: List = "ops", "Conv|ConvTranspose|Gemm|MatMul",
            "operator types to quantize";
        add: bool = "add", "true",
            "also quantize both inputs of residual Adds fed by a quantized layer";
        exclude: List = "exclude", "",
            "layers to keep in float: node or weight names, `*` matches any run (a|b*|*c)";
        weight_only: bool = "weight-only", "false",
            "quantize weights only (no activation pairs, no calibration)";
        min_k: usize = "min-k", "64",
            "keep in float layers whose outputs each sum fewer products (depthwise 3×3: 9); 0: quantize every layer";
        max_weight_err: f64 = "max-weight-err", "0.05",
            "format=qop: keep in float a layer whose per-tensor int8 weights lose more than this (relative L2); format=qdq's per-channel scales rarely do";
        fallback: usize = "fallback", "0",
            "measure every layer's sensitivity and keep the K most sensitive in float";
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    S8,
    U8,
}

/// The opset a model below 13 is raised to: 13 for per-axis
/// DequantizeLinear, 14 for HardSwish (one operator between int8 layers
/// instead of four).
const RAISE_TO: i64 = 14;

struct Quant {
    after_raise: Pipeline,
    qop: bool,
    max_weight_err: f64,
    act: Act,
    method: Method,
    bits: u32,
    per_channel: bool,
    ops: Vec<String>,
    residual_add: bool,
    exclude: Vec<String>,
    weight_only: bool,
    min_k: usize,
    fallback: usize,
    prepare: Pipeline,
}

fn build(o: &Options) -> Result<Box<dyn Pass>> {
    let o = Opts::parse(o)?;
    let act = match o.act.as_str() {
        "s8" => Act::S8,
        "u8" => Act::U8,
        other => bail!("act={other} must be s8 or u8"),
    };
    let method = match o.method.as_str() {
        "minmax" => Method::MinMax,
        "percentile" => {
            let p = o.percentile;
            ensure!(
                p > 50.0 && p <= 100.0,
                "percentile={p} must be in (50, 100]"
            );
            Method::Percentile(p)
        }
        "entropy" => Method::Entropy,
        other => bail!("method={other} must be minmax, percentile or entropy"),
    };
    let bits = o.bits;
    ensure!((2..=8).contains(&bits), "bits={bits} must be in 2..=8");
    for op in o.ops.iter() {
        ensure!(
            ["Conv", "ConvTranspose", "Gemm", "MatMul"].contains(&op.as_str()),
            "ops may hold Conv, ConvTranspose, Gemm, MatMul (got {op})"
        );
    }
    let qop = match o.format.as_str() {
        "qdq" => false,
        "qop" => true,
        other => bail!("format={other} must be qdq or qop"),
    };
    let fallback = o.fallback;
    ensure!(
        !(qop && fallback > 0),
        "fallback is measured on the QDQ form; not with format=qop"
    );
    let max_weight_err = o.max_weight_err;
    ensure!(
        max_weight_err > 0.0,
        "max-weight-err={max_weight_err} must be > 0"
    );
    Ok(Box::new(Quant {
        after_raise: Pipeline::parse("fuse-activation,infer-shapes")?,
        qop,
        max_weight_err,
        act,
        method,
        bits,
        per_channel: o.per_channel,
        ops: o.ops.0,
        residual_add: o.add,
        exclude: o.exclude.0,
        weight_only: o.weight_only,
        min_k: o.min_k,
        fallback,
        prepare: Pipeline::parse(if qop {
            // Bias Adds folded into Gemms: the QLinear form carries the bias.
            "fuse,infer-shapes"
        } else {
            "lift-constants,fuse-bn,infer-shapes"
        })?,
    }))
}

/// A layer to quantize.
#[derive(Clone, Debug)]
struct Layer {
    node: NodeId,
    name: String,
    op: String,
    /// Float activation inputs: (slot, value).
    acts: Vec<(usize, Outlet)>,
    /// The constant weight: (slot, value, output-channel axis).
    weight: Option<(usize, Outlet, usize)>,
    /// Products summed per output element.
    k: usize,
}

/// Inputs (node, slot) that read a value.
type Readers = Vec<(NodeId, usize)>;

/// Each calibrated value's grid and range (lo, hi).
type Grids = BTreeMap<String, (Grid, f32, f32)>;

/// An activation that gets a Q→DQ pair.
#[derive(Clone, Debug)]
struct Pair {
    value: Outlet,
    /// The inputs that read the dequantized value instead.
    readers: Readers,
    /// The value is a graph output, which the dequantized value takes over.
    graph_output: bool,
}

/// The activations to quantize, by value name (an ordered map: the same
/// model gives the same patch).
type ActPlan = BTreeMap<String, Pair>;

impl Pass for Quant {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        self.prepare.run_nested(model, cx)?;
        let opset = model.opset("").unwrap_or(1);
        let raised: Option<serde_json::Value> = if opset < 13 {
            let r = crate::passes::raise_opset::raise(model, RAISE_TO)?;
            self.after_raise.run_nested(model, cx)?;
            Some(r)
        } else {
            None
        };
        let (mut layers, mut report) = self.candidates(&model.graph);
        if self.qop {
            return self.run_qop(model, cx, layers, report, opset, raised);
        }
        let data = if self.weight_only {
            None
        } else {
            Some(cx.data.as_ref().context(
                "quant needs calibration samples (the CLI provides --inputs or random ones)",
            )?)
        };
        // Calibrate every activation any plan may quantize.
        let full = self.plan(&model.graph, &layers);
        let grids = match data {
            Some(d) => self.calibrate(
                model,
                d,
                &full.keys().cloned().collect::<Vec<_>>(),
                self.act,
            )?,
            None => BTreeMap::new(),
        };
        let mut sensitivity = BTreeMap::new();
        if self.fallback > 0 && !layers.is_empty() {
            let d = data.context("fallback needs calibration data (not with weight-only)")?;
            sensitivity = self.sensitivity(model, d, &layers, &grids)?;
            let mut ranked: Vec<(&String, &f64)> = sensitivity.iter().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            let keep: Vec<String> = ranked
                .iter()
                .take(self.fallback)
                .map(|(n, _)| (*n).clone())
                .collect();
            layers.retain(|l| {
                if keep.contains(&l.name) {
                    report.push(json!({
                        "layer": l.name, "op": l.op, "kept": format!("among the {} most sensitive (fallback)", self.fallback),
                        "sensitivity": sensitivity[&l.name],
                    }));
                    false
                } else {
                    true
                }
            });
        }
        let acts = self.plan(&model.graph, &layers);
        let bytes_before = float_weight_bytes(&model.graph, &layers);
        let mut patch = Patch::new("quant");
        let mut entries = vec![];
        let weights = self.quantize_weights(&model.graph, &layers, &mut patch)?;
        for layer in &layers {
            let mut entry = json!({ "layer": layer.name, "op": layer.op, "K": layer.k });
            if let Some(w) = weights.get(&layer.node) {
                entry["weight"] = w.clone();
            }
            let inputs: Vec<_> = layer
                .acts
                .iter()
                .filter_map(|(_, v)| {
                    let name = model.graph.outlet_name(*v);
                    grids.get(name).filter(|_| acts.contains_key(name)).map(|(g, lo, hi)| {
                        json!({ "value": name, "range": [lo, hi], "scale": g.scale, "zero_point": g.zero_point })
                    })
                })
                .collect();
            if !inputs.is_empty() {
                entry["inputs"] = json!(inputs);
            }
            if let Some(s) = sensitivity.get(&layer.name) {
                entry["sensitivity"] = json!(s);
            }
            entries.push(entry);
        }
        for (name, pair) in &acts {
            let (grid, _, _) = grids
                .get(name)
                .with_context(|| format!("value {name} was not calibrated"))?;
            self.add_pair(&mut patch, name, pair, grid);
        }
        patch
            .apply(&mut model.graph)
            .context("applying quantization")?;
        let bytes_after = int8_bytes(&model.graph);
        entries.extend(report);
        let quantized = layers.len();
        Ok(json!({
            "format": "qdq",
            "opset_raised": raised.map(|r| json!({ "from": opset, "to": RAISE_TO, "rewritten": r })),
            "activations": match self.act { Act::S8 => "int8 symmetric", Act::U8 => "uint8 asymmetric" },
            "method": if self.weight_only { "none (weight-only)".to_string() } else { self.method.name() },
            "calibration": data.map_or("none".to_string(), |d| format!("{} ({} samples)", d.source, d.samples.len())),
            "layers_quantized": quantized,
            "left_in_subgraphs": in_subgraphs(&model.graph, &self.ops),
            "activation_pairs": acts.len(),
            "weight_bytes": { "before": bytes_before, "after": bytes_after },
            "layers": entries,
        }))
    }
}

/// Operators of the chosen types inside If/Loop/Scan bodies, which are not
/// quantized (main graph only).
fn in_subgraphs(g: &Graph, ops: &[String]) -> usize {
    let mut all = 0;
    g.visit_graphs(&mut |sub| {
        all += sub
            .node_ids()
            .filter(|&id| sub.op(id).is_some_and(|op| ops.contains(&op.op_type)))
            .count();
    });
    let main = g
        .node_ids()
        .filter(|&id| g.op(id).is_some_and(|op| ops.contains(&op.op_type)))
        .count();
    all - main
}

/// Bytes of the float weights `layers` read.
fn float_weight_bytes(g: &Graph, layers: &[Layer]) -> usize {
    layers
        .iter()
        .filter_map(|l| l.weight.and_then(|(_, w, _)| g.const_tensor(w)))
        .map(Tensor::byte_len)
        .sum()
}

/// Bytes of the int8 constants in the graph.
fn int8_bytes(g: &Graph) -> usize {
    g.node_ids()
        .filter_map(|id| g.const_tensor(Outlet::new(id, 0)))
        .filter(|t| t.dtype == DataType::INT8)
        .map(Tensor::byte_len)
        .sum()
}

impl Quant {
    /// `format=qop`: lower what can be lowered to QLinearConv (see `qop.rs`).
    fn run_qop(
        &self,
        model: &mut Model,
        cx: &PassContext,
        layers: Vec<Layer>,
        mut report: Vec<serde_json::Value>,
        opset: i64,
        raised: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let data = cx.data.as_ref().context(
            "quant needs calibration samples (the CLI provides --inputs or random ones)",
        )?;
        let g = &model.graph;
        let mut lowered = vec![];
        for layer in &layers {
            match qop::lowering(g, layer, self.bits, self.max_weight_err) {
                Ok(l) => lowered.push(l),
                Err(why) => {
                    report.push(json!({ "layer": layer.name, "op": layer.op, "kept": why }))
                }
            }
        }
        let grids = self.calibrate(model, data, &qop::values(g, &lowered), Act::U8)?;
        let (patch, mut entries, enters, leaves) = qop::lower(&model.graph, &lowered, &grids)?;
        patch
            .apply(&mut model.graph)
            .context("lowering to QLinear operators")?;
        let bytes_after = int8_bytes(&model.graph);
        entries.extend(report);
        Ok(json!({
            "format": "qop",
            "opset_raised": raised.map(|r| json!({ "from": opset, "to": RAISE_TO, "rewritten": r })),
            "activations": "uint8 asymmetric, kept between lowered layers",
            "method": self.method.name(),
            "calibration": format!("{} ({} samples)", data.source, data.samples.len()),
            "layers_quantized": lowered.len(),
            "left_in_subgraphs": in_subgraphs(&model.graph, &self.ops),
            "enter_int8": enters,
            "leave_int8": leaves,
            "weight_bytes": { "after": bytes_after },
            "layers": entries,
        }))
    }
}
