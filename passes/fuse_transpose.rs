//! # fuse-transpose
//!
//! **What:** a Transpose of a Transpose becomes one Transpose of the original
//! value, with the composed permutation, or nothing at all when the
//! composition is the identity. Subgraphs included.
//!
//! **Why:** layout conversions (NCHW ⇄ NHWC, attention's head split and
//! merge) leave back-to-back Transposes; each one is a full copy of the
//! tensor in ONNX Runtime / TensorRT. Moving data twice is the same as
//! moving it once, so the rewrite is exact (no arithmetic at all).
//!
//! ```text
//! a = Transpose(x) {perm=[0, 2, 3, 1]}          y = Transpose(x) {perm=[0, 3, 1, 2]}
//! y = Transpose(a) {perm=[0, 2, 1, 3]}    →
//!
//! a = Transpose(x) {perm=[0, 2, 3, 1]}
//! y = Transpose(a) {perm=[0, 3, 1, 2]}    →     (uses of y use x)
//! ```
//! When the inner Transpose has other consumers it stays, and only the outer
//! one is rewired to read `x`. A missing `perm` means "reverse the axes".
//!
//! **Examples that run:** `passes/testdata/fuse-transpose/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{Attribute, Graph, NodeId, Operator, Outlet, Patch};
use crate::passes::toolkit::{pair, Pair};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-transpose",
    "merge Transpose chains into one Transpose (or none)",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[Rule::on(
    "Transpose",
    "transpose-transpose",
    transpose_transpose,
)];

/// The permutation of a Transpose: its `perm`, or the reversal of the
/// input's axes when absent (needs the rank: `rank_hint` or the input's
/// known type). `None` when it is not a valid permutation.
fn perm(g: &Graph, op: &Operator, input: Outlet, rank_hint: Option<usize>) -> Option<Vec<usize>> {
    let p: Vec<usize> = match op.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&i| usize::try_from(i).ok())
            .collect::<Option<_>>()?,
        None => {
            let rank = rank_hint.or_else(|| rank_of(g, input))?;
            (0..rank).rev().collect()
        }
    };
    let mut seen = vec![false; p.len()];
    for &i in &p {
        if i >= p.len() || std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(p)
}

fn rank_of(g: &Graph, outlet: Outlet) -> Option<usize> {
    match g.known_type(outlet)?.kind {
        crate::ir::TypeKind::Tensor {
            shape: Some(dims), ..
        } => Some(dims.len()),
        _ => None,
    }
}

/// `Transpose(Transpose(x, p1), p2) = Transpose(x, q)` with `q[i] = p1[p2[i]]`:
/// output axis `i` of the outer one is axis `p2[i]` of the inner output,
/// which is axis `p1[p2[i]]` of `x`. `Transpose(x, [0..n)) = x`.
fn transpose_transpose(
    _: &RuleContext,
    g: &Graph,
    id: NodeId,
    op: &Operator,
) -> Result<Option<Patch>> {
    let Some(Pair { mid, inner, x }) = pair(g, id, "Transpose") else {
        return Ok(None);
    };
    let Some(p1) = perm(g, inner, x, None) else {
        return Ok(None);
    };
    let Some(p2) = perm(g, op, mid, Some(p1.len())) else {
        return Ok(None);
    };
    if p1.len() != p2.len() {
        return Ok(None);
    }
    let q: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
    if q.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(Patch::collapse_pair(g, id, mid, x));
    }
    let mut patch = Patch::new("");
    let mut op = op.clone();
    let q: Vec<i64> = q.iter().map(|&i| i as i64).collect();
    op.set_attr(Attribute::ints("perm", &q));
    patch.update(id, op);
    patch.skip_inner(g, id, mid, x);
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType, Model};
    use crate::passes::testing::check;

    const PASS: &str = "fuse-transpose";

    fn perm(p: &[i64]) -> Vec<Attribute> {
        vec![Attribute::ints("perm", p)]
    }

    /// x: f32[2,3,4,5] → Transpose(p1) → Transpose(p2) → Relu → y.
    fn chain(p1: Option<&[i64]>, p2: Option<&[i64]>) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4, 5]);
        let a = b.op("Transpose", &[x], p1.map(perm).unwrap_or_default(), "a");
        let t = b.op("Transpose", &[a], p2.map(perm).unwrap_or_default(), "t");
        let y = b.op("Relu", &[t], vec![], "y");
        b.output(y, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn composes_permutations() {
        // NHWC of NCHW, then swap H and W: out = x[.., perm [0,3,1,2]∘...].
        let m = chain(Some(&[0, 2, 3, 1]), Some(&[0, 2, 1, 3]));
        let after = check("fuse-transpose__compose", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn inverse_pair_vanishes() {
        let m = chain(Some(&[0, 2, 3, 1]), Some(&[0, 3, 1, 2]));
        let after = check("fuse-transpose__inverse", &m, PASS);
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn missing_perm_reverses() {
        // reverse then [1,0,2,3] is not the identity (reverse ∘ reverse
        // is: testdata/fuse-transpose/reverse-twice.test).
        let m = chain(None, Some(&[1, 0, 2, 3]));
        let after = check("fuse-transpose__missing-perm", &m, PASS);
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn inner_used_twice_stays() {
        // The inner Transpose stays for r; the pair still fuses.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let a = b.op("Transpose", &[x], perm(&[1, 2, 0]), "a");
        let t = b.op("Transpose", &[a], perm(&[1, 0, 2]), "t");
        let r = b.op("Relu", &[a], vec![], "r");
        let s = b.op("Sigmoid", &[t], vec![], "s");
        b.output(s, DataType::FLOAT);
        b.output(r, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("fuse-transpose__inner-shared", &m, PASS);
        assert_eq!(after.graph.op_count(), 4);
    }
}
