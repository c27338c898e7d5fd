//! # fuse
//!
//! **What:** canonicalisation and every exact fusion, repeated until the graph
//! stops shrinking: `lift-constants`, then rounds of `infer-shapes`,
//! `fold-constants`, `fold-shapes`, `eliminate`, the `fuse-*` passes (BatchNorm,
//! Gemm, bias, Pad, Transpose, Reshape, Slice, Cast, activations, input
//! scales, Concat chains, MatMuls of one input), `cse` and `dce`.
//!
//! **Why:** one rewrite enables another (a folded shape makes a Reshape a
//! no-op; a fused BatchNorm exposes a bias Add), so the parts run to a
//! fixpoint. ONNX Runtime and TensorRT then get fewer, larger operators.
//!
//! ```text
//! y = Conv(x, w)                                y = Conv(x, w', b')
//! z = BatchNormalization(y, γ, β, μ, σ²)   →    (BN folded into the weights)
//! ```
//! Each part is a pass of its own, selectable alone; see `onnx-opt passes`.
//!
//! **Options:** declared once in `Opts` below (`onnx-opt passes` and the
//! README list them).

use crate::ir::memo::TensorMemo;
use crate::ir::Model;
use crate::ir::ModelStats;
use crate::passes::PassInfo;
use crate::passes::{fuse_bn, infer_shapes, lift_constants};
use crate::pipeline::{OptionInfo, Options, Pass, PassContext, PassReport, Pipeline};
use anyhow::{anyhow, ensure, Result};
use serde_json::json;
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse",
    "canonicalise and apply every exact fusion, to a fixpoint",
    build,
)
.with_options(Opts::TABLE);

crate::pass_options! {
    struct Opts {
        rounds: usize = "rounds", "8", "most rounds before stopping";
        // fuse-activation's, passed on.
        target_opset: i64 = TARGET.name, TARGET.default, TARGET.help;
        // lift-constants', passed on.
        keep_inputs: bool = KEEP.name, KEEP.default, KEEP.help;
    }
}

const TARGET: &OptionInfo = &crate::passes::fuse_activation::Opts::TABLE[0];
const KEEP: &OptionInfo = &crate::passes::lift_constants::Opts::TABLE[0];

/// A round's first part, which needs no inferred types: it runs while tract
/// infers them on another core (a third of a round's time on PP-OCRv4 rec).
const UNTYPED: &str =
    "fuse-bias,fuse-pad,fuse-transpose,fuse-activation,fuse-scale,fuse-parallel-matmul,fuse-concat,cse,dce";

/// The rest, once the types are recorded: folding and the fusions that read
/// shapes; BatchNorm before bias (a folded BN leaves a bias to merge); CSE
/// and DCE last.
const TYPED: &str = "fold-constants,fold-shapes,eliminate,fuse-bn,fuse-parallel-matmul,fuse-gemm,fuse-bias,fuse-pad,\
                     fuse-transpose,fuse-reshape,fuse-slice,fuse-cast,fuse-activation,fuse-scale,fuse-concat,cse,dce";

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let Opts {
        rounds,
        target_opset: target,
        keep_inputs,
    } = Opts::parse(options)?;
    ensure!(rounds > 0, "rounds must be at least 1");
    let with_target = |list: &str| {
        Pipeline::parse(&list.replace(
            "fuse-activation",
            &format!("fuse-activation{{target-opset={target}}}"),
        ))
    };
    let memo = Arc::new(TensorMemo::default());
    Ok(Box::new(Fuse {
        rounds,
        lift: Pipeline::parse(&format!("lift-constants{{keep-inputs={keep_inputs}}}"))?,
        untyped: with_target(UNTYPED)?,
        typed: with_target(TYPED)?.with_pass("fuse-bn", || fuse_bn::with_memo(memo.clone())),
        memo,
    }))
}

/// What a round's type inference said that the user must hear of (the
/// CLI reports both from the pass's details).
#[derive(Default)]
struct Heard {
    /// Output declarations the inferred types replaced.
    outputs_corrected: Vec<serde_json::Value>,
    /// tract panicked (caught) while inferring types.
    tract_panicked: bool,
}

impl Heard {
    /// Takes what `infer-shapes`' details say.
    fn take(&mut self, details: &serde_json::Value) {
        if let Some(c) = details["outputs_corrected"].as_array() {
            self.outputs_corrected.extend(c.iter().cloned());
        }
        self.tract_panicked |= details["tract_panicked"] == true;
    }
}

struct Fuse {
    rounds: usize,
    lift: Pipeline,
    untyped: Pipeline,
    typed: Pipeline,
    /// BatchNorm folds computed while tract infers types (kept for one
    /// round), lent to the `fuse-bn` of `typed`: see `fuse_bn::fold_ahead`.
    memo: Arc<TensorMemo>,
}

