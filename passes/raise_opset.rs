//! # raise-opset
//!
//! **What:** raises the default-domain (`ai.onnx`) opset a model imports to
//! `to`, rewriting every operator whose signature or semantics changed
//! between the model's opset and `to`, in the main graph and every subgraph
//! (If/Loop/Scan bodies); then sets `opset_import` and raises `ir_version`
//! to what the target opset needs (opset 13 and 14: IR 7; 15–18: IR 8;
//! 19, 20: IR 9; 21: IR 10). Operators of other domains (`ai.onnx.ml`,
//! `com.microsoft`) are left alone.
//!
//! **Why:** quantization needs opset ≥ 13 (per-channel `DequantizeLinear`
//! `axis`, TensorRT's explicit-quantization rules), and real exports (the
//! PP-OCR models) are opset 11 and 12.
//!
//! ```text
//! opset 12                                     opset 13
//! y = Squeeze(x) {axes=[0]}               →    y = Squeeze(x, [0])
//! s = Split(x) {axis=1, split=[2,3]}      →    s = Split(x, [2,3]) {axis=1}
//! r = ReduceSum(x) {axes=[1], keepdims=0} →    r = ReduceSum(x, [1]) {keepdims=0}
//! d = Dropout(x) {ratio=0.3}              →    d = Dropout(x, 0.3)
//! p = Softmax(x: rank 3) {axis=2}         →    p = Softmax(x) {axis=2}
//! p = Softmax(x: rank 3) {axis=1}         →    f = Flatten(x) {axis=1}
//!                                              q = Softmax(f) {axis=1}
//!                                              p = Reshape(q, Shape(x))
//! ```
//! Before 13, `Softmax`, `LogSoftmax` and `Hardmax` coerce the input to 2-D
//! at `axis` (default 1) and normalise over everything from `axis` on; from 13
//! they normalise over `axis` alone (default -1). The two agree when `axis`
//! is the last one (`-1`, or the input's rank is known); otherwise the node
//! is wrapped in Flatten → op(axis=1) → Reshape to the input's shape, which
//! is the old definition. The default axis is written out either way.
//!
//! The rank comes from the file's types or is followed through the graph
//! (elementwise ops, MatMul, Reshape to a computed shape of known length,
//! Squeeze/Unsqueeze, Split, Concat, Reduce ops, constants): exporters leave
//! most intermediate values untyped.
//!
//! Every change of an operator's schema in (model's opset, `to`] is in
//! [`change`]: converted, types-only (only type constraints widened, checked
//! against the onnx 1.23 schemas), or compatible (a new attribute or input
//! whose default keeps the old behaviour, or a wider domain such as negative
//! axes). A node whose operator changed in a way the table does not cover
//! stops the pass with an error naming the operator and versions (all such
//! nodes at once), and the model is left untouched: never a silently
//! different model. Other conversions: Split-18 gets `num_outputs` when it
//! has no sizes; RoiAlign-16 gets its old `output_half_pixel` mode written
//! out; GridSample-20's renamed modes. Refused: Resize with
//! `tf_half_pixel_for_nn` (gone at 13), Erf known to take integers (13),
//! BatchNormalization with training outputs (14), QuantizeLinear-19 unless
//! `x` is known float, GroupNormalization-21 and DFT-20. Below opset 11
//! little is covered: Clip-11 and Pad-11 (attributes → inputs), the
//! negative-axes widenings of 11 and its `auto_pad` re-specification
//! (explicit pads and stride-1 SAME carry over), the pools' `ceil_mode` of 10
//! (default floor) and Dropout-10 when its mask is unread; Upsample, Slice-10,
//! Resize-10 and the rest are refused. Models with local functions are
//! refused (their bodies are opaque here). A model already at or above `to`
//! is not changed; the report says so.
//!
//! The PP-OCR models (det, rec at 12; cls at 11) raised to 13, 18 and 21
//! compute bit-identical outputs in tract, and in ONNX Runtime at 13 and 18;
//! from 19 on, ONNX Runtime 1.32's AveragePool-19 kernel rounds differently
//! from its AveragePool-11 (1.9e-6 absolute on values near 10), so rec is
//! 5.4e-7 (relative) off there: the kernel, not the conversion.
//!
//! Types-only changes verified (schema diff: same inputs, outputs and
//! attributes, type constraints widened):
//!
//! | opset | operators |
//! |---|---|
//! | 12 | Clip, Max, Min, MaxPool, Pow, ReduceMax, ReduceMin |
//! | 13 | Abs, Add, ArgMax, ArgMin, Cast, Ceil, Clip, Concat, Constant, DepthToSpace, Div, Dropout, Equal, Exp, Expand, Flatten, Floor, Gather, GatherElements, GatherND, Gemm, Greater, Identity, If, IsNaN, LRN, Less, Log, Loop, MatMul, Max, Mean, MeanVarianceNormalization, Min, Mod, Mul, Neg, NegativeLogLikelihoodLoss, NonZero, Pad, Pow, Reciprocal, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin, ReduceProd, ReduceSumSquare, Relu, Reshape, ScatterElements, ScatterND, Shape, Sigmoid, Sign, Size, Slice, SoftmaxCrossEntropyLoss, SpaceToDepth, Sqrt, Sub, Sum, Tanh, Tile, Transpose |
//! | 14 | Add, CumSum, Div, Identity, Mul, Relu, Sub |
//! | 15 | BatchNormalization, Pow |
//! | 16 | GreaterOrEqual, Identity, If, LeakyRelu, LessOrEqual, Loop, PRelu, Scan, Where |
//! | 18 | OptionalGetElement, ScatterElements, ScatterND |
//! | 19 | Constant, Equal, Identity, If, Loop, Reshape, Scan, Shape, Size |
//! | 20 | ConstantOfShape, IsInf, IsNaN, ReduceMax, ReduceMin |
//! | 21 | Cast, CastLike, Constant, ConstantOfShape, Flatten, Identity, If, Loop, Pad, Reshape, Scan, Shape, Size, Squeeze, Transpose, Unsqueeze |
//!
//! **Options:** `to` (default 13): the target opset, 13 to 21.

use crate::ir::patch::Src;
use crate::ir::{
    AttrValue, Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor,
    TensorData,
};
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{OptionInfo, Options, Pass, PassContext};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub const INFO: PassInfo = PassInfo {
    name: "raise-opset",
    summary:
        "raise the ai.onnx opset (default to 13), converting operators whose signature changed",
    exact: true,
    data: DataUse::None,
    options: &[OptionInfo {
        name: "to",
        default: "13",
        help: "target default-domain opset, 13 to 21",
    }],
    build,
};

const MIN_TO: i64 = 13;
const MAX_TO: i64 = 21;

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let to: i64 = options.get("to")?;
    ensure!(
        (MIN_TO..=MAX_TO).contains(&to),
        "pass 'raise-opset': to={to} is outside {MIN_TO}..={MAX_TO}"
    );
    Ok(Box::new(RaiseOpset { to }))
}

struct RaiseOpset {
    to: i64,
}

impl Pass for RaiseOpset {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        // The pipeline names the pass in errors.
        raise_opset(model, self.to)
    }
}

