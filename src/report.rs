//! The run report: a readable summary table for the terminal and the same
//! facts as JSON (`--report`). Field names are a stable interface for CI.

use crate::data::TopK;
use crate::ir::ModelStats;
use crate::pipeline::PassReport;
use crate::runtime::{BenchResult, Engine, OutputMetrics};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Serialize, Debug)]
pub struct Report {
    pub input: String,
    pub output: String,
    pub passes: Vec<PassReport>,
    pub model: Sizes,
    pub data: DataReport,
    /// The first `--runtime`'s verification and benchmark (also in `runtimes`).
    pub verify: Option<VerifyReport>,
    pub bench: Option<BenchReport>,
    /// Every `--runtime`, in the order given.
    pub runtimes: Vec<RuntimeReport>,
}

/// Where the data came from and how it was read, so a run can be reproduced.
#[derive(Serialize, Debug, Default)]
pub struct DataReport {
    /// What the passes calibrated on (`None`: no pass used data).
    pub calibration: Option<String>,
    /// What --verify / --bench ran on (`None`: random samples).
    pub judgement: Option<String>,
    /// The canonical `--preprocess` spec, for image data.
    pub preprocess: Option<String>,
    pub labels: Option<String>,
}

/// Task accuracy of the original and the result on the labelled samples.
#[derive(Serialize, Debug, Clone)]
pub struct Accuracies {
    pub before: TopK,
    pub after: TopK,
}

/// Verification and benchmark in one runtime.
#[derive(Serialize, Debug, Clone)]
pub struct RuntimeReport {
    pub runtime: Engine,
    pub verify: Option<VerifyReport>,
    pub bench: Option<BenchReport>,
}

#[derive(Serialize, Debug)]
pub struct Sizes {
    pub before: FileStats,
    pub after: FileStats,
}

