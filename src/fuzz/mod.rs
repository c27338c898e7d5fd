//! Fuzzing onnx-opt on stable Rust: mutate seed models, run each mutant
//! through what the CLI does for one of five commands, and classify what
//! happened. Used by `tests/fuzz.rs` (a small seeded budget in CI, plus the
//! replay of every input that ever failed, `tests/fuzz/regressions/`) and by
//! `benches/fuzz.rs` (many runs, counts printed).
//!
//! Mutations come in three layers, picked at random per mutant:
//! raw bytes (flips, truncation, insertion: `bytes`), the protobuf structure
//! (`onnx::mutate_proto`: arity, attributes, dims, element types, payloads,
//! subgraphs, names, opsets) and the IR (`ir_mutation`: the same kinds of
//! edits made on an imported model, then encoded by our exporter).
//!
//! A run is in-process ([`run`]): decode, verify, validate, passes, encode,
//! and for `fuse --verify` load and run both models in tract. A panic that
//! reaches here (tract's are caught at the runtime boundary) is a finding;
//! so is a written output that our own import, verifier and validation
//! refuse (exit 0 on an invalid model).

mod bytes;
mod ir_mutation;
pub mod seeds;

use crate::calibrate::Calibration;
use crate::check::{self, Judged};
use crate::ir::Model;
use crate::passes::DataUse;
use crate::pipeline::{PassContext, Pipeline};
use crate::runtime::{self, InputShapes};
use anyhow::{Context, Result};

/// Values that break things: zero, negatives, ±1 off the edges, 2^31, 2^40, 2^62.
pub const INTERESTING: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    -7,
    7,
    64,
    100,
    1 << 31,
    (1 << 31) - 1,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
];

/// splitmix64: small, seeded, the same stream on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The five commands of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Fuse,
    FuseQuant,
    PruneChannels,
    Svd,
    FuseVerify,
}

impl Cmd {
    pub const ALL: [Cmd; 5] = [
        Cmd::Fuse,
        Cmd::FuseQuant,
        Cmd::PruneChannels,
        Cmd::Svd,
        Cmd::FuseVerify,
    ];

    pub fn passes(self) -> &'static str {
        match self {
            Cmd::Fuse | Cmd::FuseVerify => "fuse",
            Cmd::FuseQuant => "fuse,quant{measure=false}",
            Cmd::PruneChannels => "prune-channels",
            Cmd::Svd => "svd",
        }
    }

    /// The command line's arguments after `IN -o OUT`.
    pub fn args(self) -> Vec<&'static str> {
        let mut a = vec!["--passes", self.passes()];
        if self == Cmd::FuseVerify {
            a.push("--verify");
        }
        a
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An error (the CLI's exit 1): its message, and whether a panic caught
    /// inside tract caused it.
    Refused {
        message: String,
        tract_panicked: bool,
    },
    /// Verification over tolerance (the CLI's exit 2, nothing written).
    VerifyFailed,
    /// An output was written; `Err` when our own checks refuse it.
    Written(Result<(), String>),
    /// A panic reached the caller.
    Panicked(String),
}

impl Outcome {
    /// A finding: a panic, or exit 0 with an invalid output.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Panicked(_) | Outcome::Written(Err(_)))
    }
}

/// Runs `cmd` on the model in `bytes` as the CLI would, catching panics.
pub fn run(bytes: &[u8], cmd: Cmd) -> Outcome {
    run_keeping_output(bytes, cmd).0
}

/// [`run`], also returning the output it wrote.
pub fn run_keeping_output(bytes: &[u8], cmd: Cmd) -> (Outcome, Option<Vec<u8>>) {
    let result = std::panic::catch_unwind(|| pipeline(bytes, cmd));
    let outcome = match &result {
        Ok(Ok(Some(out))) => Outcome::Written(judge(out)),
        Ok(Ok(None)) => Outcome::VerifyFailed,
        Ok(Err(e)) => Outcome::Refused {
            message: format!("{e:#}"),
            tract_panicked: runtime::tract_panicked(e),
        },
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()),
        ),
    };
    (outcome, result.ok().and_then(Result::ok).flatten())
}

