//! The errors callers branch on: a runtime refusing a model. They are types,
//! not text, so that no caller decides what happened by searching a message.
//!
//! A [`RuntimeError`] is the root of the error a runtime returns (later
//! layers add anyhow context above it, which [`refusal`] sees through); it
//! prints its kind, then its cause, as the plain messages did before.

use std::fmt;

/// Why a runtime could not take a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// tract refused the model (an operator it lacks, a shape it cannot
    /// type, a failed run): the model may still be valid.
    TractCannotRun,
    /// A panic caught inside tract while doing `.0`: a sign of a malformed
    /// model (or a tract bug), never a reason to skip a check the user asked for.
    TractPanicked(&'static str),
    /// ONNX Runtime would not create a session for the model.
    OrtCannotLoad,
}

impl Refusal {
    /// tract, panicking or not.
    pub fn is_tract(self) -> bool {
        matches!(self, Refusal::TractCannotRun | Refusal::TractPanicked(_))
    }

    /// Wraps `cause` in a [`RuntimeError`] of this kind.
    pub fn because(self, cause: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(RuntimeError { kind: self, cause })
    }

    /// The words of [`RuntimeError::of_the_rewrite`].
    fn refused(self) -> String {
        match self {
            Refusal::TractCannotRun => "tract refused it".into(),
            Refusal::TractPanicked(what) => {
                format!("tract refused it: tract panicked while {what}")
            }
            Refusal::OrtCannotLoad => "ONNX Runtime refused it".into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TractCannotRun => f.write_str(TRACT_CANNOT_RUN),
            Refusal::TractPanicked(what) => {
                write!(f, "{TRACT_CANNOT_RUN}: tract panicked while {what}")
            }
            Refusal::OrtCannotLoad => f.write_str("ONNX Runtime cannot load this model"),
        }
    }
}

/// The words every tract refusal starts with.
const TRACT_CANNOT_RUN: &str = "tract cannot run this model";

/// A runtime refusing a model: its kind, then the runtime's reason.
#[derive(Debug)]
pub struct RuntimeError {
    pub kind: Refusal,
    cause: anyhow::Error,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.cause.as_ref())
    }
}

impl RuntimeError {
    /// The error's text with the refusal told as the rewrite's fault ("tract
    /// refused it" rather than "tract cannot run this model"), for a model
    /// whose original runs.
    pub fn of_the_rewrite(e: &anyhow::Error) -> String {
        e.chain()
            .map(|c| match c.downcast_ref::<RuntimeError>() {
                Some(r) => r.kind.refused(),
                None => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(": ")
    }

    /// Splits a runtime's error into its refusal and cause, or gives it back
    /// when it is not one (or has context above it).
    pub fn split(e: anyhow::Error) -> Result<(Refusal, anyhow::Error), anyhow::Error> {
        e.downcast::<RuntimeError>().map(|r| (r.kind, r.cause))
    }
}

/// The refusal `e` carries, through any context added above it.
pub fn refusal(e: &anyhow::Error) -> Option<Refusal> {
    e.downcast_ref::<RuntimeError>().map(|r| r.kind)
}

/// Whether `e` is a panic caught inside tract.
pub fn tract_panicked(e: &anyhow::Error) -> bool {
    matches!(refusal(e), Some(Refusal::TractPanicked(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn prints_as_the_plain_message_and_is_found_under_context() {
        let e = Refusal::TractPanicked("loading the model").because(anyhow!("index out of bounds"));
        let e = Err::<(), _>(e).context("original model").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "original model: tract cannot run this model: tract panicked while loading the \
             model: index out of bounds"
        );
        assert_eq!(
            refusal(&e),
            Some(Refusal::TractPanicked("loading the model"))
        );
        assert_eq!(refusal(&anyhow!("tract cannot run this model")), None);
    }

    #[test]
    fn of_the_rewrite_names_the_refusal_as_such() {
        let e = Refusal::OrtCannotLoad.because(anyhow!("bad node"));
        assert_eq!(
            RuntimeError::of_the_rewrite(&e),
            "ONNX Runtime refused it: bad node"
        );
        let e = Refusal::TractCannotRun.because(anyhow!("unsupported operator(s): X"));
        let (kind, cause) = RuntimeError::split(e).unwrap();
        assert_eq!(
            (kind, format!("{cause}")),
            (Refusal::TractCannotRun, "unsupported operator(s): X".into())
        );
    }
}
