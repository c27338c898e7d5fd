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
//! layer (measured: 1024×1024 at r=128 runs 3.3–3.7× faster in tract). It is
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
//! **Measured, not assumed** (`measure`): fewer multiply-adds need not run
//! faster (two thin Convs where one stood, a rank off the runtime's blocks).
//! With ONNX Runtime installed, the split model is timed there against the
//! given one (`toolkit::timing`, on `--inputs` or random samples), and the
//! given model is handed back unless the split is faster; the report gives
//! the speedup and the options that give the same model without timing.
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them); the rank comes from `rank` if set, else `ratio` if set,
//! else `energy`.

use crate::ir::{Attribute, DataType, Graph, Model, NodeId, Operator, Outlet, Patch, Tensor};
use crate::linalg;
use crate::passes::toolkit::timing;
use crate::passes::{name_matches, select_layers, DataUse, PassInfo};
use crate::pipeline::{List, Options, Pass, PassContext, Pipeline};
use crate::runtime::Engine;
use anyhow::{bail, ensure, Context, Result};
use faer::Mat;
use rayon::prelude::*;
use serde_json::json;

mod analysis;
mod patches;
mod rewrite;
#[cfg(test)]
mod tests;

use patches::{activation_rows, Patches};
use rewrite::weight_matrices;

pub const INFO: PassInfo = PassInfo {
    name: "svd",
    summary: "split Gemm/MatMul/Conv layers in two low-rank ones (W ≈ UΣVᵀ) where it saves work",
    exact: false,
    data: DataUse::Runs,
    options: Opts::TABLE,
    build,
};

crate::pass_options! {
    struct Opts {
        energy: f64 = "energy", "0.9",
            "keep the smallest rank holding this fraction of Σσ² (0 < energy ≤ 1)";
        ratio: f64 = "ratio", "0", "rank = ceil(ratio·min(K,N)) instead (0 < ratio ≤ 1; 0: unset)";
        rank: usize = "rank", "0", "a fixed rank instead (0: unset)";
        min_gain: f64 = "min-gain", "1.5",
            "split only when K·N ≥ min-gain·r·(K+N) (≥ 1: never adds work)";
        align: usize = "align", "8",
            "round the rank up to a multiple of this (SIMD-friendly shapes)";
        ops: List = "ops", "Gemm|MatMul|Conv", "operator types to consider";
        skip: List = "skip", "",
            "layers to leave alone: node or weight names, `*` matches any run (a|b*|*c)";
        min_params: usize = "min-params", "16384", "leave layers with fewer weights alone";
        fit: String = "fit", "auto",
            "auto: fit each layer to its outputs on --inputs when given; weights: never";
        measure: bool = "measure", "true",
            "with ONNX Runtime installed, time the split model there against the given one and hand the given one back unless the split is faster";
    }
}

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
    measure: bool,
    lift: Pipeline,
}

fn build(o: &Options) -> Result<Box<dyn Pass>> {
    let o = Opts::parse(o)?;
    let (energy, ratio, rank) = (o.energy, o.ratio, o.rank);
    ensure!(
        energy > 0.0 && energy <= 1.0,
        "energy={energy} must be in (0, 1]"
    );
    ensure!(
        (0.0..=1.0).contains(&ratio),
        "ratio={ratio} must be in (0, 1] (0: unset)"
    );
    let rule = if rank > 0 {
        RankRule::Fixed(rank)
    } else if ratio > 0.0 {
        RankRule::Ratio(ratio)
    } else {
        RankRule::Energy(energy)
    };
    let min_gain = o.min_gain;
    ensure!(
        min_gain >= 1.0,
        "min-gain={min_gain} must be ≥ 1 (below 1 a split adds work)"
    );
    let align = o.align;
    ensure!(align >= 1, "align must be ≥ 1");
    for op in o.ops.iter() {
        ensure!(
            ["Gemm", "MatMul", "Conv"].contains(&op.as_str()),
            "ops may hold Gemm, MatMul, Conv (got {op})"
        );
    }
    let fit_data = match o.fit.as_str() {
        "auto" => true,
        "weights" => false,
        other => bail!("fit={other} must be auto or weights"),
    };
    Ok(Box::new(Svd {
        rule,
        min_gain,
        align,
        ops: o.ops.0,
        skip: o.skip.0,
        min_params: o.min_params,
        fit_data,
        measure: o.measure,
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
        // Timed in ONNX Runtime when asked, with samples to time on and the
        // library found; the model as it came is then kept to hand back.
        let timed_data = timing::samples(self.measure, cx);
        let given = timed_data.map(|_| model.clone());
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
        let calibration = data.map_or("none".to_string(), |d| {
            format!("{} ({} samples)", d.source, d.samples.len())
        });
        let measured = match (timed_data, given) {
            (Some(data), Some(given)) if split > 0 => {
                let timed = timing::time_in(Engine::Ort, data, &given, std::slice::from_ref(model))
                    .context("timing the split model in ONNX Runtime")?;
                let t = &timed[0];
                let pays = timing::fastest(&[t.speedup]).is_some();
                let measured = json!({
                    "cost_model": timing::cost_model(Engine::Ort),
                    "given_ms": t.a.median_ms,
                    "split_ms": t.b.median_ms,
                    "speedup": t.speedup,
                    "same_without_timing": if pays { "measure=false" } else { "leave svd out of --passes" },
                });
                if !pays {
                    // Splitting does not pay where the model runs: the
                    // model goes back as it came; the layers say what a
                    // split would have been.
                    *model = given;
                    return Ok(json!({
                        "split": 0,
                        "kept": "the given model: the split model was not faster in ONNX Runtime",
                        "would_split": split,
                        "measured": measured,
                        "calibration": calibration,
                        "layers": report,
                    }));
                }
                measured
            }
            _ => timing::not_timed(self.measure, cx, "nothing to time: no layer is split"),
        };
        Ok(json!({
            "split": split,
            "measured": measured,
            "calibration": calibration,
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
