//! What is refused before tract sees a model, with a clearer message than
//! tract's: local functions, unsupported operators, external data without
//! a directory, extra outputs that name no tensor; and the walks over a
//! model's nodes and initializers, subgraphs included.

use crate::runtime::Refusal;
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use tract_onnx::pb;

/// Refuses up front what tract would refuse with a less helpful message.
pub(super) fn precheck(
    proto: &pb::ModelProto,
    graph: &pb::GraphProto,
    framework: &tract_onnx::Onnx,
    model_dir: Option<&Path>,
) -> Result<()> {
    let functions: HashSet<(&str, &str)> = proto
        .functions
        .iter()
        .map(|f| {
            (
                f.domain.as_deref().unwrap_or(""),
                f.name.as_deref().unwrap_or(""),
            )
        })
        .collect();
    let mut unsupported = BTreeSet::new();
    let mut local = BTreeSet::new();
    let mut external = Vec::new();
    visit_graph(graph, &mut |node| {
        if functions.contains(&(node.domain.as_str(), node.op_type.as_str())) {
            local.insert(node.op_type.clone());
        } else if !framework.op_register.0.contains_key(&node.op_type) {
            let domain = if node.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", node.domain)
            };
            unsupported.insert(format!("{}{domain}", node.op_type));
        }
    });
    visit_initializers(graph, &mut |t| {
        if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
            external.push(t.name.clone());
        }
    });
    if !local.is_empty() {
        return Err(Refusal::TractCannotRun.because(anyhow!(
            "it calls local functions ({}), which tract does not inline; inline them first",
            local.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if !unsupported.is_empty() {
        return Err(Refusal::TractCannotRun.because(anyhow!(
            "unsupported operator(s): {}",
            unsupported.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if !external.is_empty() && model_dir.is_none() {
        bail!(
            "the model keeps {} tensor(s) in external data files (e.g. {:?}); \
             load it from its file so their directory is known",
            external.len(),
            external[0]
        );
    }
    Ok(())
}

/// Checks that every extra output names a tensor of the main graph.
pub(super) fn check_extra_outputs(graph: &pb::GraphProto, extra_outputs: &[String]) -> Result<()> {
    let mut known: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    known.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(|o| o.as_str())),
    );
    let unknown: Vec<&str> = extra_outputs
        .iter()
        .map(|s| s.as_str())
        .filter(|s| s.is_empty() || !known.contains(s))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown tensor name(s) requested as extra outputs: {} \
             (not an input, initializer or node output of the main graph)",
            unknown
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Calls `f` on every node of `graph` and of its subgraphs.
pub(super) fn visit_graph(graph: &pb::GraphProto, f: &mut dyn FnMut(&pb::NodeProto)) {
    for node in &graph.node {
        f(node);
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                visit_graph(g, f);
            }
            for g in &attr.graphs {
                visit_graph(g, f);
            }
        }
    }
}

/// Calls `f` on every initializer (and Constant value) of `graph` and its subgraphs.
fn visit_initializers(graph: &pb::GraphProto, f: &mut dyn FnMut(&pb::TensorProto)) {
    graph.initializer.iter().for_each(&mut *f);
    for node in &graph.node {
        for attr in &node.attribute {
            if let Some(t) = &attr.t {
                f(t);
            }
            if let Some(g) = &attr.g {
                visit_initializers(g, f);
            }
            for g in &attr.graphs {
                visit_initializers(g, f);
            }
        }
    }
}
