//! The numbers of uniform quantization, `θq = round(θ/Δ)·Δ`: weight grids
//! (symmetric, per channel or per tensor) and activation ranges from
//! calibration statistics (MinMax, Percentile, Entropy).
//!
//! No graph, no tract: slices in, grids out. Everything is deterministic
//! (sequential sums in a fixed order), so the same data gives the same bytes.

use anyhow::{bail, ensure, Result};

/// One quantization grid: `x ≈ (q − zero_point)·scale`, `q ∈ [qmin, qmax]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    pub scale: f32,
    pub zero_point: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl Grid {
    /// The symmetric signed grid over `[-amax, amax]` with `bits` bits
    /// (zero point 0, `[-(2^(bits-1)-1), 2^(bits-1)-1]`: TensorRT's range).
    pub fn symmetric(amax: f32, bits: u32) -> Grid {
        let qmax = (1i32 << (bits - 1)) - 1;
        Grid {
            scale: positive_scale(amax / qmax as f32),
            zero_point: 0,
            qmin: -qmax,
            qmax,
        }
    }

    /// The unsigned 8-bit grid covering `[lo, hi]` and zero (onnxruntime's
    /// u8 activations): zero is exactly representable.
    pub fn asymmetric_u8(lo: f32, hi: f32) -> Grid {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = positive_scale((hi - lo) / 255.0);
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        Grid {
            scale,
            zero_point,
            qmin: 0,
            qmax: 255,
        }
    }

    /// `round(x/scale) + zero_point`, clamped (ONNX QuantizeLinear rounds
    /// half to even). Clamped before rounding (the same for integer bounds),
    /// so that no value, however large, overflows the integer cast.
    pub fn quantize(&self, x: f32) -> i32 {
        let (lo, hi) = self.offsets();
        (x / self.scale).clamp(lo, hi).round_ties_even() as i32 + self.zero_point
    }

    /// The grid's range around the zero point: `[qmin − zp, qmax − zp]`.
    fn offsets(&self) -> (f32, f32) {
        (
            (self.qmin - self.zero_point) as f32,
            (self.qmax - self.zero_point) as f32,
        )
    }

    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }

    /// What the grid loses on `values`: `(Σ(x − dq(q(x)))², Σx²)`, the same
    /// numbers `quantize` and `dequantize` give element by element, summed
    /// in eight fixed lanes (deterministic). Calibration runs this over every
    /// activation of every sample: rounding through a libm call and one
    /// sequential sum made it a fifth of a 640×640 detector's calibration.
    pub fn loss(&self, values: &[f32]) -> (f64, f64) {
        // clamp(round(v) + zp, qmin, qmax) − zp = round(clamp(v, qmin − zp,
        // qmax − zp)) for integer bounds; adding and subtracting 1.5·2²³
        // rounds an |v| < 2²² half to even.
        const ROUND: f32 = 12_582_912.0;
        let (lo, hi) = self.offsets();
        let lane = |x: f32| {
            let r = ((x / self.scale).clamp(lo, hi) + ROUND) - ROUND;
            let d = (x - r * self.scale) as f64;
            (d * d, (x as f64) * (x as f64))
        };
        let (mut diff, mut norm) = ([0f64; 8], [0f64; 8]);
        let chunks = values.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                let (d, n) = lane(c[k]);
                diff[k] += d;
                norm[k] += n;
            }
        }
        for (k, &x) in rest.iter().enumerate() {
            let (d, n) = lane(x);
            diff[k] += d;
            norm[k] += n;
        }
        (diff.iter().sum(), norm.iter().sum())
    }
}

/// Mantissa bits a calibrated bound keeps (see [`snap_outward`]).
const BOUND_BITS: u32 = 12;

/// `x` with its magnitude rounded up to [`BOUND_BITS`] mantissa bits (a
/// relative step of 1/4096, far finer than 8 bits resolve; never narrower,
/// so nothing more is clipped). Activations computed on different CPUs
/// differ in their last bits (tract's AVX2 and AVX-512 kernels sum in other
/// orders), and raw calibrated bounds carried that into the scales: the
/// same model and data gave other bytes on another machine
/// (0.97381806 vs 0.97381794). Snapped, they agree unless a bound lies
/// within that noise of a step's edge.
pub fn snap_outward(x: f32) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mask = (1u32 << (23 - BOUND_BITS)) - 1;
    let bits = x.abs().to_bits();
    let up = if bits & mask == 0 {
        bits
    } else {
        (bits | mask) + 1
    };
    f32::from_bits(up).copysign(x)
}

/// A scale of zero (an all-zero channel, a constant tensor) is not a valid
/// ONNX scale; any positive one represents zeros exactly.
fn positive_scale(s: f32) -> f32 {
    if s.is_finite() && s > 0.0 {
        s
    } else {
        1.0
    }
}

