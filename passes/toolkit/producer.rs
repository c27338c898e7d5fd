//! A linear producer: an operator whose output is linear in constant
//! weights per output channel, and how to fold y ↦ s·y + t into it.
//!
//! A Conv's weight may also be *computed* as one number per output channel
//! spread over its shape: `ConstantOfShape(shape)` (onnx's caffe2 test
//! models, whose weights `fold-constants` leaves computed rather than write
//! megabytes of one number into the file) or `Expand(c, shape)` with `c`
//! one value per output channel. Scaled per output channel it stays that
//! form, `Expand(c·s, shape)`: `c·s` is one number per channel, the size of
//! a bias, and the weight is never materialised.

use super::sole_use;
use crate::ir::patch::{RuleContext, Src};
use crate::ir::{AttrValue, Attribute, DataType, Graph, NodeId, Operator, Outlet, Patch, Tensor};
use std::borrow::Cow;

/// Most elements of a `ConstantOfShape` read as a constant by
/// [`small_const`]: per-channel parameters, never weights.
const SMALL_CONST_ELEMENTS: usize = 1 << 16;

/// The f32 fill of a `ConstantOfShape` (0.0 when it has no `value`).
fn fill_value(op: &Operator) -> Option<f32> {
    match op.attr("value").map(|a| &a.value) {
        None => Some(0.0),
        Some(AttrValue::Tensor(t)) if t.dtype == DataType::FLOAT && t.numel() == 1 => {
            t.to_f32().ok()?.first().copied()
        }
        _ => None,
    }
}

/// The constant behind `v`: an initializer, or a `ConstantOfShape` of a
/// constant shape with at most 65536 elements, read without running it
/// (per-channel parameters that `fold-constants` left computed).
pub(crate) fn small_const(g: &Graph, v: Outlet) -> Option<Cow<'_, Tensor>> {
    if let Some(t) = g.const_tensor(v) {
        return Some(Cow::Borrowed(t));
    }
    let op = g
        .op(v.node)
        .filter(|op| op.is("ConstantOfShape") && op.is_default_domain())?;
    let dims = g.const_tensor(g.input(v.node, 0)?)?.to_i64().ok()?;
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
    (n <= SMALL_CONST_ELEMENTS).then_some(())?;
    let fill = fill_value(op)?;
    Some(Cow::Owned(Tensor::from_f32(dims, &vec![fill; n])))
}

/// A Conv weight computed as one value per output channel spread over
/// `dims`: `ConstantOfShape(dims)` or `Expand(c, dims)`.
#[derive(Clone, Debug)]
pub(crate) struct Spread {
    /// Where the shape comes from (a constant), reused by the new `Expand`.
    shape: Outlet,
    /// The value of each output channel.
    values: Vec<f64>,
}

/// The spread weight at `w` with `dims` (axis 0: output channels), if it is one.
fn spread(g: &Graph, w: Outlet) -> Option<(Spread, Vec<i64>)> {
    let op = g.op(w.node).filter(|op| op.is_default_domain())?;
    let shape_slot = match op.op_type.as_str() {
        "ConstantOfShape" => 0,
        "Expand" => 1,
        _ => return None,
    };
    let shape = g.input(w.node, shape_slot)?;
    let dims = g.const_tensor(shape)?.to_i64().ok()?;
    let out = *dims.first()?;
    if dims.len() < 3 || dims.iter().any(|&d| d <= 0) {
        return None;
    }
    // Validation bounds these shapes on import; a pass may have made this
    // one since, and `out` sizes a vector here.
    let limit = crate::validate::MAX_COMPUTED_ELEMENTS;
    crate::validate::element_count_within(dims.iter().copied(), limit).ok()?;
    let values = if op.is("ConstantOfShape") {
        vec![f64::from(fill_value(op)?); out as usize]
    } else {
        let c = g.const_tensor(g.input(w.node, 0)?)?;
        if c.dtype != DataType::FLOAT || c.dims.len() > dims.len() {
            return None;
        }
        // Right-aligned: every axis but 0 of the (padded) constant is 1, and
        // axis 0 is 1 or the output channels (Expand never shrinks a dim).
        let pad = dims.len() - c.dims.len();
        let at = |axis: usize| if axis < pad { 1 } else { c.dims[axis - pad] };
        if (1..dims.len()).any(|a| at(a) != 1) || !(at(0) == 1 || at(0) == out) {
            return None;
        }
        let v = c.to_f32().ok()?;
        (0..out as usize)
            .map(|o| f64::from(v[if v.len() == 1 { 0 } else { o }]))
            .collect()
    };
    Some((Spread { shape, values }, dims))
}

