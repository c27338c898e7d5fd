//! # cse
//!
//! **What:** common-subexpression elimination. Two operators with the same
//! op_type, domain, attributes (values compared exactly, floats bit for bit)
//! and the same inputs compute the same values: the first in topological
//! order stays, every use of the other's outputs moves to it. Initializers
//! with the same dtype, dims and bytes become one. Subgraphs included.
//!
//! **Why:** exporters repeat work: the same `Shape → Gather` per attention
//! head, one `Constant` 1.0 per use, the same weight stored twice. Each copy
//! is a kernel launch (or bytes in the file), and duplicates hide patterns
//! from the fusions (`Mul(x, c1)` and `Mul(x, c2)` with `c1 = c2`).
//!
//! ```text
//! init c1 = [2.0]                                init c1 = [2.0]
//! init c2 = [2.0]                                a = Mul(x, c1)
//! a = Mul(x, c1)                          →      y = Add(a, a)
//! b = Mul(x, c2)
//! y = Add(a, b)
//! ```
//! Identity used: `f(x₁…xₙ) = f(x₁…xₙ)` for a deterministic `f`. Never merged:
//! random operators (`RandomNormal`, `RandomUniform`, their `Like` forms,
//! `Multinomial`, `Bernoulli`), `Dropout` that may train, operators holding
//! subgraphs, operators outside the ONNX domains (`ai.onnx`, `ai.onnx.ml`),
//! whose determinism is unknown, and initializers that are also graph inputs
//! (the caller may override them). Graph outputs keep their names.
//! Initializers are compared by a hash of their payload first, then byte for byte.
//!
//! In the first topological order, two operators with the same inputs become
//! ready together, so the first of them is the one with the smaller node id:
//! the rule keeps that one. `RULES` holds the operator rule (for `fuse`);
//! initializers are merged by `merge_initializers`, which is not a node rule.
//!
//! **Options:** none.

use crate::ir::patch::{rewrite_to_fixpoint, Rule, RuleContext};
use crate::ir::{AttrValue, Attribute, Graph, Model, NodeId, Operator, Outlet, Patch};
use crate::passes::PassInfo;
use crate::pipeline::{Pass, PassContext};
use anyhow::Result;
use serde_json::json;
use std::collections::HashMap;

pub const INFO: PassInfo = PassInfo::exact(
    "cse",
    "merge operators computing the same thing, and identical initializers",
    |_| Ok(Box::new(Cse)),
);

struct Cse;

pub const RULES: &[Rule] = &[Rule::any("duplicate", duplicate)];

impl Pass for Cse {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let ctx = RuleContext::for_model(model, None);
        let (mut initializers, mut operators) = (0, 0);
        model.graph.visit_graphs_mut(&mut |g| {
            initializers += merge_initializers(g)?;
            operators += rewrite_to_fixpoint(&ctx, g, RULES)?;
            Ok(())
        })?;
        Ok(json!({ "initializers": initializers, "operators": operators }))
    }
}

// init a = T, init b = T (same dtype, dims, bytes)  ⇒  every use of b can use a
/// Merges initializers holding the same tensor into the first (by node id);
/// returns how many were merged. Hashes only tensors whose dtype, dims and
/// size collide with another's.
pub fn merge_initializers(g: &mut Graph) -> Result<usize> {
    let consts: Vec<NodeId> = g
        .node_ids()
        .filter(|&id| g.const_tensor(Outlet::new(id, 0)).is_some())
        .collect();
    let tensor = |id: NodeId| g.const_tensor(Outlet::new(id, 0)).expect("a constant");
    let mut by_shape: HashMap<_, Vec<NodeId>> = HashMap::new();
    for &id in &consts {
        let t = tensor(id);
        by_shape
            .entry((t.dtype, t.dims.clone(), t.byte_len()))
            .or_default()
            .push(id);
    }
    let mut patch = Patch::new("cse: initializers");
    let mut merged = 0;
    let mut groups: Vec<Vec<NodeId>> = by_shape.into_values().filter(|v| v.len() > 1).collect();
    groups.sort();
    for mut group in groups {
        group.sort();
        let mut kept: HashMap<u64, Vec<NodeId>> = HashMap::new();
        for id in group {
            let t = tensor(id);
            let same = kept.entry(t.payload_hash()).or_default();
            match same.iter().find(|&&k| tensor(k).same_payload(t)) {
                Some(&k) => {
                    patch.shunt(Outlet::new(id, 0), Outlet::new(k, 0));
                    patch.remove(id);
                    merged += 1;
                }
                None => same.push(id),
            }
        }
    }
    patch.apply(g)?;
    Ok(merged)
}

