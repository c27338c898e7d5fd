//! Cross-validation: the candidates that met A_min on the search fold,
//! judged on every fold by a model calibrated on the others, fastest first.

use super::{bound, build, Candidate, Fold, Score, Search, MARGIN};
use crate::passes::DataUse;
use crate::pipeline::Pipeline;
use anyhow::{Context, Result};
use std::time::Instant;

/// The candidates meeting A_min on the search fold, in the order they are
/// worth having: lossy ones at least [`MARGIN`] faster than the fastest
/// exact one, fastest first; then the exact ones; then the lossy ones that
/// do not pay for their loss.
pub(super) fn validation_order(candidates: &[Candidate]) -> Vec<usize> {
    let exact = |k: usize| Pipeline::parse(&candidates[k].passes).is_ok_and(|p| p.is_exact());
    let speed = |k: usize| candidates[k].speedup.unwrap_or(0.0);
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&k| candidates[k].meets && candidates[k].error.is_none())
        .collect();
    let exact_best = order
        .iter()
        .filter(|&&k| exact(k))
        .map(|&k| speed(k))
        .fold(0.0, f64::max);
    let tier = |k: usize| match (exact(k), speed(k) >= exact_best * MARGIN) {
        (false, true) => 0,
        (true, _) => 1,
        (false, false) => 2,
    };
    order.sort_by(|&a, &b| {
        tier(a)
            .cmp(&tier(b))
            .then(speed(b).total_cmp(&speed(a)))
            .then(a.cmp(&b))
    });
    order
}

/// The candidate `k` built the same model as on the search fold, when that
/// one failed cross-validation.
fn failed_twin(candidates: &[Candidate], k: usize) -> Option<String> {
    let twin = candidates[k].same_as.as_deref()?;
    candidates
        .iter()
        .any(|c| c.passes == twin && c.validated == Some(false))
        .then(|| twin.to_string())
}

