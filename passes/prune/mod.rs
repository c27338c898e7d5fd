//! # prune
//!
//! **What:** magnitude pruning, θ' = θ·1(|θ| > τ), of the constant f32
//! weights of `Conv`, `ConvTranspose`, `Gemm` and `MatMul` (input 1), in the
//! main graph. τ is given (`threshold`), or chosen so that each layer
//! (`scope=layer`) or all layers together (`scope=global`, by magnitude
//! across layers) reach the target `sparsity`. With `pattern=N:M` it does
//! semi-structured pruning instead: of every M consecutive weights along the
//! input dimension (a Conv's input channels, a Gemm/MatMul's K) it keeps
//! the N largest, the layout TensorRT's sparse kernels take (2:4); a
//! validator then checks every group of every pruned layer and the report
//! cites it.
//!
//! **Why:** sparse weights compress well, and N:M sparsity runs faster on
//! GPUs with sparse tensor cores (TensorRT, Ampere and later). Zeros do not
//! make dense kernels faster: tract and ONNX Runtime run a pruned model at
//! the speed of the dense one (measured; README, Pruning), and the report says so.
//! What the zeros buy on the CPU is a smaller compressed file: the report
//! measures it (DEFLATE of the encoded model, before and after).
//!
//! ```text
//! y = Conv(x, w: f32[16,8,3,3] (0% zeros))   →   y = Conv(x, w: f32[16,8,3,3] (50% zeros))
//! ```
//!
//! Ties are broken by position (the earlier weight is zeroed first), so the
//! same model and options give the same bytes. A weight initializer shared
//! by several layers is pruned once, as the layer that uses it first.
//! The first and last layers (in graph order) are skipped by default, and
//! so are layers under `min-params` weights. Weights in `Constant` nodes are
//! lifted to initializers first. With `store=sparse`, a pruned weight is
//! written as an ONNX `sparse_initializer` (nonzero values and int64
//! indices) when that is smaller, i.e. past 2/3 zeros: ONNX Runtime loads
//! it (as a dense initializer); TensorRT and tract want dense weights
//! (onnx-opt densifies it for its own runs in tract). `onnx.checker` accepts
//! the file, but its full check fails: onnx's shape inference types a sparse
//! initializer as a sparse tensor, which no dense operator takes.
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them); `pattern` overrides `threshold`, which overrides
//! `sparsity`.

#[cfg(test)]
mod tests;

use crate::ir::{DataType, Graph, Model, NodeId, Patch, Tensor};
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{List, Options, Pass, PassContext, Pipeline};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::io::Write;

pub const INFO: PassInfo = PassInfo {
    name: "prune",
    summary:
        "magnitude pruning (θ·1(|θ|>τ)) or N:M semi-structured sparsity of Conv/Gemm/MatMul weights",
    exact: false,
    data: DataUse::None,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    struct Opts {
        sparsity: f64 = "sparsity", "0.5", "target fraction of zeroed weights, in [0, 1)";
        threshold: String = "threshold", "",
            "zero every |weight| <= this (>= 0); overrides sparsity";
        scope: String = "scope", "layer",
            "sparsity per layer (layer) or by magnitude across all layers (global)";
        pattern: String = "pattern", "",
            "N:M (0 < N < M): keep the N largest of every M weights along the input axis";
        ops: List = "ops", "Conv|ConvTranspose|Gemm|MatMul",
            "operators whose constant weights are pruned";
        skip: List = "skip", "", "layers whose names contain one of these (a|b) are left alone";
        skip_first_last: bool = "skip-first-last", "true", "leave the first and last layers alone";
        min_params: usize = "min-params", "1024", "leave layers with fewer weights alone";
        store: String = "store", "dense",
            "dense, or sparse: pruned weights as ONNX sparse_initializer where that is smaller";
    }
}

const OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Sparsity(f64),
    Threshold(f32),
    Pattern(usize, usize),
}