/// Feeds input `slot` of `user` from a new initializer `tensor`. When the old
/// initializer there is used by nothing else, it is removed and the new one
/// takes its name; otherwise (shared weights) the new one gets a name of its own.
pub(crate) fn replace_const(
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
pub(crate) enum Kind {
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
pub(crate) struct Producer {
    pub id: NodeId,
    pub kind: Kind,
    /// Output channels (axis 1 of the output).
    pub channels: usize,
    /// Rank of the output.
    pub out_rank: usize,
    weight_dims: Vec<i64>,
    /// A Conv weight computed as one value per output channel (see the
    /// module doc); `None`: an initializer.
    spread: Option<Spread>,
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
        let w_in = g.input(id, 1)?;
        let (dims, spread) = match g.const_tensor(w_in) {
            Some(w) if w.dtype == DataType::FLOAT => (w.dims.clone(), None),
            Some(_) => return None,
            None if op.is("Conv") => {
                let (s, dims) = spread(g, w_in)?;
                (dims, Some(s))
            }
            None => return None,
        };
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
                // `group` is from the file: a product past i64 is no model.
                (kind, dims[1].checked_mul(group)?, dims.len())
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
        // ConvTranspose's channels are dims[1]·group, which no tensor bounds
        // (no filters divide into any group): they size per-channel vectors.
        if channels <= 0 || channels as u64 > crate::validate::MAX_ELEMENTS {
            return None;
        }
        let bias = match g.input(id, bias_slot).filter(|_| kind != Kind::MatMul) {
            None => None,
            Some(b) => {
                let t = small_const(g, b)?;
                if t.dtype != DataType::FLOAT {
                    return None;
                }
                Some((t.dims.clone(), f64s(&t)?))
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
            spread,
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
    /// (per output channel): weights scaled by s, bias b' = s·b + t. A
    /// scaled weight is taken from `ctx.memo` when kept there.
    pub fn fold_affine(
        &self,
        ctx: &RuleContext,
        g: &Graph,
        patch: &mut Patch,
        s: &[f64],
        t: &[f64],
    ) {
        let op = g.op(self.id).expect("an operator");
        let label = g.node(self.id).label();
        if let (Some(spread), true) = (&self.spread, s.iter().any(|&x| x != 1.0)) {
            // Expand(c·s, shape): one number per output channel.
            let values: Vec<f32> = (0..self.channels)
                .map(|o| (spread.values[o] * s[o]) as f32)
                .collect();
            let mut dims = vec![1; self.weight_dims.len()];
            dims[0] = self.channels as i64;
            let c = patch.add_const(
                &format!("{label}.weight_scale"),
                Tensor::from_f32_vec(dims, values),
            );
            let expand = Operator::new("Expand", 2, vec![]);
            let inputs = vec![Some(c), Some(Src::Old(spread.shape))];
            let e = patch.add_op(None, expand, inputs, &[&format!("{label}.weight")]);
            let old = g.input(self.id, 1).expect("analysed");
            patch.rewire(self.id, 1, Some(Patch::out(e, 0)));
            if sole_use(g, old, self.id) {
                patch.remove(old.node);
            }
        } else if s.iter().any(|&x| x != 1.0) {
            // Read only now: analysing a candidate must not copy its weights.
            // Each product in f64, rounded once to f32.
            let weight = g
                .input(self.id, 1)
                .and_then(|o| g.const_tensor(o))
                .expect("analysed as a constant");
            let compute = || self.scaled_weights(weight, s);
            let tensor = match &ctx.memo {
                Some(memo) => memo.get_or(weight, &format!("{:?}", self.kind), s, compute),
                None => compute(),
            };
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

#[cfg(test)]
mod tests {
    use super::Producer;
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Tensor};

    #[test]
    fn a_conv_transpose_group_past_i64_is_no_producer() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 0, 5, 5]);
        // 0 filters divide into any group; 4 · 2^62 output channels do not fit.
        let w = b.init("w", Tensor::from_f32(vec![0, 4, 3, 3], &[]));
        let attrs = vec![Attribute::int("group", 1 << 62)];
        let y = b.op("ConvTranspose", &[x, w], attrs, "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let g = &m.graph;
        let id = g.node_ids().find(|&id| g.op(id).is_some()).unwrap();
        assert!(Producer::analyse(g, id, false).is_none());
        // Nor 4 · 2^40 channels, which would size per-channel vectors.
        let mut m = m.clone();
        let mut op = m.graph.op(id).unwrap().clone();
        op.set_attr(Attribute::int("group", 1 << 40));
        m.graph.node_mut(id).kind = crate::ir::NodeKind::Op(op);
        assert!(Producer::analyse(&m.graph, id, false).is_none());
        // A weight spread over 2^40 output channels sizes no vector.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 1, 5, 5]);
        let shape = b.init("shape", Tensor::from_i64(vec![4], &[1 << 40, 1, 1, 1]));
        let w = b.op("ConstantOfShape", &[shape], vec![], "w");
        let y = b.op("Conv", &[x, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        let big = b.build().unwrap();
        let conv = big
            .graph
            .node_ids()
            .find(|&id| big.graph.op(id).is_some_and(|op| op.is("Conv")));
        assert!(Producer::analyse(&big.graph, conv.unwrap(), false).is_none());
        // The same with group 1 is one.
        let mut m = m.clone();
        let op = m.graph.op(id).unwrap().clone();
        let mut op1 = op;
        op1.set_attr(Attribute::int("group", 1));
        m.graph.node_mut(id).kind = crate::ir::NodeKind::Op(op1);
        assert!(Producer::analyse(&m.graph, id, false).is_some());
    }
}
