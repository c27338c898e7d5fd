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

use crate::ir::{constant_value, Graph, Model, Outlet, Patch};
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
