//! # quant
//!
//! **What:** int8 quantization, `θq = round(θ/Δ)·Δ`, calibrated on data.
//! Weights of Conv, ConvTranspose, Gemm and MatMul become int8 initializers
//! with one symmetric scale per output channel (zero point 0, range
//! [-127, 127]) on the consumer's output-channel axis (Conv 0,
//! ConvTranspose 1, Gemm 0 with `transB` and 1 without, MatMul the last),
//! read through `DequantizeLinear`. The activations those layers read (and
//! more, by target: below) get a per-tensor
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
//! **Targets** (`target`, chosen once): the form depends on where the
//! model runs.
//! - `ort` (default: what a CPU user gets from ONNX Runtime): asymmetric
//!   uint8 activations, a pair also on each quantized layer's output (after
//!   a following Relu or Clip, which a zero point at the bottom of the range
//!   makes free), and int8 *flowing*: every Add, Mul, Concat, pool, Resize,
//!   Sigmoid or LeakyRelu a quantized value reaches is quantized too (its
//!   float constants stored in int8), and operators that only move values
//!   (Reshape, Transpose, Slice, MaxPool, Resize...) pass their input's grid
//!   on unchanged, so that ONNX Runtime finds whole `DQ → op → Q` groups and
//!   runs them as int8 kernels instead of paying a dequantize-quantize round
//!   trip around each float operator. With `flow=auto` (default) an
//!   accuracy guard keeps int8 in the layers only where flowing loses
//!   clearly more on the calibration samples (`measure.rs`); the report's
//!   `flowing` says which, and `flow=true|false` names it.
//! - `trt`: TensorRT's explicit-quantization rules: activations symmetric
//!   int8 (zero point 0, scale = amax/127) on the layers' inputs (and both
//!   inputs of residual Adds), weights symmetric per channel, scales and
//!   zero points initializers, bias float.
//! - `tract`: the same layers lowered to QLinearConv/QLinearMatMul with
//!   per-tensor weights and uint8 activations kept from layer to layer
//!   (`qop.rs`): the one quantized form tract runs faster than float.
//!
//! **Measured where it runs** (`measure`, on by default): `target=ort`
//! times its int8 forms against the float model in ONNX Runtime when it is
//! installed (`measure.rs`), `target=tract` its QLinear form in tract; the
//! fastest is kept, float included, and of two forms within timing noise
//! the more accurate. tract's int8 kernels pay on some CPUs
//! only: mlp-lowrank's ran 1.16× faster than float on an AVX-512 VNNI Xeon
//! and 40× slower on an AVX2 EPYC. With `bits=auto`, `target=ort` also
//! measures 7-bit weights against 8-bit ones: ONNX Runtime's u8×s8 kernels
//! on CPUs without VNNI sum pairs of products in 16 bits, which 8-bit
//! weights can overflow (silero's held-out error 0.52 with 8 bits, 0.14
//! with 7, on such a CPU), so 7 bits are kept where they lose clearly less.
//! Measured choices depend on the machine; the report gives the options
//! that give the same model without measuring (`same_without_timing`).
//!
//! A model below opset 13 is raised to 14 first (see `raise-opset`) and
//! its activation patterns fused, so that a written-out HardSwish becomes
//! one operator between int8 layers; the report says so.
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
//! quantized, on the calibration samples) and keeps the K most sensitive in
//! float.
//!
//! **Bias correction** (`bias-correction`, `bias.rs`): the mean shift
//! rounding causes, `Σ (W_int8 − W)·E[x]` per output channel, is taken
//! out of each quantized Conv's, Gemm's and MatMul's bias (the constant
//! of the Add after a MatMul), `E[x]` from the
//! calibration samples; `auto` keeps it where it lowers the outputs' error
//! on samples whose means it did not use (`measure.rs`).
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
use forms::{Bits, Candidate, Form};
use measure::{Judged, Measured, Probes};
use rewrite::QuantizedWeights;

mod analysis;
mod bias;
mod calibrate;
mod forms;
mod measure;
mod qop;
mod rewrite;
#[cfg(test)]
mod tests;

use rayon::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

