//! The `onnx-opt` command. Errors are one line (with their causes), exit 1;
//! a verification over tolerance exits 2 and writes no output.

use anyhow::{ensure, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use onnx_opt::calibrate::{Calibration, DataOptions, DataPlan};
use onnx_opt::check::{self, Judged};
use onnx_opt::data::Preprocess;
use onnx_opt::ir::{diff::model_diff, verify::verify};
use onnx_opt::onnx::{self, ExternalData, SaveOptions};
use onnx_opt::passes::{DataUse, PASSES};
use onnx_opt::pipeline::{self, Pipeline};
use onnx_opt::report::{DataReport, FileStats, Report, RuntimeReport, Sizes, VerifyReport};
use onnx_opt::runtime::{self, Engine, InputShapes};
use onnx_opt::{inspect, profile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A graph-rewriting compiler for ONNX models: prune, quantize, split and fuse,
/// then check the result against the original in tract.
#[derive(Parser)]
#[command(
    name = "onnx-opt",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The model to optimise (never modified).
    #[arg(required = true)]
    input: Option<PathBuf>,
    /// Where to write the optimised model (written atomically; must differ from the input).
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// Passes to run, in order: `name{key=value,...},name,...`. An empty list is a round trip.
    /// See `onnx-opt passes` for every pass and option.
    #[arg(long, default_value = "", value_name = "LIST")]
    passes: String,
    /// Run original and optimised model on the same inputs (in each --runtime) and compare outputs.
    #[arg(long)]
    verify: bool,
    /// Largest allowed max_rel_err (max |a-b| / max |a|) per output. Default: 1e-4 when every
    /// pass is exact; none (measure only) when a lossy pass runs.
    #[arg(long, value_name = "X")]
    tolerance: Option<f64>,
    /// Time original and optimised model (in each --runtime; same process, alternating runs).
    #[arg(long)]
    bench: bool,
    /// Runtimes for --verify and --bench: tract, ort (ONNX Runtime) or tract,ort. Default:
    /// tract, then ONNX Runtime when tract cannot run the original model and ONNX Runtime is
    /// found. ONNX Runtime is loaded from ORT_DYLIB_PATH, else from the onnxruntime Python
    /// package of the active virtualenv or ./.venv.
    #[arg(long, value_name = "LIST")]
    runtime: Option<String>,
    /// ONNX Runtime's intra-op threads (tract runs on one).
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Runtime that captures the values passes calibrate on: tract or ort. Default: tract when
    /// it runs the model, else ONNX Runtime.
    #[arg(long, value_name = "RUNTIME")]
    calibrate_runtime: Option<String>,
    /// Timed runs per model for --bench.
    #[arg(long, default_value_t = 20, value_name = "N")]
    runs: usize,
    /// Untimed warm-up runs per model for --bench.
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    /// Write the JSON report here.
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// Pin an input's shape for running (symbolic dims otherwise default to 1). Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...")]
    input_shapes: Vec<String>,
    /// Input data: a .npy (single-input models) or .npz (keys = input names), each array
    /// [N, ...] = N samples; a folder of such files; or a folder of images with --preprocess.
    /// Symbolic dims are pinned from the data. Passes that fit to data (svd, prune-channels,
    /// quant) calibrate on it; --verify and --bench run on it. Without it: seeded random inputs.
    #[arg(long, value_name = "PATH")]
    inputs: Option<PathBuf>,
    /// Held-out data for --verify and --bench (same forms as --inputs), so that passes which
    /// calibrate on --inputs are judged on data they have not seen. Default: --inputs.
    #[arg(long, value_name = "PATH")]
    verify_inputs: Option<PathBuf>,
    /// Hold out this fraction of --inputs (chosen by --seed) for --verify and --bench;
    /// the passes calibrate on the rest.
    #[arg(long, value_name = "F")]
    holdout: Option<f64>,
    /// How images become tensors, e.g. `resize=256,crop=224,mean=0.485:0.456:0.406,
    /// std=0.229:0.224:0.225,scale=1/255,layout=nchw,channels=rgb` (see README: Data).
    #[arg(long, value_name = "SPEC")]
    preprocess: Option<String>,
    /// Class labels of the judged samples (.npy of ints, .txt one per line, .csv file,label):
    /// --verify then reports top-1/top-5 accuracy of original and result.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Seed of the random inputs and of --holdout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random samples to use when --inputs is not given.
    #[arg(long, default_value_t = 2, value_name = "N")]
    samples: usize,
    /// Store tensors of at least 1 KiB in a side file named after the output plus `.data`
    /// (`-o m.onnx` writes `m.onnx.data`); automatic past 2 GiB.
    #[arg(long)]
    external_data: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List every pass with its options and defaults.
    Passes,
    /// Show a model's operators, parameters, inputs/outputs, opsets and where its weights live.
    Inspect { model: PathBuf },
    /// Print a readable diff of two models' graphs (the text the snapshot tests use).
    Diff { before: PathBuf, after: PathBuf },
    /// Run a model on inputs in tract or ONNX Runtime; print its outputs, save them as .npz.
    Run(RunModelArgs),
    /// Time every node of a model in ONNX Runtime's profiler, summed per op type and per node.
    Profile(ProfileArgs),
    /// Find the fastest model whose metric stays at or above A_min on data it was not
    /// calibrated on (k-fold), searching passes and per-layer settings; prints the --passes
    /// that reproduces it. Exit 3 when nothing qualifies (nothing written).
    Tune(onnx_opt::tune::cli::TuneArgs),
    /// The deployment gate: re-judge a deployed model against its original on new data.
    /// Exit 0 ok, 2 when its metric falls below A_min or its latency above --max-latency-ms.
    Check(onnx_opt::tune::cli::CheckArgs),
}

#[derive(clap::Args)]
struct RunModelArgs {
    model: PathBuf,
    /// Input data, in the array forms of the main command's --inputs (.npy, .npz, a folder of
    /// them; every sample is run); seeded random without it.
    #[arg(long, value_name = "PATH")]
    inputs: Option<PathBuf>,
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...")]
    input_shapes: Vec<String>,
    /// tract or ort.
    #[arg(long, default_value = "tract")]
    runtime: String,
    /// ONNX Runtime's intra-op threads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the outputs of the (single) sample here, keys = output names.
    #[arg(long, value_name = "OUT.npz")]
    save: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ProfileArgs {
    model: PathBuf,
    /// Only ort: tract has no per-node profiler here.
    #[arg(long, default_value = "ort")]
    runtime: String,
    /// Input data (array forms, as for `run`); the first sample is profiled. Random without it.
    #[arg(long, value_name = "PATH")]
    inputs: Option<PathBuf>,
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...")]
    input_shapes: Vec<String>,
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Profiled runs (after warm-up).
    #[arg(long, default_value_t = 10, value_name = "N")]
    runs: usize,
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the JSON profile here.
    #[arg(long, value_name = "PROFILE.json")]
    report: Option<PathBuf>,
    /// Rows of the per-node table (all are in the JSON).
    #[arg(long, default_value_t = 20, value_name = "N")]
    top: usize,
}

fn passes_help() -> String {
    let mut out = String::from("Passes (details: `onnx-opt passes`):\n");
    for p in PASSES {
        out.push_str(&format!("  {:<16} {}\n", p.name, p.summary));
    }
    out.push_str("\nExit codes: 0 ok, 1 error (nothing written), 2 verification over tolerance or `check` regression (nothing written), 3 `tune`: nothing meets A_min (nothing written).");
    out
}

fn main() -> ExitCode {
    if let Err(e) = onnx::remove_temps_on_signals() {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    let cmd = Cli::command().after_help(passes_help());
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(Command::Passes) => list_passes(),
        Some(Command::Inspect { model }) => run_inspect(&model),
        Some(Command::Diff { before, after }) => run_diff(&before, &after),
        Some(Command::Run(args)) => run_model(&args),
        Some(Command::Profile(args)) => run_profile(&args),
        Some(Command::Tune(args)) => onnx_opt::tune::cli::run_tune(&args),
        Some(Command::Check(args)) => onnx_opt::tune::cli::run_check(&args),
        None => optimise(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn list_passes() -> Result<ExitCode> {
    for p in PASSES {
        let kind = match (p.exact, p.data) {
            (true, _) => "exact",
            (false, DataUse::None) => "lossy",
            (false, DataUse::IfGiven) => "lossy, fits to --inputs when given",
            (false, DataUse::Runs) => "lossy, fits to --inputs when given, times in ONNX Runtime",
            (false, DataUse::Required) => "lossy, calibrates on --inputs",
        };
        println!("{:<16} [{kind}] {}", p.name, p.summary);
        for o in p.options {
            println!("    {:<28} {}", format!("{}={}", o.name, o.default), o.help);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_inspect(path: &Path) -> Result<ExitCode> {
    let (model, info) = onnx::load_with_info(path)?;
    print!(
        "{}",
        inspect::inspect(&model, info.file_bytes, info.external_tensors)
    );
    Ok(ExitCode::SUCCESS)
}

fn run_diff(a: &Path, b: &Path) -> Result<ExitCode> {
    print!("{}", model_diff(&onnx::load(a)?, &onnx::load(b)?));
    Ok(ExitCode::SUCCESS)
}

fn run_model(args: &RunModelArgs) -> Result<ExitCode> {
    let engine: Engine = args.runtime.parse()?;
    let shapes = InputShapes::parse(&args.input_shapes)?;
    let model = onnx::load(&args.model)?;
    let data = Calibration::load(&model, &shapes, args.inputs.as_deref(), args.seed, 1)?;
    ensure!(
        args.save.is_none() || data.samples.len() == 1,
        "--save takes one sample; {} holds {}",
        data.source,
        data.samples.len()
    );
    let options = runtime::ort::Options {
        threads: args.threads,
        profile: None,
    };
    let mut saved = false;
    for (group_shapes, members) in &data.groups {
        let rt = onnx_opt::exec::load_in(engine, &model, group_shapes, &[], &options)?;
        for &i in members {
            let sample = &data.samples[i];
            let out = rt.run(sample)?;
            println!("{} ({engine}):", sample.source());
            for (name, t) in out.iter() {
                println!("  {}", runtime::describe(name, t));
            }
            if let (Some(path), false) = (&args.save, saved) {
                runtime::save_npz(path, &out)?;
                saved = true;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_profile(args: &ProfileArgs) -> Result<ExitCode> {
    let engine: Engine = args.runtime.parse()?;
    ensure!(
        engine == Engine::Ort,
        "profile runs in ONNX Runtime only (--runtime ort)"
    );
    let shapes = InputShapes::parse(&args.input_shapes)?;
    let model = onnx::load(&args.model)?;
    let data = Calibration::load(&model, &shapes, args.inputs.as_deref(), args.seed, 1)?;
    let settings = profile::Settings {
        threads: args.threads,
        warmup: args.warmup,
        runs: args.runs.max(1),
    };
    let report = profile::profile(&model, &data, &settings)?;
    print!("{}", report.table(args.top));
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        onnx::write_atomic(path, &json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn optimise(args: &RunArgs) -> Result<ExitCode> {
    let (input, output) = (
        args.input.as_deref().expect("required"),
        args.output.as_deref().expect("required"),
    );
    let pipeline = Pipeline::parse(&args.passes)?;
    let shapes = InputShapes::parse(&args.input_shapes)?;
    let runtimes = Engine::parse_list(args.runtime.as_deref().unwrap_or("tract"))?;
    if runtimes.contains(&Engine::Ort) && (args.verify || args.bench) {
        runtime::ort::environment()?;
    }
    ensure!(
        args.tolerance.is_none_or(|t| t >= 0.0),
        "--tolerance must be >= 0"
    );
    onnx::check_output(input, output)?;

    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_message(format!("loading {}", input.display()));
    let (mut model, info) = onnx::load_with_info(input)?;
    let external = args.external_data.then(ExternalData::default);
    let side_file = match &external {
        Some(e) => Some(onnx::folder_of(output).join(e.file_name_for(output)?)),
        None => None,
    };
    let targets: Vec<PathBuf> = [Some(output.to_path_buf()), side_file, args.report.clone()]
        .into_iter()
        .flatten()
        .collect();
    onnx::refuse_overwriting(&info.files, &targets)?;
    verify(&model).context("the input model is not valid")?;
    // The user's model against ONNX's rules, before any pass or tract sees it.
    onnx_opt::validate::validate(&model)?;
    let before_stats = model.stats();
    let original = (args.verify || args.bench).then(|| model.clone());

    // Every data source is opened (headers read, checked) before any work.
    let preprocess = args
        .preprocess
        .as_deref()
        .map(Preprocess::parse)
        .transpose()?;
    let options = DataOptions {
        inputs: args.inputs.as_deref(),
        verify_inputs: args.verify_inputs.as_deref(),
        labels: args.labels.as_deref(),
        preprocess: preprocess.as_ref(),
        holdout: args.holdout,
        seed: args.seed,
    };
    let plan = DataPlan::open(&model, &shapes, &options)?;

    // The random samples the original runs on, made once, with the original
    // as `exec::load_any` compiled it when making them needed a run (a
    // symbolic dim defaulted): calibration and judging without data use
    // them, and `--verify`/`--bench` in tract run it.
    let mut loaded: Option<(Calibration, Option<runtime::Runner>)> = None;
    let mut cx = pipeline::PassContext::default();
    // Why the passes run without data, when they do: a pass that then fails
    // for want of data reports this first cause, not only its own symptom.
    let mut no_data_cause = None;
    let data_use = pipeline.data_use();
    let random_serves = matches!(data_use, DataUse::Required | DataUse::Runs);
    if random_serves || (data_use == DataUse::IfGiven && args.inputs.is_some()) {
        progress.set_message("loading calibration data");
        let engine = args
            .calibrate_runtime
            .as_deref()
            .map(str::parse::<Engine>)
            .transpose()?;
        let loaded = match &plan.calibrate {
            Some(data) => Calibration::from_data(data).map(|c| c.in_runtime(engine)),
            None => random_once(&mut loaded, &model, &shapes, args.seed, args.samples),
        }
        .context("calibration data");
        // Without --inputs the data would be random samples: when tract
        // cannot even run the model, the passes run without data (each says
        // what it did without it) rather than not at all.
        let data = match loaded {
            Err(e) if args.inputs.is_none() => {
                if data_use == DataUse::Required {
                    progress.suspend(|| {
                        eprintln!("warning: passes that fit to data run without it: {e:#}")
                    });
                }
                no_data_cause = Some(format!("{e:#}").replace('\n', " "));
                None
            }
            other => Some(other?),
        };
        if let Some(data) = data {
            // Random samples time a model as well as real ones: only
            // calibration on them is worth a warning.
            if data.random && data_use == DataUse::Required {
                progress.suspend(|| {
                    eprintln!(
                    "warning: no --inputs given: passes that fit to data calibrate on {} random \
                     samples ({}), which say little about real inputs; give real data with --inputs",
                    data.samples.len(),
                    data.source
                )
                });
            }
            cx.data = Some(data);
        }
    }
    // The original stays compiled only for the check that runs it: without
    // one, its weights (tract packs its own copy) leave before the passes.
    if !(args.verify || args.bench) {
        loaded = None;
    }
    let passes = pipeline
        .run(&mut model, &cx, &mut |name| {
            progress.set_message(format!("pass {name}"))
        })
        .map_err(|e| match &no_data_cause {
            Some(cause) => anyhow::anyhow!("{e:#}, because no data could be made: {cause}"),
            None => e,
        })?;
    // Types the passes inferred can show what the input hid (a Transpose
    // perm longer than its input's rank): nothing is written that fails
    // validation.
    onnx_opt::validate::validate(&model)
        .map_err(|e| anyhow::anyhow!("{e} (seen once the passes had inferred types)"))?;
    // A pass that asked tract for types and met a caught panic went on
    // without the answer; its details say so, the user hears of it.
    for p in passes
        .iter()
        .filter(|p| p.details["tract_panicked"] == true)
    {
        progress.suspend(|| {
            eprintln!(
                "warning: pass {}: tract panicked on this model (is it valid?); see the pass \
                 details in --report",
                p.name
            )
        });
    }
    // A declaration the graph contradicts was replaced: the user hears of it.
    for p in &passes {
        for c in p.details["outputs_corrected"]
            .as_array()
            .into_iter()
            .flatten()
        {
            progress.suspend(|| {
                eprintln!(
                    "warning: pass {}: output {} was declared {} but computes {}; its \
                     declaration now says so",
                    p.name,
                    c["output"].as_str().unwrap_or("?"),
                    c["declared"].as_str().unwrap_or("?"),
                    c["computes"].as_str().unwrap_or("?")
                )
            });
        }
    }
    let after_bytes = onnx::encoded_len(&model)?;

    let mut report = Report {
        input: input.display().to_string(),
        output: output.display().to_string(),
        passes,
        model: Sizes {
            before: FileStats {
                stats: before_stats,
                file_bytes: info.file_bytes,
            },
            after: FileStats {
                stats: model.stats(),
                file_bytes: after_bytes,
            },
        },
        data: DataReport {
            calibration: cx.data.as_ref().map(|d| d.source.clone()),
            judgement: plan.judge.as_ref().map(|d| d.describe()),
            preprocess: preprocess.as_ref().map(|p| p.to_string()),
            labels: args.labels.as_ref().map(|p| p.display().to_string()),
        },
        verify: None,
        bench: None,
        runtimes: vec![],
    };
    let mut failed = false;
    if let Some(original) = &original {
        let tolerance = args.tolerance.or(pipeline.is_exact().then_some(1e-4));
        let settings = check::Settings {
            verify: args.verify,
            bench: args.bench,
            tolerance,
            floor: args.tolerance.is_none(),
            warmup: args.warmup,
            runs: args.runs,
            threads: args.threads,
        };
        // Judged on the held-out data, else on --inputs, else on random samples.
        let random;
        let judged = match &plan.judge {
            Some(d) => Ok(Judged::Data(d)),
            None => {
                random = random_once(&mut loaded, original, &shapes, args.seed, args.samples)
                    .context("original model");
                random.as_ref().map(Judged::Memory)
            }
        };
        let check_in = |engine: Engine| -> Result<RuntimeReport> {
            progress.set_message(format!("running the models in {engine}"));
            match &judged {
                Ok(data) => {
                    let loaded = loaded.as_ref().and_then(|(random, runner)| {
                        Some(check::Loaded {
                            shapes: &random.groups[0].0,
                            runner: runner.as_ref()?,
                        })
                    });
                    check::Check {
                        engine,
                        original,
                        loaded,
                        optimised: &model,
                        data,
                        settings: &settings,
                    }
                    .run()
                }
                Err(e) if check::skips(e) => Ok(check::skipped(engine, e, &settings)),
                Err(e) => anyhow::bail!("{e:#}"),
            }
        };
        // A check the user did not aim at one runtime runs where the model
        // runs: ONNX Runtime, where most deploy, when tract cannot. tract
        // panicking on the original (which passed validation) then counts
        // as tract not running it; with no other runtime to check in, it
        // stays an error. (ONNX Runtime is loaded only when it may serve.)
        let fallback = || args.runtime.is_none() && runtime::ort::environment().is_ok();
        for &engine in &runtimes {
            let r = match check_in(engine) {
                Err(e) if runtime::tract_panicked(&e) && fallback() => {
                    check::skipped(engine, &e, &settings)
                }
                r => r?,
            };
            report.runtimes.push(r);
        }
        let ran = |r: &RuntimeReport| r.verify.as_ref().is_none_or(|v| v.skipped.is_none());
        if !report.runtimes.iter().any(ran) && fallback() {
            report.runtimes.push(check_in(Engine::Ort)?);
        }
        failed = report
            .runtimes
            .iter()
            .any(|r| r.verify.as_ref().is_some_and(|v| v.ok == Some(false)));
        // The report's verify and bench: the first runtime that ran the models.
        let first = report.runtimes.iter().find(|r| ran(r));
        if let Some(first) = first.or(report.runtimes.first()) {
            report.verify = first.verify.clone();
            report.bench = first.bench.clone();
        }
    }
    progress.finish_and_clear();
    if failed {
        report.output = format!("{} (not written: verification failed)", output.display());
    } else {
        let options = SaveOptions {
            external,
            protect: info.files.clone(),
        };
        onnx::save(&model, output, &options)?;
    }
    print!("{}", report.table());
    // The table is on stdout; a failure also goes where errors go.
    for r in &report.runtimes {
        if let Some(v) = r.verify.as_ref().filter(|v| v.ok == Some(false)) {
            eprintln!(
                "error: verification failed in {}: {}",
                r.runtime,
                over_tolerance(v)
            );
        }
    }
    // Asked to verify or time and nothing could run the original: said
    // where errors go.
    if let Some(why) = report.verify.as_ref().and_then(|v| v.skipped.as_ref()) {
        let nothing = if args.verify {
            "--verify checked nothing"
        } else {
            "--bench timed nothing"
        };
        let ort = match args.runtime {
            None if runtime::ort::environment().is_err() => {
                "; ONNX Runtime, where it would have run next, was not found (pip install \
                 onnxruntime, or set ORT_DYLIB_PATH)"
            }
            _ => "",
        };
        eprintln!("warning: {nothing}: {why}{ort}");
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        onnx::write_atomic(path, &json)?;
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The outputs over tolerance, for the failure line.
fn over_tolerance(v: &VerifyReport) -> String {
    let t = v.tolerance.unwrap_or(0.0);
    let over: Vec<String> = v
        .outputs
        .iter()
        .filter(|o| o.max_rel_err.is_nan() || o.max_rel_err > t)
        .map(|o| format!("{} max_rel_err {:e} > {t:e}", o.name, o.max_rel_err))
        .collect();
    format!("{} (nothing written)", over.join(", "))
}

/// Random samples the original runs on, made the first time (with the
/// original, when it was loaded at their shapes, kept in `slot` for the
/// check); `model`
/// is the same each time: the original.
fn random_once(
    slot: &mut Option<(Calibration, Option<runtime::Runner>)>,
    model: &onnx_opt::ir::Model,
    shapes: &InputShapes,
    seed: u64,
    count: usize,
) -> Result<Calibration> {
    if slot.is_none() {
        *slot = Some(Calibration::random_runnable(model, shapes, seed, count)?);
    }
    Ok(slot.as_ref().expect("made").0.clone())
}
