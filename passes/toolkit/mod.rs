//! What rules share: who uses a value, which constants die with a node, and
//! the linear producers (Conv, ConvTranspose, Gemm, MatMul) that `fuse-bn`
//! and `fuse-bias` fold affine maps into. The common rewrites themselves are
//! [`Patch`] constructors (`bypass`, `collapse_pair`, `skip_inner`) and the
//! one-user test is [`Graph::sole_user`]. `timing` is how the lossy passes
//! time what they made in ONNX Runtime and keep the fastest.

mod producer;
pub(crate) mod timing;

pub(crate) use producer::{replace_const, small_const, Kind, Producer};

use crate::ir::{Graph, NodeId, Operator, Outlet, Patch};

/// `outlet`'s only use is one input of `user`, and it is not a graph output.
pub(crate) fn sole_use(g: &Graph, outlet: Outlet, user: NodeId) -> bool {
    g.sole_user(outlet) == Some(user)
}

/// Removes the initializers feeding `node` (which the patch removes) that
/// nothing else uses.
pub(crate) fn remove_dead_consts(g: &Graph, patch: &mut Patch, node: NodeId) {
    let mut seen = vec![];
    for outlet in g.inputs(node).into_iter().flatten() {
        let dead = g.const_tensor(outlet).is_some()
            && !g.is_graph_output(outlet)
            && g.consumers(outlet).iter().all(|&(u, _)| u == node);
        if dead && !seen.contains(&outlet.node) {
            seen.push(outlet.node);
            patch.remove(outlet.node);
        }
    }
}

/// `outer(inner(x))`, as the pair rules see it: `mid` is input 0 of `outer`,
/// the output of `inner`, whose input 0 is `x`.
pub(crate) struct Pair<'g> {
    pub mid: Outlet,
    pub inner: &'g Operator,
    pub x: Outlet,
}

/// The pair ending at `outer` when its input 0 comes from an operator of
/// type `inner_type` (default domain) with an input 0.
pub(crate) fn pair<'g>(g: &'g Graph, outer: NodeId, inner_type: &str) -> Option<Pair<'g>> {
    let mid = g.input(outer, 0)?;
    let inner = g.op(mid.node).filter(|o| o.is(inner_type))?;
    let x = g.input(mid.node, 0)?;
    Some(Pair { mid, inner, x })
}
