//! # fuse-gemm
//!
//! **What:** rewrites `MatMul(x, W)` followed by `Add` of a bias into one
//! `Gemm(x, W, bias)`, when `x` and `W` are known to be 2-D and the bias
//! broadcasts along the last axis only (`[N]`, `[1,N]`, or a scalar).
//! Subgraphs included.
//!
//! **Why:** PyTorch exports `nn.Linear` on 2-D input as MatMul + Add in some
//! paths; ONNX Runtime and TensorRT run Gemm (bias included) as one kernel.
//!
//! ```text
//! y = MatMul(x: f32[M,K], w: f32[K,N])          z = Gemm(x, w, b)
//! z = Add(y, b: f32[N])                   →
//! ```
//! The ranks must be known (from `value_info`, graph inputs or
//! initializers; run `infer-shapes` first): `Gemm` takes only 2-D operands,
//! whereas `MatMul` broadcasts over leading batch axes, so with a rank
//! unknown the MatMul stays. The MatMul output must have no other use and
//! not be a graph output. W and the bias need not be constant. f32 and f64
//! only (the types Gemm supports from opset 7 on).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{DataType, Graph, NodeId, Operator, Outlet, Patch};
use crate::passes::toolkit::sole_use;
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo =
    PassInfo::exact("fuse-gemm", "fuse 2-D MatMul + bias Add into Gemm", |_| {
        RulePass::boxed(RULES, "fused")
    });

pub const RULES: &[Rule] = &[Rule::on("Add", "matmul-add", matmul_add)];

// Add(MatMul(x, W), b) = Gemm(x, W, b) {α=1, β=1} for x: [M,K], W: [K,N] and
// b unidirectionally broadcastable to [M,N] without varying along M.
fn matmul_add(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    // Gemm-7 is the first with a unidirectionally broadcast C.
    if ctx.opset < 7 {
        return Ok(None);
    }
    Ok((0..2).find_map(|slot| {
        let y = g.input(id, slot)?;
        let bias = g.input(id, 1 - slot)?;
        g.op(y.node).filter(|o| o.is("MatMul"))?;
        if !sole_use(g, y, id) || g.node(y.node).outputs.len() != 1 {
            return None;
        }
        let (x, w) = (g.input(y.node, 0)?, g.input(y.node, 1)?);
        let elem = g.known_type(x)?.tensor_elem()?;
        if !matches!(elem, DataType::FLOAT | DataType::DOUBLE) {
            return None;
        }
        if g.known_rank(x)? != 2 {
            return None;
        }
        let w_dims = g.known_dims(w)?;
        let [_, n] = w_dims[..] else {
            return None;
        };
        let b_dims = g.known_dims(bias)?;
        // Right-aligned: last axis 1 or N (N must be known unless 1), any
        // other axis 1; at most 2 axes, so the Add does not add one.
        let last_ok = match b_dims.last() {
            None | Some(Some(1)) => true,
            Some(Some(d)) => Some(*d) == n,
            Some(None) => false,
        };
        let rest_ok = b_dims.len() <= 2 && b_dims.iter().rev().skip(1).all(|&d| d == Some(1));
        if !(last_ok && rest_ok) {
            return None;
        }
        let mut gemm = g.op(y.node)?.clone();
        gemm.op_type = "Gemm".to_string();
        gemm.attributes.clear();
        gemm.arity = 3;
        let mut patch = Patch::new("");
        patch.update(y.node, gemm);
        patch.rewire(y.node, 2, Some(bias.into()));
        patch.shunt(Outlet::new(id, 0), y);
        patch.remove(id);
        Some(patch)
    }))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{DataType, Model};
    use crate::passes::testing::init;
    use crate::passes::testing::{check, op_types as ops, rewrite};

    /// MatMul(x, w) + b, with x of `x_dims` (through an Identity, rank
    /// unknown, when `hide_rank`).
    fn matmul_add(x_dims: &[i64], b_dims: &[i64], bias_first: bool, hide_rank: bool) -> Model {
        let mut b = ModelBuilder::new(13);
        let mut x = b.input("x", DataType::FLOAT, x_dims);
        if hide_rank {
            x = b.op("Identity", &[x], vec![], "x1");
        }
        let w = init(&mut b, "w", &[6, 4], 50);
        let bias = init(&mut b, "b", b_dims, 51);
        let y = b.op("MatMul", &[x, w], vec![], "y");
        let ins = if bias_first { [bias, y] } else { [y, bias] };
        let z = b.op("Add", &ins, vec![], "z");
        b.output(z, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn fuses_2d() {
        for (name, b_dims, bias_first) in [
            ("n", &[4][..], false),
            ("1xn-bias-first", &[1, 4][..], true),
            ("scalar", &[][..], false),
        ] {
            let name = format!("fuse-gemm__{name}");
            let out = check(
                &name,
                &matmul_add(&[3, 6], b_dims, bias_first, false),
                "fuse-gemm",
            );
            assert_eq!(ops(&out), ["Gemm"], "{name}");
        }
    }

    #[test]
    fn keeps_matmul() {
        for (name, x_dims, b_dims, hide_rank) in [
            ("rank-unknown", &[3, 6][..], &[4][..], true),
            ("rank-3", &[2, 3, 6][..], &[4][..], false),
            ("bias-varies-along-m", &[3, 6][..], &[3, 1][..], false),
            ("bias-rank-3", &[3, 6][..], &[1, 1, 4][..], false),
        ] {
            let out = rewrite(&matmul_add(x_dims, b_dims, false, hide_rank), "fuse-gemm");
            assert!(
                ops(&out).ends_with(&["MatMul".into(), "Add".into()]),
                "{name}"
            );
        }
    }
}