/// A weight on its grid(s).
pub struct QuantizedWeight {
    pub q: Vec<i8>,
    /// One scale per channel along the axis, or one for the tensor.
    pub scales: Vec<f32>,
    /// ‖W − Ŵ‖ / ‖W‖.
    pub rel_err: f64,
}

/// Symmetric `bits`-bit quantization of `w` (shape `dims`), one scale per
/// index of `axis` when `axis` is given, one for the tensor otherwise.
pub fn quantize_weight(
    w: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    bits: u32,
) -> Result<QuantizedWeight> {
    ensure!((2..=8).contains(&bits), "bits={bits} must be in 2..=8");
    ensure!(
        w.len() == dims.iter().product::<usize>(),
        "weight of {} values for shape {dims:?}",
        w.len()
    );
    let (channels, inner) = match axis {
        Some(a) if a < dims.len() => (dims[a], dims[a + 1..].iter().product::<usize>()),
        Some(a) => bail!("axis {a} out of range for shape {dims:?}"),
        None => (1, w.len().max(1)),
    };
    let channel = |i: usize| (i / inner) % channels.max(1);
    let mut amax = vec![0f32; channels.max(1)];
    for (i, &x) in w.iter().enumerate() {
        let c = channel(i);
        amax[c] = amax[c].max(x.abs());
    }
    let grids: Vec<Grid> = amax.iter().map(|&a| Grid::symmetric(a, bits)).collect();
    let (mut err, mut norm) = (0f64, 0f64);
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let g = &grids[channel(i)];
            let q = g.quantize(x);
            let d = (x - g.dequantize(q)) as f64;
            err += d * d;
            norm += (x as f64) * (x as f64);
            q as i8
        })
        .collect();
    Ok(QuantizedWeight {
        q,
        scales: grids.iter().map(|g| g.scale).collect(),
        rel_err: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
    })
}

/// How an activation's range is chosen from its calibration values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// Clip |x| at this percentile (e.g. 99.999) of the values seen.
    Percentile(f64),
    /// Clip |x| where the int8 histogram loses the least information (the
    /// threshold minimising KL(P‖Q), TensorRT's entropy calibration).
    Entropy,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile {p}"),
            Method::Entropy => "entropy".into(),
        }
    }
}

/// Bins of the |x| histogram the percentile and entropy methods read.
const BINS: usize = 2048;
/// Quantized levels on one side of zero the entropy method compares against.
const LEVELS: usize = 128;

/// The finite extremes of an activation's values, gathered a sample at a
/// time (merging is exact in any order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Default for Range {
    fn default() -> Range {
        Range {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
        }
    }
}

impl Range {
    pub fn observe(&mut self, values: &[f32]) {
        for &x in values.iter().filter(|x| x.is_finite()) {
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
    }

    pub fn merge(&mut self, other: &Range) {
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.max(other.hi);
    }

    /// The largest |x| seen (0 when nothing finite was).
    fn amax(&self) -> f32 {
        match self.lo > self.hi {
            true => 0.0,
            false => self.lo.abs().max(self.hi.abs()),
        }
    }
}

/// The |x| histogram the percentile and entropy methods read: `BINS` bins
/// over `[0, amax]` of the activation's whole [`Range`], so it is gathered
/// after the range, a sample at a time (counts merge exactly in any order).
#[derive(Clone, Debug)]
pub struct AbsHistogram {
    width: f32,
    counts: Vec<u64>,
}

impl AbsHistogram {
    pub fn new(range: &Range) -> AbsHistogram {
        AbsHistogram {
            width: range.amax() / BINS as f32,
            counts: vec![0; BINS],
        }
    }

    pub fn observe(&mut self, values: &[f32]) {
        if self.width == 0.0 {
            return;
        }
        for &x in values.iter().filter(|x| x.is_finite()) {
            let b = ((x.abs() / self.width) as usize).min(BINS - 1);
            self.counts[b] += 1;
        }
    }

