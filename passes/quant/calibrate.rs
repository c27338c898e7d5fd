//! Calibration: each planned activation's grid from its captured values, and
//! each layer's sensitivity for `fallback`.

use super::*;

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
        for batch in names.chunks(24) {
            let captured = data.capture(model, batch)?;
            let ranges: Vec<(f32, f32)> = captured
                .par_iter()
                .map(|samples| -> Result<(f32, f32)> {
                    let values: Vec<Vec<f32>> = samples
                        .iter()
                        .map(|t| t.to_f32_vec())
                        .collect::<Result<_>>()?;
                    let slices: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
                    Ok(quantize::activation_range(&slices, self.method))
                })
                .collect::<Result<_>>()?;
            for (name, (lo, hi)) in batch.iter().zip(ranges) {
                let grid = match act {
                    Act::S8 => Grid::symmetric(lo.abs().max(hi.abs()), 8),
                    Act::U8 => Grid::asymmetric_u8(lo, hi),
                };
                grids.insert(name.clone(), (grid, lo, hi));
            }
        }
        Ok(grids)
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
        let flat = |outs: &[crate::runtime::Outputs]| -> Result<Vec<f32>> {
            let mut v = vec![];
            for o in outs {
                for (_, t) in o.iter() {
                    v.extend(t.to_f32_vec()?);
                }
            }
            Ok(v)
        };
        let want = flat(&reference)?;
        layers
            .par_iter()
            .map(|layer| -> Result<(String, f64)> {
                let mut m = model.clone();
                let mut patch = Patch::new(format!("quant: {}", layer.name));
                self.quantize_weights(&m.graph, std::slice::from_ref(layer), &mut patch)?;
                for (name, pair) in self.plan(&m.graph, std::slice::from_ref(layer)) {
                    let (grid, _, _) = grids
                        .get(&name)
                        .with_context(|| format!("value {name} was not calibrated"))?;
                    self.add_pair(&mut patch, &name, &pair, grid);
                }
                patch.apply(&mut m.graph)?;
                let got = data.run(&m, &[])?;
                Ok((layer.name.clone(), quantize::rel_l2(&flat(&got)?, &want)))
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().collect())
    }
}