// f(x₁…xₙ) = f(x₁…xₙ) for deterministic f  ⇒  the later copy uses the earlier one's outputs
fn duplicate(_: &RuleContext, g: &Graph, id: NodeId, _: &Operator) -> Result<Option<Patch>> {
    if !mergeable(g, id) {
        return Ok(None);
    }
    let inputs = g.inputs(id);
    // Candidates share the first input; without inputs, any input-less operator.
    let mut candidates: Vec<NodeId> = match inputs.iter().flatten().next() {
        Some(&first) => g.consumers(first).into_iter().map(|(n, _)| n).collect(),
        None => g
            .node_ids()
            .filter(|&n| g.op(n).is_some_and(|op| op.arity == 0))
            .collect(),
    };
    candidates.sort();
    candidates.dedup();
    let Some(keep) = candidates
        .into_iter()
        .take_while(|&c| c < id)
        .find(|&c| mergeable(g, c) && same_computation(g, c, id, &inputs))
    else {
        return Ok(None);
    };
    let mut patch = Patch::new("");
    for slot in 0..g.node(id).outputs.len() {
        let o = Outlet::new(id, slot);
        if g.is_used(o) {
            patch.shunt(o, Outlet::new(keep, slot));
        }
    }
    patch.remove(id);
    Ok(Some(patch))
}

/// Deterministic, no subgraphs, in an ONNX domain, attributes all with values.
fn mergeable(g: &Graph, id: NodeId) -> bool {
    let Some(op) = g.op(id) else {
        return false;
    };
    let onnx_domain = op.is_default_domain() || op.domain.as_deref() == Some("ai.onnx.ml");
    let training = op.is("Dropout")
        && g.input(id, 2).is_some_and(|t| {
            !g.const_tensor(t)
                .and_then(|t| t.to_i64().ok())
                .is_some_and(|v| v.iter().all(|&x| x == 0))
        });
    let random = op.is_random();
    onnx_domain
        && !training
        && !random
        && !op.has_subgraphs()
        && op
            .attributes
            .iter()
            .all(|a| a.ref_attr_name.is_none() && !matches!(a.value, AttrValue::None))
}

/// `a` computes what `b` does (`b_inputs` are `b`'s inputs), and has every output `b` uses.
fn same_computation(g: &Graph, a: NodeId, b: NodeId, b_inputs: &[Option<Outlet>]) -> bool {
    let (Some(x), Some(y)) = (g.op(a), g.op(b)) else {
        return false;
    };
    let domain = |op: &Operator| {
        if op.is_default_domain() {
            String::new()
        } else {
            op.domain.clone().unwrap_or_default()
        }
    };
    let outputs_present = (0..g.node(b).outputs.len()).all(|slot| {
        !g.is_used(Outlet::new(b, slot))
            || g.node(a)
                .outputs
                .get(slot)
                .is_some_and(|v| !v.name.is_empty())
    });
    x.op_type == y.op_type
        && domain(x) == domain(y)
        && x.overload == y.overload
        && x.arity == y.arity
        && g.node(a).outputs.len() == g.node(b).outputs.len()
        && g.inputs(a) == b_inputs
        && same_attributes(&x.attributes, &y.attributes)
        && outputs_present
}

fn same_attributes(a: &[Attribute], b: &[Attribute]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter()
                .find(|y| y.name == x.name)
                .is_some_and(|y| same_value(&x.value, &y.value))
        })
}

