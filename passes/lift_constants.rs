//! # lift-constants
//!
//! **What:** turns every `Constant` node into an initializer with the same
//! name, in subgraphs too.
//!
//! **Why:** some exporters (paddle2onnx: every PP-OCR weight) keep weights in
//! `Constant` nodes. The rewrite passes find weights among initializers, so
//! they see none until the constants are lifted.
//!
//! ```text
//! w = Constant() {value=f32[16,3,3,3]}          init w: f32[16,3,3,3]
//! y = Conv(x, w)                          →     y = Conv(x, w)
//! ```
//! `sparse_value` constants stay as they are (no dense initializer holds them).
//!
//! **Options:** none.

use crate::ir::{AttrValue, Graph, Model, NodeId, Outlet, Patch, Tensor};
use crate::passes::{DataUse, PassInfo};
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::Result;
use serde_json::json;

pub const INFO: PassInfo = PassInfo {
    name: "lift-constants",
    summary: "Constant nodes become initializers (weights become visible to the other passes)",
    exact: true,
    data: DataUse::None,
    options: &[],
    build,
};

fn build(_: &Options) -> Result<Box<dyn Pass>> {
    Ok(Box::new(LiftConstants))
}

struct LiftConstants;

impl Pass for LiftConstants {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let mut lifted = 0;
        model.graph.visit_graphs_mut(&mut |g| {
            let patch = lift(g);
            lifted += patch.1;
            patch.0.apply(g)
        })?;
        Ok(json!({ "lifted": lifted }))
    }
}

fn lift(g: &Graph) -> (Patch, usize) {
    let mut patch = Patch::new("lift-constants");
    let mut count = 0;
    for id in g.node_ids() {
        if let Some(tensor) = constant_value(g, id) {
            let name = g.node(id).outputs[0].name.clone();
            let init = patch.add_const(&name, tensor);
            patch.shunt(Outlet::new(id, 0), init);
            patch.remove(id);
            count += 1;
        }
    }
    (patch, count)
}

/// The value of a dense `Constant` node, in any of its attribute forms.
pub fn constant_value(g: &Graph, id: NodeId) -> Option<Tensor> {
    let op = g.op(id).filter(|op| op.is("Constant"))?;
    let attr = op.attributes.first().filter(|_| op.attributes.len() == 1)?;
    let mut t = match (&attr.name[..], &attr.value) {
        ("value", AttrValue::Tensor(t)) => t.clone(),
        ("value_float", AttrValue::Float(v)) => Tensor::from_f32(vec![], &[*v]),
        ("value_floats", AttrValue::Floats(v)) => Tensor::from_f32(vec![v.len() as i64], v),
        ("value_int", AttrValue::Int(v)) => Tensor::from_i64(vec![], &[*v]),
        ("value_ints", AttrValue::Ints(v)) => Tensor::from_i64(vec![v.len() as i64], v),
        _ => return None,
    };
    t.name = None;
    Some(t)
}
