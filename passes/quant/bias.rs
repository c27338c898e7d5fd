//! Bias correction: the mean shift that rounding a layer's weights causes,
//! taken back out of its bias.
//!
//! With `W'` the dequantized int8 weights, a layer's outputs move on
//! average by `E[y' − y][o] = Σᵢ (W' − W)[o, i] · E[xᵢ]` per output
//! channel: rounding errors do not cancel where the input's channels have
//! non-zero means (every input after a Relu). Subtracting that shift from
//! the bias costs nothing at run time (Nagel et al., "Data-Free
//! Quantization Through Weight Equalization and Bias Correction", 2019;
//! here `E[x]` is each input channel's mean over the calibration samples,
//! not a BatchNorm's statistics).
//!
//! ```text
//! y = Conv(x', DQ(Wq), b)        →  y = Conv(x', DQ(Wq), b − Σ (W' − W)·E[x])
//! y = Add(MatMul(x', DQ(Wq)), c) →  y = Add(MatMul(x', DQ(Wq)), c − Σ (W' − W)·E[x])
//! ```
//!
//! Conv (grouped and depthwise by group), Gemm (`transA=0`) and MatMul
//! whose output only an Add of a constant along its last axis reads (a
//! bias as exporters write it) are corrected; a Conv or Gemm without a
//! bias gets one. The correction removes the shift weight rounding alone
//! causes, layer by layer; it does not undo what the layers before did,
//! and it can hurt (`benches/bias_correction.py`: held out, silero's
//! error 0.546 → 0.570, ddddocr-det's 0.167 → 0.174), so
//! `bias-correction=auto` keeps it only where it measures a gain on
//! samples whose means it did not use (`measure.rs`).

use super::forms::Bits;
use super::rewrite::QuantizedWeights;
use super::*;

/// Each corrected layer's input: the mean of each of its channels over
/// the calibration samples, by value name.
pub(super) type Means = BTreeMap<String, Vec<f64>>;

/// A value's sums per channel, and the count of elements each sums.
#[derive(Clone, Debug, Default)]
pub(super) struct Sum {
    values: Vec<f64>,
    count: u64,
}

impl Sum {
    fn add(&mut self, other: &Sum, sign: f64) -> Result<()> {
        if self.values.is_empty() {
            self.values = vec![0.0; other.values.len()];
        }
        ensure!(
            self.values.len() == other.values.len(),
            "{} channels on one sample, {} on another",
            self.values.len(),
            other.values.len()
        );
        self.values
            .iter_mut()
            .zip(&other.values)
            .for_each(|(t, v)| *t += sign * v);
        self.count = if sign > 0.0 {
            self.count + other.count
        } else {
            self.count.saturating_sub(other.count)
        };
        Ok(())
    }
}

/// The channel sums of the corrected layers' inputs over every calibration
/// sample, and over each sample the accuracy guard judges on alone: the
/// guard judges a correction made with means from the other samples, so a
/// mean fitted to a sample is not judged on it (dnsmos-p808, outside the
/// suite: corrected with the means of its 8 samples, its error on those
/// same samples fell 2.3x, 0.0089 → 0.0038; on 32 others, 12%, 0.0092 →
/// 0.0081).
#[derive(Default)]
pub(super) struct ChannelSums {
    total: BTreeMap<String, Sum>,
    /// By position among the judged samples (`measure::judged_samples`).
    judged: Vec<BTreeMap<String, Sum>>,
}

impl ChannelSums {
    pub(super) fn is_empty(&self) -> bool {
        self.total.is_empty()
    }

    /// The means over every sample.
    pub(super) fn means(&self) -> Means {
        to_means(&self.total)
    }

    /// The means over every sample but the judged ones at `positions`.
    pub(super) fn means_without(&self, positions: &[usize]) -> Result<Means> {
        let mut left = self.total.clone();
        for &p in positions {
            for (name, sum) in self.judged.get(p).into_iter().flatten() {
                if let Some(l) = left.get_mut(name) {
                    l.add(sum, -1.0)?;
                }
            }
        }
        Ok(to_means(&left))
    }
}

fn to_means(sums: &BTreeMap<String, Sum>) -> Means {
    sums.iter()
        .filter(|(_, s)| s.count > 0)
        .map(|(name, s)| {
            let n = s.count as f64;
            (name.clone(), s.values.iter().map(|t| t / n).collect())
        })
        .collect()
}

