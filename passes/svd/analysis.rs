//! Which layers to split, what each is fitted to, and at which rank.

use super::*;

impl Svd {
    /// The layers to consider, in graph order, and a report entry for each
    /// operator of a chosen type that is not one (and why).
    pub(super) fn candidates(&self, g: &Graph) -> (Vec<Layer>, Vec<serde_json::Value>) {
        select_layers(g, &self.ops, |id, name| self.layer(g, id, name))
    }

    pub(super) fn layer(
        &self,
        g: &Graph,
        id: NodeId,
        name: &str,
    ) -> std::result::Result<Layer, String> {
        let op = g.op(id).expect("an operator");
        let (x, weight) = match (g.input(id, 0), g.input(id, 1)) {
            (Some(x), Some(w)) => (x, w),
            _ => return Err("missing input".into()),
        };
        let Some(w) = g.const_tensor(weight) else {
            return Err("weight is not a constant".into());
        };
        let wname = g.outlet_name(weight);
        if self
            .skip
            .iter()
            .any(|p| name_matches(p, name) || name_matches(p, wname))
        {
            return Err("skipped (skip option)".into());
        }
        if w.dtype != DataType::FLOAT {
            return Err(format!("weight is not f32 ({})", w.dtype.short_name()));
        }
        if g.const_tensor(x).is_some() {
            return Err("both operands are constant".into());
        }
        if g.node(id).outputs.len() != 1 {
            return Err("more than one output".into());
        }
        let dims: Vec<usize> = w.dims.iter().map(|&d| d.max(0) as usize).collect();
        let mut patches = None;
        let (kind, k, n, groups) = match op.op_type.as_str() {
            "MatMul" if dims.len() == 2 => (Kind::MatMul, dims[0], dims[1], 1),
            "Gemm" if dims.len() == 2 => {
                let (ta, tb) = (op.attr_int("transA", 0) != 0, op.attr_int("transB", 0) != 0);
                let (k, n) = if tb {
                    (dims[1], dims[0])
                } else {
                    (dims[0], dims[1])
                };
                (Kind::Gemm(ta, tb), k, n, 1)
            }
            "Conv" if dims.len() >= 3 => {
                let groups = op.attr_int("group", 1).max(1) as usize;
                if dims[0] % groups != 0 {
                    return Err(format!(
                        "{} filters do not divide into {groups} groups",
                        dims[0]
                    ));
                }
                let spatial = dims.len() - 2;
                let k = dims[1..].iter().product();
                patches = Some(Patches::of(op, &dims[2..]));
                (Kind::Conv(spatial, groups), k, dims[0] / groups, groups)
            }
            _ => return Err(format!("weight of rank {}", dims.len())),
        };
        // `groups` is from the file: with no filters (n = 0) any divides them.
        let params = groups.saturating_mul(k).saturating_mul(n);
        if params < self.min_params {
            return Err(format!(
                "{params} weights, under min-params={}",
                self.min_params
            ));
        }
        if self.max_rank(k, n) == 0 {
            return Err(format!("too small to pay: K·N={} < min-gain·(K+N)", k * n));
        }
        Ok(Layer {
            node: id,
            name: name.to_string(),
            kind,
            x,
            weight,
            k,
            n,
            groups,
            patches: match patches {
                Some(Ok(p)) if groups == 1 => Some(Ok(p)),
                Some(Ok(_)) => Some(Err("a grouped Conv is fitted to its weights".into())),
                other => other,
            }
            .map(|p| p.map_err(|why| format!("{why}: fitted to its weights"))),
        })
    }

    /// The largest rank at which a split still gains `min-gain`.
    pub(super) fn max_rank(&self, k: usize, n: usize) -> usize {
        ((k * n) as f64 / (self.min_gain * (k + n) as f64)).floor() as usize
    }

    /// How each layer is fitted: to its inputs `X [rows, K]` on the
    /// calibration data (MatMul/Gemm layers with at least K rows of data),
    /// or to its weights (and why).
    pub(super) fn capture(
        &self,
        model: &Model,
        layers: &[Layer],
        data: &crate::calibrate::Calibration,
    ) -> Result<Vec<Fit>> {
        let g = &model.graph;
        let mut out: Vec<Fit> = layers
            .iter()
            .map(|layer| match &layer.patches {
                Some(Err(why)) => Fit::Weights(why.clone()),
                _ => Fit::Weights(String::new()),
            })
            .collect();
        let wanted: Vec<usize> = (0..layers.len())
            .filter(|&i| !matches!(layers[i].patches, Some(Err(_))))
            .collect();
        let mut names: Vec<String> = wanted
            .iter()
            .map(|&i| g.outlet_name(layers[i].x).to_string())
            .collect();
        names.sort();
        names.dedup();
        let captured = data.capture(model, &names)?;
        for i in wanted {
            let layer = &layers[i];
            let at = names
                .binary_search(&g.outlet_name(layer.x).to_string())
                .expect("captured above");
            let x = activation_rows(&captured[at], layer)
                .with_context(|| format!("layer {}: calibration inputs", layer.name))?;
            // Fewer rows than inputs cannot pin down a K×K covariance: the
            // fit would drop every direction the few rows miss.
            out[i] = if x.nrows() >= layer.k {
                Fit::Data(x)
            } else {
                Fit::Weights(format!(
                    "{} rows of calibration inputs for K={}: fitting to data needs at least K",
                    x.nrows(),
                    layer.k
                ))
            };
        }
        Ok(out)
    }