/// Our own judge of a written output: it imports, verifies and validates.
pub fn judge(out: &[u8]) -> Result<(), String> {
    let model = crate::onnx::decode(::bytes::Bytes::copy_from_slice(out), None)
        .map_err(|e| format!("{e:#}"))?;
    crate::ir::verify::verify(&model).map_err(|e| format!("{e:#}"))?;
    crate::validate::validate(&model).map_err(|e| e.to_string())
}

/// The CLI's steps (src/main.rs `optimise`), in process: the output bytes,
/// or `None` when verification fails.
fn pipeline(bytes: &[u8], cmd: Cmd) -> Result<Option<Vec<u8>>> {
    let mut model = crate::onnx::decode(::bytes::Bytes::copy_from_slice(bytes), None)?;
    crate::ir::verify::verify(&model).context("the input model is not valid")?;
    crate::validate::validate(&model)?;
    let pipeline = Pipeline::parse(cmd.passes())?;
    let original = (cmd == Cmd::FuseVerify).then(|| model.clone());
    let mut cx = PassContext::default();
    let mut no_data = None;
    if pipeline.data_use() == DataUse::Required {
        match Calibration::load(&model, &InputShapes::new(), None, 0, 2) {
            Ok(data) => cx.data = Some(data),
            Err(e) => no_data = Some(e),
        }
    }
    pipeline
        .run(&mut model, &cx, &mut |_| {})
        // The CLI's words; the cause stays the root, so its type is kept.
        .map_err(|e| match no_data {
            Some(cause) => cause.context(format!("{e:#}, because no data could be made")),
            None => e,
        })?;
    crate::validate::validate(&model)
        .map_err(|e| anyhow::anyhow!("{e} (seen once the passes had inferred types)"))?;
    let out = crate::onnx::encode(&model)?;
    if let Some(original) = original {
        if !verify_in_tract(&original, &model)? {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// `--verify` with the default tolerance of exact pipelines: false when
/// over it; tract refusing the original skips the check, as in the CLI.
fn verify_in_tract(original: &Model, optimised: &Model) -> Result<bool> {
    let settings = check::Settings {
        verify: true,
        bench: false,
        tolerance: Some(1e-4),
        floor: true,
        warmup: 0,
        runs: 0,
        threads: 1,
    };
    let engine = runtime::Engine::Tract;
    let report = match Calibration::random(original, &InputShapes::new(), 0, 1) {
        Ok(data) => check::check(
            engine,
            original,
            optimised,
            &Judged::Memory(&data),
            &settings,
        )?,
        Err(e) if check::skips(&e) => check::skipped(engine, &e, &settings),
        Err(e) => return Err(e),
    };
    Ok(report.verify.is_none_or(|v| v.ok != Some(false)))
}

/// One mutant of `seed`: a layer at random, then 1 to 3 edits.
pub fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        out = match rng.below(8) {
            0 | 1 => bytes::mutate(&out, rng),
            2..=4 => crate::onnx::mutate_proto(&out, rng).unwrap_or(out),
            _ => ir_mutation::mutate(&out, rng).unwrap_or(out),
        };
    }
    out
}

/// Counts of a fuzzing campaign.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub runs: usize,
    pub refused: usize,
    pub written: usize,
    pub verify_failed: usize,
    pub panics: usize,
    pub invalid_written: usize,
    /// Errors whose cause is a panic caught at the tract boundary.
    pub tract_panics_caught: usize,
}

impl Counts {
    pub fn add(&mut self, o: &Outcome) {
        self.runs += 1;
        match o {
            Outcome::Refused { tract_panicked, .. } => {
                self.refused += 1;
                self.tract_panics_caught += usize::from(*tract_panicked);
            }
            Outcome::VerifyFailed => self.verify_failed += 1,
            Outcome::Written(Ok(())) => self.written += 1,
            Outcome::Written(Err(_)) => self.invalid_written += 1,
            Outcome::Panicked(_) => self.panics += 1,
        }
    }
}
