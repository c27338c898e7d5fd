//! The `tune` and `check` commands: their options, and the steps around
//! the search (data, the output written by the plain command's steps, the
//! report, the table and the plot).

use super::{build, plot, record, Goal, Judge, Metric, Settings, Space};
use crate::calibrate::{Calibration, DataOptions, DataPlan};
use crate::data::{Dataset, Preprocess};
use crate::ir::{verify::verify, Model};
use crate::onnx::{self, SaveOptions};
use crate::runtime::{self, Engine, InputShapes};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when no candidate meets A_min.
pub const NOTHING_QUALIFIES: u8 = 3;
/// Exit code of `check` on a regression.
pub const REGRESSION: u8 = 2;

/// The data and the accuracy floor, shared by `tune` and `check`.
#[derive(clap::Args)]
pub struct JudgeArgs {
    /// The data to calibrate and judge on (the main command's --inputs forms: .npy, .npz,
    /// a folder of them, or images with --preprocess). Symbolic dims are pinned from it.
    #[arg(long, value_name = "PATH")]
    pub inputs: PathBuf,
    /// Class labels of the samples (.npy of ints, .txt one per line, .csv file,label):
    /// the metric is then top-1 accuracy unless --metric says otherwise.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// How images become tensors (see the main command's --preprocess).
    #[arg(long, value_name = "SPEC")]
    pub preprocess: Option<String>,
    /// Pin an input's shape (symbolic dims otherwise come from the data). Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...")]
    pub input_shapes: Vec<String>,
    /// A_min as a loss: at most X below the original's metric on the same samples
    /// (points of a percentage; dB for snr).
    #[arg(
        long,
        value_name = "X",
        required_unless_present = "min_metric",
        conflicts_with = "min_metric"
    )]
    pub max_drop: Option<f64>,
    /// A_min as a floor: the metric must stay at or above Y.
    #[arg(long, value_name = "Y")]
    pub min_metric: Option<f64>,
    /// top1 or top5 (with --labels); agreement (percent of output rows whose best class is
    /// the original's), cosine (×100, worst output) or snr (dB, worst output) against the
    /// original. Default: top1 with labels, agreement when the only float output holds
    /// class scores (labels may sit beside it), else cosine.
    #[arg(long, value_name = "NAME")]
    pub metric: Option<String>,
    /// Your own metric: a shell command in which {model} is replaced by a candidate's path;
    /// its last stdout line is the metric (higher is better), e.g. character accuracy, or
    /// K/N (K units of N right, read as 100·K/N): with counts, tune bounds the loss at 95%.
    #[arg(long, value_name = "CMD")]
    pub metric_cmd: Option<String>,
    /// Where latency and the metric are measured: ort (ONNX Runtime) or tract.
    /// Default: ort when its library is found, else tract.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,
    /// Intra-op threads, as deployed (ONNX Runtime; tract runs on one).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Timed runs per model, alternating with the original (the least: a fast model gets
    /// more, about 0.4 s of runs).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub runs: usize,
    /// Untimed warm-up runs per model.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub warmup: usize,
}

#[derive(clap::Args)]
pub struct TuneArgs {
    /// The model to optimise (never modified).
    pub input: PathBuf,
    /// Where to write the fastest model that meets A_min (nothing is written otherwise).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Passes the search may use (fuse always runs first).
    #[arg(
        long,
        default_value = "fuse,quant,prune-channels,svd",
        value_name = "LIST"
    )]
    pub space: String,
    /// Wall-time budget of the whole search (e.g. 90s, 20m, 1h).
    #[arg(long, default_value = "20m", value_name = "TIME")]
    pub budget: String,
    /// Cross-validation folds: each is judged by a model calibrated on the others.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub folds: usize,
    /// Seed of the fold split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the JSON report (every candidate, its folds, the front, the chosen --passes).
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// Draw latency against metric for every candidate (SVG), the front and A_min marked.
    #[arg(long, value_name = "PLOT.svg")]
    pub plot: Option<PathBuf>,
    /// Keep every candidate's record in DIR and reuse those of an earlier run on the same
    /// model, data and settings (with new data, the old front is re-evaluated first).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// When nothing meets A_min, still write the candidate closest to it (exit code 3 all the same).
    #[arg(long)]
    pub best_effort: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The deployed (optimised) model.
    pub model: PathBuf,
    /// The original model it must stay close to.
    #[arg(long, value_name = "ORIGINAL.onnx")]
    pub against: PathBuf,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Fail also when the model's median latency is above L milliseconds.
    #[arg(long, value_name = "L")]
    pub max_latency_ms: Option<f64>,
    /// Write the JSON result here.
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
}

