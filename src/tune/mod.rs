//! `onnx-opt tune`: the fastest model whose accuracy stays at or above
//! A_min, judged on samples it was not calibrated on.
//!
//! The data are split into k folds (seeded). The search judges each
//! candidate pipeline (see `space`) by a model calibrated on folds 2..k and
//! judged on fold 1, paired with the original on the same samples, and
//! times it against the original in the judging runtime (one process,
//! alternating runs, after warm-up). Candidates that meet A_min there are
//! then cross-validated, fastest first: for every fold, a model calibrated
//! on the other folds is judged on it; the first whose every fold meets
//! A_min is chosen. The bound is the worst fold, paired with the original
//! on that fold, and, for a lossy candidate judged by counting rows (top-1,
//! top-5, agreement), also the 95% upper confidence bound on the rows it
//! loses, pooled over the folds (`bound`): a few samples judged without a
//! loss do not prove a 1-point loss, and tune says how many would. The output is then built from all the data by the plain
//! command with the chosen `--passes`, so that command reproduces it byte
//! for byte. A candidate below A_min is never chosen.
//!
//! Then, when the fastest int8 form lost too much, the per-layer search
//! keeps its most sensitive layers in float and the new candidates are
//! cross-validated the same way.
//!
//! Every candidate is kept (the report's Pareto front; `--resume` reuses
//! them). The search stops early on the budget (keeping time to
//! cross-validate) or on Ctrl-C, and goes on to validation with what it has.

mod bound;
pub mod cli;
mod metric;
mod per_layer;
mod plot;
mod record;
mod space;
mod validate;

pub use metric::{Judge, Metric, Score};
pub use record::{Candidate, Fold};
pub use space::Space;

use crate::calibrate::Calibration;
use crate::ir::Model;
use crate::passes::DataUse;
use crate::pipeline::{PassContext, PassReport, Pipeline};
use crate::runtime::{self, InputShapes, Runner, Sample};
use anyhow::{Context, Result};
use record::{Resume, Spent};
use std::path::Path;
use std::time::{Duration, Instant};

/// A_min: how much metric may be lost, or the floor it must stay on.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// At most this much below the original's metric (on the same samples).
    MaxDrop(f64),
    /// At least this.
    MinMetric(f64),
}

impl Goal {
    /// A_min for an original scoring `original`.
    pub fn floor(&self, original: f64) -> f64 {
        match *self {
            Goal::MaxDrop(x) => original - x,
            Goal::MinMetric(y) => y,
        }
    }

    /// Rounding in the metric's own sums is no loss.
    pub fn meets(&self, original: f64, metric: f64) -> bool {
        metric >= self.floor(original) - 1e-9
    }
}

/// How to search.
pub struct Settings<'a> {
    pub goal: Goal,
    pub space: Space,
    pub folds: usize,
    pub seed: u64,
    pub warmup: usize,
    pub runs: usize,
    pub budget: Duration,
    /// The original model's file (a `--metric-cmd` judges it there).
    pub original_file: &'a Path,
    /// Where records are kept between runs.
    pub resume: Option<&'a Path>,
    /// What the records depend on (model, data, metric, folds, runtime).
    pub fingerprint: String,
}

/// What the search found.
pub struct Outcome {
    pub candidates: Vec<Candidate>,
    /// The index of the chosen candidate.
    pub chosen: Option<usize>,
    /// The original's metric on each fold.
    pub original_folds: Vec<f64>,
    pub fold_sizes: Vec<usize>,
    /// Things the user should know (coarse folds, an early stop...).
    pub notes: Vec<String>,
    /// Candidates taken from `--resume`'s records without running them.
    pub reused: usize,
}

/// Samples timed per candidate (cycled through).
pub(crate) const TIMING_SAMPLES: usize = 4;

/// A candidate's timing lasts about this long, half of it the original's
/// runs alternated with its own (`--runs` is the least): a model of 0.2 ms
/// is not judged on 4 ms of runs, and two int8 forms 3% apart are told
/// apart (at 0.4 s, PP-OCR cls's and det's forms were ranked 3-4% wrong on
/// a loaded machine), while building and judging a real model's
/// candidate takes seconds to minutes.
const TIMING_SECONDS: f64 = 1.0;