/// Parses `N:M` with 0 < N < M.
pub(crate) fn parse_pattern(text: &str) -> Result<(usize, usize)> {
    let bad = || format!("pattern='{text}' is not N:M with 0 < N < M (e.g. 2:4)");
    let (n, m) = text.split_once(':').with_context(bad)?;
    let (n, m): (usize, usize) = (
        n.trim().parse().ok().with_context(bad)?,
        m.trim().parse().ok().with_context(bad)?,
    );
    ensure!(n > 0 && n < m, "{}", bad());
    Ok((n, m))
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let o = Opts::parse(options)?;
    let (sparsity, threshold) = (o.sparsity, o.threshold);
    ensure!(
        (0.0..1.0).contains(&sparsity),
        "sparsity={sparsity} is outside [0, 1)"
    );
    let target = if !o.pattern.is_empty() {
        let (n, m) = parse_pattern(&o.pattern)?;
        Target::Pattern(n, m)
    } else if !threshold.is_empty() {
        let t: f32 = threshold
            .parse()
            .ok()
            .filter(|t: &f32| t.is_finite() && *t >= 0.0)
            .with_context(|| format!("threshold='{threshold}' is not a number >= 0"))?;
        Target::Threshold(t)
    } else {
        Target::Sparsity(sparsity)
    };
    let global = match o.scope.as_str() {
        "layer" => false,
        "global" => true,
        other => bail!("scope='{other}' is not valid (layer or global)"),
    };
    let ops = o.ops.0;
    if let Some(op) = ops.iter().find(|o| !OPS.contains(&o.as_str())) {
        bail!("ops: '{op}' is not one of {}", OPS.join(", "));
    }
    let sparse = match o.store.as_str() {
        "dense" => false,
        "sparse" => true,
        other => bail!("store='{other}' is not valid (dense or sparse)"),
    };
    Ok(Box::new(Prune {
        sparse,
        target,
        global,
        ops,
        skip: o.skip.0,
        skip_first_last: o.skip_first_last,
        min_params: o.min_params,
        lift: Pipeline::parse("lift-constants")?,
    }))
}

struct Prune {
    /// Store pruned weights as sparse initializers where that is smaller.
    sparse: bool,
    target: Target,
    global: bool,
    ops: Vec<String>,
    skip: Vec<String>,
    skip_first_last: bool,
    min_params: usize,
    lift: Pipeline,
}

/// A layer whose weight is pruned.
struct Layer {
    node: NodeId,
    label: String,
    op: String,
    weight: NodeId,
    dims: Vec<i64>,
    /// The input (reduction) axis of the weight, for N:M groups.
    input_axis: usize,
}

/// The weight's input axis: Conv `[M, C/g, k…]` → 1, ConvTranspose
/// `[C, M/g, k…]` → 0, Gemm `B` → 0 (`[K, N]`) or 1 (`transB`: `[N, K]`),
/// MatMul `[K, N]` → 0.
fn input_axis(g: &Graph, node: NodeId) -> usize {
    let op = g.op(node).expect("an operator");
    match op.op_type.as_str() {
        "Conv" => 1,
        "Gemm" if op.attr_int("transB", 0) != 0 => 1,
        _ => 0,
    }
}

impl Prune {
    fn layers(&self, g: &Graph) -> Result<(Vec<Layer>, Vec<serde_json::Value>)> {
        let mut found: Vec<Layer> = vec![];
        for id in g.op_order()? {
            let op = g.op(id).expect("an operator");
            if !op.is_default_domain() || !self.ops.contains(&op.op_type) {
                continue;
            }
            let Some(w) = g.input(id, 1) else { continue };
            let Some(t) = g.const_tensor(w) else { continue };
            let rank_ok = match op.op_type.as_str() {
                "Conv" | "ConvTranspose" => t.dims.len() >= 3,
                _ => t.dims.len() == 2,
            };
            if t.dtype != DataType::FLOAT || !rank_ok {
                continue;
            }
            if found.iter().any(|l| l.weight == w.node) {
                continue; // shared: pruned once, as its first layer
            }
            found.push(Layer {
                node: id,
                label: g.node(id).label(),
                op: op.op_type.clone(),
                weight: w.node,
                dims: t.dims.clone(),
                input_axis: input_axis(g, id),
            });
        }
        let last = found.len().saturating_sub(1);
        let mut layers = vec![];
        let mut skipped = vec![];
        for (i, l) in found.into_iter().enumerate() {
            let numel = l.dims.iter().product::<i64>() as usize;
            let reason = if self.skip_first_last && (i == 0 || i == last) {
                Some(if i == 0 { "first layer" } else { "last layer" }.to_string())
            } else if let Some(p) = self.skip.iter().find(|p| l.label.contains(p.as_str())) {
                Some(format!("skipped (matches '{p}')"))
            } else if numel < self.min_params {
                Some(format!("fewer than min-params={} weights", self.min_params))
            } else if let Target::Pattern(_, m) = self.target {
                let k = l.dims[l.input_axis] as usize;
                (k % m != 0).then(|| format!("input axis of {k} is not a multiple of {m}"))
            } else {
                None
            };
            match reason {
                Some(reason) => skipped.push(
                    json!({ "layer": l.label, "op": l.op, "params": numel, "reason": reason }),
                ),
                None => layers.push(l),
            }
        }
        Ok((layers, skipped))
    }
}

