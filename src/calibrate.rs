//! Calibration data for the passes that fit to data (low-rank fits,
//! quantization ranges, refitting after pruning): the samples, and a way to
//! see any intermediate value of a model on them.
//!
//! The CLI opens `--inputs` through [`open_data`] (or makes seeded random
//! inputs, with a warning) before the passes run; passes receive it through
//! `pipeline::PassContext`. Samples of different shapes (text lines of
//! different widths) form groups, each run with the model pinned to its
//! shapes. Running goes through `exec`, like everything else: in the
//! runtime asked for (`--calibrate-runtime`), else in tract when it runs
//! the model and in ONNX Runtime (when installed) when tract cannot.

use crate::data::{Dataset, Preprocess};
use crate::exec;
use crate::ir::Model;
use crate::runtime::{self, Dim, Engine, InputShapes, InputSpec, Outputs, Runner, Sample};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

/// Sizes tried, in order, for the unpinned dims of random samples when the
/// model does not run with them at 1 (see [`Calibration::random_runnable`]).
pub const RANDOM_DIM_LADDER: [usize; 4] = [32, 128, 512, 2048];

/// A timed model runs at least this long in [`Calibration::time_loaded`]
/// (in at most [`runtime::MAX_TIMED_RUNS`] runs).
pub const MIN_TIMED_MS: f64 = 250.0;

/// ... and at most about this long, past its first [`LEAST_RUNS`] runs: a
/// run of DNSMOS in tract takes seconds, and 15 of them a minute a model.
pub const MAX_TIMED_MS: f64 = 20_000.0;

/// Timed runs a model gets however slow it is.
pub const LEAST_RUNS: usize = 3;

/// When the warm-up shows one model this many times slower than the other,
/// and the slower one's run lasts [`MIN_TIMED_MS`], no noise of a shared
/// machine closes the gap and the warm-up decides: tract's int8 kernels on
/// an AVX2 CPU without VNNI ran DNSMOS's int8 form 17x slower than float
/// (38 s a run), and timing it 15 times took over 10 minutes.
pub const DECISIVE_GAP: f64 = 4.0;

/// Samples to calibrate on, held in memory.
#[derive(Clone)]
pub struct Calibration {
    pub samples: Vec<Sample>,
    /// Samples of the same shapes: the shapes to pin and the samples' indices.
    pub groups: Vec<(InputShapes, Vec<usize>)>,
    /// Where the samples come from, and how they were read.
    pub source: String,
    /// The samples are random noise, not data: fits to them are weak.
    pub random: bool,
    /// The runtime that runs the models, once chosen: given, or taken by
    /// the first load (tract when it runs the model, else ONNX Runtime),
    /// so that every model the passes make is run where the first was.
    pub engine: OnceLock<Engine>,
}

/// A model loaded by [`Calibration::load_model`]: one runner per shape group.
pub struct Loaded {
    runners: Vec<Runner>,
}

/// Outputs by sample index, every sample run.
fn in_order(out: Vec<Option<Outputs>>) -> Result<Vec<Outputs>> {
    out.into_iter()
        .map(|o| o.context("a sample belongs to no shape group"))
        .collect()
}

/// Opens `path` (see `data::Dataset::open`) for `model`, with the
/// `--input-shape` overrides in `user`.
pub fn open_data(
    model: &Model,
    user: &InputShapes,
    path: &Path,
    preprocess: Option<&Preprocess>,
) -> Result<Dataset> {
    let inputs = exec::declared_inputs(model, user)?;
    Dataset::open(path, &inputs, user, preprocess)
}

/// Where the data come from: the data options of the command line.
#[derive(Default)]
pub struct DataOptions<'a> {
    pub inputs: Option<&'a Path>,
    pub verify_inputs: Option<&'a Path>,
    pub labels: Option<&'a Path>,
    pub preprocess: Option<&'a Preprocess>,
    /// Fraction of `inputs` held out for judging (`--holdout`).
    pub holdout: Option<f64>,
    pub seed: u64,
}

/// The data to calibrate on and the data to judge on (`None`: random).
pub struct DataPlan {
    pub calibrate: Option<Dataset>,
    pub judge: Option<Dataset>,
}

