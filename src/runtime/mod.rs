//! The runtimes: the only part of onnx-opt that sees tract (and, in
//! [`ort`], the only part that sees ONNX Runtime).
//!
//! Its interface is "ONNX model bytes in, numbers out": load a model into
//! tract ([`Model::load`]) or ONNX Runtime ([`ort::Session::load`]), either
//! behind [`Runner`], describe and make its inputs ([`InputSpec`],
//! [`Sample`]), run it ([`Model::run`]), compare two sets
//! of outputs ([`compare`], [`aggregate`]), time two models against each
//! other ([`bench`]) and infer the types of a model's values without running
//! it ([`infer_types`]). No tract type appears in the public API, and this
//! module imports nothing from the rest of the crate.
//!
//! Every fallible function returns an [`anyhow::Result`] whose message names
//! the input, file or output at fault. When a runtime itself refuses a model
//! the error is a [`RuntimeError`] (see [`refusal`]), which prints as
//! `tract cannot run this model:` (or ONNX Runtime's words) and the reason.
//!
//! tract runs single-threaded here (its default), so timings are per core.

mod bench;
mod compare;
mod error;
mod infer;
mod inputs;
mod load;
pub mod ort;
mod runner;
mod save;
mod tensor;
#[cfg(test)]
mod testutil;

pub use bench::{bench, bench_ort, bench_tract, runs_for, BenchResult, Timing, MAX_TIMED_RUNS};
pub use compare::{aggregate, compare, OutputMetrics, SNR_CAP_DB};
pub use error::{refusal, tract_panicked, Refusal, RuntimeError};
pub use infer::{infer_types, infer_types_then, InferredTypes, ValueType};
pub use inputs::{Sample, SplitMix64};
pub use load::{declared_inputs, spelled, Dim, InputShapes, InputSpec, Model, Outputs};
pub use runner::{Engine, Runner};
pub use save::{describe, save_npz};
pub use tensor::{ElemType, Tensor};

thread_local! {
    /// Is this thread inside [`catch_tract_panic`]?
    static INSIDE_TRACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the panic hook (once) so that a panic caught at the tract boundary
/// prints nothing: it becomes an error, and the CLI's errors are one line.
/// Other panics print as before. Thread-local, so fuse's inference thread
/// and the main thread each know where they are.
fn quiet_inside_tract() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !INSIDE_TRACT.get() {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic inside tract into an error
/// ([`Refusal::TractPanicked`]).
///
/// tract asserts in a few places on malformed models; a bad model must give
/// an error, not abort the process.
fn catch_tract_panic<T>(
    what: &'static str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    quiet_inside_tract();
    let outer = INSIDE_TRACT.replace(true);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    INSIDE_TRACT.set(outer);
    match caught {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Refusal::TractPanicked(what).because(anyhow::anyhow!(msg)))
        }
    }
}
