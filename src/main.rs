//! The `onnx-opt` command. Errors are one line (with their causes), exit 1;
//! a verification over tolerance exits 2 and writes no output.

use anyhow::{ensure, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use onnx_opt::calibrate::Calibration;
use onnx_opt::ir::{diff::model_diff, verify::verify, Model};
use onnx_opt::onnx::{self, ExternalData, SaveOptions};
use onnx_opt::passes::{DataUse, PASSES};
use onnx_opt::pipeline::{self, Pipeline};
use onnx_opt::report::{BenchReport, FileStats, Report, Sizes, VerifyReport};
use onnx_opt::runtime::{self, InputShapes};
use onnx_opt::{exec, inspect};
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
    /// Run original and optimised model in tract on the same inputs and compare outputs.
    #[arg(long)]
    verify: bool,
    /// Largest allowed max_rel_err (max |a-b| / max |a|) per output. Default: 1e-4 when every
    /// pass is exact; none (measure only) when a lossy pass runs.
    #[arg(long, value_name = "X")]
    tolerance: Option<f64>,
    /// Time original and optimised model in tract (same process, alternating runs).
    #[arg(long)]
    bench: bool,
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
    /// Input data: a .npz (keys = input names) holding one sample, or a folder of .npz/.npy
    /// files, one sample each. Passes that fit to data (svd, prune-channels, quant) calibrate
    /// on it; --verify and --bench run on it. Without it, seeded random inputs are used.
    #[arg(long, value_name = "PATH")]
    inputs: Option<PathBuf>,
    /// Held-out data for --verify and --bench (same forms as --inputs), so that passes which
    /// calibrate on --inputs are judged on data they have not seen. Default: --inputs.
    #[arg(long, value_name = "PATH")]
    verify_inputs: Option<PathBuf>,
    /// Seed of the random inputs.
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
}

fn passes_help() -> String {
    let mut out = String::from("Passes (details: `onnx-opt passes`):\n");
    for p in PASSES {
        out.push_str(&format!("  {:<16} {}\n", p.name, p.summary));
    }
    out.push_str("\nExit codes: 0 ok, 1 error (nothing written), 2 verification over tolerance (nothing written).");
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

/// Refuses to overwrite the input and checks the output folder is writable,
/// before any work is done.
fn check_output(input: &Path, output: &Path) -> Result<()> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure!(
        dir.is_dir(),
        "output folder {} does not exist",
        dir.display()
    );
    let same = match (input.canonicalize(), dir.canonicalize()) {
        (Ok(i), Ok(d)) => output.file_name().is_some_and(|f| d.join(f) == i),
        _ => false,
    };
    ensure!(
        !same,
        "the output path is the input file ({}): choose another output",
        input.display()
    );
    tempfile::tempfile_in(dir)
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    Ok(())
}

