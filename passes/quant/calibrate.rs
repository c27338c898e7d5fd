//! Calibration: each planned activation's grid from its captured values, and
//! each layer's sensitivity for `fallback`.

use super::bias::{ChannelSums, SumsWanted};
use super::*;
use crate::quantize::{snap_outward, AbsHistogram, Range};
use std::collections::HashMap;
use std::sync::Mutex;

impl Quant {
    /// Each planned activation's grid and calibrated range, from its values
    /// on every sample. The model runs a sample at a time with many values
    /// as outputs (batches of at most `CAPTURE_BUDGET` bytes a sample), and
    /// each sample's values are reduced as soon as it has run, so memory
    /// does not grow with the samples and each batch costs one run per
    /// sample per sweep: (1) the range; (2) with percentile or entropy, the
    /// |x| histogram over it; (3) what the grid loses on the values. Before,
    /// the values of every sample were held, in batches bounded over all
    /// samples: a 640×640 detector's large activations took a batch each,
    /// and 32 samples ran about 20 times over (138 s).
    ///
    /// With `sums`, the first sweep also captures what bias correction
    /// needs (`bias.rs`): a separate sweep cost PP-OCR rec on 160 lines
    /// 3-4 s of a 10 s `quant`.
    pub(super) fn calibrate(
        &self,
        model: &Model,
        data: &Calibration,
        names: &[String],
        act: Act,
        sums: Option<&SumsWanted>,
    ) -> Result<(Grids, ChannelSums)> {
        let threads = rayon::current_num_threads();
        // The first sweep's values: the names, then the inputs to sum.
        let mut first: Vec<String> = names.to_vec();
        if let Some(w) = sums {
            let named: BTreeSet<&String> = names.iter().collect();
            first.extend(w.values().filter(|n| !named.contains(n)).cloned());
        }
        let first_sizes = sample_bytes(model, data, &first)?;
        let sizes = first_sizes[..names.len()].to_vec();
        let batches = capture_batches(names, &sizes, threads);
        let mut ranges = vec![Range::default(); names.len()];
        let mut channel_sums = ChannelSums::default();
        for (start, batch) in capture_batches(&first, &first_sizes, threads) {
            let per_sample = data.sweep(model, batch, |_, tensors| {
                tensors
                    .iter()
                    .zip(batch)
                    .enumerate()
                    .map(|(k, (&t, name))| {
                        let range = (start + k < names.len()).then(|| {
                            let mut r = Range::default();
                            r.observe(&t.f32s()?);
                            Ok::<_, anyhow::Error>(r)
                        });
                        let sum = match sums {
                            Some(w) => w.observe(name, t)?,
                            None => None,
                        };
                        Ok((range.transpose()?, sum))
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            // Merged in sample order: the same bits on every run.
            for (i, sample) in per_sample.into_iter().enumerate() {
                for (k, (range, sum)) in sample.into_iter().enumerate() {
                    if let Some(r) = range {
                        ranges[start + k].merge(&r);
                    }
                    if let (Some(w), Some(sum)) = (sums, sum) {
                        w.add(&mut channel_sums, i, &first[start + k], sum)?;
                    }
                }
            }
        }
        let mut hists: Vec<AbsHistogram> = ranges.iter().map(AbsHistogram::new).collect();
        if self.method != Method::MinMax {
            for &(start, batch) in &batches {
                // Counts add exactly in any order: merged as samples finish.
                let merged: Vec<Mutex<&mut AbsHistogram>> = hists[start..start + batch.len()]
                    .iter_mut()
                    .map(Mutex::new)
                    .collect();
                data.sweep(model, batch, |_, tensors| {
                    for (k, &t) in tensors.iter().enumerate() {
                        let mut h = AbsHistogram::new(&ranges[start + k]);
                        h.observe(&t.f32s()?);
                        merged[k]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .merge(&h);
                    }
                    Ok(())
                })?;
            }
        }
        let grids: Vec<(f32, f32, Grid)> = ranges
            .iter()
            .zip(&hists)
            .map(|(r, h)| {
                let (lo, hi) = h.clip(r, self.method);
                // The same bytes whatever CPU computed the activations.
                let (lo, hi) = (snap_outward(lo), snap_outward(hi));
                let grid = match act {
                    Act::S8 => Grid::symmetric(lo.abs().max(hi.abs()), 8),
                    Act::U8 => Grid::asymmetric_u8(lo, hi),
                };
                (lo, hi, grid)
            })
            .collect();
        let mut lost = vec![(0f64, 0f64); names.len()];
        for &(start, batch) in &batches {
            let per_sample = data.sweep(model, batch, |_, tensors| {
                tensors
                    .par_iter()
                    .enumerate()
                    .map(|(k, &t)| Ok(grids[start + k].2.loss(&t.f32s()?)))
                    .collect::<Result<Vec<_>>>()
            })?;
            // Summed in sample order: the same bits on every run.
            for sample in per_sample {
                for (k, (diff, norm)) in sample.into_iter().enumerate() {
                    lost[start + k].0 += diff;
                    lost[start + k].1 += norm;
                }
            }
        }
        let grids = names
            .iter()
            .zip(grids)
            .zip(lost)
            .map(|((name, (lo, hi, grid)), (diff, norm))| {
                let err = if norm > 0.0 {
                    (diff / norm).sqrt()
                } else {
                    0.0
                };
                (name.clone(), Calibrated { grid, lo, hi, err })
            })
            .collect();
        Ok((grids, channel_sums))
    }

    /// The grid of the planned value `name`: calibrated, shared with the
    /// value it was moved from, or fitted to a constant's own values.
    pub(super) fn grid_of(
        &self,
        g: &Graph,
        name: &str,
        pair: &Pair,
        grids: &Grids,
    ) -> Result<Grid> {
        let calibrated = |n: &str| {
            grids
                .get(n)
                .map(|c| c.grid)
                .with_context(|| format!("value {n} was not calibrated"))
        };
        match &pair.grid {
            GridFrom::Calibrated => calibrated(name),
            GridFrom::SameAs(root) => calibrated(root),
            GridFrom::Constant => {
                let t = g
                    .const_tensor(pair.value)
                    .with_context(|| format!("{name} is not a constant"))?;
                let values = t.to_f32()?;
                let (lo, hi) = values
                    .iter()
                    .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                Ok(match self.act {
                    Act::S8 => Grid::symmetric(lo.abs().max(hi.abs()), 8),
                    Act::U8 => Grid::asymmetric_u8(lo, hi),
                })
            }
        }
    }

    /// Each layer's sensitivity: the relative error (‖y − y_float‖/‖y_float‖
    /// over every output and judged sample) of the model with only that
    /// layer quantized (planned as [`Quant::alone`]). On at most
    /// [`JUDGED_SAMPLES`](super::measure::JUDGED_SAMPLES): a run per layer
    /// and sample (PP-OCR rec, 31 layers on 160 lines: 90 s in all).
    pub(super) fn sensitivity(
        &self,
        model: &Model,
        data: &Calibration,
        layers: &[Layer],
        grids: &Grids,
        lossy: &BTreeSet<String>,
        quantized: &QuantizedWeights,
    ) -> Result<BTreeMap<String, f64>> {
        let data = &*data.at_most(super::measure::JUDGED_SAMPLES);
        let reference = data.run(model, &[])?;
        let want = flat(&reference)?;
        layers
            .par_iter()
            .map(|layer| -> Result<(String, f64)> {
                let mut m = model.clone();
                let mut patch = Patch::new(format!("quant: {}", layer.name));
                self.quantize_weights(
                    &m.graph,
                    std::slice::from_ref(layer),
                    self.weight_bits(),
                    &mut patch,
                    quantized,
                )?;
                for (name, pair) in self.alone(&m.graph, layer, lossy) {
                    let grid = self.grid_of(&m.graph, &name, &pair, grids)?;
                    self.add_pair(&m.graph, &mut patch, &name, &pair, &grid)?;
                }
                patch.apply(&mut m.graph)?;
                let got = data.run(&m, &[])?;
                Ok((layer.name.clone(), quantize::rel_l2(&flat(&got)?, &want)))
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().collect())
    }
}

/// Bytes of captured values the samples in flight may hold at once. A
/// load per fixed count of values made calibration quadratic on long models
/// (a 100k-node chain has 33k activations to capture); batches bounded by
/// bytes take one run for many small values and stay bounded for large ones.
/// Each batch costs a run per sample per sweep: PP-OCRv4 det at 640×640
/// holds 211 MB of activations a sample, one batch at this budget with two
/// samples in flight (calibration 10.6 s on 32 samples, peak 1.33 GB), two
/// at 256 MB (15.9 s, 1.09 GB).
const CAPTURE_BUDGET: usize = 512 << 20;

/// Each value's f32 bytes on one sample: from its dims when the graph knows
/// them, else measured on the first sample (a size guessed without the
/// sample count once let magika's values on 1200 samples take 20 GB).
fn sample_bytes(model: &Model, data: &Calibration, names: &[String]) -> Result<Vec<usize>> {
    let g = &model.graph;
    let known: Vec<Option<usize>> = names
        .iter()
        .map(|name| {
            let dims = g.known_dims(g.find_value(name)?)?;
            dims.iter()
                .try_fold(4usize, |n, d| n.checked_mul(usize::try_from((*d)?).ok()?))
        })
        .collect();
    let unknown: Vec<String> = names
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let mut measured = HashMap::new();
    for batch in unknown.chunks(256).filter(|_| !data.samples.is_empty()) {
        let one = data.subset(&[0]);
        for (name, t) in batch.iter().zip(one.capture(model, batch)?) {
            measured.insert(
                name.as_str(),
                t.first().map_or(0, |t| t.len().saturating_mul(4)),
            );
        }
    }
    Ok(names
        .iter()
        .zip(known)
        .map(|(n, k)| k.or_else(|| measured.get(n.as_str()).copied()).unwrap_or(0))
        .collect())
}

/// `names` in consecutive batches, each with the index of its first name,
/// holding at most `CAPTURE_BUDGET` bytes over `in_flight` samples run at
/// once (a value over that alone is a batch of its own).
fn capture_batches<'a>(
    names: &'a [String],
    sizes: &[usize],
    in_flight: usize,
) -> Vec<(usize, &'a [String])> {
    let total = |i: usize| sizes[i].saturating_mul(in_flight.max(1));
    let mut batches = vec![];
    let (mut start, mut bytes) = (0, 0usize);
    for i in 0..names.len() {
        if i > start && bytes.saturating_add(total(i)) > CAPTURE_BUDGET {
            batches.push((start, &names[start..i]));
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(total(i));
    }
    if start < names.len() {
        batches.push((start, &names[start..]));
    }
    batches
}

/// Every output of every sample, in order, as one f32 vector: what the
/// model's error against float is measured on.
pub(super) fn flat(outs: &[crate::runtime::Outputs]) -> Result<Vec<f32>> {
    let mut v = vec![];
    for o in outs {
        for (_, t) in o.iter() {
            v.extend(t.to_f32_vec()?);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_the_budget_over_the_samples_in_flight() {
        let names: Vec<String> = ["a", "b", "big", "c", "d"].map(String::from).into();
        let mb = 1 << 20;
        // Two samples in flight: a and b take 100 MB each, big 600 MB alone.
        let batches = capture_batches(&names, &[50 * mb, 50 * mb, 300 * mb, mb, mb], 2);
        let got: Vec<(usize, Vec<&str>)> = batches
            .iter()
            .map(|(start, b)| (*start, b.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            got,
            vec![(0, vec!["a", "b"]), (2, vec!["big"]), (3, vec!["c", "d"])]
        );
    }
}
