//! # svd
//!
//! **What:** splits a layer with a constant weight into two thinner ones by a
//! truncated singular value decomposition, `W ≈ U_r·Σ_r·V_rᵀ`: a `MatMul` or
//! `Gemm` of `K` inputs and `N` outputs becomes `x·A` then `·B` with
//! `A [K,r] = U_r·√Σ_r` and `B [r,N] = √Σ_r·V_rᵀ`; a `Conv` k×k becomes a
//! Conv k×k with `r` filters followed by a Conv 1×1 from `r` to `C_out`.
//!
//! **Why:** trained layers are close to low rank; when `r·(K+N)` is well
//! below `K·N`, the pair costs fewer multiply-adds and parameters than the
//! layer (FACTS: 1024×1024 at r=128 runs 3.3–3.7× faster in tract). It is
//! lossy: the report gives each layer's kept energy and measured error, and
//! `--verify` measures the model's.
//!
//! ```text
//! y = MatMul(x, W[K,N])             t = MatMul(x, A[K,r]);  y = MatMul(t, B[r,N])
//! y = Gemm(x, W, C){transB, α, β} → t = Gemm(x, A){transB}; y = Gemm(t, B, C){transB, α, β}
//! y = Conv(x, W[O,I,kh,kw], b)      t = Conv(x, A[r,I,kh,kw]) (strides, pads, dilations kept)
//!                                   y = Conv(t, B[O,r,1,1], b)
//! ```
//!
//! **Data-aware fit:** with `--inputs`, a layer is fitted to its *outputs*
//! on that data rather than to its weights: with the layer's inputs `X`
//! (captured in tract; for a Conv, its input windows), the factors are
//! `A = W·V_r`, `B = V_rᵀ` with `V` the right singular vectors of `X·W` (plus
//! a small ridge), the rank-r map closest to `W` on that data: directions the
//! data never excites cost nothing. The rank then follows the energy of the
//! outputs' variation, and the reported error is the outputs'. A layer with
//! fewer rows of data than inputs K, a grouped Conv, and a Conv with
//! `auto_pad` or more than 2 spatial dims are fitted to their weights, and
//! the report says so.
//!
//! **Which layers:** f32 weights stored as initializers (or `Constant`
//! nodes, lifted first), of at least `min-params` weights, in the main
//! graph; `MatMul` with the weight as its second input. A grouped `Conv` is
//! factored group by group with one rank for all (both new Convs keep
//! `group`); a depthwise one never pays (K = kh·kw, N = 1). A layer is split only when `K·N ≥ min-gain·r·(K+N)`, so no split
//! ever adds work. Every layer considered is reported, split or not, and why.
//!
//! **Options:** the rank comes from `rank` if set, else `ratio` if set, else
//! `energy`; see `onnx-opt passes`.

use crate::ir::{Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor};
use crate::linalg;
use crate::passes::{name_matches, select_layers, DataUse, PassInfo};
use crate::pipeline::{OptionInfo, Options, Pass, PassContext, Pipeline};
use anyhow::{bail, ensure, Context, Result};
use faer::Mat;
use rayon::prelude::*;
use serde_json::json;

pub const INFO: PassInfo = PassInfo {
    name: "svd",
    summary: "split Gemm/MatMul/Conv layers in two low-rank ones (W ≈ UΣVᵀ) where it saves work",
    exact: false,
    data: DataUse::IfGiven,
    options: &[
        OptionInfo {
            name: "energy",
            default: "0.9",
            help: "keep the smallest rank holding this fraction of Σσ² (0 < energy ≤ 1)",
        },
        OptionInfo {
            name: "ratio",
            default: "0",
            help: "rank = ceil(ratio·min(K,N)) instead (0 < ratio ≤ 1; 0: unset)",
        },
        OptionInfo {
            name: "rank",
            default: "0",
            help: "a fixed rank instead (0: unset)",
        },
        OptionInfo {
            name: "min-gain",
            default: "1.5",
            help: "split only when K·N ≥ min-gain·r·(K+N) (≥ 1: never adds work)",
        },
        OptionInfo {
            name: "align",
            default: "8",
            help: "round the rank up to a multiple of this (SIMD-friendly shapes)",
        },
        OptionInfo {
            name: "ops",
            default: "Gemm|MatMul|Conv",
            help: "operator types to consider",
        },
        OptionInfo {
            name: "skip",
            default: "",
            help: "layers to leave alone: node or weight names, `*` matches any run (a|b*|*c)",
        },
        OptionInfo {
            name: "min-params",
            default: "16384",
            help: "leave layers with fewer weights alone",
        },
        OptionInfo {
            name: "fit",
            default: "auto",
            help: "auto: fit each layer to its outputs on --inputs when given; weights: never",
        },
    ],
    build,
};