impl JudgeArgs {
    fn goal(&self) -> Result<Goal> {
        let goal = match (self.max_drop, self.min_metric) {
            (Some(x), None) => Goal::MaxDrop(x),
            (None, Some(y)) => Goal::MinMetric(y),
            _ => bail!("give --max-drop or --min-metric"),
        };
        if let Goal::MaxDrop(x) = goal {
            ensure!(x >= 0.0 && x.is_finite(), "--max-drop must be >= 0");
        }
        Ok(goal)
    }

    fn engine(&self) -> Result<Engine> {
        match &self.runtime {
            Some(r) => {
                let e: Engine = r.parse()?;
                if e == Engine::Ort {
                    runtime::ort::environment()?;
                }
                Ok(e)
            }
            None if runtime::ort::environment().is_ok() => Ok(Engine::Ort),
            None => Ok(Engine::Tract),
        }
    }

    /// Opens the data (headers, labels) for `model`.
    fn open(&self, model: &Model) -> Result<(Dataset, Option<Preprocess>)> {
        let shapes = InputShapes::parse(&self.input_shapes)?;
        let preprocess = self
            .preprocess
            .as_deref()
            .map(Preprocess::parse)
            .transpose()?;
        let options = DataOptions {
            inputs: Some(&self.inputs),
            labels: self.labels.as_deref(),
            preprocess: preprocess.as_ref(),
            ..Default::default()
        };
        let plan = DataPlan::open(model, &shapes, &options)?;
        let data = plan.calibrate.context("no data")?;
        ensure!(
            !data.is_empty(),
            "no input samples found in {}",
            data.describe()
        );
        Ok((data, preprocess))
    }

    /// Loads the judge and chooses the metric.
    fn judge(&self, engine: Engine, data: &Dataset, original: &Model) -> Result<(Judge, String)> {
        let mut judge = Judge::new(engine, self.threads.max(1), data, original)?;
        let first = judge.first_reference().context("no sample ran")?;
        let (metric, why) = Metric::choose(
            self.metric.as_deref(),
            self.metric_cmd.as_deref(),
            data.has_labels(),
            first,
        )?;
        judge.metric = metric;
        Ok((judge, why))
    }
}

/// Loads a model the user gave: valid by the verifier and ONNX's rules.
fn load_valid(path: &Path) -> Result<(Model, onnx::LoadInfo)> {
    let (model, info) = onnx::load_with_info(path)?;
    verify(&model).with_context(|| format!("{} is not a valid model", path.display()))?;
    crate::validate::validate(&model).with_context(|| format!("{}", path.display()))?;
    Ok((model, info))
}

/// `30s`, `20m`, `1h`, `1h30m`, or plain seconds.
pub fn parse_budget(text: &str) -> Result<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        ensure!(secs > 0.0 && secs.is_finite(), "--budget must be positive");
        return Ok(Duration::from_secs_f64(secs));
    }
    let (mut total, mut number) = (0.0, String::new());
    for c in t.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' => {
                let n: f64 = number
                    .parse()
                    .with_context(|| format!("--budget {text}: expected e.g. 90s, 20m or 1h"))?;
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                number.clear();
            }
            _ => bail!("--budget {text}: expected e.g. 90s, 20m or 1h"),
        }
    }
    ensure!(
        number.is_empty() && total > 0.0,
        "--budget {text}: expected e.g. 90s, 20m or 1h"
    );
    Ok(Duration::from_secs_f64(total))
}

/// A word the shell reads back as itself.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the records depend on: the model's bytes, the data, and the
/// settings that change a candidate's numbers.
fn fingerprint(input: &Path, data: &Dataset, args: &TuneArgs, engine: Engine) -> Result<String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(input)?.hash(&mut h);
    let j = &args.judge;
    let parts = (
        data.describe(),
        data.len(),
        &j.labels,
        &j.preprocess,
        &j.input_shapes,
        &j.metric,
        &j.metric_cmd,
        format!("{:?}{:?}", j.max_drop, j.min_metric),
        (engine.to_string(), j.threads, args.folds, args.seed),
    );
    parts.hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