/// Attribute values equal exactly: floats bit for bit, tensors by payload.
fn same_value(a: &AttrValue, b: &AttrValue) -> bool {
    use AttrValue as V;
    let bits = |x: &[f32], y: &[f32]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    };
    match (a, b) {
        (V::Float(x), V::Float(y)) => x.to_bits() == y.to_bits(),
        (V::Int(x), V::Int(y)) => x == y,
        (V::String(x), V::String(y)) => x == y,
        (V::Tensor(x), V::Tensor(y)) => x.same_payload(y),
        (V::SparseTensor(x), V::SparseTensor(y)) => x == y,
        (V::Type(x), V::Type(y)) => x == y,
        (V::Floats(x), V::Floats(y)) => bits(x, y),
        (V::Ints(x), V::Ints(y)) => x == y,
        (V::Strings(x), V::Strings(y)) => x == y,
        (V::Tensors(x), V::Tensors(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.same_payload(q))
        }
        (V::SparseTensors(x), V::SparseTensors(y)) => x == y,
        (V::Types(x), V::Types(y)) => x == y,
        // Graphs are never compared (such nodes are not mergeable), nor references.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::build::ModelBuilder;
    use crate::ir::{AttrValue, Attribute, DataType, Model, Tensor};
    use crate::passes::testing::{check, rewrite};

    fn ops(model: &Model, op_type: &str) -> usize {
        let g = &model.graph;
        g.node_ids()
            .filter(|&n| g.op(n).is_some_and(|op| op.is(op_type)))
            .count()
    }

    fn initializers(model: &Model) -> usize {
        let g = &model.graph;
        g.node_ids()
            .filter(|&n| g.const_tensor(crate::ir::Outlet::new(n, 0)).is_some())
            .count()
    }

    #[test]
    fn duplicates_merge_in_cascade() {
        // c1 = c2, so b = a, so Relu(b) = Relu(a); both Relus are graph outputs.
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 8]);
        let w: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let c1 = b.init("c1", Tensor::from_f32(vec![8], &w));
        let c2 = b.init("c2", Tensor::from_f32(vec![8], &w));
        let a = b.op("Mul", &[x, c1], vec![], "a");
        let bb = b.op("Mul", &[x, c2], vec![], "b");
        let ra = b.op("Relu", &[a], vec![], "ra");
        let rb = b.op("Relu", &[bb], vec![], "rb");
        let s = b.op("Add", &[a, bb], vec![], "s");
        let sm1 = b.op("Softmax", &[s], vec![Attribute::int("axis", 1)], "sm1");
        let sm2 = b.op("Softmax", &[s], vec![Attribute::int("axis", 1)], "sm2");
        let y = b.op("Sub", &[sm1, sm2], vec![], "y");
        for o in [ra, rb, y] {
            b.output(o, DataType::FLOAT);
        }
        let after = check("cse__cascade", &b.build().unwrap(), "cse");
        assert_eq!(ops(&after, "Mul"), 1);
        assert_eq!(ops(&after, "Softmax"), 1);
        assert_eq!(initializers(&after), 1);
        // rb's name is kept: an Identity of ra carries it.
        let names: Vec<&str> = after
            .graph
            .outputs
            .iter()
            .map(|o| after.graph.outlet_name(o.outlet))
            .collect();
        assert_eq!(names, ["ra", "rb", "y"]);
    }

    #[test]
    fn constant_nodes_merge() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let value = |v: f32| {
            vec![Attribute::new(
                "value",
                AttrValue::Tensor(Tensor::from_f32(vec![], &[v])),
            )]
        };
        let k1 = b.op("Constant", &[], value(2.0), "k1");
        let k2 = b.op("Constant", &[], value(2.0), "k2");
        let k3 = b.op("Constant", &[], value(3.0), "k3");
        let a = b.op("Mul", &[x, k1], vec![], "a");
        let c = b.op("Add", &[a, k2], vec![], "c");
        let y = b.op("Add", &[c, k3], vec![], "y");
        b.output(y, DataType::FLOAT);
        let after = check("cse__constant_nodes", &b.build().unwrap(), "cse");
        assert_eq!(ops(&after, "Constant"), 2);
    }

    #[test]
    fn near_duplicates_stay() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 8]);
        // 0.0 and -0.0 compare equal as floats but are different constants.
        let zero = b.init("zero", Tensor::from_f32(vec![], &[0.0]));
        let neg_zero = b.init("neg_zero", Tensor::from_f32(vec![], &[-0.0]));
        // Same values, other dims.
        let r1 = b.init("r1", Tensor::from_f32(vec![2], &[1.0, 2.0]));
        let r2 = b.init("r2", Tensor::from_f32(vec![1, 2], &[1.0, 2.0]));
        let d1 = b.op("Div", &[zero, x], vec![], "d1");
        let d2 = b.op("Div", &[neg_zero, x], vec![], "d2");
        let s1 = b.op("Softmax", &[x], vec![Attribute::int("axis", 1)], "s1");
        let s2 = b.op("Softmax", &[x], vec![Attribute::int("axis", -1)], "s2");
        let s3 = b.op("Softmax", &[x], vec![Attribute::int("axis", 1)], "s3");
        let s4 = b.op("Sub", &[s1, s2], vec![], "s4");
        let f1 = b.op("Mul", &[x, x], vec![], "f1");
        let f2 = b.op("Div", &[x, x], vec![], "f2");
        let u1 = b.op("Unsqueeze", &[r1], vec![], "u1");
        let u2 = b.op("Identity", &[r2], vec![], "u2");
        let rand1 = b.op("RandomUniformLike", &[x], vec![], "rand1");
        let rand2 = b.op("RandomUniformLike", &[x], vec![], "rand2");
        for o in [d1, d2, s3, s4, f1, f2, u1, u2, rand1, rand2] {
            b.output(o, DataType::FLOAT);
        }
        let model = b.build().unwrap();
        let after = rewrite(&model, "cse");
        // Only Softmax s3 (a copy of s1) goes.
        assert_eq!(after.graph.op_count(), model.graph.op_count() - 1);
        assert_eq!(initializers(&after), initializers(&model));
        assert_eq!(ops(&after, "RandomUniformLike"), 2);
    }
}