/// The IR version a model importing `opset` needs (onnx's version table).
fn ir_for(opset: i64) -> i64 {
    match opset {
        ..=12 => 7,
        13 | 14 => 7,
        15..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// Raises the default-domain opset of `model` to `to` (see the module doc).
/// On error the model is unchanged. Returns the report: `from`, `to`,
/// `ir_version` before and after, and `rewritten` nodes per operator type
/// (or `changed: false` and a `note` when the model is already there).
/// `quant` calls it to raise models below opset 13 first.
pub(crate) fn raise(model: &mut Model, to: i64) -> Result<serde_json::Value> {
    raise_opset(model, to).context("raise-opset")
}

fn raise_opset(model: &mut Model, to: i64) -> Result<serde_json::Value> {
    ensure!(
        (MIN_TO..=MAX_TO).contains(&to),
        "target opset {to} is outside {MIN_TO}..={MAX_TO}"
    );
    let Some(from) = model.opset("") else {
        bail!("the model imports no ai.onnx opset");
    };
    if from >= to {
        return Ok(json!({
            "from": from,
            "to": to,
            "changed": false,
            "note": format!("already at opset {from} (>= {to}): nothing to do"),
        }));
    }
    ensure!(
        model.functions.is_empty(),
        "the model has {} local function(s), whose bodies are not converted",
        model.functions.len()
    );
    let mut work = model.clone();
    let mut cx = Cx {
        from,
        to,
        ranks: Ranks::new(),
        names: RefCell::new(
            work.graph
                .all_names()
                .into_iter()
                .map(String::from)
                .collect(),
        ),
    };
    let mut errors: BTreeSet<String> = BTreeSet::new();
    let mut rewritten: BTreeMap<String, usize> = BTreeMap::new();
    work.graph.visit_graphs_mut(&mut |g| {
        let mut patches = vec![];
        cx.ranks = ranks(g)?;
        for id in g.op_order()? {
            let op = g.op(id).expect("operators");
            if !op.is_default_domain() {
                continue;
            }
            match convert(&cx, g, id) {
                Ok(Some(patch)) => {
                    *rewritten.entry(op.op_type.clone()).or_default() += 1;
                    patches.push(patch);
                }
                Ok(None) => {}
                Err(e) => {
                    errors.insert(format!("{e:#}"));
                }
            }
        }
        for patch in patches {
            patch.apply(g)?;
        }
        Ok(())
    })?;
    if !errors.is_empty() {
        let list: Vec<String> = errors.into_iter().collect();
        bail!("cannot raise opset {from} to {to}: {}", list.join("; "));
    }
    let ir_before = work.ir_version;
    let need = ir_for(to);
    if work.ir_version.is_none_or(|v| v < need) {
        work.ir_version = Some(need);
    }
    for o in &mut work.opset_import {
        if matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            o.version = Some(to);
        }
    }
    let ir_after = work.ir_version;
    *model = work;
    Ok(json!({
        "from": from,
        "to": to,
        "ir_version": [ir_before, ir_after],
        "rewritten": rewritten,
    }))
}

/// What converters may consult.
struct Cx {
    from: i64,
    to: i64,
    /// Ranks of the values of the graph being converted, where known.
    ranks: Ranks,
    /// Every value name of the model, and those given to new values.
    names: RefCell<HashSet<String>>,
}

/// A node being converted: its operator as rewritten so far, and the patch.
struct Work<'a> {
    g: &'a Graph,
    id: NodeId,
    op: Operator,
    patch: Patch,
    changed: bool,
    /// Input slots fed from new constants.
    fed: Vec<usize>,
    /// The node is replaced (its uses shunted); the operator is not updated.
    replaced: bool,
}

impl Work<'_> {
    /// A name for a new value, after the node's first output, unused
    /// anywhere in the model (`Patch::apply` only sees this graph's names,
    /// and a subgraph must not shadow an enclosing graph's value).
    fn name(&self, cx: &Cx, suffix: &str) -> String {
        let out = self.g.outlet_name(Outlet::new(self.id, 0));
        let base = if out.is_empty() {
            format!("{}_{suffix}", self.op.op_type)
        } else {
            format!("{out}_{suffix}")
        };
        let mut taken = cx.names.borrow_mut();
        let mut name = base.clone();
        let mut k = 1;
        while taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        taken.insert(name.clone());
        name
    }

    /// Feeds input `slot` from a new constant.
    fn feed(&mut self, cx: &Cx, slot: usize, suffix: &str, t: Tensor) {
        let name = self.name(cx, suffix);
        let src = self.patch.add_const(&name, t);
        self.op.arity = self.op.arity.max(slot + 1);
        self.patch.rewire(self.id, slot, Some(src));
        self.fed.push(slot);
        self.changed = true;
    }

    fn take_attr(&mut self, name: &str) -> Option<Attribute> {
        let i = self.op.attributes.iter().position(|a| a.name == name)?;
        self.changed = true;
        Some(self.op.attributes.remove(i))
    }

    fn set_attr(&mut self, attr: Attribute) {
        self.op.set_attr(attr);
        self.changed = true;
    }

    fn input_elem(&self, slot: usize) -> Option<DataType> {
        let o = self.g.input(self.id, slot)?;
        self.g.known_type(o)?.tensor_elem()
    }
}

type Converter = fn(&Cx, &mut Work) -> Result<()>;

#[derive(Clone, Copy)]
enum Change {
    /// Only type constraints widened.
    Types,
    /// A new attribute or optional input whose default keeps the old
    /// behaviour, or a wider domain (negative axes): nothing to do.
    Compatible,
    Convert(Converter),
}

/// How the change of `op`'s schema at opset `v` is handled; `None`: not
/// handled (the pass refuses such a node).
fn change(op: &str, v: i64) -> Option<Change> {
    use Change::*;
    Some(match (op, v) {
        // Opset 11: negative axes allowed, or new attributes with the old
        // behaviour as default (DepthToSpace mode=DCR, TopK largest/sorted=1,
        // Constant sparse_value, Gemm's C optional, If/Loop/Scan relaxed).
        (
            "ArgMax" | "ArgMin" | "Compress" | "Concat" | "Constant" | "DepthToSpace" | "Flatten"
            | "Gather" | "Gemm" | "Hardmax" | "If" | "LogSoftmax" | "Loop" | "OneHot" | "ReduceL1"
            | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax" | "ReduceMean"
            | "ReduceMin" | "ReduceProd" | "ReduceSum" | "ReduceSumSquare" | "Scan" | "Slice"
            | "Softmax" | "Split" | "Squeeze" | "TopK" | "Unsqueeze",
            11,
        ) => Compatible,
        ("Equal", 11) => Types,
        // Explicit pads unchanged; SAME_* auto_pad re-specified (strides).
        ("Conv" | "ConvTranspose" | "AveragePool" | "MaxPool" | "LpPool", 11) => {
            Convert(auto_pad_11)
        }
        // Opset 10: pools gain `ceil_mode` (default 0: floor, as before).
        ("AveragePool" | "MaxPool", 10) => Compatible,
        ("Dropout", 10) => Convert(dropout_mask_10),
        ("Slice", 10) => Convert(slice_attrs_to_inputs),
        ("Clip", 11) => Convert(clip_attrs_to_inputs),
        ("Pad", 11) => Convert(pad_attrs_to_inputs),
        ("Resize", 11) => return None, // Resize-10 coordinates differ
        // Opset 12.
        ("ArgMax" | "ArgMin", 12) => Compatible, // select_last_index=0
        ("Constant", 12) => Compatible,          // value_float(s)/int(s)/string(s)
        ("GatherND", 12) => Compatible,          // batch_dims=0
        ("Clip" | "Max" | "Min" | "MaxPool" | "Pow" | "ReduceMax" | "ReduceMin", 12) => Types,
        ("Dropout", 12) => Convert(dropout_ratio_to_input),
        // Opset 13.
        ("Squeeze" | "Unsqueeze", 13) => Convert(axes_to_input),
        ("ReduceSum", 13) => Convert(axes_to_input),
        ("Split", 13) => Convert(split_to_input),
        ("Softmax" | "LogSoftmax" | "Hardmax", 13) => Convert(softmax_one_axis),
        ("Resize", 13) => Convert(resize_13),
        ("Erf", 13) => Convert(erf_13),
        ("DequantizeLinear" | "QuantizeLinear", 13) => Compatible, // axis (scale was scalar)
        (
            "Abs"
            | "Add"
            | "ArgMax"
            | "ArgMin"
            | "Cast"
            | "Ceil"
            | "Clip"
            | "Concat"
            | "Constant"
            | "DepthToSpace"
            | "Div"
            | "Dropout"
            | "Equal"
            | "Exp"
            | "Expand"
            | "Flatten"
            | "Floor"
            | "Gather"
            | "GatherElements"
            | "GatherND"
            | "Gemm"
            | "Greater"
            | "Identity"
            | "If"
            | "IsNaN"
            | "LRN"
            | "Less"
            | "Log"
            | "Loop"
            | "MatMul"
            | "Max"
            | "Mean"
            | "MeanVarianceNormalization"
            | "Min"
            | "Mod"
            | "Mul"
            | "Neg"
            | "NegativeLogLikelihoodLoss"
            | "NonZero"
            | "Pad"
            | "Pow"
            | "Reciprocal"
            | "ReduceL1"
            | "ReduceL2"
            | "ReduceLogSum"
            | "ReduceLogSumExp"
            | "ReduceMax"
            | "ReduceMean"
            | "ReduceMin"
            | "ReduceProd"
            | "ReduceSumSquare"
            | "Relu"
            | "Reshape"
            | "ScatterElements"
            | "ScatterND"
            | "Shape"
            | "Sigmoid"
            | "Sign"
            | "Size"
            | "Slice"
            | "SoftmaxCrossEntropyLoss"
            | "SpaceToDepth"
            | "Sqrt"
            | "Sub"
            | "Sum"
            | "Tanh"
            | "Tile"
            | "Transpose",
            13,
        ) => Types,
        // Opset 14.
        ("Add" | "CumSum" | "Div" | "Identity" | "Mul" | "Relu" | "Sub", 14) => Types,
        ("GRU" | "LSTM" | "RNN", 14) => Compatible, // layout=0
        ("Reshape", 14) => Compatible,              // allowzero=0
        ("BatchNormalization", 14) => Convert(batchnorm_14),
        // Opset 15.
        ("BatchNormalization" | "Pow", 15) => Types,
        ("Shape", 15) => Compatible, // start=0, end=rank
        // Opset 16.
        (
            "GreaterOrEqual" | "Identity" | "If" | "LeakyRelu" | "LessOrEqual" | "Loop" | "PRelu"
            | "Scan" | "Where",
            16,
        ) => Types,
        ("ScatterElements" | "ScatterND", 16) => Compatible, // reduction=none
        ("RoiAlign", 16) => Convert(roialign_16),
        // Opset 18.
        (
            "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
            | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare",
            18,
        ) => Convert(axes_to_input),
        ("Split", 18) => Convert(split_18),
        ("OptionalGetElement" | "ScatterElements" | "ScatterND", 18) => Types,
        // Pad axes, Resize antialias/axes/keep_aspect_ratio_policy, LpPool
        // ceil_mode/dilations, OptionalHasElement's input optional.
        ("Pad" | "Resize" | "LpPool" | "OptionalHasElement", 18) => Compatible,
        // Opset 19.
        (
            "Constant" | "Equal" | "Identity" | "If" | "Loop" | "Reshape" | "Scan" | "Shape"
            | "Size",
            19,
        ) => Types,
        // AveragePool dilations; Cast saturate (float8 only); DequantizeLinear
        // scale types; Pad mode=wrap; Resize half_pixel_symmetric.
        ("AveragePool" | "Cast" | "CastLike" | "DequantizeLinear" | "Pad" | "Resize", 19) => {
            Compatible
        }
        ("QuantizeLinear", 19) => Convert(quantize_19),
        // Opset 20.
        ("ConstantOfShape" | "IsInf" | "IsNaN" | "ReduceMax" | "ReduceMin", 20) => Types,
        ("GridSample", 20) => Convert(gridsample_20),
        // Opset 21.
        (
            "Cast" | "CastLike" | "Constant" | "ConstantOfShape" | "Flatten" | "Identity" | "If"
            | "Loop" | "Pad" | "Reshape" | "Scan" | "Shape" | "Size" | "Squeeze" | "Transpose"
            | "Unsqueeze",
            21,
        ) => Types,
        // block_size=0, output_dtype=0, wider scale types.
        ("DequantizeLinear" | "QuantizeLinear" | "QLinearMatMul", 21) => Compatible,
        _ => return None,
    })
}

