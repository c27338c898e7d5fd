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
        for batch in capture_batches(&model.graph, names, data.samples.len()) {
            let captured = data.capture(model, batch)?;
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
                    let err = if norm > 0.0 { (diff / norm).sqrt() } else { 0.0 };
                    Ok(Calibrated { grid, lo, hi, err })
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
    pub(super) fn grid_of(&self, g: &Graph, name: &str, pair: &Pair, grids: &Grids) -> Result<Grid> {
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
                for (name, pair) in self.plan(&m.graph, std::slice::from_ref(layer), self.flow, &Default::default()) {
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

/// Bytes of captured values one tract run may return (all samples). A tract
/// load per fixed count of values made calibration quadratic on long models
/// (a 100k-node chain has 33k activations to capture); batches bounded by
/// bytes take one run for many small values and stay bounded for large ones.
const CAPTURE_BUDGET: usize = 256 << 20;
/// What a value of unknown shape counts for: 24 of them fill a batch.
const UNKNOWN_SIZE: usize = CAPTURE_BUDGET / 24;

/// `names` in consecutive batches of at most `CAPTURE_BUDGET` bytes of f32
/// values over `samples` samples (at least one value each).
fn capture_batches<'a>(g: &Graph, names: &'a [String], samples: usize) -> Vec<&'a [String]> {
    let outlets: HashMap<&str, Outlet> = g
        .node_ids()
        .flat_map(|id| {
            g.node(id)
                .outputs
                .iter()
                .enumerate()
                .map(move |(slot, v)| (v.name.as_str(), Outlet::new(id, slot)))
        })
        .collect();
    let size = |name: &String| -> usize {
        let dims = outlets.get(name.as_str()).and_then(|&o| g.known_dims(o));
        let numel = dims.and_then(|dims| {
            dims.iter()
                .try_fold(1usize, |n, d| n.checked_mul(usize::try_from((*d)?).ok()?))
        });
        numel.map_or(UNKNOWN_SIZE, |n| n.saturating_mul(4 * samples.max(1)))
    };
    let mut batches = vec![];
    let (mut start, mut bytes) = (0, 0usize);
    for (i, name) in names.iter().enumerate() {
        let b = size(name);
        if i > start && bytes.saturating_add(b) > CAPTURE_BUDGET {
            batches.push(&names[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(b);
    }
    if start < names.len() {
        batches.push(&names[start..]);
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