/// The axis of a layer's input whose channels its weights read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channels {
    /// Axis 1: Conv's NC....
    Second,
    /// The last axis: Gemm's `[M, K]` (`transA=0`), MatMul's `[..., K]`.
    Last,
}

/// The channel axis of `layer`'s input, if its bias can be corrected.
fn channel_axis(g: &Graph, layer: &Layer) -> Option<Channels> {
    let op = g.op(layer.node)?;
    let (slot, _, _) = layer.weight?;
    match op.op_type.as_str() {
        "Conv" => Some(Channels::Second),
        "Gemm" if op.attr_int("transA", 0) == 0 => Some(Channels::Last),
        "MatMul" if slot == 1 => Some(Channels::Last),
        _ => None,
    }
}

/// The value a correctable layer reads its activations from.
fn input_of(g: &Graph, layer: &Layer) -> Option<(String, Channels)> {
    let axis = channel_axis(g, layer)?;
    let x = layer.acts.iter().find(|(slot, _)| *slot == 0)?.1;
    Some((g.outlet_name(x).to_string(), axis))
}

/// What calibration measures for bias correction, in its first sweep:
/// the channel sums of each correctable layer's input (name → channel
/// axis), over every sample and over each of the `judged` samples (their
/// indices).
pub(super) struct SumsWanted {
    inputs: BTreeMap<String, Channels>,
    judged: Vec<usize>,
}

impl SumsWanted {
    /// The inputs of `layers` whose biases can be corrected.
    pub(super) fn new(g: &Graph, layers: &[Layer], judged: Vec<usize>) -> SumsWanted {
        SumsWanted {
            inputs: layers.iter().filter_map(|l| input_of(g, l)).collect(),
            judged,
        }
    }

    /// The values whose channels are summed.
    pub(super) fn values(&self) -> impl Iterator<Item = &String> {
        self.inputs.keys()
    }

    /// One sample's sums of the value `name` (`None`: not wanted).
    pub(super) fn observe(&self, name: &str, t: &crate::runtime::Tensor) -> Result<Option<Sum>> {
        match self.inputs.get(name) {
            Some(&channels) => {
                let shape = t.shape();
                let axis = match channels {
                    Channels::Second => 1,
                    Channels::Last => shape.len().saturating_sub(1),
                };
                Ok(Some(channel_sums(shape, &t.f32s()?, axis)?))
            }
            None => Ok(None),
        }
    }

    /// Adds sample `i`'s sums of the value `name`; samples are added in
    /// order, so the sums are the same bits on every run.
    pub(super) fn add(&self, into: &mut ChannelSums, i: usize, name: &str, sum: Sum) -> Result<()> {
        if into.judged.len() != self.judged.len() {
            into.judged = vec![BTreeMap::new(); self.judged.len()];
        }
        into.total
            .entry(name.to_string())
            .or_default()
            .add(&sum, 1.0)
            .with_context(|| format!("value {name}"))?;
        if let Some(p) = self.judged.iter().position(|&j| j == i) {
            into.judged[p].insert(name.to_string(), sum);
        }
        Ok(())
    }
}

impl Quant {
    /// `m` with the bias of each of `layers` whose input's channel means
    /// are known corrected for its weights quantized to `bits` (as
    /// `quantize_weights` will quantize them: the same plan, the same
    /// cached int8 values). Done before the quantization's own patch: a
    /// MatMul's bias is the constant of the Add after it, which flowing
    /// int8 quantizes as it finds it. Returns the layers corrected.
    pub(super) fn correct_biases(
        &self,
        m: &mut Model,
        layers: &[Layer],
        bits: Bits,
        quantized: &QuantizedWeights,
        means: &Means,
    ) -> Result<BTreeSet<NodeId>> {
        let g = &m.graph;
        let mut patch = Patch::new("quant: bias correction");
        let mut done = BTreeSet::new();
        for (w, (axis, bits, readers)) in self.weight_plan(layers, bits) {
            let t = g.const_tensor(w).expect("a constant weight");
            let q = quantized.get(g.outlet_name(w), t, axis, bits)?;
            for (node, _) in readers {
                let Some(layer) = layers.iter().find(|l| l.node == node) else {
                    continue;
                };
                if correct_bias(g, layer, t, &q.q, &q.scales, means, &mut patch)
                    .with_context(|| format!("layer {}", layer.name))?
                {
                    done.insert(node);
                }
            }
        }
        patch.apply(&mut m.graph).context("correcting biases")?;
        Ok(done)
    }
}