/// Builds the patch converting node `id` from `cx.from` to `cx.to`, or
/// `None` when the node needs nothing.
fn convert(cx: &Cx, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("operators");
    let versions = schema_changes(&op.op_type)
        .iter()
        .filter(|&&v| cx.from < v && v <= cx.to);
    let mut work = Work {
        g,
        id,
        op: op.clone(),
        patch: Patch::new(format!("raise-opset: {}", g.node(id).label())),
        changed: false,
        fed: vec![],
        replaced: false,
    };
    for &v in versions {
        match change(&op.op_type, v) {
            Some(Change::Types | Change::Compatible) => {}
            Some(Change::Convert(f)) => f(cx, &mut work)?,
            None => bail!("{} (changed at opset {v}) has no conversion", op.op_type),
        }
    }
    if !work.changed {
        return Ok(None);
    }
    if !work.replaced {
        work.patch.update(id, work.op);
    }
    Ok(Some(work.patch))
}

fn ints(a: &Attribute) -> Option<&[i64]> {
    match &a.value {
        AttrValue::Ints(v) => Some(v),
        _ => None,
    }
}

/// Squeeze, Unsqueeze (13), ReduceSum (13), the other Reduce ops (18): the
/// `axes` attribute becomes input 1. Without `axes` (or with an empty list,
/// which meant "all" too) the input stays omitted: Squeeze then squeezes
/// every 1, a Reduce op with `noop_with_empty_axes=0` reduces every axis,
/// as before. Unsqueeze requires `axes`.
fn axes_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    let Some(attr) = w.take_attr("axes") else {
        ensure!(
            w.op.op_type != "Unsqueeze",
            "Unsqueeze without axes is not valid"
        );
        return Ok(());
    };
    let axes = ints(&attr).unwrap_or_default().to_vec();
    if !axes.is_empty() || w.op.op_type == "Unsqueeze" {
        w.feed(
            cx,
            1,
            "axes",
            Tensor::from_i64(vec![axes.len() as i64], &axes),
        );
    }
    Ok(())
}

/// Split-13: the `split` attribute becomes input 1.
fn split_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    if let Some(attr) = w.take_attr("split") {
        let split = ints(&attr).unwrap_or_default().to_vec();
        if !split.is_empty() {
            w.feed(
                cx,
                1,
                "split",
                Tensor::from_i64(vec![split.len() as i64], &split),
            );
        }
    }
    Ok(())
}

/// Split-18 wants either the `split` input or `num_outputs`: without the
/// input, `num_outputs` is the number of outputs (equal parts, as before).
fn split_18(_: &Cx, w: &mut Work) -> Result<()> {
    let has_split = w.fed.contains(&1) || (w.op.arity > 1 && w.g.input(w.id, 1).is_some());
    if !has_split && w.op.attr("num_outputs").is_none() {
        let n = w.g.node(w.id).outputs.len() as i64;
        w.set_attr(Attribute::int("num_outputs", n));
    }
    Ok(())
}

/// Slice-10: the `starts`, `ends` and `axes` attributes become inputs 1, 2
/// and 3 (int64); the bounds are clamped as before, and steps are 1.
fn slice_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    for (slot, name) in [(1, "starts"), (2, "ends"), (3, "axes")] {
        match w.take_attr(name) {
            Some(a) => {
                let v = ints(&a).unwrap_or_default().to_vec();
                w.feed(cx, slot, name, Tensor::from_i64(vec![v.len() as i64], &v));
            }
            None => ensure!(slot == 3, "Slice without {name} is not valid"),
        }
    }
    Ok(())
}

/// Dropout-10 types its `mask` output bool (it had the input's type): only a
/// Dropout whose mask nothing reads converts unchanged.
fn dropout_mask_10(_: &Cx, w: &mut Work) -> Result<()> {
    let mask = Outlet::new(w.id, 1);
    ensure!(
        w.g.node(w.id).outputs.len() < 2 || !w.g.is_used(mask),
        "Dropout whose mask is read (typed bool from opset 10) has no conversion"
    );
    Ok(())
}

/// Dropout-12: the `ratio` attribute becomes input 1 (a float scalar).
fn dropout_ratio_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    if let Some(attr) = w.take_attr("ratio") {
        let AttrValue::Float(r) = attr.value else {
            bail!("Dropout ratio is not a float");
        };
        w.feed(cx, 1, "ratio", Tensor::from_f32(vec![], &[r]));
    }
    Ok(())
}

/// A scalar of a floating-point type, from an f32 attribute value.
fn float_scalar(t: DataType, v: f32) -> Option<Tensor> {
    match t {
        DataType::FLOAT => Some(Tensor::from_f32(vec![], &[v])),
        DataType::DOUBLE => Some(Tensor::new(
            t,
            vec![],
            TensorData::Raw((v as f64).to_le_bytes().to_vec().into()),
        )),
        _ => None,
    }
}

/// Clip-11: `min` and `max` attributes become inputs 1 and 2, of the
/// input's type. Clip-6's defaults (±f32::MAX) are fed explicitly, so ±∞
/// still clips to them.
fn clip_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    let t = w.input_elem(0);
    let min = w.take_attr("min").map_or(f32::MIN, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => f32::MIN,
    });
    let max = w.take_attr("max").map_or(f32::MAX, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => f32::MAX,
    });
    let (Some(lo), Some(hi)) = (
        t.and_then(|t| float_scalar(t, min)),
        t.and_then(|t| float_scalar(t, max)),
    ) else {
        bail!("Clip (changed at opset 11): the input's type is not known to be float or double (run infer-shapes first)");
    };
    w.feed(cx, 1, "min", lo);
    w.feed(cx, 2, "max", hi);
    Ok(())
}