impl Fuse {
    /// One round: type inference (tract, on a copy of the model's structure)
    /// alongside the passes that need no types, then the recorded types, then
    /// the rest. The result does not depend on timing: the types are recorded
    /// at the same point every time. The first round lifts the constants
    /// first, while tract already works on a copy where they are lifted in
    /// place. Returns the reports and the stats the round started from
    /// (after lifting).
    ///
    /// `tail` carries, from one round to the next, the model's
    /// `graph.last_edit()` after the typed passes and the first of them after
    /// which nothing changed (see [`Pipeline::run_nested_again`]).
    fn round(
        &self,
        model: &mut Model,
        cx: &PassContext,
        lift: bool,
        tail: &mut Option<(u64, usize)>,
        heard: &mut Heard,
    ) -> Result<(Vec<PassReport>, ModelStats)> {
        let mut typed = |model: &mut Model| -> Result<Vec<PassReport>> {
            let known = tail
                .filter(|&(stamp, _)| stamp == model.graph.last_edit())
                .map(|(_, clean_from)| clean_from);
            let (reports, clean_from) = self.typed.run_nested_again(model, cx, known)?;
            *tail = Some((model.graph.last_edit(), clean_from));
            Ok(reports)
        };
        let untyped = if lift {
            lift_constants::has_untyped_value_once_lifted(&model.graph)
        } else {
            infer_shapes::has_untyped_value(&model.graph)
        };
        if !untyped {
            if lift {
                self.lift.run_nested(model, cx)?;
            }
            let before = model.stats();
            return Ok((typed(model)?, before));
        }
        // The copy is cheap (weights are shared `Bytes`); lifting its
        // constants and encoding it for tract happen on the second core too,
        // and tract frees its copies there after handing the types over.
        let snapshot = model.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let inference = s.spawn(move || {
                let deliver = |r| {
                    let _ = sender.send(r);
                };
                let snapshot = if lift {
                    lift_constants::lifted_in_place(snapshot)
                } else {
                    Ok(snapshot)
                };
                match snapshot.and_then(crate::exec::inference_bytes_of) {
                    Ok(bytes) => crate::runtime::infer_types_then(&bytes, deliver),
                    Err(e) => deliver(Err(e)),
                }
            });
            let result = (|| -> Result<(Vec<PassReport>, ModelStats)> {
                if lift {
                    self.lift.run_nested(model, cx)?;
                }
                let before = model.stats();
                let mut reports = self.untyped.run_nested(model, cx)?;
                // While tract works, fold the BatchNorms `fuse-bn` will
                // fold once the types are in (same result, computed early).
                let _keeping = self.memo.keep();
                let mut arrived = None;
                fuse_bn::fold_ahead(&self.memo, model, || match receiver.try_recv() {
                    Ok(r) => {
                        arrived = Some(r);
                        false
                    }
                    Err(TryRecvError::Empty) => true,
                    Err(TryRecvError::Disconnected) => false,
                });
                let inferred = arrived.unwrap_or_else(|| {
                    receiver
                        .recv()
                        .unwrap_or_else(|_| Err(anyhow!("type inference panicked")))
                });
                let details = infer_shapes::record(model, inferred)?;
                heard.take(&details);
                reports.extend(typed(model)?);
                Ok((reports, before))
            })();
            // A panic there after the types arrived changes nothing.
            let _ = inference.join();
            result
        })
    }
}

impl Pass for Fuse {
    fn run(&self, model: &mut Model, cx: &PassContext) -> Result<serde_json::Value> {
        let mut rounds = 0;
        let mut parts: Vec<serde_json::Value> = vec![];
        let mut tail = None;
        let mut heard = Heard::default();
        loop {
            let (reports, before) = self.round(model, cx, rounds == 0, &mut tail, &mut heard)?;
            rounds += 1;
            parts.extend(reports.into_iter().filter(|r| r.nodes_before != r.nodes_after).map(|r| {
                json!({ "round": rounds, "pass": r.name, "nodes_removed": r.nodes_before - r.nodes_after.min(r.nodes_before) })
            }));
            if model.stats() == before || rounds == self.rounds {
                break;
            }
        }
        let mut details = json!({ "rounds": rounds, "changes": parts });
        if !heard.outputs_corrected.is_empty() {
            // A wrong output declaration the inferred types replaced.
            details["outputs_corrected"] = json!(heard.outputs_corrected);
        }
        if heard.tract_panicked {
            // The types are missing where it panicked: the CLI warns of it.
            details["tract_panicked"] = json!(true);
        }
        Ok(details)
    }
}

#[cfg(test)]
mod tests {
    use super::Heard;
    use serde_json::json;

    #[test]
    fn what_inference_said_is_kept_over_the_rounds() {
        let mut heard = Heard::default();
        heard.take(&json!({ "annotated": 3 }));
        assert!(!heard.tract_panicked && heard.outputs_corrected.is_empty());
        // A panic in one round is heard even if a later round is clean.
        heard.take(&json!({ "annotated": 0, "error": "tract panicked", "tract_panicked": true }));
        heard.take(&json!({ "outputs_corrected": [{ "output": "y" }] }));
        heard.take(&json!({ "annotated": 3 }));
        assert!(heard.tract_panicked);
        assert_eq!(heard.outputs_corrected, vec![json!({ "output": "y" })]);
    }
}
