//! The IR verifier, run after every pass: the graph is acyclic, every wire
//! lands on a real slot, every slot is fed at most once, names are unique,
//! captures match their owner's implicit inputs, and declared types agree
//! with the constants they describe.

use super::*;
use anyhow::{bail, ensure, Context, Result};
use petgraph::visit::EdgeRef;
use petgraph::Direction::Incoming;
use std::collections::{HashMap, HashSet};

pub fn verify(model: &Model) -> Result<()> {
    verify_graph(&model.graph)?;
    ensure!(
        model.graph.captures.is_empty(),
        "the main graph uses values that are never defined"
    );
    let mut names = HashSet::with_capacity(model.graph.node_count());
    unique_names(&model.graph, &mut names)
}

/// Checks one graph and its subgraphs (not cross-graph name uniqueness).
pub fn verify_graph(g: &Graph) -> Result<()> {
    g.topo_order()?;
    for id in g.node_ids() {
        let node = g.node(id);
        let label = || format!("node {}", node.label());
        check_node(g, id).with_context(label)?;
        if let NodeKind::Op(op) = &node.kind {
            for sub in op.attributes.iter().flat_map(|a| a.graphs()) {
                verify_graph(sub).with_context(label)?;
            }
        }
    }
    let captures: HashSet<NodeId> = g.captures.iter().copied().collect();
    ensure!(
        captures.len() == g.captures.len(),
        "a capture is listed twice"
    );
    for id in g.node_ids() {
        let is_capture = matches!(g.node(id).kind, NodeKind::Capture);
        ensure!(
            is_capture == captures.contains(&id),
            "capture list out of step with node {}",
            g.node(id).label()
        );
    }
    let mut listed = HashSet::new();
    for input in &g.inputs {
        ensure!(
            g.contains(input.node),
            "a graph input refers to a removed node"
        );
        let node = g.node(input.node);
        ensure!(
            listed.insert(input.node),
            "graph input {} is listed twice",
            node.outputs[0].name
        );
        match (
            &node.kind,
            input.info.ty.as_ref().and_then(TypeInfo::tensor_elem),
        ) {
            (NodeKind::Input, _) => {}
            (NodeKind::Initializer(t), Some(elem)) if elem != t.dtype => {
                bail!(
                    "graph input {} is declared {elem} but its initializer is {}",
                    node.outputs[0].name,
                    t.dtype
                )
            }
            (NodeKind::Initializer(_), _) => {}
            _ => bail!(
                "graph input {} is not an input or initializer",
                node.outputs[0].name
            ),
        }
    }
    for id in g.node_ids() {
        if matches!(g.node(id).kind, NodeKind::Input) {
            ensure!(
                listed.contains(&id),
                "input node {} is not a graph input",
                g.node(id).label()
            );
        }
    }
    for out in &g.outputs {
        ensure!(
            g.contains(out.outlet.node) && out.outlet.slot < g.node(out.outlet.node).outputs.len(),
            "a graph output refers to a value that no longer exists"
        );
        ensure!(
            !g.outlet_name(out.outlet).is_empty(),
            "a graph output has no name"
        );
    }
    Ok(())
}