/// Pad-11: the `pads` attribute becomes input 1 and `value` input 2 (of the
/// input's type; omitted when +0.0, the default; -0.0 is kept).
fn pad_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    let Some(pads) = w.take_attr("pads") else {
        bail!("Pad without pads is not valid");
    };
    let pads = ints(&pads).unwrap_or_default().to_vec();
    let value = w.take_attr("value").map_or(0.0, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => 0.0,
    });
    w.feed(
        cx,
        1,
        "pads",
        Tensor::from_i64(vec![pads.len() as i64], &pads),
    );
    if value.to_bits() != 0 {
        let Some(v) = w.input_elem(0).and_then(|t| float_scalar(t, value)) else {
            bail!("Pad (changed at opset 11): a nonzero value on an input not known to be float or double");
        };
        w.feed(cx, 2, "value", v);
    }
    Ok(())
}

/// Softmax, LogSoftmax, Hardmax at 13: see the module doc.
fn softmax_one_axis(cx: &Cx, w: &mut Work) -> Result<()> {
    let axis = w.op.attr_int("axis", 1);
    let x = w.g.input(w.id, 0).expect("Softmax has an input");
    let last = axis == -1
        || cx
            .ranks
            .get(&x)
            .copied()
            .is_some_and(|r| (if axis < 0 { axis + r } else { axis }) == r - 1);
    if last {
        if w.op.attr("axis").is_none() {
            w.set_attr(Attribute::int("axis", axis));
        }
        return Ok(());
    }
    // Old definition: flatten to 2-D at `axis`, normalise rows, restore the shape.
    let out = Outlet::new(w.id, 0);
    let mut op = w.op.clone();
    op.set_attr(Attribute::int("axis", 1));
    let shape = w.patch.add_op(
        None,
        Operator::new("Shape", 1, vec![]),
        vec![Some(x.into())],
        &[&w.name(cx, "shape")],
    );
    let flat = w.patch.add_op(
        None,
        Operator::new("Flatten", 1, vec![Attribute::int("axis", axis)]),
        vec![Some(x.into())],
        &[&w.name(cx, "2d")],
    );
    let norm = w.patch.add_op(
        None,
        op,
        vec![Some(Patch::out(flat, 0))],
        &[&w.name(cx, "rows")],
    );
    let back = w.patch.add_op(
        w.g.node(w.id).name.clone(),
        Operator::new("Reshape", 2, vec![]),
        vec![Some(Patch::out(norm, 0)), Some(Patch::out(shape, 0))],
        &[w.g.outlet_name(out)],
    );
    w.patch.shunt(
        out,
        Src::New {
            index: back,
            slot: 0,
        },
    );
    w.patch.remove(w.id);
    w.changed = true;
    w.replaced = true;
    Ok(())
}

/// Opset 11 re-specified `auto_pad` SAME_UPPER/SAME_LOWER: the output is
/// `ceil(input / stride)` (Conv, pools), which the older text only said for
/// stride 1, and ConvTranspose's extra padding moved to the other side.
/// Explicit pads and VALID are unchanged; SAME is refused where the texts
/// differ.
fn auto_pad_11(_: &Cx, w: &mut Work) -> Result<()> {
    let same = matches!(
        w.op.attr("auto_pad").map(|a| &a.value),
        Some(AttrValue::String(p)) if p.as_ref().starts_with(b"SAME")
    );
    let strided =
        w.op.attr_ints("strides")
            .is_some_and(|s| s.iter().any(|&s| s != 1));
    ensure!(
        !same || !(strided || w.op.op_type == "ConvTranspose"),
        "{} with auto_pad=SAME_* (re-specified at opset 11) has no conversion",
        w.op.op_type
    );
    Ok(())
}

/// Resize-13 dropped the `tf_half_pixel_for_nn` coordinate mode; roi and
/// scales became optional (compatible).
fn resize_13(_: &Cx, w: &mut Work) -> Result<()> {
    if let Some(AttrValue::String(mode)) =
        w.op.attr("coordinate_transformation_mode")
            .map(|a| &a.value)
    {
        ensure!(
            mode.as_ref() != b"tf_half_pixel_for_nn",
            "Resize with coordinate_transformation_mode=tf_half_pixel_for_nn (removed at opset 13) has no conversion"
        );
    }
    Ok(())
}

/// Erf-13 no longer takes integer inputs.
fn erf_13(_: &Cx, w: &mut Work) -> Result<()> {
    if let Some(t) = w.input_elem(0) {
        ensure!(
            matches!(
                t,
                DataType::FLOAT | DataType::FLOAT16 | DataType::DOUBLE | DataType::BFLOAT16
            ),
            "Erf on {t} (integer inputs dropped at opset 13) has no conversion"
        );
    }
    Ok(())
}

/// BatchNormalization-14 has the running mean/variance outputs only in
/// training mode; the training outputs of BatchNormalization-9 are refused.
fn batchnorm_14(_: &Cx, w: &mut Work) -> Result<()> {
    let extra =
        w.g.node(w.id)
            .outputs
            .iter()
            .skip(1)
            .any(|v| !v.name.is_empty());
    ensure!(
        !extra,
        "BatchNormalization with training outputs (changed at opset 14) has no conversion"
    );
    Ok(())
}

/// RoiAlign-16 added `coordinate_transformation_mode`, default `half_pixel`;
/// RoiAlign-10 behaves as `output_half_pixel`, now written explicitly.
fn roialign_16(_: &Cx, w: &mut Work) -> Result<()> {
    if w.op.attr("coordinate_transformation_mode").is_none() {
        w.set_attr(Attribute::new(
            "coordinate_transformation_mode",
            AttrValue::String(bytes::Bytes::from_static(b"output_half_pixel")),
        ));
    }
    Ok(())
}

/// QuantizeLinear-19 wants `y_scale` of `x`'s type: exact when x is float
/// (the scale is), refused when x is int32 or unknown.
fn quantize_19(_: &Cx, w: &mut Work) -> Result<()> {
    ensure!(
        w.input_elem(0) == Some(DataType::FLOAT),
        "QuantizeLinear (changed at opset 19) needs x known to be float (run infer-shapes first)"
    );
    Ok(())
}

/// GridSample-20 renamed modes: bilinear → linear, bicubic → cubic.
fn gridsample_20(_: &Cx, w: &mut Work) -> Result<()> {
    let renamed: &'static [u8] = match w.op.attr("mode").map(|a| &a.value) {
        Some(AttrValue::String(m)) if m.as_ref() == b"bilinear" => b"linear",
        Some(AttrValue::String(m)) if m.as_ref() == b"bicubic" => b"cubic",
        _ => return Ok(()),
    };
    w.set_attr(Attribute::new(
        "mode",
        AttrValue::String(bytes::Bytes::from_static(renamed)),
    ));
    Ok(())
}

/// How far [`len`] follows producers.
const MAX_DEPTH: usize = 16;

type Ranks = HashMap<Outlet, i64>;

/// The rank of every value of `g` where known: from its type, else from
/// what its producer does to the ranks of its inputs (see [`rank`]).
fn ranks(g: &Graph) -> Result<Ranks> {
    let mut ranks = Ranks::new();
    for id in g.topo_order()? {
        for slot in 0..g.node(id).outputs.len() {
            let v = Outlet::new(id, slot);
            if let Some(r) = rank(g, v, &ranks) {
                ranks.insert(v, r);
            }
        }
    }
    Ok(ranks)
}

