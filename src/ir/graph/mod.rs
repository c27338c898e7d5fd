//! The graph: operators, graph inputs, initializers and outer-scope captures
//! are petgraph nodes; every tensor use is a wire from an output slot to an
//! input slot. A value's name lives on the outlet that produces it.
//!
//! Subgraph captures: a subgraph that uses a value of an enclosing graph gets a
//! `Capture` node for it, and the node owning the subgraph gets an *implicit*
//! wire from that outer value (slots after its declared inputs, in the order of
//! its subgraphs' captures). Dependencies through subgraphs are thus ordinary
//! wires, and the exporter names each capture after the outer value it is wired to.
//!
//! The parts: this file holds [`Graph`] (its edits and queries, names and
//! walks over subgraphs); `node.rs` what a graph is made of ([`Node`],
//! [`Operator`], [`Outlet`], [`Wire`], [`Value`]); `order.rs` the
//! deterministic topological order; `tests.rs`.

mod node;
mod order;
#[cfg(test)]
mod tests;

use super::{Opaque, Tensor, TypeInfo, ValueInfo};
use anyhow::Result;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction::{Incoming, Outgoing};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

pub use node::{Node, NodeKind, Operator, Outlet, Value, Wire};

pub type NodeId = NodeIndex<u32>;

#[derive(Clone, Debug)]
pub struct GraphInput {
    /// An `Input` node, or an `Initializer` also declared as a graph input.
    pub node: NodeId,
    pub info: ValueInfo,
}

#[derive(Clone, Debug)]
pub struct GraphOutput {
    pub outlet: Outlet,
    pub info: ValueInfo,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: Option<String>,
    pub doc_string: Option<String>,
    pub(crate) g: StableDiGraph<Node, Wire>,
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<GraphOutput>,
    /// `Capture` nodes, in the order of the owning node's implicit slots.
    pub captures: Vec<NodeId>,
    /// `value_info` entries naming no value of this graph, kept for lossless output.
    pub orphan_value_info: Vec<(u32, String, ValueInfo)>,
    pub quantization_annotation: Vec<Opaque>,
    pub metadata_props: Vec<Opaque>,
    /// When this graph last changed: [`EDITS`] after its latest edit (0:
    /// never, since it was made). Copies keep it.
    pub(crate) stamp: u64,
}

/// Edits made to any graph of the process so far: every edit takes the next
/// number, so a graph whose stamp is unchanged has not changed.
static EDITS: AtomicU64 = AtomicU64::new(0);

impl Graph {
    /// Marks this graph changed. Every mutating method here and
    /// `Patch::apply` call it (passes change graphs only through those).
    pub(crate) fn touch(&mut self) {
        self.stamp = EDITS.fetch_add(1, Ordering::Relaxed) + 1;
    }

    /// The latest stamp of this graph and its subgraphs: unchanged between
    /// two calls exactly when no edit reached any of them in between.
    pub fn last_edit(&self) -> u64 {
        let mut last = 0;
        self.visit_graphs(&mut |g| last = last.max(g.stamp));
        last
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.touch();
        &mut self.g[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn op(&self, id: NodeId) -> Option<&Operator> {
        self.g.node_weight(id).and_then(Node::as_op)
    }

    /// All node ids in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    pub fn add_node(&mut self, node: Node) -> NodeId {
        self.touch();
        self.g.add_node(node)
    }

    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.touch();
        self.g.remove_node(id)
    }

    /// Wires `from` into input `slot` of `to`, replacing what fed that slot.
    pub fn connect(&mut self, from: Outlet, to: NodeId, slot: usize) {
        self.disconnect(to, slot);
        self.touch();
        self.g.add_edge(
            from.node,
            to,
            Wire {
                from: from.slot,
                to: slot,
            },
        );
    }

