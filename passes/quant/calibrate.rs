//! Calibration: each planned activation's grid from its captured values, and
//! each layer's sensitivity for `fallback`.

use super::*;
use std::collections::HashMap;

impl Quant {
    /// Each planned activation's grid and calibrated range, from its values
    /// on every sample (captured in tract, a bounded batch of values at a
    /// time).
    pub(super) fn calibrate(
        &self,
        model: &Model,
        data: &Calibration,
        names: &[String],
        act: Act,
    ) -> Result<Grids> {
        let mut grids = BTreeMap::new();
        let sizes = sample_bytes(model, data, names)?;
        for (batch, used) in capture_batches(names, &sizes, data.samples.len()) {
            // A value too large to hold on every sample is calibrated on
            // samples spread over the data, as many as the budget holds.
            let subset = (used < data.samples.len()).then_some(used);
            let captured = match subset {
                Some(n) => data
                    .subset(&crate::data::spread(data.samples.len(), n))
                    .capture(model, batch)?,
                None => data.capture(model, batch)?,
            };
            let calibrated: Vec<Calibrated> = captured
                .par_iter()
                .map(|samples| -> Result<Calibrated> {
                    let values: Vec<Vec<f32>> = samples
                        .iter()
                        .map(|t| t.to_f32_vec())
                        .collect::<Result<_>>()?;
                    let slices: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
                    let (lo, hi) = quantize::activation_range(&slices, self.method);
                    let grid = match act {
                        Act::S8 => Grid::symmetric(lo.abs().max(hi.abs()), 8),
                        Act::U8 => Grid::asymmetric_u8(lo, hi),
                    };
                    let (mut diff, mut norm) = (0f64, 0f64);
                    for &x in values.iter().flatten() {
                        let d = (x - grid.dequantize(grid.quantize(x))) as f64;
                        diff += d * d;
                        norm += (x as f64) * (x as f64);
                    }
                    let err = if norm > 0.0 {
                        (diff / norm).sqrt()
                    } else {
                        0.0
                    };
                    Ok(Calibrated {
                        grid,
                        lo,
                        hi,
                        err,
                        subset,
                    })
                })
                .collect::<Result<_>>()?;
            for (name, c) in batch.iter().zip(calibrated) {
                grids.insert(name.clone(), c);
            }
        }
        Ok(grids)
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
    /// over every output and sample) of the model with only that layer
    /// quantized.
    pub(super) fn sensitivity(
        &self,
        model: &Model,
        data: &Calibration,
        layers: &[Layer],
        grids: &Grids,
    ) -> Result<BTreeMap<String, f64>> {
        let reference = data.run(model, &[])?;
        let want = flat(&reference)?;
        layers
            .par_iter()
            .map(|layer| -> Result<(String, f64)> {
                let mut m = model.clone();
                let mut patch = Patch::new(format!("quant: {}", layer.name));
                self.quantize_weights(&m.graph, std::slice::from_ref(layer), &mut patch)?;
                for (name, pair) in self.plan(
                    &m.graph,
                    std::slice::from_ref(layer),
                    self.flow,
                    &Default::default(),
                ) {
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

/// Bytes of captured values one run may return (all samples). A load per
/// fixed count of values made calibration quadratic on long models (a
/// 100k-node chain has 33k activations to capture); batches bounded by
/// bytes take one run for many small values and stay bounded for large ones.
const CAPTURE_BUDGET: usize = 256 << 20;

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

/// `names` in consecutive batches of at most `CAPTURE_BUDGET` bytes over
/// `samples` samples, each with the samples it is captured on: all, or for
/// a value over the budget alone, as many as the budget holds.
fn capture_batches<'a>(
    names: &'a [String],
    sizes: &[usize],
    samples: usize,
) -> Vec<(&'a [String], usize)> {
    let samples = samples.max(1);
    let total = |i: usize| sizes[i].saturating_mul(samples);
    let mut ranges = vec![];
    let (mut start, mut bytes) = (0, 0usize);
    for i in 0..names.len() {
        if i > start && bytes.saturating_add(total(i)) > CAPTURE_BUDGET {
            ranges.push((start, i, bytes));
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(total(i));
    }
    if start < names.len() {
        ranges.push((start, names.len(), bytes));
    }
    ranges
        .into_iter()
        .map(|(start, end, bytes)| {
            // Only a batch of one value can be over the budget.
            let used = match bytes > CAPTURE_BUDGET {
                true => (CAPTURE_BUDGET / sizes[start].max(1)).clamp(1, samples),
                false => samples,
            };
            (&names[start..end], used)
        })
        .collect()
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
    fn a_value_too_large_for_every_sample_is_captured_on_fewer() {
        let names: Vec<String> = ["a", "b", "big", "c"].map(String::from).into();
        let mb = 1 << 20;
        // 1000 samples: a and b take 100 MB each, big 10 GB, c 1 GB.
        let batches = capture_batches(&names, &[100 * 1024, 100 * 1024, 10 * mb, mb], 1000);
        let got: Vec<(Vec<&str>, usize)> = batches
            .iter()
            .map(|(b, n)| (b.iter().map(String::as_str).collect(), *n))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec!["a", "b"], 1000),
                (vec!["big"], 25), // 256 MB of 10 MB samples
                (vec!["c"], 256),
            ]
        );
    }
}