/// A value's rank: from its type, else from what its producer does to the
/// ranks of its inputs (`ranks`: elementwise and broadcasting ops, MatMul,
/// Reshape to a shape of known length, Squeeze/Unsqueeze, Transpose,
/// Flatten, Gemm, Concat, Reduce ops, constants). Exporters often leave
/// intermediate values untyped.
fn rank(g: &Graph, v: Outlet, ranks: &Ranks) -> Option<i64> {
    if let Some(r) = g.known_rank(v) {
        return Some(r as i64);
    }
    if let Some(t) = constant(g, v) {
        return Some(t.dims.len() as i64);
    }
    let op = g.op(v.node)?;
    if !op.is_default_domain() || (v.slot != 0 && !op.is("Split")) {
        return None;
    }
    let input = |slot: usize| g.input(v.node, slot).and_then(|o| ranks.get(&o).copied());
    const SAME: &[&str] = &[
        "Abs",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Conv",
        "ConvTranspose",
        "Dropout",
        "Elu",
        "Erf",
        "Exp",
        "Floor",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "InstanceNormalization",
        "LayerNormalization",
        "LeakyRelu",
        "Log",
        "LogSoftmax",
        "LRN",
        "AveragePool",
        "MaxPool",
        "Neg",
        "Not",
        "PRelu",
        "Reciprocal",
        "Relu",
        "Resize",
        "Round",
        "Selu",
        "Sigmoid",
        "Sign",
        "Sin",
        "Cos",
        "Softmax",
        "Softplus",
        "Softsign",
        "Sqrt",
        "Tanh",
        "Transpose",
        "Pad",
        "Slice",
        "Tile",
        "CumSum",
        "Split",
    ];
    const BROADCAST: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "And",
        "Or",
        "Xor",
        "Mod",
    ];
    let t = op.op_type.as_str();
    if SAME.contains(&t) {
        return input(0);
    }
    if BROADCAST.contains(&t) {
        return (0..op.arity).map(input).try_fold(0, |m, r| Some(m.max(r?)));
    }
    match t {
        "MatMul" => match (input(0)?, input(1)?) {
            (a, b) if a >= 2 && b >= 2 => Some(a.max(b)),
            (1, b) if b >= 2 => Some(b - 1),
            (a, 1) if a >= 2 => Some(a - 1),
            _ => None,
        },
        "Gemm" | "Flatten" => Some(2),
        "Concat" => (0..op.arity).find_map(input),
        "Reshape" => len(g, g.input(v.node, 1)?, ranks, MAX_DEPTH),
        "Shape" => Some(1),
        "Squeeze" | "Unsqueeze" => {
            let axes = match op.attr_ints("axes") {
                Some(axes) => axes.len() as i64,
                None => constant(g, g.input(v.node, 1)?)?.numel() as i64,
            };
            Some(input(0)? + if t == "Squeeze" { -axes } else { axes })
        }
        _ if t.starts_with("Reduce") && g.input(v.node, 1).is_none() => {
            if op.attr_int("keepdims", 1) == 1 {
                return input(0);
            }
            Some(input(0)? - op.attr_ints("axes")?.len() as i64)
        }
        _ => None,
    }
}

/// A constant: an initializer or a `Constant` node.
fn constant(g: &Graph, v: Outlet) -> Option<Tensor> {
    match g.const_tensor(v) {
        Some(t) => Some(t.clone()),
        None => crate::passes::constant_value(g, v.node),
    }
}

/// The length of a 1-D value (a shape being computed), as far as known.
fn len(g: &Graph, v: Outlet, ranks: &Ranks, depth: usize) -> Option<i64> {
    if let Some(dims) = g.known_dims(v) {
        return match dims.as_slice() {
            [d] => *d,
            _ => None,
        };
    }
    if let Some(t) = constant(g, v) {
        return (t.dims.len() == 1).then(|| t.dims[0]);
    }
    let depth = depth.checked_sub(1)?;
    let op = g.op(v.node)?;
    if !op.is_default_domain() || v.slot != 0 {
        return None;
    }
    let input = |slot: usize| g.input(v.node, slot);
    match op.op_type.as_str() {
        "Cast" | "Identity" | "Abs" | "Neg" => len(g, input(0)?, ranks, depth),
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (
                len(g, input(0)?, ranks, depth)?,
                len(g, input(1)?, ranks, depth)?,
            );
            (a == b || b == 1).then_some(a.max(b))
        }
        "Concat" => (0..op.arity).try_fold(0, |n, s| Some(n + len(g, input(s)?, ranks, depth)?)),
        "Shape" => {
            let r = *ranks.get(&input(0)?)?;
            let at = |b: i64| {
                if b < 0 {
                    (b + r).clamp(0, r)
                } else {
                    b.clamp(0, r)
                }
            };
            let (start, end) = (at(op.attr_int("start", 0)), at(op.attr_int("end", r)));
            Some((end - start).max(0))
        }
        "Slice" => {
            let n = len(g, input(0)?, ranks, depth)?;
            let ints = |s: usize| constant(g, input(s)?)?.to_i64().ok();
            let (starts, ends) = (ints(1)?, ints(2)?);
            let steps = match input(4) {
                Some(_) => ints(4)?,
                None => vec![1],
            };
            if starts.len() != 1 || ends.len() != 1 || steps != [1] {
                return None;
            }
            let at = |b: i64| {
                if b < 0 {
                    (b + n).clamp(0, n)
                } else {
                    b.clamp(0, n)
                }
            };
            Some((at(ends[0]) - at(starts[0])).max(0))
        }
        "Unsqueeze" => {
            // A scalar made 1-D.
            let axes = op
                .attr_ints("axes")
                .map(<[i64]>::len)
                .or_else(|| Some(constant(g, input(1)?)?.numel()))?;
            (axes == 1 && *ranks.get(&input(0)?)? == 0).then_some(1)
        }
        _ => None,
    }
}

/// The opsets (after the first) at which each ai.onnx operator's schema
/// changed, up to 21, from onnx 1.23.2:
/// `{s.name: sorted(since_versions)[1:]}` over
/// `onnx.defs.get_all_schemas_with_history()` in the default domain
/// (deprecations included: Upsample-10, Scatter-11).
fn schema_changes(op: &str) -> &'static [i64] {
    SCHEMA_CHANGES
        .binary_search_by(|(name, _)| (*name).cmp(op))
        .map_or(&[], |i| SCHEMA_CHANGES[i].1)
}