    /// Leaves input `slot` of `to` empty.
    pub fn disconnect(&mut self, to: NodeId, slot: usize) {
        self.touch();
        let old: Vec<_> = self
            .g
            .edges_directed(to, Incoming)
            .filter(|e| e.weight().to == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
    }

    /// Declared input slots of a node in order (`None`: omitted optional input).
    pub fn inputs(&self, id: NodeId) -> Vec<Option<Outlet>> {
        let arity = self.op(id).map_or(0, |op| op.arity);
        let mut slots = vec![None; arity];
        for e in self.g.edges_directed(id, Incoming) {
            if let Some(s) = slots.get_mut(e.weight().to) {
                *s = Some(Outlet::new(e.source(), e.weight().from));
            }
        }
        slots
    }

    /// The outlet feeding input `slot`, if any.
    pub fn input(&self, id: NodeId, slot: usize) -> Option<Outlet> {
        self.g
            .edges_directed(id, Incoming)
            .find(|e| e.weight().to == slot)
            .map(|e| Outlet::new(e.source(), e.weight().from))
    }

    /// Implicit inputs (values captured by the node's subgraphs), in slot order.
    pub fn implicit_inputs(&self, id: NodeId) -> Vec<Outlet> {
        let arity = self.op(id).map_or(0, |op| op.arity);
        let mut wires: Vec<(usize, Outlet)> = self
            .g
            .edges_directed(id, Incoming)
            .filter(|e| e.weight().to >= arity)
            .map(|e| (e.weight().to, Outlet::new(e.source(), e.weight().from)))
            .collect();
        wires.sort();
        wires.into_iter().map(|(_, o)| o).collect()
    }

    /// Every (consumer, input slot) of an outlet, sorted.
    pub fn consumers(&self, outlet: Outlet) -> Vec<(NodeId, usize)> {
        let mut uses: Vec<_> = self
            .g
            .edges_directed(outlet.node, Outgoing)
            .filter(|e| e.weight().from == outlet.slot)
            .map(|e| (e.target(), e.weight().to))
            .collect();
        uses.sort();
        uses
    }

    /// Nodes fed by any output of `id`.
    pub fn successors(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.g.neighbors_directed(id, Outgoing)
    }

    pub fn is_graph_output(&self, outlet: Outlet) -> bool {
        self.outputs.iter().any(|o| o.outlet == outlet)
    }

    pub fn is_graph_input(&self, id: NodeId) -> bool {
        self.inputs.iter().any(|i| i.node == id)
    }

    /// The one node reading `outlet`, through one input, when it is not a
    /// graph output either: that node is all that keeps `outlet` alive.
    pub fn sole_user(&self, outlet: Outlet) -> Option<NodeId> {
        match self.consumers(outlet)[..] {
            [(user, _)] if !self.is_graph_output(outlet) => Some(user),
            _ => None,
        }
    }

    /// Used anywhere: by a node or as a graph output.
    pub fn is_used(&self, outlet: Outlet) -> bool {
        self.is_graph_output(outlet) || !self.consumers(outlet).is_empty()
    }

    pub fn outlet_name(&self, outlet: Outlet) -> &str {
        &self.g[outlet.node].outputs[outlet.slot].name
    }

    /// The constant behind an outlet, if it is an initializer that no one can
    /// override (an initializer also declared as a graph input is not constant).
    pub fn const_tensor(&self, outlet: Outlet) -> Option<&Tensor> {
        match &self.g.node_weight(outlet.node)?.kind {
            NodeKind::Initializer(t) if !self.is_graph_input(outlet.node) => Some(t),
            _ => None,
        }
    }

    /// What is known of a value's type: its value_info, its graph input or
    /// output declaration, or its initializer.
    pub fn known_type(&self, outlet: Outlet) -> Option<TypeInfo> {
        let node = self.g.node_weight(outlet.node)?;
        if let Some(ty) = node
            .outputs
            .get(outlet.slot)?
            .info
            .as_ref()
            .and_then(|i| i.ty.clone())
        {
            return Some(ty);
        }
        if let NodeKind::Initializer(t) = &node.kind {
            return Some(TypeInfo::tensor(t.dtype, &t.dims));
        }
        let declared = |info: &ValueInfo| info.ty.clone();
        self.inputs
            .iter()
            .find(|i| i.node == outlet.node)
            .and_then(|i| declared(&i.info))
            .or_else(|| {
                self.outputs
                    .iter()
                    .find(|o| o.outlet == outlet)
                    .and_then(|o| declared(&o.info))
            })
    }

    /// A value's dims when its rank is known (see `TypeInfo::dims`).
    pub fn known_dims(&self, outlet: Outlet) -> Option<Vec<Option<i64>>> {
        self.known_type(outlet)?.dims()
    }

    /// A value's rank, when known.
    pub fn known_rank(&self, outlet: Outlet) -> Option<usize> {
        self.known_type(outlet)?.rank()
    }

    /// Can this outlet be renamed (to take over a graph output's name)
    /// without changing the graph's interface or a capture?
    pub fn can_take_name(&self, outlet: Outlet) -> bool {
        let renamable_kind = match self.g[outlet.node].kind {
            NodeKind::Op(_) => true,
            NodeKind::Initializer(_) => !self.is_graph_input(outlet.node),
            _ => false,
        };
        renamable_kind && !self.is_graph_output(outlet)
    }

    /// The outlet of the value called `name`, by linear search.
    pub fn find_value(&self, name: &str) -> Option<Outlet> {
        self.g.node_indices().find_map(|id| {
            self.g[id]
                .outputs
                .iter()
                .position(|v| v.name == name)
                .map(|slot| Outlet::new(id, slot))
        })
    }

    /// Is `name` defined in this graph or its subgraphs? A scan, cheaper
    /// than building `all_names` when a patch adds one or two values.
    pub fn has_name(&self, name: &str) -> bool {
        self.g.node_weights().any(|n| {
            n.outputs.iter().any(|v| v.name == name)
                || n.as_op().is_some_and(|op| {
                    op.attributes
                        .iter()
                        .flat_map(|a| a.graphs())
                        .any(|sub| sub.has_name(name))
                })
        })
    }

    /// Every value name defined in this graph and its subgraphs.
    pub fn all_names(&self) -> HashSet<&str> {
        let mut names = HashSet::with_capacity(self.g.node_count());
        self.collect_names(&mut names);
        names
    }

    fn collect_names<'a>(&'a self, names: &mut HashSet<&'a str>) {
        for n in self.g.node_weights() {
            names.extend(
                n.outputs
                    .iter()
                    .filter(|v| !v.name.is_empty())
                    .map(|v| v.name.as_str()),
            );
            if let NodeKind::Op(op) = &n.kind {
                for sub in op.attributes.iter().flat_map(|a| a.graphs()) {
                    sub.collect_names(names);
                }
            }
        }
    }

