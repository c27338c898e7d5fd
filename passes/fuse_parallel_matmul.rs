//! # fuse-parallel-matmul
//!
//! **What:** merges the `MatMul`s that read the same input with constant 2-D
//! weights of the same depth into one `MatMul` by the weights concatenated
//! along their columns, then a `Split` back into the original outputs. When
//! every one of them is followed by an `Add` of a constant bias of its
//! width, read by nothing else, the biases merge too (one `Add` before the
//! `Split`). Subgraphs included.
//!
//! **Why:** PyTorch exports an attention block's query, key and value
//! projections as three `MatMul`s (and three `Add`s) of one input; one
//! wider matrix product reads the input once and makes one kernel launch in
//! ONNX Runtime and TensorRT instead of three (onnxoptimizer's `fuse_qkv`,
//! which onnxsim applies, does the same).
//!
//! ```text
//! q = MatMul(x, wq)    a = Add(q, bq)           m = MatMul(x, [wq|wk|wv])
//! k = MatMul(x, wk)    b = Add(k, bk)     →     s = Add(m, [bq|bk|bv])
//! v = MatMul(x, wv)    c = Add(v, bv)           a, b, c = Split(s) {axis=-1}
//! ```
//! Identity used: column j of `x·[W₁|…|Wₙ]` is column j of the `Wᵢ` it
//! comes from, times x: each output element is the same dot product over
//! the same depth, so only the kernel's blocking can change its rounding.
//! Adding `[b₁|…|bₙ]` along the last axis adds each `bᵢ` to its columns.
//! Only float weights and biases that nothing else reads (a shared one would
//! stay beside its merged copy and grow the file: nakdimon's Loop bodies);
//! opset 11 or later (`Split` on axis -1, whatever the input's rank).
//! Outputs that are graph outputs stay as they are.
//!
//! **Examples that run:** the tests below (`fuse-parallel-matmul__*`
//! snapshots).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{Attribute, DataType, Graph, NodeId, Operator, Outlet, Patch, Tensor};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-parallel-matmul",
    "merge MatMuls of one input with constant weights into one MatMul + Split",
    |_| RulePass::boxed(RULES, "merged"),
);

pub const RULES: &[Rule] = &[Rule::on("MatMul", "shared-input", shared_input)];

/// One of the merged MatMuls: its node, its weight, and the bias Add after
/// it when there is one to merge.
struct Branch<'g> {
    matmul: NodeId,
    weight: &'g Tensor,
    bias: Option<(NodeId, &'g Tensor)>,
}

/// The constant float [K, N] weight of `m` when `m` is a MatMul of `x`.
fn weight_of(g: &Graph, m: NodeId, x: Outlet) -> Option<&Tensor> {
    let op = g.op(m)?;
    let is_matmul = op.is("MatMul")
        && op.is_default_domain()
        && g.node(m).outputs.len() == 1
        && g.input(m, 0) == Some(x);
    let w_outlet = g.input(m, 1)?;
    let w = g.const_tensor(w_outlet)?;
    // A weight read elsewhere too would stay beside its merged copy.
    let own = g.consumers(w_outlet).len() == 1;
    (is_matmul && own && w.dims.len() == 2 && w.dtype == DataType::FLOAT).then_some(w)
}

/// The Add after `m` (its only reader) of a constant float bias `[N]`.
fn bias_of(g: &Graph, m: NodeId, n: i64) -> Option<(NodeId, &Tensor)> {
    let y = Outlet::new(m, 0);
    let add = g.sole_user(y).filter(|_| g.consumers(y).len() == 1)?;
    let op = g.op(add).filter(|o| o.is("Add") && o.is_default_domain())?;
    let slot = (0..2).find(|&s| g.input(add, s) == Some(y))?;
    let b_outlet = g.input(add, 1 - slot)?;
    let b = g.const_tensor(b_outlet)?;
    let own = g.consumers(b_outlet).len() == 1;
    let fits = op.arity == 2 && own && b.dtype == DataType::FLOAT && b.dims == [n];
    fits.then_some((add, b))
}