fn check_node(g: &Graph, id: NodeId) -> Result<()> {
    let node = g.node(id);
    let (arity, implicit) = match &node.kind {
        NodeKind::Op(op) => (
            op.arity,
            op.attributes
                .iter()
                .flat_map(|a| a.graphs())
                .map(|s| s.captures.len())
                .sum(),
        ),
        _ => (0, 0),
    };
    let mut fed: HashMap<usize, Outlet> = HashMap::new();
    for e in g.g.edges_directed(id, Incoming) {
        let w = e.weight();
        let src = g.node(e.source());
        ensure!(
            w.from < src.outputs.len(),
            "input {} reads output {} of {}, which has {}",
            w.to,
            w.from,
            src.label(),
            src.outputs.len()
        );
        ensure!(
            w.to < arity + implicit,
            "a wire lands on slot {} but the node has {} inputs",
            w.to,
            arity + implicit
        );
        ensure!(
            !src.outputs[w.from].name.is_empty(),
            "input {} reads an omitted output of {}",
            w.to,
            src.label()
        );
        if fed.insert(w.to, Outlet::new(e.source(), w.from)).is_some() {
            bail!("input slot {} is fed twice", w.to);
        }
    }
    for k in arity..arity + implicit {
        ensure!(
            fed.contains_key(&k),
            "captured value #{} has no wire",
            k - arity
        );
    }
    if let NodeKind::Initializer(t) = &node.kind {
        let expected = t.dtype.size_of().map(|s| s.saturating_mul(t.numel()));
        if let (Some(expected), TensorData::Raw(raw)) = (expected, &t.data) {
            ensure!(
                raw.len() == expected,
                "initializer holds {} bytes, its type and dims need {expected}",
                raw.len()
            );
        }
        // Typed storage of f32/f64/i64 holds one entry per element (passes
        // rely on it: a float weight always converts). Types packed several
        // to an entry (f16 in int32_data, complex) are left alone.
        let typed = match (&t.data, t.dtype) {
            (TensorData::Float(v), DataType::FLOAT) => Some(v.len()),
            (TensorData::Double(v), DataType::DOUBLE) => Some(v.len()),
            (TensorData::Int64(v), DataType::INT64) => Some(v.len()),
            _ => None,
        };
        if let Some(len) = typed {
            ensure!(
                len == t.numel(),
                "initializer holds {len} values, its dims {:?} need {}",
                t.dims,
                t.numel()
            );
        }
        if let Some(elem) = node.outputs[0]
            .info
            .as_ref()
            .and_then(|i| i.ty.as_ref())
            .and_then(TypeInfo::tensor_elem)
        {
            ensure!(
                elem == t.dtype,
                "value_info says {elem} but the initializer is {}",
                t.dtype
            );
        }
    }
    Ok(())
}

/// A value name is defined once in its graph and never again in a graph
/// nested in it (ONNX's SSA rule, as onnx.checker reads it: a subgraph sees
/// its outer scopes, so it may not shadow them). Sibling subgraphs do not
/// see each other and may reuse a name: tf2onnx gives every Loop body the
/// same constant names. Captures alias outer values and are skipped.
fn unique_names<'g>(g: &'g Graph, scope: &mut HashSet<&'g str>) -> Result<()> {
    let mut defined = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if matches!(node.kind, NodeKind::Capture) {
            continue;
        }
        for v in node.outputs.iter().filter(|v| !v.name.is_empty()) {
            ensure!(
                scope.insert(v.name.as_str()),
                "value name '{}' is defined twice",
                v.name
            );
            defined.push(v.name.as_str());
        }
    }
    for id in g.node_ids() {
        if let NodeKind::Op(op) = &g.node(id).kind {
            for sub in op.attributes.iter().flat_map(|a| a.graphs()) {
                unique_names(sub, scope)?;
            }
        }
    }
    for name in defined {
        scope.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verify;
    use crate::ir::parse::model_from_text;

    /// An If whose branches both define `t`, the way tf2onnx names the
    /// constants of every Loop body alike; `inner` is what the else branch
    /// defines besides.
    fn branches(inner: &str) -> String {
        format!(
            "model ir=8 opsets=[ai.onnx=13]\ngraph g\n  input c: bool[]\n  input x: f32[2]\n  \
             a = Neg(x)\n  e = If(c)\n    else_branch:\n    graph no\n      capture x\n      \
             t = Relu(x)\n      {inner} = Neg(t)\n      output {inner}: f32[2]\n    then_branch:\n    \
             graph yes\n      capture x\n      t = Abs(x)\n      output t: f32[2]\n  output e: f32[2]\n"
        )
    }

    #[test]
    fn sibling_subgraphs_may_reuse_a_name_but_not_shadow_an_outer_one() {
        verify(&model_from_text(&branches("u")).unwrap()).unwrap();
        // The text reader keeps the same rule, so a shadowing model cannot
        // even be written down in it.
        let e = format!("{:#}", model_from_text(&branches("a")).unwrap_err());
        assert!(e.contains("'a' is defined twice"), "{e}");
    }
}
