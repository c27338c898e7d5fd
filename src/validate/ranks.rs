//! Ranks of values for validation: what the file declares, else a light
//! propagation in topological order through operators whose output rank is
//! plain (element-wise ops keep it, broadcasting takes the largest, Flatten
//! makes 2, ...). Unknown stays unknown: a rule needing a rank then checks
//! only what holds for any rank. A subgraph also learns here the ranks and
//! the values of the small integer constants it captures, so that its
//! rules see a captured shape, axes or pads as the enclosing graph does.

use crate::ir::op_kinds::{BROADCAST, SAME_DIMS, SAME_RANK};
use crate::ir::{Graph, NodeId, NodeKind, Operator, Outlet};
use std::collections::HashMap;

#[derive(Default)]
pub struct Ranks {
    found: HashMap<Outlet, usize>,
    /// The integer values of small constants a subgraph captures (its
    /// captures are not constants inside it).
    captured: HashMap<Outlet, Vec<i64>>,
}

/// Captured constants of at most this many elements are carried into a
/// subgraph: shapes, axes and pads, not weights.
const CAPTURED_VALUES: i64 = 64;

impl Ranks {
    /// The integer values of a constant input ([`const_values`]), or of a
    /// captured constant.
    pub fn values(&self, g: &Graph, outlet: Outlet) -> Option<Vec<i64>> {
        const_values(g, outlet).or_else(|| self.captured.get(&outlet).cloned())
    }

    /// The values of `outlet` when it is a small integer constant, to be
    /// carried into a subgraph that captures it.
    pub fn small_values(&self, g: &Graph, outlet: Outlet) -> Option<Vec<i64>> {
        if let Some(t) = g.const_tensor(outlet) {
            if t.dims.iter().product::<i64>() > CAPTURED_VALUES {
                return None;
            }
        }
        self.values(g, outlet)
            .filter(|v| v.len() as i64 <= CAPTURED_VALUES)
    }

    /// Records the values of a captured constant.
    pub fn capture(&mut self, outlet: Outlet, values: Vec<i64>) {
        self.captured.insert(outlet, values);
    }

    /// The rank of a value: declared, else propagated.
    pub fn of(&self, g: &Graph, outlet: Outlet) -> Option<usize> {
        g.known_rank(outlet)
            .or_else(|| self.found.get(&outlet).copied())
    }

    /// Records a rank found otherwise (from dims), unless one is known.
    pub fn learn(&mut self, outlet: Outlet, rank: usize) {
        self.found.entry(outlet).or_insert(rank);
    }

    /// Records the rank of `id`'s first output, when it follows from its inputs.
    pub fn propagate(&mut self, g: &Graph, id: NodeId, op: &Operator) {
        if !op.is_default_domain() {
            return;
        }
        let input = |k: usize| g.input(id, k).and_then(|o| self.of(g, o));
        let t = op.op_type.as_str();
        // MeanVarianceNormalization keeps its dims, but its rank has only
        // ever come from `learn` (the dims); PRelu broadcasts its slope.
        let rank = if (SAME_DIMS.contains(&t) && t != "MeanVarianceNormalization")
            || SAME_RANK.contains(&t)
        {
            input(0)
        } else if BROADCAST.contains(&t) || t == "PRelu" {
            (0..op.arity)
                .map(input)
                .collect::<Option<Vec<_>>>()
                .and_then(|r| r.into_iter().max())
        } else {
            match t {
                "Flatten" | "Gemm" | "NonZero" => Some(2),
                "Shape" => Some(1),
                "MatMul" => match (input(0), input(1)) {
                    (Some(a), Some(b)) if a >= 2 && b >= 2 => Some(a.max(b)),
                    _ => None,
                },
                "Constant" => match op.attr("value").map(|a| &a.value) {
                    Some(crate::ir::AttrValue::Tensor(t)) => Some(t.dims.len()),
                    _ => None,
                },
                "Reshape" | "ConstantOfShape" => {
                    let k = if t == "Reshape" { 1 } else { 0 };
                    g.input(id, k)
                        .and_then(|o| self.values(g, o))
                        .map(|v| v.len())
                }
                // Broadcast of the input against the shape.
                "Expand" => {
                    let shape = g.input(id, 1).and_then(|o| self.values(g, o));
                    match (input(0), shape) {
                        (Some(r), Some(s)) => Some(r.max(s.len())),
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        if let Some(r) = rank {
            self.found.insert(Outlet::new(id, 0), r);
        }
    }
}

/// The integer values of a constant input: an initializer no one can
/// override, or a `Constant` node's tensor.
pub fn const_values(g: &Graph, outlet: Outlet) -> Option<Vec<i64>> {
    if let Some(t) = g.const_tensor(outlet) {
        return t.to_i64().ok();
    }
    match &g.node(outlet.node).kind {
        NodeKind::Op(op) if op.is("Constant") => match op.attr("value").map(|a| &a.value) {
            Some(crate::ir::AttrValue::Tensor(t)) => t.to_i64().ok(),
            _ => None,
        },
        _ => None,
    }
}