/// Where a layer's bias is: input `slot` of `node`, holding `value`
/// (`None`: a Conv or Gemm without one).
struct Bias {
    node: NodeId,
    slot: usize,
    value: Option<Outlet>,
}

/// Conv's and Gemm's input 2; a MatMul's, the constant of the Add that
/// alone reads its output, broadcast along the last axis (`[N]`,
/// `[1, ..., 1, N]`).
fn bias_of(g: &Graph, layer: &Layer, outputs: usize) -> Option<Bias> {
    let op = g.op(layer.node)?;
    if !op.is("MatMul") {
        return Some(Bias {
            node: layer.node,
            slot: 2,
            value: g.input(layer.node, 2),
        });
    }
    let y = Outlet::new(layer.node, 0);
    let [(add, slot)] = g.consumers(y)[..] else {
        return None;
    };
    if g.is_graph_output(y) || !g.op(add)?.is("Add") || slot > 1 {
        return None;
    }
    let c = g.input(add, 1 - slot)?;
    let t = g.const_tensor(c)?;
    let (last, rest) = t.dims.split_last()?;
    (*last == outputs as i64 && rest.iter().all(|&d| d == 1)).then_some(Bias {
        node: add,
        slot: 1 - slot,
        value: Some(c),
    })
}

/// Corrects the bias of `layer`, which reads the weight `w` quantized to
/// the int8 values `q` with `scales` (one, or one per channel on the
/// layer's weight axis), when its input's channel means are known: `patch`
/// gives it a new bias constant. Returns whether it did.
fn correct_bias(
    g: &Graph,
    layer: &Layer,
    w: &Tensor,
    q: &[u8],
    scales: &[f32],
    means: &Means,
    patch: &mut Patch,
) -> Result<bool> {
    let Some(mean) = input_of(g, layer).and_then(|(name, _)| means.get(&name)) else {
        return Ok(false);
    };
    let op = g.op(layer.node).expect("a layer is an operator");
    let dims: Vec<usize> = w.dims.iter().map(|&d| d.max(0) as usize).collect();
    let (layout, gain) = match op.op_type.as_str() {
        "Conv" => (
            Layout::Conv {
                group: op.attr_int("group", 1).max(1) as usize,
            },
            1.0,
        ),
        "Gemm" => {
            let (alpha, beta) = (op.attr_float("alpha", 1.0), op.attr_float("beta", 1.0));
            if beta == 0.0 {
                return Ok(false);
            }
            let trans_b = op.attr_int("transB", 0) != 0;
            (Layout::Gemm { trans_b }, (alpha / beta) as f64)
        }
        _ => (Layout::Gemm { trans_b: false }, 1.0),
    };
    let Some(shift) = mean_shift(layout, &dims, &w.to_f32()?, q, scales, mean) else {
        return Ok(false);
    };
    let outputs = shift.len();
    let Some(bias) = bias_of(g, layer, outputs) else {
        return Ok(false);
    };
    // The bias, or zeros where the layer has none.
    let (old, dims) = match bias.value.map(|b| g.const_tensor(b)) {
        None => (vec![0f32; outputs], vec![outputs as i64]),
        Some(Some(t)) if t.dtype == DataType::FLOAT && t.numel() == outputs => {
            (t.to_f32()?, t.dims.clone())
        }
        // A bias of another form (a computed one, a scalar C).
        Some(_) => return Ok(false),
    };
    let corrected: Vec<f32> = old
        .iter()
        .zip(&shift)
        .map(|(&b, &s)| (b as f64 - gain * s) as f32)
        .collect();
    let new = patch.add_const(
        &format!("{}_bias_corrected", layer.name),
        Tensor::from_f32(dims, &corrected),
    );
    match bias.value {
        Some(b) => {
            if g.consumers(b).len() == 1 && !g.is_graph_output(b) {
                patch.remove(b.node);
            }
        }
        None => {
            let mut op = op.clone();
            op.arity = op.arity.max(3);
            patch.update(layer.node, op);
        }
    }
    patch.rewire(bias.node, bias.slot, Some(new));
    Ok(true)
}