/// A lossy candidate must be this much faster than an exact one to be
/// preferred: below it, the difference is within timing noise on a shared
/// machine, and the exact model is the better answer.
const MARGIN: f64 = 1.03;

/// Candidates calibrate on at most this many samples, spread evenly over
/// the calibration folds (NNCF's default subset, and quant's own `samples`
/// cap): calibration time grows with the samples (quant: 23 s on 1200
/// PP-OCR cls lines, 1 s on 23), and a search that spends its budget
/// calibrating validates nothing. OUT is built on all the data, as the
/// plain command does.
const CALIBRATION_SAMPLES: usize = 300;

/// Cross-validations the search keeps time for: the fastest lossy candidate
/// often fails a fold (one row of a small fold is a point or more), and the
/// next one must still be tried.
const VALIDATIONS: f64 = 2.0;

/// Timed runs for models like `base`: enough for [`TIMING_SECONDS`] of
/// runs per model (see [`runtime::runs_for`]), and at least `least`.
pub(crate) fn timing_runs(
    base: &Runner,
    samples: &[Sample],
    warmup: usize,
    least: usize,
) -> Result<usize> {
    let probe = runtime::bench(base, base, samples, warmup, least.clamp(1, 5))?;
    Ok(runtime::runs_for(
        probe.a.median_ms,
        TIMING_SECONDS * 1e3 / 2.0,
        least,
    ))
}

/// A digest of the model's bytes, to recognise two candidates that are
/// the same model.
fn model_hash(model: &Model) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::onnx::encode(model)?.hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

/// Runs the search on `judge`'s data.
pub fn tune(
    original: &Model,
    judge: &Judge,
    s: &Settings,
    progress: &indicatif::ProgressBar,
) -> Result<Outcome> {
    let start = Instant::now();
    let folds = crate::data::folds(judge.len(), s.folds, s.seed)?;
    let original_folds = folds
        .iter()
        .map(|f| judge.original(f, s.original_file))
        .collect::<Result<Vec<_>>>()
        .context("the original model's metric")?;
    let (shapes, timing) = judge.timing_samples(TIMING_SAMPLES);
    let base = judge
        .load(original, shapes)
        .context("loading the original model")?;
    let runs = timing_runs(&base, &timing, s.warmup, s.runs)?;
    let scratch = tempfile::tempdir().context("a folder for candidate files")?;
    let mut search = Search {
        original,
        judge,
        settings: s,
        folds,
        original_folds,
        base,
        timing_shapes: shapes.clone(),
        timing,
        runs,
        scratch: scratch.path(),
        candidates: vec![],
        notes: vec![],
        reused: 0,
        recorded: vec![],
        first: vec![],
        start,
        progress,
    };
    search.note_resolution();
    search.recall()?;
    search.run_forms()?;
    let mut chosen = search.validate()?;
    // Every candidate so far failed: the time kept for their validations
    // is free (PP-OCR rec at 1 point left 60 s of 180 unused): search on.
    while chosen.is_none() && search.run_forms()? > 0 {
        chosen = search.validate()?;
    }
    let speed = chosen.and_then(|k| search.candidates[k].speedup);
    if search.run_per_layer(speed.unwrap_or(0.0))? {
        chosen = search.validate()?;
    }
    record::mark_front(&mut search.candidates);
    search.remember()?;
    Ok(Outcome {
        fold_sizes: search.folds.iter().map(Vec::len).collect(),
        candidates: search.candidates,
        chosen,
        original_folds: search.original_folds,
        notes: search.notes,
        reused: search.reused,
    })
}

/// Builds `passes` on `original` with calibration `data` (used only by
/// passes that fit to data), as the plain command does.
pub fn build(
    original: &Model,
    passes: &str,
    data: Option<Calibration>,
) -> Result<(Model, Vec<PassReport>)> {
    let pipeline = Pipeline::parse(passes)?;
    let cx = PassContext {
        data: data.filter(|_| pipeline.data_use() != DataUse::None),
    };
    let mut model = original.clone();
    let reports = pipeline.run(&mut model, &cx, &mut |_| {})?;
    crate::validate::validate(&model)
        .map_err(|e| anyhow::anyhow!("{e} (seen once the passes had inferred types)"))?;
    Ok((model, reports))
}

