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
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them).

use crate::ir::patch::Src;
use crate::ir::{
    AttrValue, Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor,
    TensorData,
};
use crate::passes::PassInfo;
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};

mod convert;
mod table;
#[cfg(test)]
mod tests;

use crate::ir::rank::{ranks, Ranks};
use convert::*;
use table::{change, schema_changes};

pub const INFO: PassInfo = PassInfo::exact(
    "raise-opset",
    "raise the ai.onnx opset (default to 13), converting operators whose signature changed",
    build,
)
.with_options(Opts::TABLE);

crate::pass_options! {
    struct Opts {
        to: i64 = "to", "13", "target default-domain opset, 13 to 21";
    }
}

const MIN_TO: i64 = 13;
const MAX_TO: i64 = 21;

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let Opts { to } = Opts::parse(options)?;
    ensure!(
        (MIN_TO..=MAX_TO).contains(&to),
        "to={to} is outside {MIN_TO}..={MAX_TO}"
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