/// `bytes`: weight bytes; `file_bytes`: the serialized model.
#[derive(Serialize, Debug)]
pub struct FileStats {
    #[serde(flatten)]
    pub stats: ModelStats,
    pub file_bytes: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct VerifyReport {
    /// The runtime both models ran in.
    pub runtime: Engine,
    /// `None` when the runtime could not run the model (`skipped` says why).
    pub ok: Option<bool>,
    pub tolerance: Option<f64>,
    /// Where the inputs came from (`random, seed 0` or a path).
    pub inputs: String,
    pub samples: usize,
    /// Groups of samples of one shape, each run with its own pinned model.
    pub groups: usize,
    pub outputs: Vec<OutputMetrics>,
    /// Each output's rounding floor (max_rel_err of the original against
    /// itself with its layers' weights scaled by 1 ± 2⁻²³), measured when an
    /// exact pipeline's default tolerance was exceeded.
    pub rounding_floor: Option<BTreeMap<String, f64>>,
    pub accuracy: Option<Accuracies>,
    pub skipped: Option<String>,
    /// Whether `--verify` asked for this check; `false`: the record of a
    /// runtime that could not run the models `--bench` alone asked for.
    #[serde(skip)]
    pub asked: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct Timing {
    pub median: f64,
    pub p90: f64,
    /// The fastest run: with p90, the spread.
    pub min: f64,
}

#[derive(Serialize, Debug, Clone)]
pub struct BenchReport {
    /// The runtime both models were timed in, and its intra-op threads.
    pub runtime: Engine,
    pub threads: usize,
    pub runs: usize,
    pub warmup: usize,
    pub before_ms: Timing,
    pub after_ms: Timing,
    pub speedup: f64,
}

impl BenchReport {
    pub fn new(runtime: Engine, threads: usize, b: &BenchResult) -> BenchReport {
        BenchReport {
            runtime,
            threads,
            runs: b.runs,
            warmup: b.warmup,
            before_ms: Timing {
                median: b.a.median_ms,
                p90: b.a.p90_ms,
                min: b.a.min_ms,
            },
            after_ms: Timing {
                median: b.b.median_ms,
                p90: b.b.p90_ms,
                min: b.b.min_ms,
            },
            speedup: b.speedup,
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A detail as the summary table shows it: scalars and short values as
/// they are, per-layer lists and long objects by their size (the JSON
/// report has them whole).
fn brief(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match v {
        serde_json::Value::Array(items) if text.len() > 60 => {
            format!("[{} entries, see --report]", items.len())
        }
        serde_json::Value::Object(_) if text.len() > 60 => "{…, see --report}".to_string(),
        _ => text,
    }
}

impl Report {
    /// The summary table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} -> {}", self.input, self.output);
        if !self.passes.is_empty() {
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>15} {:>23}  details",
                "pass", "ms", "nodes", "params"
            );
            for p in &self.passes {
                let details = match &p.details {
                    serde_json::Value::Object(m) if !m.is_empty() => m
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| format!("{k}={}", brief(v)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:<18} {:>9.1} {:>15} {:>23}  {details}",
                    p.name,
                    p.ms,
                    format!("{} -> {}", p.nodes_before, p.nodes_after),
                    format!("{} -> {}", p.params_before, p.params_after)
                );
            }
        }
        let (b, a) = (&self.model.before, &self.model.after);
        let _ = writeln!(
            out,
            "model: {} -> {} nodes, {} -> {} params, file {} -> {}",
            b.stats.nodes,
            a.stats.nodes,
            b.stats.params,
            a.stats.params,
            human_bytes(b.file_bytes),
            human_bytes(a.file_bytes)
        );
        if let Some(c) = &self.data.calibration {
            let _ = writeln!(out, "calibration data: {c}");
        }
        for r in &self.runtimes {
            r.table(&mut out);
        }
        out
    }
}

impl RuntimeReport {
    fn table(&self, out: &mut String) {
        let rt = self.runtime;
        if let Some(v) = &self.verify {
            match (&v.skipped, v.ok) {
                (Some(why), _) => {
                    let what = if v.asked { "verify" } else { "bench" };
                    let _ = writeln!(out, "{what} ({rt}): NOT RUN: {why}");
                }
                (None, ok) => {
                    let floor = match v.rounding_floor {
                        Some(_) => format!(
                            ", or {}x the model's own rounding floor",
                            crate::check::FLOOR_TIMES
                        ),
                        None => String::new(),
                    };
                    let verdict = match (ok, v.tolerance) {
                        (Some(true), Some(t)) => format!("ok (max_rel_err <= {t:e}{floor})"),
                        (Some(false), Some(t)) => {
                            format!("FAILED (max_rel_err > {t:e}{floor})")
                        }
                        _ => "measured (no tolerance: the pipeline is lossy; set --tolerance to enforce one)".into(),
                    };
                    let _ = writeln!(
                        out,
                        "verify ({rt}): {verdict}, {} sample(s) from {}",
                        v.samples, v.inputs
                    );
                    let _ = writeln!(
                        out,
                        "  {:<28} {:>10} {:>10} {:>10} {:>8} {:>6}",
                        "output", "max_abs", "max_rel", "cosine", "snr_db", "top1"
                    );
                    for o in &v.outputs {
                        let top1 = o
                            .top1_agreement
                            .map_or("-".to_string(), |t| format!("{:.3}", t));
                        let _ = writeln!(
                            out,
                            "  {:<28} {:>10.3e} {:>10.3e} {:>10.6} {:>8.1} {:>6}",
                            o.name, o.max_abs_err, o.max_rel_err, o.cosine, o.snr_db, top1
                        );
                    }
                    if let Some(floor) = &v.rounding_floor {
                        let each: Vec<String> =
                            floor.iter().map(|(o, f)| format!("{o} {f:.3e}")).collect();
                        let _ = writeln!(
                            out,
                            "  rounding floor (the original against itself with its layers' \
                             weights scaled by 1±2^-23): {}",
                            each.join(", ")
                        );
                    }
                    if let Some(a) = &v.accuracy {
                        let pct = |x: Option<f64>| {
                            x.map_or("-".to_string(), |x| format!("{:.2}%", 100.0 * x))
                        };
                        let _ = writeln!(
                            out,
                            "  accuracy on {} labels: top-1 {} -> {}, top-5 {} -> {}",
                            a.before.labels,
                            pct(Some(a.before.top1)),
                            pct(Some(a.after.top1)),
                            pct(a.before.top5),
                            pct(a.after.top5)
                        );
                    }
                }
            }
        }
        if let Some(bench) = &self.bench {
            let threads = match bench.threads {
                1 => "1 thread".to_string(),
                n => format!("{n} threads"),
            };
            let _ = writeln!(
                out,
                "bench ({rt}, {threads}, {} runs): before {:.3} ms (min {:.3}, p90 {:.3}), after {:.3} ms (min {:.3}, p90 {:.3}), speedup {:.2}x",
                bench.runs,
                bench.before_ms.median,
                bench.before_ms.min,
                bench.before_ms.p90,
                bench.after_ms.median,
                bench.after_ms.min,
                bench.after_ms.p90,
                bench.speedup
            );
        }
    }
}