/// How a layer's weight is laid out.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `[O, C/group, k...]`, per-channel scales on axis 0.
    Conv { group: usize },
    /// `[N, K]` with `transB`, else `[K, N]`; per-channel scales on N.
    Gemm { trans_b: bool },
}

/// Each output channel's mean shift `Σᵢ (W' − W)[o, i] · mean[i]`, with
/// `W'[j] = q[j] · scale(j)` (`q` int8 in bytes, one scale or one per
/// output channel); `None` when the dims, scales and means do not fit
/// together.
fn mean_shift(
    layout: Layout,
    dims: &[usize],
    w: &[f32],
    q: &[u8],
    scales: &[f32],
    mean: &[f64],
) -> Option<Vec<f64>> {
    let outputs = match layout {
        Layout::Conv { .. } => *dims.first()?,
        Layout::Gemm { trans_b: true } if dims.len() == 2 => dims[0],
        Layout::Gemm { trans_b: false } if dims.len() == 2 => dims[1],
        Layout::Gemm { .. } => return None,
    };
    if w.len() != q.len() || outputs == 0 || !(scales.len() == 1 || scales.len() == outputs) {
        return None;
    }
    let scale = |o: usize| scales[if scales.len() == 1 { 0 } else { o }] as f64;
    let err = |j: usize, o: usize| (q[j] as i8) as f64 * scale(o) - w[j] as f64;
    let mut shift = vec![0f64; outputs];
    match layout {
        Layout::Conv { group } => {
            let (per_group, inputs) = (outputs / group, *dims.get(1)?);
            let taps: usize = dims[2..].iter().product();
            if outputs % group != 0
                || mean.len() != inputs * group
                || w.len() != outputs * inputs * taps
            {
                return None;
            }
            for (o, s) in shift.iter_mut().enumerate() {
                let first = o / per_group * inputs;
                for i in 0..inputs {
                    let start = (o * inputs + i) * taps;
                    let row: f64 = (start..start + taps).map(|j| err(j, o)).sum();
                    *s += row * mean[first + i];
                }
            }
        }
        Layout::Gemm { trans_b } => {
            let k = w.len() / outputs;
            if mean.len() != k {
                return None;
            }
            for (o, s) in shift.iter_mut().enumerate() {
                *s = (0..k)
                    .map(|i| {
                        let j = if trans_b { o * k + i } else { i * outputs + o };
                        err(j, o) * mean[i]
                    })
                    .sum();
            }
        }
    }
    Some(shift)
}

