//! What tune keeps of every candidate it evaluated: the record the report,
//! the table, the plot and `--resume` are made from.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluated pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    /// The `--passes` string that makes it.
    pub passes: String,
    /// `form` (whole model) or `per-layer` (layers kept in float).
    pub stage: String,
    /// The pipeline the search asked for, when `passes` pins a choice
    /// its build made on the search fold's data (quant's `flow=auto`), so
    /// that every fold and the output build the same form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<String>,
    /// The metric on the search fold (judged by a model calibrated on the
    /// other folds), and the original's on the same samples.
    pub metric: Option<f64>,
    pub original_metric: Option<f64>,
    /// Median latency in the judging runtime, and the original's in the
    /// same alternating loop; speedup = the median of original / candidate
    /// over runs made back to back.
    pub latency_ms: Option<f64>,
    pub original_latency_ms: Option<f64>,
    pub speedup: Option<f64>,
    /// The 10th and 90th percentiles of the per-pair ratios.
    pub speedup_spread: Option<[f64; 2]>,
    /// Meets A_min on the search fold.
    pub meets: bool,
    /// Rows lost against the original (net of rows gained) on the search
    /// fold, of how many (metrics that count rows).
    pub lost_of: Option<[usize; 2]>,
    /// Once cross-validated: the 95% upper bound on the loss, in points,
    /// pooled over the folds (lossy candidates, counted metrics).
    pub bound_drop: Option<f64>,
    /// Every fold, once cross-validated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Fold>,
    /// Meets A_min on every fold (`None`: not cross-validated).
    pub validated: Option<bool>,
    /// On the latency–metric Pareto front of the candidates that ran.
    #[serde(default)]
    pub front: bool,
    /// Why it could not be evaluated.
    pub error: Option<String>,
    /// A digest of the model it builds (on the search fold's calibration).
    pub model_hash: Option<String>,
    /// An earlier candidate that built the same model (its timing is reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// Wall time spent on it (building, judging, timing, cross-validating).
    pub seconds: f64,
    /// Where the search step's time went: what the budget's estimates of
    /// a cross-validation and of the output's build are made of.
    #[serde(default)]
    pub spent: Spent,
}

/// A search step's wall time, by part (seconds).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Spent {
    /// Running the passes (calibration included) on the search fold's data.
    pub build: f64,
    /// Judging the model on the search fold.
    pub judge: f64,
    /// Timing it against the original.
    pub time: f64,
}

/// One fold of the cross-validation: the candidate calibrated on the other
/// folds, judged on this one, against the original on the same samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fold {
    pub fold: usize,
    pub samples: usize,
    pub original: f64,
    pub metric: f64,
    pub lost_of: Option<[usize; 2]>,
    pub meets: bool,
}

impl Candidate {
    pub fn new(passes: &str, stage: &str) -> Candidate {
        Candidate {
            passes: passes.into(),
            stage: stage.into(),
            asked: None,
            metric: None,
            original_metric: None,
            latency_ms: None,
            original_latency_ms: None,
            speedup: None,
            speedup_spread: None,
            meets: false,
            lost_of: None,
            bound_drop: None,
            folds: vec![],
            validated: None,
            front: false,
            error: None,
            model_hash: None,
            same_as: None,
            seconds: 0.0,
            spent: Spent::default(),
        }
    }

    /// Whether it is what `passes` builds: its own string, or the one the
    /// search asked for before its choice was pinned.
    pub fn is_named(&self, passes: &str) -> bool {
        self.passes == passes || self.asked.as_deref() == Some(passes)
    }

    /// The search step's parts; a record without them (an older
    /// `--resume`) counts its whole time as building.
    pub fn parts(&self) -> Spent {
        let s = self.spent;
        match s.build + s.judge + s.time > 0.0 {
            true => s,
            false => Spent {
                build: self.seconds,
                ..Spent::default()
            },
        }
    }