pub const INFO: PassInfo = PassInfo {
    name: "quant",
    summary:
        "int8 quantization for ONNX Runtime (default), TensorRT or tract, calibrated on --inputs",
    exact: false,
    data: DataUse::Required,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    struct Opts {
        target: String = "target", "ort",
            "where the model runs: ort (ONNX Runtime's QDQ form: u8 activations, int8 flowing through Add/Mul/Concat/pools/Resize/Sigmoid and data movement), trt (TensorRT's explicit-quantization rules: symmetric s8 activations on layer inputs only) or tract (QLinearConv/QLinearMatMul with per-tensor weights, tract's int8 kernels)";
        act: String = "act", "auto",
            "activation grid: auto (the target's: u8 for ort and tract, s8 for trt), u8 (asymmetric) or s8 (symmetric)";
        method: String = "method", "minmax",
            "activation ranges: minmax, percentile or entropy (KL)";
        percentile: f64 = "percentile", "99.999",
            "for method=percentile: clip |x| at this percentile of the calibration values";
        bits: String = "bits", "auto",
            "weight bits, 2..=8 (stored in int8), or first-N: N in the first layers (those that read the model's inputs), 8 in the others; activations are 8-bit. auto: 8, or with target=ort first-7 or 7 where ONNX Runtime's int8 kernels on this CPU lose precision with 8 (measured: without VNNI they sum pairs of u8×s8 products in 16 bits, which 8-bit weights can overflow; onnxruntime's reduce_range)";
        per_channel: bool = "per-channel", "true",
            "one weight scale per output channel (false: one per tensor)";
        ops: List = "ops", "Conv|ConvTranspose|Gemm|MatMul",
            "operator types to quantize";
        flow: String = "flow", "auto",
            "let int8 flow between layers: target=ort quantizes the Add, Mul, Concat, pools, Resize, Sigmoid, LeakyRelu and data movement (Reshape, Transpose, Slice...) a quantized value reaches, so ONNX Runtime runs them in int8; target=trt quantizes both inputs of residual Adds fed by a quantized layer. auto: flowing, unless with target=ort it loses clearly more than int8 in the layers only on the calibration samples (its accuracy guard; the report says which form was kept); true: always flowing; false: int8 in the layers only";
        exclude: List = "exclude", "",
            "layers to keep in float: node or weight names, `*` matches any run (a|b*|*c)";
        weight_only: bool = "weight-only", "false",
            "quantize weights only (no activation pairs, no calibration)";
        min_k: usize = "min-k", "64",
            "keep in float layers whose outputs each sum fewer products (depthwise 3×3: 9); 0: quantize every layer";
        max_weight_err: f64 = "max-weight-err", "0.05",
            "target=tract: keep in float a layer whose per-tensor int8 weights lose more than this (relative L2); the per-channel scales of ort and trt rarely do";
        max_act_err: f64 = "max-act-err", "0.1",
            "keep in float every layer and operator that reads or writes a value its 8-bit grid loses more of (relative L2 over the calibration samples): a range an 8-bit grid cannot hold";
        fallback: usize = "fallback", "0",
            "measure every layer's sensitivity and keep the K most sensitive in float";
        samples: usize = "samples", "300",
            "calibrate on at most this many of the given samples, spread evenly over them (NNCF's default subset size; calibration time grows with every sample); 0: all";
        bias_correction: String = "bias-correction", "auto",
            "take the mean shift that int8 weights cause out of each quantized Conv's, Gemm's and MatMul's bias (the constant of the Add after a MatMul; b − Σ (W_int8 − W)·E[x], E[x] each input channel's mean over the calibration samples; Nagel et al. 2019): auto (measured, as it can also raise the error: kept where it lowers the outputs' error by 5% or more on calibration samples whose means it did not use, in ONNX Runtime when installed), true or false; ort and trt targets";
        measure: bool = "measure", "true",
            "time the int8 forms against the float model where they run and keep the fastest, float included (a less accurate form only when it is 3% faster than a more accurate one): target=ort in ONNX Runtime when it is installed (flowing, in the layers only, every layer), target=tract in tract (whose int8 kernels pay on some CPUs only); the report gives the options that give the same model without timing";
    }
}

/// Where the quantized model runs, which decides its form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// ONNX Runtime: QDQ with u8 activations, int8 kept between layers.
    Ort,
    /// TensorRT's explicit quantization: QDQ, symmetric s8 activations.
    Trt,
    /// tract: QLinear operators with per-tensor weights (`qop.rs`).
    Tract,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ort => "ort (ONNX Runtime)",
            Target::Trt => "trt (TensorRT)",
            Target::Tract => "tract",
        }
    }
}