/// Per-channel sums of a value of `shape` along `axis`, and the count of
/// elements each channel sums.
fn channel_sums(shape: &[usize], values: &[f32], axis: usize) -> Result<Sum> {
    ensure!(
        axis < shape.len(),
        "a layer input of rank {} has no channel axis {axis}",
        shape.len()
    );
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut sums = vec![0f64; channels];
    if channels == 0 || inner == 0 {
        return Ok(Sum {
            values: sums,
            count: 0,
        });
    }
    for (block, chunk) in values.chunks(inner).enumerate() {
        sums[block % channels] += chunk.iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok(Sum {
        values: sums,
        count: (values.len() / channels) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sums_reduce_every_axis_but_the_channels() {
        // [2, 3, 2]: batch 2, channels 3, 2 values each.
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let s = channel_sums(&[2, 3, 2], &v, 1).unwrap();
        assert_eq!(
            s.values,
            vec![0. + 1. + 6. + 7., 2. + 3. + 8. + 9., 4. + 5. + 10. + 11.]
        );
        assert_eq!(s.count, 4);
        let s = channel_sums(&[2, 3], &v[..6], 1).unwrap();
        assert_eq!((s.values, s.count), (vec![3., 5., 7.], 2));
        assert!(channel_sums(&[6], &v[..6], 1).is_err());
    }

    #[test]
    fn means_without_judged_samples_leave_their_sums_out() {
        let sum = |values: &[f64], count| Sum {
            values: values.to_vec(),
            count,
        };
        let mut sums = ChannelSums::default();
        let samples = [
            sum(&[2.0, 4.0], 2),
            sum(&[6.0, 0.0], 2),
            sum(&[10.0, 2.0], 2),
        ];
        for (i, s) in samples.iter().enumerate() {
            sums.total
                .entry("x".into())
                .or_default()
                .add(s, 1.0)
                .unwrap();
            // Samples 0 and 2 are judged, at positions 0 and 1.
            if i != 1 {
                sums.judged
                    .push(BTreeMap::from([("x".to_string(), s.clone())]));
            }
        }
        assert_eq!(sums.means()["x"], vec![3.0, 1.0]);
        assert_eq!(sums.means_without(&[0]).unwrap()["x"], vec![4.0, 0.5]);
        assert_eq!(sums.means_without(&[1]).unwrap()["x"], vec![2.0, 1.0]);
        assert_eq!(sums.means_without(&[0, 1]).unwrap()["x"], vec![3.0, 0.0]);
    }

    /// The shift computed as the definition says: the layer's output on
    /// the mean input, with the dequantized weights less with the float
    /// ones.
    fn by_definition(
        layout: Layout,
        dims: &[usize],
        w: &[f32],
        q: &[u8],
        s: &[f32],
        mean: &[f64],
    ) -> Vec<f64> {
        let outputs = match layout {
            Layout::Conv { .. } | Layout::Gemm { trans_b: true } => dims[0],
            Layout::Gemm { trans_b: false } => dims[1],
        };
        let scale = |o: usize| if s.len() == 1 { s[0] } else { s[o] } as f64;
        (0..outputs)
            .map(|o| {
                let mut total = 0.0;
                for (j, (&w, &q)) in w.iter().zip(q).enumerate() {
                    let (out, input) = match layout {
                        Layout::Conv { group } => {
                            let taps: usize = dims[2..].iter().product();
                            let (out, i) = (j / (dims[1] * taps), j / taps % dims[1]);
                            (out, out / (dims[0] / group) * dims[1] + i)
                        }
                        Layout::Gemm { trans_b: true } => (j / dims[1], j % dims[1]),
                        Layout::Gemm { trans_b: false } => (j % dims[1], j / dims[1]),
                    };
                    if out == o {
                        total += ((q as i8) as f64 * scale(o) - w as f64) * mean[input];
                    }
                }
                total
            })
            .collect()
    }

    #[test]
    fn the_shift_is_the_rounding_error_on_the_mean_input() {
        let cases: [(Layout, Vec<usize>, usize); 5] = [
            (Layout::Conv { group: 1 }, vec![4, 3, 2, 2], 3),
            (Layout::Conv { group: 2 }, vec![4, 3, 1, 3], 6),
            (Layout::Conv { group: 4 }, vec![4, 1, 3, 3], 4),
            (Layout::Gemm { trans_b: true }, vec![5, 3], 3),
            (Layout::Gemm { trans_b: false }, vec![3, 5], 3),
        ];
        for (layout, dims, inputs) in cases {
            let len: usize = dims.iter().product();
            let w: Vec<f32> = (0..len)
                .map(|j| ((j * 37 % 23) as f32 - 11.0) / 10.0)
                .collect();
            let outputs = match layout {
                Layout::Gemm { trans_b: false } => dims[1],
                _ => dims[0],
            };
            let scales: Vec<f32> = (0..outputs).map(|o| 0.01 + o as f32 * 0.003).collect();
            let q: Vec<u8> = w
                .iter()
                .enumerate()
                .map(|(j, &v)| {
                    let o = match layout {
                        Layout::Conv { .. } => j / (len / dims[0]),
                        Layout::Gemm { trans_b: true } => j / dims[1],
                        Layout::Gemm { trans_b: false } => j % dims[1],
                    };
                    (v / scales[o]).round().clamp(-127.0, 127.0) as i8 as u8
                })
                .collect();
            let mean: Vec<f64> = (0..inputs).map(|i| 0.5 + i as f64).collect();
            let got = mean_shift(layout, &dims, &w, &q, &scales, &mean).unwrap();
            let want = by_definition(layout, &dims, &w, &q, &scales, &mean);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "{layout:?}: {got:?} vs {want:?}");
            }
            assert!(got.iter().any(|s| s.abs() > 1e-6), "{layout:?}: some shift");
            // Means that do not fit the weight: no correction.
            assert!(mean_shift(layout, &dims, &w, &q, &scales, &mean[1..]).is_none());
        }
    }
}