    /// Metric lost against the original on the search fold.
    pub fn drop(&self) -> Option<f64> {
        Some(self.original_metric? - self.metric?)
    }
}

/// Marks the candidates no other beats on both speed and metric.
pub fn mark_front(candidates: &mut [Candidate]) {
    let points: Vec<Option<(f64, f64)>> = candidates
        .iter()
        .map(|c| Some((c.speedup?, c.metric?)))
        .collect();
    for (k, c) in candidates.iter_mut().enumerate() {
        c.front = points[k].is_some_and(|(s, m)| {
            !points
                .iter()
                .flatten()
                .any(|&(s2, m2)| s2 >= s && m2 >= m && (s2 > s || m2 > m))
        });
    }
}

/// The records `--resume DIR` keeps, for one model, data and setting.
#[derive(Serialize, Deserialize, Default)]
pub struct Resume {
    /// What the records were measured on (model, data, metric, folds...):
    /// records of another fingerprint are tried first, never reused.
    pub fingerprint: String,
    pub candidates: Vec<Candidate>,
}

pub const RESUME_FILE: &str = "tune-candidates.json";

impl Resume {
    pub fn read(dir: &Path) -> anyhow::Result<Option<Resume>> {
        use anyhow::Context;
        let path = dir.join(RESUME_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let r = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a tune record", path.display()))?;
        Ok(Some(r))
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self)?;
        crate::onnx::write_atomic(&dir.join(RESUME_FILE), &json)
    }
}

/// The candidates as a table, fastest first.
pub fn table(candidates: &[Candidate], unit: &str) -> String {
    let mut rows: Vec<&Candidate> = candidates.iter().collect();
    rows.sort_by(|a, b| {
        b.speedup
            .unwrap_or(0.0)
            .total_cmp(&a.speedup.unwrap_or(0.0))
            .then(a.passes.cmp(&b.passes))
    });
    let mut out = format!(
        "{:<8} {:<12} {:>9} {:>11} {:>8} {:<12} {}\n",
        "speedup", "(p10–p90)", "latency", "metric", "drop", "verdict", "passes"
    );
    for c in rows {
        let num = |x: Option<f64>, w: usize| x.map_or("-".into(), |x| format!("{x:.*}", w));
        let verdict = match (&c.error, c.validated, c.meets) {
            (Some(_), _, _) => "error",
            (None, Some(true), _) => "accepted",
            (None, Some(false), _) if c.folds.iter().all(|f| f.meets) => "unproven",
            (None, Some(false), _) => "fails a fold",
            (None, None, true) => "meets",
            (None, None, false) => "below A_min",
        };
        let mark = if c.front { "*" } else { " " };
        out.push_str(&format!(
            "{:<8} {:<12} {:>9} {:>11} {:>8} {:<12} {}{}\n",
            c.speedup.map_or("-".into(), |s| format!("{s:.2}x")),
            c.speedup_spread
                .map_or("".into(), |[lo, hi]| format!("{lo:.2}–{hi:.2}")),
            c.latency_ms.map_or("-".into(), |l| format!("{l:.2}ms")),
            format!("{}{unit}", num(c.metric, 2)),
            num(c.drop(), 2),
            verdict,
            mark,
            c.passes
        ));
    }
    out.push_str("(* on the Pareto front of speed and metric)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(speedup: f64, metric: f64) -> Candidate {
        let mut c = Candidate::new(&format!("{speedup}/{metric}"), "form");
        c.speedup = Some(speedup);
        c.metric = Some(metric);
        c
    }

    #[test]
    fn the_front_keeps_what_nothing_dominates() {
        let mut cs = vec![c(1.0, 99.0), c(2.0, 95.0), c(1.5, 94.0), c(2.0, 95.0)];
        cs.push(Candidate::new("error", "form"));
        mark_front(&mut cs);
        let front: Vec<bool> = cs.iter().map(|c| c.front).collect();
        // equal points do not dominate each other; the failed one has no point
        assert_eq!(front, [true, true, false, true, false]);
    }
}