    pub(super) fn decide(&self, g: &Graph, layer: &Layer, fit: &Fit) -> Result<Outcome> {
        let x = match fit {
            Fit::Data(x) => Some(x.as_ref()),
            Fit::Weights(_) => None,
        };
        // Per group: the weight M [K, N], what the fit must keep (the
        // outputs on the data, or M itself) and its spectrum.
        let mut parts = vec![];
        for m in weight_matrices(g, layer)? {
            let (xm, spectrum) = match x {
                Some(x) => {
                    // The spectrum of [X·M; s·M], i.e. of M under the
                    // covariance XᵀX + s²·I: the ridge s² (RIDGE of XᵀX's
                    // mean eigenvalue) keeps directions the data barely
                    // excites from being free.
                    let s = (RIDGE * x.squared_norm_l2() / layer.k as f64).sqrt();
                    let xm = linalg::mul(x, m.as_ref());
                    let ridged = Mat::from_fn(xm.nrows() + m.nrows(), layer.n, |i, j| {
                        if i < xm.nrows() {
                            xm[(i, j)]
                        } else {
                            s * m[(i - xm.nrows(), j)]
                        }
                    });
                    (Some(xm), linalg::spectrum(ridged.as_ref())?)
                }
                None => (None, linalg::spectrum(m.as_ref())?),
            };
            // The rank follows the energy of the outputs' *variation*: their
            // mean (a common offset, large in logits) is one direction the
            // fit keeps anyway, and would make a tiny rank look enough.
            let variation = match &xm {
                Some(xm) => {
                    let rows = xm.nrows() as f64;
                    let mean: Vec<f64> = (0..xm.ncols()).map(|j| xm.col(j).sum() / rows).collect();
                    let centered =
                        Mat::from_fn(xm.nrows(), xm.ncols(), |i, j| xm[(i, j)] - mean[j]);
                    Some(linalg::spectrum(centered.as_ref())?)
                }
                None => None,
            };
            parts.push((m, xm, spectrum, variation));
        }
        // One rank for every group (a grouped Conv has one filter count).
        let full = layer.k.min(layer.n);
        let wanted = parts
            .iter()
            .map(|(_, _, spectrum, variation)| match self.rule {
                RankRule::Energy(e) => variation.as_ref().unwrap_or(spectrum).rank_for_energy(e),
                RankRule::Ratio(q) => (q * full as f64).ceil() as usize,
                RankRule::Fixed(r) => r,
            })
            .max()
            .unwrap_or(1)
            .clamp(1, full);
        let r = wanted
            .div_ceil(self.align)
            .saturating_mul(self.align)
            .min(full);
        let limit = self.max_rank(layer.k, layer.n);
        if r > limit {
            return Ok(Outcome::Kept(format!(
                "rank {r} does not pay: split only up to rank {limit} (min-gain={})",
                self.min_gain
            )));
        }
        let (mut kept, mut total, mut lost) = (0.0, 0.0, 0.0);
        let mut factors = vec![];
        for (m, xm, spectrum, _) in &parts {
            let z = xm.as_ref().map_or(m.as_ref(), |xm| xm.as_ref());
            let z_energy = z.squared_norm_l2();
            let error = linalg::projection_error(z, spectrum.v.as_ref(), r);
            lost += error * error * z_energy;
            total += z_energy;
            kept += spectrum.energy(r) * spectrum.total_energy();
            factors.push(linalg::factors(m.as_ref(), spectrum.v.as_ref(), r));
        }
        let spectra_total: f64 = parts.iter().map(|(_, _, s, _)| s.total_energy()).sum();
        Ok(Outcome::Split {
            r,
            energy: if spectra_total > 0.0 {
                kept / spectra_total
            } else {
                1.0
            },
            error: if total > 0.0 {
                (lost / total).sqrt()
            } else {
                0.0
            },
            factors,
        })
    }
}