/// Keeps the `n` largest |w| of every `m` consecutive weights along `axis`
/// (ties: the earlier one is zeroed first). `dims[axis]` must divide by `m`.
pub(crate) fn nm_mask(values: &mut [f32], dims: &[i64], axis: usize, n: usize, m: usize) {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let outer = values.len() / (d * inner).max(1);
    let mut group: Vec<usize> = Vec::with_capacity(m);
    for o in 0..outer {
        for start in (0..d).step_by(m) {
            for i in 0..inner {
                let at = |j: usize| (o * d + start + j) * inner + i;
                group.clear();
                group.extend(0..m);
                // Smallest first; among equals the earlier first.
                group.sort_by(|&a, &b| {
                    values[at(a)]
                        .abs()
                        .total_cmp(&values[at(b)].abs())
                        .then(a.cmp(&b))
                });
                for &j in &group[..m - n] {
                    values[at(j)] = 0.0;
                }
            }
        }
    }
}

/// The N:M validator: every `m` consecutive weights along `axis` hold at
/// most `n` nonzeros. Returns the number of groups that break the rule.
pub(crate) fn nm_violations(
    values: &[f32],
    dims: &[i64],
    axis: usize,
    n: usize,
    m: usize,
) -> usize {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    if d % m != 0 {
        return values.len();
    }
    let outer = values.len() / (d * inner).max(1);
    let mut bad = 0;
    for o in 0..outer {
        for start in (0..d).step_by(m) {
            for i in 0..inner {
                let nonzero = (0..m)
                    .filter(|j| values[(o * d + start + j) * inner + i] != 0.0)
                    .count();
                bad += usize::from(nonzero > n);
            }
        }
    }
    bad
}

/// The magnitude below which (inclusive) `k` of `mags` are, ties broken by
/// position: returns the indices to zero.
fn smallest(mags: &[(f32, usize)], k: usize) -> Vec<usize> {
    let mut order: Vec<&(f32, usize)> = mags.iter().collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order[..k.min(order.len())].iter().map(|x| x.1).collect()
}

/// DEFLATE size of `bytes` (level 6), what a zip of the file would take.
fn deflated_len(bytes: &[u8]) -> Result<usize> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes)?;
    Ok(e.finish()?.len())
}

