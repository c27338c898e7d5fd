//! # fuse-bn
//!
//! **What:** folds an inference `BatchNormalization` (opset 7+, constant
//! scale, B, mean and var) into the weights and bias of the operator that
//! produces its input: `Conv` (grouped and depthwise included),
//! `ConvTranspose` (any group), `Gemm` (any `transB`, `alpha`, `beta`, and
//! bias `C` shape) and `MatMul` with a constant 2-D weight and an input of
//! known rank 2, which becomes a `Gemm` carrying the new bias. Subgraphs included.
//!
//! **Why:** exporters keep BatchNorm as its own node after every convolution;
//! at inference it is a per-channel affine map, so folded into the weights it
//! costs nothing, and ONNX Runtime / TensorRT run one kernel instead of two.
//!
//! ```text
//! y = Conv(x, w, b) {group=g}                 y = Conv(x, w', b') {group=g}
//! z = BatchNormalization(y, γ, β, μ, σ²)  →   (z's uses now read y)
//! ```
//! with `s = γ/√(σ²+ε)`, `w'[o] = w[o]·s[o]` for every output channel `o`,
//! and `b' = (b−μ)·s + β` (`b = 0` when the Conv has no bias). Arithmetic is
//! in f64, written as f32, so outputs change only by rounding.
//!
//! The BatchNorm is folded only when its input has no other use and is not a
//! graph output, its other outputs are unused, it is not in training mode
//! (`training_mode=1`) and is per-channel (`spatial=0` is left alone), and the
//! weights are f32 initializers. A weight initializer shared with another node
//! is copied, not changed. `MatMul` becomes `Gemm` rather than `MatMul + Add`:
//! the fold needs the rank to be 2 anyway (BatchNorm's channel axis is 1,
//! MatMul's output features are the last axis), and then one `Gemm` is one
//! node where the alternative is two. Initializers left unused are removed when
//! only the fused nodes used them.
//!
//! The per-channel affine fold here (`fold_affine`) is shared with `fuse-bias`.
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{Attribute, DataType, Graph, NodeId, Outlet, Patch, Tensor};
use crate::passes::{DataUse, PassInfo, RulePass};
use crate::pipeline::{Options, Pass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo {
    name: "fuse-bn",
    summary: "fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul",
    exact: true,
    data: DataUse::None,
    options: &[],
    build,
};

fn build(_: &Options) -> Result<Box<dyn Pass>> {
    Ok(Box::new(RulePass {
        rules: RULES,
        count: "fused",
    }))
}

pub const RULES: &[(&str, Rule)] = &[("batchnorm", batchnorm)];

// BN(y) = s·(y − μ) + β = s·y + (β − μ·s), s = γ/√(σ²+ε), per channel (axis 1).
// With y = P(x) one of the producers of `fold_affine`, s·y + t = P'(x).
fn batchnorm(ctx: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
    let op = g.op(id).expect("rules see operators");
    if !op.is("BatchNormalization") || ctx.opset < 7 {
        return Ok(None);
    }
    if op.attr_int("training_mode", 0) != 0 || op.attr_int("spatial", 1) == 0 {
        return Ok(None);
    }
    let node = g.node(id);
    if (1..node.outputs.len()).any(|slot| g.is_used(Outlet::new(id, slot))) {
        return Ok(None);
    }
    let Some(y) = g.input(id, 0) else {
        return Ok(None);
    };
    let Some(producer) = Producer::analyse(g, y.node, true) else {
        return Ok(None);
    };
    if !sole_use(g, y, id) {
        return Ok(None);
    }
    let channels = producer.channels;
    let params: Option<Vec<Vec<f64>>> = (1..5)
        .map(|slot| {
            let t = g.const_tensor(g.input(id, slot)?)?;
            let v = t.to_f32().ok()?;
            (v.len() == channels).then(|| v.into_iter().map(f64::from).collect())
        })
        .collect();
    let Some(params) = params else {
        return Ok(None);
    };
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let eps = f64::from(op.attr_float("epsilon", 1e-5));
    let s: Vec<f64> = (0..channels)
        .map(|c| gamma[c] / (var[c] + eps).sqrt())
        .collect();
    let t: Vec<f64> = (0..channels).map(|c| beta[c] - mean[c] * s[c]).collect();
    if s.iter().chain(&t).any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let mut patch = Patch::new("");
    producer.fold_affine(g, &mut patch, &s, &t);
    patch.shunt(Outlet::new(id, 0), y);
    patch.remove(id);
    remove_dead_consts(g, &mut patch, id);
    Ok(Some(patch))
}

/// `outlet`'s only use is one input of `user`, and it is not a graph output.
pub(super) fn sole_use(g: &Graph, outlet: Outlet, user: NodeId) -> bool {
    !g.is_graph_output(outlet) && matches!(g.consumers(outlet)[..], [(u, _)] if u == user)
}

/// Removes the initializers feeding `node` (which the patch removes) that
/// nothing else uses.
pub(super) fn remove_dead_consts(g: &Graph, patch: &mut Patch, node: NodeId) {
    let mut seen = vec![];
    for outlet in g.inputs(node).into_iter().flatten() {
        let dead = g.const_tensor(outlet).is_some()
            && !g.is_graph_output(outlet)
            && g.consumers(outlet).iter().all(|&(u, _)| u == node);
        if dead && !seen.contains(&outlet.node) {
            seen.push(outlet.node);
            patch.remove(outlet.node);
        }
    }
}

/// Feeds input `slot` of `user` from a new initializer `tensor`. When the old
/// initializer there is used by nothing else, it is removed and the new one
/// takes its name; otherwise (shared weights) the new one gets a name of its own.
fn replace_const(
    g: &Graph,
    patch: &mut Patch,
    user: NodeId,
    slot: usize,
    fallback_name: &str,
    tensor: Tensor,
) {
    let old = g.input(user, slot);
    let name = match old {
        Some(o) if sole_use(g, o, user) && g.const_tensor(o).is_some() => {
            patch.remove(o.node);
            g.outlet_name(o).to_string()
        }
        Some(o) => g.outlet_name(o).to_string(),
        None => fallback_name.to_string(),
    };
    let src = patch.add_const(&name, tensor);
    patch.rewire(user, slot, Some(src));
}

fn f64s(t: &Tensor) -> Option<Vec<f64>> {
    Some(t.to_f32().ok()?.into_iter().map(f64::from).collect())
}

fn to_tensor(dims: Vec<i64>, values: &[f64]) -> Tensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_f32(dims, &v)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Kind {
    /// `w: [M, C/group, k...]`, output channel = axis 0.
    Conv,
    /// `w: [C, M/group, k...]`, output channel = group·(M/group) + axis-1 index.
    ConvTranspose { group: usize },
    /// Output features = columns of `op(B)`; `B` is `[N, K]` when `trans_b`.
    Gemm { trans_b: bool },
    /// `MatMul(x: rank 2, w: [K, N])`, rewritten as `Gemm`.
    MatMul,
}

/// An operator whose output is linear in constant weights, per output
/// channel (axis 1 of its output): y[:, o, ...] = Σ w[o-slice]·x + bias[o].
pub(super) struct Producer {
    pub id: NodeId,
    pub kind: Kind,
    /// Output channels (axis 1 of the output).
    pub channels: usize,
    /// Rank of the output.
    pub out_rank: usize,
    weight_dims: Vec<i64>,
    /// Dims and values of the constant bias (`C` for Gemm), if any.
    bias: Option<(Vec<i64>, Vec<f64>)>,
    /// Gemm's `beta` (1 otherwise).
    beta: f64,
}

impl Producer {
    /// The producer at `id`, if its weights (and bias) are f32 initializers
    /// of a shape it documents. `MatMul` only when `allow_matmul`.
    pub fn analyse(g: &Graph, id: NodeId, allow_matmul: bool) -> Option<Producer> {
        let op = g.op(id)?;
        if !op.is_default_domain() || g.node(id).outputs.len() != 1 {
            return None;
        }
        let w = g.const_tensor(g.input(id, 1)?)?;
        if w.dtype != DataType::FLOAT {
            return None;
        }
        let dims = w.dims.clone();
        let bias_slot = 2;
        let (kind, channels, out_rank) = match op.op_type.as_str() {
            "Conv" if dims.len() >= 3 => (Kind::Conv, dims[0], dims.len()),
            "ConvTranspose" if dims.len() >= 3 => {
                let group = op.attr_int("group", 1);
                if group < 1 || dims[0] % group != 0 {
                    return None;
                }
                let kind = Kind::ConvTranspose {
                    group: group as usize,
                };
                (kind, dims[1] * group, dims.len())
            }
            "Gemm" if dims.len() == 2 => {
                let trans_b = op.attr_int("transB", 0) != 0;
                let n = if trans_b { dims[0] } else { dims[1] };
                (Kind::Gemm { trans_b }, n, 2)
            }
            "MatMul" if allow_matmul && dims.len() == 2 => {
                if g.known_rank(g.input(id, 0)?)? != 2 {
                    return None;
                }
                (Kind::MatMul, dims[1], 2)
            }
            _ => return None,
        };
        if channels <= 0 {
            return None;
        }
        let bias = match g.input(id, bias_slot).filter(|_| kind != Kind::MatMul) {
            None => None,
            Some(b) => {
                let t = g.const_tensor(b)?;
                if t.dtype != DataType::FLOAT {
                    return None;
                }
                Some((t.dims.clone(), f64s(t)?))
            }
        };
        let channels = channels as usize;
        match (&kind, &bias) {
            (Kind::Gemm { .. }, Some((d, _))) if gemm_bias_dims(d, channels).is_none() => {
                return None
            }
            (Kind::Gemm { .. }, _) => {}
            (_, Some((_, v))) if v.len() != channels => return None,
            _ => {}
        }
        Some(Producer {
            id,
            kind,
            channels,
            out_rank,
            weight_dims: dims,
            bias,
            beta: if matches!(kind, Kind::Gemm { .. }) {
                f64::from(op.attr_float("beta", 1.0))
            } else {
                1.0
            },
        })
    }

    /// The output channel each weight element contributes to.
    /// Maps a weight element's flat index to its output channel. The dim
    /// products are taken once: this runs for every weight element.
    fn channel_map(&self) -> impl Fn(usize) -> usize + '_ {
        let d = |k: usize| self.weight_dims.get(k).map_or(1, |&v| v as usize);
        let inner = |from: usize| {
            self.weight_dims
                .get(from..)
                .map_or(1, |r| r.iter().product::<i64>() as usize)
        };
        let (d0, d1, inner1, inner2) = (d(0), d(1), inner(1), inner(2));
        move |i| match self.kind {
            Kind::Conv => i / inner1,
            Kind::ConvTranspose { group } => {
                // w[c, j, k...] feeds output channel (c / (C/group))·(M/group) + j.
                let (c, j) = (i / inner1, (i / inner2) % d1);
                (c / (d0 / group)) * d1 + j
            }
            Kind::Gemm { trans_b: true } => i / d1,
            Kind::Gemm { trans_b: false } | Kind::MatMul => i % d1,
        }
    }

    /// The weights scaled by `s` per output channel: each product in f64,
    /// rounded once to f32.
    fn scaled_weights(&self, weight: &Tensor, s: &[f64]) -> Tensor {
        let mut w = weight
            .to_f32()
            .expect("analysed as f32 (the verifier checks its length)");
        let scale = |x: &mut f32, s: f64| *x = (f64::from(*x) * s) as f32;
        match self.kind {
            // Output channel o owns the contiguous block w[o, ...].
            Kind::Conv | Kind::Gemm { trans_b: true } => {
                let block = w.len() / s.len().max(1);
                for (chunk, &so) in w.chunks_exact_mut(block.max(1)).zip(s) {
                    chunk.iter_mut().for_each(|x| scale(x, so));
                }
            }
            _ => {
                let channel_of = self.channel_map();
                w.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| scale(x, s[channel_of(i)]));
            }
        }
        Tensor::from_f32_vec(self.weight_dims.clone(), w)
    }

    /// Adds to `patch` what turns this producer's output y into s·y + t
    /// (per output channel): weights scaled by s, bias b' = s·b + t.
    pub fn fold_affine(&self, g: &Graph, patch: &mut Patch, s: &[f64], t: &[f64]) {
        let op = g.op(self.id).expect("an operator");
        let label = g.node(self.id).label();
        if s.iter().any(|&x| x != 1.0) {
            // Read only now: analysing a candidate must not copy its weights.
            // Each product in f64, rounded once to f32.
            let weight = g
                .input(self.id, 1)
                .and_then(|o| g.const_tensor(o))
                .expect("analysed as a constant");
            let tensor = prefold::scaled(weight, self.kind, s, || self.scaled_weights(weight, s));
            replace_const(g, patch, self.id, 1, &format!("{label}.weight"), tensor);
        }
        // Gemm: α·A·B' + β·C becomes α·A·(B'·s) + 1·(s·β·C + t).
        let bias = match &self.bias {
            Some((dims, b)) if matches!(self.kind, Kind::Gemm { .. }) => {
                let (out_dims, index) = gemm_bias_dims(dims, self.channels).expect("checked");
                let n = self.channels;
                let rows = out_dims.iter().rev().nth(1).copied().unwrap_or(1) as usize;
                let values: Vec<f64> = (0..rows * n)
                    .map(|i| s[i % n] * self.beta * b[index(i / n, i % n)] + t[i % n])
                    .collect();
                Some((out_dims, values))
            }
            Some((dims, b)) => {
                let values: Vec<f64> = (0..self.channels).map(|o| s[o] * b[o] + t[o]).collect();
                Some((dims.clone(), values))
            }
            // MatMul always gets one: Gemm's C is optional only from opset 11.
            None if t.iter().any(|&x| x != 0.0) || self.kind == Kind::MatMul => {
                Some((vec![self.channels as i64], t.to_vec()))
            }
            None => None,
        };
        let mut new_op = op.clone();
        let mut changed = false;
        if self.kind == Kind::MatMul {
            new_op.op_type = "Gemm".to_string();
            new_op.attributes.clear();
            changed = true;
        }
        if let Some((dims, values)) = bias {
            if matches!(self.kind, Kind::Gemm { .. } | Kind::MatMul) && self.beta != 1.0 {
                new_op.set_attr(Attribute::float("beta", 1.0));
                changed = true;
            }
            if new_op.arity < 3 {
                new_op.arity = 3;
                changed = true;
            }
            let tensor = to_tensor(dims, &values);
            replace_const(g, patch, self.id, 2, &format!("{label}.bias"), tensor);
        }
        if changed {
            patch.update(self.id, new_op);
        }
    }
}