/// A candidate built on every fold but one and judged on that one.
struct Judged {
    model: Model,
    reports: Vec<PassReport>,
    score: Score,
    /// Seconds building, then judging.
    spent: [f64; 2],
}

struct Search<'a> {
    original: &'a Model,
    judge: &'a Judge,
    settings: &'a Settings<'a>,
    folds: Vec<Vec<usize>>,
    original_folds: Vec<f64>,
    base: Runner,
    timing_shapes: InputShapes,
    timing: Vec<Sample>,
    /// Timed runs per candidate (see [`TIMING_SECONDS`]).
    runs: usize,
    scratch: &'a Path,
    candidates: Vec<Candidate>,
    notes: Vec<String>,
    reused: usize,
    /// Records of an earlier run (`--resume`) on the same fingerprint.
    recorded: Vec<Candidate>,
    /// The front of an earlier run on another fingerprint: tried first.
    first: Vec<String>,
    start: Instant,
    progress: &'a indicatif::ProgressBar,
}

/// The note of a search the budget stopped before every candidate was tried.
const STOPPED_EARLY: &str = "the budget ran short: the search stopped early";

impl Search<'_> {
    /// A fold of few rows cannot resolve a small A_min: say so.
    fn note_resolution(&mut self) {
        let m = &self.judge.metric;
        if !matches!(m, Metric::Top1 | Metric::Top5 | Metric::Agreement) {
            return;
        }
        let rows = self
            .folds
            .iter()
            .map(|f| self.judge.rows(f))
            .min()
            .unwrap_or(0);
        if let Goal::MaxDrop(x) = self.settings.goal {
            let step = 100.0 / rows.max(1) as f64;
            if step > x {
                self.notes.push(format!(
                    "the smallest fold holds {rows} rows: one row moves its {} by {step:.2} \
                     points, more than --max-drop {x}; the bound is coarse (give more samples \
                     or fewer --folds)",
                    m.name()
                ));
            }
        }
    }

    /// Reads `--resume`'s records: reused when measured on the same
    /// fingerprint, else only their front is tried first.
    fn recall(&mut self) -> Result<()> {
        let Some(dir) = self.settings.resume else {
            return Ok(());
        };
        if let Some(r) = Resume::read(dir)? {
            if r.fingerprint == self.settings.fingerprint {
                self.recorded = r.candidates;
            } else {
                self.notes.push(format!(
                    "{}: recorded on other data or settings; its front is re-evaluated first",
                    dir.display()
                ));
                self.first = r
                    .candidates
                    .into_iter()
                    .filter(|c| c.front)
                    .map(|c| c.passes)
                    .collect();
            }
        }
        Ok(())
    }

    fn remember(&self) -> Result<()> {
        let Some(dir) = self.settings.resume else {
            return Ok(());
        };
        Resume {
            fingerprint: self.settings.fingerprint.clone(),
            candidates: self.candidates.clone(),
        }
        .write(dir)
        .with_context(|| format!("--resume {}", dir.display()))
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether another candidate fits in the budget, keeping time to
    /// cross-validate `VALIDATIONS` typical candidates (k-1 more builds and
    /// judgements each; one fewer for each that failed, at least one) and
    /// build the output.
    fn has_time(&self, next: &str) -> bool {
        let parts: Vec<Spent> = self.candidates.iter().map(Candidate::parts).collect();
        // Medians: one slow form (a model timed at 3 ms) must not eat the search.
        let median = |part: fn(&Spent) -> f64| {
            let mut v: Vec<f64> = parts.iter().map(part).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let step = median(|s| s.build + s.judge + s.time);
        let typical = Spent {
            build: median(|s| s.build),
            judge: median(|s| s.judge),
            time: 0.0,
        };
        // A validation that failed has had its turn.
        let failed = self
            .candidates
            .iter()
            .filter(|c| c.validated == Some(false) && c.folds.len() > 1)
            .count() as f64;
        let validations = (VALIDATIONS - failed).max(1.0);
        let reserve = self.validation_cost(&typical, validations, next);
        self.elapsed().as_secs_f64() + step + reserve <= self.settings.budget.as_secs_f64()
    }

    /// Seconds to cross-validate `validations` candidates like `passes`
    /// whose search step spent `s` (k-1 more builds and judgements apiece,
    /// no timing) and to build the output (a build on all the samples).
    fn validation_cost(&self, s: &Spent, validations: f64, passes: &str) -> f64 {
        let folds = self.settings.folds as f64;
        (s.build + s.judge) * (folds - 1.0) * validations
            + s.build * self.output_build_scale(passes)
    }

    /// The output's build against a candidate's: it calibrates on all the
    /// samples, a candidate on at most [`CALIBRATION_SAMPLES`] of k-1 folds;
    /// quant itself calibrates on at most as many (its `samples`), so a
    /// pipeline whose one data use is quant builds the output as fast.
    fn output_build_scale(&self, passes: &str) -> f64 {
        let all: usize = self.folds.iter().map(Vec::len).sum();
        let largest = self.folds.iter().map(Vec::len).max().unwrap_or(0);
        let mut all = all as f64;
        let candidate = (all as usize - largest).clamp(1, CALIBRATION_SAMPLES) as f64;
        if space::only_lossy_step_is_quant(passes) {
            all = all.min(CALIBRATION_SAMPLES as f64);
        }
        (all / candidate).max(1.0)
    }

    /// Whether candidate `k` can still be cross-validated (k-1 builds and
    /// judgements, each at most as long as its search step) and the output
    /// built.
    fn can_validate(&self, k: usize) -> bool {
        let c = &self.candidates[k];
        let cost = self.validation_cost(&c.parts(), 1.0, &c.passes);
        self.elapsed().as_secs_f64() + cost <= self.settings.budget.as_secs_f64()
    }

    /// Whether the search should go on; notes why not.
    fn go_on(&mut self, next: &str) -> bool {
        if crate::onnx::interrupted() {
            self.note_once("interrupted: the search stopped; the best so far is validated");
            return false;
        }
        if !self.has_time(next) {
            self.note_once(STOPPED_EARLY);
            return false;
        }
        true
    }

    fn note_once(&mut self, note: &str) {
        if !self.notes.iter().any(|n| n == note) {
            self.notes.push(note.to_string());
        }
    }

    /// Tries the whole-model forms not tried yet, in order, while the
    /// budget allows; returns how many it tried.
    fn run_forms(&mut self) -> Result<usize> {
        let mut forms = space::forms(&self.settings.space, self.judge.engine());
        forms.retain(|f| !self.candidates.iter().any(|c| c.is_named(f)));
        // A stale record's front goes first: it was best on the old data.
        forms.sort_by_key(|f| !self.first.contains(f));
        let done = self.progress.position();
        self.progress.set_length(done + forms.len() as u64);
        let (mut tried, untried) = (0, forms.len());
        for passes in forms {
            if !self.go_on(&passes) {
                break;
            }
            self.try_candidate(&passes, "form")?;
            tried += 1;
        }
        // Every form tried, after a stop and a failed validation (see
        // `tune`): the search did not stop early after all.
        if tried == untried {
            self.notes.retain(|n| n != STOPPED_EARLY);
        }
        Ok(tried)
    }

    /// Evaluates `passes` (or reuses its record) and keeps it, in
    /// `--resume`'s records too, so that a killed run loses nothing.
    fn try_candidate(&mut self, passes: &str, stage: &str) -> Result<usize> {
        if let Some(k) = self.candidates.iter().position(|c| c.is_named(passes)) {
            return Ok(k);
        }
        self.progress.set_message(passes.to_string());
        let recorded = self.recorded.iter().find(|c| c.is_named(passes)).cloned();
        let c = match recorded {
            Some(c) => {
                self.reused += 1;
                c
            }
            None => self.evaluate(passes, stage),
        };
        // Pinned, it may be a form already tried.
        if let Some(k) = self.candidates.iter().position(|o| o.passes == c.passes) {
            self.progress.inc(1);
            return Ok(k);
        }
        self.candidates.push(c);
        self.progress.inc(1);
        self.remember()?;
        Ok(self.candidates.len() - 1)
    }

    /// Calibration data: every fold but `fold`.
    fn calibration_without(&self, fold: usize) -> Calibration {
        let mut idx: Vec<usize> = self
            .folds
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != fold)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        idx.sort_unstable();
        let mut source = format!("folds other than {} of {}", fold + 1, self.folds.len());
        if idx.len() > CALIBRATION_SAMPLES {
            source += &format!(", {CALIBRATION_SAMPLES} of their {} samples", idx.len());
            idx = crate::data::spread(idx.len(), CALIBRATION_SAMPLES)
                .into_iter()
                .map(|i| idx[i])
                .collect();
        }
        self.judge.calibration(&idx, source)
    }

    /// `passes` calibrated without fold `fold`, judged on it; the seconds
    /// the build and the judgement took.
    fn judge_fold(&self, passes: &str, fold: usize) -> Result<Judged> {
        let t0 = Instant::now();
        let (model, reports) = build(self.original, passes, Some(self.calibration_without(fold)))?;
        let file = self.scratch.join("candidate.onnx");
        let model = self.write_for_command(model, &file)?;
        let built = t0.elapsed().as_secs_f64();
        let metric = self
            .judge
            .evaluate(&model, &self.folds[fold], Some(&file))?;
        let judged = t0.elapsed().as_secs_f64() - built;
        Ok(Judged {
            model,
            reports,
            score: metric,
            spent: [built, judged],
        })
    }

    fn evaluate(&self, passes: &str, stage: &str) -> Candidate {
        let t0 = Instant::now();
        let mut c = Candidate::new(passes, stage);
        if let Err(e) = self.measure(&mut c) {
            c.error = Some(format!("{e:#}").replace('\n', " "));
        }
        c.seconds = t0.elapsed().as_secs_f64();
        c
    }

    fn measure(&self, c: &mut Candidate) -> Result<()> {
        let Judged {
            model,
            reports,
            score,
            spent: [build, judge],
        } = self.judge_fold(&c.passes, 0)?;
        (c.spent.build, c.spent.judge) = (build, judge);
        if let Some(pinned) = space::pin_measured(&c.passes, &reports) {
            c.asked = Some(std::mem::replace(&mut c.passes, pinned));
        }
        let original = self.original_folds[0];
        c.metric = Some(score.value);
        c.lost_of = score.lost_of.map(|(l, n)| [l, n]);
        c.original_metric = Some(original);
        c.meets = self.settings.goal.meets(original, score.value);
        c.model_hash = Some(model_hash(&model)?);
        // A form that changed nothing more than another (int8 that did not
        // pay, a rank that kept every layer) is that model: timing it again
        // would only let noise rank two copies.
        if let Some(same) = self
            .candidates
            .iter()
            .find(|o| o.model_hash == c.model_hash && o.speedup.is_some())
        {
            c.same_as = Some(same.passes.clone());
            (c.latency_ms, c.original_latency_ms, c.speedup) =
                (same.latency_ms, same.original_latency_ms, same.speedup);
            return Ok(());
        }
        let t0 = Instant::now();
        let rt = self.judge.load(&model, &self.timing_shapes)?;
        let b = runtime::bench(
            &self.base,
            &rt,
            &self.timing,
            self.settings.warmup,
            self.runs,
        )?;
        c.latency_ms = Some(b.b.median_ms);
        c.original_latency_ms = Some(b.a.median_ms);
        // Paired ratios: the machine may be shared (see `runtime::bench`).
        c.speedup = Some(b.paired_speedup);
        c.speedup_spread = Some(b.paired_spread);
        c.spent.time = t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Writes `model` to `file` when the metric is a command that reads it.
    fn write_for_command(&self, model: Model, file: &Path) -> Result<Model> {
        if matches!(self.judge.metric, Metric::Command(_)) {
            crate::onnx::save(&model, file, &Default::default())?;
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    /// The output's build is only as fast as a candidate's (see
    /// `output_build_scale`) while quant caps its samples where tune does.
    #[test]
    fn candidates_calibrate_on_as_many_samples_as_quant_does() {
        let samples = crate::passes::quant::INFO
            .options
            .iter()
            .find(|o| o.name == "samples")
            .expect("quant's samples option");
        assert_eq!(samples.default.parse(), Ok(super::CALIBRATION_SAMPLES));
    }
}