// MatMul(x, W₁) … MatMul(x, Wₙ) = Split(MatMul(x, [W₁|…|Wₙ]), [N₁…Nₙ], axis=-1).
fn shared_input(ctx: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    if ctx.opset < 11 {
        return Ok(None);
    }
    let Some(x) = g.input(id, 0) else {
        return Ok(None);
    };
    let Some(depth) = weight_of(g, id, x).map(|w| w.dims[0]) else {
        return Ok(None);
    };
    let mut matmuls: Vec<NodeId> = g
        .consumers(x)
        .into_iter()
        .filter(|&(m, slot)| slot == 0 && weight_of(g, m, x).is_some_and(|w| w.dims[0] == depth))
        .map(|(m, _)| m)
        .collect();
    matmuls.sort();
    matmuls.dedup();
    // The first of them rewrites them all; a graph output keeps its node.
    matmuls.retain(|&m| !g.is_graph_output(Outlet::new(m, 0)));
    if matmuls.len() < 2 || matmuls[0] != id {
        return Ok(None);
    }
    let mut branches: Vec<Branch> = matmuls
        .iter()
        .map(|&m| {
            let weight = weight_of(g, m, x).expect("filtered above");
            let bias = bias_of(g, m, weight.dims[1])
                .filter(|&(add, _)| !g.is_graph_output(Outlet::new(add, 0)));
            Branch {
                matmul: m,
                weight,
                bias,
            }
        })
        .collect();
    if branches.iter().any(|b| b.bias.is_none()) {
        branches.iter_mut().for_each(|b| b.bias = None);
    }
    let widths: Vec<i64> = branches.iter().map(|b| b.weight.dims[1]).collect();
    let total: i64 = widths.iter().sum();
    let columns = branches
        .iter()
        .map(|b| b.weight.to_f32())
        .collect::<Result<Vec<_>>>()?;
    let mut merged = Vec::with_capacity((depth * total) as usize);
    for row in 0..depth as usize {
        for (w, &n) in columns.iter().zip(&widths) {
            merged.extend_from_slice(&w[row * n as usize..(row + 1) * n as usize]);
        }
    }

    let mut patch = Patch::new("");
    let name = g.outlet_name(Outlet::new(id, 0)).to_string();
    let w = patch.add_const(
        &format!("{name}.merged_weight"),
        Tensor::from_f32_vec(vec![depth, total], merged),
    );
    let product = patch.add_op(
        None,
        Operator::new("MatMul", 2, vec![]),
        vec![Some(x.into()), Some(w)],
        &[&format!("{name}.merged")],
    );
    let mut joined = Patch::out(product, 0);
    let with_bias = branches[0].bias.is_some();
    if with_bias {
        let mut values = Vec::with_capacity(total as usize);
        for b in &branches {
            values.extend(b.bias.expect("every branch has one").1.to_f32()?);
        }
        let bias = patch.add_const(
            &format!("{name}.merged_bias"),
            Tensor::from_f32_vec(vec![total], values),
        );
        let add = patch.add_op(
            None,
            Operator::new("Add", 2, vec![]),
            vec![Some(joined), Some(bias)],
            &[&format!("{name}.biased")],
        );
        joined = Patch::out(add, 0);
    }
    let axis = Attribute::int("axis", -1);
    let (split_op, split_inputs) = if ctx.opset >= 13 {
        let sizes = Tensor::from_i64(vec![widths.len() as i64], &widths);
        let sizes = patch.add_const(&format!("{name}.split"), sizes);
        (
            Operator::new("Split", 2, vec![axis]),
            vec![Some(joined), Some(sizes)],
        )
    } else {
        let attrs = vec![axis, Attribute::ints("split", &widths)];
        (Operator::new("Split", 1, attrs), vec![Some(joined)])
    };
    // Each part takes the name of the value it replaces.
    let last = |b: &Branch| Outlet::new(b.bias.map_or(b.matmul, |(add, _)| add), 0);
    let names: Vec<String> = branches
        .iter()
        .map(|b| g.outlet_name(last(b)).to_string())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let split = patch.add_op(None, split_op, split_inputs, &names);
    for (i, b) in branches.iter().enumerate() {
        patch.shunt(last(b), Patch::out(split, i));
        patch.remove(b.matmul);
        if let Some((add, _)) = b.bias {
            patch.remove(add);
        }
    }
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{DataType, Model};
    use crate::passes::testing::{check, init, op_types, rewrite};

    /// x: f32[2,3,4] read by MatMuls of widths 5, 6 and 7 (each with a bias
    /// Add unless `bare` names it) and by one of another depth.
    fn attention(opset: i64, bare: Option<usize>) -> Model {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        for (i, n) in [5, 6, 7].into_iter().enumerate() {
            let w = init(&mut b, &format!("w{i}"), &[4, n], 10 + i as u64);
            let y = b.op("MatMul", &[x, w], vec![], &format!("mm{i}"));
            let y = match bare == Some(i) {
                true => y,
                false => {
                    let bias = init(&mut b, &format!("b{i}"), &[n], 20 + i as u64);
                    b.op("Add", &[y, bias], vec![], &format!("y{i}"))
                }
            };
            let r = b.op("Relu", &[y], vec![], &format!("r{i}"));
            b.output(r, DataType::FLOAT);
        }
        let t = b.op("Transpose", &[x], vec![], "t");
        let w = init(&mut b, "w_other", &[2, 3], 30);
        let other = b.op("MatMul", &[t, w], vec![], "other");
        b.output(other, DataType::FLOAT);
        b.build().unwrap()
    }

    #[test]
    fn matmuls_of_one_input_and_their_biases_merge() {
        let after = check(
            "fuse-parallel-matmul__qkv",
            &attention(13, None),
            "fuse-parallel-matmul,dce",
        );
        let ops = op_types(&after);
        assert_eq!(ops.iter().filter(|o| *o == "MatMul").count(), 2, "{ops:?}");
        assert_eq!(ops.iter().filter(|o| *o == "Add").count(), 1, "{ops:?}");
        assert_eq!(ops.iter().filter(|o| *o == "Split").count(), 1, "{ops:?}");
    }

    #[test]
    fn a_branch_without_bias_keeps_the_adds_and_old_opsets_split_by_attribute() {
        let after = check(
            "fuse-parallel-matmul__one-bare-opset-11",
            &attention(11, Some(1)),
            "fuse-parallel-matmul,dce",
        );
        let ops = op_types(&after);
        assert_eq!(ops.iter().filter(|o| *o == "MatMul").count(), 2, "{ops:?}");
        assert_eq!(ops.iter().filter(|o| *o == "Add").count(), 2, "{ops:?}");
        let g = &after.graph;
        let split = g
            .node_ids()
            .find(|&n| g.op(n).is_some_and(|o| o.is("Split")))
            .unwrap();
        assert_eq!(
            g.op(split).unwrap().attr_ints("split"),
            Some(&[5, 6, 7][..])
        );
    }

    #[test]
    fn a_weight_read_elsewhere_is_not_merged() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 4]);
        let w0 = init(&mut b, "w0", &[4, 3], 1);
        let w1 = init(&mut b, "w1", &[4, 3], 2);
        for (i, w) in [w0, w1].into_iter().enumerate() {
            let y = b.op("MatMul", &[x, w], vec![], &format!("y{i}"));
            let r = b.op("Relu", &[y], vec![], &format!("r{i}"));
            b.output(r, DataType::FLOAT);
        }
        let other = b.op("Neg", &[w1], vec![], "other");
        b.output(other, DataType::FLOAT);
        let after = rewrite(&b.build().unwrap(), "fuse-parallel-matmul,dce");
        let ops = op_types(&after);
        assert_eq!(ops.iter().filter(|o| *o == "MatMul").count(), 2, "{ops:?}");
        assert!(!ops.contains(&"Split".to_string()), "{ops:?}");
    }
}