/// Maps (row, column) of a combined Gemm bias to the index in the old one.
type BiasIndex = Box<dyn Fn(usize, usize) -> usize>;

/// A Gemm bias `C` of `dims` (rank ≤ 2, unidirectionally broadcastable to
/// [M, n]), combined with a per-column vector: the dims of the result
/// (broadcast of `dims` with [n]) and, for result row r and column c, the
/// index into C.
fn gemm_bias_dims(dims: &[i64], n: usize) -> Option<(Vec<i64>, BiasIndex)> {
    let n_i = n as i64;
    let col_ok = |c: i64| c == 1 || c == n_i;
    match *dims {
        [] => Some((vec![n_i], Box::new(|_, _| 0))),
        [c] if col_ok(c) => {
            let step = usize::from(c != 1);
            Some((vec![n_i], Box::new(move |_, col| col * step)))
        }
        [r, c] if col_ok(c) && r >= 1 => {
            let (rs, cs) = (usize::from(r != 1) * c as usize, usize::from(c != 1));
            Some((vec![r, n_i], Box::new(move |row, col| row * rs + col * cs)))
        }
        _ => None,
    }
}

/// Folding BatchNorm weights ahead of time. `fuse` knows the types only
/// once tract has inferred them, and `fuse-bn` runs after; meanwhile the
/// main thread waits. It spends the wait computing the folds `fuse-bn` will
/// most likely make (Conv producers need no types) and keeps them here;
/// `fold_affine` then takes a kept one instead of computing it again. A
/// scaled weight is a function of the source weights, the producer kind and
/// the scales, the key here, so a kept fold is the one computed on time:
/// the output does not depend on what was kept (PP-OCRv4 rec: `fuse-bn`
/// 0.8 ms → ~0.1 ms after the types arrive).
pub(crate) mod prefold {
    use super::{batchnorm, Kind};
    use crate::ir::patch::RuleContext;
    use crate::ir::{Model, Tensor, TensorData};
    use bytes::Bytes;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// (source payload address and length, dims, producer kind, scale bits)
    type Key = (usize, usize, Vec<i64>, Kind, Vec<u64>);