const SCHEMA_CHANGES: &[(&str, &[i64])] = &[
    ("Abs", &[6, 13]),
    ("Add", &[6, 7, 13, 14]),
    ("And", &[7]),
    ("ArgMax", &[11, 12, 13]),
    ("ArgMin", &[11, 12, 13]),
    ("AveragePool", &[7, 10, 11, 19]),
    ("BatchNormalization", &[6, 7, 9, 14, 15]),
    ("Cast", &[6, 9, 13, 19, 21]),
    ("CastLike", &[19, 21]),
    ("Ceil", &[6, 13]),
    ("Clip", &[6, 11, 12, 13]),
    ("Compress", &[11]),
    ("Concat", &[4, 11, 13]),
    ("Constant", &[9, 11, 12, 13, 19, 21]),
    ("ConstantOfShape", &[20, 21]),
    ("Conv", &[11]),
    ("ConvTranspose", &[11]),
    ("CumSum", &[14]),
    ("DFT", &[20]),
    ("DepthToSpace", &[11, 13]),
    ("DequantizeLinear", &[13, 19, 21]),
    ("Div", &[6, 7, 13, 14]),
    ("Dropout", &[6, 7, 10, 12, 13]),
    ("Elu", &[6]),
    ("Equal", &[7, 11, 13, 19]),
    ("Erf", &[13]),
    ("Exp", &[6, 13]),
    ("Expand", &[13]),
    ("Flatten", &[9, 11, 13, 21]),
    ("Floor", &[6, 13]),
    ("GRU", &[3, 7, 14]),
    ("Gather", &[11, 13]),
    ("GatherElements", &[13]),
    ("GatherND", &[12, 13]),
    ("Gemm", &[6, 7, 9, 11, 13]),
    ("GlobalLpPool", &[2]),
    ("Greater", &[7, 9, 13]),
    ("GreaterOrEqual", &[16]),
    ("GridSample", &[20]),
    ("GroupNormalization", &[21]),
    ("HardSigmoid", &[6]),
    ("Hardmax", &[11, 13]),
    ("Identity", &[13, 14, 16, 19, 21]),
    ("If", &[11, 13, 16, 19, 21]),
    ("InstanceNormalization", &[6]),
    ("IsInf", &[20]),
    ("IsNaN", &[13, 20]),
    ("LRN", &[13]),
    ("LSTM", &[7, 14]),
    ("LeakyRelu", &[6, 16]),
    ("Less", &[7, 9, 13]),
    ("LessOrEqual", &[16]),
    ("Log", &[6, 13]),
    ("LogSoftmax", &[11, 13]),
    ("Loop", &[11, 13, 16, 19, 21]),
    ("LpPool", &[2, 11, 18]),
    ("MatMul", &[9, 13]),
    ("Max", &[6, 8, 12, 13]),
    ("MaxPool", &[8, 10, 11, 12]),
    ("MaxUnpool", &[11]),
    ("Mean", &[6, 8, 13]),
    ("MeanVarianceNormalization", &[13]),
    ("Min", &[6, 8, 12, 13]),
    ("Mod", &[13]),
    ("Mul", &[6, 7, 13, 14]),
    ("Neg", &[6, 13]),
    ("NegativeLogLikelihoodLoss", &[13]),
    ("NonMaxSuppression", &[11]),
    ("NonZero", &[13]),
    ("OneHot", &[11]),
    ("OptionalGetElement", &[18]),
    ("OptionalHasElement", &[18]),
    ("Or", &[7]),
    ("PRelu", &[6, 7, 9, 16]),
    ("Pad", &[2, 11, 13, 18, 19, 21]),
    ("Pow", &[7, 12, 13, 15]),
    ("QLinearMatMul", &[21]),
    ("QuantizeLinear", &[13, 19, 21]),
    ("RNN", &[7, 14]),
    ("Reciprocal", &[6, 13]),
    ("ReduceL1", &[11, 13, 18]),
    ("ReduceL2", &[11, 13, 18]),
    ("ReduceLogSum", &[11, 13, 18]),
    ("ReduceLogSumExp", &[11, 13, 18]),
    ("ReduceMax", &[11, 12, 13, 18, 20]),
    ("ReduceMean", &[11, 13, 18]),
    ("ReduceMin", &[11, 12, 13, 18, 20]),
    ("ReduceProd", &[11, 13, 18]),
    ("ReduceSum", &[11, 13]),
    ("ReduceSumSquare", &[11, 13, 18]),
    ("Relu", &[6, 13, 14]),
    ("Reshape", &[5, 13, 14, 19, 21]),
    ("Resize", &[11, 13, 18, 19]),
    ("RoiAlign", &[16]),
    ("Scan", &[9, 11, 16, 19, 21]),
    ("Scatter", &[11]),
    ("ScatterElements", &[13, 16, 18]),
    ("ScatterND", &[13, 16, 18]),
    ("Selu", &[6]),
    ("Shape", &[13, 15, 19, 21]),
    ("Sigmoid", &[6, 13]),
    ("Sign", &[13]),
    ("Size", &[13, 19, 21]),
    ("Slice", &[10, 11, 13]),
    ("Softmax", &[11, 13]),
    ("SoftmaxCrossEntropyLoss", &[13]),
    ("SpaceToDepth", &[13]),
    ("Split", &[2, 11, 13, 18]),
    ("Sqrt", &[6, 13]),
    ("Squeeze", &[11, 13, 21]),
    ("Sub", &[6, 7, 13, 14]),
    ("Sum", &[6, 8, 13]),
    ("Tanh", &[6, 13]),
    ("Tile", &[6, 13]),
    ("TopK", &[10, 11]),
    ("Transpose", &[13, 21]),
    ("Unsqueeze", &[11, 13, 21]),
    ("Upsample", &[7, 9, 10]),
    ("Where", &[16]),
    ("Xor", &[7]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::ModelBuilder;
    use crate::ir::diff::model_diff;
    use crate::ir::TypeInfo;
    use crate::passes::testing::{check, op_types};

    const PASS: &str = "raise-opset";

    fn f32s(dims: &[i64]) -> Tensor {
        let n: i64 = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_f32(dims.to_vec(), &v)
    }

    fn raised(m: &Model, to: i64) -> (Model, serde_json::Value) {
        let mut out = m.clone();
        let report = raise(&mut out, to).unwrap_or_else(|e| panic!("{e:#}"));
        (out, report)
    }

    fn attrs_of(m: &Model, op_type: &str) -> Vec<Vec<String>> {
        let g = &m.graph;
        g.op_order()
            .unwrap()
            .into_iter()
            .filter_map(|id| g.op(id))
            .filter(|op| op.op_type == op_type)
            .map(|op| op.attributes.iter().map(|a| a.name.clone()).collect())
            .collect()
    }

    fn ints_attr(name: &str, v: &[i64]) -> Attribute {
        Attribute::ints(name, v)
    }

    /// x[1,3,1,4] → Squeeze{axes=[0,2]} → Unsqueeze{axes=[1]} → Relu, at 12.
    #[test]
    fn squeeze_and_unsqueeze_axes_become_inputs() {
        let mut b = ModelBuilder::new(12);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 1, 4]);
        let s = b.op("Squeeze", &[x], vec![ints_attr("axes", &[0, 2])], "s");
        let u = b.op("Unsqueeze", &[s], vec![ints_attr("axes", &[1])], "u");
        let y = b.op("Relu", &[u], vec![], "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__squeeze-unsqueeze", &m, PASS);
        assert_eq!(after.opset(""), Some(13));
        assert!(attrs_of(&after, "Squeeze")[0].is_empty());
        assert!(attrs_of(&after, "Unsqueeze")[0].is_empty());
        let (_, report) = raised(&m, 13);
        assert_eq!(report["rewritten"]["Squeeze"], 1);
        assert_eq!(report["rewritten"]["Unsqueeze"], 1);
        assert_eq!(report["from"], 12);
    }

    /// Split{split=[2,3]} then ReduceSum with and without axes, at 11.
    #[test]
    fn split_and_reduce_sum_attributes_become_inputs() {
        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[2, 5, 3]);
        let parts = b.op_n(
            "Split",
            &[Some(x)],
            vec![Attribute::int("axis", 1), ints_attr("split", &[2, 3])],
            &["p0", "p1"],
        );
        let r0 = b.op(
            "ReduceSum",
            &[parts[0]],
            vec![ints_attr("axes", &[1]), Attribute::int("keepdims", 0)],
            "r0",
        );
        let r1 = b.op("ReduceSum", &[parts[1]], vec![], "r1");
        b.output(r0, DataType::FLOAT);
        b.output(r1, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__split-reducesum", &m, PASS);
        assert_eq!(attrs_of(&after, "Split"), [["axis"]]);
        assert_eq!(attrs_of(&after, "ReduceSum"), [vec!["keepdims"], vec![]]);
    }

    /// At 18 the other Reduce ops take axes as an input too, and a Split
    /// without sizes says how many outputs it makes.
    #[test]
    fn reduce_axes_and_split_num_outputs_at_18() {
        let mut b = ModelBuilder::new(12);
        let x = b.input("x", DataType::FLOAT, &[2, 6, 3]);
        let parts = b.op_n(
            "Split",
            &[Some(x)],
            vec![Attribute::int("axis", 1)],
            &["p0", "p1"],
        );
        let m0 = b.op(
            "ReduceMean",
            &[parts[0]],
            vec![ints_attr("axes", &[-1])],
            "m0",
        );
        let m1 = b.op(
            "ReduceMax",
            &[parts[1]],
            vec![Attribute::int("keepdims", 0)],
            "m1",
        );
        b.output(m0, DataType::FLOAT);
        b.output(m1, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__reduce-split-18", &m, "raise-opset{to=18}");
        assert_eq!(after.opset(""), Some(18));
        assert_eq!(attrs_of(&after, "Split"), [["axis", "num_outputs"]]);
        assert_eq!(attrs_of(&after, "ReduceMean"), [Vec::<String>::new()]);
        // Up to 13 only ReduceSum changed: ReduceMean keeps its attribute.
        let (at13, _) = raised(&m, 13);
        assert_eq!(attrs_of(&at13, "ReduceMean"), [["axes"]]);
        assert_eq!(attrs_of(&at13, "Split"), [["axis"]]);
    }

    #[test]
    fn dropout_ratio_becomes_an_input() {
        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let d = b.op("Dropout", &[x], vec![Attribute::float("ratio", 0.3)], "d");
        let y = b.op("Relu", &[d], vec![], "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__dropout", &m, PASS);
        assert!(attrs_of(&after, "Dropout")[0].is_empty());
    }

    /// Opset 9 (the caffe2 exports in onnx's test data): pools gain
    /// `ceil_mode` at 10 with floor as default, and Dropout's mask becomes
    /// bool, which matters only when something reads it.
    #[test]
    fn opset_9_pools_and_dropout_convert_unless_the_mask_is_read() {
        let mut b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[1, 1, 4, 4]);
        let k = Attribute::ints("kernel_shape", &[2, 2]);
        let m = b.op("MaxPool", &[x], vec![k.clone()], "m");
        let a = b.op("AveragePool", &[m], vec![k], "a");
        let d = b.op_n("Dropout", &[Some(a)], vec![], &["d", "mask"]);
        b.output(d[0], DataType::FLOAT);
        let model = b.build().unwrap();
        let (after, _) = raised(&model, 13);
        assert_eq!(after.opset(""), Some(13));
        assert_eq!(attrs_of(&after, "MaxPool"), [["kernel_shape"]]);

        b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let d = b.op_n("Dropout", &[Some(x)], vec![], &["d", "mask"]);
        b.output(d[0], DataType::FLOAT);
        b.output(d[1], DataType::FLOAT);
        let model = b.build().unwrap();
        let err = format!("{:#}", raise(&mut model.clone(), 13).unwrap_err());
        assert!(err.contains("Dropout whose mask is read"), "{err}");
    }

    /// Before 13, Softmax(axis=1) on [2,3,4] normalises over 12 values per
    /// row; from 13 over 3. On the last axis both agree.
    #[test]
    fn softmax_off_the_last_axis_is_wrapped_to_keep_its_meaning() {
        let mut b = ModelBuilder::new(12);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let w = b.init("w", f32s(&[4, 4]));
        let h = b.op("MatMul", &[x, w], vec![], "h");
        let s = b.op("Softmax", &[h], vec![Attribute::int("axis", 1)], "s");
        let l = b.op("LogSoftmax", &[h], vec![Attribute::int("axis", 2)], "l");
        let t = b.op("Softmax", &[h], vec![Attribute::int("axis", -1)], "t");
        b.output(s, DataType::FLOAT);
        b.output(l, DataType::FLOAT);
        b.output(t, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__softmax", &m, PASS);
        assert_eq!(
            op_types(&after),
            [
                "MatMul",
                "LogSoftmax",
                "Softmax",
                "Shape",
                "Flatten",
                "Softmax",
                "Reshape"
            ]
        );
        let (_, report) = raised(&m, 13);
        assert_eq!(report["rewritten"], json!({ "Softmax": 1 }));
        // The check has teeth: tract gives Softmax-12 its 2-D meaning, so
        // only relabelling the opset changes the outputs.
        let mut relabelled = m.clone();
        relabelled.opset_import[0].version = Some(13);
        assert!(crate::passes::testing::max_rel_err(&m, &relabelled) > 0.01);
    }

    /// The default axis changed from 1 to -1: it is written out, and on a
    /// rank-2 input (whose rank the file gives) nothing else changes.
    #[test]
    fn softmax_default_axis_is_written_out() {
        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[2, 5]);
        let s = b.op("Softmax", &[x], vec![], "s");
        let h = b.op("Hardmax", &[x], vec![], "h");
        b.output(s, DataType::FLOAT);
        b.output(h, DataType::FLOAT);
        let m = b.build().unwrap();
        let (after, report) = raised(&m, 13);
        assert_eq!(op_types(&after), ["Softmax", "Hardmax"]);
        for op in ["Softmax", "Hardmax"] {
            assert_eq!(attrs_of(&after, op), [["axis"]]);
        }
        assert_eq!(report["rewritten"], json!({ "Hardmax": 1, "Softmax": 1 }));
    }

    /// Pad-2 and Clip-6 (opset 10): attributes become inputs; Clip's
    /// defaults are written out.
    #[test]
    fn pad_and_clip_attributes_become_inputs_from_opset_10() {
        let mut b = ModelBuilder::new(10);
        let x = b.input("x", DataType::FLOAT, &[1, 2, 3, 3]);
        let p = b.op(
            "Pad",
            &[x],
            vec![
                ints_attr("pads", &[0, 0, 1, 1, 0, 0, 1, 1]),
                Attribute::float("value", 0.5),
            ],
            "p",
        );
        let c = b.op("Clip", &[p], vec![Attribute::float("max", 0.25)], "c");
        b.output(c, DataType::FLOAT);
        let mut m = b.build().unwrap();
        // Clip needs its input's type.
        let pad = m.graph.find_value("p").unwrap();
        let mut patch = Patch::new("type");
        patch.set_type(pad, TypeInfo::tensor(DataType::FLOAT, &[1, 2, 5, 5]));
        patch.apply(&mut m.graph).unwrap();
        let after = check("raise-opset__pad-clip-10", &m, PASS);
        assert!(attrs_of(&after, "Pad")[0].is_empty());
        assert!(attrs_of(&after, "Clip")[0].is_empty());
    }

    /// A branch: Squeeze{axes=[0]} of a [1,3] constant, at `opset`.
    fn branch(opset: i64, value: f32) -> Graph {
        let mut b = ModelBuilder::new(opset);
        let c = b.init(
            "c",
            Tensor::from_f32(vec![1, 3], &[value, 2.0 * value, -value]),
        );
        let s = b.op("Squeeze", &[c], vec![ints_attr("axes", &[0])], "s");
        b.output(s, DataType::FLOAT);
        b.build().unwrap().graph
    }

    #[test]
    fn subgraphs_are_converted() {
        let mut b = ModelBuilder::new(12);
        let cond = b.input("cond", DataType::BOOL, &[]);
        let mut then_branch = branch(12, 1.0);
        let mut else_branch = branch(12, -3.0);
        // Names are unique across the model.
        for (g, suffix) in [(&mut then_branch, "then"), (&mut else_branch, "else")] {
            for id in g.node_ids().collect::<Vec<_>>() {
                for v in &mut g.node_mut(id).outputs {
                    v.name = format!("{}_{suffix}", v.name);
                }
            }
        }
        let branches = vec![
            Attribute::new("then_branch", AttrValue::Graph(Box::new(then_branch))),
            Attribute::new("else_branch", AttrValue::Graph(Box::new(else_branch))),
        ];
        // The name the then-branch's new constant would take is taken
        // outside it: the constant must not shadow it.
        let y = b.op("If", &[cond], branches, "s_then_axes");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let (after, report) = raised(&m, 13);
        assert_eq!(report["rewritten"], json!({ "Squeeze": 2 }));
        let mut squeezes = 0;
        after.graph.visit_graphs(&mut |g| {
            for id in g.node_ids() {
                if let Some(op) = g.op(id).filter(|op| op.is("Squeeze")) {
                    assert!(op.attributes.is_empty() && op.arity == 2);
                    assert!(g.input(id, 1).and_then(|o| g.const_tensor(o)).is_some());
                    squeezes += 1;
                }
            }
        });
        assert_eq!(squeezes, 2);
        check("raise-opset__if-branches", &m, PASS);
    }

    /// Anything the table does not cover stops the pass, naming the
    /// operator and versions, and leaves the model as it was.
    #[test]
    fn refuses_what_it_cannot_convert() {
        let mut b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[1, 1, 2, 2]);
        let s = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
        let u = b.op("Upsample", &[x, s], vec![], "u");
        b.output(u, DataType::FLOAT);
        let m = b.build().unwrap();
        let mut out = m.clone();
        let err = format!("{:#}", raise(&mut out, 13).unwrap_err());
        assert!(
            err == "raise-opset: cannot raise opset 9 to 13: Upsample (changed at opset 10) has no conversion",
            "{err}"
        );
        assert_eq!(model_diff(&m, &out), "no change\n");

        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[1, 1, 2, 2]);
        let roi = b.init("roi", Tensor::from_f32(vec![0], &[]));
        let s = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
        let mode = Attribute::new(
            "coordinate_transformation_mode",
            AttrValue::String(bytes::Bytes::from_static(b"tf_half_pixel_for_nn")),
        );
        let r = b.op("Resize", &[x, roi, s], vec![mode], "r");
        b.output(r, DataType::FLOAT);
        let m = b.build().unwrap();
        let err = format!("{:#}", raise(&mut m.clone(), 13).unwrap_err());
        assert!(err.contains("tf_half_pixel_for_nn"), "{err}");
        assert!(
            err.starts_with("raise-opset: cannot raise opset 11 to 13"),
            "{err}"
        );
        // The pass (through the pipeline) fails the same way.
        let e = crate::pipeline::Pipeline::parse(PASS)
            .unwrap()
            .run(&mut m.clone(), &Default::default(), &mut |_| {})
            .unwrap_err();
        assert!(format!("{e:#}").contains("tf_half_pixel_for_nn"), "{e:#}");
        assert!(crate::pipeline::Pipeline::parse("raise-opset{to=12}").is_err());
        assert!(crate::pipeline::Pipeline::parse("raise-opset{to=22}").is_err());
    }

    #[test]
    fn a_model_at_or_above_the_target_is_left_alone() {
        for opset in [13, 15] {
            let mut b = ModelBuilder::new(opset);
            let x = b.input("x", DataType::FLOAT, &[1, 3]);
            let y = b.op("Softmax", &[x], vec![], "y");
            b.output(y, DataType::FLOAT);
            let m = b.build().unwrap();
            let (after, report) = raised(&m, 13);
            assert_eq!(model_diff(&m, &after), "no change\n");
            assert_eq!(report["changed"], false, "{report}");
            assert!(report["note"]
                .as_str()
                .unwrap()
                .contains("already at opset"));
        }
    }

    /// Other domains keep their operators; the opset import of the default
    /// domain alone changes, and IR is raised to what the opset needs.
    #[test]
    fn other_domains_stay_and_ir_version_follows() {
        let mut b = ModelBuilder::new(11);
        let x = b.input("x", DataType::FLOAT, &[1, 3]);
        let y = b.op("Squeeze", &[x], vec![ints_attr("axes", &[0])], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        let id = y.node;
        m.graph.node_mut(id).as_op_mut().unwrap().domain = Some("com.example".into());
        m.opset_import.push(crate::ir::OpsetId {
            domain: Some("com.example".into()),
            version: Some(1),
        });
        m.ir_version = Some(6);
        let (after, report) = raised(&m, 13);
        assert_eq!(report["rewritten"], json!({}));
        assert_eq!(attrs_of(&after, "Squeeze"), [["axes"]]);
        assert_eq!(after.opset("com.example"), Some(1));
        assert_eq!(after.opset(""), Some(13));
        assert_eq!(after.ir_version, Some(7));
        assert_eq!(raised(&m, 19).0.ir_version, Some(9));
        assert_eq!(raised(&m, 21).0.ir_version, Some(10));
    }

    /// The table is sorted (binary search) and lists what the conversions
    /// rely on.
    #[test]
    fn schema_table() {
        assert!(SCHEMA_CHANGES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(schema_changes("Squeeze"), [11, 13, 21]);
        assert_eq!(schema_changes("Softmax"), [11, 13]);
        assert_eq!(schema_changes("Dropout"), [6, 7, 10, 12, 13]);
        assert!(schema_changes("Conv").contains(&11));
        assert!(schema_changes("NoSuchOp").is_empty());
        // Every change from 11 to 21 of an operator the PP-OCR and silero
        // models use is covered.
        for op in [
            "Add",
            "Clip",
            "Concat",
            "Conv",
            "Squeeze",
            "ReduceMean",
            "Softmax",
            "Resize",
        ] {
            for &v in schema_changes(op)
                .iter()
                .filter(|&&v| v > 11 && op != "Conv")
            {
                assert!(change(op, v).is_some(), "{op}-{v}");
            }
        }
    }

    /// Opset 10 → 13 through the opset-11 re-specification of auto_pad:
    /// explicit pads and stride-1 SAME carry over; strided SAME is refused.
    #[test]
    fn conv_and_pools_from_opset_10() {
        let conv = |b: &mut ModelBuilder, x, w, auto_pad: &'static [u8], strides: &[i64], out| {
            let attrs = vec![
                Attribute::new(
                    "auto_pad",
                    AttrValue::String(bytes::Bytes::from_static(auto_pad)),
                ),
                ints_attr("strides", strides),
            ];
            b.op("Conv", &[x, w], attrs, out)
        };
        let mut b = ModelBuilder::new(10);
        let x = b.input("x", DataType::FLOAT, &[1, 2, 6, 6]);
        let w = b.init("w", f32s(&[2, 2, 3, 3]));
        let c = conv(&mut b, x, w, b"SAME_UPPER", &[1, 1], "c");
        let p = b.op(
            "MaxPool",
            &[c],
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
            ],
            "p",
        );
        b.output(p, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__conv-pool-10", &m, PASS);
        assert_eq!(op_types(&after), ["Conv", "MaxPool"]);

        let mut b = ModelBuilder::new(10);
        let x = b.input("x", DataType::FLOAT, &[1, 2, 6, 6]);
        let w = b.init("w", f32s(&[2, 2, 3, 3]));
        let c = conv(&mut b, x, w, b"SAME_LOWER", &[2, 2], "c");
        b.output(c, DataType::FLOAT);
        let m = b.build().unwrap();
        let err = format!("{:#}", raise(&mut m.clone(), 13).unwrap_err());
        assert!(err.contains("Conv with auto_pad=SAME_*"), "{err}");
    }

    /// Slice-1 (opset 9): starts, ends and axes become inputs.
    #[test]
    fn slice_attributes_become_inputs_from_opset_9() {
        let mut b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[2, 5, 4]);
        let attrs = vec![
            ints_attr("starts", &[1, -3]),
            ints_attr("ends", &[100, -1]),
            ints_attr("axes", &[1, 2]),
        ];
        let s = b.op("Slice", &[x], attrs, "s");
        let t = b.op(
            "Slice",
            &[s],
            vec![
                ints_attr("starts", &[0, 0, 1]),
                ints_attr("ends", &[1, 9, 9]),
            ],
            "t",
        );
        b.output(t, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("raise-opset__slice-9", &m, PASS);
        assert!(attrs_of(&after, "Slice").iter().all(|a| a.is_empty()));
    }

    fn string(name: &str, v: &'static [u8]) -> Attribute {
        Attribute::new(name, AttrValue::String(bytes::Bytes::from_static(v)))
    }

    /// The conversions past 13 that write an attribute out, and the
    /// refusals that depend on the node.
    #[test]
    fn later_opsets_write_out_old_defaults_or_refuse() {
        let mut b = ModelBuilder::new(15);
        let x = b.input("x", DataType::FLOAT, &[1, 2, 8, 8]);
        let rois = b.input("rois", DataType::FLOAT, &[3, 4]);
        let idx = b.input("idx", DataType::INT64, &[3]);
        let r = b.op("RoiAlign", &[x, rois, idx], vec![], "r");
        b.output(r, DataType::FLOAT);
        let m = b.build().unwrap();
        let (at16, _) = raised(&m, 16);
        assert_eq!(
            attrs_of(&at16, "RoiAlign"),
            [["coordinate_transformation_mode"]]
        );

        let mut b = ModelBuilder::new(16);
        let x2 = b.input("x", DataType::FLOAT, &[1, 2, 8, 8]);
        let g = b.input("grid", DataType::FLOAT, &[1, 4, 4, 2]);
        let s = b.op(
            "GridSample",
            &[x2, g],
            vec![string("mode", b"bicubic")],
            "s",
        );
        b.output(s, DataType::FLOAT);
        let gm = b.build().unwrap();
        let (at20, _) = raised(&gm, 20);
        let op = at20.graph.op(s.node).unwrap();
        assert!(
            matches!(&op.attr("mode").unwrap().value, AttrValue::String(v) if v.as_ref() == b"cubic")
        );

        // QuantizeLinear-19 wants y_scale of x's type: known float only.
        let mut b = ModelBuilder::new(13);
        let x3 = b.input("x", DataType::FLOAT, &[4]);
        let sc = b.init("scale", Tensor::from_f32(vec![], &[0.1]));
        let q = b.op("QuantizeLinear", &[x3, sc], vec![], "q");
        b.output(q, DataType::UINT8);
        let qm = b.build().unwrap();
        assert_eq!(raised(&qm, 19).1["rewritten"], json!({}));
        let mut unknown = qm.clone();
        unknown.graph.inputs[0].info.ty = None;
        let err = format!("{:#}", raise(&mut unknown, 19).unwrap_err());
        assert!(
            err.contains("QuantizeLinear (changed at opset 19)"),
            "{err}"
        );

        // BatchNormalization-9 with its training outputs named.
        let mut b = ModelBuilder::new(9);
        let x4 = b.input("x", DataType::FLOAT, &[1, 2, 3, 3]);
        let p: Vec<_> = ["g", "b", "m", "v"]
            .iter()
            .map(|n| b.init(n, Tensor::from_f32(vec![2], &[1.0, 1.0])))
            .collect();
        let outs = b.op_n(
            "BatchNormalization",
            &[Some(x4), Some(p[0]), Some(p[1]), Some(p[2]), Some(p[3])],
            vec![],
            &["y", "mean"],
        );
        b.output(outs[0], DataType::FLOAT);
        b.output(outs[1], DataType::FLOAT);
        let bn = b.build().unwrap();
        let err = format!("{:#}", raise(&mut bn.clone(), 14).unwrap_err());
        assert!(
            err.contains("BatchNormalization with training outputs"),
            "{err}"
        );
        assert!(raise(&mut bn.clone(), 13).is_ok());
    }
}