/// Whether int8 flows between layers (the `flow` option).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    /// Flowing unless the accuracy guard refuses it (target=ort).
    Auto,
    Always,
    Never,
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

/// The operator types quant can quantize: its layers.
const LAYER_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

struct Quant {
    after_raise: Pipeline,
    target: Target,
    max_weight_err: f64,
    max_act_err: f64,
    act: Act,
    method: Method,
    /// `None`: auto (see the option).
    bits: Option<Bits>,
    per_channel: bool,
    ops: Vec<String>,
    flow: Flow,
    measure: bool,
    /// `None`: auto (measured by the accuracy guard).
    correction: Option<bool>,
    exclude: Vec<String>,
    weight_only: bool,
    min_k: usize,
    fallback: usize,
    /// At most this many calibration samples (0: all).
    samples: usize,
    prepare: Pipeline,
}

fn build(o: &Options) -> Result<Box<dyn Pass>> {
    Ok(Box::new(Quant::new(o)?))
}

impl Quant {
    fn new(o: &Options) -> Result<Quant> {
        let o = Opts::parse(o)?;
        let target = match o.target.as_str() {
            "ort" => Target::Ort,
            "trt" => Target::Trt,
            "tract" => Target::Tract,
            other => bail!("target={other} must be ort, trt or tract"),
        };
        let act = match (o.act.as_str(), target) {
            ("auto", Target::Trt) | ("s8", _) => Act::S8,
            ("auto", _) | ("u8", _) => Act::U8,
            (other, _) => bail!("act={other} must be auto, s8 or u8"),
        };
        ensure!(
            !(target == Target::Tract && act == Act::S8),
            "target=tract keeps u8 activations (tract's s8 QLinear path is slow): act=s8 does not apply"
        );
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
        let bits = match o.bits.as_str() {
            "auto" => None,
            n => Some(
                Bits::parse(n)
                    .with_context(|| format!("bits={n} must be auto, N or first-N, N in 2..=8"))?,
            ),
        };
        for op in o.ops.iter() {
            ensure!(
                LAYER_OPS.contains(&op.as_str()),
                "ops may hold Conv, ConvTranspose, Gemm, MatMul (got {op})"
            );
        }
        let flow = match o.flow.as_str() {
            "auto" => Flow::Auto,
            "true" => Flow::Always,
            "false" => Flow::Never,
            other => bail!("flow={other} must be auto, true or false"),
        };
        let qop = target == Target::Tract;
        let fallback = o.fallback;
        ensure!(
            !(qop && fallback > 0),
            "fallback is measured on the QDQ form of ort and trt; not with target=tract"
        );
        let correction = match o.bias_correction.as_str() {
            "auto" => None,
            "true" => Some(true),
            "false" => Some(false),
            other => bail!("bias-correction={other} must be auto, true or false"),
        };
        ensure!(
            !(qop && correction == Some(true)),
            "bias-correction applies to the QDQ form of ort and trt; not with target=tract"
        );
        let max_weight_err = o.max_weight_err;
        ensure!(
            max_weight_err > 0.0,
            "max-weight-err={max_weight_err} must be > 0"
        );
        Ok(Quant {
            after_raise: Pipeline::parse("fuse-activation,infer-shapes")?,
            target,
            max_weight_err,
            max_act_err: o.max_act_err,
            act,
            method,
            bits,
            per_channel: o.per_channel,
            ops: o.ops.0,
            flow,
            measure: o.measure,
            correction,
            exclude: o.exclude.0,
            weight_only: o.weight_only,
            min_k: o.min_k,
            fallback,
            samples: o.samples,
            prepare: Pipeline::parse(if qop {
                // Bias Adds folded into Gemms: the QLinear form carries the bias.
                "fuse,infer-shapes"
            } else {
                "lift-constants,fuse-bn,infer-shapes"
            })?,
        })
    }
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
    /// No Conv, ConvTranspose, Gemm or MatMul computes its activations,
    /// directly or through other operators: it reads the model's inputs.
    first: bool,
}

/// Inputs (node, slot) that read a value.
type Readers = Vec<(NodeId, usize)>;

/// Each calibrated value's grid and range (lo, hi).
type Grids = BTreeMap<String, Calibrated>;