    /// Subgraphs of every operator, recursively, depth-first.
    pub fn visit_graphs(&self, f: &mut dyn FnMut(&Graph)) {
        f(self);
        for n in self.g.node_weights() {
            if let NodeKind::Op(op) = &n.kind {
                for sub in op.attributes.iter().flat_map(|a| a.graphs()) {
                    sub.visit_graphs(f);
                }
            }
        }
    }

    /// Mutable walk over this graph and every subgraph, innermost first.
    pub fn visit_graphs_mut(&mut self, f: &mut dyn FnMut(&mut Graph) -> Result<()>) -> Result<()> {
        let ids: Vec<NodeId> = self.g.node_indices().collect();
        for id in ids {
            if let NodeKind::Op(op) = &mut self.g[id].kind {
                for sub in op.attributes.iter_mut().flat_map(|a| a.graphs_mut()) {
                    sub.visit_graphs_mut(f)?;
                }
            }
        }
        f(self)
    }

    /// Operator count of this graph and its subgraphs.
    pub fn op_count(&self) -> usize {
        let mut count = 0;
        self.visit_graphs(&mut |g| {
            count += g.g.node_weights().filter(|n| n.as_op().is_some()).count()
        });
        count
    }

    /// Operators, constant parameters and their bytes, in one walk (see
    /// `op_count` and `param_stats`).
    pub fn stats(&self) -> (usize, usize, usize) {
        let (mut ops, mut params, mut bytes) = (0, 0, 0);
        self.visit_graphs(&mut |g| {
            for n in g.g.node_weights() {
                match &n.kind {
                    NodeKind::Op(_) => ops += 1,
                    NodeKind::Initializer(t) => {
                        params += t.numel();
                        bytes += t.byte_len();
                    }
                    _ => {}
                }
            }
        });
        (ops, params, bytes)
    }

    /// Constant parameters (initializer elements) of this graph and its subgraphs,
    /// with the bytes they take.
    pub fn param_stats(&self) -> (usize, usize) {
        let (mut params, mut bytes) = (0, 0);
        self.visit_graphs(&mut |g| {
            for n in g.g.node_weights() {
                if let NodeKind::Initializer(t) = &n.kind {
                    params += t.numel();
                    bytes += t.byte_len();
                }
            }
        });
        (params, bytes)
    }
}