impl DataPlan {
    /// Opens every data source for `model` (headers only), so bad data
    /// fails before any work. Labels go with the judged data: those of
    /// `--verify-inputs` when given, else of `--inputs` (split with it by
    /// `--holdout`).
    pub fn open(model: &Model, user: &InputShapes, o: &DataOptions) -> Result<DataPlan> {
        if o.holdout.is_some() && o.verify_inputs.is_some() {
            bail!("give --holdout or --verify-inputs, not both: both choose the data to judge on");
        }
        if o.holdout.is_some() && o.inputs.is_none() {
            bail!("--holdout splits --inputs: give --inputs");
        }
        let open = |p: &Path| open_data(model, user, p, o.preprocess);
        let mut inputs = o.inputs.map(open).transpose()?;
        let mut verify = o.verify_inputs.map(open).transpose()?;
        if let Some(labels) = o.labels {
            let target = verify.as_mut().or(inputs.as_mut()).with_context(|| {
                "--labels needs the data they label: give --inputs or --verify-inputs"
            })?;
            target.attach_labels(labels)?;
        }
        if let (Some(fraction), Some(all)) = (o.holdout, &inputs) {
            let (keep, held) = crate::data::holdout(all.len(), fraction, o.seed)
                .with_context(|| all.describe())?;
            let how = format!("--holdout {fraction} seed {}", o.seed);
            let held = all.subset(&held, &format!("held out by {how}"));
            let rest = all.subset(&keep, &format!("the rest after {how}"));
            (verify, inputs) = (Some(held), Some(rest));
        }
        let judge = verify.or_else(|| inputs.clone());
        Ok(DataPlan {
            calibrate: inputs,
            judge,
        })
    }
}

impl Calibration {
    /// Samples from `inputs` (a file or folder, see `data::Dataset`), or
    /// `count` seeded random samples when `inputs` is `None`.
    pub fn load(
        model: &Model,
        shapes: &InputShapes,
        inputs: Option<&Path>,
        seed: u64,
        count: usize,
    ) -> Result<Calibration> {
        match inputs {
            Some(path) => Calibration::from_data(&open_data(model, shapes, path, None)?),
            None => Calibration::random(model, shapes, seed, count),
        }
    }

    /// `count` seeded random samples the model runs on (see
    /// [`Calibration::random_runnable`]).
    pub fn random(
        model: &Model,
        shapes: &InputShapes,
        seed: u64,
        count: usize,
    ) -> Result<Calibration> {
        Ok(Calibration::random_runnable(model, shapes, seed, count)?.0)
    }

    /// `count` seeded random samples that `model` runs on, and the model
    /// loaded by `exec::load_any` at their shapes when it had to be run to
    /// know (a symbolic dim was defaulted). Symbolic dims are 1 unless
    /// pinned; a model that fails there (a convolution wider than its input,
    /// an STFT frame longer than the signal, a stride-32 detector) is tried
    /// with its unpinned dims other than batch at each size of
    /// [`RANDOM_DIM_LADDER`], and the first that runs is kept, pinned, and
    /// named in `source`. "Runs" means in tract or ONNX Runtime, whichever
    /// loads it, and in ONNX Runtime too when it is installed: passes time
    /// their results there.
    pub fn random_runnable(
        model: &Model,
        shapes: &InputShapes,
        seed: u64,
        count: usize,
    ) -> Result<(Calibration, Option<Runner>)> {
        // With every dim pinned or fixed there is nothing to grow, nor to
        // run: the model is not loaded (it may be long, ONNX Runtime's load
        // quadratic, or large, tract's copy of its weights a second one).
        let declared = exec::declared_inputs(model, shapes)?;
        let defaulted = |spec: &InputSpec| {
            shapes.get(&spec.name).is_none()
                && spec.declared.iter().any(|d| !matches!(d, Dim::Fixed(_)))
        };
        if !declared.iter().any(defaulted) {
            return Ok((
                Calibration::random_of(&declared, shapes, seed, count)?,
                None,
            ));
        }
        let rt = exec::load_any(model, shapes, &[])?;
        let c = Calibration::random_from(&rt, shapes, seed, count)?;
        let at_one = match runs_everywhere(model, &rt, shapes, &c.samples[0]) {
            Ok(()) => return Ok((c, Some(rt))),
            Err(e) => e,
        };
        for size in RANDOM_DIM_LADDER {
            for grown in grown_variants(rt.inputs(), shapes, size) {
                let Ok(rt) = exec::load_any(model, &grown, &[]) else {
                    continue;
                };
                // Too many elements for random data.
                let Ok(mut c) = Calibration::random_from(&rt, &grown, seed, count) else {
                    continue;
                };
                if runs_everywhere(model, &rt, &grown, &c.samples[0]).is_ok() {
                    let pinned: Vec<String> = grown
                        .iter()
                        .filter(|(name, _)| shapes.get(name).is_none())
                        .map(|(name, dims)| format!("{name}={}", runtime::spelled(dims)))
                        .collect();
                    c.source = format!(
                        "{}, unpinned dims at {size} (the model does not run at 1): {}",
                        c.source,
                        pinned.join(" ")
                    );
                    return Ok((c, Some(rt)));
                }
            }
        }
        Err(at_one.context(format!(
            "the model runs on no random samples: not with its symbolic dims at 1, nor at \
             {RANDOM_DIM_LADDER:?}; pin them with --input-shape NAME=DIM,... or give --inputs"
        )))
    }