impl Pass for Prune {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        self.lift.run_nested(model, cx)?;
        let before = crate::onnx::encode(model)?;
        let g = &model.graph;
        let (layers, skipped) = self.layers(g)?;
        let weights: Vec<Vec<f32>> = layers
            .iter()
            .map(|l| {
                let o = g.input(l.node, 1).expect("a weight");
                g.const_tensor(o).expect("constant").to_f32()
            })
            .collect::<Result<_>>()?;
        let mut pruned = weights.clone();
        match self.target {
            Target::Pattern(n, m) => {
                for (w, l) in pruned.iter_mut().zip(&layers) {
                    nm_mask(w, &l.dims, l.input_axis, n, m);
                }
            }
            Target::Threshold(t) => {
                for w in pruned.iter_mut() {
                    w.iter_mut().filter(|x| x.abs() <= t).for_each(|x| *x = 0.0);
                }
            }
            Target::Sparsity(s) if self.global => {
                // One ranking across layers: (|w|, layer, index) flattened.
                let mut offsets = vec![0];
                let mut mags = vec![];
                for w in &pruned {
                    let base = *offsets.last().expect("non-empty");
                    mags.extend(w.iter().enumerate().map(|(i, x)| (x.abs(), base + i)));
                    offsets.push(base + w.len());
                }
                let k = (s * mags.len() as f64).floor() as usize;
                for flat in smallest(&mags, k) {
                    let layer = offsets.partition_point(|&o| o <= flat) - 1;
                    pruned[layer][flat - offsets[layer]] = 0.0;
                }
            }
            Target::Sparsity(s) => {
                for w in pruned.iter_mut() {
                    let mags: Vec<(f32, usize)> =
                        w.iter().enumerate().map(|(i, x)| (x.abs(), i)).collect();
                    let k = (s * w.len() as f64).floor() as usize;
                    for i in smallest(&mags, k) {
                        w[i] = 0.0;
                    }
                }
            }
        }
        let mut report = vec![];
        let mut patch = Patch::new("prune");
        let (mut total, mut zeros) = (0usize, 0usize);
        let mut nm_checked = 0;
        let mut sparse_stored = 0;
        for ((l, old), new) in layers.iter().zip(&weights).zip(&pruned) {
            let zeroed = old
                .iter()
                .zip(new)
                .filter(|(a, b)| **a != 0.0 && **b == 0.0)
                .count();
            let z = new.iter().filter(|x| **x == 0.0).count();
            total += new.len();
            zeros += z;
            let mut entry = json!({
                "layer": l.label,
                "op": l.op,
                "params": new.len(),
                "zeroed": zeroed,
                "sparsity": z as f64 / new.len().max(1) as f64,
            });
            if let Target::Pattern(n, m) = self.target {
                let bad = nm_violations(new, &l.dims, l.input_axis, n, m);
                ensure!(
                    bad == 0,
                    "node {}: {bad} groups break the {n}:{m} pattern (a bug: please report it)",
                    l.label
                );
                nm_checked += 1;
                entry["pattern_valid"] = json!(true);
            }
            report.push(entry);
            if zeroed == 0 {
                continue;
            }
            let outlet = g.input(l.node, 1).expect("a weight");
            let name = g.outlet_name(outlet).to_string();
            patch.remove(l.weight);
            let dense = Tensor::from_f32(l.dims.clone(), new);
            // Sparse form: 4 bytes per value and 8 per int64 index, so it is
            // smaller only past 2/3 zeros.
            let nonzero = new.len() - z;
            let src = if self.sparse && nonzero * 12 < new.len() * 4 {
                sparse_stored += 1;
                if let Some(entry) = report.last_mut() {
                    entry["stored"] = json!("sparse_initializer");
                }
                let sparse = crate::onnx::sparse_from_dense(&name, &dense)?;
                patch.add_sparse_const(&name, sparse)
            } else {
                patch.add_const(&name, dense)
            };
            patch.shunt(outlet, src);
        }
        patch.apply(&mut model.graph)?;
        let after = crate::onnx::encode(model)?;
        let (zb, za) = (deflated_len(&before)?, deflated_len(&after)?);
        let mut out = json!({
            "layers_pruned": report.len(),
            "params": total,
            "zeros": zeros,
            "sparsity": zeros as f64 / total.max(1) as f64,
            "layers": report,
            "skipped": skipped,
            "file_bytes": after.len(),
            "deflate_bytes_before": zb,
            "deflate_bytes_after": za,
            "speed": "unstructured zeros do not speed up dense kernels in tract or onnxruntime (measured: see the README, Pruning); use prune-channels for speed",
            "buys": "a smaller compressed file (deflate_bytes_*), or with store=sparse a smaller file as it is (sparse_initializer: ONNX Runtime reads it; TensorRT and tract want dense weights)",
        });
        if self.sparse {
            out["sparse_initializers"] = json!(sparse_stored);
        }
        match self.target {
            Target::Pattern(n, m) => {
                out["pattern"] = json!(format!("{n}:{m}"));
                out["pattern_check"] = json!(format!(
                    "validated: in all {nm_checked} pruned layers every {m} consecutive weights along the input axis hold at most {n} nonzeros"
                ));
                out["speed"] = json!(format!(
                    "{n}:{m} sparsity is faster only on sparse tensor cores (TensorRT with sparsity enabled, Ampere or later GPUs); tract and onnxruntime run it at dense speed"
                ));
            }
            Target::Threshold(t) => out["threshold"] = json!(t),
            Target::Sparsity(s) => {
                out["target_sparsity"] = json!(s);
                out["scope"] = json!(if self.global { "global" } else { "layer" });
            }
        }
        Ok(out)
    }
}