enum RankRule {
    Energy(f64),
    Ratio(f64),
    Fixed(usize),
}

struct Svd {
    rule: RankRule,
    min_gain: f64,
    align: usize,
    ops: Vec<String>,
    skip: Vec<String>,
    min_params: usize,
    fit_data: bool,
    lift: Pipeline,
}

fn build(o: &Options) -> Result<Box<dyn Pass>> {
    let (energy, ratio, rank): (f64, f64, usize) =
        (o.get("energy")?, o.get("ratio")?, o.get("rank")?);
    ensure!(
        energy > 0.0 && energy <= 1.0,
        "pass 'svd': energy={energy} must be in (0, 1]"
    );
    ensure!(
        (0.0..=1.0).contains(&ratio),
        "pass 'svd': ratio={ratio} must be in (0, 1] (0: unset)"
    );
    let rule = if rank > 0 {
        RankRule::Fixed(rank)
    } else if ratio > 0.0 {
        RankRule::Ratio(ratio)
    } else {
        RankRule::Energy(energy)
    };
    let min_gain: f64 = o.get("min-gain")?;
    ensure!(
        min_gain >= 1.0,
        "pass 'svd': min-gain={min_gain} must be ≥ 1 (below 1 a split adds work)"
    );
    let align: usize = o.get("align")?;
    ensure!(align >= 1, "pass 'svd': align must be ≥ 1");
    let ops = o.list("ops")?;
    for op in &ops {
        ensure!(
            ["Gemm", "MatMul", "Conv"].contains(&op.as_str()),
            "pass 'svd': ops may hold Gemm, MatMul, Conv (got {op})"
        );
    }
    let fit: String = o.get("fit")?;
    let fit_data = match fit.as_str() {
        "auto" => true,
        "weights" => false,
        other => bail!("pass 'svd': fit={other} must be auto or weights"),
    };
    Ok(Box::new(Svd {
        rule,
        min_gain,
        align,
        ops,
        skip: o.list("skip")?,
        min_params: o.get("min-params")?,
        fit_data,
        lift: Pipeline::parse("lift-constants")?,
    }))
}

/// How a layer holds its weight.
#[derive(Clone, Copy, Debug)]
enum Kind {
    MatMul,
    /// `transA`, `transB`.
    Gemm(bool, bool),
    /// Kernel rank (spatial dims) and groups.
    Conv(usize, usize),
}

/// A layer that may be split: `y = x·M`, `M [K, N]` (per group, for a
/// grouped Conv: group j maps its K inputs to its N outputs).
struct Layer {
    node: NodeId,
    name: String,
    kind: Kind,
    x: Outlet,
    weight: Outlet,
    k: usize,
    n: usize,
    groups: usize,
    /// A Conv's window for fitting to data, or why it is fitted to its
    /// weights (`None` for MatMul/Gemm).
    patches: Option<std::result::Result<Patches, String>>,
}

/// The window a Conv (group 1, 1-D or 2-D, explicit pads) reads for each
/// output position, as 2-D (a 1-D Conv has height 1): its im2col, for
/// fitting to the data it sees.
#[derive(Clone, Debug)]
struct Patches {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads_begin: [usize; 2],
    pads_end: [usize; 2],
}

impl Patches {
    fn of(op: &Operator, kernel: &[usize]) -> std::result::Result<Patches, String> {
        let spatial = kernel.len();
        if spatial > 2 {
            return Err(format!("{spatial}-D Conv"));
        }
        let auto_pad = op.attr("auto_pad").and_then(|a| match &a.value {
            crate::ir::AttrValue::String(s) => Some(String::from_utf8_lossy(s).to_string()),
            _ => None,
        });
        if auto_pad.is_some_and(|p| p != "NOTSET") {
            return Err("auto_pad".into());
        }
        let ints =
            |name: &str, len: usize, default: i64| -> std::result::Result<Vec<usize>, String> {
                let v = op
                    .attr_ints(name)
                    .map_or(vec![default; len], <[i64]>::to_vec);
                if v.len() != len || v.iter().any(|&d| d < 0) {
                    return Err(format!("{name} {v:?}"));
                }
                Ok(v.into_iter().map(|d| d as usize).collect())
            };
        let (strides, dilations) = (ints("strides", spatial, 1)?, ints("dilations", spatial, 1)?);
        let pads = ints("pads", 2 * spatial, 0)?;
        // As 2-D: a 1-D Conv is a 1×k one.
        let two = |v: &[usize], fill: usize| {
            if v.len() == 2 {
                [v[0], v[1]]
            } else {
                [fill, v[0]]
            }
        };
        Ok(Patches {
            kernel: two(kernel, 1),
            strides: two(&strides, 1),
            dilations: two(&dilations, 1),
            pads_begin: two(&pads[..spatial], 0),
            pads_end: two(&pads[spatial..], 0),
        })
    }

