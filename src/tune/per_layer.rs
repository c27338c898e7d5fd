//! The per-layer stage of the search: the fastest int8 form that lost too
//! much, with its most sensitive layers kept in float.

use super::{build, space, Search, MARGIN};
use anyhow::{Context, Result};

impl Search<'_> {
    /// Per layer: the fastest int8 form that lost too much (on the search
    /// fold or in cross-validation) and would beat `chosen` (the speedup
    /// of the best validated candidate) by [`MARGIN`], with its most
    /// sensitive layers kept in float, fewest first, until it meets A_min.
    /// Returns whether it tried any.
    pub(super) fn run_per_layer(&mut self, chosen: f64) -> Result<bool> {
        let bar = chosen * MARGIN;
        let Some(base) = self
            .candidates
            .iter()
            .filter(|c| c.error.is_none() && c.stage == "form")
            .filter(|c| !c.meets || c.validated == Some(false))
            .filter(|c| c.speedup.is_some_and(|s| s > bar))
            // Only where int8 is the one lossy step: keeping layers in float
            // cannot win back what pruning or low rank lost.
            .filter(|c| space::only_lossy_step_is_quant(&c.passes))
            .max_by(|a, b| {
                a.speedup
                    .unwrap_or(0.0)
                    .total_cmp(&b.speedup.unwrap_or(0.0))
            })
            .map(|c| c.passes.clone())
        else {
            return Ok(false);
        };
        if !self.go_on(&base) {
            return Ok(false);
        }
        let ranked = match self.sensitivity(&base) {
            Ok(r) => r,
            Err(e) => {
                self.notes.push(format!("per-layer search skipped: {e:#}"));
                return Ok(false);
            }
        };
        // Doubling, then bisection between the last k that failed and the
        // first that met A_min.
        let exclude = |k: usize| {
            space::with_quant_option(&base, "exclude", &space::exclude_pattern(&ranked[..k]))
                .expect("base has a quant step")
        };
        let (mut failed, mut met) = (0usize, None);
        let mut k = 1;
        while k <= ranked.len() && self.go_on(&base) {
            self.progress.inc_length(1);
            let i = self.try_candidate(&exclude(k), "per-layer")?;
            let c = &self.candidates[i];
            if c.error.is_none() && c.meets {
                met = Some(k);
                break;
            }
            if c.speedup.is_none_or(|s| s <= bar) {
                return Ok(true); // no faster than what already meets A_min
            }
            failed = k;
            k *= 2;
        }
        if let Some(mut hi) = met {
            let mut lo = failed;
            while hi - lo > 1 && self.go_on(&base) {
                let mid = (lo + hi) / 2;
                self.progress.inc_length(1);
                let i = self.try_candidate(&exclude(mid), "per-layer")?;
                let c = &self.candidates[i];
                if c.error.is_none() && c.meets {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
        }
        Ok(true)
    }

    /// The quantized layers of `passes`, most sensitive first (quant's
    /// `fallback` measure: the output error with only that layer in int8).
    fn sensitivity(&mut self, passes: &str) -> Result<Vec<String>> {
        self.progress
            .set_message(format!("{passes}: each layer's sensitivity"));
        let probe = space::with_quant_option(passes, "fallback", "1").context("no quant step")?;
        let (_, reports) = build(self.original, &probe, Some(self.calibration_without(0)))?;
        let details = &reports
            .iter()
            .find(|r| r.name == "quant")
            .context("no quant report")?
            .details;
        let mut layers: Vec<(String, f64)> = details["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some((l["layer"].as_str()?.to_string(), l["sensitivity"].as_f64()?)))
            .collect();
        layers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        anyhow::ensure!(!layers.is_empty(), "quant measured no layer's sensitivity");
        Ok(layers.into_iter().map(|(n, _)| n).collect())
    }
}