pub fn run_tune(args: &TuneArgs) -> Result<ExitCode> {
    let goal = args.judge.goal()?;
    let space = Space::parse(&args.space)?;
    let budget = parse_budget(&args.budget)?;
    let engine = args.judge.engine()?;
    onnx::check_output(&args.input, &args.output)?;
    let (model, info) = load_valid(&args.input)?;
    let targets: Vec<PathBuf> = [
        Some(args.output.clone()),
        args.report.clone(),
        args.plot.clone(),
    ]
    .into_iter()
    .flatten()
    .chain(args.resume.iter().map(|d| d.join(record::RESUME_FILE)))
    .collect();
    onnx::refuse_overwriting(&info.files, &targets)?;
    let (data, preprocess) = args.judge.open(&model)?;

    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos}/{len} candidates (eta {eta}) {wide_msg}",
        )
        .expect("a valid template"),
    );
    progress.set_message(format!("running the original on {}", data.describe()));
    let (judge, why) = args.judge.judge(engine, &data, &model)?;
    onnx::defer_first_interrupt();
    let settings = Settings {
        goal,
        space,
        folds: args.folds,
        seed: args.seed,
        warmup: args.judge.warmup,
        runs: args.judge.runs.max(1),
        budget,
        original_file: &args.input,
        resume: args.resume.as_deref(),
        fingerprint: fingerprint(&args.input, &data, args, engine)?,
    };
    let outcome = super::tune(&model, &judge, &settings, &progress)?;
    let metric = &judge.metric;
    let all: Vec<usize> = (0..judge.len()).collect();
    let original_all = judge.original(&all, &args.input)?;

    // The output: the plain command's steps on all the data, so that the
    // printed command reproduces it byte for byte.
    let written = match (outcome.chosen, args.best_effort) {
        (Some(k), _) => Some(k),
        (None, true) => closest(&outcome.candidates),
        (None, false) => None,
    };
    let mut reproduce = None;
    if let Some(k) = written {
        let passes = &outcome.candidates[k].passes;
        progress.set_message(format!("building {passes} on all the data"));
        let (out_model, _) = build(&model, passes, Some(Calibration::from_data(&data)?))
            .with_context(|| format!("building {passes} on all the data"))?;
        let options = SaveOptions {
            external: None,
            protect: info.files.clone(),
        };
        onnx::save(&out_model, &args.output, &options)?;
        let mut cmd = format!(
            "onnx-opt {} -o {} --inputs {}",
            shell_quote(&args.input.display().to_string()),
            shell_quote(&args.output.display().to_string()),
            shell_quote(&args.judge.inputs.display().to_string())
        );
        if let Some(p) = &preprocess {
            cmd.push_str(&format!(" --preprocess {}", shell_quote(&p.to_string())));
        }
        for s in &args.judge.input_shapes {
            cmd.push_str(&format!(" --input-shape {}", shell_quote(s)));
        }
        cmd.push_str(&format!(" --passes {}", shell_quote(passes)));
        reproduce = Some(cmd);
    }
    progress.finish_and_clear();

    let unit = metric.unit();
    let floor = goal.floor(original_all);
    // A command judges on its own data: --inputs only calibrate then.
    let judged_on = match metric {
        Metric::Command(_) => format!(
            "on the command's own data ({} --inputs samples calibrate)",
            judge.len()
        ),
        _ => format!("on {} samples", judge.len()),
    };
    println!(
        "metric: {} ({why}), judged in {engine}; original {original_all:.2}{unit} {judged_on}; \
         A_min {floor:.2}{unit}",
        metric.name(),
    );
    println!(
        "folds: {} of {:?} samples (seeded {}); search judged on fold 1, bound = worst fold, \
         paired with the original on the same samples",
        outcome.fold_sizes.len(),
        outcome.fold_sizes,
        args.seed
    );
    if outcome.reused > 0 {
        println!(
            "reused {} recorded candidates from --resume",
            outcome.reused
        );
    }
    print!("{}", record::table(&outcome.candidates, unit));
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    let report = json!({
        "input": args.input.display().to_string(),
        "output": written.map(|_| args.output.display().to_string()),
        "runtime": engine,
        "threads": args.judge.threads,
        "data": data.describe(),
        "metric": { "name": metric.name(), "unit": unit, "why": why },
        "goal": match goal { Goal::MaxDrop(x) => json!({"max_drop": x}), Goal::MinMetric(y) => json!({"min_metric": y}) },
        "original": { "metric": original_all, "folds": outcome.original_folds },
        "a_min": floor,
        "bound": "worst fold, each judged by a model calibrated on the other folds, paired with the original on that fold",
        "folds": outcome.fold_sizes,
        "budget_s": budget.as_secs_f64(),
        "chosen": outcome.chosen.map(|k| &outcome.candidates[k]),
        "written": written.map(|k| &outcome.candidates[k].passes),
        "reproduce": reproduce,
        "candidates": outcome.candidates,
        "notes": outcome.notes,
    });
    if let Some(path) = &args.report {
        onnx::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &args.plot {
        let svg = plot::svg(
            &outcome.candidates,
            outcome.chosen,
            floor,
            metric.name(),
            unit,
        )?;
        onnx::write_atomic(path, svg.as_bytes())?;
    }
    match (outcome.chosen, written) {
        (Some(k), _) => {
            let c = &outcome.candidates[k];
            let worst = c
                .folds
                .iter()
                .map(|f| f.metric - f.original)
                .fold(f64::INFINITY, f64::min);
            println!(
                "chosen: {:.2}x faster in {engine}, worst fold {:+.2}{unit} against the original \
                 ({} folds)\nwritten: {}\nreproduce: {}",
                c.speedup.unwrap_or(f64::NAN),
                worst,
                c.folds.len(),
                args.output.display(),
                reproduce.as_deref().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        (None, w) => {
            eprintln!(
                "error: no candidate meets A_min ({floor:.2}{unit}) on every fold; closest: {}",
                closest_list(&outcome.candidates)
            );
            match w {
                Some(_) => eprintln!(
                    "--best-effort: wrote the closest, {} (below A_min)",
                    args.output.display()
                ),
                None => eprintln!("nothing written"),
            }
            Ok(ExitCode::from(NOTHING_QUALIFIES))
        }
    }
}

/// The candidate with the best metric (the fastest of equals).
fn closest(candidates: &[record::Candidate]) -> Option<usize> {
    (0..candidates.len())
        .filter(|&k| candidates[k].metric.is_some())
        .max_by(|&a, &b| {
            let key = |k: usize| {
                (
                    candidates[k].metric.unwrap_or(f64::MIN),
                    candidates[k].speedup.unwrap_or(0.0),
                )
            };
            key(a)
                .0
                .total_cmp(&key(b).0)
                .then(key(a).1.total_cmp(&key(b).1))
        })
}

fn closest_list(candidates: &[record::Candidate]) -> String {
    let mut ks: Vec<&record::Candidate> =
        candidates.iter().filter(|c| c.metric.is_some()).collect();
    ks.sort_by(|a, b| {
        b.metric
            .unwrap_or(f64::MIN)
            .total_cmp(&a.metric.unwrap_or(f64::MIN))
    });
    let list: Vec<String> = ks
        .iter()
        .take(3)
        .map(|c| format!("{} ({:.2})", c.passes, c.metric.unwrap_or(f64::NAN)))
        .collect();
    if list.is_empty() {
        "none could be judged".into()
    } else {
        list.join(", ")
    }
}

pub fn run_check(args: &CheckArgs) -> Result<ExitCode> {
    let goal = args.judge.goal()?;
    let engine = args.judge.engine()?;
    let (original, _) = load_valid(&args.against)?;
    let (deployed, _) = load_valid(&args.model)?;
    let (data, _) = args.judge.open(&original)?;
    let (judge, why) = args.judge.judge(engine, &data, &original)?;
    let all: Vec<usize> = (0..judge.len()).collect();
    let before = judge.original(&all, &args.against)?;
    let after = judge
        .evaluate(&deployed, &all, Some(&args.model))
        .with_context(|| format!("judging {}", args.model.display()))?
        .value;
    let (shapes, samples) = judge.timing_samples(super::TIMING_SAMPLES);
    let a = judge
        .load(&original, shapes)
        .context("loading the original")?;
    let b = judge
        .load(&deployed, shapes)
        .context("loading the deployed model")?;
    let runs = super::timing_runs(&a, &samples, args.judge.warmup, args.judge.runs.max(1))?;
    let bench = runtime::bench(&a, &b, &samples, args.judge.warmup, runs)?;
    let unit = judge.metric.unit();
    let floor = goal.floor(before);
    let mut failures = vec![];
    if !goal.meets(before, after) {
        failures.push(format!(
            "{} {after:.2}{unit} is below A_min {floor:.2}{unit} (original {before:.2}{unit})",
            judge.metric.name()
        ));
    }
    if let Some(l) = args.max_latency_ms.filter(|&l| bench.b.median_ms > l) {
        failures.push(format!(
            "median latency {:.3} ms is above --max-latency-ms {l}",
            bench.b.median_ms
        ));
    }
    println!(
        "{}: {} {after:.2}{unit} (original {before:.2}{unit}, A_min {floor:.2}{unit}; {why}) on {} \
         samples; {:.3} ms median in {engine}, {:.2}x the original",
        args.model.display(),
        judge.metric.name(),
        judge.len(),
        bench.b.median_ms,
        bench.speedup
    );
    if let Some(path) = &args.report {
        let json = json!({
            "model": args.model.display().to_string(),
            "against": args.against.display().to_string(),
            "runtime": engine,
            "metric": { "name": judge.metric.name(), "unit": unit, "why": why },
            "original": before, "metric_value": after, "a_min": floor,
            "bench": bench, "ok": failures.is_empty(), "failures": failures,
        });
        onnx::write_atomic(path, &serde_json::to_vec_pretty(&json)?)?;
    }
    if failures.is_empty() {
        println!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("regression: {f}");
    }
    Ok(ExitCode::from(REGRESSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_people_write_them() {
        assert_eq!(parse_budget("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_budget("20m").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse_budget("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_budget("2.5").unwrap(), Duration::from_millis(2500));
        for bad in ["", "m", "10x", "5m3", "-1", "0"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("fuse,quant"), "fuse,quant");
        assert_eq!(shell_quote("quant{exclude=a|b*}"), "'quant{exclude=a|b*}'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
