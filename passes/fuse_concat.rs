//! # fuse-concat
//!
//! **What:** flattens a `Concat` whose input is another `Concat` on the same
//! axis, read by nothing else, into one `Concat` of all their inputs, in
//! order. Subgraphs included.
//!
//! **Why:** exporters concatenate pairwise (tf2onnx writes a `tf.concat` in a
//! loop as a chain, `Concat(a, Concat(b, Concat(c, d)))`); each link copies
//! everything concatenated so far once more. One Concat copies each input once.
//!
//! ```text
//! t = Concat(b, c) {axis=2}                     y = Concat(a, b, c) {axis=2}
//! y = Concat(a, t) {axis=2}               →
//! ```
//! Identity used: `Concat(…, Concat(x₁…xₙ, axis=k), …, axis=k) =
//! Concat(…, x₁…xₙ, …, axis=k)`: concatenation along one axis is associative.
//! The axes must be written the same (the inputs of one Concat have one
//! rank, so the same literal is the same axis). Inputs left out (empty
//! slots) are not expected and stop the rule.
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{Graph, NodeId, Operator, Outlet, Patch};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-concat",
    "flatten Concat(…, Concat(…)) on one axis into one Concat",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[Rule::on("Concat", "concat-of-concat", concat_of_concat)];

// Concat(…, Concat(x₁…xₙ, axis=k), …, axis=k) = Concat(…, x₁…xₙ, …, axis=k).
fn concat_of_concat(
    _: &RuleContext,
    g: &Graph,
    id: NodeId,
    op: &Operator,
) -> Result<Option<Patch>> {
    let axis = op.attr("axis").map(|_| op.attr_int("axis", 0));
    if !op.is_default_domain() || axis.is_none() {
        return Ok(None);
    }
    let Some(inputs) = g.inputs(id).into_iter().collect::<Option<Vec<Outlet>>>() else {
        return Ok(None);
    };
    let inner = |o: &Outlet| -> Option<Vec<Outlet>> {
        let iop = g.op(o.node)?;
        let same = iop.is("Concat")
            && iop.is_default_domain()
            && iop.attr("axis").is_some()
            && iop.attr_int("axis", 0) == axis?
            && g.sole_user(*o) == Some(id)
            && g.consumers(*o).len() == 1;
        same.then(|| {
            g.inputs(o.node)
                .into_iter()
                .collect::<Option<Vec<Outlet>>>()
        })?
    };
    if !inputs.iter().any(|o| inner(o).is_some()) {
        return Ok(None);
    }
    let mut flat = vec![];
    let mut merged = vec![];
    for o in &inputs {
        match inner(o) {
            Some(xs) => {
                flat.extend(xs);
                merged.push(o.node);
            }
            None => flat.push(*o),
        }
    }
    let mut new_op = op.clone();
    new_op.arity = flat.len();
    let mut patch = Patch::new("");
    // Rewire every slot (the arity grows), then the new operator.
    for (slot, o) in flat.iter().enumerate() {
        patch.rewire(id, slot, Some((*o).into()));
    }
    patch.update(id, new_op);
    for n in merged {
        patch.remove(n);
    }
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, DataType};
    use crate::passes::testing::{check, op_types, rewrite};

    #[test]
    fn chains_flatten() {
        // y = Concat(a, Concat(b, Concat(c, d))) on axis 2; z on axis 2 of
        // two Concats on axis 1, which stay.
        let mut b = ModelBuilder::new(13);
        let xs: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| b.input(n, DataType::FLOAT, &[1, 2, 3]))
            .collect();
        let axis = |k| vec![Attribute::int("axis", k)];
        let cd = b.op("Concat", &[xs[2], xs[3]], axis(2), "cd");
        let bcd = b.op("Concat", &[xs[1], cd], axis(2), "bcd");
        let y = b.op("Concat", &[xs[0], bcd], axis(2), "y");
        let ab = b.op("Concat", &[xs[0], xs[1]], axis(1), "ab");
        let cd1 = b.op("Concat", &[xs[2], xs[3]], axis(1), "cd1");
        let z = b.op("Concat", &[ab, cd1], axis(2), "z");
        b.output(y, DataType::FLOAT);
        b.output(z, DataType::FLOAT);
        let after = check("fuse-concat__chain", &b.build().unwrap(), "fuse-concat");
        assert_eq!(op_types(&after), ["Concat", "Concat", "Concat", "Concat"]);
    }

    #[test]
    fn shared_inner_concat_stays() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 2]);
        let axis = vec![Attribute::int("axis", 1)];
        let t = b.op("Concat", &[x, x], axis.clone(), "t");
        let y = b.op("Concat", &[x, t], axis, "y");
        b.output(y, DataType::FLOAT);
        b.output(t, DataType::FLOAT);
        let m = b.build().unwrap();
        assert_eq!(op_types(&rewrite(&m, "fuse-concat")), ["Concat", "Concat"]);
        assert_eq!(rewrite(&m, "fuse-concat").graph.op_count(), 2);
    }
}