/// A calibrated value: its grid, its range, and what the grid loses on it.
#[derive(Clone, Copy, Debug)]
struct Calibrated {
    grid: Grid,
    lo: f32,
    hi: f32,
    /// ‖x − dq(q(x))‖ / ‖x‖ over the calibration samples.
    err: f64,
}

/// An activation that gets a Q→DQ pair (or a constant read through a
/// DequantizeLinear of its int8 values).
#[derive(Clone, Debug)]
struct Pair {
    value: Outlet,
    /// The inputs that read the dequantized value instead.
    readers: Readers,
    /// The value is a graph output, which the dequantized value takes over.
    graph_output: bool,
    /// Where its grid comes from.
    grid: GridFrom,
}

/// Where a quantized value's grid comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GridFrom {
    /// Its own range on the calibration samples.
    Calibrated,
    /// The grid of the named value: the output of an operator that only
    /// moves or selects values (Reshape, MaxPool, Resize...), so that
    /// `DQ → op → Q` with equal grids runs on int8 as it is.
    SameAs(String),
    /// Its own values: a constant input of an operator int8 flows through.
    Constant,
}

/// The activations to quantize, by value name (an ordered map: the same
/// model gives the same patch).
type ActPlan = BTreeMap<String, Pair>;

impl Quant {
    /// The report of a model handed back as it came (`format` says why),
    /// with `also`'s fields.
    fn given_back(
        &self,
        format: &str,
        layers: Vec<serde_json::Value>,
        also: serde_json::Value,
    ) -> serde_json::Value {
        let mut report = json!({
            "target": self.target.name(),
            "format": format,
            "layers_quantized": 0,
            "layers": layers,
        });
        if let (Some(r), serde_json::Value::Object(also)) = (report.as_object_mut(), also) {
            r.extend(also);
        }
        report
    }

    /// Whether the pass's own form lets int8 flow (`flow=auto` does,
    /// unless the accuracy guard refuses it).
    fn flows(&self) -> bool {
        self.flow != Flow::Never
    }

    /// The weights' bits unless measured otherwise (`bits=auto`: 8).
    fn weight_bits(&self) -> Bits {
        self.bits.unwrap_or(Bits::all(8))
    }

    /// The plan of `layer` quantized alone (`fallback`'s sensitivity).
    fn alone(&self, g: &Graph, layer: &Layer, lossy: &BTreeSet<String>) -> ActPlan {
        self.plan(g, std::slice::from_ref(layer), self.flows(), lossy)
    }