    /// The rows `[C·kh·kw]` a Conv multiplies by its weights, for every
    /// output position of an input `[N, C, H, W]` (or `[N, C, W]`) whose
    /// global index (counting from `first`) is a multiple of `step`.
    fn rows(
        &self,
        x: &[f32],
        shape: &[usize],
        first: usize,
        step: usize,
        out: &mut Vec<f32>,
    ) -> Result<usize> {
        let ([n, c, h, w], [oh, ow]) = self.geometry(shape)?;
        ensure!(
            x.len() == n * c * h * w,
            "input of {} values for shape {shape:?}",
            x.len()
        );
        let [kh, kw] = self.kernel;
        let mut index = first;
        for b in 0..n {
            for y in 0..oh {
                for xo in 0..ow {
                    index += 1;
                    if (index - 1) % step != 0 {
                        continue;
                    }
                    for ch in 0..c {
                        for i in 0..kh {
                            let row = (y * self.strides[0] + i * self.dilations[0]) as isize
                                - self.pads_begin[0] as isize;
                            for j in 0..kw {
                                let col = (xo * self.strides[1] + j * self.dilations[1]) as isize
                                    - self.pads_begin[1] as isize;
                                let inside = row >= 0
                                    && col >= 0
                                    && (row as usize) < h
                                    && (col as usize) < w;
                                out.push(if inside {
                                    x[((b * c + ch) * h + row as usize) * w + col as usize]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(n * oh * ow)
    }

    /// `[N, C, H, W]` of an input of `shape` and the output's `[H, W]`.
    fn geometry(&self, shape: &[usize]) -> Result<([usize; 4], [usize; 2])> {
        let dims = match *shape {
            [n, c, h, w] => [n, c, h, w],
            [n, c, w] => [n, c, 1, w],
            _ => bail!("input shape {shape:?}"),
        };
        let size = |axis: usize, len: usize| {
            let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
            let padded = len + self.pads_begin[axis] + self.pads_end[axis];
            if padded < span || self.strides[axis] == 0 {
                0
            } else {
                (padded - span) / self.strides[axis] + 1
            }
        };
        Ok((dims, [size(0, dims[2]), size(1, dims[3])]))
    }

    /// Output positions of an input of `shape` (for the sampling step).
    fn positions(&self, shape: &[usize]) -> usize {
        self.geometry(shape)
            .map_or(0, |([n, ..], [oh, ow])| n * oh * ow)
    }
}

/// What a layer is fitted to.
enum Fit {
    /// Its outputs on these inputs `X [rows, K]`.
    Data(Mat<f64>),
    /// Its weights, for this reason.
    Weights(String),
}

/// Weight of the identity in the data-aware fit, relative to the mean
/// eigenvalue of the inputs' covariance.
const RIDGE: f64 = 1e-2;

/// What was decided for one layer.
enum Outcome {
    Split {
        r: usize,
        energy: f64,
        /// Relative error of the layer's outputs on the calibration data, or
        /// of its weights without data.
        error: f64,
        /// Per group: `a [K, r]`, `b [r, N]`.
        factors: Vec<(Mat<f64>, Mat<f64>)>,
    },
    Kept(String),
}

impl Pass for Svd {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        self.lift.run_nested(model, cx)?;
        let (layers, mut report) = self.candidates(&model.graph);
        let data = cx.data.as_ref().filter(|d| self.fit_data && !d.random);
        let fits = match data {
            Some(d) => self.capture(model, &layers, d)?,
            None => {
                let why = if self.fit_data {
                    "no --inputs"
                } else {
                    "fit=weights"
                };
                layers.iter().map(|_| Fit::Weights(why.into())).collect()
            }
        };
        let outcomes: Vec<Outcome> = layers
            .par_iter()
            .zip(fits.par_iter())
            .map(|(layer, fit)| {
                self.decide(&model.graph, layer, fit)
                    .with_context(|| format!("layer {}", layer.name))
            })
            .collect::<Result<_>>()?;
        let mut split = 0;
        for ((layer, outcome), fit) in layers.iter().zip(outcomes).zip(&fits) {
            let (fitted_to, error_kind) = match fit {
                Fit::Data(_) => ("outputs on --inputs".to_string(), "output_rel_err"),
                Fit::Weights(why) => (format!("weights ({why})"), "weight_rel_err"),
            };
            let groups = layer.groups;
            let mut entry = json!({
                "layer": layer.name, "op": kind_name(layer.kind), "K": layer.k, "N": layer.n,
                "params_before": groups * layer.k * layer.n,
                "flops_per_position_before": 2 * groups * layer.k * layer.n,
            });
            if groups > 1 {
                entry["groups"] = json!(groups);
            }
            match outcome {
                Outcome::Split {
                    r,
                    energy,
                    error,
                    factors,
                } => {
                    let patch = self.patch(&model.graph, layer, &factors);
                    patch
                        .apply(&mut model.graph)
                        .with_context(|| format!("layer {}", layer.name))?;
                    split += 1;
                    let after = groups * r * (layer.k + layer.n);
                    entry["r"] = json!(r);
                    entry["energy_kept"] = json!(energy);
                    entry[error_kind] = json!(error);
                    entry["params_after"] = json!(after);
                    entry["flops_per_position_after"] = json!(2 * after);
                    entry["fitted_to"] = json!(fitted_to);
                }
                Outcome::Kept(why) => entry["kept"] = json!(why),
            }
            report.push(entry);
        }
        Ok(json!({
            "split": split,
            "calibration": data.map_or("none".to_string(), |d| format!("{} ({} samples)", d.source, d.samples.len())),
            "layers": report,
        }))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::MatMul => "MatMul",
        Kind::Gemm(..) => "Gemm",
        Kind::Conv(..) => "Conv",
    }
}

impl Svd {
    /// The layers to consider, in graph order, and a report entry for each
    /// operator of a chosen type that is not one (and why).
    fn candidates(&self, g: &Graph) -> (Vec<Layer>, Vec<serde_json::Value>) {
        select_layers(g, &self.ops, |id, name| self.layer(g, id, name))
    }

    fn layer(&self, g: &Graph, id: NodeId, name: &str) -> std::result::Result<Layer, String> {
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
        if groups * k * n < self.min_params {
            return Err(format!(
                "{} weights, under min-params={}",
                groups * k * n,
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
    fn max_rank(&self, k: usize, n: usize) -> usize {
        ((k * n) as f64 / (self.min_gain * (k + n) as f64)).floor() as usize
    }

    /// How each layer is fitted: to its inputs `X [rows, K]` on the
    /// calibration data (MatMul/Gemm layers with at least K rows of data),
    /// or to its weights (and why).
    fn capture(
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

    fn decide(&self, g: &Graph, layer: &Layer, fit: &Fit) -> Result<Outcome> {
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

    /// The two layers replacing `layer`.
    fn patch(&self, g: &Graph, layer: &Layer, factors: &[(Mat<f64>, Mat<f64>)]) -> Patch {
        let id = layer.node;
        let op = g.op(id).expect("an operator");
        let (a, b) = (factors[0].0.as_ref(), factors[0].1.as_ref());
        let r = a.ncols() as i64;
        let (k, n) = (layer.k as i64, layer.n as i64);
        let wname = g.outlet_name(layer.weight).to_string();
        let y = Outlet::new(id, 0);
        let yname = g.outlet_name(y).to_string();
        let mut patch = Patch::new(format!("svd: {}", layer.name));
        let (first, second, wa, wb) = match layer.kind {
            Kind::MatMul => (
                Operator::new("MatMul", 2, vec![]),
                Operator::new("MatMul", 2, vec![]),
                Tensor::from_f32(vec![k, r], &linalg::to_rows(a)),
                Tensor::from_f32(vec![r, n], &linalg::to_rows(b)),
            ),
            Kind::Gemm(ta, tb) => {
                // The first Gemm keeps transA and the weight layout (transB);
                // the second carries alpha, beta and the bias.
                let mut first = Operator::new("Gemm", 2, vec![]);
                if ta {
                    first.set_attr(Attribute::int("transA", 1));
                }
                let mut second = op.clone();
                second
                    .attributes
                    .retain(|attr| ["alpha", "beta", "transB"].contains(&attr.name.as_str()));
                let (wa, wb) = if tb {
                    first.set_attr(Attribute::int("transB", 1));
                    (
                        Tensor::from_f32(vec![r, k], &linalg::to_rows(a.transpose())),
                        Tensor::from_f32(vec![n, r], &linalg::to_rows(b.transpose())),
                    )
                } else {
                    (
                        Tensor::from_f32(vec![k, r], &linalg::to_rows(a)),
                        Tensor::from_f32(vec![r, n], &linalg::to_rows(b)),
                    )
                };
                (first, second, wa, wb)
            }
            Kind::Conv(spatial, groups) => {
                let w = g.const_tensor(layer.weight).expect("checked");
                let mut dims_a = w.dims.clone();
                dims_a[0] = r * groups as i64;
                let mut dims_b = vec![n * groups as i64, r];
                dims_b.extend(std::iter::repeat_n(1, spatial));
                let mut first = op.clone();
                first.arity = 2;
                let mut second = Operator::new("Conv", op.arity, vec![]);
                if op.attr_ints("kernel_shape").is_some() {
                    second.set_attr(Attribute::ints("kernel_shape", &vec![1; spatial]));
                }
                if groups > 1 {
                    second.set_attr(Attribute::int("group", groups as i64));
                }
                // Group j's A [K, r] holds its filter i in column i, so its
                // filters are the rows of Aᵀ; its 1×1 weight is Bᵀ [N, r]
                // (output o reads B[:, o]). Groups follow one another.
                let (mut wa, mut wb) = (vec![], vec![]);
                for (a, b) in factors {
                    wa.extend(linalg::to_rows(a.transpose()));
                    wb.extend(linalg::to_rows(b.transpose()));
                }
                (
                    first,
                    second,
                    Tensor::from_f32(dims_a, &wa),
                    Tensor::from_f32(dims_b, &wb),
                )
            }
        };
        let wa = patch.add_const(&format!("{wname}_svd_a"), wa);
        let wb = patch.add_const(&format!("{wname}_svd_b"), wb);
        let t = patch.add_op(
            Some(format!("{}_svd_a", layer.name)),
            first,
            vec![Some(layer.x.into()), Some(wa)],
            &[&format!("{yname}_low_rank")],
        );
        let mut inputs = vec![Some(Patch::out(t, 0)), Some(wb)];
        if let Some(bias) = g.input(id, 2) {
            inputs.push(Some(bias.into()));
        }
        let out = patch.add_op(
            Some(format!("{}_svd_b", layer.name)),
            second,
            inputs,
            &[&yname],
        );
        patch.shunt(y, Patch::out(out, 0));
        patch.remove(id);
        // The old weight goes unless something else uses it (the bias stays).
        let w = layer.weight;
        if !g.is_graph_output(w) && g.consumers(w).iter().all(|&(user, _)| user == id) {
            patch.remove(w.node);
        }
        patch
    }
}

/// The layer's weight as `M [K, N]` (`y = x·M`), one per group.
fn weight_matrices(g: &Graph, layer: &Layer) -> Result<Vec<Mat<f64>>> {
    let w = g.const_tensor(layer.weight).context("weight")?.to_f32()?;
    let (k, n) = (layer.k, layer.n);
    Ok(match layer.kind {
        Kind::MatMul | Kind::Gemm(_, false) => vec![linalg::from_rows(k, n, &w)],
        Kind::Gemm(_, true) => vec![linalg::from_rows(n, k, &w).transpose().to_owned()],
        // [O, I/g·kh·kw]: group j owns filters j·N .. (j+1)·N.
        Kind::Conv(..) => w
            .chunks_exact(n * k)
            .map(|group| linalg::from_rows(n, k, group).transpose().to_owned())
            .collect(),
    })
}

/// Most rows of calibration inputs used for a fit: past a few thousand,
/// more rows change a K×K covariance little and cost time.
const MAX_ROWS: usize = 8192;

/// A layer's captured inputs (one tensor per sample) as rows of the K
/// features its weights multiply (a Conv's input windows), at most
/// `MAX_ROWS` of them, evenly spaced (the same every run).
fn activation_rows(samples: &[crate::runtime::Tensor], layer: &Layer) -> Result<Mat<f64>> {
    let k = layer.k;
    let mut flat: Vec<f32> = vec![];
    if let Some(Ok(patches)) = &layer.patches {
        let total: usize = samples.iter().map(|t| patches.positions(t.shape())).sum();
        let step = total.div_ceil(MAX_ROWS).max(1);
        let mut first = 0;
        for t in samples {
            first += patches.rows(&t.to_f32_vec()?, t.shape(), first, step, &mut flat)?;
        }
    } else {
        let mut all: Vec<f32> = vec![];
        for t in samples {
            let values = t.to_f32_vec()?;
            let shape = t.shape();
            if let Kind::Gemm(true, _) = layer.kind {
                // x is [K, M]: column j is row j.
                ensure!(shape.len() == 2 && shape[0] == k, "input shape {shape:?}");
                let m = shape[1];
                all.extend(
                    (0..m)
                        .flat_map(|j| (0..k).map(move |i| (i, j)))
                        .map(|(i, j)| values[i * m + j]),
                );
            } else {
                ensure!(
                    shape.last() == Some(&k),
                    "input shape {shape:?}, expected a last axis of {k}"
                );
                all.extend_from_slice(&values);
            }
        }
        let step = (all.len() / k).div_ceil(MAX_ROWS).max(1);
        flat = all
            .chunks_exact(k)
            .step_by(step)
            .flatten()
            .copied()
            .collect();
    }
    let rows = flat.len() / k;
    ensure!(rows > 0, "no rows");
    Ok(linalg::from_rows(rows, k, &flat))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model, Tensor};
    use crate::passes::fuse_bn::tests::{init, values};
    use crate::passes::name_matches;
    use crate::passes::testing::{check, max_rel_err, op_types as ops, rewrite};
    use crate::pipeline::Pipeline;

    /// Options that split an exactly rank-4 weight at rank 4 (the rest of
    /// its spectrum is rounding noise).
    const EXACT: &str = "svd{energy=0.9999,align=1,min-params=0}";

    /// A `rows × cols` weight of rank 4, stored row-major.
    fn rank4(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let u = values(seed, rows * 4, -1.0, 1.0);
        let v = values(seed + 1, cols * 4, -1.0, 1.0);
        (0..rows * cols)
            .map(|at| {
                let (i, j) = (at / cols, at % cols);
                (0..4).map(|t| u[i * 4 + t] * v[j * 4 + t]).sum()
            })
            .collect()
    }

    fn matmul(x_dims: &[i64], k: i64, n: i64, w: Vec<f32>) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, x_dims);
        let w = b.init("w", Tensor::from_f32(vec![k, n], &w));
        let y = b.op("MatMul", &[x, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    fn gemm(trans_a: bool, trans_b: bool) -> Model {
        let (m, k, n) = (3, 40, 24);
        let mut b = ModelBuilder::new(13);
        let x_dims = if trans_a { [k, m] } else { [m, k] };
        let x = b.input("x", DataType::FLOAT, &x_dims);
        let w = rank4(k as usize, n as usize, 7);
        let w = if trans_b {
            // Stored [N, K].
            let (k, n) = (k as usize, n as usize);
            (0..n * k).map(|at| w[(at % k) * n + at / k]).collect()
        } else {
            w
        };
        let w_dims = if trans_b { vec![n, k] } else { vec![k, n] };
        let w = b.init("w", Tensor::from_f32(w_dims, &w));
        let c = init(&mut b, "c", &[n], 9);
        let attrs = vec![
            Attribute::int("transA", trans_a as i64),
            Attribute::int("transB", trans_b as i64),
            Attribute::float("alpha", 0.5),
            Attribute::float("beta", 2.0),
        ];
        let y = b.op("Gemm", &[x, w, c], attrs, "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    fn conv() -> Model {
        let (o, i) = (24, 6);
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, i, 9, 9]);
        // [O, I·3·3] of rank 4.
        let w = b.init("w", Tensor::from_f32(vec![o, i, 3, 3], &rank4(24, 54, 11)));
        let bias = init(&mut b, "b", &[o], 12);
        let attrs = vec![
            Attribute::ints("kernel_shape", &[3, 3]),
            Attribute::ints("strides", &[2, 2]),
            Attribute::ints("pads", &[1, 0, 1, 2]),
            Attribute::ints("dilations", &[1, 1]),
        ];
        let y = b.op("Conv", &[x, w, bias], attrs, "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn an_exactly_low_rank_layer_splits_without_changing_outputs() {
        for (name, model, want) in [
            (
                "svd__matmul-rank3-input",
                matmul(&[2, 5, 48], 48, 40, rank4(48, 40, 3)),
                ["MatMul", "MatMul"],
            ),
            ("svd__gemm", gemm(false, false), ["Gemm", "Gemm"]),
            ("svd__gemm-transb", gemm(false, true), ["Gemm", "Gemm"]),
            (
                "svd__gemm-transa-transb",
                gemm(true, true),
                ["Gemm", "Gemm"],
            ),
            ("svd__conv-strided-padded", conv(), ["Conv", "Conv"]),
        ] {
            let out = check(name, &model, EXACT);
            assert_eq!(ops(&out), want, "{name}");
        }
    }

    #[test]
    fn the_rank_follows_the_energy_ratio_or_fixed_rule() {
        // Singular values 1, 1/2, 1/4, ... on a 64×64 identity-like basis.
        let n = 64usize;
        let w: Vec<f32> = (0..n * n)
            .map(|at| {
                if at / n == at % n {
                    0.5f32.powi((at / n) as i32)
                } else {
                    0.0
                }
            })
            .collect();
        let model = matmul(&[1, 64], 64, 64, w);
        let rank_of = |passes: &str| {
            let out = rewrite(&model, passes);
            let g = &out.graph;
            let a = g.find_value("w_svd_a").expect("split");
            g.const_tensor(a).unwrap().dims[1]
        };
        // Energies 3/4, 15/16, 63/64, ...: 0.99 needs 4 values.
        assert_eq!(rank_of("svd{energy=0.99,align=1,min-params=0}"), 4);
        assert_eq!(rank_of("svd{energy=0.99,align=8,min-params=0}"), 8);
        assert_eq!(rank_of("svd{ratio=0.25,min-params=0}"), 16);
        assert_eq!(rank_of("svd{rank=3,align=1,min-params=0}"), 3);
        // Small errors for what is kept: rank 8 keeps all but 4^-8.
        let out = rewrite(&model, "svd{energy=0.99,min-params=0}");
        assert!(max_rel_err(&model, &out) < 1e-2);
    }

    #[test]
    fn a_layer_is_kept_when_the_split_would_not_pay_or_is_excluded() {
        // A full-rank (random) weight: energy 0.9 needs most of the rank.
        let random = matmul(&[1, 64], 64, 64, values(5, 64 * 64, -1.0, 1.0));
        for passes in [
            "svd{min-params=0}",
            "svd{energy=0.9999,align=1}",
            "svd{energy=0.9999,align=1,min-params=0,skip=w}",
            "svd{energy=0.9999,align=1,min-params=0,skip=y*}",
            "svd{energy=0.9999,align=1,min-params=0,ops=Conv}",
        ] {
            let model = if passes == "svd{min-params=0}" {
                random.clone()
            } else {
                matmul(&[1, 64], 64, 64, rank4(64, 64, 1))
            };
            let out = rewrite(&model, passes);
            assert_eq!(ops(&out), ["MatMul"], "{passes}");
        }
    }

    #[test]
    fn the_report_says_why_each_layer_was_kept_or_split() {
        let mut model = matmul(&[1, 64], 64, 64, values(5, 64 * 64, -1.0, 1.0));
        let reports = Pipeline::parse("svd{min-params=0}")
            .unwrap()
            .run(&mut model, &Default::default(), &mut |_| {})
            .unwrap();
        let layer = &reports[0].details["layers"][0];
        assert_eq!(layer["layer"], "y");
        assert!(
            layer["kept"].as_str().unwrap().contains("does not pay"),
            "{layer}"
        );
        let mut model = matmul(&[1, 64], 64, 64, rank4(64, 64, 1));
        let reports = Pipeline::parse(EXACT)
            .unwrap()
            .run(&mut model, &Default::default(), &mut |_| {})
            .unwrap();
        let layer = &reports[0].details["layers"][0];
        assert_eq!(layer["r"], 4);
        assert_eq!(layer["params_after"], 4 * 128);
        assert!(layer["weight_rel_err"].as_f64().unwrap() < 1e-6, "{layer}");
        assert_eq!(layer["fitted_to"], "weights (no --inputs)");
    }

    #[test]
    fn a_grouped_conv_splits_group_by_group_and_a_depthwise_one_never_pays() {
        // Two groups of 8 filters over 4 input channels, each of rank 4.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 8, 6, 6]);
        let mut w = rank4(8, 36, 21);
        w.extend(rank4(8, 36, 23));
        let w = b.init("w", Tensor::from_f32(vec![16, 4, 3, 3], &w));
        let attrs = vec![
            Attribute::int("group", 2),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        let y = b.op("Conv", &[x, w], attrs, "y");
        b.output(y, DataType::FLOAT);
        let out = check("svd__conv-grouped", &b.build().unwrap(), EXACT);
        assert_eq!(ops(&out), ["Conv", "Conv"]);

        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 8, 5, 5]);
        let w = init(&mut b, "w", &[8, 1, 3, 3], 3);
        let y = b.op("Conv", &[x, w], vec![Attribute::int("group", 8)], "y");
        b.output(y, DataType::FLOAT);
        let mut model = b.build().unwrap();
        let reports = Pipeline::parse("svd{rank=1,align=1,min-params=0}")
            .unwrap()
            .run(&mut model, &Default::default(), &mut |_| {})
            .unwrap();
        assert_eq!(ops(&model), ["Conv"]);
        let layer = &reports[0].details["layers"][0];
        assert!(
            layer["kept"].as_str().unwrap().contains("too small to pay"),
            "{layer}"
        );
    }

    /// The rows a Conv's fit uses, times its weight matrix, are the Conv's
    /// outputs: the im2col window matches ONNX's (pads, strides, dilations).
    #[test]
    fn conv_input_windows_times_the_weights_are_the_conv_outputs() {
        use super::{activation_rows, weight_matrices, RankRule, Svd};
        use crate::calibrate::Calibration;
        use crate::runtime::{self, InputShapes, Sample};
        for (x_dims, w_dims, attrs) in [
            (
                vec![2, 3, 7, 9],
                vec![5, 3, 3, 2],
                vec![
                    Attribute::ints("pads", &[1, 0, 2, 1]),
                    Attribute::ints("strides", &[2, 1]),
                    Attribute::ints("dilations", &[1, 2]),
                ],
            ),
            (
                vec![1, 4, 11],
                vec![6, 4, 3],
                vec![Attribute::ints("pads", &[1, 1])],
            ),
        ] {
            let mut b = ModelBuilder::new(13);
            let x = b.input("x", DataType::FLOAT, &x_dims);
            let w = init(&mut b, "w", &w_dims, 4);
            let y = b.op("Conv", &[x, w], attrs, "y");
            b.output(y, DataType::FLOAT);
            let model = b.build().unwrap();
            let dims: Vec<usize> = x_dims.iter().map(|&d| d as usize).collect();
            let n: usize = dims.iter().product();
            let sample = Sample::new("test").with(
                "x",
                runtime::Tensor::from_f32(&dims, &values(8, n, -1.0, 1.0)).unwrap(),
            );
            let data = Calibration {
                samples: vec![sample],
                shapes: InputShapes::new(),
                source: "test".into(),
                random: false,
                engine: runtime::Engine::Tract,
            };
            let picker = Svd {
                rule: RankRule::Energy(0.9),
                min_gain: 1.0,
                align: 1,
                ops: vec!["Conv".into()],
                skip: vec![],
                min_params: 0,
                fit_data: true,
                lift: Pipeline::parse("").unwrap(),
            };
            let (layers, _) = picker.candidates(&model.graph);
            let captured = data.capture(&model, &["x".into(), "y".into()]).unwrap();
            let rows = activation_rows(&captured[0], &layers[0]).unwrap();
            let m = &weight_matrices(&model.graph, &layers[0]).unwrap()[0];
            let got = crate::linalg::mul(rows.as_ref(), m.as_ref());
            let y = captured[1][0].to_f32_vec().unwrap();
            let shape = captured[1][0].shape().to_vec();
            let (o, spatial): (usize, usize) = (shape[1], shape[2..].iter().product());
            assert_eq!(got.nrows(), shape[0] * spatial, "{shape:?}");
            for p in 0..got.nrows() {
                let (batch, at) = (p / spatial, p % spatial);
                for c in 0..o {
                    let want = f64::from(y[(batch * o + c) * spatial + at]);
                    assert!(
                        (got[(p, c)] - want).abs() < 1e-4,
                        "{p} {c}: {} vs {want}",
                        got[(p, c)]
                    );
                }
            }
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        for (passes, says) in [
            ("svd{energy=1.5}", "energy"),
            ("svd{energy=0}", "energy"),
            ("svd{ratio=2}", "ratio"),
            ("svd{min-gain=0.5}", "min-gain"),
            ("svd{ops=Relu}", "ops"),
            ("svd{fit=maybe}", "fit"),
            ("svd{align=0}", "align"),
        ] {
            let err = Pipeline::parse(passes).err().unwrap();
            assert!(format!("{err:#}").contains(says), "{passes}: {err:#}");
        }
    }

    #[test]
    fn skip_patterns_match_whole_names_with_wildcards() {
        assert!(name_matches("conv1", "conv1"));
        assert!(!name_matches("conv1", "conv12"));
        assert!(name_matches("conv*", "conv12"));
        assert!(name_matches("*head", "rec_head"));
        assert!(name_matches("a*b*c", "a_x_b_y_c"));
        assert!(!name_matches("a*b*c", "a_x_c"));
        assert!(!name_matches("ab*ba", "aba"));
    }
}
