//! # strip-debug
//!
//! **What:** removes what exporters attach to each operator for debugging:
//! its `doc_string` and its `metadata_props`, in every graph and subgraph.
//!
//! **Why:** PyTorch writes the Python stack trace of every operator there
//! (older exporters in `doc_string`, torch.onnx's dynamo exporter in
//! `metadata_props`). After `fuse`, it takes silero-op18-ifless from 2.71
//! to 2.10 MiB (637 KB of traces; onnxsim's output is 2.1 MB) and plcmos
//! from 1.28 to 1.15 MiB. No runtime reads them. Nothing else changes: the model's own metadata
//! (`metadata_props` of the model, which apps read class names from), names,
//! and the docs of the graph and its values stay.
//!
//! ```text
//! y = Conv(x, w)   doc_string="…/model.py(208): forward …"   →   y = Conv(x, w)
//! ```
//!
//! Not part of `fuse`: a file smaller by its debug text is a choice, not a
//! simplification; run it after the passes whose reports name nodes.
//!
//! **Options:** none.

use crate::ir::Model;
use crate::passes::PassInfo;
use crate::pipeline::{Pass, PassContext};
use anyhow::Result;
use serde_json::json;

pub const INFO: PassInfo = PassInfo::exact(
    "strip-debug",
    "remove each operator's doc_string and metadata_props (exporters' stack traces)",
    |_| Ok(Box::new(StripDebug)),
);

struct StripDebug;

impl Pass for StripDebug {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let (mut ops, mut bytes) = (0usize, 0usize);
        model.graph.visit_graphs_mut(&mut |g| {
            let with_debug: Vec<_> = g
                .node_ids()
                .filter(|&id| {
                    g.op(id)
                        .is_some_and(|op| op.doc_string.is_some() || !op.metadata_props.is_empty())
                })
                .collect();
            for id in with_debug {
                let op = g.node_mut(id).as_op_mut().expect("filtered on operators");
                bytes += op.doc_string.take().map_or(0, |d| d.len());
                bytes += op
                    .metadata_props
                    .drain(..)
                    .map(|p| p.0.len())
                    .sum::<usize>();
                ops += 1;
            }
            Ok(())
        })?;
        Ok(json!({ "operators": ops, "bytes_removed": bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse::model_from_text;
    use crate::ir::Opaque;
    use crate::pipeline::Pipeline;

    #[test]
    fn removes_operator_debug_text_everywhere_and_keeps_the_models_metadata() {
        let mut model = model_from_text(
            "model ir=8 opsets=[ai.onnx=17]
graph g
  input x: f32[2]
  input c: bool[]
  init t: f32[2] = [1, 2]
  y = Relu(x)
  z = If(c)
    else_branch:
    graph no
      capture x
      n = Neg(x)
      output n: f32[..]
    then_branch:
    graph yes
      capture t
      r = Relu(t)
      output r: f32[..]
  output y: f32[..]
  output z: f32[..]
",
        )
        .unwrap();
        let trace = Opaque(bytes::Bytes::from_static(b"\x0a\x05stack\x12\x04a.py"));
        model.metadata_props.push(trace.clone());
        model
            .graph
            .visit_graphs_mut(&mut |g| {
                for id in g.node_ids().collect::<Vec<_>>() {
                    if let Some(op) = g.node_mut(id).as_op_mut() {
                        op.doc_string = Some("model.py(208): forward".into());
                        op.metadata_props.push(trace.clone());
                    }
                }
                Ok(())
            })
            .unwrap();
        let before = crate::onnx::encoded_len(&model).unwrap();
        let report = Pipeline::parse("strip-debug")
            .unwrap()
            .run(&mut model, &PassContext::default(), &mut |_| {})
            .unwrap();
        assert_eq!(report[0].details["operators"], 4);
        let mut left = 0;
        model.graph.visit_graphs(&mut |g| {
            for id in g.node_ids() {
                if let Some(op) = g.op(id) {
                    left += op.doc_string.iter().count() + op.metadata_props.len();
                }
            }
        });
        assert_eq!(left, 0);
        assert_eq!(model.metadata_props, [trace]);
        assert!(crate::onnx::encoded_len(&model).unwrap() < before);
    }
}