    /// The values the plans of `forms` give a calibrated grid (their own,
    /// or the one they share), sorted.
    fn calibrated_by_plans(
        &self,
        g: &Graph,
        forms: &[Form],
        layers: &[Layer],
        every: &[Layer],
        lossy: &BTreeSet<String>,
    ) -> Vec<String> {
        // `fallback` measures each layer alone, whose plan can read a
        // value the whole forms' plans share a grid from (PP-OCR rec with
        // flow=true: a Transpose after a MatMul).
        let alone = layers
            .iter()
            .filter(|_| self.fallback > 0)
            .flat_map(|l| self.alone(g, l, lossy));
        let mut names: Vec<String> = forms
            .iter()
            .flat_map(|f| self.plan(g, if f.min_k == 0 { every } else { layers }, f.flow, lossy))
            .chain(alone)
            .filter_map(|(n, p)| match p.grid {
                GridFrom::Calibrated => Some(n),
                GridFrom::SameAs(root) => Some(root),
                GridFrom::Constant => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Pass for Quant {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        let capped;
        let cx = match &cx.data {
            Some(d) if self.samples > 0 && d.samples.len() > self.samples => {
                capped = PassContext {
                    data: Some(d.at_most(self.samples).into_owned()),
                };
                &capped
            }
            _ => cx,
        };
        // Handed back unchanged if int8 does not pay (weights share their bytes).
        let given = model.clone();
        self.prepare.run_nested(model, cx)?;
        let opset = model.opset("").unwrap_or(1);
        let raised: Option<serde_json::Value> = if opset < 13 {
            let r = crate::passes::raise_opset::raise(model, RAISE_TO)?;
            self.after_raise.run_nested(model, cx)?;
            Some(r)
        } else {
            None
        };
        let (mut layers, mut report) = self.candidates(&model.graph, self.min_k);
        if self.target == Target::Tract {
            let raised = raised.map(|r| json!({ "from": opset, "to": RAISE_TO, "rewritten": r }));
            return self.run_qop(model, given, cx, layers, report, raised);
        }
        let data = if self.weight_only {
            None
        } else {
            Some(cx.data.as_ref().context(
                "quant needs calibration samples (the CLI provides --inputs or random ones)",
            )?)
        };
        // Calibrate every activation any plan may quantize.
        let forms = self.forms(&model.graph, data.is_some(), layers.len());
        let mut every = self.candidates(&model.graph, 0).0;
        let mut grids = Grids::new();
        let mut lossy = BTreeSet::new();
        // Bias correction's channel sums come with the first sweep.
        let mut sums = None;
        // A value left float (its range lossy) can put an operator after it
        // on a grid of its own, which the first plans shared: calibrate
        // until the plans read only calibrated values (PP-OCR det with
        // method=entropy: a Resize output).
        loop {
            let missing: Vec<String> = self
                .calibrated_by_plans(&model.graph, &forms, &layers, &every, &lossy)
                .into_iter()
                .filter(|n| !grids.contains_key(n))
                .collect();
            let want_sums = sums.is_none() && self.correction != Some(false);
            let Some(d) = data.filter(|_| !missing.is_empty() || want_sums) else {
                break;
            };
            let wanted = want_sums.then(|| {
                let judged = measure::judged_samples(d.samples.len());
                bias::SumsWanted::new(&model.graph, &every, judged)
            });
            let (calibrated, s) = self.calibrate(model, d, &missing, self.act, wanted.as_ref())?;
            grids.extend(calibrated);
            if wanted.is_some() {
                sums = Some(s);
            }
            // A range an 8-bit grid cannot hold stays float, with what reads it.
            lossy = analysis::lossy(&grids, self.max_act_err);
            for set in [&mut layers, &mut every] {
                set.retain(|l| {
                    let why = analysis::reads_lossy(
                        &model.graph,
                        l,
                        self.target,
                        &grids,
                        self.max_act_err,
                    );
                    match why {
                        Some(why) => {
                            if !report.iter().any(|e| e["layer"] == l.name.as_str()) {
                                report.push(json!({ "layer": l.name, "op": l.op, "kept": why }));
                            }
                            false
                        }
                        None => true,
                    }
                });
            }
        }
        // Each weight quantized once for all the forms below.
        let int8_weights = QuantizedWeights::default();
        let mut sensitivity = BTreeMap::new();
        if self.fallback > 0 && !layers.is_empty() {
            let d = data.context("fallback needs calibration data (not with weight-only)")?;
            sensitivity = self.sensitivity(model, d, &layers, &grids, &lossy, &int8_weights)?;
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
        let sums = sums.unwrap_or_default();
        let means = sums.means();
        let bytes_before = float_weight_bytes(&model.graph, &layers);
        let build = |form: Form, other: Option<&bias::Means>| {
            let layers = if form.min_k == 0 { &every } else { &layers };
            let means = other.unwrap_or(&means);
            self.quantized(model, layers, &grids, &lossy, form, &int8_weights, means)
        };
        let mut candidates = forms
            .iter()
            .map(|&f| build(f, None))
            .collect::<Result<Vec<_>>>()?;
        let timing = self.measure
            && self.target == Target::Ort
            && candidates.iter().any(|c| !c.layers.is_empty());
        let probes = Probes {
            // bits=auto: 7-bit weights are measured against 8-bit ones.
            bits: self.bits.is_none() && timing,
            correction: (self.correction.is_none() && !sums.is_empty()).then_some(&sums),
        };
        let judged = match data {
            Some(d) => self.judge(d, model, &mut candidates, timing, &build, probes)?,
            None => Judged {
                guard: serde_json::Value::Null,
                timed: None,
                weights: serde_json::Value::Null,
                correction: serde_json::Value::Null,
            },
        };
        let (guard, weight_bits) = (judged.guard, judged.weights);
        let measured = match judged.timed {
            Some(timed) => self.choose(&candidates, &timed),
            None => Measured::not(if !timing {
                if self.target == Target::Ort && self.measure {
                    "nothing to time"
                } else {
                    "not asked (measure=false, or a target other than ort)"
                }
            } else {
                "ONNX Runtime is not installed"
            }),
        };
        let Some(chosen) = measured.chosen.map(|i| candidates.swap_remove(i)) else {
            // int8 does not pay here: the model is handed back as it came.
            *model = given;
            report.extend(layers.iter().map(|l| {
                json!({ "layer": l.name, "op": l.op, "kept": "float: the int8 model ran slower in ONNX Runtime" })
            }));
            let also = json!({ "measured": measured.report, "weight_bits": weight_bits });
            return Ok(self.given_back("float (int8 did not pay)", report, also));
        };
        if chosen.layers.is_empty() && chosen.acts.is_empty() {
            // Nothing to quantize: the model goes back as it came, not
            // raised to a newer opset for nothing.
            *model = given;
            return Ok(self.given_back("float (no layer to quantize)", report, json!({})));
        }
        if chosen.form.min_k != self.min_k {
            // Every layer quantized: what min-k left in float is no longer.
            layers = chosen.layers.clone();
            report.retain(|e| !e["kept"].as_str().is_some_and(|k| k.contains("min-k")));
        }
        let mut entries = vec![];
        for layer in &layers {
            let mut entry = json!({ "layer": layer.name, "op": layer.op, "K": layer.k });
            if let Some(w) = chosen.weights.get(&layer.node) {
                entry["weight"] = w.clone();
            }
            let inputs: Vec<_> = layer
                .acts
                .iter()
                .filter_map(|(_, v)| {
                    let name = model.graph.outlet_name(*v);
                    grids.get(name).filter(|_| chosen.acts.contains_key(name)).map(|c| {
                        json!({ "value": name, "range": [c.lo, c.hi], "scale": c.grid.scale, "zero_point": c.grid.zero_point, "grid_err": c.err })
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
        let (acts, flows) = (chosen.acts.len(), chosen.flows);
        let chosen_corrected = chosen.corrected;
        let float_copies = float_copies_bytes(&model.graph, &layers, &chosen.weights);
        *model = chosen.model;
        let bytes_after = int8_bytes(&model.graph);
        entries.extend(report);
        let quantized = layers.len();
        let mut details = json!({
            "target": self.target.name(),
            "format": "qdq",
            "opset_raised": raised.map(|r| json!({ "from": opset, "to": RAISE_TO, "rewritten": r })),
            "activations": match self.act { Act::S8 => "int8 symmetric", Act::U8 => "uint8 asymmetric" },
            "method": if self.weight_only { "none (weight-only)".to_string() } else { self.method.name() },
            "calibration": data.map_or("none".to_string(), |d| format!("{} ({} samples)", d.source, d.samples.len())),
            "measured": measured.report,
            "accuracy_guard": guard,
            "layers_quantized": quantized,
            "left_in_subgraphs": in_subgraphs(&model.graph, &self.ops),
            "activation_pairs": acts,
            "int8_also": flows,
            "flowing": chosen.form.flow,
            "weight_bytes": { "before": bytes_before, "after": bytes_after },
            "layers": entries,
        });
        if float_copies > 0 {
            details["weight_bytes"]["float_copies_kept"] = json!(float_copies);
        }
        if !weight_bits.is_null() {
            details["weight_bits"] = weight_bits;
        }
        details["bias_correction"] = match (self.correction, judged.correction) {
            (None, serde_json::Value::Null) => {
                json!("off: no quantized Conv, Gemm or MatMul whose input was measured")
            }
            (None, measured) => measured,
            (Some(on), _) => json!(format!(
                "{} (bias-correction={on})",
                if on { "on" } else { "off" }
            )),
        };
        details["bias_correction_layers"] = json!(chosen_corrected);
        Ok(details)
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

/// Bytes of the float weights of `layers` that stay beside their int8
/// copy, for readers that are not quantized (see `quantize_weights`).
fn float_copies_bytes(
    g: &Graph,
    layers: &[Layer],
    weights: &BTreeMap<NodeId, serde_json::Value>,
) -> usize {
    let kept: BTreeSet<Outlet> = layers
        .iter()
        .filter(|l| {
            weights
                .get(&l.node)
                .is_some_and(|w| w.get("float_copy_kept_for").is_some())
        })
        .filter_map(|l| l.weight.map(|(_, w, _)| w))
        .collect();
    kept.into_iter()
        .filter_map(|w| g.const_tensor(w))
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