fn optimise(args: &RunArgs) -> Result<ExitCode> {
    let (input, output) = (
        args.input.as_deref().expect("required"),
        args.output.as_deref().expect("required"),
    );
    let pipeline = Pipeline::parse(&args.passes)?;
    let shapes = InputShapes::parse(&args.input_shapes)?;
    ensure!(
        args.tolerance.is_none_or(|t| t >= 0.0),
        "--tolerance must be >= 0"
    );
    check_output(input, output)?;

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
    let before_stats = model.stats();
    let original = (args.verify || args.bench).then(|| model.clone());

    let mut cx = pipeline::PassContext::default();
    let data_use = pipeline.data_use();
    if data_use == DataUse::Required || (data_use == DataUse::IfGiven && args.inputs.is_some()) {
        progress.set_message("loading calibration data");
        let loaded = Calibration::load(
            &model,
            &shapes,
            args.inputs.as_deref(),
            args.seed,
            args.samples,
        )
        .context("calibration data");
        // Without --inputs the data would be random samples: when tract
        // cannot even run the model, the passes run without data (each says
        // what it did without it) rather than not at all.
        let data = match loaded {
            Err(e) if args.inputs.is_none() => {
                progress.suspend(|| {
                    eprintln!("warning: passes that fit to data run without it: {e:#}")
                });
                None
            }
            other => Some(other?),
        };
        if let Some(data) = data {
            if data.random {
                progress.suspend(|| {
                    eprintln!(
                    "warning: no --inputs given: passes that fit to data calibrate on {} random \
                     samples, which say little about real inputs; give real data with --inputs",
                    data.samples.len()
                )
                });
            }
            cx.data = Some(data);
        }
    }
    let passes = pipeline.run(&mut model, &cx, &mut |name| {
        progress.set_message(format!("pass {name}"))
    })?;
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
        verify: None,
        bench: None,
    };
    let mut failed = false;
    if let Some(original) = &original {
        progress.set_message("running the models in tract");
        let tolerance = args.tolerance.or(pipeline.is_exact().then_some(1e-4));
        match check_in_tract(original, &model, args, &shapes, tolerance) {
            Ok((verify, bench)) => {
                failed = verify.as_ref().is_some_and(|v| v.ok == Some(false));
                report.verify = verify;
                report.bench = bench;
            }
            Err(e) if format!("{e:#}").contains(runtime::TRACT_CANNOT_RUN) => {
                report.verify = Some(VerifyReport {
                    ok: None,
                    tolerance,
                    inputs: String::new(),
                    samples: 0,
                    outputs: vec![],
                    skipped: Some(format!("{e:#}")),
                });
            }
            Err(e) => return Err(e),
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

/// Verification and benchmark in tract.
fn check_in_tract(
    original: &Model,
    optimised: &Model,
    args: &RunArgs,
    shapes: &InputShapes,
    tolerance: Option<f64>,
) -> Result<(Option<VerifyReport>, Option<BenchReport>)> {
    let inputs = args.verify_inputs.as_deref().or(args.inputs.as_deref());
    let data = Calibration::load(original, shapes, inputs, args.seed, args.samples)
        .context("original model")?;
    let (samples, source, shapes) = (&data.samples, data.source.clone(), &data.shapes);
    let before = exec::load(original, shapes, &[]).context("original model")?;
    if !before.defaulted_dims().is_empty() {
        eprintln!(
            "warning: symbolic dims set to 1 for running: {} (pin them with --input-shape)",
            before.defaulted_dims().join(", ")
        );
    }
    // The original runs, so the optimised model must too: a failure here is
    // an error of the rewrite, never a reason to skip verification.
    let after = exec::load(optimised, shapes, &[])
        .map_err(|e| {
            anyhow::anyhow!("{e:#}")
                .context("the optimised model does not load in tract, though the original does")
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                format!("{e:#}").replace(runtime::TRACT_CANNOT_RUN, "tract refused it")
            )
        })?;
    let verify = if args.verify {
        let mut silent = std::collections::BTreeSet::new();
        let per_sample = samples
            .iter()
            .map(|s| {
                let reference = before.run(s)?;
                for (name, t) in reference.iter() {
                    if t.to_f32_vec().is_ok_and(|v| v.iter().all(|&x| x == 0.0)) {
                        silent.insert(name.to_string());
                    }
                }
                runtime::compare(&reference, &after.run(s)?)
            })
            .collect::<Result<Vec<_>>>()?;
        if !silent.is_empty() {
            eprintln!(
                "warning: the original model outputs only zeros for {} on these inputs, so they \
                 check little there: give realistic data with --inputs",
                silent.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let outputs = runtime::aggregate(&per_sample)?;
        let ok = tolerance.map(|t| outputs.iter().all(|o| o.max_rel_err <= t));
        Some(VerifyReport {
            ok,
            tolerance,
            inputs: source,
            samples: samples.len(),
            outputs,
            skipped: None,
        })
    } else {
        None
    };
    let bench = if args.bench {
        Some(BenchReport::from(&runtime::bench(
            &before,
            &after,
            samples,
            args.warmup,
            args.runs.max(1),
        )?))
    } else {
        None
    };
    Ok((verify, bench))
}