    /// [`Calibration::random`] of a model already loaded by
    /// `exec::load_any(model, shapes, &[])`: the same samples, without
    /// compiling it again.
    pub fn random_from(
        rt: &Runner,
        shapes: &InputShapes,
        seed: u64,
        count: usize,
    ) -> Result<Calibration> {
        let mut c = Calibration::random_of(rt.inputs(), shapes, seed, count)?;
        c.engine = OnceLock::from(rt.engine());
        Ok(c)
    }

    /// `count` seeded random samples for `inputs` (a model's, pinned).
    fn random_of(
        inputs: &[InputSpec],
        shapes: &InputShapes,
        seed: u64,
        count: usize,
    ) -> Result<Calibration> {
        let samples = (0..count.max(1) as u64)
            .map(|k| Sample::random(inputs, seed + k))
            .collect::<Result<Vec<_>>>()?;
        // Unpinned dims stay unpinned: loading defaults them to 1 again, and says so.
        let mut c = Calibration::of(samples, shapes.clone(), format!("random, seed {seed}"));
        c.random = true;
        Ok(c)
    }

    /// Every sample of `data`, read into memory.
    pub fn from_data(data: &Dataset) -> Result<Calibration> {
        if data.is_empty() {
            bail!("no input samples found in {}", data.describe());
        }
        let samples = (0..data.len())
            .map(|i| data.sample(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Calibration {
            samples,
            groups: data.groups(),
            source: data.describe(),
            random: false,
            engine: OnceLock::new(),
        })
    }

    /// Samples all of one shape, `shapes`.
    pub fn of(samples: Vec<Sample>, shapes: InputShapes, source: impl Into<String>) -> Calibration {
        let all = (0..samples.len()).collect();
        Calibration {
            samples,
            groups: vec![(shapes, all)],
            source: source.into(),
            random: false,
            engine: OnceLock::new(),
        }
    }

    /// At most `n` of the samples, spread evenly over them; all of them
    /// when they are no more.
    pub fn at_most(&self, n: usize) -> std::borrow::Cow<'_, Calibration> {
        match self.samples.len() > n {
            true => {
                std::borrow::Cow::Owned(self.subset(&crate::data::spread(self.samples.len(), n)))
            }
            false => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The samples at `idx`, in their shape groups, run where these are.
    pub fn subset(&self, idx: &[usize]) -> Calibration {
        let at: HashMap<usize, usize> = idx.iter().enumerate().map(|(j, &i)| (i, j)).collect();
        let groups = self
            .groups
            .iter()
            .filter_map(|(shapes, members)| {
                let kept: Vec<usize> = members.iter().filter_map(|i| at.get(i).copied()).collect();
                (!kept.is_empty()).then(|| (shapes.clone(), kept))
            })
            .collect();
        Calibration {
            samples: idx.iter().map(|&i| self.samples[i].clone()).collect(),
            groups,
            source: format!(
                "{} ({} of its {} samples)",
                self.source,
                idx.len(),
                self.samples.len()
            ),
            random: self.random,
            engine: self.engine.clone(),
        }
    }

    /// Runs every model in `engine` (by default, the runtime of the first load).
    pub fn in_runtime(mut self, engine: Option<Engine>) -> Calibration {
        if let Some(e) = engine {
            self.engine = OnceLock::from(e);
        }
        self
    }

    /// Loads `model` pinned to `shapes` in `engine`, or when `None` in the
    /// chosen runtime (see `engine`; the first load chooses it).
    fn load_in(
        &self,
        engine: Option<Engine>,
        model: &Model,
        shapes: &InputShapes,
        extra: &[String],
    ) -> Result<Runner> {
        match engine.or(self.engine.get().copied()) {
            Some(e) => exec::load_in(e, model, shapes, extra, &runtime::ort::Options::default())
                .with_context(|| format!("loading the model in {e}")),
            None => {
                let rt = exec::load_any(model, shapes, extra)?;
                let _ = self.engine.set(rt.engine());
                Ok(rt)
            }
        }
    }

    /// Runs `model` on every sample (one pinned model per shape group) with
    /// `extra` values as outputs too; outputs in sample order.
    pub fn run(&self, model: &Model, extra: &[String]) -> Result<Vec<Outputs>> {
        let mut out: Vec<Option<Outputs>> = vec![None; self.samples.len()];
        for (slot, (shapes, _)) in self.groups.iter().enumerate() {
            let rt = self.load_in(None, model, shapes, extra)?;
            self.run_group(&rt, slot, &mut out)?;
        }
        in_order(out)
    }

    /// Loads `model` once per shape group in `engine` (`None`: the chosen
    /// runtime), to be run on every sample ([`Calibration::run_loaded`]) and
    /// timed ([`Calibration::time_loaded`]) without loading it again: ONNX
    /// Runtime's session creation grows faster than the model (7 s for a
    /// 17,000-node int8 chain, 57 s for 50,000).
    pub fn load_model(&self, engine: Option<Engine>, model: &Model) -> Result<Loaded> {
        let runners = self
            .groups
            .iter()
            .map(|(shapes, _)| self.load_in(engine, model, shapes, &[]))
            .collect::<Result<_>>()?;
        Ok(Loaded { runners })
    }

    /// Runs a model of [`Calibration::load_model`] on every sample; outputs in
    /// sample order.
    pub fn run_loaded(&self, loaded: &Loaded) -> Result<Vec<Outputs>> {
        let mut out: Vec<Option<Outputs>> = vec![None; self.samples.len()];
        for (slot, rt) in loaded.runners.iter().enumerate() {
            self.run_group(rt, slot, &mut out)?;
        }
        in_order(out)
    }

    /// Runs shape group `slot`'s samples on `rt`, into `out` by sample index.
    fn run_group(&self, rt: &Runner, slot: usize, out: &mut [Option<Outputs>]) -> Result<()> {
        let members = &self.groups[slot].1;
        let group: Vec<Sample> = members.iter().map(|&i| self.samples[i].clone()).collect();
        for (&i, o) in members.iter().zip(rt.run_many(&group)?) {
            out[i] = Some(o);
        }
        Ok(())
    }

    /// Times `candidate` against `base` (both from [`Calibration::load_model`],
    /// in the same runtime) on the first samples of the largest shape
    /// group, runs alternated in this process after warm-up (see
    /// `runtime::bench`): at least `runs`, and for a fast model as many as
    /// take it [`MIN_TIMED_MS`] (see [`runtime::runs_for`]); for a slow one
    /// as many as fit in [`MAX_TIMED_MS`], at least [`LEAST_RUNS`]; none
    /// past the warm-up when it shows a [`DECISIVE_GAP`].
    pub fn time_loaded(
        &self,
        base: &Loaded,
        candidate: &Loaded,
        runs: usize,
    ) -> Result<runtime::BenchResult> {
        let Some(slot) = (0..self.groups.len()).max_by_key(|&g| self.groups[g].1.len()) else {
            bail!("no samples to time on");
        };
        let samples: Vec<Sample> = self.groups[slot]
            .1
            .iter()
            .take(4)
            .map(|&i| self.samples[i].clone())
            .collect();
        let (a, b) = (&base.runners[slot], &candidate.runners[slot]);
        // The warm-up (one untimed run each, then one timed) sizes the
        // timing, or decides.
        let warm = runtime::bench(a, b, &samples, 1, 1)?;
        match timed_runs(warm.a.median_ms, warm.b.median_ms, runs) {
            None => Ok(warm),
            Some(runs) => runtime::bench(a, b, &samples, 0, runs),
        }
    }

    /// Runs `model` on every sample and returns, for each name in `values`
    /// (values of the main graph), its tensor on each sample:
    /// `result[value][sample]`.
    pub fn capture(&self, model: &Model, values: &[String]) -> Result<Vec<Vec<runtime::Tensor>>> {
        if values.is_empty() {
            return Ok(vec![]);
        }
        let per_sample = self.sweep(model, values, |_, tensors| {
            Ok(tensors.iter().map(|&t| t.clone()).collect::<Vec<_>>())
        })?;
        let mut captured: Vec<Vec<runtime::Tensor>> = vec![vec![]; values.len()];
        for tensors in per_sample {
            for (slot, t) in captured.iter_mut().zip(tensors) {
                slot.push(t);
            }
        }
        Ok(captured)
    }

    /// Runs `model` on every sample with `values` (of the main graph) as
    /// outputs, and hands each sample's tensors, in `values` order, to `f`
    /// as soon as that sample has run: only the samples in flight are held
    /// (tract runs them in parallel), so statistics over many samples of
    /// large values stay in bounded memory. `f`'s results in sample order.
    pub fn sweep<T: Send>(
        &self,
        model: &Model,
        values: &[String],
        f: impl Fn(usize, &[&runtime::Tensor]) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        use rayon::prelude::*;
        let mut out: Vec<Option<T>> = (0..self.samples.len()).map(|_| None).collect();
        for (shapes, members) in &self.groups {
            let rt = self
                .load_in(None, model, shapes, values)
                .context("loading the model to capture calibration values")?;
            let one = |&i: &usize| -> Result<(usize, T)> {
                let outputs = rt.run(&self.samples[i])?;
                // By name through a map: thousands of values are captured at
                // once on long models, and `Outputs::get` is a linear search.
                let by_name: HashMap<&str, &runtime::Tensor> = outputs.iter().collect();
                let tensors = values
                    .iter()
                    .map(|name| {
                        by_name
                            .get(name.as_str())
                            .copied()
                            .with_context(|| format!("calibration value {name} was not produced"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((i, f(i, &tensors)?))
            };
            let done: Vec<(usize, T)> = match rt.engine() {
                Engine::Tract => members.par_iter().map(one).collect::<Result<_>>()?,
                Engine::Ort => members.iter().map(one).collect::<Result<_>>()?,
            };
            for (i, t) in done {
                out[i] = Some(t);
            }
        }
        out.into_iter()
            .map(|t| t.context("a sample belongs to no shape group"))
            .collect()
    }
}

/// Runs `sample` in `rt`, and in ONNX Runtime too when `rt` is tract and
/// ONNX Runtime is installed and loads the model (a model it cannot load
/// at all is not a question of shapes).
fn runs_everywhere(
    model: &Model,
    rt: &Runner,
    shapes: &InputShapes,
    sample: &Sample,
) -> Result<()> {
    rt.run(sample)?;
    if rt.engine() == Engine::Tract && runtime::ort::environment().is_ok() {
        let options = runtime::ort::Options::default();
        if let Ok(ort) = exec::load_in(Engine::Ort, model, shapes, &[], &options) {
            ort.run(sample).context("in ONNX Runtime")?;
        }
    }
    Ok(())
}

/// The shapes to try at `size`: every unpinned input grown (see
/// [`grow_unpinned`]), then each alone, since an unnamed dim may be a batch
/// the others must match (silero's state `[2, ?, 128]` beside its audio
/// `[?, ?]`).
fn grown_variants(specs: &[InputSpec], user: &InputShapes, size: usize) -> Vec<InputShapes> {
    let mut variants: Vec<InputShapes> =
        grow_unpinned(specs, user, size, None).into_iter().collect();
    if specs.len() > 1 {
        for spec in specs {
            if let Some(alone) = grow_unpinned(specs, user, size, Some(&spec.name)) {
                if !variants.contains(&alone) {
                    variants.push(alone);
                }
            }
        }
    }
    variants
}

/// `user`'s shapes plus every input it leaves unpinned (or only the input
/// named `only`), with each symbolic or unknown dim at `size`, except batch:
/// the first axis, and any dim named as some input's first axis is (an RNN
/// state's `[layers, batch, hidden]`). `None` when no dim would change.
fn grow_unpinned(
    specs: &[InputSpec],
    user: &InputShapes,
    size: usize,
    only: Option<&str>,
) -> Option<InputShapes> {
    let batch: HashSet<&str> = specs
        .iter()
        .filter_map(|s| match s.declared.first() {
            Some(Dim::Symbolic(name)) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut grown = user.clone();
    let mut changed = false;
    for spec in specs
        .iter()
        .filter(|s| user.get(&s.name).is_none() && only.is_none_or(|o| o == s.name))
    {
        if spec.declared.len() != spec.shape.len() {
            continue; // no declared shape to read the dims' roles from
        }
        let dims = spec
            .declared
            .iter()
            .zip(&spec.shape)
            .enumerate()
            .map(|(axis, (declared, &at))| match declared {
                Dim::Fixed(_) => at,
                _ if axis == 0 => at,
                Dim::Symbolic(name) if batch.contains(name.as_str()) => at,
                Dim::Symbolic(_) | Dim::Unknown => size,
            })
            .collect::<Vec<_>>();
        if dims != spec.shape {
            grown.insert(spec.name.clone(), dims);
            changed = true;
        }
    }
    changed.then_some(grown)
}

/// Timed runs after a warm-up that ran one model `a_ms` and the other
/// `b_ms` (see [`Calibration::time_loaded`]), or `None` when the warm-up
/// decides.
fn timed_runs(a_ms: f64, b_ms: f64, asked: usize) -> Option<usize> {
    let (fast, slow) = (a_ms.min(b_ms), a_ms.max(b_ms));
    if slow >= DECISIVE_GAP * fast && slow >= MIN_TIMED_MS {
        return None;
    }
    let fit = ((MAX_TIMED_MS / slow.max(1e-3)) as usize).max(LEAST_RUNS);
    Some(runtime::runs_for(slow, MIN_TIMED_MS, asked.min(fit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse::model_from_text;
    use crate::runtime::ElemType;

    /// A 3×3 convolution without padding: nothing to compute at 1×1.
    const CONV: &str = "model ir=8 opsets=[ai.onnx=17]
graph g
  input x: f32[n,1,h,w]
  init k: f32[1,1,3,3] = [1, 1, 1, 1, 1, 1, 1, 1, 1]
  y = Conv(x, k)
  output y: f32[..]
";

    #[test]
    fn a_sweep_reduces_each_sample_and_returns_them_in_sample_order() {
        // Two shape groups whose samples interleave: 0 and 2 of width 2,
        // 1 and 3 of width 3; each sample is reduced to the sum of r.
        let text = "model ir=8 opsets=[ai.onnx=17]
graph g
  input x: f32[1,w]
  r = Relu(x)
  y = Neg(r)
  output y: f32[..]
";
        let model = model_from_text(text).unwrap();
        let sample = |i: usize, w: usize| {
            let values: Vec<f32> = (0..w).map(|k| (i * 10 + k) as f32).collect();
            Sample::new(format!("s{i}"))
                .with("x", runtime::Tensor::from_f32(&[1, w], &values).unwrap())
        };
        let c = Calibration {
            samples: vec![sample(0, 2), sample(1, 3), sample(2, 2), sample(3, 3)],
            groups: vec![
                (InputShapes::parse(&["x=1,2"]).unwrap(), vec![0, 2]),
                (InputShapes::parse(&["x=1,3"]).unwrap(), vec![1, 3]),
            ],
            source: "test".into(),
            random: false,
            engine: OnceLock::new(),
        };
        let got = c
            .sweep(&model, &["r".to_string()], |i, tensors| {
                Ok((i, tensors[0].f32s()?.iter().sum::<f32>()))
            })
            .unwrap();
        assert_eq!(got, vec![(0, 1.0), (1, 33.0), (2, 41.0), (3, 93.0)]);
    }

    #[test]
    fn random_samples_grow_the_dims_a_model_cannot_run_at_1() {
        let model = model_from_text(CONV).unwrap();
        let (c, rt) = Calibration::random_runnable(&model, &InputShapes::new(), 0, 2).unwrap();
        // The batch stays 1; h and w take the first size that runs.
        assert_eq!(c.groups[0].0.get("x"), Some(&[1, 1, 32, 32][..]));
        assert!(c.source.contains("unpinned dims at 32"), "{}", c.source);
        assert!(c.source.contains("x=1,1,32,32"), "{}", c.source);
        for sample in &c.samples {
            assert_eq!(sample.get("x").unwrap().shape(), [1, 1, 32, 32]);
            rt.as_ref()
                .expect("loaded: its dims were grown")
                .run(sample)
                .unwrap();
        }
    }

    #[test]
    fn pinned_dims_are_never_grown() {
        // The user's shape is the user's: a model that cannot run on it
        // fails where it runs, with that shape.
        let model = model_from_text(CONV).unwrap();
        let shapes = InputShapes::parse(&["x=1,1,2,2"]).unwrap();
        let (c, _) = Calibration::random_runnable(&model, &shapes, 0, 1).unwrap();
        assert_eq!(c.groups[0].0.get("x"), Some(&[1, 1, 2, 2][..]));
        assert_eq!(c.source, "random, seed 0");
    }

    #[test]
    fn a_model_that_runs_at_no_size_says_how_to_pin() {
        // Only a width of 21,000 reshapes to [3, 1000, 7].
        let text = "model ir=8 opsets=[ai.onnx=17]
graph g
  input x: f32[n,w]
  init s: i64[3] = [3, 1000, 7]
  y = Reshape(x, s)
  output y: f32[..]
";
        let model = model_from_text(text).unwrap();
        let e = format!(
            "{:#}",
            Calibration::random_runnable(&model, &InputShapes::new(), 0, 1)
                .err()
                .unwrap()
        );
        assert!(e.contains("runs on no random samples"), "{e}");
        assert!(e.contains("--input-shape"), "{e}");
    }

    #[test]
    fn a_model_that_runs_at_1_keeps_its_dims_unpinned() {
        let text = CONV
            .replace("y = Conv(x, k)", "y = Relu(x)")
            .replace("  init k: f32[1,1,3,3] = [1, 1, 1, 1, 1, 1, 1, 1, 1]\n", "");
        let model = model_from_text(&text).unwrap();
        let (c, _) = Calibration::random_runnable(&model, &InputShapes::new(), 0, 1).unwrap();
        assert!(c.groups[0].0.is_empty());
        assert_eq!(c.source, "random, seed 0");
    }

    #[test]
    fn growing_keeps_fixed_dims_batch_and_what_the_user_pinned() {
        let spec = |name: &str, declared: Vec<Dim>| InputSpec {
            name: name.into(),
            elem_type: ElemType::F32,
            shape: declared
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    _ => 1,
                })
                .collect(),
            declared,
        };
        let sym = |s: &str| Dim::Symbolic(s.into());
        let specs = [
            spec("audio", vec![sym("batch"), Dim::Fixed(1), sym("frames")]),
            // An RNN state: its batch is not on the first axis.
            spec("h0", vec![Dim::Fixed(2), sym("batch"), Dim::Fixed(8)]),
            spec("lens", vec![Dim::Unknown]),
            spec("image", vec![Dim::Unknown, Dim::Unknown]),
        ];
        let user = InputShapes::parse(&["image=1,5"]).unwrap();
        let grown = grow_unpinned(&specs, &user, 32, None).unwrap();
        let all: Vec<(&str, &[usize])> = grown.iter().collect();
        assert_eq!(
            all,
            [("audio", &[1, 1, 32][..]), ("image", &[1, 5][..])],
            "h0 and lens have nothing but batch to grow"
        );
        // A first axis is batch even when unnamed.
        assert!(grow_unpinned(&specs[2..3], &InputShapes::new(), 32, None).is_none());
        let alone = grow_unpinned(&specs, &InputShapes::new(), 32, Some("image")).unwrap();
        assert_eq!(alone.iter().collect::<Vec<_>>(), [("image", &[1, 32][..])]);
    }

    /// The warm-up decides only a wide gap between slow runs; otherwise a
    /// slow model gets the runs that fit the cap, a fast one the runs that
    /// fill the minimum.
    #[test]
    fn the_warm_up_decides_only_a_wide_gap_between_slow_runs() {
        // DNSMOS in tract: float 2.3 s, int8 38 s a run.
        assert_eq!(timed_runs(2_300.0, 38_000.0, 15), None);
        // A 40x gap between runs of microseconds: noise can do that.
        assert_eq!(timed_runs(0.02, 0.8, 15), Some(313));
        // 1.5 s and 2 s a run: 10 runs fit in 20 s.
        assert_eq!(timed_runs(1_500.0, 2_000.0, 15), Some(10));
        // 30 s a run: the least.
        assert_eq!(timed_runs(30_000.0, 31_000.0, 15), Some(LEAST_RUNS));
        // 5 ms a run: 50 runs fill 250 ms.
        assert_eq!(timed_runs(4.0, 5.0, 15), Some(50));
    }
}
