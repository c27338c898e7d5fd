//! The deterministic topological order of a graph's nodes: sources first,
//! then operators in the lexicographically smallest order by node index.

use super::{Graph, NodeId};
use anyhow::{bail, Result};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use petgraph::Direction::Outgoing;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

impl Graph {
    /// All nodes in a deterministic topological order: sources first, then
    /// operators in the lexicographically smallest order by node index, which
    /// is file order for an unchanged import. Fails on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        // When every wire between operators runs from a lower index to a
        // higher one (an imported model, until rewrites reuse indices), index
        // order is a topological order, hence the smallest one: at each step
        // the lowest remaining operator has all its producers behind it.
        let is_op = |n: NodeId| self.g[n].as_op().is_some();
        if self
            .g
            .edge_references()
            .all(|e| is_op(e.target()) && (!is_op(e.source()) || e.source() < e.target()))
        {
            let (ops, sources): (Vec<NodeId>, Vec<NodeId>) =
                self.g.node_indices().partition(|&n| is_op(n));
            let mut order = sources;
            order.extend(ops);
            return Ok(order);
        }
        self.topo_order_by_heap()
    }

    /// [`Graph::topo_order`] in general: the ready node of the smallest key.
    pub(super) fn topo_order_by_heap(&self) -> Result<Vec<NodeId>> {
        let mut indegree: Vec<usize> = vec![0; self.g.node_bound()];
        for e in self.g.edge_references() {
            indegree[e.target().index()] += 1;
        }
        // Sources (inputs, initializers, captures) first, then operators by index.
        let key = |n: NodeId| Reverse((self.g[n].as_op().is_some(), n));
        let mut order = Vec::with_capacity(self.g.node_count());
        let mut ready: BinaryHeap<Reverse<(bool, NodeId)>> = BinaryHeap::new();
        // Non-operator nodes are sources (nothing feeds them): they pop
        // first, in index order, so they skip the heap (most of the nodes of
        // a model whose weights are initializers). Should one ever be fed,
        // the heap orders everything, as it then must.
        let fed_source = self
            .g
            .edge_references()
            .any(|e| self.g[e.target()].as_op().is_none());
        for n in self.g.node_indices().filter(|n| indegree[n.index()] == 0) {
            if self.g[n].as_op().is_none() && !fed_source {
                order.push(n);
            } else {
                ready.push(key(n));
            }
        }
        for &n in &order {
            for e in self.g.edges_directed(n, Outgoing) {
                let t = e.target().index();
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(key(e.target()));
                }
            }
        }
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Outgoing) {
                let t = e.target().index();
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(key(e.target()));
                }
            }
        }
        if order.len() != self.g.node_count() {
            let stuck = self
                .g
                .node_indices()
                .find(|n| indegree[n.index()] > 0)
                .expect("a node is left");
            bail!(
                "the graph has a cycle through node {}",
                self.g[stuck].label()
            );
        }
        Ok(order)
    }

    /// Operator nodes only, in topological order.
    pub fn op_order(&self) -> Result<Vec<NodeId>> {
        Ok(self
            .topo_order()?
            .into_iter()
            .filter(|&n| self.op(n).is_some())
            .collect())
    }
}