impl Search<'_> {
    /// Cross-validates the candidates meeting A_min on the search fold,
    /// fastest first; returns the first that meets it on every fold.
    pub(super) fn validate(&mut self) -> Result<Option<usize>> {
        let order = validation_order(&self.candidates);
        for k in order {
            if self.candidates[k].validated == Some(true) {
                return Ok(Some(k)); // recorded
            }
            if self.candidates[k].validated == Some(false) || self.twin_failed(k) {
                continue;
            }
            // Out of time, only exact candidates are still worth validating:
            // they need no calibration, one build and k judgements.
            let exact = Pipeline::parse(&self.candidates[k].passes).is_ok_and(|p| p.is_exact());
            if !exact && !self.can_validate(k) {
                self.note_once("the budget ran short: faster candidates were not cross-validated");
                continue;
            }
            let c = &self.candidates[k];
            let first = Score {
                value: c.metric.context("judged")?,
                lost_of: c.lost_of.map(|[l, n]| (l, n)),
            };
            if !exact && self.doomed(k, first) {
                continue;
            }
            self.progress
                .set_message(format!("cross-validating {}", self.candidates[k].passes));
            let t0 = Instant::now();
            let c = &self.candidates[k];
            let folds = self.cross_validate(&c.passes, first)?;
            let bound = self.bound(&c.passes, &folds);
            // A --metric-cmd counts its own units (characters, boxes...).
            let rows = match self.judge.same_data_every_fold() {
                true => "units",
                false => "rows",
            };
            let c = &mut self.candidates[k];
            c.seconds += t0.elapsed().as_secs_f64();
            let every_fold = folds.iter().all(|f| f.meets);
            c.validated = Some(every_fold && bound.as_ref().is_none_or(|b| b.meets));
            c.bound_drop = bound.as_ref().map(|b| b.drop);
            c.folds = folds;
            if let (Some(b), true) = (bound.filter(|b| !b.meets), every_fold) {
                let note = format!(
                    "{}: met A_min on every fold ({} of {} {rows} lost), but its loss could \
                     still be {:.2} points at 95% confidence; more data would prove it (a \
                     1-point loss needs about 300 {rows} judged without one)",
                    c.passes, b.lost, b.rows, b.drop
                );
                self.notes.push(note);
            }
            if c.validated == Some(true) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Whether candidate `k` built the same model on the search fold as
    /// one that failed cross-validation (PP-OCR rec: `bits=first-7` where
    /// the first layer stays float); marks it and says so.
    fn twin_failed(&mut self, k: usize) -> bool {
        let Some(twin) = failed_twin(&self.candidates, k) else {
            return false;
        };
        let note = format!(
            "{}: not cross-validated: it built the same model as {twin} on the search fold, \
             which failed cross-validation",
            self.candidates[k].passes
        );
        self.notes.push(note);
        self.candidates[k].validated = Some(false);
        true
    }

    /// Whether lossy candidate `k` cannot pass, known from the search
    /// fold alone: when every fold judges the same data, the worst fold is
    /// bounded, so a search fold whose bound misses A_min dooms it (PP-OCR
    /// rec at 0.25 points: two such cross-validations, a minute each, took
    /// the budget). Marks it and says why.
    fn doomed(&mut self, k: usize, first: Score) -> bool {
        if !self.judge.same_data_every_fold() {
            return false;
        }
        let searched = self.fold(0, first);
        let passes = &self.candidates[k].passes;
        let Some(b) = self
            .bound(passes, std::slice::from_ref(&searched))
            .filter(|b| !b.meets)
        else {
            return false;
        };
        self.notes.push(format!(
            "{passes}: not cross-validated: it lost {} of the {} units the command judges on \
             every fold, which could be {:.2} points at 95% confidence",
            b.lost, b.rows, b.drop
        ));
        let c = &mut self.candidates[k];
        (c.validated, c.bound_drop, c.folds) = (Some(false), Some(b.drop), vec![searched]);
        true
    }

    /// Fold `k`'s record of a candidate that scored `score` there.
    fn fold(&self, k: usize, score: Score) -> Fold {
        let original = self.original_folds[k];
        Fold {
            fold: k + 1,
            samples: self.folds[k].len(),
            original,
            metric: score.value,
            lost_of: score.lost_of.map(|(l, n)| [l, n]),
            meets: self.settings.goal.meets(original, score.value),
        }
    }

    /// Every fold: calibrated on the others, judged on it. Fold 1 was
    /// judged by the search (`first`); an exact pipeline is built once,
    /// and judged once when every fold judges the same data (the same
    /// model on the same data: the same score).
    fn cross_validate(&self, passes: &str, first: Score) -> Result<Vec<Fold>> {
        let exact = Pipeline::parse(passes)?.data_use() == DataUse::None;
        if exact && self.judge.same_data_every_fold() {
            return Ok((0..self.folds.len()).map(|k| self.fold(k, first)).collect());
        }
        let file = self.scratch.join("candidate.onnx");
        let built = match exact {
            true => Some(self.write_for_command(build(self.original, passes, None)?.0, &file)?),
            false => None,
        };
        let mut out = vec![];
        for (k, idx) in self.folds.iter().enumerate() {
            let score = match (k, &built) {
                (0, _) => first,
                (_, Some(m)) => self.judge.evaluate(m, idx, Some(&file))?,
                (_, None) => self.judge_fold(passes, k)?.score,
            };
            out.push(self.fold(k, score));
        }
        Ok(out)
    }

    /// For a lossy candidate judged by counting rows: the 95% upper bound on
    /// its loss in points, pooled over the folds (see `bound`), and whether
    /// the original's pooled metric less that bound still meets A_min.
    /// Folds that all judge the same data (a `--metric-cmd`'s own) are not
    /// pooled: the worst one is bounded. Exact pipelines change outputs by
    /// rounding only and need none.
    fn bound(&self, passes: &str, folds: &[Fold]) -> Option<PooledBound> {
        if Pipeline::parse(passes).is_ok_and(|p| p.is_exact()) {
            return None;
        }
        let mut counts: Vec<[usize; 2]> = folds.iter().map(|f| f.lost_of).collect::<Option<_>>()?;
        if self.judge.same_data_every_fold() {
            counts = counts
                .into_iter()
                .max_by_key(|c| c[0])
                .into_iter()
                .collect();
        }
        let (lost, rows) = counts
            .iter()
            .fold((0, 0), |(l, n), [fl, fn_]| (l + fl, n + fn_));
        let drop = 100.0 * bound::upper(lost, rows, bound::CONFIDENCE);
        let original = folds
            .iter()
            .zip(&counts)
            .map(|(f, [_, n])| f.original * *n as f64)
            .sum::<f64>()
            / rows.max(1) as f64;
        let meets = self.settings.goal.meets(original, original - drop);
        Some(PooledBound {
            lost,
            rows,
            drop,
            meets,
        })
    }
}

/// The rows a candidate lost over every fold, the 95% bound on its loss
/// in points, and whether A_min holds at that bound.
struct PooledBound {
    lost: usize,
    rows: usize,
    drop: f64,
    meets: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::Goal;

    #[test]
    fn a_lossy_candidate_must_pay_for_its_loss() {
        let c = |passes: &str, speedup: f64, meets: bool| Candidate {
            speedup: Some(speedup),
            meets,
            ..Candidate::new(passes, "form")
        };
        let candidates = [
            c("fuse", 1.0, true),
            c("fuse,quant{method=entropy}", 1.02, true), // noise: below MARGIN
            c("fuse,quant", 2.5, true),
            c("fuse,quant{min-k=0}", 3.0, false), // below A_min: never
            c("fuse,quant{flow=false}", 1.8, true),
        ];
        assert_eq!(validation_order(&candidates), [2, 4, 0, 1]);
        assert!(Goal::MaxDrop(1.0).meets(90.0, 89.0));
        assert!(!Goal::MaxDrop(1.0).meets(90.0, 88.9));
        assert!(Goal::MinMetric(95.0).meets(99.0, 95.0));
    }

    #[test]
    fn a_twin_of_a_failed_candidate_is_not_validated_again() {
        let mut failed = Candidate::new("fuse,quant{flow=true}", "form");
        failed.validated = Some(false);
        let mut twin = Candidate::new("fuse,quant{bits=first-7,flow=true}", "form");
        twin.same_as = Some(failed.passes.clone());
        let mut other = Candidate::new("fuse,quant{flow=false}", "form");
        other.same_as = Some("fuse".into());
        let candidates = [Candidate::new("fuse", "form"), failed, twin, other];
        assert_eq!(
            failed_twin(&candidates, 2).as_deref(),
            Some("fuse,quant{flow=true}")
        );
        assert_eq!(failed_twin(&candidates, 3), None, "its twin did not fail");
        assert_eq!(failed_twin(&candidates, 1), None);
    }
}