    thread_local! {
        /// Kept folds, each with its source payload (kept alive, so its
        /// address names it); `None` outside [`Keeping`].
        static KEPT: RefCell<Option<HashMap<Key, (Bytes, Tensor)>>> = const { RefCell::new(None) };
    }

    fn key(weight: &Tensor, kind: Kind, s: &[f64]) -> Option<(Key, Bytes)> {
        let TensorData::Raw(b) = &weight.data else {
            return None;
        };
        let bits = s.iter().map(|v| v.to_bits()).collect();
        Some((
            (
                b.as_ptr() as usize,
                b.len(),
                weight.dims.clone(),
                kind,
                bits,
            ),
            b.clone(),
        ))
    }

    /// `compute()`, the scaled `weight`, or the one kept for the same key.
    pub(super) fn scaled(
        weight: &Tensor,
        kind: Kind,
        s: &[f64],
        compute: impl FnOnce() -> Tensor,
    ) -> Tensor {
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            let Some(map) = kept.as_mut() else {
                return compute();
            };
            let Some((key, source)) = key(weight, kind, s) else {
                return compute();
            };
            map.entry(key)
                .or_insert_with(|| (source, compute()))
                .1
                .clone()
        })
    }

    /// Keeps folds on this thread until dropped.
    pub(crate) struct Keeping(());

    impl Keeping {
        pub(crate) fn start() -> Keeping {
            KEPT.with(|kept| *kept.borrow_mut() = Some(HashMap::new()));
            Keeping(())
        }

        /// Computes, one BatchNormalization of the main graph at a time
        /// while `waiting()`, the folds `fuse-bn` would make on `model`.
        pub(crate) fn fold_ahead(&self, model: &Model, mut waiting: impl FnMut() -> bool) {
            let g = &model.graph;
            let ctx = RuleContext::for_model(model, None);
            for id in g.node_ids() {
                if !waiting() {
                    return;
                }
                if g.op(id).is_some_and(|op| op.is("BatchNormalization")) {
                    let _ = batchnorm(&ctx, g, id);
                }
            }
        }
    }

    impl Drop for Keeping {
        fn drop(&mut self) {
            KEPT.with(|kept| *kept.borrow_mut() = None);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
    use crate::passes::testing::check;

    /// Deterministic values in [lo, hi) (splitmix64).
    pub(crate) fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    pub(crate) fn init(b: &mut ModelBuilder, name: &str, dims: &[i64], seed: u64) -> Outlet {
        let n = dims.iter().product::<i64>() as usize;
        b.init(
            name,
            Tensor::from_f32(dims.to_vec(), &values(seed, n, -1.0, 1.0)),
        )
    }

    /// BatchNormalization over `c` channels with realistic statistics.
    fn bn(b: &mut ModelBuilder, y: Outlet, c: i64, eps: Option<f32>, seed: u64) -> Outlet {
        let n = c as usize;
        let mut t = |name: &str, lo, hi, k| {
            let v = values(seed * 10 + k, n, lo, hi);
            b.init(name, Tensor::from_f32(vec![c], &v))
        };
        let gamma = t("bn.scale", 0.5, 2.0, 1);
        let beta = t("bn.bias", -1.0, 1.0, 2);
        let mean = t("bn.mean", -3.0, 3.0, 3);
        let var = t("bn.var", 0.01, 4.0, 4);
        let attrs = eps.map(|e| vec![Attribute::float("epsilon", e)]);
        b.op(
            "BatchNormalization",
            &[y, gamma, beta, mean, var],
            attrs.unwrap_or_default(),
            "z",
        )
    }

    fn conv_bn(group: i64, c_in: i64, c_out: i64, bias: bool, eps: Option<f32>) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, c_in, 6, 6]);
        let mut ins = vec![x, init(&mut b, "w", &[c_out, c_in / group, 3, 3], 1)];
        if bias {
            ins.push(init(&mut b, "b", &[c_out], 2));
        }
        let attrs = vec![
            Attribute::int("group", group),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        let y = b.op("Conv", &ins, attrs, "y");
        let z = bn(&mut b, y, c_out, eps, 3);
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    fn count(m: &Model, op: &str) -> usize {
        m.graph
            .node_ids()
            .filter(|&id| m.graph.op(id).is_some_and(|o| o.is(op)))
            .count()
    }

    #[test]
    fn conv_with_bias() {
        let out = check("fuse-bn__conv", &conv_bn(1, 3, 4, true, None), "fuse-bn");
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn conv_without_bias_large_eps() {
        let out = check(
            "fuse-bn__conv-no-bias-eps-0.1",
            &conv_bn(1, 3, 4, false, Some(0.1)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn grouped_conv_small_eps() {
        let out = check(
            "fuse-bn__grouped-conv-eps-1e-9",
            &conv_bn(2, 4, 6, true, Some(1e-9)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn depthwise_conv() {
        let out = check(
            "fuse-bn__depthwise-conv",
            &conv_bn(4, 4, 4, false, Some(1e-3)),
            "fuse-bn",
        );
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn conv_transpose_grouped() {
        for (group, bias) in [(1, true), (2, false), (3, true)] {
            // w: [C_in, C_out/group, k, k]; 6 input channels, 3 per group out.
            let (c_in, c_out) = (6, 3 * group);
            let mut b = ModelBuilder::new(13);
            let x = b.input("x", DataType::FLOAT, &[1, c_in, 5, 5]);
            let mut ins = vec![x, init(&mut b, "w", &[c_in, c_out / group, 3, 3], 4)];
            if bias {
                ins.push(init(&mut b, "b", &[c_out], 5));
            }
            let attrs = vec![
                Attribute::int("group", group),
                Attribute::ints("strides", &[2, 2]),
            ];
            let y = b.op("ConvTranspose", &ins, attrs, "y");
            let z = bn(&mut b, y, c_out, Some(1e-3), 6);
            b.output(z, DataType::FLOAT);
            let name = format!("fuse-bn__conv-transpose-group-{group}");
            let out = check(&name, &b.build().unwrap(), "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 0, "{name}");
        }
    }

    fn gemm_bn(trans_b: bool, c: Option<&[i64]>, alpha: f32, beta: f32) -> Model {
        let (k, n) = (5, 4);
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, k]);
        let w_dims = if trans_b { [n, k] } else { [k, n] };
        let mut ins = vec![x, init(&mut b, "w", &w_dims, 7)];
        if let Some(dims) = c {
            ins.push(init(&mut b, "c", dims, 8));
        }
        let attrs = vec![
            Attribute::int("transB", trans_b as i64),
            Attribute::float("alpha", alpha),
            Attribute::float("beta", beta),
        ];
        let y = b.op("Gemm", &ins, attrs, "y");
        let z = bn(&mut b, y, n, Some(1e-4), 9);
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn gemm_trans_b_and_bias_shapes() {
        let cases: [(&str, bool, Option<&[i64]>); 6] = [
            ("transB-0-c-n", false, Some(&[4])),
            ("transB-1-c-n", true, Some(&[4])),
            ("transB-1-c-1xn", true, Some(&[1, 4])),
            ("transB-0-c-mx1", false, Some(&[3, 1])),
            ("transB-0-c-scalar", false, Some(&[])),
            ("transB-1-no-c", true, None),
        ];
        for (name, trans_b, c) in cases {
            let name = format!("fuse-bn__gemm-{name}");
            let out = check(&name, &gemm_bn(trans_b, c, 0.7, 1.3), "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 0, "{name}");
        }
    }

    #[test]
    fn matmul_becomes_gemm() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[3, 5]);
        let w = init(&mut b, "w", &[5, 4], 10);
        let y = b.op("MatMul", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 11);
        b.output(z, DataType::FLOAT);
        let out = check("fuse-bn__matmul", &b.build().unwrap(), "fuse-bn");
        assert_eq!(count(&out, "Gemm"), 1);
    }

    #[test]
    fn shared_weight_is_copied() {
        // Two convs share w; each BN folds into its own copy.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 4, 4]);
        let w = init(&mut b, "w", &[4, 4, 1, 1], 16);
        let y = b.op("Conv", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 17);
        let y2 = b.op("Conv", &[z, w], vec![], "y2");
        let n = 4;
        let v = |k| Tensor::from_f32(vec![n], &values(k, n as usize, 0.5, 2.0));
        let ins = [y2, b.init("s2", v(18)), b.init("b2", v(19))];
        let ins = [
            ins[0],
            ins[1],
            ins[2],
            b.init("m2", v(20)),
            b.init("v2", v(21)),
        ];
        let z2 = b.op("BatchNormalization", &ins, vec![], "z2");
        b.output(z2, DataType::FLOAT);
        let out = check("fuse-bn__shared-weight", &b.build().unwrap(), "fuse-bn");
        assert_eq!(count(&out, "BatchNormalization"), 0);
    }

    #[test]
    fn not_folded() {
        // The conv output is also a graph output.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 4, 4]);
        let w = init(&mut b, "w", &[4, 3, 1, 1], 12);
        let y = b.op("Conv", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 13);
        let r = b.op("Relu", &[y], vec![], "r");
        b.output(z, DataType::FLOAT);
        b.output(r, DataType::FLOAT);
        let used_twice = b.build().unwrap();
        // MatMul whose input rank is unknown: BN's channel axis may not be
        // MatMul's output features.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4, 4]);
        let x = b.op("Identity", &[x], vec![], "x1");
        let w = init(&mut b, "w", &[4, 4], 14);
        let y = b.op("MatMul", &[x, w], vec![], "y");
        let z = bn(&mut b, y, 4, None, 15);
        b.output(z, DataType::FLOAT);
        let unknown_rank = b.build().unwrap();
        for (name, model) in [
            ("fuse-bn__conv-used-twice", used_twice),
            ("fuse-bn__matmul-unknown-rank", unknown_rank),
        ] {
            let out = check(name, &model, "fuse-bn");
            assert_eq!(count(&out, "BatchNormalization"), 1, "{name}");
        }
    }
}
