//! # dce
//!
//! **What:** removes operators whose outputs reach no graph output, and
//! initializers nothing uses, in every graph and subgraph.
//!
//! **Why:** exporters leave dead branches, and every other pass leaves the
//! nodes it bypassed for this pass to collect.
//!
//! ```text
//! a = Relu(x)                                  a = Relu(x)
//! b = Sigmoid(x)     (b used by nothing)  →
//! output a                                     output a
//! ```
//! Graph inputs are never removed: they are the model's interface.
//!
//! **Options:** none.

use crate::ir::{Graph, Model, NodeId, NodeKind, Outlet, Patch};
use crate::passes::PassInfo;
use crate::pipeline::{Pass, PassContext};
use anyhow::Result;
use serde_json::json;
use std::collections::HashSet;

pub const INFO: PassInfo = PassInfo::exact(
    "dce",
    "remove operators and initializers that no graph output depends on",
    |_| Ok(Box::new(Dce)),
);

struct Dce;

impl Pass for Dce {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let (mut ops, mut inits) = (0, 0);
        model.graph.visit_graphs_mut(&mut |g| {
            let dead = dead_nodes(g)?;
            let mut patch = Patch::new("dce");
            for id in dead {
                match g.node(id).kind {
                    NodeKind::Op(_) => ops += 1,
                    _ => inits += 1,
                }
                patch.remove(id);
            }
            patch.apply(g)
        })?;
        Ok(json!({ "removed_nodes": ops, "removed_initializers": inits }))
    }
}

/// Nodes no graph output depends on: one backward sweep in reverse topological order.
fn dead_nodes(g: &Graph) -> Result<Vec<NodeId>> {
    let mut live: HashSet<NodeId> = g.outputs.iter().map(|o| o.outlet.node).collect();
    let order = g.topo_order()?;
    for &id in order.iter().rev() {
        if live.contains(&id) {
            live.extend(g.inputs(id).into_iter().flatten().map(|o: Outlet| o.node));
            live.extend(g.implicit_inputs(id).into_iter().map(|o| o.node));
        }
    }
    let removable = |id: NodeId| match g.node(id).kind {
        NodeKind::Op(_) | NodeKind::SparseInitializer(_) => true,
        NodeKind::Initializer(_) => !g.is_graph_input(id),
        // Inputs are the interface; captures are wired from the owning node.
        NodeKind::Input | NodeKind::Capture => false,
    };
    Ok(order
        .into_iter()
        .filter(|&id| !live.contains(&id) && removable(id))
        .collect())
}
