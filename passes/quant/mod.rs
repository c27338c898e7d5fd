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
//! quantized. Options: see `onnx-opt passes`.

use crate::calibrate::Calibration;
use crate::exec;
use crate::ir::patch::Src;
use crate::ir::{
    Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor, TensorData,
    TypeKind,
};
use crate::passes::{name_matches, select_layers, DataUse, PassInfo};
use crate::pipeline::{OptionInfo, Options, Pass, PassContext, Pipeline};
use crate::quantize::{self, Grid, Method};
use anyhow::{bail, ensure, Context, Result};

mod qop;
use rayon::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

pub const INFO: PassInfo = PassInfo {
    name: "quant",
    summary: "int8 quantization (QDQ for TensorRT / ONNX Runtime), calibrated on --inputs",
    exact: false,
    data: DataUse::Required,
    options: &[
        OptionInfo {
            name: "format",
            default: "qdq",
            help: "qdq: QuantizeLinear/DequantizeLinear pairs (TensorRT, ONNX Runtime); qop: QLinearConv with u8 activations kept between layers and per-tensor weights (tract's int8 kernels)",
        },
        OptionInfo {
            name: "act",
            default: "s8",
            help: "activations: s8 (symmetric, TensorRT) or u8 (asymmetric, ONNX Runtime; also quantizes layer outputs)",
        },
        OptionInfo {
            name: "method",
            default: "minmax",
            help: "activation ranges: minmax, percentile or entropy (KL)",
        },
        OptionInfo {
            name: "percentile",
            default: "99.999",
            help: "for method=percentile: clip |x| at this percentile of the calibration values",
        },
        OptionInfo {
            name: "bits",
            default: "8",
            help: "weight bits, 2..=8 (stored in int8); activations are 8-bit",
        },
        OptionInfo {
            name: "per-channel",
            default: "true",
            help: "one weight scale per output channel (false: one per tensor)",
        },
        OptionInfo {
            name: "ops",
            default: "Conv|ConvTranspose|Gemm|MatMul",
            help: "operator types to quantize",
        },
        OptionInfo {
            name: "add",
            default: "true",
            help: "also quantize both inputs of residual Adds fed by a quantized layer",
        },
        OptionInfo {
            name: "exclude",
            default: "",
            help: "layers to keep in float: node or weight names, `*` matches any run (a|b*|*c)",
        },
        OptionInfo {
            name: "weight-only",
            default: "false",
            help: "quantize weights only (no activation pairs, no calibration)",
        },
        OptionInfo {
            name: "min-k",
            default: "64",
            help: "keep in float layers whose outputs each sum fewer products (depthwise 3×3: 9); 0: quantize every layer",
        },
        OptionInfo {
            name: "max-weight-err",
            default: "0.05",
            help: "format=qop: keep in float a layer whose per-tensor int8 weights lose more than this (relative L2); format=qdq's per-channel scales rarely do",
        },
        OptionInfo {
            name: "fallback",
            default: "0",
            help: "measure every layer's sensitivity and keep the K most sensitive in float",
        },
    ],
    build,
};

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
    let act = match o.get::<String>("act")?.as_str() {
        "s8" => Act::S8,
        "u8" => Act::U8,
        other => bail!("pass 'quant': act={other} must be s8 or u8"),
    };
    let method = match o.get::<String>("method")?.as_str() {
        "minmax" => Method::MinMax,
        "percentile" => {
            let p: f64 = o.get("percentile")?;
            ensure!(
                p > 50.0 && p <= 100.0,
                "pass 'quant': percentile={p} must be in (50, 100]"
            );
            Method::Percentile(p)
        }
        "entropy" => Method::Entropy,
        other => bail!("pass 'quant': method={other} must be minmax, percentile or entropy"),
    };
    let bits: u32 = o.get("bits")?;
    ensure!(
        (2..=8).contains(&bits),
        "pass 'quant': bits={bits} must be in 2..=8"
    );
    let ops = o.list("ops")?;
    for op in &ops {
        ensure!(
            ["Conv", "ConvTranspose", "Gemm", "MatMul"].contains(&op.as_str()),
            "pass 'quant': ops may hold Conv, ConvTranspose, Gemm, MatMul (got {op})"
        );
    }
    let qop = match o.get::<String>("format")?.as_str() {
        "qdq" => false,
        "qop" => true,
        other => bail!("pass 'quant': format={other} must be qdq or qop"),
    };
    let fallback: usize = o.get("fallback")?;
    ensure!(
        !(qop && fallback > 0),
        "pass 'quant': fallback is measured on the QDQ form; not with format=qop"
    );
    let min_k: usize = o.get("min-k")?;
    let max_weight_err: f64 = o.get("max-weight-err")?;
    ensure!(
        max_weight_err > 0.0,
        "pass 'quant': max-weight-err={max_weight_err} must be > 0"
    );
    Ok(Box::new(Quant {
        after_raise: Pipeline::parse("fuse-activation,infer-shapes")?,
        qop,
        max_weight_err,
        act,
        method,
        bits,
        per_channel: o.get("per-channel")?,
        ops,
        residual_add: o.get("add")?,
        exclude: o.list("exclude")?,
        weight_only: o.get("weight-only")?,
        min_k,
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

/// Bytes of captured values one tract run may return (all samples). A tract
/// load per fixed count of values made calibration quadratic on long models
/// (a 100k-node chain has 33k activations to capture); batches bounded by
/// bytes take one run for many small values and stay bounded for large ones.
const CAPTURE_BUDGET: usize = 256 << 20;
/// What a value of unknown shape counts for: 24 of them fill a batch.
const UNKNOWN_SIZE: usize = CAPTURE_BUDGET / 24;

/// `names` in consecutive batches of at most `CAPTURE_BUDGET` bytes of f32
/// values over `samples` samples (at least one value each).
fn capture_batches<'a>(g: &Graph, names: &'a [String], samples: usize) -> Vec<&'a [String]> {
    let outlets: HashMap<&str, Outlet> = g
        .node_ids()
        .flat_map(|id| {
            g.node(id)
                .outputs
                .iter()
                .enumerate()
                .map(move |(slot, v)| (v.name.as_str(), Outlet::new(id, slot)))
        })
        .collect();
    let size = |name: &String| -> usize {
        let dims = outlets.get(name.as_str()).and_then(|&o| g.known_dims(o));
        let numel = dims.and_then(|dims| {
            dims.iter()
                .try_fold(1usize, |n, d| n.checked_mul(usize::try_from((*d)?).ok()?))
        });
        numel.map_or(UNKNOWN_SIZE, |n| n.saturating_mul(4 * samples.max(1)))
    };
    let mut batches = vec![];
    let (mut start, mut bytes) = (0, 0usize);
    for (i, name) in names.iter().enumerate() {
        let b = size(name);
        if i > start && bytes.saturating_add(b) > CAPTURE_BUDGET {
            batches.push(&names[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(b);
    }
    if start < names.len() {
        batches.push(&names[start..]);
    }
    batches
}

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

    /// The layers to quantize in graph order, and a report entry for each
    /// operator of a chosen type left in float (and why).
    fn candidates(&self, g: &Graph) -> (Vec<Layer>, Vec<serde_json::Value>) {
        select_layers(g, &self.ops, |id, name| self.layer(g, id, name))
    }

    fn layer(&self, g: &Graph, id: NodeId, name: &str) -> std::result::Result<Layer, String> {
        let op = g.op(id).expect("an operator");
        let is_float = |o: Outlet| {
            g.known_type(o).is_none_or(|t| match t.kind {
                TypeKind::Tensor { elem, .. } => elem.is_none_or(|e| e == DataType::FLOAT),
                _ => false,
            })
        };
        let float_const = |slot: usize| {
            g.input(id, slot)
                .and_then(|o| g.const_tensor(o).map(|t| (o, t)))
                .filter(|(_, t)| t.dtype == DataType::FLOAT)
        };
        let (x, w) = match (g.input(id, 0), g.input(id, 1)) {
            (Some(x), Some(w)) => (x, w),
            _ => return Err("missing input".into()),
        };
        if g.node(id).outputs.len() != 1 {
            return Err("more than one output".into());
        }
        let wname = g.outlet_name(w);
        if self
            .exclude
            .iter()
            .any(|p| name_matches(p, name) || name_matches(p, wname))
        {
            return Err("excluded (exclude option)".into());
        }
        if g.const_tensor(x).is_some() {
            return Err("first input is a constant".into());
        }
        if !is_float(x) {
            return Err("input is not f32".into());
        }
        let weight = float_const(1);
        let dims: Vec<usize> = weight
            .map(|(_, t)| t.dims.iter().map(|&d| d.max(0) as usize).collect())
            .unwrap_or_default();
        let (axis, k) = match (op.op_type.as_str(), weight) {
            ("Conv", Some(_)) if dims.len() >= 3 => (0, dims[1..].iter().product()),
            ("ConvTranspose", Some(_)) if dims.len() >= 3 => {
                let groups = op.attr_int("group", 1).max(1) as usize;
                (1, dims[0] / groups * dims[2..].iter().product::<usize>())
            }
            ("Gemm", Some(_)) if dims.len() == 2 => {
                if op.attr_int("transA", 0) != 0 && g.known_rank(x).is_none() {
                    return Err("transA on an input of unknown rank".into());
                }
                if op.attr_int("transB", 0) != 0 {
                    (0, dims[1])
                } else {
                    (1, dims[0])
                }
            }
            ("MatMul", Some(_)) if dims.len() >= 2 => (dims.len() - 1, dims[dims.len() - 2]),
            ("MatMul", None) if g.const_tensor(w).is_none() && is_float(w) => {
                // Two activations (attention): both quantized, no weight.
                let k = g
                    .known_dims(w)
                    .and_then(|d| d.iter().rev().nth(1).copied().flatten())
                    .map_or(0, |d| d.max(0) as usize);
                return self.checked(Layer {
                    node: id,
                    name: name.into(),
                    op: op.op_type.clone(),
                    acts: vec![(0, x), (1, w)],
                    weight: None,
                    k,
                });
            }
            (_, Some(_)) => return Err(format!("weight of rank {}", dims.len())),
            (_, None) => return Err("weight is not an f32 constant".into()),
        };
        self.checked(Layer {
            node: id,
            name: name.into(),
            op: op.op_type.clone(),
            acts: vec![(0, x)],
            weight: weight.map(|(o, _)| (1, o, axis)),
            k,
        })
    }

    fn checked(&self, layer: Layer) -> std::result::Result<Layer, String> {
        if layer.k > 0 && layer.k < self.min_k {
            return Err(format!(
                "each output sums {} products, under min-k={}: int8 does not pay",
                layer.k, self.min_k
            ));
        }
        Ok(layer)
    }

    /// The activations to quantize for `layers`: their inputs and both
    /// inputs of residual Adds they feed; with `act=u8` also the outputs of
    /// those layers and Adds (after a Relu that is their only reader), graph
    /// outputs included, so that onnxruntime finds whole `DQ → op → Q`
    /// groups to run as QLinear kernels.
    fn plan(&self, g: &Graph, layers: &[Layer]) -> ActPlan {
        let mut plan = ActPlan::new();
        if self.weight_only {
            return plan;
        }
        let add = |plan: &mut ActPlan, v: Outlet, reader: Option<(NodeId, usize)>| {
            let entry = plan
                .entry(g.outlet_name(v).to_string())
                .or_insert_with(|| Pair {
                    value: v,
                    readers: vec![],
                    graph_output: false,
                });
            match reader {
                Some(r) if !entry.readers.contains(&r) => {
                    entry.readers.push(r);
                    entry.readers.sort();
                }
                Some(_) => {}
                None => entry.graph_output = true,
            }
        };
        for layer in layers {
            for &(slot, v) in &layer.acts {
                add(&mut plan, v, Some((layer.node, slot)));
            }
        }
        // An operator's output, or the Relu right after it when that is its
        // only reader (a zero point at the bottom of the range is the Relu).
        let output_of = |id: NodeId| {
            let y = Outlet::new(id, 0);
            match g.consumers(y).as_slice() {
                [(r, 0)] if !g.is_graph_output(y) && g.op(*r).is_some_and(|op| op.is("Relu")) => {
                    Outlet::new(*r, 0)
                }
                _ => y,
            }
        };
        let mut int8_ops: Vec<NodeId> = layers.iter().map(|l| l.node).collect();
        if self.residual_add {
            let outputs: Vec<Outlet> = layers.iter().map(|l| output_of(l.node)).collect();
            for id in g.node_ids() {
                let Some(op) = g.op(id) else { continue };
                if !op.is("Add") {
                    continue;
                }
                let (Some(a), Some(b)) = (g.input(id, 0), g.input(id, 1)) else {
                    continue;
                };
                let activation = |v: Outlet| g.const_tensor(v).is_none();
                if activation(a)
                    && activation(b)
                    && (outputs.contains(&a) || outputs.contains(&b))
                    && g.known_dims(a).is_some()
                    && g.known_dims(a) == g.known_dims(b)
                {
                    add(&mut plan, a, Some((id, 0)));
                    add(&mut plan, b, Some((id, 1)));
                    int8_ops.push(id);
                }
            }
        }
        if self.act == Act::U8 {
            // Pooling a quantized value: onnxruntime pools in int8 when the
            // pool's output is quantized too.
            for id in g.op_order().unwrap_or_default() {
                let pool = g.op(id).is_some_and(|op| {
                    ["GlobalAveragePool", "AveragePool", "MaxPool"].contains(&op.op_type.as_str())
                        && g.node(id).outputs.len() == 1
                });
                let quantized_input = g.input(id, 0).filter(|x| {
                    let entry = plan.get(g.outlet_name(*x));
                    entry.is_some() || int8_ops.iter().any(|&op| output_of(op) == *x)
                });
                if let (true, Some(x)) = (pool, quantized_input) {
                    add(&mut plan, x, Some((id, 0)));
                    int8_ops.push(id);
                }
            }
            for id in int8_ops {
                let y = output_of(id);
                for reader in g.consumers(y) {
                    add(&mut plan, y, Some(reader));
                }
                if g.is_graph_output(y) {
                    add(&mut plan, y, None);
                }
            }
        }
        plan
    }

    /// Each planned activation's grid and calibrated range, from its values
    /// on every sample (captured in tract, a bounded batch of values at a
    /// time).
    fn calibrate(
        &self,
        model: &Model,
        data: &Calibration,
        names: &[String],
        act: Act,
    ) -> Result<Grids> {
        let mut grids = BTreeMap::new();
        for batch in capture_batches(&model.graph, names, data.samples.len()) {
            let captured = data.capture(model, batch)?;
            let ranges: Vec<(f32, f32)> = captured
                .par_iter()
                .map(|samples| -> Result<(f32, f32)> {
                    let values: Vec<Vec<f32>> = samples
                        .iter()
                        .map(|t| t.to_f32_vec())
                        .collect::<Result<_>>()?;
                    let slices: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
                    Ok(quantize::activation_range(&slices, self.method))
                })
                .collect::<Result<_>>()?;
            for (name, (lo, hi)) in batch.iter().zip(ranges) {
                let grid = match act {
                    Act::S8 => Grid::symmetric(lo.abs().max(hi.abs()), 8),
                    Act::U8 => Grid::asymmetric_u8(lo, hi),
                };
                grids.insert(name.clone(), (grid, lo, hi));
            }
        }
        Ok(grids)
    }

    /// Each layer's sensitivity: the relative error (‖y − y_float‖/‖y_float‖
    /// over every output and sample) of the model with only that layer
    /// quantized.
    fn sensitivity(
        &self,
        model: &Model,
        data: &Calibration,
        layers: &[Layer],
        grids: &Grids,
    ) -> Result<BTreeMap<String, f64>> {
        let reference = exec::load(model, &data.shapes, &[])?.run_many(&data.samples)?;
        let flat = |outs: &[crate::runtime::Outputs]| -> Result<Vec<f32>> {
            let mut v = vec![];
            for o in outs {
                for (_, t) in o.iter() {
                    v.extend(t.to_f32_vec()?);
                }
            }
            Ok(v)
        };
        let want = flat(&reference)?;
        layers
            .par_iter()
            .map(|layer| -> Result<(String, f64)> {
                let mut m = model.clone();
                let mut patch = Patch::new(format!("quant: {}", layer.name));
                self.quantize_weights(&m.graph, std::slice::from_ref(layer), &mut patch)?;
                for (name, pair) in self.plan(&m.graph, std::slice::from_ref(layer)) {
                    let (grid, _, _) = grids
                        .get(&name)
                        .with_context(|| format!("value {name} was not calibrated"))?;
                    self.add_pair(&mut patch, &name, &pair, grid);
                }
                patch.apply(&mut m.graph)?;
                let got = exec::load(&m, &data.shapes, &[])?.run_many(&data.samples)?;
                Ok((layer.name.clone(), quantize::rel_l2(&flat(&got)?, &want)))
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().collect())
    }

    /// Replaces each layer's weight by int8 values read through a
    /// DequantizeLinear; returns a report entry per layer.
    fn quantize_weights(
        &self,
        g: &Graph,
        layers: &[Layer],
        patch: &mut Patch,
    ) -> Result<BTreeMap<NodeId, serde_json::Value>> {
        // A weight shared by several layers is quantized once (per tensor if
        // their axes differ).
        let mut shared: BTreeMap<Outlet, (Option<usize>, Readers)> = BTreeMap::new();
        for layer in layers {
            if let Some((slot, w, axis)) = layer.weight {
                let axis = self.per_channel.then_some(axis);
                let e = shared.entry(w).or_insert((axis, vec![]));
                if e.0 != axis {
                    e.0 = None;
                }
                e.1.push((layer.node, slot));
            }
        }
        let mut out = BTreeMap::new();
        for (w, (axis, readers)) in shared {
            let t = g.const_tensor(w).expect("a constant weight");
            let name = g.outlet_name(w).to_string();
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            let q = quantize::quantize_weight(&t.to_f32()?, &dims, axis, self.bits)
                .with_context(|| format!("weight {name}"))?;
            let channels = q.scales.len() as i64;
            let shape = if axis.is_some() {
                vec![channels]
            } else {
                vec![]
            };
            let wq = patch.add_const(
                &format!("{name}_quantized"),
                Tensor::new(
                    DataType::INT8,
                    t.dims.clone(),
                    TensorData::Raw(q.q.iter().map(|&v| v as u8).collect::<Vec<u8>>().into()),
                ),
            );
            let scale = patch.add_const(
                &format!("{name}_scale"),
                Tensor::from_f32(shape.clone(), &q.scales),
            );
            let zero = patch.add_const(
                &format!("{name}_zero_point"),
                Tensor::new(
                    DataType::INT8,
                    shape,
                    TensorData::Raw(vec![0u8; q.scales.len()].into()),
                ),
            );
            let mut dq = Operator::new("DequantizeLinear", 3, vec![]);
            if let Some(a) = axis {
                dq.set_attr(Attribute::int("axis", a as i64));
            }
            let dq = patch.add_op(
                Some(format!("{name}_DequantizeLinear")),
                dq,
                vec![Some(wq), Some(scale), Some(zero)],
                &[&format!("{name}_dequantized")],
            );
            for &(node, slot) in &readers {
                patch.rewire(node, slot, Some(Patch::out(dq, 0)));
            }
            if g.consumers(w).len() == readers.len() && !g.is_graph_output(w) {
                patch.remove(w.node);
            }
            let (lo, hi) = q
                .scales
                .iter()
                .fold((f32::INFINITY, 0f32), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let entry = json!({
                "name": name, "axis": axis, "channels": channels,
                "scale_range": [lo, hi], "rel_err": q.rel_err,
            });
            for (node, _) in readers {
                out.insert(node, entry.clone());
            }
        }
        Ok(out)
    }

    /// `x → QuantizeLinear → DequantizeLinear → readers`.
    fn add_pair(&self, patch: &mut Patch, name: &str, pair: &Pair, grid: &Grid) {
        let x = pair.value;
        let scale = patch.add_const(
            &format!("{name}_scale"),
            Tensor::from_f32(vec![], &[grid.scale]),
        );
        let (dtype, zp) = match self.act {
            Act::S8 => (DataType::INT8, grid.zero_point as i8 as u8),
            Act::U8 => (DataType::UINT8, grid.zero_point as u8),
        };
        let zero = patch.add_const(
            &format!("{name}_zero_point"),
            Tensor::new(dtype, vec![], TensorData::Raw(vec![zp].into())),
        );
        let q = patch.add_op(
            Some(format!("{name}_QuantizeLinear")),
            Operator::new("QuantizeLinear", 3, vec![]),
            vec![Some(Src::from(x)), Some(scale), Some(zero)],
            &[&format!("{name}_quantized")],
        );
        let dq = patch.add_op(
            Some(format!("{name}_DequantizeLinear")),
            Operator::new("DequantizeLinear", 3, vec![]),
            vec![Some(Patch::out(q, 0)), Some(scale), Some(zero)],
            &[&format!("{name}_dequantized")],
        );
        for &(node, slot) in &pair.readers {
            patch.rewire(node, slot, Some(Patch::out(dq, 0)));
        }
        if pair.graph_output {
            patch.hand_over_output(x, Patch::out(dq, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::{check_with_data, op_types, rewrite, rewrite_with_data};
    use crate::pipeline::{PassContext, Pipeline};

    /// Seeded values in [-1, 1), with channel `c` of `[channels, rest]`
    /// scaled by 1 + c (uneven channels: per-channel scales matter).
    fn weights(seed: u64, channels: usize, rest: usize) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..channels * rest)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                u * 0.2 * (1 + i / rest) as f32
            })
            .collect()
    }

    fn conv(
        b: &mut ModelBuilder,
        x: Outlet,
        name: &str,
        o: i64,
        i: i64,
        k: i64,
        group: i64,
    ) -> Outlet {
        let w = b.init(
            &format!("{name}.weight"),
            Tensor::from_f32(
                vec![o, i / group, k, k],
                &weights(o as u64, o as usize, (i / group * k * k) as usize),
            ),
        );
        let bias = b.init(
            &format!("{name}.bias"),
            Tensor::from_f32(vec![o], &weights(3, 1, o as usize)),
        );
        let pad = k / 2;
        let attrs = vec![
            Attribute::ints("kernel_shape", &[k, k]),
            Attribute::ints("pads", &[pad, pad, pad, pad]),
            Attribute::int("group", group),
        ];
        b.op("Conv", &[x, w, bias], attrs, name)
    }

    /// Conv → Relu → depthwise Conv → Relu → Conv, plus a residual Add.
    fn cnn() -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 8, 10, 10]);
        let c1 = conv(&mut b, x, "conv1", 16, 8, 3, 1);
        let r1 = b.op("Relu", &[c1], vec![], "relu1");
        let dw = conv(&mut b, r1, "dw", 16, 16, 3, 16);
        let r2 = b.op("Relu", &[dw], vec![], "relu2");
        let c2 = conv(&mut b, r2, "conv2", 16, 16, 1, 1);
        let y = b.op("Add", &[c2, r1], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    /// MatMul+Add+Relu, MatMul+Add (an MLP as exported, not fused).
    fn mlp() -> Model {
        let mut b = ModelBuilder::new(13);
        let mut h = b.input("x", DataType::FLOAT, &[4, 32]);
        for (i, (k, n)) in [(32, 48), (48, 10)].into_iter().enumerate() {
            let w = b.init(
                &format!("fc{i}.weight"),
                Tensor::from_f32(vec![k, n], &weights(i as u64, k as usize, n as usize)),
            );
            let bias = b.init(
                &format!("fc{i}.bias"),
                Tensor::from_f32(vec![n], &weights(9, 1, n as usize)),
            );
            h = b.op("MatMul", &[h, w], vec![], &format!("fc{i}.matmul"));
            h = b.op("Add", &[h, bias], vec![], &format!("fc{i}.add"));
            if i == 0 {
                h = b.op("Relu", &[h], vec![], "fc0.relu");
            }
        }
        b.output(h, DataType::FLOAT);
        b.build().unwrap()
    }

    fn gemm(trans_b: bool) -> Model {
        let (k, n) = (24, 12);
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, k]);
        let dims = if trans_b { vec![n, k] } else { vec![k, n] };
        let w = b.init(
            "w",
            Tensor::from_f32(dims, &weights(5, 1, (k * n) as usize)),
        );
        let c = b.init("c", Tensor::from_f32(vec![n], &weights(6, 1, n as usize)));
        let y = b.op(
            "Gemm",
            &[x, w, c],
            vec![Attribute::int("transB", trans_b as i64)],
            "y",
        );
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    fn conv_transpose() -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 8, 5, 5]);
        let w = b.init("w", Tensor::from_f32(vec![8, 6, 2, 2], &weights(8, 8, 24)));
        let y = b.op(
            "ConvTranspose",
            &[x, w],
            vec![
                Attribute::ints("kernel_shape", &[2, 2]),
                Attribute::ints("strides", &[2, 2]),
            ],
            "y",
        );
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    fn details(model: &Model, passes: &str) -> serde_json::Value {
        let mut m = model.clone();
        let data =
            crate::calibrate::Calibration::load(model, &Default::default(), None, 7, 4).unwrap();
        let reports = Pipeline::parse(passes)
            .unwrap()
            .run(&mut m, &PassContext { data: Some(data) }, &mut |_| {})
            .unwrap();
        reports.last().unwrap().details.clone()
    }

    /// The weight DequantizeLinear feeding input 1 of the first `op_type`:
    /// (axis, number of scales, int8 values).
    fn weight_of(m: &Model, op_type: &str) -> (Option<i64>, usize, Vec<i64>) {
        let g = &m.graph;
        let id = g
            .op_order()
            .unwrap()
            .into_iter()
            .find(|&id| g.op(id).unwrap().is(op_type))
            .unwrap();
        let dq = g.input(id, 1).unwrap().node;
        let op = g.op(dq).expect("weight read through an operator");
        assert!(
            op.is("DequantizeLinear"),
            "{op_type} weight comes from {}",
            op.op_type
        );
        let q = g.const_tensor(g.input(dq, 0).unwrap()).unwrap();
        assert_eq!(q.dtype, DataType::INT8);
        let scales = g.const_tensor(g.input(dq, 1).unwrap()).unwrap().numel();
        (
            op.attr("axis").map(|_| op.attr_int("axis", 1)),
            scales,
            q.to_i64().unwrap(),
        )
    }

    #[test]
    fn qdq_rewrites_are_pinned_and_close_to_the_float_model() {
        for (name, model, passes, tolerance) in [
            ("quant__cnn-s8", cnn(), "quant{min-k=0}", 0.05),
            ("quant__cnn-u8", cnn(), "quant{act=u8,min-k=16}", 0.05),
            (
                "quant__cnn-u8-depthwise",
                cnn(),
                "quant{act=u8,min-k=0}",
                0.05,
            ),
            ("quant__mlp-s8", mlp(), "quant{min-k=0}", 0.05),
            ("quant__gemm-transb", gemm(true), "quant{min-k=0}", 0.05),
            (
                "quant__conv-transpose",
                conv_transpose(),
                "quant{min-k=0}",
                0.05,
            ),
            ("quant__mlp-qop", mlp(), "quant{format=qop,min-k=0}", 0.08),
            ("quant__cnn-qop", cnn(), "quant{format=qop,min-k=0}", 0.08),
        ] {
            let (_, err) = check_with_data(name, &model, passes, 4);
            assert!(err < tolerance, "{name}: max_rel_err {err}");
        }
    }

    #[test]
    fn weights_are_int8_per_output_channel_on_the_consumers_axis() {
        for (model, op, axis, channels) in [
            (cnn(), "Conv", 0, 16),
            (conv_transpose(), "ConvTranspose", 1, 6),
            (gemm(true), "Gemm", 0, 12),
            (gemm(false), "Gemm", 1, 12),
            (mlp(), "MatMul", 1, 48),
        ] {
            let out = rewrite_with_data(&model, "quant{min-k=0}", 2);
            let (got_axis, scales, q) = weight_of(&out, op);
            assert_eq!((got_axis, scales), (Some(axis), channels), "{op}");
            assert!(
                q.iter().all(|&v| (-127..=127).contains(&v)),
                "{op}: TensorRT's range"
            );
            assert!(
                q.iter().any(|&v| v.abs() == 127),
                "{op}: each channel's largest weight maps to ±127"
            );
        }
        let out = rewrite_with_data(&gemm(false), "quant{per-channel=false,min-k=0}", 2);
        assert_eq!(weight_of(&out, "Gemm").0..=Some(0), None..=Some(0));
        assert_eq!(weight_of(&out, "Gemm").1, 1);
    }

    #[test]
    fn s8_is_symmetric_and_u8_quantizes_outputs_for_onnxruntime() {
        let zero_points = |m: &Model, op: &str| -> Vec<(DataType, i64)> {
            let g = &m.graph;
            g.op_order()
                .unwrap()
                .into_iter()
                .filter(|&id| g.op(id).unwrap().is(op))
                .map(|id| {
                    let z = g.const_tensor(g.input(id, 2).unwrap()).unwrap();
                    (z.dtype, z.to_i64().unwrap()[0])
                })
                .collect()
        };
        let s8 = rewrite_with_data(&cnn(), "quant{min-k=0}", 2);
        let zs = zero_points(&s8, "QuantizeLinear");
        assert!(!zs.is_empty());
        assert!(zs.iter().all(|&z| z == (DataType::INT8, 0)), "{zs:?}");
        // u8: the Relu outputs (which layers read) have zero point 0, and
        // the layers' outputs and the residual Add's output are quantized too.
        let u8 = rewrite_with_data(&cnn(), "quant{act=u8,min-k=16}", 2);
        let zs = zero_points(&u8, "QuantizeLinear");
        assert!(zs.iter().all(|&(t, _)| t == DataType::UINT8));
        assert!(zs.iter().filter(|&&(_, z)| z == 0).count() >= 2, "{zs:?}");
        let pairs = |m: &Model| {
            op_types(m)
                .iter()
                .filter(|o| *o == "QuantizeLinear")
                .count()
        };
        assert!(pairs(&u8) > pairs(&s8), "u8 quantizes outputs too");
        let g = &u8.graph;
        let y = g.outputs[0].outlet;
        assert!(
            g.op(y.node).unwrap().is("DequantizeLinear"),
            "the graph output is quantized"
        );
        assert_eq!(g.outlet_name(y), "y", "and keeps its name");
    }

    #[test]
    fn layers_where_int8_does_not_pay_stay_float_and_are_reported() {
        let d = details(&cnn(), "quant{min-k=16}");
        let layers = d["layers"].as_array().unwrap();
        let dw = layers.iter().find(|l| l["layer"] == "dw").unwrap();
        assert!(dw["kept"].as_str().unwrap().contains("min-k=16"), "{dw}");
        assert_eq!(d["layers_quantized"], 2);
        // By default K ≥ 64 (conv1 sums 8·3·3 = 72 products, conv2 16).
        assert_eq!(details(&cnn(), "quant{min-k=0}")["layers_quantized"], 3);
        assert_eq!(details(&cnn(), "quant")["layers_quantized"], 1);
        assert_eq!(details(&cnn(), "quant{act=u8}")["layers_quantized"], 1);
        let d = details(&cnn(), "quant{min-k=0,exclude=conv2}");
        let c2 = d["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == "conv2")
            .unwrap()
            .clone();
        assert!(c2["kept"].as_str().unwrap().contains("exclude"), "{c2}");
        assert_eq!(d["layers_quantized"], 2);
    }

    #[test]
    fn fallback_keeps_the_most_sensitive_layer_in_float() {
        // conv2 sees the widest weights (scaled by 1 + channel): per-tensor
        // quantization of it hurts most.
        let passes = "quant{fallback=1,per-channel=false,min-k=0}";
        let d = details(&cnn(), passes);
        let layers = d["layers"].as_array().unwrap();
        let sens: Vec<(String, f64)> = layers
            .iter()
            .filter_map(|l| Some((l["layer"].as_str()?.to_string(), l["sensitivity"].as_f64()?)))
            .collect();
        assert_eq!(sens.len(), 3, "every layer measured: {sens:?}");
        let worst = sens.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        let kept = layers.iter().find(|l| l["kept"].is_string()).unwrap();
        assert_eq!(kept["layer"], worst.0.as_str());
        assert_eq!(d["layers_quantized"], 2);
    }

    #[test]
    fn qop_keeps_activations_in_int8_between_layers() {
        let out = rewrite_with_data(&mlp(), "quant{format=qop,min-k=0}", 4);
        assert_eq!(
            op_types(&out),
            [
                "Transpose",
                "Unsqueeze",
                "QuantizeLinear",
                "QLinearConv",
                "QLinearConv",
                "DequantizeLinear",
                "Squeeze",
                "Transpose"
            ]
        );
        let out = rewrite_with_data(&cnn(), "quant{format=qop,min-k=0}", 4);
        let ops = op_types(&out);
        assert_eq!(
            ops.iter().filter(|o| *o == "QLinearConv").count(),
            3,
            "{ops:?}"
        );
        assert!(
            !ops.contains(&"Relu".to_string()),
            "Relus fold into zero points: {ops:?}"
        );
    }

    #[test]
    fn the_same_input_gives_the_same_bytes() {
        for passes in [
            "quant{method=entropy,min-k=0}",
            "quant{act=u8,method=percentile,min-k=0}",
            "quant{format=qop,min-k=0}",
        ] {
            let a = crate::onnx::encode(&rewrite_with_data(&mlp(), passes, 3)).unwrap();
            let b = crate::onnx::encode(&rewrite_with_data(&mlp(), passes, 3)).unwrap();
            assert!(a == b, "{passes}");
        }
    }

    #[test]
    fn weight_only_needs_no_data() {
        let out = rewrite(&mlp(), "quant{weight-only=true,min-k=0}");
        let ops = op_types(&out);
        assert_eq!(ops.iter().filter(|o| *o == "DequantizeLinear").count(), 2);
        assert!(!ops.contains(&"QuantizeLinear".to_string()));
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        for (passes, want) in [
            ("quant{act=s16}", "act=s16 must be s8 or u8"),
            ("quant{method=mse}", "method=mse must be"),
            ("quant{bits=9}", "bits=9 must be in 2..=8"),
            (
                "quant{method=percentile,percentile=20}",
                "percentile=20 must be in (50, 100]",
            ),
            ("quant{format=int4}", "format=int4 must be qdq or qop"),
            ("quant{format=qop,fallback=2}", "not with format=qop"),
            ("quant{ops=Add}", "ops may hold"),
            ("quant{min-k=some}", "min-k"),
        ] {
            let err = Pipeline::parse(passes)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(want), "{passes}: {err}");
        }
    }
}