    pub fn merge(&mut self, other: &AbsHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The calibrated range: `range` itself for MinMax, else clipped at the
    /// method's threshold on this histogram.
    pub fn clip(&self, range: &Range, method: Method) -> (f32, f32) {
        if range.lo > range.hi {
            return (0.0, 0.0);
        }
        if method == Method::MinMax || self.width == 0.0 {
            return (range.lo, range.hi);
        }
        let t = match method {
            Method::Percentile(p) => percentile_threshold(&self.counts, self.width, p),
            Method::Entropy => entropy_threshold(&self.counts, self.width),
            Method::MinMax => unreachable!(),
        };
        (range.lo.max(-t), range.hi.min(t))
    }
}

fn percentile_threshold(hist: &[u64], width: f32, p: f64) -> f32 {
    let total: u64 = hist.iter().sum();
    let wanted = (total as f64 * p / 100.0).ceil() as u64;
    let mut seen = 0;
    for (b, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= wanted {
            return (b + 1) as f32 * width;
        }
    }
    hist.len() as f32 * width
}

/// The threshold `(i + 0.5)·width`, `i ∈ [LEVELS, BINS)`, minimising
/// KL(P‖Q) between the histogram clipped at `i` bins (outliers folded into
/// the last bin) and its `LEVELS`-level quantization.
fn entropy_threshold(hist: &[u64], width: f32) -> f32 {
    let mut best = (f64::INFINITY, hist.len());
    for i in (LEVELS..=hist.len()).step_by(8) {
        let mut p: Vec<f64> = hist[..i].iter().map(|&n| n as f64).collect();
        p[i - 1] += hist[i..].iter().sum::<u64>() as f64;
        // Q: merge the clipped histogram's bins into LEVELS groups, spread
        // each group's mass evenly over the bins P has mass in. The outliers
        // folded into P's last bin are not in Q: that mismatch is what KL
        // charges clipping for.
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let (start, end) = (
                l * i / LEVELS,
                ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1),
            );
            let group = start..end.min(i);
            let mass: f64 = hist[group.clone()].iter().map(|&n| n as f64).sum();
            let nonzero = p[group.clone()].iter().filter(|&&n| n > 0.0).count();
            if nonzero > 0 {
                for b in group {
                    if p[b] > 0.0 {
                        q[b] = mass / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (&pb, &qb) in p.iter().zip(&q) {
            if pb > 0.0 {
                // An empty Q bin where P has mass: a large, finite penalty.
                let qb = if qb > 0.0 { qb / qs } else { 1e-12 };
                kl += (pb / ps) * ((pb / ps) / qb).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f32 + 0.5).min(hist.len() as f32) * width
}

/// ‖a − b‖ / ‖b‖ over all elements (0 when b is all zero and a equals it).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut e, mut n) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        e += ((x - y) as f64).powi(2);
        n += (y as f64).powi(2);
    }
    if n > 0.0 {
        (e / n).sqrt()
    } else if e > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calibrated range of one activation over its values on every
    /// sample, by the sweeps `quant`'s calibration makes.
    fn activation_range(samples: &[&[f32]], method: Method) -> (f32, f32) {
        let mut range = Range::default();
        for s in samples {
            range.observe(s);
        }
        let mut hist = AbsHistogram::new(&range);
        if method != Method::MinMax {
            for s in samples {
                hist.observe(s);
            }
        }
        hist.clip(&range, method)
    }

    #[test]
    fn loss_is_what_quantize_and_dequantize_lose() {
        let values: Vec<f32> = (0..1003)
            .map(|i| ((i as f32) * 0.37).sin() * 7.0 + if i % 97 == 0 { 40.0 } else { 0.0 })
            .chain([0.5, -0.5, 1.5, 2.5, f32::MAX, -1e30])
            .collect();
        for grid in [
            Grid::asymmetric_u8(-3.0, 9.0),
            Grid::symmetric(6.0, 8),
            Grid::asymmetric_u8(0.0, 1.0),
            Grid::symmetric(1.0, 4),
        ] {
            let (mut diff, mut norm) = (0f64, 0f64);
            for &x in &values {
                let d = (x - grid.dequantize(grid.quantize(x))) as f64;
                diff += d * d;
                norm += (x as f64) * (x as f64);
            }
            let (d, n) = grid.loss(&values);
            assert!(
                (d - diff).abs() <= 1e-12 * diff.abs(),
                "{grid:?}: {d} vs {diff}"
            );
            assert!(
                (n - norm).abs() <= 1e-12 * norm.abs(),
                "{grid:?}: {n} vs {norm}"
            );
        }
    }

    #[test]
    fn symmetric_grid_is_tensorrts_range() {
        let g = Grid::symmetric(12.7, 8);
        assert_eq!((g.qmin, g.qmax, g.zero_point), (-127, 127, 0));
        assert!((g.scale - 0.1).abs() < 1e-7);
        assert_eq!(g.quantize(100.0), 127);
        assert_eq!(g.quantize(-100.0), -127);
        // Half to even, as ONNX QuantizeLinear.
        assert_eq!(g.quantize(0.25), 2);
        assert_eq!(g.quantize(0.35), 4);
    }

    #[test]
    fn snapped_bounds_widen_by_less_than_a_step_and_absorb_last_bit_noise() {
        for x in [0.97381806f32, -1.9476361, 3.0e-5, 6.0, -0.001] {
            let s = snap_outward(x);
            assert!(s.abs() >= x.abs() && s.signum() == x.signum(), "{x} -> {s}");
            assert!((s - x).abs() <= x.abs() / 4096.0, "{x} -> {s}");
            assert_eq!(snap_outward(s), s, "a snapped bound stays put");
        }
        // The two CPUs' bounds of one activation.
        assert_eq!(snap_outward(0.97381806), snap_outward(0.97381794));
        assert_eq!(snap_outward(1.9476361), snap_outward(1.9476359));
        assert_eq!(snap_outward(0.0), 0.0);
        assert_eq!(snap_outward(6.0), 6.0);
    }

    #[test]
    fn u8_grid_represents_zero_exactly() {
        let g = Grid::asymmetric_u8(-1.0, 3.0);
        assert_eq!(g.dequantize(g.quantize(0.0)), 0.0);
        let relu = Grid::asymmetric_u8(0.0, 6.0);
        assert_eq!(relu.zero_point, 0);
        assert_eq!(relu.quantize(-5.0), 0);
    }

    #[test]
    fn zero_channels_get_a_valid_scale() {
        let w = [0.0, 0.0, 1.0, -2.0];
        let q = quantize_weight(&w, &[2, 2], Some(0), 8).unwrap();
        assert_eq!(q.scales[0], 1.0);
        assert_eq!(q.q, vec![0, 0, 64, -127]);
    }

    #[test]
    fn per_channel_beats_per_tensor_on_uneven_channels() {
        // Channel 0 tiny, channel 1 large: one scale crushes channel 0.
        let w: Vec<f32> = (0..64)
            .map(|i| if i < 32 { 0.001 * i as f32 } else { i as f32 })
            .collect();
        let pc = quantize_weight(&w, &[2, 32], Some(0), 8).unwrap();
        let pt = quantize_weight(&w, &[2, 32], None, 8).unwrap();
        assert_eq!(pc.scales.len(), 2);
        assert_eq!(pt.scales.len(), 1);
        assert!(pc.rel_err <= pt.rel_err);
        let channel0 = |q: &QuantizedWeight| q.q[..32].iter().filter(|&&v| v != 0).count();
        assert_eq!(channel0(&pt), 0, "per tensor rounds channel 0 to zero");
        assert_eq!(channel0(&pc), 31);
    }

    #[test]
    fn axis_one_groups_columns() {
        // [2, 3] with columns of different magnitude: 3 scales.
        let w = [1.0, 10.0, 100.0, -1.0, -10.0, -100.0];
        let q = quantize_weight(&w, &[2, 3], Some(1), 8).unwrap();
        let want = [1.0 / 127.0, 10.0 / 127.0, 100.0 / 127.0];
        for (s, w) in q.scales.iter().zip(want) {
            assert!((s - w).abs() < 1e-6);
        }
        assert_eq!(q.q, vec![127, 127, 127, -127, -127, -127]);
    }

    #[test]
    fn clipping_methods_ignore_rare_outliers() {
        // 100k values in [-1, 1] and one at 30 (the bulk spans ~70 of
        // the 2048 bins: entropy's search starts at 128).
        let mut v: Vec<f32> = (0..100_000)
            .map(|i| ((i * 7919) % 20_001) as f32 / 10_000.0 - 1.0)
            .collect();
        v.push(30.0);
        let s = [v.as_slice()];
        assert_eq!(activation_range(&s, Method::MinMax), (-1.0, 30.0));
        let (_, hi) = activation_range(&s, Method::Percentile(99.99));
        assert!(hi < 1.1, "percentile kept the outlier: {hi}");
        let (_, hi) = activation_range(&s, Method::Entropy);
        assert!(hi < 3.0, "entropy kept the outlier: {hi}");
        assert!(hi >= 1.0, "entropy clipped the bulk: {hi}");
    }

    #[test]
    fn entropy_keeps_a_real_tail() {
        // Exponential values (a ReLU-like activation), max ≈ 11.5: clipping
        // at 2 would saturate 13% of them. A Q that carried the clipped mass
        // made every candidate look equally good and chose the smallest.
        let n = 100_000;
        let v: Vec<f32> = (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32)
            .collect();
        let (_, hi) = activation_range(&[v.as_slice()], Method::Entropy);
        assert!(hi > 3.0 && hi < 11.6, "entropy threshold {hi}");
    }

    #[test]
    fn bad_bits_are_an_error() {
        assert!(quantize_weight(&[1.0], &[1], None, 9).is_err());
        assert!(quantize_weight(&[1.0], &[1], None, 1).is_err());
    }
}
