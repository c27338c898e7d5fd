//! Measured, not assumed: with `target=ort` the int8 forms are timed
//! against the float model in ONNX Runtime, and the fastest is kept, float
//! included, so the pass never hands out a model slower than the one it was
//! given. Whether int8 pays depends on the model (small layers and
//! element-wise chains can run slower in int8) and on the CPU (VNNI or not).
//!
//! Timing is noisy: int8 with flow is kept unless another form is clearly
//! faster, and the report gives the options that give the chosen model
//! without timing (`measure=false`), for byte-identical reruns.

use super::*;

/// Timed runs per candidate (after warm-up), alternated with the float model.
const RUNS: usize = 15;

/// A form other than the first (int8 with flow) is kept only when it is
/// this much faster: noise must not decide.
const MARGIN: f64 = 1.03;

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

impl Quant {
    /// Times `candidates` against `float` in ONNX Runtime and keeps the
    /// fastest (see the module's rule).
    pub(super) fn choose(
        &self,
        data: &Calibration,
        float: &Model,
        candidates: &[Candidate],
    ) -> Result<Measured> {
        let models: Vec<&Model> = candidates.iter().map(|c| &c.model).collect();
        let Some(timed) = data.time_in_ort(float, &models, RUNS)? else {
            return Ok(Measured::not("ONNX Runtime is not installed"));
        };
        let speedups: Vec<f64> = timed.iter().map(|t| t.speedup).collect();
        let mut chosen = 0;
        for (i, &s) in speedups.iter().enumerate().skip(1) {
            if s > speedups[chosen] * MARGIN {
                chosen = i;
            }
        }
        let kept = (speedups[chosen] >= 1.0).then_some(chosen);
        let same_without_timing = match kept {
            None => "leave quant out of --passes".to_string(),
            Some(i) => {
                let f = candidates[i].form;
                let mut options = vec![];
                if f.flow != self.flow {
                    options.push(format!("flow={}", f.flow));
                }
                if f.min_k != self.min_k {
                    options.push(format!("min-k={}", f.min_k));
                }
                options.push("measure=false".to_string());
                options.join(",")
            }
        };
        let forms: Vec<serde_json::Value> = candidates
            .iter()
            .zip(&timed)
            .map(|(c, t)| {
                json!({
                    "form": c.form.describe(),
                    "ms": t.b.median_ms,
                    "speedup": t.speedup,
                })
            })
            .collect();
        let float_ms = timed[0].a.median_ms;
        Ok(Measured {
            chosen: kept,
            report: json!({
                "cost_model": format!("measured in ONNX Runtime (1 thread, {RUNS} alternated runs, median)"),
                "float_ms": float_ms,
                "forms": forms,
                "kept": match kept {
                    Some(i) => forms[i]["form"].clone(),
                    None => json!("float"),
                },
                "same_without_timing": same_without_timing,
            }),
        })
    }
}

impl Form {
    fn describe(&self) -> String {
        format!(
            "int8 {}, {}",
            if self.flow { "flowing" } else { "in the layers only" },
            if self.min_k == 0 {
                "every layer".to_string()
            } else {
                format!("layers with K ≥ {}", self.min_k)
            }
        )
    }
}
